"""Online EWC: the penalty is zero at theta* and grows with the distance; the Fisher is carried across updates."""

from __future__ import annotations

import pytest
import torch

from training.config import TrainConfig
from training.data import pack_texts
from training.ewc import EWCPenalty, accumulate, estimate_fisher
from training.finetune import TRAIN_STATE_FILE, FinetuneRequest, finetune
from training.modeling import load_model


def test_penalty_is_zero_at_anchor_and_grows_with_distance(tiny_model):
    model, _ = tiny_model
    fisher = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    penalty = EWCPenalty.at_current(model, fisher, lam=2.0)
    assert float(penalty()) == 0.0
    values = []
    param = next(model.parameters())
    for step in (0.01, 0.02, 0.04):
        with torch.no_grad():
            param.copy_(penalty.anchor[next(iter(penalty.anchor))] + step)
        values.append(float(penalty()))
    # lambda/2 * sum F d^2 with F = 1: exactly numel * d^2 for lambda = 2
    assert values == pytest.approx([param.numel() * d * d for d in (0.01, 0.02, 0.04)], rel=1e-4)
    assert values[0] < values[1] < values[2]


def test_fisher_is_mean_squared_gradient_and_accumulates(tiny_model, corpus):
    model, tok = tiny_model
    blocks = pack_texts(tok, corpus[:60], 32)
    fisher = estimate_fisher(model, blocks, batch_size=4, device=torch.device("cpu"), max_rows=8)
    assert set(fisher) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all((f >= 0).all() for f in fisher.values()) and any(f.sum() > 0 for f in fisher.values())
    assert all(p.grad is None for p in model.parameters())  # gradients cleared
    doubled = accumulate(fisher, fisher, gamma=0.5)
    name = next(iter(fisher))
    torch.testing.assert_close(doubled[name], 1.5 * fisher[name])


def test_fisher_is_carried_across_two_updates(tmp_path, base_dir, corpus):
    cfg = TrainConfig(
        seq_len=32, batch_size=8, max_steps=3, bf16=False, threads=1, ewc_lambda=50.0, ewc_gamma=0.5, ewc_rows=16
    )
    fisher_texts = corpus[300:340]
    first = finetune(
        FinetuneRequest(
            parent=base_dir, train_texts=corpus[:80], cfg=cfg, out_dir=tmp_path / "v1", fisher_texts=fisher_texts
        )
    )
    assert first.metrics()["ewc_fisher_carried"] == 0.0
    second = finetune(
        FinetuneRequest(
            parent=tmp_path / "v1",
            train_texts=corpus[80:160],
            cfg=cfg,
            out_dir=tmp_path / "v2",
            fisher_texts=fisher_texts,
        )
    )
    assert second.metrics()["ewc_fisher_carried"] == 1.0
    f1 = torch.load(tmp_path / "v1" / TRAIN_STATE_FILE, weights_only=True)["ewc_fisher"]
    f2 = torch.load(tmp_path / "v2" / TRAIN_STATE_FILE, weights_only=True)["ewc_fisher"]
    model, tok = load_model(tmp_path / "v1")  # theta* of the second update
    fresh = estimate_fisher(
        model, pack_texts(tok, fisher_texts, 32, keep_tail=True), batch_size=8, device=torch.device("cpu"), max_rows=16
    )
    for name in f2:  # online EWC: F2 = gamma * F1 + Fisher at theta* = v1
        torch.testing.assert_close(f2[name], 0.5 * f1[name] + fresh[name], rtol=1e-4, atol=1e-10)


def test_ewc_keeps_weights_closer_to_the_parent(tmp_path, base_dir, corpus):
    """The penalty pulls toward theta*: with a strong lambda the update moves the weights less."""
    distances = {}
    for lam in (0.0, 1e6):
        cfg = TrainConfig(seq_len=32, batch_size=8, max_steps=4, bf16=False, threads=1, ewc_lambda=lam, ewc_rows=16)
        out = tmp_path / f"lam{lam:g}"
        finetune(FinetuneRequest(parent=base_dir, train_texts=corpus[:80], cfg=cfg, out_dir=out))
        base, _ = load_model(base_dir)
        new, _ = load_model(out)
        distances[lam] = sum(float((a - b).pow(2).sum()) for a, b in zip(base.parameters(), new.parameters()))
    assert distances[1e6] < distances[0.0]
