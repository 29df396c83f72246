"""Shared fixtures for the training tests: offline Hub, a learnable toy corpus, a tiny GPT-2 base."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers/huggingface_hub are imported: tests never touch the Hub
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import random
from pathlib import Path

import pytest

from training.config import ModelConfig, TrainConfig

ADJECTIVES = ["fast", "tiny", "async", "typed", "simple", "modern", "robust", "minimal"]
NOUNS = ["HTTP client", "JSON parser", "YAML loader", "CLI toolkit", "task queue", "ORM", "test runner", "logger"]
DOMAINS = ["Python", "Django", "data science", "asyncio", "the web", "scientific computing"]


def make_summaries(n: int, seed: int = 0) -> list[str]:
    """~``n`` short PyPI-summary-like lines from a small grammar (learnable in a few hundred steps)."""
    rng = random.Random(seed)
    return [f"A {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} for {rng.choice(DOMAINS)}." for _ in range(n)]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread, and one thread does not collapse when other jobs share the CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return make_summaries(400)


@pytest.fixture(scope="session")
def tiny_model_cfg() -> ModelConfig:
    return ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=300)


@pytest.fixture
def tiny_train_cfg() -> TrainConfig:
    return TrainConfig(seq_len=32, batch_size=8, peak_lr=3e-3, bf16=False, threads=1, eval_batch_size=16, log_every=5)


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory, corpus: list[str], tiny_model_cfg: ModelConfig) -> Path:
    """A tiny randomly initialised base model, built once per session. Tests must not modify it."""
    from training.modeling import build_base_model

    return build_base_model(corpus, tiny_model_cfg, tmp_path_factory.mktemp("base"), seed=0)


@pytest.fixture
def tiny_model(base_dir: Path):
    """A fresh copy of the tiny base model and its tokenizer, on CPU, in eval mode."""
    from training.modeling import load_model

    return load_model(base_dir)
