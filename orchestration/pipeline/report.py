"""The drift report step: every window profile's history drawn to a PNG and a Markdown table. No Dagster imports.

``drift_report`` (pool ``duckdb``) calls ``draw_drift_report``; the statistics and the drawing are in
``quality.drift.report``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestration.config.settings import Settings
from orchestration.store.warehouse import Warehouse
from quality.drift.report import history_markdown, plot_drift_history, png_data_uri


@dataclass(frozen=True)
class DriftReport:
    """The drawn report of ``monitor.window_profile``."""

    markdown: str
    """Recent windows as a Markdown table, the PNG inline as a data URI."""
    plot: Path
    """The PNG: ``<home>/monitor/drift_report.png``."""
    windows: int
    """Profiled windows."""
    drift_windows: list[str]
    """Window keys whose profile confirmed drift, in profile order."""


def draw_drift_report(settings: Settings, warehouse: Warehouse) -> DriftReport:
    """Plot every drift statistic over the profiled windows (thresholds, exceedances and confirmed drift
    marked) to ``<home>/monitor/drift_report.png`` and render the recent windows as Markdown."""
    rows = warehouse.window_profiles().to_dicts()
    path = settings.paths.root / "monitor" / "drift_report.png"
    plot_drift_history(rows, path)
    return DriftReport(
        markdown=history_markdown(rows, png_data_uri(path)),
        plot=path,
        windows=len(rows),
        drift_windows=[r["window_key"] for r in rows if r["drift"]],
    )
