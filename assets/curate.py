"""Curate: the gate (GX suite, PII redaction, dedup) splits a raw window into curated rows and
quarantine; ``approved_window`` runs only after every blocking check on ``curated_window`` passed in
the same run; it is what makes a window visible to training.
"""

import dagster as dg

from assets.ingest import raw_window
from assets.specs import WINDOW_STEP
from orchestration.pipeline.curate import curate
from orchestration.resources import StreamtuneResource, WarehouseResource

_QUALITY = {**WINDOW_STEP, "group_name": "quality"}


@dg.asset(
    **_QUALITY,
    kinds={"duckdb", "great_expectations"},
    description="GX-validated, PII-redacted, deduplicated rows of a window in curated.events; failing rows in "
    "curated.quarantine with rule and reason.",
    deps=[raw_window],
)
def curated_window(
    context: dg.AssetExecutionContext, streamtune: StreamtuneResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    out = curate(streamtune.settings(), warehouse.warehouse(), context.partition_key)
    metadata = dict(out.metadata)
    if out.docs_index:
        metadata["gx_data_docs"] = dg.MetadataValue.path(out.docs_index)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    **_QUALITY,
    kinds={"duckdb"},
    description="A curated window whose blocking checks passed, recorded in curated.windows: eligible for training.",
    deps=[curated_window],
)
def approved_window(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    counts = wh.approve_window(context.partition_key, context.run_id)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": counts.curated_rows,
            "quarantined_rows": counts.quarantined_rows,
            # ids and sizes only: record text never goes into the event log, which `forget` cannot reach
            "preview": _preview(wh.read_curated_window(context.partition_key)),
            "curated_table": "curated.events",
        }
    )


PREVIEW_ROWS = 5


def _preview(curated) -> dg.TableMetadataValue:
    """The first few curated rows as a Dagster table: record id, timestamp and, in the ``text`` column,
    the text's size and its row in ``curated.events`` (never the text: the event log outlives a deletion
    request)."""
    head = curated.sort("row_number").head(PREVIEW_ROWS)
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("record_id", "string"),
            dg.TableColumn("ts", "string"),
            dg.TableColumn("text", "string", description="size and location of the text, not the text"),
        ]
    )
    records = [
        dg.TableRecord(
            {
                "record_id": str(r["record_id"]),
                "ts": "" if r["ts"] is None else str(r["ts"]),
                "text": f"{len(r['text'])} chars, curated.events row {r['row_number']}",
            }
        )
        for r in head.iter_rows(named=True)
    ]
    return dg.MetadataValue.table(records=records, schema=schema)
