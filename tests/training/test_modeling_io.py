import json

import pytest
import torch

from training.config import ModelConfig
from training.device import available_cores, bf16_supported, configure_threads, select_device
from training.modeling import build_base_model, load_model, prepare_base
from training.tokenizer import tokenizer_sha256


def test_build_base_model_writes_a_loadable_gpt2(base_dir, tiny_model_cfg):
    files = {p.name for p in base_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    config = json.loads((base_dir / "config.json").read_text())
    assert config["model_type"] == "gpt2"
    assert (config["n_layer"], config["n_head"], config["n_embd"], config["n_positions"]) == (1, 2, 16, 32)
    model, tok = load_model(base_dir)
    assert config["vocab_size"] == len(tok) == 300
    assert (model.config.eos_token_id, model.config.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    assert not model.training and model.dtype == torch.float32


def test_build_is_seeded_and_leaves_global_rng_alone(corpus, tiny_model_cfg, tmp_path):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_base_model(corpus, tiny_model_cfg, tmp_path / "a", seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    b = build_base_model(corpus, tiny_model_cfg, tmp_path / "b", seed=7)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_build_rejects_empty_texts(tiny_model_cfg, tmp_path):
    with pytest.raises(ValueError, match="`texts` is empty"):
        build_base_model([], tiny_model_cfg, tmp_path)


def test_load_model_names_source_and_offline_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-model'.*no such directory"):
        load_model(tmp_path / "no-such-model")
    with pytest.raises(OSError, match="(?s)'streamtune/definitely-not-a-model'.*HF_HUB_OFFLINE=1 is set"):
        load_model("streamtune/definitely-not-a-model")


def test_prepare_base_builds_or_copies(base_dir, corpus, tiny_model_cfg, tmp_path):
    built = prepare_base(None, corpus, tiny_model_cfg, tmp_path / "built")
    assert (built / "model.safetensors").is_file()
    copied = prepare_base(str(base_dir), [], ModelConfig(), tmp_path / "copy")
    (m1, t1), (m2, t2) = load_model(base_dir), load_model(copied)
    x = torch.randint(0, len(t1), (2, 8))
    assert torch.equal(m1(x).logits, m2(x).logits)
    assert tokenizer_sha256(t1) == tokenizer_sha256(t2)


def test_device_helpers():
    assert select_device().type in {"cpu", "cuda"}
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_threads(10_000) == available_cores()
        assert configure_threads(None) == available_cores()
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="`threads`"):
        configure_threads(0)
    assert isinstance(bf16_supported(torch.device("cpu")), bool)
