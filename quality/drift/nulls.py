"""Null distributions and tests of single drift statistics: churn prediction interval, ratio-of-sums and
MMD² permutation tests, Fisher's exact test of the quarantine share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from quality.drift.config import StatResult


def churn_test(value: float, past: Sequence[float], alpha: float) -> StatResult:
    """Is ``value`` unusual against the stream's own window-to-window variation of the statistic?

    Null: ``log(value)`` and the ``H`` earlier values ``log(past)`` are i.i.d. normal (the statistic
    of each earlier window against its own reference = ordinary churn). Then
    ``(log v - mean) / (sd * sqrt(1 + 1/H))`` follows Student's t with ``H - 1`` degrees of freedom
    (the one-sided prediction interval for a new observation), which gives the p-value and the
    threshold ``exp(mean + t_{1-alpha, H-1} * sd * sqrt(1 + 1/H))``.

    Args:
        value: the current value (> 0).
        past: earlier values (> 0), at least 3; non-positive or non-finite ones are dropped.
        alpha: level of the threshold.

    Returns:
        ``StatResult(value, p_value, threshold)``.

    Raises:
        ValueError: fewer than 3 usable past values.
    """
    from scipy.stats import t as student_t

    logs = np.log([v for v in past if v is not None and math.isfinite(v) and v > 0])
    h = len(logs)
    if h < 3:
        raise ValueError(f"churn_test needs >= 3 positive past values, got {h}")
    m, sd = float(logs.mean()), float(logs.std(ddof=1))
    scale = max(sd, 1e-12) * math.sqrt(1 + 1 / h)
    lv = math.log(value) if value > 0 else -math.inf
    p = float(student_t.sf((lv - m) / scale, df=h - 1))
    return StatResult(float(value), p, float(math.exp(m + student_t.ppf(1 - alpha, df=h - 1) * scale)))


def mean_difference_permutation_test(
    ref_num: np.ndarray,
    ref_den: np.ndarray,
    cur_num: np.ndarray,
    cur_den: np.ndarray,
    *,
    permutations: int,
    seed: int = 0,
) -> StatResult:
    """Two-sided permutation test of a ratio-of-sums difference.

    The statistic is ``sum(cur_num)/sum(cur_den) - sum(ref_num)/sum(ref_den)``.

    Used for bits per byte (num = bits of a text, den = its bytes) and bytes per token (num = bytes,
    den = tokens): pooled per-text pairs are reassigned to the two sides at random.

    Args:
        ref_num, ref_den, cur_num, cur_den: 1-D float arrays, one entry per text; dens > 0.
        permutations: number of random reassignments.

    Returns:
        ``StatResult(value=difference, p_value)``.
    """
    num = np.concatenate([ref_num, cur_num]).astype(np.float64)
    den = np.concatenate([ref_den, cur_den]).astype(np.float64)
    n_ref = len(ref_num)

    def diff(idx_ref: np.ndarray, idx_cur: np.ndarray) -> float:
        return num[idx_cur].sum() / den[idx_cur].sum() - num[idx_ref].sum() / den[idx_ref].sum()

    observed = diff(np.arange(n_ref), np.arange(n_ref, len(num)))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(permutations):
        perm = rng.permutation(len(num))
        hits += abs(diff(perm[:n_ref], perm[n_ref:])) >= abs(observed) - 1e-12
    return StatResult(float(observed), (1 + hits) / (permutations + 1))


def mmd2_permutation_test(ref: np.ndarray, cur: np.ndarray, *, permutations: int, seed: int = 0) -> StatResult:
    """Unbiased MMD² with a Gaussian kernel and its permutation p-value (Gretton et al., JMLR 2012).

    The bandwidth is the median pairwise Euclidean distance of the pooled sample (median heuristic);
    the kernel matrix is computed once and permutations reindex it (O(permutations * n²)).

    Args:
        ref: (n, d) float32/64 embeddings of the reference sample, n >= 2.
        cur: (m, d) embeddings of the current sample, m >= 2.
        permutations: number of random relabelings.

    Returns:
        ``StatResult(value=MMD²_u, p_value)``; MMD²_u can be slightly negative under the null.

    Raises:
        ValueError: if either side has fewer than 2 rows or the dimensions differ.
    """
    if len(ref) < 2 or len(cur) < 2 or ref.shape[1] != cur.shape[1]:
        raise ValueError(f"need two (>=2, d) samples of the same d, got {ref.shape} and {cur.shape}")
    z = np.concatenate([ref, cur]).astype(np.float64)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    iu = np.triu_indices(len(z), k=1)
    med = float(np.median(d2[iu]))
    k = np.exp(-d2 / (2 * (med if med > 0 else 1.0)))  # exp(-||x-y||² / (2 σ²)), σ = median distance
    np.fill_diagonal(k, 0.0)
    n, m = len(ref), len(cur)

    def mmd2(mask: np.ndarray) -> float:
        a = mask.astype(np.float64)
        b = 1.0 - a
        kxx = a @ k @ a / (n * (n - 1))
        kyy = b @ k @ b / (m * (m - 1))
        kxy = a @ k @ b / (n * m)
        return float(kxx + kyy - 2 * kxy)

    labels = np.zeros(n + m, dtype=bool)
    labels[:n] = True
    observed = mmd2(labels)
    rng = np.random.default_rng(seed)
    hits = sum(mmd2(rng.permutation(labels)) >= observed - 1e-15 for _ in range(permutations))
    return StatResult(observed, (1 + hits) / (permutations + 1))


def quarantine_test(ref_quarantined: int, ref_total: int, cur_quarantined: int, cur_total: int) -> StatResult:
    """Change of the quarantined share (current − reference) with a two-sided Fisher exact p-value.

    Args:
        ref_quarantined, ref_total: quarantined and (curated + quarantined) rows of the reference windows.
        cur_quarantined, cur_total: the same for the current window.

    Returns:
        ``StatResult(value=rate difference in [-1, 1], p_value)``; p = 1 when either total is 0.

    Raises:
        ValueError: a quarantined count is negative or above its total.
    """
    from scipy.stats import fisher_exact

    if not (0 <= ref_quarantined <= max(ref_total, 0) and 0 <= cur_quarantined <= max(cur_total, 0)):
        raise ValueError(
            f"quarantined rows must be within [0, total], got {ref_quarantined}/{ref_total} "
            f"and {cur_quarantined}/{cur_total}"
        )
    if ref_total <= 0 or cur_total <= 0:
        return StatResult(0.0, 1.0)
    diff = cur_quarantined / cur_total - ref_quarantined / ref_total
    table = [[cur_quarantined, cur_total - cur_quarantined], [ref_quarantined, ref_total - ref_quarantined]]
    return StatResult(float(diff), float(fisher_exact(table).pvalue))
