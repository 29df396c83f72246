"""Blocking Great Expectations checks on the window assets.

Each check is partitioned like its asset (a check without ``partitions_def``
would load every partition) and sits in the ``duckdb`` pool because it reads
the warehouse. A failing blocking check fails the ingest run before
``approved_window``, so the window never reaches training.
"""

import warnings

import dagster as dg

from assets.curate import curated_window
from assets.ingest import raw_window
from orchestration.partitions import windows_partitions
from orchestration.resources import StreamtuneResource, WarehouseResource

# Partitioned asset checks are "preview" in Dagster 1.13 but are what keeps a check from loading
# every partition; we rely on them deliberately.
warnings.filterwarnings(
    "ignore", category=dg.PreviewWarning, message="Specifying a partitions_def on an AssetCheckSpec"
)


def _result(outcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=outcome.passed, description=outcome.description, metadata=outcome.metadata)


@dg.asset_check(
    asset=curated_window,
    blocking=True,
    partitions_def=windows_partitions,
    pool="duckdb",
    description="GX: no curated row has a null text.",
)
def text_not_null(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    from quality.suite import check_text_not_null

    return _result(check_text_not_null(warehouse.warehouse().read_curated_window(context.partition_key)))


@dg.asset_check(
    asset=curated_window,
    blocking=True,
    partitions_def=windows_partitions,
    pool="duckdb",
    description="GX: every curated text length is within the configured bounds.",
)
def text_length_bounds(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, streamtune: StreamtuneResource
) -> dg.AssetCheckResult:
    from quality.suite import check_text_length

    df = warehouse.warehouse().read_curated_window(context.partition_key)
    return _result(check_text_length(df, streamtune.settings().quality_config()))


@dg.asset_check(
    asset=curated_window,
    blocking=True,
    partitions_def=windows_partitions,
    pool="duckdb",
    description="GX: the curated window has at least the configured minimum number of rows.",
)
def window_not_empty(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, streamtune: StreamtuneResource
) -> dg.AssetCheckResult:
    from quality.suite import check_window_not_empty

    df = warehouse.warehouse().read_curated_window(context.partition_key)
    return _result(check_window_not_empty(df, streamtune.settings().quality_config()))


@dg.asset_check(
    asset=curated_window,
    blocking=True,
    partitions_def=windows_partitions,
    pool="duckdb",
    description="Conservation: parsed raw rows = curated + quarantined rows.",
)
def rows_conserved(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    from quality.suite import check_rows_conserved

    c = warehouse.warehouse().window_counts(context.partition_key)
    return _result(check_rows_conserved(c.parsed_rows, c.curated_rows, c.quarantined_rows))


@dg.asset_check(
    asset=raw_window,
    blocking=True,
    partitions_def=windows_partitions,
    pool="duckdb",
    description="Every source line/row of the file is a parsed row or a reject.",
)
def source_rows_accounted(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    c = warehouse.warehouse().window_counts(context.partition_key)
    ok = c.source_rows == c.parsed_rows + c.rejected_rows
    return dg.AssetCheckResult(
        passed=ok,
        description=f"{c.source_rows} source rows = {c.parsed_rows} parsed + {c.rejected_rows} rejected"
        if ok
        else f"{c.source_rows} source rows != {c.parsed_rows} parsed + {c.rejected_rows} rejected",
        metadata={"source_rows": c.source_rows, "parsed_rows": c.parsed_rows, "rejected_rows": c.rejected_rows},
    )


@dg.asset_check(
    asset=raw_window,
    partitions_def=windows_partitions,
    pool="duckdb",
    description="Warns when more than 5% of a file's lines cannot be parsed.",
)
def reject_rate(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    c = warehouse.warehouse().window_counts(context.partition_key)
    rate = c.rejected_rows / c.source_rows if c.source_rows else 0.0
    return dg.AssetCheckResult(passed=rate <= 0.05, severity=dg.AssetCheckSeverity.WARN, metadata={"reject_rate": rate})


@dg.asset_check(
    asset=curated_window,
    blocking=True,
    partitions_def=windows_partitions,
    pool="duckdb",
    description="GX: window-level expectations of the curate suite (schema, row count, duplicate rate).",
)
def window_expectations(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    from quality.suite import check_window_expectations

    return _result(check_window_expectations(warehouse.warehouse().window_results(context.partition_key)))


@dg.asset_check(
    asset=curated_window,
    blocking=True,
    partitions_def=windows_partitions,
    pool="duckdb",
    description="Presidio re-scan: no detectable PII or secret remains in the curated window.",
)
def pii_free(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    from quality.suite import check_pii_free

    return _result(check_pii_free(warehouse.warehouse().read_curated_window(context.partition_key)))


WINDOW_CHECKS = [
    text_not_null,
    text_length_bounds,
    window_not_empty,
    rows_conserved,
    window_expectations,
    pii_free,
    source_rows_accounted,
    reject_rate,
]
