"""Ingest: one landed file becomes one window partition in ``raw.events`` / ``raw.rejects``."""


from pathlib import Path

import dagster as dg

from orchestration.landing import resolve_window_file
from orchestration.partitions import windows_partitions
from orchestration.resources import StreamtuneResource, WarehouseResource

LANDING_FILE_TAG = "streamtune/landing_file"


@dg.asset(
    partitions_def=windows_partitions,
    pool="duckdb",
    group_name="ingest",
    kinds={"duckdb", "polars"},
    description="One landed window file parsed into raw.events; unparseable lines go to raw.rejects verbatim with the error.",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
)
def raw_window(
    context: dg.AssetExecutionContext, streamtune: StreamtuneResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from quality.readers import RecordFields, read_window_file

    settings = streamtune.settings()
    key = context.partition_key
    path = resolve_window_file(settings.paths.landing, key, hint=context.run.tags.get(LANDING_FILE_TAG))
    fields = RecordFields(text=settings.text_field, id=settings.id_field, ts=settings.ts_field)
    parsed = read_window_file(path, key, fields=fields)  # WindowReadError fails the run, naming file + cause
    warehouse.warehouse().replace_raw_window(
        key,
        parsed.rows,
        parsed.rejects,
        file_name=path.name,
        file_sha256=parsed.file_sha256,
        file_mtime_ns=path.stat().st_mtime_ns,
        dagster_run_id=context.run_id,
    )
    errors: dict[str, int] = {}
    for err in parsed.rejects["error"].to_list():
        kind = err.split(":", 1)[0]
        errors[kind] = errors.get(kind, 0) + 1
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": parsed.rows.height,
            "source_rows": parsed.source_rows,
            "rejected_rows": parsed.rejects.height,
            "rejects_by_error": errors,
            "file": Path(path).name,
            "file_sha256": parsed.file_sha256,
        }
    )
