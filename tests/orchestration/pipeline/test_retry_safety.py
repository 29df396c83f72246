"""Issue 20 problem 2: a retried fine-tune trains exactly the windows its own snapshot chose, and a window
already trained (``train.ledger``, the champion's lineage) is refused before training.

Real components: a tiny home, its DuckDB warehouse, the sqlite MLflow registry and a persistent Dagster
instance; the retry is Dagster's re-execution from failure (what ``run_retries`` launches), through
``execute_job`` on the home's ``finetune`` job. The first fine-tune fails inside training because its work
folder (``models/updates``) is blocked by a file, as a kill during training would leave the run failed.
"""

import os
from pathlib import Path

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window

from assets.checks import WINDOW_CHECKS
from assets.curate import approved_window, curated_window
from assets.ingest import raw_window
from orchestration.config.settings import load_settings
from orchestration.definitions import build_definitions
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.pipeline.lineage import AlreadyTrained, SnapshotGone, check_untrained
from orchestration.pipeline.snapshot import build_snapshot
from orchestration.pipeline.update_record import ledger_frame
from orchestration.resources import build_resources
from orchestration.store.warehouse import Warehouse

INGEST = [raw_window, curated_window, approved_window, *WINDOW_CHECKS]


def finetune_job_of_home() -> dg.JobDefinition:
    """The ``finetune`` job of the home in ``STREAMTUNE_HOME`` (module level: ``execute_job`` reconstructs it)."""
    return build_definitions(load_settings(os.environ["STREAMTUNE_HOME"])).resolve_job_def("finetune")


def _ingest(settings, instance, index: int) -> str:
    key = f"r-0{index + 1}"
    write_window(settings.paths.landing, f"{key}.jsonl", window_records(index, 40))
    instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
    assert dg.materialize(INGEST, partition_key=key, resources=build_resources(settings), instance=instance).success
    return key


def _finetune(instance, **kwargs) -> tuple[bool, str]:
    """One ``finetune`` run (or re-execution): (success, run id)."""
    job = dg.reconstructable(finetune_job_of_home)  # loads the job now: STREAMTUNE_HOME must be set
    with dg.execute_job(job, instance=instance, raise_on_error=False, **kwargs) as result:
        return result.success, result.run_id


def _retry(instance, run_id: str) -> tuple[bool, str]:
    """Re-execute ``run_id`` from its failed step, as the daemon's ``run_retries`` does."""
    return _finetune(instance, reexecution_options=dg.ReexecutionOptions.from_failure(run_id, instance))


def _step_errors(instance, run_id: str) -> str:
    failures = [e for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.is_step_failure]
    return "\n".join(e.dagster_event.step_failure_data.error.message for e in failures)


def _trained(settings) -> list[tuple[str, list[str]]]:
    """``(model_version, window_keys)`` of every recorded update, oldest first."""
    updates = Warehouse(settings.paths.warehouse).updates()
    return [(v, list(w)) for v, w in updates.select("model_version", "window_keys").iter_rows()]


@pytest.mark.slow
def test_retry_trains_its_own_snapshot_and_refuses_trained_windows(tmp_path, monkeypatch):
    settings = tiny_home(tmp_path / "home")
    monkeypatch.setenv("STREAMTUNE_HOME", str(settings.home))
    client = MlflowClient(settings.tracking_uri)
    blocker = settings.paths.models / "updates"
    with dg.instance_for_test() as instance:
        a = _ingest(settings, instance, 0)
        blocker.write_text("not a folder")  # training fails: the run ends failed after its snapshot of [a]
        first_ok, first = _finetune(instance)
        assert not first_ok and _trained(settings) == []
        blocker.unlink()

        b = _ingest(settings, instance, 1)
        # a later run snapshots [a, b] and stops there (killed after its snapshot step)
        assert _finetune(instance, asset_selection=[dg.AssetKey("training_snapshot")])[0]

        # the retry of the first run trains the first run's snapshot: window a only
        assert _retry(instance, first)[0]
        assert _trained(settings) == [("2", [a])]
        assert client.get_model_version(settings.model_name, "2").tags["streamtune.windows"] == a

        # the next run gets the next window
        assert _finetune(instance)[0]
        assert _trained(settings) == [("2", [a]), ("3", [b])]

        # a second retry of the first run (its window is in the ledger and the champion's lineage) is refused
        versions = len(client.search_model_versions(f"name='{settings.model_name}'"))
        again_ok, again = _retry(instance, first)
        assert not again_ok
        assert f"window {a} was already trained" in _step_errors(instance, again)
        assert len(client.search_model_versions(f"name='{settings.model_name}'")) == versions
        assert _trained(settings) == [("2", [a]), ("3", [b])]


def test_check_untrained_refuses_ledger_and_lineage_windows(tmp_path):
    """The step's check alone: a window in ``train.ledger`` (a non-retired version) is refused with a typed
    error naming it and the version; a pending window passes; a snapshot whose folder is gone is refused."""
    settings = tiny_home(tmp_path / "home")
    wh = Warehouse(settings.paths.warehouse)
    with dg.instance_for_test() as instance:
        a = _ingest(settings, instance, 0)
    manifest = build_snapshot(wh, settings.paths.snapshots, eval_fraction=0.2, retention_rows=8)
    assert manifest is not None and manifest.window_keys == [a]
    check_untrained(manifest, ledger=wh.trained_by(manifest.window_keys), lineage={})  # pending: passes
    again = build_snapshot(wh, settings.paths.snapshots, eval_fraction=0.2, retention_rows=8)
    assert again.directory == manifest.directory  # same content: the written folder is kept, not rewritten

    wh.record_update(
        model_version="7",
        mlflow_run_id="run-7",
        parent_version="1",
        snapshot_id=manifest.snapshot_id,
        window_keys=manifest.window_keys,
        ledger=ledger_frame(manifest),
        metrics={},
        promoted=False,
        reason="test",
        trigger="manual",
        dagster_run_id=None,
    )
    assert wh.trained_by([a, "other"]) == {a: "7"}
    with pytest.raises(AlreadyTrained, match=f"window {a} was already trained into v7"):
        check_untrained(manifest, ledger=wh.trained_by(manifest.window_keys), lineage={})
    with pytest.raises(AlreadyTrained, match=f"window {a} was already trained into v4"):
        check_untrained(manifest, ledger={}, lineage={a: "4"})

    (Path(manifest.directory) / "manifest.json").unlink()
    with pytest.raises(SnapshotGone, match=f"snapshot {manifest.snapshot_id} is not at"):
        check_untrained(manifest, ledger={}, lineage={})
