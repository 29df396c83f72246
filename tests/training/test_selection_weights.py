"""Pure pieces of the selection strategies: weights, the QP, entropy, ordering, clustering, settings."""

import numpy as np
import pytest
import torch

from training.config import TrainConfig
from training.selection import make_selector, parse_params
from training.selection.base import Selection, normalized_entropy
from training.selection.d3 import greedy_order, kmeans_units
from training.selection.greats import project_capped_simplex, solve_weights
from training.selection.loss_reweight import loss_weights
from training.selection.params import GreatsParams, LossReweightParams


def test_linupper_weights_average_one_rise_with_loss_and_stop_at_the_cap():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 40.0, 41.0])
    w = loss_weights(losses, "linupper", temperature=1.0, cap=0.5)
    assert w.mean().item() == pytest.approx(1.0)
    assert torch.all(w[1:] >= w[:-1])
    assert w[4].item() == pytest.approx(w[5].item())  # both outliers are above the cap: same weight


def test_quadratic_downweights_both_tails_and_extremes_upweights_them():
    losses = torch.tensor([0.0, 5.0, 5.1, 4.9, 10.0])
    q = loss_weights(losses, "quadratic")
    e = loss_weights(losses, "extremes")
    assert q[1] > q[0] and q[1] > q[4]
    assert e[0] > e[1] and e[4] > e[1]


def test_equal_losses_or_a_single_sample_give_uniform_weights():
    torch.testing.assert_close(loss_weights(torch.full((5,), 2.0)), torch.ones(5))
    torch.testing.assert_close(loss_weights(torch.tensor([3.0])), torch.ones(1))
    with pytest.raises(ValueError, match="rule"):
        loss_weights(torch.tensor([1.0, 2.0]), "nope")


def test_selection_normalizes_weights_to_mean_one_and_rejects_bad_weights():
    sel = Selection.make(torch.tensor([3, 1, 2]), torch.tensor([1.0, 2.0, 5.0]))
    torch.testing.assert_close(sel.weights, torch.tensor([0.375, 0.75, 1.875]))
    assert sel.weights.sum().item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="at least one"):
        Selection.make(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="weights must be"):
        Selection.make(torch.tensor([0, 1]), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="2 weights for 3"):
        Selection.make(torch.tensor([0, 1, 2]), torch.tensor([1.0, 1.0]))


def test_normalized_entropy_is_one_for_uniform_and_zero_for_one_hot():
    assert normalized_entropy(torch.ones(8)) == pytest.approx(1.0)
    assert normalized_entropy(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(0.0)
    assert 0 < normalized_entropy(torch.tensor([1.0, 2.0, 3.0])) < 1
    assert normalized_entropy(torch.tensor([4.0])) == 1.0


def test_capped_simplex_projection_is_feasible_and_closest():
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(1, 12))
        cap = float(rng.uniform(1, 4))
        v = rng.normal(size=k) * 3
        c = project_capped_simplex(v, float(k), cap)
        assert c.sum() == pytest.approx(k) and c.min() >= 0 and c.max() <= cap + 1e-12
        for _ in range(10):  # any other feasible point is farther from v
            z = project_capped_simplex(v + rng.normal(size=k), float(k), cap)
            assert np.sum((c - v) ** 2) <= np.sum((z - v) ** 2) + 1e-9
    with pytest.raises(ValueError, match="sums to"):
        project_capped_simplex(np.zeros(2), 10.0, 2.0)


def test_qp_weights_follow_alignment_and_split_weight_between_redundant_candidates():
    # three equally aligned candidates; 0 and 1 have identical gradients, 2 is orthogonal to them
    g = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    K = g @ g.T
    b = torch.ones(3)
    c = solve_weights(b, K, eta=3.0, cap=3.0)
    assert c.sum().item() == pytest.approx(3.0, abs=1e-5)
    assert c[2] > c[0] and c[0] == pytest.approx(c[1].item(), abs=1e-5)  # the distinct one gets more
    # with no curvature the weight goes to the best-aligned candidates, up to the cap
    c = solve_weights(torch.tensor([3.0, 2.0, 1.0, 0.0]), torch.zeros(4, 4), eta=1.0, cap=2.0)
    torch.testing.assert_close(c, torch.tensor([2.0, 2.0, 0.0, 0.0]))


def test_greedy_order_puts_the_unit_that_helps_everyone_first():
    w = torch.zeros(4, 4)
    w[2, :] = 1.0  # unit 2 lowers every other unit's loss
    w[0, 3] = 0.5
    order = greedy_order(w)
    assert order[0] == 2 and sorted(order) == [0, 1, 2, 3]
    assert order.index(0) < order.index(3)


def test_kmeans_units_separates_blocks_with_disjoint_vocabularies():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 10, (6, 9), generator=g)
    b = torch.randint(50, 60, (6, 9), generator=g)
    units = kmeans_units(torch.cat([a, b]), vocab=64, k=2, iters=5, generator=torch.Generator().manual_seed(1))
    assert len(set(units[:6].tolist())) == 1 and len(set(units[6:].tolist())) == 1 and units[0] != units[6]


def test_settings_parse_to_typed_dataclasses_and_bad_settings_raise_once():
    assert parse_params("greats", "pool=3,adam=false,cap=2.5") == GreatsParams(pool=3, adam=False, cap=2.5)
    assert parse_params("loss_reweight", "") == LossReweightParams()
    with pytest.raises(ValueError, match="unknown selection strategy 'best'"):
        parse_params("best")
    with pytest.raises(ValueError, match="rho_loss.pool must be >= 1"):
        parse_params("rho_loss", "pool=0")
    with pytest.raises(ValueError, match="`selection`/`selection_params`: .*unknown or malformed setting 'tau=1'"):
        TrainConfig(selection="loss_reweight", selection_params="tau=1")


def test_make_selector_is_none_for_uniform_and_demands_a_reference_where_needed():
    assert make_selector(TrainConfig()) is None
    assert make_selector(TrainConfig(selection="loss_reweight")).name == "loss_reweight"
    with pytest.raises(ValueError, match="needs a non-empty reference slice"):
        make_selector(TrainConfig(selection="greats"))
