"""Promotion gate: promote a challenger only if it learns the new window without forgetting the old.

Both models are scored on the same held-out texts in bits per UTF-8 byte (``evaluate``). The gate asks
for a relative improvement on the new windows and bounds the relative worsening on retention text
(held-out rows of earlier windows), the forgetting check of continual pre-training (Ibrahim et al.
2024, arXiv 2403.08763, sec. 6: evaluate on both the new and the previous distributions). A third check
guards the general ability the base model had before the stream: on each named fixed evaluation set
(``GateConfig.eval_sets``, e.g. the held-out slice of the stand-in base's pretraining corpus) the
challenger may worsen by at most ``general_tolerance`` (relative), as continual pre-training work scores
general benchmarks beside the new domain (Gupta et al. 2023, arXiv 2308.04014; Ibrahim et al. 2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from training.config import GateConfig

__all__ = ["GateDecision", "decide_promotion"]


@dataclass(frozen=True)
class GateDecision:
    """Outcome of ``decide_promotion``."""

    promote: bool
    """True if the challenger should become champion."""
    reason: str
    """One readable line with the numbers behind the decision."""
    numbers: dict[str, float] = field(default_factory=dict)
    """Inputs, relative changes and thresholds (absent inputs are left out)."""

    def tags(self) -> dict[str, str]:
        """MLflow model-version tags: ``gate.decision`` (promoted|rejected), ``gate.reason``, ``gate.<number>``."""
        out = {"gate.decision": "promoted" if self.promote else "rejected", "gate.reason": self.reason}
        out.update({f"gate.{k}": f"{v:.6g}" for k, v in self.numbers.items()})
        return out


def _rel(new: float, old: float) -> float:
    """Relative change from ``old`` to ``new`` (0.05 = 5% higher)."""
    if old == 0:
        return 0.0 if new == old else math.copysign(math.inf, new - old)
    return (new - old) / old


def decide_promotion(
    champion_new_bpb: float | None,
    challenger_new_bpb: float,
    champion_retention_bpb: float | None,
    challenger_retention_bpb: float | None,
    cfg: GateConfig,
    general: Mapping[str, tuple[float, float]] | None = None,
) -> GateDecision:
    """Decide whether the challenger replaces the champion (all inputs in bits per byte, lower is better).

    Promote iff
      - there is no champion yet (``champion_new_bpb`` is None), or
      - new: ``challenger_new < champion_new`` when ``cfg.min_improvement == 0``, else
        ``challenger_new <= champion_new * (1 - cfg.min_improvement)``; and
      - retention (checked only when both retention numbers are given):
        ``challenger_ret <= champion_ret * (1 + cfg.retention_tolerance)``; and
      - general: for every ``name: (champion_bpb, challenger_bpb)`` of ``general``,
        ``challenger <= champion * (1 + cfg.general_tolerance)``.
    A non-finite challenger score (diverged training) is rejected.

    Returns:
        ``GateDecision`` whose reason reads e.g. ``"new-window bits/byte 3.910 -> 3.520 (-10.0%, needs
        < 0.0%): ok; retention 3.400 -> 3.430 (+0.9%, allowed <= +2.0%): ok"``.

    Raises:
        ValueError: if exactly one of the two retention numbers is None (they must come from the same
            texts).
    """
    if (champion_retention_bpb is None) != (challenger_retention_bpb is None):
        raise ValueError(
            "`champion_retention_bpb` and `challenger_retention_bpb` must both be given or both be None, got "
            f"{champion_retention_bpb!r} and {challenger_retention_bpb!r}"
        )
    numbers: dict[str, float] = {
        "challenger_new_bpb": challenger_new_bpb,
        "min_improvement": cfg.min_improvement,
        "retention_tolerance": cfg.retention_tolerance,
    }
    if not math.isfinite(challenger_new_bpb):
        return GateDecision(False, f"challenger new-window bits/byte is {challenger_new_bpb}: rejected", numbers)
    if champion_new_bpb is None:
        return GateDecision(True, "no champion yet", numbers)

    numbers["champion_new_bpb"] = champion_new_bpb
    new_rel = _rel(challenger_new_bpb, champion_new_bpb)
    numbers["new_rel_change"] = new_rel
    if cfg.min_improvement == 0:
        new_ok, need = challenger_new_bpb < champion_new_bpb, "< 0.0%"
    else:
        new_ok = challenger_new_bpb <= champion_new_bpb * (1 - cfg.min_improvement)
        need = f"<= {-cfg.min_improvement:+.1%}"
    parts = [
        f"new-window bits/byte {champion_new_bpb:.4g} -> {challenger_new_bpb:.4g} "
        f"({new_rel:+.1%}, needs {need}): {'ok' if new_ok else 'FAIL'}"
    ]
    ret_ok = True
    if champion_retention_bpb is not None and challenger_retention_bpb is not None:
        numbers["champion_retention_bpb"] = champion_retention_bpb
        numbers["challenger_retention_bpb"] = challenger_retention_bpb
        ret_rel = _rel(challenger_retention_bpb, champion_retention_bpb)
        numbers["retention_rel_change"] = ret_rel
        ret_ok = challenger_retention_bpb <= champion_retention_bpb * (1 + cfg.retention_tolerance)
        parts.append(
            f"retention {champion_retention_bpb:.4g} -> {challenger_retention_bpb:.4g} "
            f"({ret_rel:+.1%}, allowed <= {cfg.retention_tolerance:+.1%}): {'ok' if ret_ok else 'FAIL'}"
        )
    else:
        parts.append("retention: no data")
    general_ok = _general_check(general or {}, cfg, numbers, parts)
    return GateDecision(new_ok and ret_ok and general_ok, "; ".join(parts), numbers)


def _general_check(
    general: Mapping[str, tuple[float, float]], cfg: GateConfig, numbers: dict[str, float], parts: list[str]
) -> bool:
    """The general-set check of ``decide_promotion``; appends to ``numbers`` (``general.<name>.*``) and ``parts``."""
    ok = True
    if general:
        numbers["general_tolerance"] = cfg.general_tolerance
    for name, (champion, challenger) in sorted(general.items()):
        rel = _rel(challenger, champion)
        numbers.update(
            {
                f"general.{name}.champion_bpb": champion,
                f"general.{name}.challenger_bpb": challenger,
                f"general.{name}.rel_change": rel,
            }
        )
        set_ok = math.isfinite(challenger) and challenger <= champion * (1 + cfg.general_tolerance)
        ok = ok and set_ok
        parts.append(
            f"general set {name} {champion:.4g} -> {challenger:.4g} ({rel:+.1%}, allowed "
            f"<= {cfg.general_tolerance:+.1%}): {'ok' if set_ok else 'FAIL'}"
        )
    return ok
