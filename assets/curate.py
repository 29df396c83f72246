"""Curate: the gate (GX suite, PII redaction, dedup) splits a raw window into curated rows and
quarantine; ``approved_window`` runs only after every blocking check on ``curated_window`` passed in
the same run; it is what makes a window visible to training.
"""

import dagster as dg

from assets.ingest import raw_window
from orchestration.partitions import windows_partitions
from orchestration.resources import StreamtuneResource, WarehouseResource


@dg.asset(
    deps=[raw_window],
    partitions_def=windows_partitions,
    pool="duckdb",
    group_name="quality",
    kinds={"duckdb", "great_expectations"},
    description="GX-validated, PII-redacted, deduplicated rows of a window in curated.events; failing rows in "
    "curated.quarantine with rule and reason.",
)
def curated_window(
    context: dg.AssetExecutionContext, streamtune: StreamtuneResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from quality.suite import curate_window, verdict_metadata

    settings, wh, key = streamtune.settings(), warehouse.warehouse(), context.partition_key
    cfg = settings.quality_config()
    rows = wh.read_raw_window(key)
    near = cfg.near_dup_threshold is not None
    prior = (
        wh.recent_norm_hashes(key, cfg.dedup_recent_windows, with_text=near)
        if (cfg.dedup_exact or near) and cfg.dedup_recent_windows
        else None
    )
    verdict = curate_window(rows, cfg, window_key=key, prior_hashes=prior, docs_dir=settings.paths.data_docs / key)
    wh.replace_curated_window(key, verdict.curated, verdict.quarantine, verdict.window_results, verdict.gx_run_id)
    purged = wh.purge_quarantine(settings.quarantine_retention_days)
    metadata = verdict_metadata(verdict, rows.height)
    metadata["quarantine_rows_purged"] = purged
    if verdict.docs_index:
        metadata["gx_data_docs"] = dg.MetadataValue.path(verdict.docs_index)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    deps=[curated_window],
    partitions_def=windows_partitions,
    pool="duckdb",
    group_name="quality",
    kinds={"duckdb"},
    description="A curated window whose blocking checks passed, recorded in curated.windows: eligible for training.",
)
def approved_window(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    counts = wh.approve_window(context.partition_key, context.run_id)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": counts.curated_rows,
            "quarantined_rows": counts.quarantined_rows,
            # curated rows passed the blocking pii_free check upstream: safe to show
            "preview": _preview(wh.read_curated_window(context.partition_key)),
        }
    )


PREVIEW_ROWS = 5
PREVIEW_CHARS = 120


def _preview(curated) -> dg.TableMetadataValue:
    """The first few curated rows (record id, timestamp, text cut to PREVIEW_CHARS) as a Dagster table."""
    head = curated.sort("row_number").head(PREVIEW_ROWS)
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("record_id", "string"),
            dg.TableColumn("ts", "string"),
            dg.TableColumn("text", "string"),
        ]
    )
    records = [
        dg.TableRecord(
            {
                "record_id": str(r["record_id"]),
                "ts": "" if r["ts"] is None else str(r["ts"]),
                "text": r["text"] if len(r["text"]) <= PREVIEW_CHARS else r["text"][:PREVIEW_CHARS] + "…",
            }
        )
        for r in head.iter_rows(named=True)
    ]
    return dg.MetadataValue.table(records=records, schema=schema)
