"""Curate: the Great Expectations gate splits a raw window into curated rows and quarantine.

``approved_window`` runs only after every blocking check on ``curated_window``
passed in the same run; it is what makes a window visible to training.
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
    description="GX-validated rows of a window in curated.events; failing rows in curated.quarantine with rule and reason.",
)
def curated_window(
    context: dg.AssetExecutionContext, streamtune: StreamtuneResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from quality.suite import curate_window

    wh = warehouse.warehouse()
    key = context.partition_key
    rows = wh.read_raw_window(key)
    verdict = curate_window(rows, streamtune.settings().quality_config())
    wh.replace_curated_window(key, verdict.curated, verdict.quarantine)
    by_rule = {rule: int(n) for rule, n in verdict.quarantine.group_by("rule").len().iter_rows()}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": verdict.curated.height,
            "raw_rows": rows.height,
            "quarantined_rows": verdict.quarantine.height,
            "quarantined_by_rule": dict(sorted(by_rule.items())),
            "rule_failures": dict(sorted(verdict.counts.items())),
            "gx_success": verdict.gx_success,
        }
    )


@dg.asset(
    deps=[curated_window],
    partitions_def=windows_partitions,
    pool="duckdb",
    group_name="quality",
    kinds={"duckdb"},
    description="A curated window whose blocking checks passed, recorded in curated.windows: eligible for training.",
)
def approved_window(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    counts = warehouse.warehouse().approve_window(context.partition_key, context.run_id)
    return dg.MaterializeResult(
        metadata={"dagster/row_count": counts.curated_rows, "quarantined_rows": counts.quarantined_rows}
    )
