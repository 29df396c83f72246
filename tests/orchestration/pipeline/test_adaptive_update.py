"""Issue 17, applied for real through real Dagster + DuckDB + MLflow: the recipe chosen at the snapshot step
(replay share, ``update = False`` skip honoured only for new_data / drift runs), a drift refresh update of trained
windows, and the meta-learner credited after each update (``train.meta_rewards``)."""

import json
from pathlib import Path

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import TINY_SETTINGS, tiny_home, window_records, write_window
from test_recipe_step import profile_row

from assets.checks import WINDOW_CHECKS
from assets.curate import approved_window, curated_window
from assets.ingest import raw_window
from assets.train import TRAINING_ASSETS, challenger_beats_champion
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.pipeline.lineage import AlreadyTrained, check_untrained
from orchestration.pipeline.snapshot import SnapshotManifest
from orchestration.pipeline.trigger import REFRESH_WINDOWS_TAG
from orchestration.resources import build_resources
from orchestration.store.meta import MetaTables
from orchestration.store.warehouse import Warehouse
from orchestration.tags import TRIGGER_TAG
from training.meta import reward
from training.replay import replay_count

CALM = ("r-01", False, 0.6, 2.0, 2.0)
"""A profile with no measurable shift: s = 0.5 * -log10(0.6) / 3 = 0.04 < MIN_SHIFT, so update = False."""
SHOCK = ("r-01", True, 1e-4, 2.3, 2.0)
"""A confirmed drift with a 15% bits/byte gap: s = 1 (replay 25%, steps x1.5)."""


def _ingest(settings, instance, resources, key, index):
    write_window(settings.paths.landing, f"{key}.jsonl", window_records(index, 40))
    instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
    ingest = [raw_window, curated_window, approved_window, *WINDOW_CHECKS]
    assert dg.materialize(ingest, partition_key=key, resources=resources, instance=instance).success


def _finetune(instance, resources, **tags):
    return dg.materialize(
        [*TRAINING_ASSETS, challenger_beats_champion],
        resources=resources,
        instance=instance,
        selection=TRAINING_ASSETS,
        raise_on_error=False,
        tags=tags,
    )


def _snapshot(result) -> SnapshotManifest | None:
    """The manifest the run's ``training_snapshot`` wrote (None when it skipped)."""
    mats = result.asset_materializations_for_node("training_snapshot")
    if not mats:
        return None
    path = Path(mats[0].metadata["path"].value) / "manifest.json"
    return SnapshotManifest.from_dict(json.loads(path.read_text()))


def _observations(instance, run_id):
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION)
    return [r.dagster_event.event_specific_data.asset_observation for r in records]


def test_adaptive_skip_staleness_and_drift_refresh(tmp_path):
    """A calm window: a new_data run skips with the reason (windows stay pending), a staleness run trains anyway.
    Then a drift alarm with nothing pending: the run refreshes the trained window (same held-out rows, replay
    at the recipe's 25%), passes the retry guard, and is on record as a second update of that window."""
    train = {**TINY_SETTINGS["train"], "recipe": "adaptive", "max_steps": 2}
    settings = tiny_home(tmp_path / "home", train=train, replay={"fraction": 0.05, "size": 64})
    wh = Warehouse(settings.paths.warehouse)
    with dg.instance_for_test() as instance:
        resources = build_resources(settings)
        _ingest(settings, instance, resources, "r-01", 0)
        wh.record_window_profile(profile_row(*CALM))

        skipped = _finetune(instance, resources, **{TRIGGER_TAG: "new_data"})
        assert skipped.success and not skipped.asset_materializations_for_node("challenger_model")
        assert _snapshot(skipped) is None and wh.pending_windows() == ["r-01"]
        (obs,) = _observations(instance, skipped.run_id)
        assert "no update (new_data trigger)" in obs.metadata["no_update"].value
        assert obs.metadata["recipe.update"].value is False

        stale = _finetune(instance, resources, **{TRIGGER_TAG: "staleness"})
        first = _snapshot(stale)
        assert stale.asset_materializations_for_node("model_update") and wh.pending_windows() == []
        assert first.recipe["recipe.update"] is False and not first.refresh  # trained anyway: staleness

        wh.record_window_profile(profile_row(*SHOCK))
        refresh = _finetune(instance, resources, **{TRIGGER_TAG: "drift", REFRESH_WINDOWS_TAG: "r-01"})
        second = _snapshot(refresh)
        md = refresh.asset_materializations_for_node("challenger_model")[0].metadata
        again = _finetune(instance, resources, **{TRIGGER_TAG: "drift", REFRESH_WINDOWS_TAG: "r-01"})
        (obs,) = _observations(instance, again.run_id)  # the same refresh content (a retried run) trains once
        assert not again.asset_materializations_for_node("challenger_model")
        assert obs.metadata["no_update"].value == f"refresh snapshot {second.snapshot_id} was trained already"
    assert second.refresh and second.snapshot_id.startswith("refresh-r-01-") and second.window_keys == ["r-01"]
    assert second.recipe["recipe.replay_fraction"] == pytest.approx(0.25)
    assert second.rows["replay"] == replay_count(second.rows["train"], 0.25) > 0  # the recipe's share
    for split in ("train", "new_eval"):  # same record-id hash split: the held-out rows were never trained on
        assert second.frame(split)["record_id"].sort().to_list() == first.frame(split)["record_id"].sort().to_list()
    assert "r-01" not in second.frame("retention_eval")["window_key"].to_list()
    check_untrained(second, ledger={"r-01": "2"}, lineage={"r-01": "2"})  # a refresh passes the guard
    with pytest.raises(AlreadyTrained):
        check_untrained(first, ledger={"r-01": "2"}, lineage={})
    params = MlflowClient(settings.tracking_uri).get_run(md["mlflow_run_id"].value).data.params
    assert params["train.max_steps"] == "3" and params["snapshot_id"] == second.snapshot_id
    updates = wh.updates()
    assert updates["trigger"].to_list() == ["staleness", "drift"]
    assert updates["snapshot_id"].to_list() == [first.snapshot_id, second.snapshot_id]
    with wh.connect(read_only=True) as con:
        ledger = con.sql("SELECT model_version, role, count(*) AS n FROM train.ledger GROUP BY ALL").pl()
    per_version = {v: dict(zip(g["role"], g["n"])) for (v,), g in ledger.group_by("model_version")}
    v1, v2 = updates["model_version"].to_list()
    assert per_version[v2]["train"] == per_version[v1]["train"] == first.rows["train"]
    assert per_version[v2]["new_eval"] == first.rows["new_eval"] and per_version[v2]["replay"] > 0


def test_meta_rewards_are_credited_after_each_update(tmp_path):
    """Two meta updates in a row: model_update credits the first update's arm in train.meta_rewards (reward =
    bits/byte gained on the held-out rows per 1e6 training tokens) before the second update chooses its arm."""
    train = {**TINY_SETTINGS["train"], "recipe": "meta", "max_steps": 2}
    settings = tiny_home(tmp_path / "home", train=train)
    wh = Warehouse(settings.paths.warehouse)
    meta = MetaTables(settings.paths.warehouse)
    with dg.instance_for_test() as instance:
        resources = build_resources(settings)
        _ingest(settings, instance, resources, "r-01", 0)
        wh.record_window_profile(profile_row(*SHOCK))
        first = _finetune(instance, resources)
        seen_by_second = meta.arm_stats()
        _ingest(settings, instance, resources, "r-02", 3)
        second = _finetune(instance, resources)
    client = MlflowClient(settings.tracking_uri)
    runs = [r.asset_materializations_for_node("challenger_model")[0].metadata for r in (first, second)]
    arms = [_snapshot(r).recipe["recipe.arm"] for r in (first, second)]
    with wh.connect(read_only=True) as con:
        rows = con.sql("SELECT bucket, arm, reward, model_version FROM train.meta_rewards ORDER BY recorded_at").pl()
    assert rows["model_version"].to_list() == [md["version"].value for md in runs]
    assert rows["arm"].to_list() == arms and rows["bucket"].to_list() == ["high", "low"]
    m = client.get_run(runs[0]["mlflow_run_id"].value).data.metrics
    expected = reward(m["champion_new_bpb"], m["challenger_new_bpb"], int(m["train_tokens"]))
    assert rows["reward"][0] == pytest.approx(expected)
    assert seen_by_second == {("high", arms[0]): seen_by_second[("high", arms[0])]}
    assert seen_by_second[("high", arms[0])].n == 1 and seen_by_second[("high", arms[0])].mean == pytest.approx(
        expected
    )
    assert rows["reward"].is_finite().all()


def test_manifest_recipe_and_refresh_are_optional_fields():
    """A fixed-recipe manifest serializes as before the fields existed; an old manifest loads with defaults."""
    old = {
        "snapshot_id": "w-01-abc",
        "directory": "/nowhere/w-01-abc",
        "window_keys": ["w-01"],
        "rows": {"train": 9},
        "content_sha256": "abc",
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    manifest = SnapshotManifest.from_dict(old)
    assert manifest.recipe == {} and manifest.refresh is False and manifest.to_dict() == old
    recipe = {"recipe.kind": "adaptive", "recipe.update": True}
    richer = SnapshotManifest.from_dict({**old, "recipe": recipe, "refresh": True})
    assert richer.to_dict() == {**old, "recipe": recipe, "refresh": True}
