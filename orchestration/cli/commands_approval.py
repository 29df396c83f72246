"""``streamtune promote | reject | approvals``: decide on challengers that wait for approval
(``[gate] require_approval = true``), and list them.

The rules are in ``orchestration.pipeline.approval.decide``: a request for an unknown version, one that does not
wait for approval (never held, rejected by the gate), one already decided, or a promotion whose parent is no longer
the champion (it would drop the newer champion or move it backwards) is refused with one line and exit status 2,
before anything changes.
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer
from rich.table import Table

from orchestration.cli.common import BAD_INPUT, CliError, HomeOpt, console, home_settings, require_warehouse
from orchestration.config.settings import Settings

VersionOpt = Annotated[str, typer.Option("--version", "-v", help="model version waiting for approval, e.g. 3")]
ByOpt = Annotated[str | None, typer.Option("--by", help="who decides (default: the OS user)")]


def _decide(home, version: str, decision: str, by: str | None, reason: str) -> None:
    # lazy: duckdb, polars, mlflow (seconds)
    from orchestration.config.profiles import open_registry
    from orchestration.pipeline.approval import ApprovalError, decide
    from orchestration.store.warehouse import Warehouse

    settings = home_settings(home)
    require_warehouse(settings)
    _require_mlflow(settings)
    warehouse = Warehouse(settings.paths.warehouse, lock_timeout_s=60)
    warehouse.init_schema()
    try:
        done = decide(
            open_registry(settings), warehouse, version, decision, decided_by=by or getpass.getuser(), reason=reason
        )
    except ApprovalError as e:
        hint = e.hint or "`streamtune approvals` lists the versions waiting for a decision"
        raise CliError(str(e), hint, code=BAD_INPUT) from e
    what = "promoted" if decision == "promote" else "rejected"
    console.print(
        f"v{done.version} {what} by {done.decided_by} ({done.reason}); champion: v{done.champion_before} -> "
        f"v{done.champion_after}",
        markup=False,
    )


def _require_mlflow(settings: Settings) -> None:
    if not (settings.mlflow_tracking_uri or settings.paths.mlflow_db.exists()):
        raise CliError(f"no MLflow store in {settings.home}", "run the loop first (streamtune demo / run)", BAD_INPUT)


def promote(
    version: VersionOpt,
    home: HomeOpt = None,
    by: ByOpt = None,
    reason: Annotated[str, typer.Option("--reason", help="why; stored in train.approvals and as a tag")] = "approved",
) -> None:
    """Make a challenger that waits for approval the champion, and record who and why."""
    _decide(home, version, "promote", by, reason)


def reject(
    version: VersionOpt,
    reason: Annotated[str, typer.Option("--reason", help="why (required); stored in train.approvals and as a tag")],
    home: HomeOpt = None,
    by: ByOpt = None,
) -> None:
    """Reject a challenger that waits for approval (the champion stays), and record who and why."""
    _decide(home, version, "reject", by, reason)


def approvals(
    home: HomeOpt = None,
    pending: Annotated[bool, typer.Option("--pending", help="only versions waiting for a decision")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Challengers held for approval and their decisions (who, why, when)."""
    from orchestration.store.approvals import ApprovalTables  # lazy: duckdb, polars
    from orchestration.store.warehouse import Warehouse

    settings = home_settings(home)
    require_warehouse(settings)
    warehouse = Warehouse(settings.paths.warehouse, lock_timeout_s=60)
    warehouse.init_schema()
    rows = ApprovalTables(warehouse.path, 60).approvals("pending" if pending else None).to_dicts()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table("version", "status", "champion before", "requested", "decided by", "reason", "decided")
    for r in rows:
        cells = [r["champion_before"], r["requested_at"], r["decided_by"], r["reason"], r["decided_at"]]
        table.add_row(f"v{r['model_version']}", r["status"], *("" if c is None else str(c) for c in cells))
    console.print(table)
