"""The whole loop on tiny random-initialised Llama and Qwen2 bases (``base_model`` = a local
``save_pretrained`` directory): ingest, update, gate, register, champion, rollback, through real Dagster,
DuckDB and sqlite MLflow."""

import json

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window
from tiny_models import TINY_BUILDERS

from assets.checks import WINDOW_CHECKS
from assets.curate import approved_window, curated_window
from assets.ingest import raw_window
from assets.train import TRAINING_ASSETS, challenger_beats_champion
from orchestration.cli.commands_status import rollback
from orchestration.config.profiles import open_registry
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.resources import build_resources
from orchestration.store.warehouse import Warehouse
from training.modeling import load_model

INGEST = [raw_window, curated_window, approved_window, *WINDOW_CHECKS]


def _ingest(settings, instance, index):
    key = f"m-0{index + 1}"
    write_window(settings.paths.landing, f"{key}.jsonl", window_records(index, 60))
    instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
    assert dg.materialize(INGEST, partition_key=key, resources=build_resources(settings), instance=instance).success
    return key


def _finetune(settings, instance):
    return dg.materialize(
        [*TRAINING_ASSETS, challenger_beats_champion],
        resources=build_resources(settings),
        instance=instance,
        selection=TRAINING_ASSETS,
        raise_on_error=False,
    )


@pytest.mark.parametrize("arch", sorted(TINY_BUILDERS))
def test_loop_runs_on_a_modern_architecture(tmp_path, arch):
    base_dir = TINY_BUILDERS[arch](tmp_path / f"tiny-{arch}")
    root = tmp_path / "home"
    settings = tiny_home(
        root,
        base_model=str(base_dir),
        train={
            "epochs": 2.0,
            "batch_size": 8,
            "seq_len": 32,
            "peak_lr": 3e-3,
            "log_every": 5,
            "attn_implementation": "sdpa",
            "gradient_checkpointing": arch == "llama",
        },
    )
    client = MlflowClient(settings.tracking_uri)
    name = settings.model_name
    with dg.instance_for_test() as instance:
        _ingest(settings, instance, 0)
        first = _finetune(settings, instance)
        assert first.success
        _ingest(settings, instance, 1)
        assert _finetune(settings, instance).success

    versions = Warehouse(settings.paths.warehouse).updates()
    assert versions["model_version"].to_list() == ["2", "3"] and versions["promoted"].to_list() == [True, True]
    assert str(client.get_model_version_by_alias(name, "base").version) == "1"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"
    run = client.get_run(client.get_model_version(name, "3").run_id)
    assert run.data.metrics["challenger_new_bpb"] < run.data.metrics["champion_new_bpb"]
    assert run.data.params["train.attn_implementation"] == "sdpa"

    # the registered champion is the same architecture, loads, and its tokenizer has a pad token
    registry = open_registry(settings)
    champion_dir = registry.local_copy("3", tmp_path / "champion")
    assert json.loads((champion_dir / "config.json").read_text())["model_type"] == arch
    model, tokenizer = load_model(champion_dir)
    assert type(model).__name__.lower().startswith(arch) and tokenizer.pad_token is not None

    rollback(home=root, to=None, reason="tiny model rollback")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert client.get_model_version(name, "3").tags["rollback.rolled_back_to"] == "2"
