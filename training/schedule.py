"""Learning-rate schedule: linear warm-up, then cosine decay to a floor, restarted on every update.

Continual pre-training that re-warms and re-decays the learning rate on each new slice of data, plus
a little replay, matches re-training from scratch on the union (Ibrahim et al. 2024, "Simple and
Scalable Strategies to Continually Pre-train Large Language Models", arXiv 2403.08763, sec. 5;
Gupta et al. 2023, arXiv 2308.04014). Cosine decay: Loshchilov & Hutter 2017, arXiv 1608.03983.
The function is pure, like nanoGPT's ``get_lr(it)``.
"""

from __future__ import annotations

import math

__all__ = ["ar_meta_peak_lr", "get_lr"]


def get_lr(step: int, total_steps: int, peak_lr: float, warmup_steps: int, min_lr: float) -> float:
    """Learning rate for 0-based optimiser ``step`` of an update lasting ``total_steps`` steps.

    - warm-up, ``step < warmup_steps``: ``peak_lr * (step + 1) / warmup_steps`` (linear; the first step
      is not wasted at lr 0, and step ``warmup_steps - 1`` runs at ``peak_lr``);
    - then cosine from ``peak_lr`` down to exactly ``min_lr`` at the last step, ``total_steps - 1``;
    - steps at or past the end return ``min_lr``.

    Args:
        step: 0-based step index, >= 0.
        total_steps: steps in this update, >= 1.
        peak_lr: learning rate at the end of warm-up, > 0.
        warmup_steps: in [0, total_steps].
        min_lr: cosine floor, in [0, peak_lr].

    Returns:
        The learning rate (same units as ``peak_lr``).

    Raises:
        ValueError: on arguments outside the ranges above.
    """
    if step < 0:
        raise ValueError(f"`step` must be >= 0, got {step}")
    if total_steps < 1:
        raise ValueError(f"`total_steps` must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"`warmup_steps` must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if peak_lr <= 0:
        raise ValueError(f"`peak_lr` must be > 0, got {peak_lr}")
    if not 0 <= min_lr <= peak_lr:
        raise ValueError(f"`min_lr` must be in [0, peak_lr={peak_lr}], got {min_lr}")
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    peak_step = max(warmup_steps - 1, 0)  # the step that ran at peak_lr
    decay_steps = total_steps - 1 - peak_step
    if decay_steps <= 0:  # the update ends at the peak (e.g. a single step)
        return peak_lr if step <= peak_step else min_lr
    ratio = min(1.0, (step - peak_step) / decay_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (peak_lr - min_lr)


def ar_meta_peak_lr(prior_steps: int, update_steps: int, peak_lr: float, min_lr: float) -> float:
    """Peak learning rate of one update under the TiC-LM "AR meta-schedule".

    TiC-LM (Li et al. 2025, "TiC-LM: A Web-Scale Benchmark for Time-Continual LLM Pretraining",
    arXiv 2504.02107, sec. 4, ``cosine_plus_ar_max_lr``): each round re-warms to the value one global
    cosine over *all steps so far* would have at the round's first step, so later rounds re-warm to
    lower peaks instead of to the same maximum:

        peak = min_lr + 0.5 * (peak_lr - min_lr) * (1 + cos(pi * prior_steps / (prior_steps + update_steps)))

    The first update (``prior_steps = 0``) peaks at ``peak_lr``; with equal updates the t-th peaks at
    ``cos(pi (t-1) / t)`` of the range.

    Args:
        prior_steps: optimiser steps of the whole lineage before this update, >= 0.
        update_steps: steps of this update, >= 1.
        peak_lr: the global maximum, > 0.
        min_lr: the global floor, in [0, peak_lr].

    Raises:
        ValueError: on arguments outside those ranges.
    """
    if prior_steps < 0 or update_steps < 1:
        raise ValueError(f"need prior_steps >= 0 and update_steps >= 1, got {prior_steps}, {update_steps}")
    if peak_lr <= 0 or not 0 <= min_lr <= peak_lr:
        raise ValueError(f"need peak_lr > 0 and 0 <= min_lr <= peak_lr, got {peak_lr}, {min_lr}")
    ratio = prior_steps / (prior_steps + update_steps)
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * ratio))
