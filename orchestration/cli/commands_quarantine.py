"""``streamtune quarantine list | release | purge``: quarantined rows, never their values."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from orchestration.cli.common import BAD_INPUT, CliError, HomeOpt, console, home_settings, require_warehouse

quarantine_app = typer.Typer(
    no_args_is_help=True, help="List, release and purge quarantined rows (values are never printed)."
)
WindowOpt = Annotated[str | None, typer.Option("--window", "-w", help="window key")]
RuleOpt = Annotated[str | None, typer.Option("--rule", "-r", help="rule id, e.g. text_too_long, pii_private_key")]


@quarantine_app.command("list")
def quarantine_list(
    window: WindowOpt = None,
    rule: RuleOpt = None,
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Quarantined rows (window, row, record id, rule, reason, kept copy); never their text."""
    from orchestration.store.warehouse import Warehouse  # lazy: duckdb, polars and pyarrow (~0.4 s)

    settings = home_settings(home)
    require_warehouse(settings)
    rows = Warehouse(settings.paths.warehouse).quarantine_rows(window, rule)
    if as_json:
        typer.echo(json.dumps(rows.to_dicts(), indent=2, default=str))
        return
    table = Table("window", "row", "record_id", "rule", "reason", "duplicate_of")
    for r in rows.iter_rows(named=True):
        dup = f"{r['duplicate_of_window']}:{r['duplicate_of_row']}" if r["duplicate_of_window"] else ""
        table.add_row(r["window_key"], str(r["row_number"]), r["record_id"], r["rule"], r["reason"], dup)
    console.print(table)
    console.print(f"{rows.height} quarantined rows")


@quarantine_app.command("release")
def quarantine_release(
    window: Annotated[str, typer.Option("--window", "-w", help="window key")],
    rule: Annotated[str, typer.Option("--rule", "-r", help="rule id")],
    home: HomeOpt = None,
) -> None:
    """Re-judge a window's rows quarantined under RULE with the current settings; rows that now pass
    (PII-redacted, deduplicated) re-enter curated.events, the rest stay with their new reason.
    Idempotent: a second release finds nothing to move."""
    # lazy: duckdb, polars and pyarrow (~0.4 s)
    from orchestration.store.warehouse import Warehouse
    from quality.suite import rejudge_quarantined

    settings = home_settings(home)
    require_warehouse(settings)
    wh = Warehouse(settings.paths.warehouse)
    require_window(wh, window)
    cfg = settings.quality
    rows = wh.read_quarantined_raw(window, rule)
    near = cfg.near_dup_threshold is not None
    prior = (
        wh.recent_norm_hashes(window, cfg.dedup_recent_windows, include_self=True, with_text=near)
        if cfg.dedup_exact or near
        else None
    )
    curated, still = rejudge_quarantined(rows, cfg, window_key=window, prior_hashes=prior)
    released = wh.release_quarantined(window, curated, still)
    console.print(
        f"{window} / {rule}: {rows.height} quarantined rows re-judged, {released} released into "
        f"curated.events, {still.height} still quarantined"
    )


@quarantine_app.command("purge")
def quarantine_purge(
    home: HomeOpt = None,
    days: Annotated[float | None, typer.Option("--days", help="retention (default: setting)")] = None,
    window: Annotated[str | None, typer.Option("--window", "-w", help="only this window (default: every)")] = None,
) -> None:
    """Blank the raw text/metadata of quarantine rows older than the retention period (of one window
    with ``--window``)."""
    from orchestration.store.warehouse import Warehouse  # lazy: duckdb, polars and pyarrow (~0.4 s)

    settings = home_settings(home)
    require_warehouse(settings)
    wh = Warehouse(settings.paths.warehouse)
    if window is not None:
        require_window(wh, window)
    n = wh.purge_quarantine(settings.quarantine_retention_days if days is None else days, window_key=window)
    console.print(f"{n} quarantine rows purged")


def require_window(wh, window: str) -> None:
    """Nothing if ``window`` was ingested into ``wh`` (a ``Warehouse``).

    Raises:
        CliError: (``BAD_INPUT``) no such window; nothing is changed.
    """
    if not wh.window_exists(window):
        raise CliError(
            f"no window {window!r} in {wh.path}",
            "`streamtune status` lists the windows, `streamtune quarantine list` their quarantined rows",
            code=BAD_INPUT,
        )
