"""The update recipe as a function of the measured shift: peak learning rate, steps, replay share, update or not.

``adaptive_recipe`` maps the drift monitor's measurements of the window(s) an update trains on to a recipe,
monotone in the shift: the stronger the shift, the higher the re-warmed peak learning rate, the more steps and
the larger the share of replayed old rows. The mapping follows Ibrahim et al. 2024 ("Simple and Scalable
Strategies to Continually Pre-train Large Language Models", arXiv 2403.08763): sec. 5 finds 5% replay enough
for a weak shift (Pile -> SlimPajama) and 25% needed for a strong one (English -> German), and re-warming the
learning rate is what lets the model adapt to new data, at the price of forgetting that grows with the peak
(sec. 6); so a small shift gets a low peak, few steps and 5% replay, a large one the full re-warm, more steps
and 25% replay.

Shift strength ``s`` in [0, 1] (``shift_strength``) from two measurements:

* the prequential gap ``g = bpb_new / bpb_old - 1``: the champion's bits/byte on the new window over its
  bits/byte on the reference windows before it (``quality.drift.profile``'s ``lm_bpb_window`` and
  ``lm_bpb_reference``); ``g >= GAP_FULL`` (10% worse) counts as a full shift;
* the drift monitor's evidence ``e = min(1, -log10(p_min) / 3)`` from the smallest p-value of its statistics
  (p = 0.001 counts fully); a confirmed alarm counts it fully, an unconfirmed exceedance at half weight.

``s = max(clip(g / GAP_FULL, 0, 1), e')``. Recipe: ``peak_lr = base * (0.5 + s)``, ``epochs`` (or
``max_steps``) ``= base * (0.5 + s)``, ``replay_fraction = 0.05 + 0.20 s``, ``update = s >= MIN_SHIFT``
(no measurable shift: fine-tuning would spend compute for nothing the gate could see). Every output is
non-decreasing in ``g`` and in ``e``. Cost: O(number of statistics); no torch.

No Dagster import: ``orchestration.pipeline.recipe_step`` reads the measurements and applies the recipe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from training.config import TrainConfig

GAP_FULL = 0.10
"""Prequential gap (relative bits/byte increase of the champion on the new window) that counts as a full shift."""
MIN_SHIFT = 0.05
"""Below this shift strength the recipe says ``update = False``."""
REPLAY_RANGE = (0.05, 0.25)
"""Replay share for no shift .. full shift (Ibrahim et al. 2024, sec. 5)."""


@dataclass(frozen=True)
class DriftSummary:
    """What the drift monitor measured on the window(s) of one update (``monitor.window_profile`` rows).

    Attributes:
        drift: a drift alarm was confirmed on one of the windows.
        p_values: statistic name -> smallest p-value over the windows (each in [0, 1]).
        bpb_window: champion bits/byte on the new window's rows (``lm_bpb_window``), None if not scored.
        bpb_reference: champion bits/byte on the reference windows' rows (``lm_bpb_reference``), or None.
    """

    drift: bool = False
    p_values: Mapping[str, float] = field(default_factory=dict)
    bpb_window: float | None = None
    bpb_reference: float | None = None

    @property
    def min_p(self) -> float:
        """Smallest p-value of any statistic; 1.0 when none was measured."""
        return min(dict(self.p_values).values(), default=1.0)


@dataclass(frozen=True)
class RecipeBase:
    """The fixed recipe the adaptive one scales: ``[train] peak_lr``, ``epochs``, ``max_steps``."""

    peak_lr: float
    epochs: float
    max_steps: int | None = None

    @classmethod
    def of(cls, cfg: TrainConfig) -> RecipeBase:
        return cls(cfg.peak_lr, cfg.epochs, cfg.max_steps)


@dataclass(frozen=True)
class Recipe:
    """One update's recipe and why."""

    peak_lr: float
    epochs: float
    max_steps: int | None
    replay_fraction: float
    """Share of the update's training rows drawn from the replay buffer, in [0, 1)."""
    update: bool
    """False: no measurable shift, the update would not pay."""
    reason: str
    kind: str = "adaptive"
    """"fixed", "adaptive" or "meta"."""
    shift: float = float("nan")
    """Shift strength s in [0, 1] it was computed from (NaN for fixed)."""
    arm: str = ""
    """The meta-learner's arm (``training.meta``), "" otherwise."""

    def apply(self, cfg: TrainConfig) -> TrainConfig:
        """``cfg`` with this recipe's peak learning rate, epochs and max_steps."""
        return replace(cfg, peak_lr=self.peak_lr, epochs=self.epochs, max_steps=self.max_steps)

    @classmethod
    def from_params(cls, params: Mapping[str, str | float | int | bool]) -> Recipe:
        """Inverse of ``params()`` (``recipe.max_steps`` 0 = None, ``recipe.shift`` -1 = NaN).

        Raises:
            KeyError: a ``recipe.*`` key other than ``recipe.arm`` is missing.
        """
        max_steps, shift = int(params["recipe.max_steps"]), float(params["recipe.shift"])
        return cls(
            peak_lr=float(params["recipe.peak_lr"]),
            epochs=float(params["recipe.epochs"]),
            max_steps=max_steps or None,
            replay_fraction=float(params["recipe.replay_fraction"]),
            update=bool(params["recipe.update"]),
            reason=str(params["recipe.reason"]),
            kind=str(params["recipe.kind"]),
            shift=shift if shift >= 0 else float("nan"),
            arm=str(params.get("recipe.arm", "")),
        )

    def params(self) -> dict[str, str | float | int | bool]:
        """Flat ``recipe.*`` dict for MLflow params and Dagster metadata (numbers and the reason; no text)."""
        out = {
            "recipe.kind": self.kind,
            "recipe.peak_lr": self.peak_lr,
            "recipe.epochs": self.epochs,
            "recipe.max_steps": self.max_steps if self.max_steps is not None else 0,
            "recipe.replay_fraction": round(self.replay_fraction, 4),
            "recipe.update": self.update,
            "recipe.shift": round(self.shift, 4) if math.isfinite(self.shift) else -1.0,
            "recipe.reason": self.reason,
        }
        if self.arm:
            out["recipe.arm"] = self.arm
        return out


def prequential_gap(bpb_new: float | None, bpb_old: float | None) -> float | None:
    """``bpb_new / bpb_old - 1`` (None when either is missing or ``bpb_old`` <= 0)."""
    if bpb_new is None or bpb_old is None or not bpb_old > 0 or not math.isfinite(bpb_new):
        return None
    return bpb_new / bpb_old - 1.0


def shift_strength(drift: DriftSummary, gap: float | None) -> float:
    """Shift strength s in [0, 1]: ``max(clip(gap / GAP_FULL, 0, 1), evidence)``; evidence = ``min(1, -log10(p_min)
    / 3)``, halved when the alarm is not confirmed. Non-decreasing in ``gap`` and in ``-log p_min``."""
    p = min(max(drift.min_p, 1e-12), 1.0)
    evidence = min(1.0, -math.log10(p) / 3.0) * (1.0 if drift.drift else 0.5)
    from_gap = 0.0 if gap is None else min(max(gap / GAP_FULL, 0.0), 1.0)
    return max(from_gap, evidence)


def adaptive_recipe(
    drift: DriftSummary, champion_bpb_new: float | None, champion_bpb_old: float | None, base: RecipeBase
) -> Recipe:
    """The recipe for one update from the measured shift (module docstring: formula and source).

    Args:
        drift: the drift monitor's summary of the update's windows.
        champion_bpb_new: champion bits/byte on the new data (None: not measured).
        champion_bpb_old: champion bits/byte on its earlier held-out / reference data (None: not measured).
        base: the fixed recipe to scale (``RecipeBase.of(settings.train)``).

    Returns:
        ``Recipe`` with ``kind = "adaptive"``; ``max_steps`` scaled only when the base sets it.

    Raises:
        ValueError: a p-value outside [0, 1] or a base with a non-positive peak_lr / epochs.
    """
    if base.peak_lr <= 0 or base.epochs <= 0:
        raise ValueError(f"base recipe needs peak_lr > 0 and epochs > 0, got {base}")
    bad = {k: v for k, v in dict(drift.p_values).items() if not 0 <= v <= 1}
    if bad:
        raise ValueError(f"p-values must be in [0, 1], got {bad}")
    gap = prequential_gap(champion_bpb_new, champion_bpb_old)
    s = shift_strength(drift, gap)
    scale = 0.5 + s
    lo, hi = REPLAY_RANGE
    steps = None if base.max_steps is None else max(1, round(base.max_steps * scale))
    gap_txt = "n/a" if gap is None else f"{gap:+.3f}"
    update = s >= MIN_SHIFT
    reason = (
        f"shift s={s:.2f} (prequential gap {gap_txt}, p_min {drift.min_p:.3g}, "
        f"{'confirmed' if drift.drift else 'no confirmed'} drift): lr x{scale:.2f}, steps x{scale:.2f}, "
        f"replay {lo + (hi - lo) * s:.0%}" + ("" if update else f"; s < {MIN_SHIFT}: no update needed")
    )
    return Recipe(base.peak_lr * scale, base.epochs * scale, steps, lo + (hi - lo) * s, update, reason, "adaptive", s)


def summarize(profiles: Sequence[Mapping]) -> DriftSummary:
    """One ``DriftSummary`` from ``window_profile``-like dicts (keys ``drift``, ``<stat>_p``, and
    ``lm_bpb_window`` / ``lm_bpb_reference`` when the champion was scored): alarm if any window alarmed, each
    statistic's smallest p-value, bits/byte of the newest window that has both."""
    p_values: dict[str, float] = {}
    bpb_new = bpb_old = None
    for row in profiles:
        for key, value in row.items():
            if key.endswith("_p") and value is not None and math.isfinite(float(value)):
                name = key[:-2]
                p_values[name] = min(float(value), p_values.get(name, 1.0))
        if row.get("lm_bpb_window") is not None and row.get("lm_bpb_reference") is not None:
            bpb_new, bpb_old = float(row["lm_bpb_window"]), float(row["lm_bpb_reference"])
    drift = any(bool(r.get("drift")) for r in profiles)
    return DriftSummary(drift, p_values, bpb_new, bpb_old)
