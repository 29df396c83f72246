"""Continual-learning summaries of a window x window evaluation matrix (ACC, BWT, FWT, forgetting).

``R[i][j]`` is the score on window j's held-out rows of the model trained through window i (i, j are
0-based positions in stream order). For language models the score is ``-bits_per_byte`` (higher is
better), so a positive BWT means later training *improved* old windows and forgetting is in bits/byte.

Definitions (Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory", arXiv 1706.08840, sec. 4; as
implemented by Avalanche ``avalanche.evaluation.metrics``; TiC-LM arXiv 2504.02107 reports the same
matrix summarised as in-distribution / backward / forward):

- ACC = (1/T) sum_j R[T-1][j]                              (final model, every window)
- BWT = (1/(T-1)) sum_{j<T-1} (R[T-1][j] - R[j][j])        (negative = forgetting)
- FWT = (1/(T-1)) sum_{j>=1} (R[j-1][j] - b[j])            (b[j] = the initial model's score on j)
- forgetting (Chaudhry et al. 2018, arXiv 1801.10112): (1/(T-1)) sum_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j])
  with l >= j; Avalanche's variant uses R[j][j] instead of the max (``forgetting_avalanche``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["cl_summary"]


def cl_summary(R: Mapping[tuple[int, int], float], T: int, base: Sequence[float] | None = None) -> dict[str, float]:
    """ACC, BWT, FWT and forgetting of a (possibly sparse) T x T score matrix.

    Args:
        R: ``{(i, j): score}``; entries needed: the last row ``(T-1, j)`` for every j, the diagonal, and
            ``(j-1, j)`` for FWT. Missing entries are skipped (a term with no data makes its metric NaN).
        T: number of windows (rows), >= 1.
        base: the initial model's score per window (length T), for FWT; None -> FWT is NaN.

    Returns:
        ``{"acc", "bwt", "fwt", "forgetting", "forgetting_avalanche"}`` as floats (NaN when undefined,
        e.g. BWT with T = 1).

    Raises:
        ValueError: if ``T`` < 1 or ``base`` has the wrong length.
    """
    if T < 1:
        raise ValueError(f"`T` must be >= 1, got {T}")
    if base is not None and len(base) != T:
        raise ValueError(f"`base` must have {T} entries, got {len(base)}")
    last = T - 1

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else math.nan

    acc = mean([R[(last, j)] for j in range(T) if (last, j) in R])
    bwt = mean([R[(last, j)] - R[(j, j)] for j in range(last) if (last, j) in R and (j, j) in R])
    fwt = math.nan
    if base is not None:
        fwt = mean([R[(j - 1, j)] - base[j] for j in range(1, T) if (j - 1, j) in R])
    forg, forg_av = [], []
    for j in range(last):
        if (last, j) not in R:
            continue
        seen = [R[(t, j)] for t in range(j, last) if (t, j) in R]
        if seen:
            forg.append(max(seen) - R[(last, j)])
        if (j, j) in R:
            forg_av.append(R[(j, j)] - R[(last, j)])
    return {"acc": acc, "bwt": bwt, "fwt": fwt, "forgetting": mean(forg), "forgetting_avalanche": mean(forg_av)}
