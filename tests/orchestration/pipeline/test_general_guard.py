"""The general-capability guard: the pretrained stand-in base registered by `streamtune base pretrain`, its
held-out corpus slice as the default general set, a challenger rejected for damaging it, and bad set files
refused before anything trains. Real Dagster, DuckDB and sqlite MLflow."""

import json

import dagster as dg
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window

from assets.checks import WINDOW_CHECKS
from assets.curate import approved_window, curated_window
from assets.ingest import raw_window
from assets.train import TRAINING_ASSETS, challenger_beats_champion
from orchestration.cli.commands_base import base_pretrain
from orchestration.cli.common import CliError
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.pipeline.base import STANDIN_EVAL_FILE
from orchestration.pipeline.general import GENERAL_EVAL_TAG
from orchestration.resources import build_resources
from orchestration.store.warehouse import Warehouse
from training.evaluate import EvalSetError, read_eval_set

INGEST = [raw_window, curated_window, approved_window, *WINDOW_CHECKS]
TRAIN = {"epochs": 3.0, "batch_size": 8, "seq_len": 32, "peak_lr": 3e-2, "log_every": 5}


def _ingest_and_finetune(settings, instance, index=0):
    key = f"g-0{index + 1}"
    write_window(settings.paths.landing, f"{key}.jsonl", window_records(index, 60))
    instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
    resources = build_resources(settings)
    assert dg.materialize(INGEST, partition_key=key, resources=resources, instance=instance).success
    return dg.materialize(
        [*TRAINING_ASSETS, challenger_beats_champion],
        resources=resources,
        instance=instance,
        selection=TRAINING_ASSETS,
        raise_on_error=False,
    )


def test_standin_base_and_a_challenger_rejected_for_general_damage(tmp_path):
    root = tmp_path / "home"
    settings = tiny_home(root, train=TRAIN, gate={"min_improvement": 0.0, "general_tolerance": 0.0})
    base_pretrain(home=root, cache=tmp_path / "cache", steps=None, tiny=True)
    client = MlflowClient(settings.tracking_uri)
    base = client.get_model_version_by_alias(settings.model_name, "base")
    assert str(base.version) == "1" and base.tags[GENERAL_EVAL_TAG] == str(root / STANDIN_EVAL_FILE)
    assert json.loads((root / STANDIN_EVAL_FILE).read_text().splitlines()[0])["text"]
    assert client.get_run(base.run_id).data.params["pretrain.corpus_documents"].isdigit()
    with pytest.raises(CliError, match="already has base version v1"):
        base_pretrain(home=root, cache=tmp_path / "cache", steps=None, tiny=True)

    with dg.instance_for_test() as instance:
        result = _ingest_and_finetune(settings, instance)
    assert not result.success  # blocked by the gate's check: champion stays the stand-in base
    metadata = result.asset_materializations_for_node("challenger_model")[0].metadata
    champion, challenger = metadata["eval/general/champion_bpb"].value, metadata["eval/general/bpb"].value
    assert challenger > champion  # a high learning rate on another domain damages the general set
    update = Warehouse(settings.paths.warehouse).updates().row(0, named=True)
    assert update["promoted"] is False and "general set general" in update["reason"]
    assert update["reason"].split("general set general")[1].split(";")[0].endswith("FAIL")
    run = client.get_run(client.get_model_version(settings.model_name, update["model_version"]).run_id)
    assert run.data.metrics["eval/general/bpb"] == pytest.approx(challenger)
    assert str(client.get_model_version_by_alias(settings.model_name, "champion").version) == "1"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.jsonl", None, "no such file"),
        ("empty.jsonl", "\n\n", "the set is empty"),
        ("field.jsonl", '{"body": "no text field here"}\n', "line 1 has no string field `text`"),
        ("notjson.jsonl", "not json\n", "line 1 is not JSON"),
        ("field.parquet", pl.DataFrame({"body": ["x"]}), "no column `text`"),
        ("empty.parquet", pl.DataFrame({"text": [""]}, schema={"text": pl.String}), "the set is empty"),
    ],
)
def test_bad_eval_set_files_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        content.write_parquet(path)
    with pytest.raises(EvalSetError, match=message) as info:
        read_eval_set(path, "news")
    assert f"[gate] eval_sets.news ({path})" in str(info.value)


def test_a_bad_eval_set_fails_the_update_before_training(tmp_path):
    root = tmp_path / "home"
    (root / "sets").mkdir(parents=True)
    (root / "sets" / "general.jsonl").write_text('{"body": "wrong field"}\n')
    settings = tiny_home(root, gate={"eval_sets": {"general": "sets/general.jsonl"}})
    with dg.instance_for_test() as instance:
        result = _ingest_and_finetune(settings, instance)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "[gate] eval_sets.general" in str(failure.event_specific_data.error) and "`text`" in str(
        failure.event_specific_data.error
    )
    client = MlflowClient(settings.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(settings.experiment).experiment_id])
    assert [r.info.run_name for r in runs] == ["base-model"]  # no update run started, nothing trained
