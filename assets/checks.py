"""Blocking Great Expectations checks on the window assets.

Each check is partitioned like its asset (a check without ``partitions_def`` would load every partition) and
reads the warehouse, so it runs in the ``duckdb`` pool. The checks of one asset share one step
(``multi_asset_check``, ``can_subset``): one process step and one pool claim instead of one per check, with
the same check names in the UI. A failing blocking check fails the ingest run before ``approved_window``, so
the window never reaches training.
"""

import warnings

import dagster as dg

from assets.curate import curated_window
from assets.ingest import raw_window
from assets.specs import WINDOW_STEP
from orchestration.partitions import windows_partitions
from orchestration.pipeline import curate as steps
from orchestration.resources import WarehouseResource

# Partitioned asset checks are "preview" in Dagster 1.13 but are what keeps a check from loading
# every partition; we rely on them deliberately.
warnings.filterwarnings(
    "ignore", category=dg.PreviewWarning, message="Specifying a partitions_def on an AssetCheckSpec"
)


CURATED_CHECKS = {
    "text_not_null": ("GX: no curated row has a null text.", False),
    "text_length_bounds": ("GX: every curated text length is within the configured bounds.", True),
    "window_not_empty": ("GX: the curated window has at least the configured minimum number of rows.", True),
    "rows_conserved": ("Conservation: parsed raw rows = curated + quarantined rows.", False),
    "window_expectations": (
        "GX: window-level expectations of the curate suite (schema, row count, duplicate rate).",
        False,
    ),
    "pii_free": ("Presidio re-scan: no detectable PII or secret remains in the curated window.", False),
}
"""Blocking checks on ``curated_window``: name -> (description, whether the step takes the home's settings).
Each body is ``orchestration.pipeline.curate.<name>(warehouse, partition key[, settings])``."""


@dg.multi_asset_check(
    name="curated_window_checks",
    specs=[
        dg.AssetCheckSpec(
            name, asset=curated_window, blocking=True, description=description, partitions_def=windows_partitions
        )
        for name, (description, _) in CURATED_CHECKS.items()
    ],
    can_subset=True,
    pool=WINDOW_STEP["pool"],
    required_resource_keys={"warehouse", "streamtune"},
    description="The blocking checks of curated_window, one step (one pool claim) for all of them.",
)
def curated_window_checks(context: dg.AssetCheckExecutionContext):
    """Each selected check of ``CURATED_CHECKS`` on the step's partition; a failed one blocks approved_window."""
    warehouse, settings = context.resources.warehouse.warehouse(), context.resources.streamtune.settings()
    for key in sorted(context.selected_asset_check_keys, key=lambda k: list(CURATED_CHECKS).index(k.name)):
        extra = (settings,) if CURATED_CHECKS[key.name][1] else ()
        outcome = getattr(steps, key.name)(warehouse, context.partition_key, *extra)
        yield dg.AssetCheckResult(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=outcome.passed,
            description=outcome.description,
            metadata=outcome.metadata,
        )


def _source_rows_accounted(counts) -> dg.AssetCheckResult:
    source, parsed, rejected = counts.source_rows, counts.parsed_rows, counts.rejected_rows
    ok = source == parsed + rejected
    return dg.AssetCheckResult(
        asset_key=raw_window.key,
        check_name="source_rows_accounted",
        passed=ok,
        description=f"{source} source rows {'=' if ok else '!='} {parsed} parsed + {rejected} rejected",
        metadata={"source_rows": source, "parsed_rows": parsed, "rejected_rows": rejected},
    )


def _reject_rate(counts) -> dg.AssetCheckResult:
    rate = counts.rejected_rows / counts.source_rows if counts.source_rows else 0.0
    return dg.AssetCheckResult(
        asset_key=raw_window.key,
        check_name="reject_rate",
        passed=rate <= 0.05,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"reject_rate": rate},
    )


@dg.multi_asset_check(
    name="raw_window_checks",
    specs=[
        dg.AssetCheckSpec(
            "source_rows_accounted",
            asset=raw_window,
            blocking=True,
            description="Every source line/row of the file is a parsed row or a reject.",
            partitions_def=windows_partitions,
        ),
        dg.AssetCheckSpec(
            "reject_rate",
            asset=raw_window,
            description="Warns when more than 5% of a file's lines cannot be parsed.",
            partitions_def=windows_partitions,
        ),
    ],
    can_subset=True,
    pool=WINDOW_STEP["pool"],
    description="The checks of raw_window (row accounting, reject rate), one step.",
)
def raw_window_checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    counts = warehouse.warehouse().window_counts(context.partition_key)
    builders = {"source_rows_accounted": _source_rows_accounted, "reject_rate": _reject_rate}
    for key in sorted(context.selected_asset_check_keys, key=lambda k: list(builders).index(k.name)):
        yield builders[key.name](counts)


WINDOW_CHECKS = [curated_window_checks, raw_window_checks]
