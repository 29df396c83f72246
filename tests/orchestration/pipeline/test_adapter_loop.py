"""The whole loop in adapter mode (``[train] adapter = "lora"``, rank 4) on the tiny Llama base: ingest, two
updates, gate, register, champion (base + adapter), rollback and ``streamtune export --merged``, through real
Dagster, DuckDB and sqlite MLflow. Each registered update stores only its adapter; the base is stored once."""

import json

import dagster as dg
import pytest
import torch
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window
from tiny_models import make_tiny_llama

from assets.checks import WINDOW_CHECKS
from assets.curate import approved_window, curated_window
from assets.ingest import raw_window
from assets.train import TRAINING_ASSETS, challenger_beats_champion
from orchestration.cli.commands_export import export
from orchestration.cli.commands_status import rollback
from orchestration.config.profiles import open_registry
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.resources import build_resources
from orchestration.store.warehouse import Warehouse
from training import adapters
from training.model_files import read_manifest
from training.modeling import load_model

pytest.importorskip("peft")

INGEST = [raw_window, curated_window, approved_window, *WINDOW_CHECKS]


def _ingest(settings, instance, index):
    key = f"a-0{index + 1}"
    write_window(settings.paths.landing, f"{key}.jsonl", window_records(index, 60))
    instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
    assert dg.materialize(INGEST, partition_key=key, resources=build_resources(settings), instance=instance).success


def _finetune(settings, instance):
    return dg.materialize(
        [*TRAINING_ASSETS, challenger_beats_champion],
        resources=build_resources(settings),
        instance=instance,
        selection=TRAINING_ASSETS,
        raise_on_error=False,
    )


def _stored(copy_dir) -> int:
    """Bytes a registered version stores: the sizes in its ``checksums.json``."""
    return sum(int(e["size"]) for e in read_manifest(copy_dir, str(copy_dir)).values())


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("A fast JSON parser for data pipelines", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_adapter_mode_loop_registers_small_versions_on_one_base(tmp_path):
    base_dir = make_tiny_llama(tmp_path / "tiny-llama")
    root = tmp_path / "home"
    train = {"epochs": 2.0, "batch_size": 8, "seq_len": 32, "peak_lr": 3e-3, "log_every": 5}
    settings = tiny_home(root, base_model=str(base_dir), train={**train, "adapter": "lora", "lora_r": 4})
    client = MlflowClient(settings.tracking_uri)
    name = settings.model_name
    with dg.instance_for_test() as instance:
        _ingest(settings, instance, 0)
        assert _finetune(settings, instance).success
        _ingest(settings, instance, 1)
        assert _finetune(settings, instance).success

    versions = Warehouse(settings.paths.warehouse).updates()
    assert versions["model_version"].to_list() == ["2", "3"] and versions["promoted"].to_list() == [True, True]
    assert str(client.get_model_version_by_alias(name, "base").version) == "1"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"

    # v2 and v3 are adapters on base v1, and store a small fraction of its bytes
    registry = open_registry(settings)
    copies = tmp_path / "copies"
    base_copy = registry.local_copy("1", copies / "v1")
    for v in ("2", "3"):
        copy = registry.local_copy(v, copies / f"v{v}")
        assert adapters.is_adapter_dir(copy) and not (copy / "model.safetensors").exists()
        assert adapters.read_base_ref(copy)["base_version"] == "1"
        assert adapters.base_dir_of(copy) == base_copy.resolve()
        assert _stored(copy) < 0.5 * _stored(base_copy), (v, _stored(copy), _stored(base_copy))
        weights = (copy / "adapter_model.safetensors").stat().st_size
        assert weights < 0.1 * (base_copy / "model.safetensors").stat().st_size

    # the champion loads as base + adapter through the plain loader, and differs from the base
    champion, tokenizer = load_model(copies / "v3")
    assert type(champion).__name__ == "PeftModelForCausalLM" and tokenizer.pad_token is not None
    base, _ = load_model(base_copy)
    assert not torch.allclose(_logits(champion, tokenizer), _logits(base, tokenizer))

    # export merges the adapter into its base: a plain Llama directory computing the champion's logits
    out = tmp_path / "merged"
    export(home=root, version="3", merged=out)
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    assert not adapters.is_adapter_dir(out)
    merged, merged_tok = load_model(out)
    assert type(merged).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(_logits(merged, merged_tok), _logits(champion, tokenizer), atol=1e-4, rtol=1e-4)

    rollback(home=root, to=None, reason="adapter rollback")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert client.get_model_version(name, "3").tags["rollback.rolled_back_to"] == "2"
