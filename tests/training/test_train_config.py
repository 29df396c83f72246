import subprocess
import sys
from pathlib import Path

import pytest

from training.config import GateConfig, ModelConfig, ReplayConfig, TrainConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (ModelConfig, {"n_layer": 0}, "n_layer"),
        (ModelConfig, {"n_head": 3}, "n_embd"),
        (ModelConfig, {"vocab_size": 100}, "vocab_size"),
        (ModelConfig, {"block_size": 1.5}, "block_size"),
        (TrainConfig, {"seq_len": 0}, "seq_len"),
        (TrainConfig, {"batch_size": True}, "batch_size"),
        (TrainConfig, {"peak_lr": 0.0}, "peak_lr"),
        (TrainConfig, {"peak_lr": float("nan")}, "peak_lr"),
        (TrainConfig, {"min_lr_ratio": 1.5}, "min_lr_ratio"),
        (TrainConfig, {"warmup_fraction": 1.0}, "warmup_fraction"),
        (TrainConfig, {"epochs": 0}, "epochs"),
        (TrainConfig, {"max_steps": 0}, "max_steps"),
        (TrainConfig, {"weight_decay": -0.1}, "weight_decay"),
        (TrainConfig, {"grad_clip": -1.0}, "grad_clip"),
        (TrainConfig, {"bf16": "yes"}, "bf16"),
        (TrainConfig, {"threads": 0}, "threads"),
        (TrainConfig, {"log_every": 0}, "log_every"),
        (GateConfig, {"min_improvement": 1.0}, "min_improvement"),
        (GateConfig, {"retention_tolerance": -0.01}, "retention_tolerance"),
    ],
)
def test_invalid_value_raises_value_error_naming_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        cls(**kwargs)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ValueError, match="`seq_len`.*`batch_size`"):
        TrainConfig(seq_len=0, batch_size=0)


@pytest.mark.parametrize("cls", [ModelConfig, TrainConfig, GateConfig, ReplayConfig])
def test_to_dict_from_dict_round_trip(cls):
    cfg = cls()
    d = cfg.to_dict()
    # scalars, plus GateConfig.eval_sets: a {name: path} table
    assert all(isinstance(v, (int, float, bool, str, type(None))) or k == "eval_sets" for k, v in d.items())
    assert cls.from_dict(d) == cfg


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown TrainConfig field.*lr_peak"):
        TrainConfig.from_dict({"lr_peak": 1e-3})


def test_from_dict_fills_defaults_and_validates():
    assert TrainConfig.from_dict({"seq_len": 64}).batch_size == TrainConfig().batch_size
    with pytest.raises(ValueError, match="`seq_len`"):
        TrainConfig.from_dict({"seq_len": -1})


def test_config_module_imports_without_torch():
    code = "import sys, training.config; assert 'torch' not in sys.modules, 'training.config imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"lr_schedule": "cyclic"}, "lr_schedule"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"lora_r": -2}, "lora_r"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
    ],
)
def test_train_config_rejects_bad_continual_fields(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, field", [({"size": -1}, "size"), ({"fraction": 1.0}, "fraction"), ({"seed": -1}, "seed")]
)
def test_replay_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        ReplayConfig(**kwargs)
