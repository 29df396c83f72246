"""The ``streamtune`` command line (typer + rich).

Commands: ``demo``, ``replay``, ``run``, ``status``, ``ui``, ``rollback``. Errors print one
line and a hint, not a traceback (set ``STREAMTUNE_DEBUG=1`` for tracebacks).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from orchestration.cli.progress import LoopProgress
from orchestration.config.settings import Settings, load_settings, resolve_home, write_settings

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Keep a language model current on a live text stream."
)
console = Console(width=None if sys.stdout.isatty() else 240)  # never squash tables in logs/pipes
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="streamtune home (default $STREAMTUNE_HOME or ./.streamtune)")
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SOURCE = REPO_ROOT / "data" / "demo"

# Demo sizing: one update per window, small GPT-style model, ~1 min per update on 2 CPU cores.
DEMO_SETTINGS = {
    "max_windows_per_update": 1,
    "landing_interval_s": 3,
    "finetune_trigger_interval_s": 3,
    "eval_fraction": 0.1,
    "retention_rows": 400,
    "model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "vocab_size": 4096},
    "train": {"epochs": 3.0, "batch_size": 16, "seq_len": 128, "peak_lr": 1e-3},
    "gate": {"min_improvement": 0.0, "retention_tolerance": 0.02},
    # drift monitor sized like the model: 2000 lexical and 250 embedded texts per side and 200
    # permutations keep each window's profile to a few CPU seconds beside the fine-tunes on 2 cores
    "drift": {"sample_rows": 2000, "embed_rows": 250, "null_splits": 200, "permutations": 200},
}


class CliError(Exception):
    """A user-facing error: message plus a hint."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def _settings(home: Path | None) -> Settings:
    if home is not None:
        os.environ["STREAMTUNE_HOME"] = str(resolve_home(home))
    return load_settings(home)


@app.command()
def replay(
    source: Annotated[Path, typer.Argument(help="directory of window files (.jsonl, .jsonl.gz, .parquet, .csv)")],
    home: HomeOpt = None,
    interval: Annotated[float, typer.Option(help="seconds between windows")] = 0.0,
) -> None:
    """Copy SOURCE's window files into the landing folder in time order, atomically."""
    from orchestration.sources.landing import replay as replay_files

    settings = _settings(home)
    landed = replay_files(source, settings.paths.ensure().landing, interval)
    console.print(f"landed {len(landed)} window file(s) into {settings.paths.landing}")


@app.command()
def run(
    home: HomeOpt = None,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="process what has landed, then exit")] = False,
    timeout: Annotated[float, typer.Option(help="with --until-idle: give up after this many seconds")] = 3600.0,
) -> None:
    """Run the Dagster daemon (sensors, schedule, run queue) over the home."""
    from orchestration.cli.daemon import Daemon

    settings = _settings(home)
    with Daemon(settings) as daemon:
        console.print(f"dagster-daemon running over {settings.home} (log: {daemon.log_path})")
        if until_idle:
            with LoopProgress(console) as bars:
                summary = daemon.wait_until_idle(timeout_s=timeout, progress=bars.update)
            _print_summary(summary)
            return
        try:
            while True:
                daemon.check_alive()
                time.sleep(2)
        except KeyboardInterrupt:
            console.print("stopping")


@app.command()
def status(
    home: HomeOpt = None, as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False
) -> None:
    """Windows, model versions and the champion of a home."""
    settings = _settings(home)
    data = _status_data(settings)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    _print_window_table(data["windows"])
    console.print(
        f"model versions: {len(data['versions'])}; champion: v{data['champion']}"
        if data["champion"]
        else "no champion yet"
    )
    console.print(data["profile"])


@app.command()
def demo(
    home: HomeOpt = None,
    source: Annotated[Path, typer.Option(help="window files to replay")] = DEMO_SOURCE,
    fresh: Annotated[bool, typer.Option("--fresh/--keep", help="start from an empty home")] = True,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 3600.0,
) -> None:
    """Replay the bundled PyPI stream and run the whole loop through the Dagster daemon."""
    from orchestration.cli.daemon import Daemon
    from orchestration.sources.landing import replay as replay_files

    root = resolve_home(home)
    if fresh and root.exists():
        shutil.rmtree(root)
    if not (root / "streamtune.toml").exists():
        write_settings(root, DEMO_SETTINGS)
    settings = _settings(root)
    started = time.time()
    with Daemon(settings) as daemon:
        landed = replay_files(source, settings.paths.landing)
        console.print(f"landed {len(landed)} windows from {source}; dagster-daemon log: {daemon.log_path}")
        with LoopProgress(console) as bars:
            summary = daemon.wait_until_idle(timeout_s=timeout, progress=bars.update)
    data = _status_data(settings)
    _print_window_table(data["windows"])
    _print_summary(summary)
    console.print(f"champion: v{data['champion']}   total wall time: {time.time() - started:.0f} s")
    console.print(
        f"open the UIs:  streamtune ui --home {settings.home}   (Dagster http://127.0.0.1:3000, MLflow http://127.0.0.1:5000)"
    )
    missing = [w["window_key"] for w in data["windows"] if not w["model_version"]]
    if len(data["windows"]) < len(landed) or missing:
        raise CliError(
            f"{len(missing) or len(landed) - len(data['windows'])} window(s) were not fine-tuned: {missing}",
            hint=f"see failed runs above and {settings.paths.logs}",
        )


@app.command()
def ui(
    home: HomeOpt = None,
    dagster_port: Annotated[int, typer.Option(help="Dagster UI port")] = 3000,
    mlflow_port: Annotated[int, typer.Option(help="MLflow UI port")] = 5000,
) -> None:
    """Start the Dagster UI (with its daemon) and the MLflow server on 127.0.0.1 over the home."""
    from orchestration.cli.daemon import instance_env, prepare_instance

    settings = _settings(home)
    prepare_instance(settings)
    env = instance_env(settings)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    bindir = Path(sys.executable).parent
    procs = [
        subprocess.Popen(
            [
                str(bindir / "dagster"),
                "dev",
                "-m",
                "orchestration.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                str(dagster_port),
            ],
            env=env,
            cwd=settings.home,
            start_new_session=True,
        ),
    ]
    from orchestration.config.profiles import is_server_uri

    if is_server_uri(settings.tracking_uri):  # team profile: the MLflow server already runs elsewhere
        mlflow_url = settings.tracking_uri
    else:
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "server",
                    "--backend-store-uri",
                    settings.tracking_uri,
                    "--artifacts-destination",
                    str(settings.paths.mlartifacts),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(mlflow_port),
                    "--workers",
                    "1",
                ],
                env=env,
                cwd=settings.home,
                start_new_session=True,
            )
        )
    console.print(f"Dagster UI: http://127.0.0.1:{dagster_port}   MLflow UI: {mlflow_url}   (Ctrl-C stops both)")
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@app.command()
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
    import getpass

    from orchestration.store.warehouse import Warehouse
    from training.tracking import ModelRegistry

    settings = _settings(home)
    if not (settings.mlflow_tracking_uri or settings.paths.mlflow_db.exists()):
        raise CliError(f"no MLflow store in {settings.home}", "run the loop first (streamtune demo / run)")
    registry = ModelRegistry(
        settings.tracking_uri, str(settings.paths.mlartifacts), settings.experiment, settings.model_name
    )
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


@app.command()
def forget(
    home: HomeOpt = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            help='"<field> = <value>": a record field (id, text, window_key) or metadata key; repeatable (OR)',
        ),
    ] = None,
    ids: Annotated[list[str] | None, typer.Option("--id", help="record id; repeatable")] = None,
    reason: Annotated[str, typer.Option("--reason", help="stored with the request")] = "deletion request",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would be deleted; change nothing")] = False,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain/--no-retrain",
            help="queue fine-tune runs that retrain the affected windows without the records (the daemon runs them)",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Delete records everywhere (raw, curated, quarantine, replay buffer, landing files, snapshots), mark
    every model version trained on them, and request a retrain without them (see orchestration/pipeline/forget.py)."""
    from orchestration.pipeline.forget import ForgetError
    from orchestration.pipeline.forget import forget as forget_records

    settings = _settings(home)
    try:
        report = forget_records(
            settings,
            wheres=list(where or []),
            ids=list(ids or []),
            reason=reason,
            dry_run=dry_run,
            request_retrain=retrain,
        )
    except ForgetError as e:
        raise CliError(str(e), "e.g. streamtune forget --where \"package = 'pkg3'\" or --id REC-1") from e
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    console.print(
        f"{'dry run: ' if dry_run else ''}{report.request_id}: {len(report.records)} record(s) matched "
        f"in {len(report.deleted_by_window)} window(s)"
    )
    table = Table("table", "rows deleted" if not dry_run else "rows to delete")
    for t, n in report.deleted.items():
        table.add_row(t, str(n))
    console.print(table)
    roles = ", ".join(f"v{v} ({'/'.join(r)})" for v, r in report.version_roles.items()) or "none"
    console.print(f"versions whose ledger contains them: {roles}")
    if report.derived_versions:
        console.print(f"fine-tuned from those: {', '.join('v' + v for v in report.derived_versions)}")
    if report.base_tokenizer_affected:
        console.print(
            f"[yellow]the base tokenizer (v{report.base_tokenizer_affected}) was built from these records"
            "[/yellow]: rebuild the lineage from a new base to remove them from the vocabulary"
        )
    if report.champion_before != report.champion_after and not dry_run:
        console.print(f"champion: v{report.champion_before} -> v{report.champion_after}")
    if report.retrain_windows:
        console.print(f"windows to retrain: {', '.join(report.retrain_windows)}")
    if report.retrain_run_ids:
        console.print(
            f"queued finetune run(s): {', '.join(r[:8] for r in report.retrain_run_ids)} "
            "(run `streamtune run` if no daemon is running)"
        )
    if report.retrain_error:
        console.print(f"[red]retrain not requested[/red]: {report.retrain_error}")
    for kind, items in report.files.items():
        if items:
            console.print(f"{kind}: {'; '.join(items)}")
    if report.report_path:
        console.print(f"report: {report.report_path}")


def _status_data(settings: Settings) -> dict:
    from orchestration.store.warehouse import Warehouse

    windows: list[dict] = []
    if settings.paths.warehouse.exists():
        wh = Warehouse(settings.paths.warehouse, lock_timeout_s=60)
        wh.init_schema()
        windows = wh.window_report().to_dicts()
    versions: list[str] = []
    champion = None
    if settings.mlflow_tracking_uri or settings.paths.mlflow_db.exists():
        from mlflow.tracking import MlflowClient

        client = MlflowClient(settings.tracking_uri)
        try:
            versions = sorted(
                (str(v.version) for v in client.search_model_versions(f"name='{settings.model_name}'")), key=int
            )
            champion = str(client.get_model_version_by_alias(settings.model_name, "champion").version)
        except Exception:  # no registered model yet
            pass
    from orchestration.config.profiles import profile_of

    return {
        "home": str(settings.home),
        "windows": windows,
        "versions": versions,
        "champion": champion,
        "profile": profile_of(settings).describe(),
    }


def _fmt(v, spec: str = ".3f") -> str:
    return "" if v is None else format(v, spec)


def _print_window_table(windows: list[dict]) -> None:
    table = Table(title="streamtune windows")
    for col in (
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
    ):
        table.add_column(col, justify="right" if col not in ("window", "MLflow run") else "left")
    for w in windows:
        promoted = "" if w["promoted"] is None else ("yes" if w["promoted"] else "no")
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


quarantine_app = typer.Typer(
    no_args_is_help=True, help="List, release and purge quarantined rows (values are never printed)."
)
app.add_typer(quarantine_app, name="quarantine")
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
    from orchestration.store.warehouse import Warehouse

    settings = _settings(home)
    if not settings.paths.warehouse.exists():
        raise CliError(f"no warehouse at {settings.paths.warehouse}", "ingest a window first")
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
    from orchestration.store.warehouse import Warehouse
    from quality.suite import rejudge_quarantined

    settings = _settings(home)
    wh = Warehouse(settings.paths.warehouse)
    cfg = settings.quality_config()
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
) -> None:
    """Blank the raw text/metadata of quarantine rows older than the retention period."""
    from orchestration.store.warehouse import Warehouse

    settings = _settings(home)
    n = Warehouse(settings.paths.warehouse).purge_quarantine(
        settings.quarantine_retention_days if days is None else days
    )
    console.print(f"{n} quarantine rows purged")


def _print_summary(summary) -> None:
    runs = ", ".join(f"{n} {status.lower()}" for status, n in sorted(summary.runs.items())) or "no runs"
    console.print(f"runs: {runs} ({summary.seconds:.0f} s)")
    for line in summary.failures:
        console.print(f"  [red]failed[/red] {line}")


def main() -> None:
    """Console-script entry point."""
    try:
        app(standalone_mode=False)
    except CliError as exc:
        err_console.print(f"error: {exc}", markup=False)
        if exc.hint:
            err_console.print(f"hint: {exc.hint}")
        sys.exit(1)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        if os.environ.get("STREAMTUNE_DEBUG"):
            raise
        err_console.print(f"error: {exc}", markup=False)
        err_console.print("hint: run with STREAMTUNE_DEBUG=1 for the traceback; `streamtune --help` lists commands")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
