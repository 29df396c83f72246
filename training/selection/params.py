"""Settings of each selection strategy, parsed from ``TrainConfig.selection_params`` (torch-free).

``TrainConfig`` carries two flat fields, ``selection`` (a strategy name) and ``selection_params`` (a
``"key=value,key=value"`` string), so the whole config stays a flat dict of scalars for MLflow. This
module turns the string into one frozen dataclass per strategy and validates it; it imports no torch so
``training.config`` can validate cheaply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "STRATEGIES",
    "D3Params",
    "DwmParams",
    "GreatsParams",
    "LossReweightParams",
    "RhoLossParams",
    "UniformParams",
    "parse_params",
]


@dataclass(frozen=True)
class UniformParams:
    """Uniform: no settings (every drawn block is trained on with weight 1)."""


@dataclass(frozen=True)
class LossReweightParams:
    """Loss-based reweighting within the batch (Sow et al., ICLR 2025)."""

    rule: str = "linupper"
    """"linupper" (weight rises with the z-scored loss, capped at ``cap``), "quadratic" (down-weights both
    tails: the easiest and the hardest samples) or "extremes" (up-weights both tails)."""
    temperature: float = 1.0
    """Softmax temperature over the scores; larger = closer to uniform."""
    cap: float = 1.0
    """Upper cap on the z-scored loss for "linupper" (very high losses are often noise)."""


@dataclass(frozen=True)
class RhoLossParams:
    """RHO-LOSS (Mindermann et al., ICML 2022)."""

    pool: int = 2
    """Candidates scored per kept block (the paper uses 10; the candidate forward is the cost)."""
    il_steps: int = 20
    """AdamW steps that fine-tune a copy of the parent on the reference slice into the irreducible-loss
    model; 0 = the parent itself serves as the irreducible-loss model."""
    ref_fraction: float = 0.05
    """Share of the training texts held back as the reference slice when none is given."""


@dataclass(frozen=True)
class GreatsParams:
    """Optimizer-aware Filter-then-Weight / GREATS (Wang et al. 2026 / NeurIPS 2024)."""

    pool: int = 2
    """Candidates scored per kept block; the filter keeps the top ``batch_size`` by alignment."""
    layers: int = 1
    """How many of the last transformer blocks contribute their MLP layers (c_fc, c_proj) to the
    per-sample gradients."""
    adam: bool = True
    """Precondition with AdamW's second moment (rank-1 factorised); False = plain gradient geometry."""
    cap: float = 3.0
    """Upper bound on a weight in the QP (weights sum to the number kept)."""
    target_batch: int = 8
    """Reference blocks per target-gradient estimate."""
    target_every: int = 1
    """Recompute the target gradient every this many steps (reused in between)."""
    ref_fraction: float = 0.05
    """Share of the training texts held back as the reference slice when none is given."""


@dataclass(frozen=True)
class DwmParams:
    """DWM-lite (Yu et al., ICML 2025)."""

    hidden: int = 16
    """Hidden width of the weighting MLP."""
    lr: float = 0.1
    """Adam learning rate of the weighting model (0.01 left the weights visibly uniform, entropy 0.999,
    within a 40-step update: about 10 phi-steps per window)."""
    every: int = 4
    """Update the weighting model every this many LM steps (the stage length)."""
    temperature: float = 1.0
    """Softmax temperature of the in-batch weights."""
    target_batch: int = 8
    """Reference (validation) blocks per hypergradient."""
    ref_fraction: float = 0.05
    """Share of the training texts held back as the reference slice when none is given."""


@dataclass(frozen=True)
class D3Params:
    """D3-lite ordering (Xu et al., ICML 2026)."""

    units: int = 8
    """Training units per window (k-means clusters of the blocks' token histograms)."""
    probe: int = 4
    """Probe blocks per unit for the influence estimates."""
    kmeans_iters: int = 10
    """Lloyd iterations of the unit clustering."""


STRATEGIES: dict[str, type] = {
    "uniform": UniformParams,
    "loss_reweight": LossReweightParams,
    "rho_loss": RhoLossParams,
    "greats": GreatsParams,
    "dwm": DwmParams,
    "d3": D3Params,
}
"""Strategy name -> its params dataclass (the names accepted by ``TrainConfig.selection``)."""

_POSITIVE_INT = {"pool", "layers", "target_batch", "target_every", "hidden", "every", "units", "probe", "kmeans_iters"}


def _convert(raw: str, kind: Any) -> Any:
    kind = kind if isinstance(kind, str) else kind.__name__
    if kind == "bool":
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"not a bool: {raw!r}")
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    return raw


def parse_params(selection: str, text: str = "") -> Any:
    """Parse ``"key=value,..."`` into the params dataclass of strategy ``selection``.

    Args:
        selection: a key of ``STRATEGIES``.
        text: comma-separated ``key=value`` pairs; "" = all defaults. Values are converted to the
            field's type (bools accept true/false/1/0).

    Returns:
        The frozen params dataclass instance.

    Raises:
        ValueError: unknown strategy, unknown key, unparsable or out-of-range value (all problems in one
            message).
    """
    if selection not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {selection!r}; choose from {', '.join(STRATEGIES)}")
    cls = STRATEGIES[selection]
    kinds = {f.name: f.type for f in fields(cls)}
    values: dict[str, Any] = {}
    issues: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in kinds:
            issues.append(f"{selection}: unknown or malformed setting {part!r} (known: {', '.join(kinds) or 'none'})")
            continue
        try:
            values[key] = _convert(raw.strip(), kinds[key])
        except ValueError as e:
            issues.append(f"{selection}.{key}: {e}")
    params = cls(**values) if not issues else None
    if params is not None:
        for f in fields(cls):
            v = getattr(params, f.name)
            if f.name in _POSITIVE_INT and v < 1:
                issues.append(f"{selection}.{f.name} must be >= 1, got {v}")
            if f.name == "il_steps" and v < 0:
                issues.append(f"{selection}.il_steps must be >= 0, got {v}")
            if f.name == "ref_fraction" and not 0 < v < 1:
                issues.append(f"{selection}.ref_fraction must be in (0, 1), got {v}")
            if f.name in ("temperature", "lr", "cap") and not (math.isfinite(v) and v > 0):
                issues.append(f"{selection}.{f.name} must be a finite number > 0, got {v}")
            if f.name == "rule" and v not in ("linupper", "quadratic", "extremes"):
                issues.append(f"{selection}.rule must be linupper, quadratic or extremes, got {v!r}")
    if issues:
        raise ValueError("; ".join(issues))
    return params
