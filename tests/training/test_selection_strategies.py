"""Each strategy's defining behaviour, on the tiny real model and constructed candidate batches."""

import pytest
import torch

from training.data import pack_texts, split_block
from training.loop import make_optimizer
from training.selection.base import CandidateBatch, TrainState, per_token_loss
from training.selection.d3 import D3
from training.selection.dwm import Dwm
from training.selection.greats import Greats
from training.selection.params import D3Params, DwmParams, GreatsParams, RhoLossParams
from training.selection.rho_loss import RhoLoss

CPU = torch.device("cpu")
SEQ = 16


@pytest.fixture
def mixed(tiny_model, corpus):
    """4 blocks of the learnable toy grammar, then 4 blocks of uniformly random tokens (unlearnable noise),
    plus reference blocks of the grammar (disjoint rows)."""
    model, tok = tiny_model
    clean = pack_texts(tok, corpus[:60], SEQ)[:4]
    noise = torch.randint(3, len(tok), (4, SEQ + 1), generator=torch.Generator().manual_seed(0))
    reference = pack_texts(tok, corpus[200:320], SEQ)
    return model, torch.cat([clean, noise]), reference


def _state(model, cfg, batch_size=4, lr=1e-3):
    return TrainState(model, make_optimizer(model, cfg), CPU, step=0, total_steps=10, lr=lr, batch_size=batch_size)


def _batch(blocks, index=None):
    index = torch.arange(blocks.shape[0]) if index is None else index
    x, y = split_block(blocks[index])
    return CandidateBatch(index, x, y)


def test_rho_loss_keeps_the_learnable_not_yet_learnt_blocks_and_skips_noise(mixed, tiny_train_cfg):
    model, blocks, reference = mixed
    state = _state(model, tiny_train_cfg)
    rho = RhoLoss(RhoLossParams(pool=2, il_steps=40), reference, lr=3e-3)
    rho.start(state, blocks)
    # the irreducible-loss model learnt the grammar: low IL loss on clean blocks, high on noise
    assert rho.il_loss[:4].max() < rho.il_loss[4:].min()
    sel = rho.select(_batch(blocks), state)
    assert sorted(sel.indices.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(sel.weights, torch.ones(4))
    assert rho.stats.extra_n["reducible_kept"] == 1


def test_rho_loss_skips_blocks_the_model_has_already_learnt(mixed, tiny_train_cfg):
    model, blocks, reference = mixed
    state = _state(model, tiny_train_cfg, batch_size=2)
    rho = RhoLoss(RhoLossParams(il_steps=0), reference, lr=3e-3)  # the parent serves as IL model
    rho.start(state, blocks)
    # now train the current model on blocks 0 and 1 only: their reducible loss becomes negative
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, y = split_block(blocks[:2])
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(input_ids=x).logits.flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    sel = rho.select(_batch(blocks[:4], torch.arange(4)), state)
    assert sorted(sel.indices.tolist()) == [2, 3]


def test_rho_loss_requires_a_reference_slice():
    with pytest.raises(ValueError, match="non-empty"):
        RhoLoss(RhoLossParams(), torch.empty((0, SEQ + 1), dtype=torch.long), lr=1e-3)


def test_greats_keeps_blocks_aligned_with_the_target_and_weights_sum_to_the_kept_count(mixed, tiny_train_cfg):
    model, blocks, reference = mixed
    state = _state(model, tiny_train_cfg)
    greats = Greats(GreatsParams(pool=2, target_batch=16), reference)
    greats.start(state, blocks)
    sel = greats.select(_batch(blocks), state)
    assert set(sel.indices.tolist()) <= {0, 1, 2, 3}  # grammar blocks, never the noise
    assert sel.weights.sum().item() == pytest.approx(sel.indices.numel())
    assert sel.weights.max().item() <= 3.0 * 4 / sel.indices.numel() + 1e-5


def test_dwm_hypergradient_moves_weight_toward_blocks_that_help_the_validation_loss(mixed, tiny_train_cfg):
    model, blocks, reference = mixed
    state = _state(model, tiny_train_cfg, batch_size=8, lr=3e-3)
    dwm = Dwm(DwmParams(every=1, lr=0.05, target_batch=16), reference)
    dwm.start(state, blocks)
    batch = _batch(blocks)
    with torch.no_grad():
        batch.token_losses = per_token_loss(model, batch.inputs, batch.targets)
    first = dwm.select(batch, state)
    torch.testing.assert_close(first.weights, torch.ones(8))  # zero-initialised head: uniform at the start
    for step in range(15):
        state.step = step
        dwm.select(batch, state)
        dwm.after_step(state)
    w = dwm.select(batch, state).weights
    assert w[:4].mean() > w[4:].mean(), w
    assert w.mean().item() == pytest.approx(1.0)


def test_d3_batches_cover_every_block_once_per_pass_in_unit_order(tiny_model, corpus, tiny_train_cfg):
    model, tok = tiny_model
    blocks = pack_texts(tok, corpus[:150], SEQ)
    n = blocks.shape[0]
    state = _state(model, tiny_train_cfg)
    d3 = D3(D3Params(units=4, probe=2))
    d3.start(state, blocks)
    stream = d3.batches(n, 5, torch.Generator().manual_seed(0), state)
    first_pass = torch.cat([next(stream) for _ in range(n // 5)])[: n - n % 5]
    assert len(set(first_pass.tolist())) == first_pass.numel()  # no block twice within a pass
    order = d3.orders[0]
    assert sorted(order) == sorted(set(d3.units.tolist()))
    units_seen = [int(d3.units[i]) for i in first_pass]
    # blocks arrive grouped by unit, in the greedy order
    collapsed = [u for i, u in enumerate(units_seen) if i == 0 or u != units_seen[i - 1]]
    assert collapsed == order[: len(collapsed)]
    assert d3.stats.seconds > 0
