"""``streamtune status | rollback``: windows, model versions and the champion of a home; move the champion back."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer
from rich.table import Table

from orchestration.cli.common import CliError, HomeOpt, console, home_settings
from orchestration.config.profiles import open_registry, profile_of
from orchestration.config.settings import Settings

WINDOW_COLUMNS = (
    "window",
    "rows in",
    "curated",
    "quarantined",
    "rejected",
    "loss before",
    "loss after",
    "bpb before",
    "bpb after",
    "ret bpb before",
    "ret bpb after",
    "version",
    "promoted",
    "MLflow run",
)


def status(
    home: HomeOpt = None, as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False
) -> None:
    """Windows, model versions and the champion of a home."""
    settings = home_settings(home)
    data = status_data(settings)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    print_window_table(data["windows"])
    console.print(
        f"model versions: {len(data['versions'])}; champion: v{data['champion']}"
        if data["champion"]
        else "no champion yet"
    )
    console.print(data["profile"])


def rollback(
    home: HomeOpt = None,
    to: Annotated[
        str | None, typer.Option("--to", help="model version to restore (default: the current champion's parent)")
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="why; stored as version tags and in train.rollbacks")
    ] = "manual rollback",
) -> None:
    """Move the champion alias back to an earlier model version and record why."""
    from orchestration.store.warehouse import Warehouse  # lazy: duckdb, polars and pyarrow (~0.4 s)

    settings = home_settings(home)
    if not (settings.mlflow_tracking_uri or settings.paths.mlflow_db.exists()):
        raise CliError(f"no MLflow store in {settings.home}", "run the loop first (streamtune demo / run)")
    registry = open_registry(settings)  # imports mlflow (seconds)
    current = registry.version_for_alias("champion")
    wh = Warehouse(settings.paths.warehouse, lock_timeout_s=60)
    wh.init_schema()
    target = to or (wh.update_parent(current) if current else None)
    if target is None:
        raise CliError(f"champion v{current} has no recorded parent to roll back to", "pass --to VERSION")
    try:
        previous = registry.rollback_champion(target, reason, actor=getpass.getuser())
    except ValueError as e:
        raise CliError(str(e), "see `streamtune status` for the versions") from e
    wh.record_rollback(previous, target, reason, getpass.getuser())
    console.print(f"champion: v{previous} -> v{target} ({reason})")


def status_data(settings: Settings) -> dict:
    """``{"home", "windows" (one dict per window: counts, losses, bits/byte, version, ``approval``: the
    ``train.approvals`` status of a version held for approval, else None), "versions" (model
    versions as strings, ascending), "champion" (version string or None), "profile" (one line)}``."""
    from orchestration.store.approvals import ApprovalTables
    from orchestration.store.warehouse import Warehouse  # lazy: duckdb, polars and pyarrow (~0.4 s)

    windows: list[dict] = []
    if settings.paths.warehouse.exists():
        wh = Warehouse(settings.paths.warehouse, lock_timeout_s=60)
        wh.init_schema()
        held = ApprovalTables(wh.path, 60).statuses()
        windows = [{**w, "approval": held.get(str(w["model_version"]))} for w in wh.window_report().to_dicts()]
    versions, champion = _registered_versions(settings)
    return {
        "home": str(settings.home),
        "windows": windows,
        "versions": versions,
        "champion": champion,
        "profile": profile_of(settings).describe(),
    }


def _registered_versions(settings: Settings) -> tuple[list[str], str | None]:
    """Registered versions of the home's model (ascending) and the champion's; none without an MLflow store."""
    versions: list[str] = []
    champion = None
    if settings.mlflow_tracking_uri or settings.paths.mlflow_db.exists():
        from mlflow.tracking import MlflowClient  # lazy: mlflow (seconds)

        client = MlflowClient(settings.tracking_uri)
        try:
            versions = sorted(
                (str(v.version) for v in client.search_model_versions(f"name='{settings.model_name}'")), key=int
            )
            champion = str(client.get_model_version_by_alias(settings.model_name, "champion").version)
        except Exception:  # no registered model yet
            pass
    return versions, champion


def _fmt(v, spec: str = ".3f") -> str:
    return "" if v is None else format(v, spec)


def print_window_table(windows: list[dict]) -> None:
    """One row per window of ``status_data(...)["windows"]``."""
    table = Table(title="streamtune windows")
    for col in WINDOW_COLUMNS:
        table.add_column(col, justify="right" if col not in ("window", "MLflow run") else "left")
    for w in windows:
        promoted = "" if w["promoted"] is None else ("yes" if w["promoted"] else "no")
        if w.get("approval") in ("pending", "rejected"):  # passed the gate, held for a person: not the champion
            promoted = w["approval"]
        table.add_row(
            w["window_key"],
            str(w["source_rows"]),
            str(w["curated_rows"]),
            str(w["quarantined_rows"]),
            str(w["rejected_rows"]),
            _fmt(w["champion_new_loss"]),
            _fmt(w["challenger_new_loss"]),
            _fmt(w["champion_new_bpb"]),
            _fmt(w["challenger_new_bpb"]),
            _fmt(w["champion_retention_bpb"]),
            _fmt(w["challenger_retention_bpb"]),
            w["model_version"] or "",
            promoted if w["approved"] else "blocked",
            w["mlflow_run_id"] or "",
        )
    console.print(table)
