"""The continual engine through real Dagster, DuckDB and sqlite MLflow: replay buffer, eval matrix,
blocking promotion gate that records rejections, and `streamtune rollback`."""

import subprocess
import sys

import dagster as dg
import polars as pl
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window

from assets.checks import WINDOW_CHECKS
from assets.curate import approved_window, curated_window
from assets.ingest import raw_window
from assets.train import TRAINING_ASSETS, challenger_beats_champion
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.pipeline.snapshot import SnapshotManifest
from orchestration.resources import build_resources
from orchestration.store.warehouse import Warehouse

INGEST = [raw_window, curated_window, approved_window, *WINDOW_CHECKS]


def ingest(settings, instance, index):
    key = f"c-0{index + 1}"
    write_window(settings.paths.landing, f"{key}.jsonl", window_records(index, 70))
    instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
    assert dg.materialize(INGEST, partition_key=key, resources=build_resources(settings), instance=instance).success
    return key


def finetune(settings, instance):
    return dg.materialize(
        [*TRAINING_ASSETS, challenger_beats_champion],
        resources=build_resources(settings),
        instance=instance,
        selection=TRAINING_ASSETS,
        raise_on_error=False,
    )


def test_replay_matrix_gate_and_rollback(tmp_path):
    root = tmp_path / "home"
    settings = tiny_home(root, replay={"size": 24, "fraction": 0.25, "seed": 0})
    client = MlflowClient(settings.tracking_uri)
    name = settings.model_name
    wh = Warehouse(settings.paths.warehouse)
    with dg.instance_for_test() as instance:
        k1 = ingest(settings, instance, 0)
        assert finetune(settings, instance).success
        buf = wh.replay_buffer()
        assert buf.height == 24 and set(buf["window_key"]) == {k1}

        k2 = ingest(settings, instance, 1)
        second = finetune(settings, instance)
        assert second.success
        snap = SnapshotManifest.from_dict(second.output_for_node("training_snapshot"))
        replay = snap.frame("replay")
        assert replay.height == round(0.25 / 0.75 * snap.rows["train"]) and set(replay["window_key"]) == {k1}
        assert snap.frame("first_eval")["window_key"].unique().to_list() == [k1]
        buf = wh.replay_buffer()
        assert dict(buf.group_by("window_key").len().iter_rows()) == {k1: 12, k2: 12}
        assert not set(buf["record_id"]) & set(wh.heldout_record_ids())  # held-out rows never replayed

        # an impossible gate: the update is recorded, the run fails at the blocking check, champion stays
        strict = tiny_home(
            root,
            replay={"size": 24, "fraction": 0.25, "seed": 0},
            gate={"min_improvement": 0.99, "retention_tolerance": 0.0},
        )
        ingest(strict, instance, 2)
        third = finetune(strict, instance)
        assert not third.success
        evaluation = [e for e in third.get_asset_check_evaluations() if e.check_name == "challenger_beats_champion"][0]
        assert evaluation.passed is False and "FAIL" in evaluation.description
        assert third.asset_materializations_for_node("champion_model") == []

    versions = wh.updates()
    assert versions["model_version"].to_list() == ["2", "3", "4"]
    assert versions["promoted"].to_list() == [True, True, False]
    assert wh.pending_windows() == []  # a rejected window is not retrained forever
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"
    assert client.get_model_version(name, "4").tags["gate.decision"] == "rejected"

    matrix = wh.eval_matrix()
    v3 = matrix.filter(pl.col("model_version") == "3")
    assert sorted(v3.filter(pl.col("phase") == "after")["eval_window"].to_list()) == [k1, k2]
    assert v3.filter(pl.col("phase") == "before")["eval_window"].to_list() == [k2]
    assert v3["trained_through"].unique().to_list() == [k2]
    run = client.get_run(client.get_model_version(name, "3").run_id)
    assert f"eval_matrix.after.{k1}.bpb" in run.data.metrics and "challenger_first_bpb" in run.data.metrics
    assert {"cl_acc", "cl_bwt", "cl_forgetting"} <= set(run.data.metrics)
    assert run.data.params["replay_rows"] == str(replay.height)

    # rollback: default = the champion's parent, recorded in tags and train.rollbacks
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestration.cli.app",
            "rollback",
            "--home",
            str(root),
            "--reason",
            "bad outputs in prod",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    tags = client.get_model_version(name, "2").tags
    assert tags["rollback.restored_from"] == "3" and tags["rollback.reason"] == "bad outputs in prod"
    assert client.get_model_version(name, "3").tags["rollback.rolled_back_to"] == "2"
    rb = wh.rollbacks()
    assert rb.select("from_version", "to_version", "reason").rows() == [("3", "2", "bad outputs in prod")]
    bad = subprocess.run(
        [sys.executable, "-m", "orchestration.cli.app", "rollback", "--home", str(root), "--to", "99"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
