"""Factored ("ghost") per-sample gradient inner products equal explicit per-sample gradients on a real model."""

import dataclasses

import pytest
import torch

from training.data import pack_texts, split_block
from training.loop import fit, make_optimizer
from training.selection.base import per_token_loss, sample_loss
from training.selection.ghost import adam_scales, capture, gram, last_mlp_layers, layer_weight_grads, target_products

CPU = torch.device("cpu")


def _explicit_grads(model, layers, x, y):
    """(B, n_layers) list of per-sample weight gradients, (d_in, d_out), by one backward per sample."""
    out = []
    for i in range(x.shape[0]):
        loss = sample_loss(per_token_loss(model, x[i : i + 1], y[i : i + 1]), y[i : i + 1]).sum()
        out.append([g.detach() for g in torch.autograd.grad(loss, [layer.weight for layer in layers])])
    return out


@pytest.fixture
def batch(tiny_model, corpus):
    model, tok = tiny_model
    blocks = pack_texts(tok, corpus[:80], 16)  # short blocks keep the explicit loop fast
    x, y = split_block(blocks[:6])
    return model, x, y


@pytest.mark.parametrize("method", ["ghost", "materialize"])
def test_factored_gram_equals_explicit_per_sample_inner_products(batch, method):
    model, x, y = batch
    layers = last_mlp_layers(model, 1)
    losses, factors = capture(model, layers, x, y)
    explicit = _explicit_grads(model, layers, x, y)
    flat = torch.stack([torch.cat([g.flatten() for g in gs]) for gs in explicit])  # (B, P)
    expected = flat @ flat.T
    got = sum(gram(f.A, f.D, f.A, f.D, method=method) for f in factors)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)
    expected_losses = sample_loss(per_token_loss(model, x, y), y).detach()
    torch.testing.assert_close(losses, expected_losses)


def test_adam_preconditioned_products_equal_explicit_rank1_preconditioner(batch, tiny_train_cfg, corpus):
    model, x, y = batch
    cfg = dataclasses.replace(tiny_train_cfg, seq_len=16)
    opt = make_optimizer(model, cfg)
    fit(model, opt, torch.cat([x, y[:, -1:]], 1), cfg, device=CPU, total_steps=3)  # real Adam state
    layers = last_mlp_layers(model, 1)
    scales = [adam_scales(opt, layer) for layer in layers]
    assert all(s is not None for s in scales)
    _, factors = capture(model, layers, x, y)
    _, target = layer_weight_grads(model, layers, x[:2], y[:2])
    b, K = target_products(factors, target, scales)

    explicit = _explicit_grads(model, layers, x, y)
    P = [torch.outer(p, q) for p, q in scales]  # the rank-1 preconditioner, materialised
    pg = torch.stack([torch.cat([(Pl * g).flatten() for Pl, g in zip(P, gs)]) for gs in explicit])  # (B, P)
    gt = torch.cat([g.flatten() for g in target])
    torch.testing.assert_close(b, pg @ gt, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(K, pg @ pg.T, rtol=1e-4, atol=1e-9)


def test_rank1_scales_are_exact_for_a_rank1_second_moment(tiny_model, tiny_train_cfg):
    model, _ = tiny_model
    opt = make_optimizer(model, tiny_train_cfg)
    layer = last_mlp_layers(model, 1)[0]
    r = torch.rand(layer.weight.shape[0]) + 0.5
    c = torch.rand(layer.weight.shape[1]) + 0.5
    opt.state[layer.weight] = {
        "step": torch.tensor(4.0),
        "exp_avg": torch.zeros_like(layer.weight),
        "exp_avg_sq": torch.outer(r, c) * 1e-4,
    }
    p, q = adam_scales(opt, layer)
    beta2 = opt.param_groups[0]["betas"][1]
    v_hat = torch.outer(r, c) * 1e-4 / (1 - beta2**4)
    torch.testing.assert_close(torch.outer(p, q), 1 / v_hat.sqrt(), rtol=1e-4, atol=0)


def test_adam_scales_are_none_before_the_first_step(tiny_model, tiny_train_cfg):
    model, _ = tiny_model
    opt = make_optimizer(model, tiny_train_cfg)
    assert adam_scales(opt, last_mlp_layers(model, 1)[0]) is None
