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
from assets.specs import WINDOW_STEP
from orchestration.pipeline import curate as steps
from orchestration.resources import WarehouseResource

# Partitioned asset checks are "preview" in Dagster 1.13 but are what keeps a check from loading
# every partition; we rely on them deliberately.
warnings.filterwarnings(
    "ignore", category=dg.PreviewWarning, message="Specifying a partitions_def on an AssetCheckSpec"
)


def _result(outcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=outcome.passed, description=outcome.description, metadata=outcome.metadata)


def _curated_check(name: str, description: str, *, uses_settings: bool = False) -> dg.AssetChecksDefinition:
    """A blocking check on ``curated_window`` whose body is ``orchestration.pipeline.curate.<name>`` on the
    check's partition (plus the home's settings when ``uses_settings``)."""
    step = getattr(steps, name)
    resources = {"warehouse", "streamtune"} if uses_settings else {"warehouse"}

    @dg.asset_check(
        **WINDOW_STEP,
        name=name,
        asset=curated_window,
        blocking=True,
        description=description,
        required_resource_keys=resources,
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        extra = (context.resources.streamtune.settings(),) if uses_settings else ()
        return _result(step(context.resources.warehouse.warehouse(), context.partition_key, *extra))

    return _check


text_not_null = _curated_check("text_not_null", "GX: no curated row has a null text.")
text_length_bounds = _curated_check(
    "text_length_bounds", "GX: every curated text length is within the configured bounds.", uses_settings=True
)
window_not_empty = _curated_check(
    "window_not_empty",
    "GX: the curated window has at least the configured minimum number of rows.",
    uses_settings=True,
)
rows_conserved = _curated_check("rows_conserved", "Conservation: parsed raw rows = curated + quarantined rows.")
window_expectations = _curated_check(
    "window_expectations",
    "GX: window-level expectations of the curate suite (schema, row count, duplicate rate).",
)
pii_free = _curated_check("pii_free", "Presidio re-scan: no detectable PII or secret remains in the curated window.")


@dg.asset_check(
    **WINDOW_STEP,
    asset=raw_window,
    blocking=True,
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
    **WINDOW_STEP, asset=raw_window, description="Warns when more than 5% of a file's lines cannot be parsed."
)
def reject_rate(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    c = warehouse.warehouse().window_counts(context.partition_key)
    rate = c.rejected_rows / c.source_rows if c.source_rows else 0.0
    return dg.AssetCheckResult(passed=rate <= 0.05, severity=dg.AssetCheckSeverity.WARN, metadata={"reject_rate": rate})


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
