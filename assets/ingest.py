"""Ingest: one landed file becomes one window partition in ``raw.events`` / ``raw.rejects``."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from orchestration.partitions import windows_partitions
from orchestration.resources import StreamtuneResource, WarehouseResource
from orchestration.sources.landing import resolve_window_file
from orchestration.tags import LANDING_FILE_TAG


@dg.asset(
    partitions_def=windows_partitions,
    pool="duckdb",
    group_name="ingest",
    kinds={"duckdb", "polars"},
    description="One landed window file parsed into raw.events; unparseable lines go to raw.rejects verbatim "
    "(detected PII/secrets replaced by <ENTITY>) with the error.",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
)
def raw_window(
    context: dg.AssetExecutionContext, streamtune: StreamtuneResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from quality.pii import redact_values
    from quality.readers import RecordFields, WindowReadError, read_window_file

    settings = streamtune.settings()
    key = context.partition_key
    path = resolve_window_file(settings.paths.landing, key, hint=context.run.tags.get(LANDING_FILE_TAG))
    fields = RecordFields(text=settings.text_field, id=settings.id_field, ts=settings.ts_field)
    try:
        # records without ts get the file's landing time (mtime): reruns give identical rows
        landed_at = datetime.fromtimestamp(path.stat().st_mtime_ns / 1e9, tz=UTC)
        parsed = read_window_file(path, key, fields=fields, ingested_at=landed_at)
    except WindowReadError as e:  # unreadable file: fail the run at once, naming file + cause (no retry)
        raise dg.Failure(description=str(e), metadata={"file": path.name}, allow_retries=False) from e
    rejects = parsed.rejects.with_columns(
        raw=pl.Series(redact_values(parsed.rejects["raw"].to_list()), dtype=pl.String)
    )
    same_file_as = warehouse.warehouse().windows_with_file(parsed.file_sha256, exclude=key)
    warehouse.warehouse().replace_raw_window(
        key,
        parsed.rows,
        rejects,
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
            "same_file_as": ", ".join(same_file_as),  # a re-delivered file: its rows dedup against that window
        }
    )
