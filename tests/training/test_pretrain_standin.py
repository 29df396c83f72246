"""The pretrained stand-in base: corpus from the standard library, cached build, held-out general set."""

import json

from training.modeling import load_model
from training.pretrain import GENERAL_EVAL_FILE, PRETRAIN_FILE, PretrainConfig, pretrain_base, stdlib_corpus


def test_corpus_is_deterministic_prose():
    first = stdlib_corpus(max_bytes=20_000)
    assert first == stdlib_corpus(max_bytes=20_000) and len(set(first)) == len(first)
    assert all(len(doc) >= 16 for doc in first) and sum(len(d.encode()) for d in first) >= 20_000


def test_pretrain_base_builds_caches_and_learns(tmp_path):
    cfg = PretrainConfig.tiny(steps=20, max_corpus_bytes=60_000)
    model_dir = pretrain_base(tmp_path / "cache", cfg)
    facts = json.loads((model_dir / PRETRAIN_FILE).read_text())
    assert model_dir.name == facts["key"] and facts["steps"] == 20
    assert facts["heldout_bpb"] < facts["heldout_bpb_init"] and facts["final_loss"] < facts["first_loss"]
    held = [json.loads(line)["text"] for line in (model_dir / GENERAL_EVAL_FILE).read_text().splitlines()]
    assert len(held) == facts["heldout_documents"] > 0
    model, tok = load_model(model_dir)
    assert model.config.model_type == "llama" and tok.pad_token == "<|pad|>"
    mtime = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert pretrain_base(tmp_path / "cache", cfg) == model_dir  # cached: not rebuilt
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == mtime
    assert list((tmp_path / "cache").iterdir()) == [model_dir]  # no temporary directory left behind
