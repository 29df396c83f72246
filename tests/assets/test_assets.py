"""Assets and checks materialized for real: DuckDB file, sqlite MLflow store, Dagster instance in tmp_path."""

import json
from pathlib import Path

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window

from assets.checks import WINDOW_CHECKS
from assets.curate import approved_window, curated_window
from assets.ingest import raw_window
from assets.train import TRAINING_ASSETS, challenger_beats_champion
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.resources import build_resources
from orchestration.store.warehouse import Warehouse

INGEST = [raw_window, curated_window, approved_window, *WINDOW_CHECKS]


def ingest(settings, instance, name, records, extra_lines=()):
    write_window(settings.paths.landing, name, records, extra_lines)
    key = name.rsplit(".jsonl", 1)[0]
    instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
    result = dg.materialize(
        INGEST, partition_key=key, resources=build_resources(settings), instance=instance, raise_on_error=False
    )
    return key, result


def finetune(settings, instance):
    return dg.materialize(
        [*TRAINING_ASSETS, challenger_beats_champion],
        resources=build_resources(settings),
        instance=instance,
        selection=TRAINING_ASSETS,
        raise_on_error=True,
    )


@pytest.fixture
def home(tmp_path):
    return tiny_home(tmp_path / "home")


def test_ingest_quarantines_rejects_and_approves_a_window(home):
    records = window_records(0, 40) + [{"id": "empty", "text": "   "}, {"id": "none"}]
    with dg.instance_for_test() as instance:
        key, result = ingest(home, instance, "s-01.jsonl", records, extra_lines=["{not json", "[1, 2]"])
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["rows_conserved"] and checks["window_not_empty"] and checks["text_not_null"]
    wh = Warehouse(home.paths.warehouse)
    c = wh.window_counts(key)
    assert (c.source_rows, c.parsed_rows, c.rejected_rows) == (44, 42, 2)
    assert (c.curated_rows, c.quarantined_rows) == (40, 2)
    assert set(wh.quarantine_counts(key)) == {"text_too_short", "text_missing"}
    assert wh.pending_windows() == [key]
    mat = result.asset_materializations_for_node("curated_window")[0]
    assert mat.metadata["dagster/row_count"].value == 40
    preview = result.asset_materializations_for_node("approved_window")[0].metadata["preview"].value
    curated = wh.read_curated_window(key)
    assert [r.data["record_id"] for r in preview.records] == curated["record_id"].head(5).to_list()
    assert all(len(r.data["text"]) <= 121 for r in preview.records)


def test_failing_blocking_check_keeps_the_window_out_of_training(home):
    with dg.instance_for_test() as instance:
        good, ok = ingest(home, instance, "s-01.jsonl", window_records(0, 30))
        bad, failed = ingest(home, instance, "s-02.jsonl", [{"id": "a", "text": ""}, {"id": "b", "text": " "}])
        assert ok.success and not failed.success
        evaluations = {e.check_name: e.passed for e in failed.get_asset_check_evaluations()}
        assert evaluations["window_not_empty"] is False
        assert failed.asset_materializations_for_node("approved_window") == []
    wh = Warehouse(home.paths.warehouse)
    assert wh.pending_windows() == [good]
    assert wh.window_counts(bad).quarantined_rows == 2  # nothing lost: the rows wait in quarantine


def test_finetune_registers_versions_and_moves_champion_only_when_better(home):
    with dg.instance_for_test() as instance:
        k1, _ = ingest(home, instance, "s-01.jsonl", window_records(0, 80))
        first = finetune(home, instance)
        assert first.success
        k2, _ = ingest(home, instance, "s-02.jsonl", window_records(1, 80))
        second = finetune(home, instance)
        assert second.success
        meta = second.asset_materializations_for_node("challenger_model")[0].metadata
        assert meta["mlflow_run"].value.startswith(home.mlflow_ui_url + "/#/experiments/")
        assert meta["mlflow_model_version"].value.endswith(f"/#/models/{home.model_name}/versions/3")
        assert meta["sample_generations"].value.count("\n") == 1 + home.samples_per_update  # header + rows
        assert k1 in meta["eval_matrix"].value
        # nothing pending: the snapshot skips, and so does the rest of the job
        third = finetune(home, instance)
        assert third.asset_materializations_for_node("challenger_model") == []

    client = MlflowClient(home.tracking_uri)
    name = home.model_name
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    assert versions == [1, 2, 3]  # base, update on s-01, update on s-02
    assert str(client.get_model_version_by_alias(name, "base").version) == "1"
    v2 = client.get_model_version(name, "2")
    assert v2.tags["gate.decision"] == "promoted"  # random-init base -> trained: always better
    run = client.get_run(v2.run_id)
    assert run.data.params["windows"] == k1
    assert {"champion_new_loss", "challenger_new_loss", "challenger_new_bpb", "tokens_per_s"} <= set(run.data.metrics)
    assert len(client.get_metric_history(v2.run_id, "train_loss")) >= 2
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics)  # recorded during training
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert {"train", "new_eval", "retention_eval"} <= set(inputs)
    assert json.loads(inputs["train"].dataset.profile)["windows"] == [k1]
    assert json.loads(inputs["train"].dataset.profile)["num_rows"] == int(run.data.params["train_rows"])
    samples = json.loads(
        Path(client.download_artifacts(v2.run_id, "samples/generations.json", str(home.home / "dl"))).read_text()
    )
    assert len(samples) == home.samples_per_update and all(s["prompt"] for s in samples)
    champion = str(client.get_model_version_by_alias(name, "champion").version)
    v3 = client.get_model_version(name, "3")
    assert champion == ("3" if v3.tags["gate.decision"] == "promoted" else "2")
    assert client.get_run(v3.run_id).data.params["parent_version"] == "2"

    wh = Warehouse(home.paths.warehouse)
    report = wh.window_report()
    assert report["model_version"].to_list() == ["2", "3"]
    updates = wh.updates()
    assert updates["champion_retention_bpb"].to_list()[0] is None  # first update: no past windows
    assert updates["champion_retention_bpb"].to_list()[1] is not None
    assert wh.pending_windows() == []
