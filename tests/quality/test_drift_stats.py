"""Drift statistics with real data structures and the real (offline, hash-pinned) MiniLM model."""

import random
import shutil

import numpy as np
import pytest

from quality.drift import (
    DriftConfig,
    confirm_drift,
    mean_difference_permutation_test,
    mmd2_permutation_test,
    profile_window,
    quarantine_test,
    token_js_null,
)
from quality.embeddings import PINNED_SHA256, MiniLMEmbedder, model_dir, verify_model_files

OLD = ["Fast JSON parser for {x} pipelines", "Command line tool to manage {x} deployments",
       "Async client library for the {x} API", "Utilities for testing {x} applications"]
NEW = ["MCP server exposing {x} tools to AI agents", "Agent framework that lets LLM agents call {x}"]
THINGS = ["data", "cloud", "kafka", "redis", "postgres", "web", "ml", "image", "audio", "graph", "s3", "slack"]


def texts(templates, n, seed):
    rng = random.Random(seed)
    return [rng.choice(templates).format(x=rng.choice(THINGS)) + f" v{rng.randint(0, 9)}" for _ in range(n)]


def test_lexical_null_does_not_fire_on_same_distribution_and_fires_on_new_topic():
    ref = texts(OLD, 400, 1)
    same = token_js_null(ref, texts(OLD, 200, 2), splits=200, alpha=0.01, seed=0)
    moved = token_js_null(ref, texts(OLD, 140, 3) + texts(NEW, 60, 4), splits=200, alpha=0.01, seed=0)
    assert same["token_js"].p_value > 0.05 and same["oov_rate"].p_value > 0.05
    assert moved["token_js"].p_value < 0.01 and moved["oov_rate"].p_value < 0.01
    assert moved["token_js"].value > moved["token_js"].threshold > 0


def test_permutation_tests_and_fisher():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    assert mmd2_permutation_test(a, b, permutations=200).p_value > 0.05
    assert mmd2_permutation_test(a, b + 1.0, permutations=200).p_value < 0.01
    with pytest.raises(ValueError):
        mmd2_permutation_test(a[:1], b, permutations=10)
    bits, by = rng.uniform(90, 110, 100), np.full(100, 50.0)
    assert mean_difference_permutation_test(bits, by, bits * 1.3, by, permutations=200).p_value < 0.01
    assert quarantine_test(5, 1000, 60, 1000).p_value < 1e-6
    assert quarantine_test(5, 1000, 1, 200).p_value > 0.05
    assert quarantine_test(0, 0, 3, 10).p_value == 1.0


def test_false_alarm_rate_on_shuffled_windows_is_controlled():
    """Records of a drifting stream shuffled across windows: no drift by construction."""
    pool = texts(OLD, 3000, 5) + texts(NEW, 600, 6)
    random.Random(7).shuffle(pool)
    windows = [pool[i * 200:(i + 1) * 200] for i in range(18)]
    cfg = DriftConfig(sample_rows=200, null_splits=200, reference_windows=3)
    history, exceed, drift = [], 0, 0
    for i, cur in enumerate(windows):
        ref = [t for w in windows[max(0, i - 3):i] for t in w]
        prof = profile_window(f"w{i}", cur, ref, reference_keys=[str(j) for j in range(max(0, i - 3), i)], cfg=cfg,
                              quarantine=(len(ref) // 100, len(ref), 1, len(cur)))
        dec = confirm_drift(prof, history, cfg, i)
        exceed += bool(prof.exceeded) and i >= 2
        drift += dec.drift
        history.append(prof.flat())
    assert exceed <= 2 and drift <= 1  # <= ~5% of 16 testable windows, with slack for one unlucky split


def test_confirmation_needs_a_change_of_the_series():
    cfg = DriftConfig(sample_rows=200, null_splits=200)
    ref = texts(OLD, 400, 1)
    moved = profile_window("w", texts(NEW, 200, 9), ref, reference_keys=["a", "b"], cfg=cfg)
    assert "token_js" in moved.exceeded
    # a history where the same JS level is normal: exceeded, but not confirmed
    steady = [{k: r.value * 1.5 for k, r in moved.stats.items()}] * 10
    assert not confirm_drift(moved, steady, cfg, 10).drift
    calm = [{k: 0.001 * (i % 3) for k in moved.stats} for i in range(10)]
    decision = confirm_drift(moved, calm, cfg, 10)
    assert decision.drift and "token_js" in decision.confirmed and "token_js" in decision.reason
    assert not confirm_drift(moved, calm, cfg, 1).drift  # too few earlier windows


def test_minilm_is_pinned_and_separates_topics(tmp_path):
    verify_model_files(model_dir())
    emb = MiniLMEmbedder()
    a = emb(texts(OLD, 12, 1))
    b = emb(texts(OLD, 12, 2))
    c = emb(texts(NEW, 12, 3))
    assert a.shape == (12, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert mmd2_permutation_test(a, b, permutations=200).p_value > 0.05
    assert mmd2_permutation_test(a, c, permutations=200).p_value < 0.01
    # a tampered copy is refused
    bad = tmp_path / "model"
    shutil.copytree(model_dir(), bad)
    (bad / "vocab.txt").write_text("tampered\n")
    with pytest.raises(ValueError, match="vocab.txt"):
        verify_model_files(bad)
    assert set(PINNED_SHA256) >= {"model.safetensors", "tokenizer.json"}
