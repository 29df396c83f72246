"""Learning-rate schedule: linear warm-up, then cosine decay to a floor, restarted on every update.

Continual pre-training that re-warms and re-decays the learning rate on each new slice of data, plus
a little replay, matches re-training from scratch on the union (Ibrahim et al. 2024, "Simple and
Scalable Strategies to Continually Pre-train Large Language Models", arXiv 2403.08763, sec. 5;
Gupta et al. 2023, arXiv 2308.04014). Cosine decay: Loshchilov & Hutter 2017, arXiv 1608.03983.
The function is pure, like nanoGPT's ``get_lr(it)``.
"""

from __future__ import annotations

import math

__all__ = ["get_lr"]


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
