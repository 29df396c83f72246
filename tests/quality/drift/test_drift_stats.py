"""Drift statistics with real data structures and the real (offline, hash-pinned) MiniLM model."""

import random
import shutil

import numpy as np
import pytest

from quality.drift import (
    DriftConfig,
    churn_test,
    confirm_drift,
    lexical_tests,
    log_odds_dirichlet,
    mean_difference_permutation_test,
    mmd2_permutation_test,
    near_duplicate_weights,
    profile_window,
    quarantine_test,
    token_js_null,
)
from quality.drift.embeddings import PINNED_SHA256, MiniLMEmbedder, model_dir, verify_model_files

OLD = [
    "Fast JSON parser for {x} pipelines",
    "Command line tool to manage {x} deployments",
    "Async client library for the {x} API",
    "Utilities for testing {x} applications",
]
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
    windows = [pool[i * 200 : (i + 1) * 200] for i in range(18)]
    cfg = DriftConfig(sample_rows=200, null_splits=200, reference_windows=3)
    history, exceed, drift = [], 0, 0
    for i, cur in enumerate(windows):
        ref = [t for w in windows[max(0, i - 3) : i] for t in w]
        prof = profile_window(
            f"w{i}",
            cur,
            ref,
            reference_keys=[str(j) for j in range(max(0, i - 3), i)],
            cfg=cfg,
            quarantine=(len(ref) // 100, len(ref), 1, len(cur)),
            history=history,
        )
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
    calm = [dict.fromkeys(moved.stats, 0.001 * (i % 3)) for i in range(10)]
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


# -- emerging vocabulary (Monroe et al. 2008 sec. 3.5) and the churn null ---------------------------

ZIPF = [f"tok{i}" for i in range(3000)]
ZIPF_W = [1.0 / (i + 1) for i in range(3000)]


def zipf_texts(n, p_term, seed, term="zorblax"):
    """Texts of 8 Zipf-distributed words; each contains ``term`` with probability ``p_term``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ws = rng.choices(ZIPF, weights=ZIPF_W, k=8)
        if rng.random() < p_term:
            ws.insert(rng.randrange(9), term)
        out.append(" ".join(ws))
    return out


def test_log_odds_dirichlet_matches_the_formula():
    ref, cur, prior = np.array([10.0, 0.0, 5.0]), np.array([2.0, 8.0, 5.0]), np.array([1.0, 2.0, 3.0])
    delta, z = log_odds_dirichlet(ref, cur, prior)
    a0, nr, nc = prior.sum(), ref.sum(), cur.sum()
    w = 1  # the emerging term, by hand
    d = np.log((8 + 2) / (nc + a0 - 8 - 2)) - np.log((0 + 2) / (nr + a0 - 0 - 2))
    assert delta[w] == pytest.approx(d) and z[w] == pytest.approx(d / np.sqrt(1 / 10 + 1 / 2))
    assert z[1] > 0 > z[0]  # emerging vs fading
    with pytest.raises(ValueError):
        log_odds_dirichlet(ref, cur[:2], prior)


def test_a_term_that_jumps_from_0_1_to_3_percent_is_detected_and_unchanged_text_is_not():
    ref = zipf_texts(1000, 0.001, 1)
    jump = lexical_tests(ref, zipf_texts(1000, 0.03, 2), splits=300, alpha=0.01, seed=0)
    same = lexical_tests(ref, zipf_texts(1000, 0.001, 3), splits=300, alpha=0.01, seed=0)
    e = jump.stats["emerging_z"]
    assert e.p_value < 0.01 and e.value > e.threshold
    top, over = jump.top(5, e.threshold)
    assert top[0]["term"] == "zorblax" and over >= 1 and top[0]["current_texts"] >= 20
    assert top[0]["reference_texts"] <= 5
    # the unigram JS over the whole vocabulary does not see a 3% term in 8-word texts: this is what emerging_z is for
    assert jump.stats["token_js"].p_value > 0.01
    s = same.stats["emerging_z"]
    assert s.p_value > 0.05 and same.top(5, s.threshold)[1] == 0


def test_churn_null_keeps_its_false_alarm_rate_and_flags_a_jump():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        v = np.exp(rng.normal(0.0, 0.3, size=13))  # i.i.d. log-normal churn, 12 past values + the current one
        hits += churn_test(float(v[-1]), list(v[:-1]), 0.05).p_value < 0.05
    assert 0.03 < hits / 2000 < 0.07  # exact 5% for this null, +- Monte Carlo error
    past = list(np.exp(rng.normal(0.0, 0.1, size=12)))
    r = churn_test(3.0, past, 0.01)
    assert r.p_value < 0.001 and r.threshold < 3.0
    assert churn_test(1.0, past, 0.01).p_value > 0.05
    with pytest.raises(ValueError):
        churn_test(1.0, [1.0, 2.0], 0.05)


def test_profile_uses_the_churn_null_once_history_exists():
    cfg = DriftConfig(sample_rows=300, null_splits=200, churn_min_windows=6, churn_windows=12)
    ref = texts(OLD, 300, 1)
    cur = texts(OLD, 200, 2) + texts(NEW, 100, 3)
    cold = profile_window("w", cur, ref, reference_keys=["a"], cfg=cfg)
    assert cold.calibration["emerging_z"] == "permutation" and "emerging_z" in cold.exceeded
    assert cold.emerging[0]["term"] in {
        "mcp",
        "agent",
        "agents",
        "ai",
        "llm",
        "server",
        "exposing",
        "tools",
        "framework",
        "lets",
        "call",
    }
    # a history in which the same JS / emerging z are ordinary month-to-month churn: the churn p-value wins
    steady = [
        {k: (r.value * f if r.value > 0 else None) for k, r in cold.stats.items()}
        for f in (0.9, 1.1, 1.0, 0.95, 1.05, 1.2, 0.85)
    ]
    warm = profile_window("w", cur, ref, reference_keys=["a"], cfg=cfg, history=steady)
    assert warm.calibration["emerging_z"] == "permutation+churn"
    assert warm.info["emerging_z_p_churn"] > 0.05 and "emerging_z" not in warm.exceeded
    assert warm.stats["emerging_z"].p_value == max(
        warm.info["emerging_z_p_permutation"], warm.info["emerging_z_p_churn"]
    )
    assert not confirm_drift(warm, steady, cfg, 7).drift
    # a calm history: the same window is now unusual against churn too, and confirmed without ADWIN
    calm = [
        {k: (r.value * f * 0.3 if r.value > 0 else None) for k, r in cold.stats.items()}
        for f in (0.9, 1.1, 1.0, 0.95, 1.05, 1.2, 0.85)
    ]
    hot = profile_window("w", cur, ref, reference_keys=["a"], cfg=cfg, history=calm)
    decision = confirm_drift(hot, calm, cfg, 7)
    assert decision.drift and "emerging_z" in decision.confirmed and "emerging terms:" in decision.reason


# -- near-duplicate weighting (Morcos et al. 2011) and emerging terms over recent windows ------------

SERVICES = [f"svc{i}" for i in range(80)]


def burst(n, seed):
    """One package family's templated upload burst: '<service> data for botocore. See the project page.'"""
    rng = random.Random(seed)
    return [f"{s} data for botocore. See the project page." for s in rng.sample(SERVICES, n)]


def topic(n, seed, term="zorblax"):
    """A real topic: ``term`` in otherwise unrelated Zipf texts (no two alike)."""
    return zipf_texts(n, 1.0, seed, term=term)


def test_near_duplicate_weights_count_a_templated_cluster_once():
    from quality.drift.lexical import _doc_term_vocab, _presence

    docs = burst(20, 1) + zipf_texts(30, 0.0, 2) + ["", ""]
    x, _ = _doc_term_vocab(docs)
    w = near_duplicate_weights(_presence(x), 0.5)
    assert w.shape == (52,) and np.all((w > 0) & (w <= 1))
    assert w[:20] == pytest.approx(np.full(20, 1 / 20))  # 8 shared words of 9: Jaccard 0.8, one cluster
    assert w[:20].sum() == pytest.approx(1.0)
    assert w[20:50].sum() > 28  # random Zipf texts are (almost) never near duplicates
    assert w[50:] == pytest.approx([0.5, 0.5])  # two empty texts: Jaccard 1 with each other
    assert near_duplicate_weights(_presence(x), 1.0)[:20] == pytest.approx(np.ones(20))  # only exact duplicates
    with pytest.raises(ValueError):
        near_duplicate_weights(_presence(x), 0.0)


def test_weighting_ranks_a_spreading_term_above_a_one_family_burst():
    ref = zipf_texts(1500, 0.0, 11)
    cur = zipf_texts(1400, 0.0, 12) + burst(60, 13) + topic(40, 14)
    raw = lexical_tests(ref, cur, splits=200, alpha=0.01, seed=0)
    weighted = lexical_tests(ref, cur, splits=200, alpha=0.01, seed=0, near_dup_jaccard=0.5)
    z_raw, z_w = dict(zip(raw.terms, raw.z)), dict(zip(weighted.terms, weighted.z))
    # unweighted, the 60-text burst outranks the 40 unrelated texts that share a new word
    assert z_raw["botocore"] > z_raw["zorblax"]
    # weighted, the burst counts ~once and the spreading term leads (and is still significant)
    assert weighted.top(1)[0][0]["term"] == "zorblax" and z_w["botocore"] < 1.0
    assert weighted.stats["emerging_z"].p_value < 0.01
    top = weighted.top(1)[0][0]
    assert top["current_texts"] == 40 and 35 < top["current_effective_texts"] <= 40
    assert weighted.cur_effective_texts < len(cur) - 50  # the burst's 60 texts weigh ~1


def test_emerging_over_two_windows_gathers_a_rise_that_started_last_window():
    """A term at 1.5% last month and this month: against a reference that already holds last month, this
    month alone shows little; the last two windows vs the three before them show the rise."""
    before = [zipf_texts(700, 0.0, 20 + i) for i in range(3)]
    last, now = zipf_texts(700, 0.015, 30), zipf_texts(700, 0.015, 31)
    cfg1 = DriftConfig(sample_rows=2100, null_splits=200, emerging_windows=1)
    cfg2 = DriftConfig(sample_rows=2100, null_splits=200, emerging_windows=2)
    ref = [t for w in before[1:] for t in w] + last  # the 3 windows before `now`
    one = profile_window("t", now, ref, reference_keys=["b", "c", "last"], cfg=cfg1)
    two = profile_window(
        "t",
        now,
        ref,
        reference_keys=["b", "c", "last"],
        cfg=cfg2,
        emerging_samples=(last + now, [t for w in before for t in w]),
    )
    assert two.info["emerging_windows"] == 2 and "emerging_windows" not in one.info
    assert two.emerging[0]["term"] == "zorblax" and "emerging_z" in two.exceeded
    assert two.stats["emerging_z"].value > one.stats["emerging_z"].value
    # the other statistics still compare the window with its own reference
    assert two.stats["token_js"] == one.stats["token_js"]
    # without emerging_samples the setting falls back to the window vs its reference
    fallback = profile_window("t", now, ref, reference_keys=["b", "c", "last"], cfg=cfg2)
    assert fallback.stats["emerging_z"] == one.stats["emerging_z"]
    with pytest.raises(ValueError):
        DriftConfig(emerging_windows=0)
    with pytest.raises(ValueError):
        DriftConfig(near_dup_jaccard=1.5)
