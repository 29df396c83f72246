"""The curate step and the blocking checks' reads: a raw window through the quality gate. No Dagster imports.

``curated_window`` (pool ``duckdb``) calls ``curate``; each blocking check on ``curated_window`` calls one
``check_*`` function here, which reads the stored window and asks ``quality.suite`` for the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestration.config.settings import Settings
from orchestration.pipeline.ingest import retire_landing_file
from orchestration.store.warehouse import Warehouse
from quality import suite
from quality.suite import CheckOutcome, curate_window, verdict_metadata, write_suite


@dataclass(frozen=True)
class CurateResult:
    """What ``curate`` stored: the verdict's metadata (counts and rates only, never row values)."""

    metadata: dict[str, Any]
    """``quality.suite.verdict_metadata`` plus ``quarantine_rows_purged``."""
    docs_index: str | None
    """Path of the GX Data Docs ``index.html`` of this validation, if built."""


def curate(settings: Settings, warehouse: Warehouse, key: str) -> CurateResult:
    """Run window ``key``'s raw rows through the gate (GX suite, PII redaction, dedup against the recent
    windows' normalized hashes) into ``curated.events`` and ``curated.quarantine``, then purge quarantine rows
    older than ``settings.quarantine_retention_days``; the window's landing file is then archived, deleted or
    kept (``landing_retention``; ``orchestration.pipeline.ingest.retire_landing_file``).

    Raises:
        quality.suite.QualityGateError: GX itself failed (not a failing row: those are quarantined).
    """
    cfg = settings.quality
    rows = warehouse.read_raw_window(key)
    near = cfg.near_dup_threshold is not None
    prior = (
        warehouse.recent_norm_hashes(key, cfg.dedup_recent_windows, with_text=near)
        if (cfg.dedup_exact or near) and cfg.dedup_recent_windows
        else None
    )
    docs_dir = settings.paths.data_docs / key
    verdict = curate_window(rows, cfg, window_key=key, prior_hashes=prior, docs_dir=docs_dir)
    warehouse.replace_curated_window(
        key, verdict.curated, verdict.quarantine, verdict.window_results, verdict.gx_run_id
    )
    purged = warehouse.purge_quarantine(settings.quarantine_retention_days)
    metadata = verdict_metadata(verdict, rows.height)
    metadata["quarantine_rows_purged"] = purged
    metadata["landing_file"] = retire_landing_file(settings, warehouse, key)  # landing_retention
    # the effective GX suite (built-in rules, window rules, the user's expectations_file) as GX JSON
    metadata["expectation_suite"] = str(
        write_suite(verdict.expectation_suite, settings.paths.expectations / f"{key}.json")
    )
    return CurateResult(metadata=metadata, docs_index=verdict.docs_index)


def text_not_null(warehouse: Warehouse, key: str) -> CheckOutcome:
    """GX: no curated row of window ``key`` has a null text."""
    return suite.check_text_not_null(warehouse.read_curated_window(key))


def text_length_bounds(warehouse: Warehouse, key: str, settings: Settings) -> CheckOutcome:
    """GX: every curated text length of window ``key`` is within the configured bounds (characters)."""
    return suite.check_text_length(warehouse.read_curated_window(key), settings.quality)


def window_not_empty(warehouse: Warehouse, key: str, settings: Settings) -> CheckOutcome:
    """GX: window ``key`` has at least the configured minimum number of curated rows."""
    return suite.check_window_not_empty(warehouse.read_curated_window(key), settings.quality)


def rows_conserved(warehouse: Warehouse, key: str) -> CheckOutcome:
    """Conservation: window ``key``'s parsed raw rows = curated + quarantined rows."""
    c = warehouse.window_counts(key)
    return suite.check_rows_conserved(c.parsed_rows, c.curated_rows, c.quarantined_rows)


def window_expectations(warehouse: Warehouse, key: str) -> CheckOutcome:
    """GX: the window-level expectations stored by ``curate`` (schema, row count, duplicate rate)."""
    return suite.check_window_expectations(warehouse.window_results(key))


def pii_free(warehouse: Warehouse, key: str) -> CheckOutcome:
    """Presidio re-scan: no detectable PII or secret remains in window ``key``'s curated rows."""
    return suite.check_pii_free(warehouse.read_curated_window(key))
