"""Ingest: one landed file becomes one window partition in ``raw.events`` / ``raw.rejects``."""

import dataclasses

import dagster as dg

from assets.specs import WINDOW_STEP
from orchestration.pipeline.ingest import UnreadableWindow, ingest_window
from orchestration.resources import StreamtuneResource, WarehouseResource
from orchestration.tags import LANDING_FILE_TAG


@dg.asset(
    **WINDOW_STEP,
    group_name="ingest",
    kinds={"duckdb", "polars"},
    description="One landed window file parsed into raw.events; unparseable lines go to raw.rejects verbatim "
    "(detected PII/secrets replaced by <ENTITY>) with the error.",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
)
def raw_window(
    context: dg.AssetExecutionContext, streamtune: StreamtuneResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    try:
        out = ingest_window(
            streamtune.settings(),
            warehouse.warehouse(),
            context.partition_key,
            file_hint=context.run.tags.get(LANDING_FILE_TAG),
            dagster_run_id=context.run_id,
        )
    except UnreadableWindow as e:  # unreadable file: fail the run at once, naming file + cause (no retry)
        raise dg.Failure(description=str(e), metadata={"file": e.file}, allow_retries=False) from e
    # every IngestResult field under its own name, except rows (dagster/row_count)
    metadata = {"dagster/row_count": out.rows, **dataclasses.asdict(out)}
    del metadata["rows"]
    metadata["same_file_as"] = ", ".join(out.same_file_as)  # a re-delivered file: its rows dedup against that window
    return dg.MaterializeResult(metadata=metadata)
