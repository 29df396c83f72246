"""Killed runs do not stall the loop (issue 20, problem 1): real daemon, real run workers, SIGKILL.

A run worker killed with SIGKILL while it holds the ``duckdb`` pool slot (an OOM kill), or the whole
process tree killed mid-ingest (a machine crash, then a restart), must not leave the slot held by a dead
run: the loop resumes on its own, every window is ingested exactly once and trained on exactly once, and
the champion moves only by completed gates. The same holds for a fine-tune killed while it trains, and for
a fine-tune retry killed too (``run_retries.max_retries`` 2; fine-tunes retry all steps,
``orchestration.jobs.FINETUNE_RETRY``, so a retry trains the windows still pending).
"""

import os
import signal
import time
from importlib import resources
from pathlib import Path

import duckdb
import psutil
import pytest
import yaml
from dagster import DagsterRunStatus, RunsFilter
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config_schema
from mlflow.tracking import MlflowClient
from st_helpers import TINY_SETTINGS, is_run_worker, tiny_home, window_records, write_window

from orchestration.cli.daemon import Daemon, open_instance
from orchestration.jobs import finetune_job
from orchestration.pipeline.progress import PROGRESS_FILE, read_progress
from orchestration.sources.landing import replay

REPO = Path(__file__).resolve().parents[3]

WINDOWS = ["k-2025-01", "k-2025-02"]
ROWS = 200  # enough for the ingest step to hold its slot for a moment
DRIFT = {"sample_rows": 200, "embed_rows": 50, "null_splits": 20, "permutations": 20}  # a quick drift profile


def _land(tmp_path, settings):
    source = tmp_path / "stream"
    for i, key in enumerate(WINDOWS):
        write_window(source, f"{key}.jsonl", window_records(i, ROWS))
    replay(source, settings.paths.landing)


def _run_holding_slot(settings, timeout_s: float = 240.0) -> str:
    """The id of the first ingest run seen holding a pool slot (polls the real instance)."""
    deadline = time.time() + timeout_s
    with open_instance(settings) as instance:
        while time.time() < deadline:
            for run_id in instance.event_log_storage.get_concurrency_run_ids():
                run = instance.get_run_by_id(run_id)
                if run is not None and not run.is_finished and run.tags.get("dagster/partition") in WINDOWS:
                    return run_id
            time.sleep(0.1)
    raise AssertionError("no ingest run took a pool slot in time")


def _run_worker(daemon: Daemon) -> psutil.Process:
    """The run worker (DefaultRunLauncher): a child of the code server's fork server."""
    for _ in range(100):
        if workers := _run_workers(daemon):
            return workers[0]
        time.sleep(0.1)
    raise AssertionError("no run worker process found under the code server")


def _kill_finetune_in_training(settings, daemon: Daemon, parent: str | None, timeout_s: float = 600.0) -> str:
    """SIGKILL the run worker of a fine-tune while it trains (``logs/progress.json``), at a moment when it is
    the one run started and the one run worker alive; ``parent``: only a retry of that run. Returns its id."""
    deadline = time.time() + timeout_s
    with open_instance(settings) as instance:
        while time.time() < deadline:
            progress = read_progress(settings.paths.logs / PROGRESS_FILE) or {}
            started = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
            workers = _run_workers(daemon)
            if progress.get("phase") == "train" and [r.run_id for r in started] == [progress["run_id"]]:
                run = started[0]
                if len(workers) == 1 and run.job_name == "finetune" and run.parent_run_id == parent:
                    workers[0].kill()
                    return run.run_id
            time.sleep(0.05)
    raise AssertionError("no fine-tune was seen training alone in time")


def _run_workers(daemon: Daemon) -> list[psutil.Process]:
    """The run workers under the loop's code server: the children of its fork server
    (``orchestration.run_workers``), or ``multiprocessing`` spawn children with ``run_workers = "spawn"``."""
    found = []
    for proc in psutil.Process(daemon.code_server.proc.pid).children(recursive=True):
        try:
            if is_run_worker(proc):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def _assert_each_window_once(settings):
    with duckdb.connect(str(settings.paths.warehouse), read_only=True) as con:
        ledger = con.execute(
            "SELECT window_key, count(DISTINCT model_version) FROM train.ledger WHERE role = 'train' "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        windows = con.execute("SELECT window_key, parsed_rows FROM raw.windows ORDER BY 1").fetchall()
        events = con.execute("SELECT window_key, count(*) FROM raw.events GROUP BY 1 ORDER BY 1").fetchall()
        curated = con.execute("SELECT window_key, count(*) FROM curated.windows GROUP BY 1 ORDER BY 1").fetchall()
        updates = con.execute("SELECT model_version, window_keys FROM train.updates ORDER BY created_at").fetchall()
    assert windows == [(k, ROWS) for k in WINDOWS]
    assert events == [(k, ROWS) for k in WINDOWS]  # ingested exactly once
    assert curated == [(k, 1) for k in WINDOWS]
    assert sorted(k for _, keys in updates for k in keys) == WINDOWS  # trained on exactly once
    assert ledger == [(k, 1) for k in WINDOWS]  # one version's training rows per window
    client = MlflowClient(settings.tracking_uri)
    champion = client.get_model_version_by_alias(settings.model_name, "champion")
    assert champion.tags.get("gate.decision") == "promoted"  # moved only by a completed gate
    assert str(champion.version) in {str(v) for v, _ in updates}


@pytest.mark.parametrize("source", ["template", "deploy"])
def test_every_instance_config_monitors_runs_and_frees_the_slots_of_ended_runs(source):
    text = (
        resources.files("orchestration").joinpath("templates/dagster.yaml").read_text()
        if source == "template"
        else (REPO / "deploy" / "dagster.yaml").read_text()
    )
    config = yaml.safe_load(text)
    assert validate_config(dagster_instance_config_schema(), config).success  # Dagster schema (env vars unresolved)
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True and monitoring["max_resume_run_attempts"] == 0
    assert 0 < monitoring["free_slots_after_run_end_seconds"] <= 60 and monitoring["poll_interval_seconds"] <= 30
    helm = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())["dagsterDaemon"]
    assert helm["runMonitoring"]["enabled"] is True and helm["runMonitoring"]["freeSlotsAfterRunEndSeconds"] > 0
    # a killed retry is retried once more; a fine-tune retry re-runs every step (snapshots what is still pending)
    assert config["run_retries"]["max_retries"] == helm["runRetries"]["maxRetries"] == 2
    assert finetune_job.tags["dagster/retry_strategy"] == "ALL_STEPS"


def test_compose_publishes_ports_on_loopback_only():
    services = yaml.safe_load((REPO / "deploy" / "docker-compose.yaml").read_text())["services"]
    published = [port for svc in services.values() for port in svc.get("ports", [])]
    assert published and all(str(port).startswith("${BIND_ADDRESS:-127.0.0.1}:") for port in published)


@pytest.mark.slow
def test_sigkilled_run_worker_frees_its_pool_slot_and_the_loop_resumes(tmp_path):
    # run workers forked from the fork server (run_workers): the same recovery as with spawned ones
    settings = tiny_home(tmp_path / "home", max_windows_per_update=1, drift=DRIFT, run_workers="forkserver")
    with Daemon(settings) as daemon:
        _land(tmp_path, settings)
        victim = _run_holding_slot(settings)
        worker = _run_worker(daemon)
        assert not any("spawn_main" in part for part in worker.cmdline())  # forked, not spawned
        worker.kill()  # OOM kill: no cleanup, the slot stays claimed by `victim`
        summary = daemon.wait_until_idle(timeout_s=900, settle_s=12)
    assert summary.failures == []  # the killed run is reported as retried (when created in the wait), not failed
    assert all(victim[:8] in line for line in summary.recovered)
    with open_instance(settings) as instance:
        assert instance.get_run_by_id(victim).status == DagsterRunStatus.FAILURE  # noticed by the code server
        assert victim not in instance.event_log_storage.get_concurrency_run_ids()  # its slot was freed
        retries = [r for r in instance.get_runs() if r.parent_run_id == victim]
        assert [r.status for r in retries] == [DagsterRunStatus.SUCCESS]  # retried by run_retries
    _assert_each_window_once(settings)


@pytest.mark.slow
def test_whole_process_tree_killed_mid_ingest_then_restart_resumes(tmp_path):
    settings = tiny_home(tmp_path / "home", max_windows_per_update=1, drift=DRIFT)
    daemon = Daemon(settings).__enter__()
    try:
        _land(tmp_path, settings)
        victim = _run_holding_slot(settings)
        os.killpg(daemon.pgid, signal.SIGKILL)  # machine crash: daemon, code server and run worker at once
        daemon.proc.wait()
        daemon.code_server.proc.wait()
    finally:
        daemon.stop()
    with open_instance(settings) as instance:
        assert not instance.get_run_by_id(victim).is_finished  # left STARTED, holding its slot

    with Daemon(settings) as daemon:
        assert any(victim[:8] in line for line in daemon.recovered)
        daemon.wait_until_idle(timeout_s=900, settle_s=12)
    with open_instance(settings) as instance:
        assert instance.get_run_by_id(victim).is_finished
        assert victim not in instance.event_log_storage.get_concurrency_run_ids()
    _assert_each_window_once(settings)


@pytest.mark.slow
def test_sigkilled_finetune_is_retried_and_every_window_trained_once(tmp_path, kills=2):
    """A fine-tune killed mid-training, then its retry killed too (kills=2 covers the single kill: the first
    retry starts exactly as it would after one kill); run_retries' second retry trains what is pending."""
    train = {**TINY_SETTINGS["train"], "max_steps": 120}  # a few seconds of training to be killed in
    settings = tiny_home(tmp_path / "home", max_windows_per_update=1, drift={"enabled": False}, train=train)
    with Daemon(settings) as daemon:
        _land(tmp_path, settings)
        victims = [_kill_finetune_in_training(settings, daemon, parent=None)]
        for _ in range(kills - 1):  # the retry is killed too: run_retries gives it one more try
            victims.append(_kill_finetune_in_training(settings, daemon, parent=victims[-1]))
        daemon.wait_until_idle(timeout_s=900, settle_s=12)
    with open_instance(settings) as instance:
        for victim in victims:
            assert instance.get_run_by_id(victim).status == DagsterRunStatus.FAILURE
            assert victim not in instance.event_log_storage.get_concurrency_run_ids()  # its slot was freed
        retry = [r for r in instance.get_runs() if r.parent_run_id == victims[-1]]
        assert [(r.status, r.tags["dagster/retry_number"]) for r in retry] == [(DagsterRunStatus.SUCCESS, str(kills))]
    _assert_each_window_once(settings)
