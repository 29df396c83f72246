"""When a fine-tune starts: the ``[schedule] policy`` decision, Dagster-free.

``should_finetune`` is the one rule the sensors (``new_window_sensor``, ``drift_sensor``) and the
``periodic_finetune`` schedule follow; they only gather its inputs from the Dagster event log.

Policies (``orchestration.config.settings.ScheduleConfig.policy``):

``every_window`` (default, the loop as it was): every approved window starts a fine-tune, a confirmed drift
    alarm adds one, the schedule adds one, and ``[drift] max_windows_without_retrain`` bounds staleness.
``cadence``: only the ``finetune_cron`` schedule starts fine-tunes (on every window pending by then).
``drift``: a confirmed drift alarm, the staleness bound (hours since the last fine-tune, or windows profiled
    without one) or the schedule, whichever comes first; new windows only accumulate. A drift fine-tune always
    trains on something: the pending windows, or, when there are none, a *refresh* update on the drifted
    windows plus replay (``TriggerDecision.refresh``, run tag ``REFRESH_WINDOWS_TAG``; the snapshot step,
    ``recipe_step.snapshot_for_update``, builds the refresh snapshot when the run finds nothing pending).

Triggers and the run-tag value each one writes (``streamtune/trigger``; the tag values predate this module and
are kept, so ``train.updates.trigger`` keeps its vocabulary): window = ``new_data``, cadence = ``schedule``,
drift = ``drift``, staleness = ``staleness``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

POLICIES = ("every_window", "cadence", "drift")
"""Values of ``[schedule] policy``."""
TRIGGERS = ("window", "cadence", "drift", "staleness")
"""What can start a fine-tune."""
RUN_TAG_VALUES = {"window": "new_data", "cadence": "schedule", "drift": "drift", "staleness": "staleness"}
"""Trigger -> value of the ``streamtune/trigger`` run tag."""
REFRESH_WINDOWS_TAG = "streamtune/refresh_windows"
"""Run tag of a refresh request (``TriggerDecision.refresh``): the drifted windows, comma-separated; the
``training_snapshot`` step (``recipe_step.snapshot_for_update``) retrains them when nothing is pending."""


@dataclass(frozen=True)
class TriggerDecision:
    """Whether to start a fine-tune now, and why."""

    run: bool
    reason: str
    """One line with the numbers that decided it."""
    trigger: str
    """One of ``TRIGGERS`` when ``run``; "" otherwise."""
    windows: tuple[str, ...] = ()
    """What the update trains on: the pending windows, or the drifted windows of a refresh update."""
    refresh: bool = False
    """True: no window was pending, so the update refreshes the model on ``windows`` (drifted) plus replay."""

    @property
    def tag(self) -> str:
        """The ``streamtune/trigger`` run-tag value ("" when no run)."""
        return RUN_TAG_VALUES.get(self.trigger, "")


def should_finetune(
    policy: str,
    pending_windows: Sequence[str],
    drift_alarm: bool,
    hours_since_update: float,
    staleness_bound_h: float,
    schedule_fired: bool,
    *,
    new_window: bool = False,
    drifted_windows: Sequence[str] = (),
    staleness_bound_windows: int = 0,
) -> TriggerDecision:
    """Decide whether one event starts a fine-tune under ``policy``.

    Order when several hold at once: drift alarm, new window, staleness, schedule (the first that applies wins).

    Args:
        policy: one of ``POLICIES``.
        pending_windows: approved windows not trained on yet, oldest first.
        drift_alarm: a drift alarm was confirmed (and is outside the drift sensor's cooldown).
        hours_since_update: hours since the last fine-tune started (``math.inf`` when there was none).
        staleness_bound_h: under ``drift``, a fine-tune is due once ``hours_since_update >= staleness_bound_h``;
            0 = no time bound.
        schedule_fired: the ``periodic_finetune`` cron fired.
        new_window: a window was just approved.
        drifted_windows: the windows whose profile raised ``drift_alarm``.
        staleness_bound_windows: ``[drift] max_windows_without_retrain`` = K; a fine-tune is due once K windows
            are pending (``every_window`` and ``drift``); 0 = no window bound.

    Returns:
        ``TriggerDecision``; ``run=False`` carries the reason nothing starts.

    Raises:
        ValueError: an unknown policy, or a negative bound or ``hours_since_update``.
    """
    if policy not in POLICIES:
        raise ValueError(f"[schedule] policy must be one of {list(POLICIES)}, got {policy!r}")
    if staleness_bound_h < 0 or staleness_bound_windows < 0 or hours_since_update < 0:
        raise ValueError("staleness bounds and hours_since_update must be >= 0")
    pending = tuple(pending_windows)
    if policy == "cadence":
        if schedule_fired:
            return _on_pending("cadence", pending, "schedule fired")
        return TriggerDecision(False, "policy cadence: only the finetune_cron schedule starts fine-tunes", "")
    if drift_alarm:
        if pending or policy == "every_window":  # every_window: as before, the run skips if nothing is pending
            return TriggerDecision(True, f"drift alarm; {len(pending)} pending window(s)", "drift", pending)
        drifted = tuple(drifted_windows)
        if not drifted:
            return TriggerDecision(False, "drift alarm but no pending and no drifted window to refresh on", "")
        return TriggerDecision(True, f"drift alarm, nothing pending: refresh on {list(drifted)} + replay", "drift",
                               drifted, refresh=True)  # fmt: skip
    if new_window and policy == "every_window":
        return _on_pending("window", pending, "new window approved")
    stale = _staleness(policy, len(pending), hours_since_update, staleness_bound_h, staleness_bound_windows)
    if stale:
        return _on_pending("staleness", pending, stale)
    if schedule_fired:
        return _on_pending("cadence", pending, "schedule fired")
    why = "no drift alarm" if policy == "drift" else "no new window, drift alarm or schedule"
    return TriggerDecision(False, f"policy {policy}: {why}; staleness bound not reached", "")


def _staleness(policy: str, n_pending: int, hours: float, bound_h: float, bound_windows: int) -> str:
    """Why the staleness bound is reached ("" if it is not): K pending windows (every_window and drift), or
    ``bound_h`` hours since the last fine-tune (drift only)."""
    if bound_windows and n_pending >= bound_windows:
        return f"{n_pending} window(s) without a fine-tune >= max_windows_without_retrain {bound_windows}"
    if policy == "drift" and bound_h and hours >= bound_h:
        since = "never fine-tuned" if math.isinf(hours) else f"{hours:.1f} h since the last fine-tune"
        return f"{since} >= staleness_bound_h {bound_h:g}"
    return ""


def _on_pending(trigger: str, pending: tuple[str, ...], why: str) -> TriggerDecision:
    if not pending:
        return TriggerDecision(False, f"{why}, but no window is pending", "")
    return TriggerDecision(True, f"{why}; {len(pending)} pending window(s)", trigger, pending)


def new_window_sensor_enabled(policy: str, retrain_on: str = "new_window") -> bool:
    """Whether ``new_window_sensor`` requests fine-tunes: only under ``every_window`` (and the older
    ``[drift] retrain_on = "new_window"``, which ``retrain_on = "drift"`` still turns off)."""
    if policy not in POLICIES:
        raise ValueError(f"[schedule] policy must be one of {list(POLICIES)}, got {policy!r}")
    return policy == "every_window" and retrain_on == "new_window"
