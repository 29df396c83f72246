"""The adaptive recipe (monotone in the measured shift) and the Thompson-sampling recipe meta-learner."""

import itertools

import numpy as np
import pytest

from training.config import TrainConfig
from training.meta import GRID, ArmStats, NigPrior, ThompsonRecipeLearner, drift_bucket, reward
from training.recipe import DriftSummary, Recipe, RecipeBase, adaptive_recipe, shift_strength, summarize

BASE = RecipeBase(peak_lr=1e-3, epochs=1.0, max_steps=40)


def test_recipe_is_monotone_in_the_gap_and_the_evidence():
    gaps = [0.0, 0.01, 0.03, 0.06, 0.1, 0.3]
    ps = [1.0, 0.2, 0.05, 0.01, 1e-3, 1e-6]
    for drift in (False, True):
        for p in ps:
            recipes = [adaptive_recipe(DriftSummary(drift, {"token_js": p}), 1.0 + g, 1.0, BASE) for g in gaps]
            for a, b in itertools.pairwise(recipes):
                assert a.peak_lr <= b.peak_lr and a.epochs <= b.epochs and a.max_steps <= b.max_steps
                assert a.replay_fraction <= b.replay_fraction and a.update <= b.update
        for g in gaps:
            shifts = [shift_strength(DriftSummary(drift, {"x": p}), g) for p in ps]
            assert shifts == sorted(shifts)


def test_recipe_ends_follow_ibrahim_et_al():
    calm = adaptive_recipe(DriftSummary(False, {"token_js": 1.0}), 0.99, 1.0, BASE)
    assert calm.replay_fraction == pytest.approx(0.05) and calm.peak_lr == pytest.approx(5e-4)
    assert not calm.update and "no update needed" in calm.reason
    shock = adaptive_recipe(DriftSummary(True, {"emerging_z": 1e-4}), 1.25, 1.0, BASE)
    assert shock.replay_fraction == pytest.approx(0.25) and shock.peak_lr == pytest.approx(1.5e-3)
    assert shock.max_steps == 60 and shock.update and "+0.250" in shock.reason
    cfg = shock.apply(TrainConfig(max_steps=40))
    assert (cfg.peak_lr, cfg.max_steps, cfg.seq_len) == (shock.peak_lr, 60, 128)
    params = shock.params()
    assert params["recipe.kind"] == "adaptive" and params["recipe.update"] is True and "recipe.reason" in params


def test_recipe_inputs_are_checked_and_missing_bpb_is_allowed():
    assert adaptive_recipe(DriftSummary(True, {"oov_rate": 1e-3}), None, None, BASE).update
    with pytest.raises(ValueError, match="p-values"):
        adaptive_recipe(DriftSummary(False, {"x": 1.5}), 1.0, 1.0, BASE)
    with pytest.raises(ValueError, match="peak_lr"):
        adaptive_recipe(DriftSummary(), 1.0, 1.0, RecipeBase(0.0, 1.0))


def test_summarize_profile_rows():
    rows = [
        {"drift": False, "token_js_p": 0.3, "lm_bpb_p": None},
        {"drift": True, "token_js_p": 0.01, "lm_bpb_window": 2.2, "lm_bpb_reference": 2.0},
    ]
    s = summarize(rows)
    assert s.drift and s.min_p == 0.01 and (s.bpb_window, s.bpb_reference) == (2.2, 2.0)
    assert summarize([]) == DriftSummary()


def test_nig_posterior_matches_the_conjugate_update():
    stats = ArmStats()
    for x in (1.0, 2.0, 4.0):
        stats = stats.add(x)
    assert (stats.n, stats.mean) == (3, pytest.approx(7 / 3)) and stats.m2 == pytest.approx(np.var([1, 2, 4]) * 3)
    mu, kappa, alpha, beta = NigPrior().posterior(stats)
    assert (mu, kappa, alpha) == (pytest.approx(7 / 4), 4, 2.5)
    assert beta == pytest.approx(1 + stats.m2 / 2 + 3 * (7 / 3) ** 2 / 8)


def test_thompson_sampling_converges_to_the_best_arm():
    """12 arms, Gaussian rewards (sd 0.3), arm means 0, 0.1, .., 1.1 in the high bucket; seeded."""
    rng = np.random.default_rng(0)
    means = {a.name: 0.1 * i for i, a in enumerate(GRID)}
    best = max(means, key=means.get)
    learner = ThompsonRecipeLearner()
    picks = []
    for _ in range(400):
        arm = learner.choose("high", rng)
        picks.append(arm.name)
        learner.update("high", arm.name, rng.normal(means[arm.name], 0.3))
    assert learner.best("high").name == best
    last = picks[-100:]
    assert max(set(last), key=last.count) == best and last.count(best) >= 70, last.count(best)
    assert learner.best("low").name == GRID[0].name  # untouched bucket: prior, ties in grid order


def test_meta_helpers():
    assert [drift_bucket(s) for s in (float("nan"), 0.1, 0.5, 0.9)] == ["low", "low", "mid", "high"]
    assert reward(2.0, 1.9, 500_000) == pytest.approx(0.2)
    recipe = GRID[-1].recipe(BASE, "high", 0.8)
    assert (recipe.kind, recipe.arm, recipe.peak_lr, recipe.max_steps) == ("meta", GRID[-1].name, 1.5e-3, 40)
    with pytest.raises(ValueError, match="train_tokens"):
        reward(1.0, 1.0, 0)
    with pytest.raises(ValueError, match="bucket"):
        ThompsonRecipeLearner().choose("huge", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown arm"):
        ThompsonRecipeLearner().update("low", "nope", 1.0)


def test_recipe_params_round_trip_as_a_snapshot_manifest_stores_them():
    base = RecipeBase(3e-3, 2.0, None)
    adaptive = adaptive_recipe(DriftSummary(True, {"token_js": 1e-4}), 2.3, 2.0, base)
    meta = GRID[5].recipe(RecipeBase(3e-3, 2.0, 20), "high", 0.9)
    for recipe in (adaptive, meta, GRID[0].recipe(base, "low")):  # shift NaN and max_steps None survive
        again = Recipe.from_params(recipe.params())
        assert again.params() == recipe.params() and again.max_steps == recipe.max_steps
        assert again.apply(TrainConfig()) == recipe.apply(TrainConfig())
    with pytest.raises(KeyError):
        Recipe.from_params({"recipe.kind": "adaptive"})
