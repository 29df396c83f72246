"""Adapter versions on a frozen base, through a real sqlite MLflow registry: small versions, the champion
loads base + adapter, the next update continues the adapter and its AdamW state, the merged export equals it."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

pytest.importorskip("peft")
mlflow = pytest.importorskip("mlflow")

from training import adapters  # noqa: E402
from training.config import ModelConfig, TrainConfig  # noqa: E402
from training.finetune import FinetuneRequest, finetune  # noqa: E402
from training.model_files import read_manifest  # noqa: E402
from training.modeling import build_base_model, load_model, resolve_dtype  # noqa: E402
from training.tracking import ModelRegistry  # noqa: E402


def adapter_cfg(**kw) -> TrainConfig:
    base = dict(seq_len=32, batch_size=8, peak_lr=3e-3, max_steps=4, bf16=False, threads=1, log_every=2)
    return TrainConfig(adapter="lora", lora_r=4, lora_alpha=8.0, **{**base, **kw})


@pytest.fixture(scope="module")
def lineage(tmp_path_factory, corpus):
    """Base v1 (a 2-layer, 64-wide GPT-2) -> adapter v2 -> adapter v3, all through the registry."""
    root = tmp_path_factory.mktemp("adapters")
    cwd = root / "cwd"
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        base_dir = build_base_model(
            corpus, ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=300), root / "base"
        )
        registry = ModelRegistry(f"sqlite:///{root}/mlflow.db", f"file://{root}/mlartifacts")
        _, base_v = registry.register_base(model_dir=base_dir, params={}, tags={})
        copies = root / "registry"
        parent = registry.local_copy(base_v, copies / f"v{base_v}")
        results, versions = [], [base_v]
        for i in range(2):
            req = FinetuneRequest(
                parent=parent,
                train_texts=corpus[i * 100 : i * 100 + 80],
                new_eval_texts=corpus[300:320],
                cfg=adapter_cfg(),
                out_dir=root / f"out{i}",
                base_version=base_v,
            )
            results.append(finetune(req))
            _, v = registry.log_update(
                run_name=f"u{i}", model_dir=req.out_dir, params={}, metrics={}, curve=[], tags={}
            )
            versions.append(v)
            parent = registry.local_copy(v, copies / f"v{v}")
        yield registry, versions, results, copies, root


def test_adapter_versions_store_only_the_adapter(lineage):
    registry, (base_v, v2, v3), results, copies, _ = lineage
    base_bytes = sum(int(e["size"]) for e in read_manifest(copies / f"v{base_v}", "base").values())
    adapter_files = read_manifest(copies / f"v{v3}", "v3")
    adapter_bytes = sum(int(e["size"]) for e in adapter_files.values())
    assert "adapter_model.safetensors" in adapter_files and "model.safetensors" not in adapter_files
    assert (
        adapter_files["adapter_model.safetensors"]["size"]
        < 0.1 * (copies / f"v{base_v}" / "model.safetensors").stat().st_size
    )
    assert adapter_bytes < 0.5 * base_bytes, (adapter_bytes, base_bytes)
    ref = json.loads((copies / f"v{v3}" / adapters.ADAPTER_BASE_FILE).read_text())
    assert ref["base_version"] == base_v
    assert adapters.base_dir_of(copies / f"v{v3}") == (copies / f"v{base_v}").resolve()
    assert all(r.adapter and r.lora for r in results)


def test_next_update_continues_the_adapter_and_its_optimizer(lineage):
    _, _, (first, second), _, _ = lineage
    assert not first.optimizer_resumed and second.optimizer_resumed
    # the second update starts from the first one's adapter: its "before" is the first one's "after"
    assert second.champion_new.bits_per_byte == pytest.approx(first.challenger_new.bits_per_byte, rel=1e-5)
    assert second.global_step == first.global_step + second.fit.steps


def test_champion_outputs_equal_the_merged_export(lineage, tmp_path):
    _, (_, _, v3), _, copies, _ = lineage
    champion, tok = adapters.load_adapter_model(copies / f"v{v3}")
    merged_dir = adapters.export_merged(copies / f"v{v3}", tmp_path / "merged")
    merged, _ = load_model(merged_dir)
    assert not adapters.is_adapter_dir(merged_dir)
    ids = torch.tensor([tok.encode("A fast JSON parser for Python.")])
    with torch.no_grad():
        a, b = champion(input_ids=ids).logits, merged(input_ids=ids).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    base, _ = load_model(copies / "v1")
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, a, atol=1e-4)  # the adapter changed the outputs


def test_load_model_of_an_adapter_survives_a_moved_home(lineage, tmp_path):
    """``load_model`` of an adapter copy loads base + adapter through ``.base_dir`` (relative: valid after the
    copies move) or the sibling ``v<base_version>``; never through the absolute path in adapter_config.json."""
    _, (base_v, _, v3), _, copies, _ = lineage
    moved = tmp_path / "moved"
    shutil.copytree(copies, moved, ignore=shutil.ignore_patterns(".v*"))
    assert not os.path.isabs((moved / f"v{v3}" / adapters.BASE_DIR_FILE).read_text().strip())
    assert adapters.base_dir_of(moved / f"v{v3}") == (moved / f"v{base_v}").resolve()
    config = json.loads((moved / f"v{v3}" / adapters.ADAPTER_CONFIG_FILE).read_text())
    config["base_model_name_or_path"] = "/nowhere/base"  # peft's absolute path: stale after a move
    (moved / f"v{v3}" / adapters.ADAPTER_CONFIG_FILE).write_text(json.dumps(config))
    (moved / f"v{v3}" / adapters.BASE_DIR_FILE).write_text("/nowhere/base\n")  # an old absolute link, stale
    assert adapters.base_dir_of(moved / f"v{v3}") == (moved / f"v{base_v}").resolve()
    loaded, tok = load_model(moved / f"v{v3}")
    original, _ = adapters.load_adapter_model(copies / f"v{v3}")
    ids = torch.tensor([tok.encode("A fast JSON parser for Python.")])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, original(input_ids=ids).logits)
    shutil.rmtree(moved / f"v{base_v}")
    with pytest.raises(FileNotFoundError, match="the base of adapter .* was not found"):
        load_model(moved / f"v{v3}")


def test_adapter_loads_pass_dtype_and_attention_to_the_base(lineage):
    _, (_, _, v3), _, copies, _ = lineage
    model, _ = load_model(copies / f"v{v3}", torch_dtype="bfloat16", attn_implementation="eager")
    assert type(model).__name__ == "PeftModelForCausalLM"
    base = model.get_base_model()
    assert base.config._attn_implementation == "eager"
    assert base.transformer.wte.weight.dtype == resolve_dtype("bfloat16", torch.device("cpu"))
    default, _ = adapters.load_adapter_model(copies / f"v{v3}")
    assert default.get_base_model().config._attn_implementation != "eager"


def test_export_cli_writes_a_merged_model(lineage, tmp_path, monkeypatch):
    from orchestration.cli.commands_export import export_version

    registry, (_, _, v3), _, _, root = lineage
    monkeypatch.chdir(root / "cwd")
    out = export_version(registry, v3, tmp_path / "serve", cache=root / "registry")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert os.path.getsize(out / "model.safetensors") > 10 * os.path.getsize(
        root / "registry" / f"v{v3}" / "adapter_model.safetensors"
    )


def test_dp_update_reports_epsilon_within_target(tmp_path, corpus, base_dir):
    pytest.importorskip("opacus")
    cfg = adapter_cfg(dp_epsilon=8.0, dp_delta=1e-5, dp_max_grad_norm=1.0, max_steps=3)
    first = finetune(
        FinetuneRequest(
            parent=base_dir, train_texts=corpus[:80], new_eval_texts=corpus[300:320], cfg=cfg, out_dir=tmp_path / "a"
        )
    )
    m = first.metrics()
    assert 0 < m["dp_epsilon"] <= 8.0 + 0.01 and m["dp_noise_multiplier"] > 0
    assert m["dp_epsilon_cumulative"] == pytest.approx(m["dp_epsilon"])
    assert adapters.is_adapter_dir(tmp_path / "a")
    second = finetune(
        FinetuneRequest(
            parent=tmp_path / "a",
            train_texts=corpus[80:160],
            new_eval_texts=corpus[300:320],
            cfg=cfg,
            out_dir=tmp_path / "b",
        )
    )
    m2 = second.metrics()
    assert m2["dp_epsilon"] <= 8.01 and m2["dp_epsilon_cumulative"] > m2["dp_epsilon"]  # composed over the lineage
    assert second.optimizer_resumed


def test_dp_needs_adapter_mode():
    with pytest.raises(ValueError, match="dp_epsilon"):
        TrainConfig(dp_epsilon=1.0)
    with pytest.raises(ValueError, match="lora_r"):
        TrainConfig(adapter="lora", lora_r=0)
