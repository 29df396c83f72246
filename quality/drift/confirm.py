"""Second stage of the drift decision: is an exceedance also a change of the per-window series?

ADWIN: Bifet & Gavaldà, "Learning from time-changing data with adaptive windowing", SDM 2007 (the
``river`` implementation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from quality.drift.config import DriftConfig, DriftDecision, WindowProfile


def _adwin_flags(series: Sequence[float], delta: float) -> bool:
    """True if river's ADWIN flags a change when the last value of ``series`` arrives."""
    from river.drift import ADWIN

    det = ADWIN(delta=delta, clock=1, grace_period=2, min_window_length=1)
    flagged = False
    for v in series:
        det.update(float(v))
        flagged = det.drift_detected
    return flagged


def confirm_drift(
    profile: WindowProfile,
    history: Sequence[Mapping[str, float | None]],
    cfg: DriftConfig,
    n_reference_windows: int,
) -> DriftDecision:
    """Second stage: is an exceedance of this window also a change of the per-window series?

    Args:
        profile: the current window's profile (``exceeded`` filled in).
        history: ``WindowProfile.flat()`` rows of earlier windows, oldest first (missing statistics
            are None and skipped).
        cfg: ``adwin_delta`` and ``min_reference_windows``.
        n_reference_windows: how many earlier windows exist (no alarm below ``min_reference_windows``).

    Returns:
        ``DriftDecision``. A statistic is confirmed when it exceeded its calibrated threshold and
        either its threshold already includes the churn null (``profile.calibration[name] ==
        "permutation+churn"``: the value is unusual against the earlier windows' own variation), or
        ADWIN over ``history + [current]`` values flags the current window, or the current value is
        above every earlier value of the statistic (or there are fewer than 3 earlier values).
    """
    if n_reference_windows < cfg.min_reference_windows:
        return DriftDecision(
            False, [], [], f"only {n_reference_windows} earlier windows (< {cfg.min_reference_windows})"
        )
    confirmed, adwin = [], []
    for name, res in profile.stats.items():
        past = [float(h[name]) for h in history if h.get(name) is not None and math.isfinite(float(h[name]))]
        value = abs(res.value) if name in {"lm_bpb", "bytes_per_token", "quarantine_rate"} else res.value
        past_v = [abs(v) for v in past] if name in {"lm_bpb", "bytes_per_token", "quarantine_rate"} else past
        changed = _adwin_flags(past_v + [value], cfg.adwin_delta) if past_v else False
        if changed:
            adwin.append(name)
        churned = profile.calibration.get(name) == "permutation+churn"
        if name in profile.exceeded and (churned or changed or len(past_v) < 3 or value > max(past_v)):
            confirmed.append(name)
    if confirmed:
        parts = [f"{n}={profile.stats[n].value:.4g} (p={profile.stats[n].p_value:.3g})" for n in confirmed]
        reason = "drift: " + ", ".join(parts)
        if "emerging_z" in confirmed and profile.emerging:
            reason += "; emerging terms: " + ", ".join(t["term"] for t in profile.emerging[:5])
    elif profile.exceeded:
        reason = "exceeded but not a change of the series: " + ", ".join(profile.exceeded)
    else:
        reason = "no statistic exceeded its calibrated threshold"
    return DriftDecision(bool(confirmed), confirmed, adwin, reason)
