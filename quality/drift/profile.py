"""All statistics of one window against its reference pool (``profile_window``), with per-part timings.

The model-based inputs arrive as plain callables (token counts, per-text bits, embeddings) computed by the
caller (``orchestration.pipeline.monitor``); this module keeps only the statistics over their numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from quality.drift.config import CHURN_STATS, STAT_NAMES, DriftConfig, StatResult, WindowProfile
from quality.drift.lexical import lexical_tests
from quality.drift.nulls import churn_test, mean_difference_permutation_test, mmd2_permutation_test, quarantine_test

History = Sequence[Mapping[str, float | None]]


def sample(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """At most ``n`` texts, uniformly without replacement, in their original order (deterministic per seed)."""
    if len(texts) <= n:
        return list(texts)
    idx = np.sort(np.random.default_rng(seed).choice(len(texts), size=n, replace=False))
    return [texts[i] for i in idx]


def profile_window(
    window_key: str,
    current: Sequence[str],
    reference: Sequence[str],
    *,
    reference_keys: Sequence[str],
    cfg: DriftConfig,
    quarantine: tuple[int, int, int, int] | None = None,
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    count_tokens: Callable[[Sequence[str]], np.ndarray] | None = None,
    score_bits: Callable[[Sequence[str]], np.ndarray] | None = None,
    timer: Callable[[], float] | None = None,
    history: History | None = None,
    emerging_samples: tuple[Sequence[str], Sequence[str]] | None = None,
) -> WindowProfile:
    """All statistics of one window against its reference pool.

    Args:
        window_key: the window.
        current: curated texts of the window (all of them; sampled here).
        reference: curated texts of the reference windows (sampled here); may be empty, then only
            the sizes are recorded and nothing is tested.
        reference_keys: the windows ``reference`` came from.
        cfg: sample sizes, null sizes, false-alarm rate.
        quarantine: ``(ref_quarantined, ref_total, cur_quarantined, cur_total)`` row counts, or None.
        embed: texts -> (n, d) L2-normalised embeddings (``quality.drift.embeddings.MiniLMEmbedder``), or
            None to skip ``embedding_mmd2``.
        count_tokens: texts -> (n,) token counts under the current tokenizer, or None to skip ``bytes_per_token``.
        score_bits: texts -> (n,) total bits the champion assigns to each text (eos-prefixed,
            ``training.evaluate.text_bits``), or None to skip ``lm_bpb`` (no champion yet).
        timer: monotonic clock for the per-part seconds in ``info`` (default ``time.perf_counter``).
        history: ``WindowProfile.flat()`` rows of the earlier windows, oldest first, or None. With at
            least ``cfg.churn_min_windows`` values of a ``CHURN_STATS`` statistic, the last
            ``cfg.churn_windows`` of them give its churn null (``churn_test``): p-value = max(permutation
            p, churn p), threshold = max of the two thresholds.
        emerging_samples: ``(recent, before)`` texts for ``emerging_z`` when ``cfg.emerging_windows`` > 1:
            ``recent`` = the current window and the ``emerging_windows - 1`` windows just before it,
            ``before`` = the ``reference_windows`` windows before those (each side sampled to
            ``sample_rows``); None, or ``emerging_windows == 1``: the window vs its reference, like the
            other lexical statistics. The permutation and churn nulls are unchanged.

    Returns:
        ``WindowProfile`` with p-values, ``alpha``, ``exceeded``, ``calibration`` and the emerging terms.
    """
    timer = timer or time.perf_counter
    cur = sample(current, cfg.sample_rows, cfg.seed)
    ref = sample(reference, cfg.sample_rows, cfg.seed + 1)
    prof = WindowProfile(window_key, list(reference_keys), len(current), len(cur))
    prof.info.update({"reference_rows": len(reference), "reference_sample_rows": len(ref)})
    stats: dict[str, StatResult] = {}
    n_planned = 4 + sum(f is not None for f in (embed, count_tokens, score_bits)) + (quarantine is not None)
    alpha = cfg.false_alarm_rate / n_planned
    if quarantine is not None:
        rq, rt, cq, ct = quarantine
        stats["quarantine_rate"] = quarantine_test(rq, rt, cq, ct)
        prof.info["quarantine_share"] = cq / ct if ct else 0.0
    if len(ref) >= 2 and len(cur) >= 2:
        _lexical_part(prof, stats, ref, cur, cfg, alpha, history, emerging_samples, timer)
        if count_tokens is not None:
            _tokenizer_part(prof, stats, ref, cur, cfg, count_tokens, timer)
        if score_bits is not None:
            _lm_part(prof, stats, ref, cur, cfg, score_bits, timer)
        if embed is not None:
            _embedding_part(prof, stats, ref, cur, cfg, embed, timer)
    for k in stats:
        prof.calibration.setdefault(k, "permutation" if k != "quarantine_rate" else "fisher")
    prof.stats = {k: stats[k] for k in STAT_NAMES if k in stats}
    prof.alpha = alpha
    prof.exceeded = [k for k, r in prof.stats.items() if r.p_value < alpha]
    return prof


def _lexical_part(
    prof: WindowProfile,
    stats: dict[str, StatResult],
    ref: list[str],
    cur: list[str],
    cfg: DriftConfig,
    alpha: float,
    history: History | None,
    emerging_samples: tuple[Sequence[str], Sequence[str]] | None,
    timer: Callable[[], float],
) -> None:
    """``token_js``, ``oov_rate``, ``length_ks`` and ``emerging_z`` (churn-calibrated where history allows)."""
    t0 = timer()
    e_cur = e_ref = []
    if cfg.emerging_windows > 1 and emerging_samples is not None:
        e_cur = sample(emerging_samples[0], cfg.sample_rows, cfg.seed + 6)
        e_ref = sample(emerging_samples[1], cfg.sample_rows, cfg.seed + 7)
    multi_window = len(e_ref) >= 2 and len(e_cur) >= 2
    kw = dict(splits=cfg.null_splits, alpha=alpha, seed=cfg.seed, prior_scale=cfg.prior_scale)
    near_dup = cfg.near_dup_jaccard or None
    # the near-duplicate weights (O(n²) word-set Jaccard) only enter emerging_z: skip them here when the
    # multi-window test below supplies emerging_z (JS, OOV and length KS do not use them)
    lex = lexical_tests(ref, cur, **kw, near_dup_jaccard=None if multi_window else near_dup)
    terms = lex
    if multi_window:
        terms = lexical_tests(e_ref, e_cur, **kw, near_dup_jaccard=near_dup)
        lex.stats["emerging_z"] = terms.stats["emerging_z"]
        prof.info["emerging_windows"] = cfg.emerging_windows
    prof.info.update(
        {"reference_effective_texts": terms.ref_effective_texts, "current_effective_texts": terms.cur_effective_texts}
    )
    for name, res in lex.stats.items():
        stats[name] = _churn_calibrated(prof, name, res, history, cfg, alpha)
    prof.emerging, prof.emerging_over_threshold = terms.top(cfg.top_terms, stats["emerging_z"].threshold)
    prof.info["emerging_terms_over_threshold"] = prof.emerging_over_threshold
    prof.info["seconds_lexical"] = timer() - t0


def _churn_calibrated(
    prof: WindowProfile, name: str, res: StatResult, history: History | None, cfg: DriftConfig, alpha: float
) -> StatResult:
    """``res`` as is (calibration ``permutation``), or with the churn null of the earlier values folded in
    (``permutation+churn``: max of the p-values and of the thresholds; both recorded in ``prof.info``)."""
    prof.calibration[name] = "permutation"
    past = [
        float(h[name])
        for h in (history or [])
        if h.get(name) is not None and math.isfinite(float(h[name])) and float(h[name]) > 0
    ][-cfg.churn_windows :]
    if name not in CHURN_STATS or len(past) < cfg.churn_min_windows:
        return res
    churn = churn_test(res.value, past, alpha)
    prof.info.update(
        {
            f"{name}_p_permutation": res.p_value,
            f"{name}_p_churn": churn.p_value,
            f"{name}_threshold_permutation": res.threshold,
            f"{name}_threshold_churn": churn.threshold,
        }
    )
    prof.calibration[name] = "permutation+churn"
    return StatResult(res.value, max(res.p_value, churn.p_value), max(res.threshold, churn.threshold))


def _utf8_bytes(texts: Sequence[str], extra: int = 0) -> np.ndarray:
    """(n,) float64 UTF-8 bytes of each text plus ``extra``."""
    return np.array([len(t.encode("utf-8")) + extra for t in texts], dtype=np.float64)


def _tokenizer_part(prof, stats, ref, cur, cfg: DriftConfig, count_tokens, timer) -> None:
    """``bytes_per_token``: change of UTF-8 bytes per token (texts with >= 1 token only)."""
    t0 = timer()
    rb, cb = _utf8_bytes(ref), _utf8_bytes(cur)
    rt_, ct_ = np.asarray(count_tokens(ref), np.float64), np.asarray(count_tokens(cur), np.float64)
    keep_r, keep_c = rt_ > 0, ct_ > 0
    if keep_r.sum() >= 1 and keep_c.sum() >= 1:
        stats["bytes_per_token"] = mean_difference_permutation_test(
            rb[keep_r], rt_[keep_r], cb[keep_c], ct_[keep_c], permutations=cfg.permutations, seed=cfg.seed
        )
        prof.info["bytes_per_token"] = float(cb[keep_c].sum() / ct_[keep_c].sum())
    prof.info["seconds_tokenizer"] = timer() - t0


def _lm_part(prof, stats, ref, cur, cfg: DriftConfig, score_bits, timer) -> None:
    """``lm_bpb``: change of the champion's bits per byte (bytes = UTF-8 + 1 eos per text, as in training)."""
    t0 = timer()
    rs, cs = sample(ref, cfg.lm_rows, cfg.seed + 2), sample(cur, cfg.lm_rows, cfg.seed + 3)
    rbits, cbits = np.asarray(score_bits(rs), np.float64), np.asarray(score_bits(cs), np.float64)
    rbytes, cbytes = _utf8_bytes(rs, 1), _utf8_bytes(cs, 1)
    stats["lm_bpb"] = mean_difference_permutation_test(
        rbits, rbytes, cbits, cbytes, permutations=cfg.permutations, seed=cfg.seed
    )
    prof.info["lm_bpb_window"] = float(cbits.sum() / cbytes.sum())
    prof.info["lm_bpb_reference"] = float(rbits.sum() / rbytes.sum())
    prof.info["seconds_lm"] = timer() - t0


def _embedding_part(prof, stats, ref, cur, cfg: DriftConfig, embed, timer) -> None:
    """``embedding_mmd2``: MMD² permutation test on the embeddings of ``embed_rows`` texts per side."""
    t0 = timer()
    rs, cs = sample(ref, cfg.embed_rows, cfg.seed + 4), sample(cur, cfg.embed_rows, cfg.seed + 5)
    e = np.asarray(embed(rs + cs))
    prof.info["seconds_embed"] = timer() - t0
    t0 = timer()
    stats["embedding_mmd2"] = mmd2_permutation_test(
        e[: len(rs)], e[len(rs) :], permutations=cfg.permutations, seed=cfg.seed
    )
    prof.info["seconds_mmd"] = timer() - t0
