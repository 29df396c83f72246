"""Reptile (Nichol et al. 2018) on a tiny GPT-2: windows as tasks, then adaptation to an unseen window.

Measured here (CPU, 1 thread, seed 0; 6 tasks = one "domain" word each, held-out task = an unseen domain):
with 1000 training steps for both (Reptile 200 iterations x k = 5 inner Adam steps vs plain joint training,
1000 Adam steps on the union), the Reptile initialisation reaches a held-out loss of 0.7 nats/token in 3 Adam
steps, joint training in 6. With only 500 steps (100 x 5) Reptile is better before adaptation and after one
step but worse from the second step on, so the advantage needs the longer meta-training.
"""

import copy
import random

import pytest
import torch

from training.config import ModelConfig
from training.data import pack_texts
from training.modeling import build_base_model, load_model
from training.reptile import ReptileConfig, adapt, adaptation_curve, reptile

ADJ = ["fast", "tiny", "async", "typed", "simple", "modern", "robust", "minimal"]
NOUN = ["HTTP client", "JSON parser", "YAML loader", "CLI toolkit", "task queue", "ORM", "test runner", "logger"]
DOMAINS = ["Python", "Django", "data science", "asyncio", "the web", "scientific computing", "robots", "finance"]


def window(domain: str, n: int, seed: int) -> list[str]:
    r = random.Random(seed)
    return [f"A {r.choice(ADJ)} {r.choice(NOUN)} for {domain}." for _ in range(n)]


def steps_to(curve: list[float], target: float) -> int:
    return next((i for i, v in enumerate(curve) if v <= target), len(curve))


@pytest.mark.slow  # 2,000 tiny-model steps (1,000 Reptile + 1,000 joint): the claim needs both at full length
def test_reptile_init_adapts_to_a_held_out_window_in_fewer_steps(tmp_path):
    corpus = [t for i, d in enumerate(DOMAINS) for t in window(d, 50, i)]
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=300)
    model, tok = load_model(build_base_model(corpus, cfg, tmp_path / "base", seed=0))
    tasks = [window(d, 60, 10 + i) for i, d in enumerate(DOMAINS[:6])]
    held_train, held_eval = (
        pack_texts(tok, window(DOMAINS[7], 60, 99), 32),
        pack_texts(tok, window(DOMAINS[7], 30, 100), 32, keep_tail=True),
    )

    meta = copy.deepcopy(model)
    result = reptile(meta, tok, tasks, ReptileConfig(meta_iters=200, inner_steps=5, inner_lr=3e-3, seed=0))
    assert (result.steps, len(result.inner_losses)) == (1000, 200) and result.tokens > 0
    assert result.inner_losses[-1] < result.inner_losses[0]
    joint = copy.deepcopy(model)
    adapt(joint, pack_texts(tok, [t for ts in tasks for t in ts], 32), 1000, 3e-3, 8, torch.Generator().manual_seed(0))

    meta_curve = adaptation_curve(meta, held_train, held_eval, 10, 3e-3, seed=1)
    joint_curve = adaptation_curve(joint, held_train, held_eval, 10, 3e-3, seed=1)
    assert all(m < j for m, j in zip(meta_curve, joint_curve, strict=True)), (meta_curve, joint_curve)
    assert steps_to(meta_curve, 0.7) < steps_to(joint_curve, 0.7) <= 10, (meta_curve, joint_curve)


def test_reptile_checks_its_inputs(tmp_path):
    with pytest.raises(ValueError, match="outer_lr"):
        ReptileConfig(outer_lr=1.5)
    with pytest.raises(ValueError, match=">= 1"):
        ReptileConfig(inner_steps=0)
    corpus = window("Python", 40, 0)
    model, tok = load_model(
        build_base_model(corpus, ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=300), tmp_path)
    )
    with pytest.raises(ValueError, match="at least one task"):
        reptile(model, tok, [], ReptileConfig())
    with pytest.raises(ValueError, match="at least one task"):
        reptile(model, tok, [corpus, []], ReptileConfig())
