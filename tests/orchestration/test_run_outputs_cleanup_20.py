"""Per-run outputs of ``RunScopedIOManager`` do not pile up (issue 20): a successful run's folder, and those of
the runs it re-executed, are deleted by the ``run_outputs_cleanup`` run-status sensor; a failed run's outputs
stay for a re-execution from failure until ``run_outputs_retention_days`` after it ended.

Real Dagster instance in a tmp dir, real jobs (``execute_job`` and a re-execution from failure), the sensor
evaluated on the real success event.
"""

import os
import time
from pathlib import Path

import dagster as dg
from st_helpers import tiny_home

from orchestration.definitions import build_definitions
from orchestration.resources import RunScopedIOManager, prune_run_outputs, run_outputs_dir
from orchestration.sensors import build_run_outputs_sensor

DAY = 86400.0


@dg.asset(io_manager_key="run_io_manager")
def snapshot_like() -> dict:
    return {"rows": 3}


@dg.asset(io_manager_key="run_io_manager")
def challenger_like(snapshot_like: dict) -> int:
    if os.environ.get("ST_TEST_FAIL_STEP") == "1":
        raise RuntimeError("training killed")  # stands in for a crash after the first step stored its output
    return snapshot_like["rows"] + 1


def two_step_job() -> dg.JobDefinition:
    """Module level, so a re-execution can reconstruct it."""
    job = dg.define_asset_job("two_steps", selection="*", executor_def=dg.in_process_executor)
    defs = dg.Definitions(
        assets=[snapshot_like, challenger_like], jobs=[job], resources={"run_io_manager": RunScopedIOManager()}
    )
    return defs.resolve_job_def("two_steps")


def _run(instance, monkeypatch, fail: bool, parent: str | None = None):
    monkeypatch.setenv("ST_TEST_FAIL_STEP", "1" if fail else "0")
    options = dg.ReexecutionOptions.from_failure(parent, instance) if parent else None
    with dg.execute_job(
        dg.reconstructable(two_step_job), instance=instance, raise_on_error=False, reexecution_options=options
    ) as result:
        return result.run_id, result.success


def _outputs(instance, run_id) -> list[str]:
    folder = run_outputs_dir(Path(instance.storage_directory()), run_id)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_successful_run_clears_its_outputs_and_its_failed_parents(tmp_path, monkeypatch):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        failed, ok = _run(instance, monkeypatch, fail=True)
        assert not ok and _outputs(instance, failed) == ["snapshot_like"]  # kept for the re-execution
        retry, ok = _run(instance, monkeypatch, fail=False, parent=failed)  # loads snapshot_like from `failed`
        assert ok and _outputs(instance, retry) == ["challenger_like"]

        success = instance.all_logs(retry, of_type=dg.DagsterEventType.RUN_SUCCESS)[0]
        context = dg.build_run_status_sensor_context(
            sensor_name="run_outputs_cleanup",
            dagster_event=success.dagster_event,
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(retry),
        )
        build_run_outputs_sensor(retention_days=7)(context)
        assert _outputs(instance, retry) == [] and _outputs(instance, failed) == []


def test_failed_run_outputs_are_pruned_after_the_retention_period(tmp_path, monkeypatch):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        failed, ok = _run(instance, monkeypatch, fail=True)
        assert not ok
        stray = run_outputs_dir(Path(instance.storage_directory()), "0f2d8c1e-0000-4000-8000-000000000000")
        stray.mkdir(parents=True)  # a run the instance no longer knows: aged by its folder's mtime
        old = time.time() - 10 * DAY
        os.utime(stray, (old, old))
        assert prune_run_outputs(instance, retention_days=7) == [stray.parent.name]
        assert _outputs(instance, failed) == ["snapshot_like"]  # ended just now: a re-execution still needs it
        assert prune_run_outputs(instance, retention_days=0, now=time.time() + 30 * DAY) == []  # 0 = no age limit
        assert prune_run_outputs(instance, retention_days=7, now=time.time() + 8 * DAY) == [failed]
        assert _outputs(instance, failed) == []


def test_the_home_definitions_run_the_cleanup_sensor(tmp_path):
    settings = tiny_home(tmp_path / "home", run_outputs_retention_days=3.5)
    sensors = {s.name: s for s in build_definitions(settings).sensors}
    assert sensors["run_outputs_cleanup"].default_status == dg.DefaultSensorStatus.RUNNING
