"""Run the real Dagster daemon (sensors, schedules, run queue, pools) over a streamtune home.

``streamtune run``, ``streamtune demo`` and the end-to-end tests drive the loop
through exactly this code: write the instance config, start the loop's long-lived
code server (``orchestration.cli.code_server``: ``dagster api grpc -m orchestration.definitions``)
and ``dagster-daemon run -w <workspace.yaml>`` over it, with ``DAGSTER_HOME`` inside
the home, and (for ``--until-idle``) watch the instance until nothing is left
to do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import PARENT_RUN_ID_TAG, ROOT_RUN_ID_TAG, WILL_RETRY_TAG

from orchestration.cli.code_server import CodeServer, CodeServerError, workspace_yaml
from orchestration.cli.homelock import HomeLock, die_with_parent, loop_env
from orchestration.config.profiles import instance_yaml, profile_env
from orchestration.config.settings import Settings
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.pipeline.progress import PROGRESS_FILE, read_progress
from orchestration.sources.landing import closed_files_after, window_key_for
from orchestration.store.warehouse import Warehouse

ACTIVE_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")
ORPHAN_STATUSES = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)
POOLS = {"duckdb": 1, "training": 1}


class DaemonError(RuntimeError):
    """The daemon died or the loop did not go idle in time."""


def instance_env(settings: Settings) -> dict[str, str]:
    """Environment for every Dagster process of this home (with the home's loop marker,
    ``orchestration.cli.homelock.OWNER_ENV``, so a stop can find every one of them)."""
    env = loop_env(dict(os.environ), settings.home)
    env["DAGSTER_HOME"] = str(settings.paths.dagster_home)
    env["STREAMTUNE_HOME"] = str(settings.home)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "true")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(profile_env(settings))  # team profile: dagster.yaml reads the Postgres URL from the env
    if not settings.base_model:
        env.setdefault("HF_HUB_OFFLINE", "1")  # the local base needs no hub
    return env


def prepare_instance(settings: Settings) -> Path:
    """Create the home's folders, write ``dagster.yaml`` and set the pool limits.

    Returns:
        The ``DAGSTER_HOME`` directory.
    """
    paths = settings.paths.ensure()
    template = resources.files("orchestration").joinpath("templates/dagster.yaml").read_text()
    (paths.dagster_home / "dagster.yaml").write_text(instance_yaml(settings, template))
    Warehouse(paths.warehouse).init_schema()
    with _instance(settings) as instance:
        for pool, limit in POOLS.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)
    _init_mlflow_store(settings)
    return paths.dagster_home


def recover_orphaned_runs(settings: Settings) -> list[str]:
    """Fail the runs a dead loop left STARTING, STARTED or CANCELING, and free every pool slot held by a
    run that has ended.

    Call only while holding the home's ``HomeLock`` with no daemon started yet: then no run worker of
    the home is alive (the lock's holder started them all and ``HomeLock`` stopped what a killed holder
    left), so such a run can never finish by itself and would hold its ``duckdb``/``training`` slot
    for ever. A failed run is retried by ``run_retries`` once the daemon is up.

    Returns:
        One line per run failed or canceled (``job[partition] run 1a2b3c4d: STARTED -> FAILURE``).
    """
    lines = []
    with open_instance(settings) as instance:
        for run in instance.get_runs(RunsFilter(statuses=list(ORPHAN_STATUSES))):
            message = f"streamtune: the run worker of this {run.status.value} run is gone (the loop was killed)"
            if run.status == DagsterRunStatus.CANCELING:
                instance.report_run_canceled(run, message)
                new = DagsterRunStatus.CANCELED
            else:
                instance.report_run_failed(run, message)
                new = DagsterRunStatus.FAILURE
            partition = run.tags.get("dagster/partition", "")
            where = f"{run.job_name}[{partition}]" if partition else run.job_name
            lines.append(f"{where} run {run.run_id[:8]}: {run.status.value} -> {new.value}")
        storage = instance.event_log_storage
        if storage.supports_global_concurrency_limits:
            for run_id in storage.get_concurrency_run_ids():
                run = instance.get_run_by_id(run_id)
                if run is None or run.is_finished:
                    storage.free_concurrency_slots_for_run(run_id)
    return lines


def _init_mlflow_store(settings: Settings) -> None:
    """Create the sqlite MLflow schema once, before several processes race to migrate it."""
    if settings.mlflow_tracking_uri or settings.paths.mlflow_db.exists():
        return
    subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", settings.paths.mlflow_tracking_uri],
        check=True,
        env=instance_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class _instance:
    """Context manager: a DagsterInstance of the home (DAGSTER_HOME set only while open)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __enter__(self):
        self._old = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(self.settings.paths.dagster_home)
        self._old_profile = {k: os.environ.get(k) for k in profile_env(self.settings)}
        os.environ.update(profile_env(self.settings))  # team profile: the Postgres URL dagster.yaml reads
        self.instance = DagsterInstance.get()
        return self.instance

    def __exit__(self, *exc) -> None:
        self.instance.dispose()
        for key, value in self._old_profile.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self._old is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = self._old


def open_instance(settings: Settings):
    """``with open_instance(settings) as instance:`` the home's Dagster instance."""
    return _instance(settings)


@dataclass
class LoopSummary:
    """What a ``run --until-idle`` session saw."""

    runs: dict[str, int] = field(default_factory=dict)  # status -> count, runs started during the session
    failures: list[str] = field(default_factory=list)  # one line per failed run that no retry made good
    recovered: list[str] = field(default_factory=list)  # one line per failed run whose retry (run_retries) succeeded
    seconds: float = 0.0
    idle_by: str = ""  # "sensor ticks" (every live sensor ticked after the loop went quiet) or "quiet time"


class Daemon:
    """A ``dagster-daemon`` process and its code server over one home (context manager; stops their process
    group on exit).

    Holds the home's ``HomeLock`` while open: a second ``Daemon`` (or ``streamtune run|demo|ui``) on the
    same home raises ``CliError``. At start it fails the runs a killed loop left behind
    (``recover_orphaned_runs``; the lines are in ``recovered``).
    """

    def __init__(self, settings: Settings, log_path: Path | None = None, command: str = "run") -> None:
        self.settings = settings
        self.log_path = log_path or settings.paths.logs / "dagster-daemon.log"
        self.proc: subprocess.Popen | None = None
        """The ``dagster-daemon`` process."""
        self.code_server: CodeServer | None = None
        """The loop's long-lived code server (``orchestration.cli.code_server``)."""
        self.recovered: list[str] = []
        self.command = command
        self._lock: HomeLock | None = None

    def __enter__(self) -> Daemon:
        lock = HomeLock(self.settings.home, self.command)
        lock.__enter__()
        self._lock = lock
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pgid(self) -> int | None:
        """The process group of the daemon, the code server, its fork server and the run workers (the code
        server's pid, also while it is still starting); None before the code server was launched."""
        if self.code_server is None or self.code_server.proc is None:
            return None
        return self.code_server.pgid

    def _start(self) -> None:
        prepare_instance(self.settings)
        self.recovered = recover_orphaned_runs(self.settings)
        daemon_exe, dagster_exe = _console_script("dagster-daemon"), _console_script("dagster")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = instance_env(self.settings)
        self.code_server = CodeServer(dagster_exe, env, self.settings.home, self._log)
        try:
            self.code_server.start()
        except CodeServerError as exc:
            raise DaemonError(f"{exc}; log tail:\n{self._log_tail()}") from exc
        workspace = self.settings.paths.dagster_home / "workspace.yaml"
        workspace.write_text(workspace_yaml(self.code_server.port))
        self.proc = subprocess.Popen(
            [daemon_exe, "run", "-w", str(workspace)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            process_group=self.pgid,  # one killpg stops the daemon, the code server and the run workers
            preexec_fn=die_with_parent,  # a SIGKILLed parent leaves no daemon behind
            cwd=str(self.settings.home),
        )

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        procs = [p for p in (self.proc, getattr(self.code_server, "proc", None)) if p is not None]
        if self.pgid is not None and any(p.poll() is None for p in procs):
            _killpg(self.pgid, signal.SIGTERM)
            try:
                for p in procs:
                    p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _killpg(self.pgid, signal.SIGKILL)
                for p in procs:
                    p.wait()
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.__exit__(None, None, None)  # stops any process of the home still running

    def check_alive(self) -> None:
        for name, proc in (("dagster-daemon", self.proc), ("the code server", getattr(self.code_server, "proc", None))):
            if proc is None or proc.poll() is not None:
                raise DaemonError(
                    f"{name} exited (code {proc.returncode if proc else None}); log tail:\n{self._log_tail()}"
                )

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def wait_until_idle(self, timeout_s: float = 3600.0, settle_s: float | None = None, progress=None) -> LoopSummary:
        """Block until every landed file has a partition, no run is queued or running, and that has held
        until every live sensor that can request runs (``run_requesting_sensors``) finished a tick that started
        after the loop went quiet (``sensors_ticked_since``: nothing is left for a sensor to request), or for
        ``settle_s`` seconds, whichever comes first.

        Args:
            settle_s: the longest quiet time to wait for (default: 3 sensor intervals + 10 s); the fallback when
                no sensor is ticking.
            progress: optional callable(LoopState), called about once a second.

        Raises:
            DaemonError: the daemon died or ``timeout_s`` passed first.
        """
        settle_s = (
            settle_s
            if settle_s is not None
            else 3 * max(self.settings.landing_interval_s, self.settings.finetune_trigger_interval_s) + 10
        )
        start = time.time()
        quiet_since: float | None = None
        requesters = run_requesting_sensors(self.settings)
        with open_instance(self.settings) as instance:
            while True:
                self.check_alive()
                active = _active_runs(instance)
                known = set(instance.get_dynamic_partitions(WINDOWS_PARTITION))
                landed = {
                    window_key_for(f.name)
                    for f in closed_files_after(self.settings.paths.landing, None, self.settings.landing_symlinks)
                }
                waiting = len(landed - known)
                msg = f"{active} run(s) active, {waiting} landed file(s) not yet seen, {len(known)} window(s) known"
                if progress:
                    progress(
                        LoopState(
                            message=msg,
                            active_runs=active,
                            landed=len(landed | known),
                            ingested=len(instance.get_materialized_partitions(AssetKey("approved_window"))),
                            updates=_materializations_since(instance, "challenger_model", start),
                            training=read_progress(self.settings.paths.logs / PROGRESS_FILE),
                        )
                    )
                if active == 0 and waiting == 0:
                    quiet_since = quiet_since or time.time()
                    if time.time() - quiet_since >= settle_s:
                        idle_by = "quiet time"
                        break
                    if sensors_ticked_since(instance, quiet_since, requesters) and _active_runs(instance) == 0:
                        idle_by = "sensor ticks"  # recounted after the ticks: a tick's runs exist before it completes
                        break
                else:
                    quiet_since = None
                if time.time() - start > timeout_s:
                    raise DaemonError(f"not idle after {timeout_s:.0f} s: {msg}")
                time.sleep(1.0)
            summary = LoopSummary(seconds=time.time() - start, idle_by=idle_by)
            runs = instance.get_runs(RunsFilter(created_after=_utc(start)))
            for run in runs:
                summary.runs[run.status.value] = summary.runs.get(run.status.value, 0) + 1
                if run.status == DagsterRunStatus.FAILURE:
                    line = _failure_line(instance, run)
                    (summary.recovered if _retried_successfully(instance, run) else summary.failures).append(line)
        return summary


def _active_runs(instance: DagsterInstance) -> int:
    """Runs queued, starting, running or canceling, plus crashed runs whose retry has not been launched yet."""
    active = instance.get_runs_count(RunsFilter(statuses=[DagsterRunStatus[s] for s in ACTIVE_STATUSES]))
    return active + _retries_pending(instance)


SENSOR_LIVE_S = 30.0
"""A sensor whose latest tick started within this many seconds is live (the daemon is ticking it)."""


def run_requesting_sensors(settings: Settings) -> frozenset[str]:
    """Names of the code location's sensors that target a job, i.e. can request runs (the landing, new-window,
    profile and drift sensors; not the alert and clean-up sensors, which tick every 10-30 s and request none)."""
    from orchestration.definitions import build_definitions  # lazy: the assets and their libraries

    return frozenset(s.name for s in build_definitions(settings).sensors if s.targets)


def sensors_ticked_since(instance: DagsterInstance, since: float, names: frozenset[str]) -> bool:
    """Whether every live sensor among ``names`` has a completed tick (success, skipped or failed) that started
    after ``since`` (epoch seconds). Dagster's sensor daemon creates a tick's runs and dynamic partitions before
    it marks the tick completed, so once this holds for a moment when no run was active, none of these sensors
    has anything left to request. False when none of them is live (the caller then waits its fixed quiet time).

    Reads the instance's instigator states and ticks (``DagsterInstance.all_instigator_state`` /
    ``get_ticks``): about two small queries per sensor.
    """
    now, live = time.time(), 0
    for state in instance.all_instigator_state():
        if state.instigator_type.value != "SENSOR" or state.instigator_name not in names:
            continue
        latest = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        if not latest or latest[0].timestamp < now - SENSOR_LIVE_S:
            continue
        live += 1
        after = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=since)
        if not any(t.is_completed for t in after):
            return False
    return live > 0


@dataclass
class LoopState:
    """What the loop is doing, for progress bars: counts only."""

    message: str
    active_runs: int
    landed: int
    """Windows landed (or already known as partitions)."""
    ingested: int
    """Windows whose approved_window partition is materialized (gated and approved)."""
    updates: int
    """Fine-tunes (challenger_model materializations) since waiting began."""
    training: dict | None
    """The running fine-tune's progress (``orchestration.pipeline.progress.read_progress``), or None."""


def _console_script(name: str) -> str:
    """Path of an installed console script, next to this interpreter first."""
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        raise DaemonError(f"{name} not found: install streamtune into this environment (make install)")
    return exe


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # every process of the group has exited
        os.killpg(pgid, sig)


def _retries_pending(instance, within_s: float = 900.0) -> int:
    """Runs that failed in the last ``within_s`` seconds tagged ``dagster/will_retry=true`` (Dagster's run
    retries will launch a retry) whose retry does not exist yet. The retry is launched by the daemon's event-log
    consumer a moment after the failure; without this, a loop could look idle in between and stop early."""
    failed = instance.get_runs(
        RunsFilter(
            statuses=[DagsterRunStatus.FAILURE],
            tags={WILL_RETRY_TAG: "true"},
            updated_after=datetime.fromtimestamp(time.time() - within_s, tz=UTC),
        )
    )
    return sum(1 for run in failed if not instance.get_runs_count(RunsFilter(tags={PARENT_RUN_ID_TAG: run.run_id})))


def _retried_successfully(instance, run) -> bool:
    """Whether a later run of the same retry chain (``dagster/root_run_id``, set by run_retries and re-execution)
    ended in SUCCESS: a killed run that Dagster retried to completion is recovered, not a failure."""
    root = run.tags.get(ROOT_RUN_ID_TAG, run.run_id)
    created = instance.get_run_record_by_id(run.run_id).create_timestamp
    chain = instance.get_run_records(RunsFilter(tags={ROOT_RUN_ID_TAG: root}, statuses=[DagsterRunStatus.SUCCESS]))
    return any(r.dagster_run.run_id != run.run_id and r.create_timestamp > created for r in chain)


def _materializations_since(instance, asset: str, since: float) -> int:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), after_timestamp=since), limit=1000
    ).records
    return len(records)


def _utc(ts: float):
    return datetime.fromtimestamp(ts - 5, tz=UTC)


def _failure_line(instance, run) -> str:
    """One line per failed run: job, partition, and the first error message."""
    partition = run.tags.get("dagster/partition", "")
    message = ""
    records = instance.get_records_for_run(
        run.run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
    ).records
    for record in records:
        ev = record.event_log_entry.dagster_event
        err = getattr(ev.event_specific_data, "error", None) if ev else None
        if err is not None:
            message = err.message.strip().splitlines()[0] if err.message else err.cls_name
            break
        message = message or (record.event_log_entry.message or "")
    where = f"{run.job_name}[{partition}]" if partition else run.job_name
    return f"{where} run {run.run_id[:8]}: {message}"
