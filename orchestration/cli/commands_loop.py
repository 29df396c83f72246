"""``streamtune replay | run | demo | ui``: land windows, drive the loop through the Dagster daemon, open the UIs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from orchestration.cli.commands_status import print_window_table, status_data
from orchestration.cli.common import CliError, HomeOpt, console, home_settings
from orchestration.cli.homelock import LOCK_NAME, HomeLock, die_with_parent, stop_on_signals
from orchestration.cli.progress import LoopProgress
from orchestration.config.profiles import is_server_uri
from orchestration.config.settings import Settings, resolve_home, write_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SOURCE = REPO_ROOT / "data" / "demo"

# Demo sizing: one update per window, small GPT-style model, ~1 min per update on 2 CPU cores.
DEMO_SETTINGS = {
    "max_windows_per_update": 1,
    "landing_interval_s": 3,
    "landing_settle_s": 0.0,  # `streamtune replay` lands each window by an atomic rename: no settle tick
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


def replay(
    source: Annotated[Path, typer.Argument(help="directory of window files (.jsonl, .jsonl.gz, .parquet, .csv)")],
    home: HomeOpt = None,
    interval: Annotated[float, typer.Option(help="seconds between windows")] = 0.0,
) -> None:
    """Copy SOURCE's window files into the landing folder in time order, atomically."""
    from orchestration.sources.landing import replay as replay_files  # lazy: polars, via quality.readers

    settings = home_settings(home)
    landed = replay_files(source, settings.paths.ensure().landing, interval)
    console.print(f"landed {len(landed)} window file(s) into {settings.paths.landing}")


def run(
    home: HomeOpt = None,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="process what has landed, then exit")] = False,
    timeout: Annotated[float, typer.Option(help="with --until-idle: give up after this many seconds")] = 3600.0,
) -> None:
    """Run the Dagster daemon (sensors, schedule, run queue) over the home."""
    from orchestration.cli.daemon import Daemon  # lazy: keeps dagster out of `streamtune --help`

    settings = home_settings(home)
    stop_on_signals()  # SIGTERM/SIGHUP unwind like Ctrl-C: the daemon and every run worker are stopped
    try:
        with Daemon(settings) as daemon:
            _print_recovered(daemon.recovered)
            console.print(f"dagster-daemon running over {settings.home} (log: {daemon.log_path})")
            if until_idle:
                with LoopProgress(console) as bars:
                    summary = daemon.wait_until_idle(timeout_s=timeout, progress=bars.update)
                print_summary(summary)
                return
            while True:
                daemon.check_alive()
                time.sleep(2)
    except KeyboardInterrupt as exc:
        console.print(f"stopped ({exc or 'interrupted'}); every process of {settings.home} was stopped")
        if until_idle:
            raise CliError(
                "stopped before the loop went idle", hint="run `streamtune run --until-idle` again"
            ) from None


def demo(
    home: HomeOpt = None,
    source: Annotated[Path, typer.Option(help="window files to replay")] = DEMO_SOURCE,
    fresh: Annotated[bool, typer.Option("--fresh/--keep", help="start from an empty home")] = True,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 3600.0,
) -> None:
    """Replay the bundled PyPI stream and run the whole loop through the Dagster daemon."""
    from orchestration.cli.daemon import Daemon  # lazy: keeps dagster out of `streamtune --help`
    from orchestration.sources.landing import replay as replay_files  # lazy: polars, via quality.readers

    root = resolve_home(home)
    stop_on_signals()
    with HomeLock(root, "demo"):  # before clearing the home: never under a loop that is running on it
        if fresh:
            _clear_home(root)
        if not (root / "streamtune.toml").exists():
            write_settings(root, DEMO_SETTINGS)
        settings = home_settings(root)
        started = time.time()
        with Daemon(settings, command="demo") as daemon:
            landed = replay_files(source, settings.paths.landing)
            console.print(f"landed {len(landed)} windows from {source}; dagster-daemon log: {daemon.log_path}")
            with LoopProgress(console) as bars:
                summary = daemon.wait_until_idle(timeout_s=timeout, progress=bars.update)
    data = status_data(settings)
    print_window_table(data["windows"])
    print_summary(summary)
    console.print(f"champion: v{data['champion']}   total wall time: {time.time() - started:.0f} s")
    console.print(
        f"open the UIs:  streamtune ui --home {settings.home}   "
        "(Dagster http://127.0.0.1:3000, MLflow http://127.0.0.1:5000)"
    )
    missing = [w["window_key"] for w in data["windows"] if not w["model_version"]]
    if len(data["windows"]) < len(landed) or missing:
        raise CliError(
            f"{len(missing) or len(landed) - len(data['windows'])} window(s) were not fine-tuned: {missing}",
            hint=f"see failed runs above and {settings.paths.logs}",
        )


def ui(
    home: HomeOpt = None,
    dagster_port: Annotated[int, typer.Option(help="Dagster UI port")] = 3000,
    mlflow_port: Annotated[int, typer.Option(help="MLflow UI port")] = 5000,
) -> None:
    """Start the Dagster UI (with its daemon) and the MLflow server on 127.0.0.1 over the home."""
    from orchestration.cli.daemon import instance_env, prepare_instance, recover_orphaned_runs  # lazy: dagster

    settings = home_settings(home)
    stop_on_signals()
    with HomeLock(settings.home, "ui"):
        prepare_instance(settings)
        _print_recovered(recover_orphaned_runs(settings))
        _serve_uis(settings, instance_env(settings), dagster_port, mlflow_port)


def _serve_uis(settings: Settings, env: dict[str, str], dagster_port: int, mlflow_port: int) -> None:
    """Run ``dagster dev`` and (embedded profile) the MLflow server until one exits or Ctrl-C/SIGTERM."""
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    bindir = Path(sys.executable).parent
    dagster_cmd = [str(bindir / "dagster"), "dev", "-m", "orchestration.definitions"]
    procs = [_spawn([*dagster_cmd, "-h", "127.0.0.1", "-p", str(dagster_port)], env, settings.home)]
    if is_server_uri(settings.tracking_uri):  # team profile: the MLflow server already runs elsewhere
        mlflow_url = settings.tracking_uri
    else:
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        procs.append(_spawn(_mlflow_server_cmd(settings, mlflow_port), env, settings.home))
    console.print(f"Dagster UI: http://127.0.0.1:{dagster_port}   MLflow UI: {mlflow_url}   (Ctrl-C stops both)")
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(procs)


def _spawn(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True, preexec_fn=die_with_parent)


def _clear_home(root: Path) -> None:
    """Remove everything in ``root`` but the home lock (held by the caller)."""
    for entry in root.iterdir() if root.is_dir() else ():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _print_recovered(lines: list[str]) -> None:
    for line in lines:
        console.print(f"  [yellow]recovered[/yellow] {line} (its worker died with an earlier loop)")


def _mlflow_server_cmd(settings: Settings, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "mlflow", "server", "--backend-store-uri", settings.tracking_uri),
        *("--artifacts-destination", str(settings.paths.mlartifacts)),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group still running, then SIGKILL those not gone within 20 s."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def print_summary(summary) -> None:
    """Runs by status and one line per failed run of a ``orchestration.cli.daemon.LoopSummary``."""
    runs = ", ".join(f"{n} {status.lower()}" for status, n in sorted(summary.runs.items())) or "no runs"
    console.print(f"runs: {runs} ({summary.seconds:.0f} s)")
    for line in summary.recovered:
        console.print(f"  [yellow]retried[/yellow] {line} (a retry succeeded)")
    for line in summary.failures:
        console.print(f"  [red]failed[/red] {line}")
