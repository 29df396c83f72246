"""Modern causal LMs as the base: load options (weight dtype, SDPA/eager attention, pad-less tokenizers),
a bf16 + gradient-checkpointing update on a tiny Qwen2, the general-set gate rule and the new settings."""

import json

import pytest
import torch
from tiny_models import make_tiny_llama, make_tiny_qwen2

from training.config import GateConfig, TrainConfig
from training.device import bf16_supported
from training.finetune import FinetuneRequest, finetune
from training.gate import decide_promotion
from training.modeling import load_model, resolve_dtype

CPU = torch.device("cpu")
BF16 = bf16_supported(CPU)


def test_load_options_and_a_padless_tokenizer(tmp_path):
    model, tok = load_model(make_tiny_llama(tmp_path / "llama"), torch_dtype="bfloat16", attn_implementation="eager")
    assert next(model.parameters()).dtype == (torch.bfloat16 if BF16 else torch.float32)
    assert model.config._attn_implementation == "eager"
    assert tok.pad_token == tok.eos_token and model.config.pad_token_id == tok.eos_token_id  # Llama has no pad
    model, tok = load_model(make_tiny_qwen2(tmp_path / "qwen2"), attn_implementation="sdpa")
    assert next(model.parameters()).dtype == torch.float32 and model.config._attn_implementation == "sdpa"
    assert tok.pad_token == "<|pad|>"


def test_resolve_dtype():
    assert resolve_dtype("float32", CPU, "bfloat16") == torch.float32
    assert resolve_dtype("auto", CPU, "float16") == torch.float32  # fp16 upcast: no loss scaling here
    assert resolve_dtype("auto", CPU, "bfloat16") == (torch.bfloat16 if BF16 else torch.float32)
    with pytest.raises(ValueError, match="torch_dtype"):
        resolve_dtype("float16", CPU)


def test_bf16_update_with_gradient_checkpointing_stores_bf16(tmp_path):
    parent = make_tiny_qwen2(tmp_path / "qwen2")
    texts = [f"Async client library for the service number {i} with retries" for i in range(80)]
    cfg = TrainConfig(
        seq_len=32, batch_size=4, max_steps=3, torch_dtype="bfloat16", gradient_checkpointing=True, threads=1
    )
    result = finetune(FinetuneRequest(parent, texts, cfg, tmp_path / "out", new_eval_texts=texts[:8]))
    assert result.fit.steps == 3 and torch.isfinite(torch.tensor(result.fit.final_loss))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert (config.get("dtype") or config.get("torch_dtype")) == ("bfloat16" if BF16 else "float32")


def test_gate_rejects_general_damage_beyond_tolerance():
    cfg = GateConfig(general_tolerance=0.02)
    ok = decide_promotion(3.0, 2.5, None, None, cfg, general={"general": (2.00, 2.03)})
    assert ok.promote and "general set general 2 -> 2.03 (+1.5%, allowed <= +2.0%): ok" in ok.reason
    bad = decide_promotion(3.0, 2.5, None, None, cfg, general={"general": (2.00, 2.05), "news": (1.0, 0.9)})
    assert not bad.promote and "general set general 2 -> 2.05 (+2.5%, allowed <= +2.0%): FAIL" in bad.reason
    assert bad.numbers["general.general.rel_change"] == pytest.approx(0.025)
    assert bad.tags()["gate.general.news.challenger_bpb"] == "0.9"


def test_new_settings_are_validated():
    with pytest.raises(ValueError, match="torch_dtype"):
        TrainConfig(torch_dtype="float16")
    with pytest.raises(ValueError, match="attn_implementation"):
        TrainConfig(attn_implementation="flash")
    with pytest.raises(ValueError, match="must be a .jsonl or .parquet path"):
        GateConfig(eval_sets={"general": "general.csv"})
    with pytest.raises(ValueError, match="letters, digits"):
        GateConfig(eval_sets={"a b": "x.jsonl"})
    with pytest.raises(ValueError, match="general_tolerance"):
        GateConfig(general_tolerance=-1)
    assert GateConfig(eval_sets={"general": "sets/g.parquet"}).to_dict()["eval_sets"] == {"general": "sets/g.parquet"}
