"""The operator's settings: ``[freshness]`` (how old ``approved_window`` and ``champion_model`` may get) and
``[alerts]`` (where alerts go). Dagster-free; ``assets.specs.freshness_policies`` turns the windows into
Dagster ``FreshnessPolicy.time_window`` policies and ``orchestration.pipeline.alerts`` sends the alerts.

Default freshness windows (a setting of 0 means "derived"), with C = ``landing_cadence_h`` (how often the
producer closes a window file) and S = the smallest interval of ``finetune_cron`` (the ``periodic_finetune``
schedule):

* ``approved_window``: a window is approved minutes after it lands, so the newest approval is normally less
  than C old. WARN after 1.5 C (the next window is half a period late), FAIL after 2 C (a whole window is
  missing: the producer, the landing folder or the quality gate stopped).
* ``champion_model``: a landed window is fine-tuned at the latest at the next schedule tick (sooner through
  ``new_window_sensor``), so a healthy champion is at most C + S old. Each update the gate rejects (or that
  waits for approval) adds one more C. WARN after 2 C + S (one update missing), FAIL after 3 C + S (two in a
  row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

MIN_WINDOW = timedelta(minutes=1)
"""Dagster's smallest freshness window."""


def _positive_or_zero(name: str, value: object, issues: list[str]) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        issues.append(f"`{name}` must be a finite number of hours >= 0 (0 = derived), got {value!r}")


@dataclass(frozen=True)
class FreshnessConfig:
    """``[freshness]``: Dagster freshness policies on ``approved_window`` and ``champion_model`` (hours)."""

    enabled: bool = True
    """False: no freshness policy on any asset."""
    landing_cadence_h: float = 24.0
    """How often a new window file is expected to land, in hours (the producer's cadence)."""
    windows_warn_after_h: float = 0.0
    """``approved_window`` WARN after this many hours without a newly approved window; 0 = 1.5 x cadence."""
    windows_fail_after_h: float = 0.0
    """``approved_window`` FAIL after this many hours; 0 = 2 x cadence."""
    champion_warn_after_h: float = 0.0
    """``champion_model`` WARN after this many hours without a champion update; 0 = 2 x cadence + schedule."""
    champion_fail_after_h: float = 0.0
    """``champion_model`` FAIL after this many hours; 0 = 3 x cadence + schedule interval."""

    def __post_init__(self) -> None:
        issues: list[str] = []
        if not isinstance(self.enabled, bool):
            issues.append(f"`enabled` must be true or false, got {self.enabled!r}")
        for name in ("windows_warn_after_h", "windows_fail_after_h", "champion_warn_after_h", "champion_fail_after_h"):
            _positive_or_zero(name, getattr(self, name), issues)
        _positive_or_zero("landing_cadence_h", self.landing_cadence_h, issues)
        if not issues and self.landing_cadence_h * 60 < 1:
            issues.append(f"`landing_cadence_h` must be at least 1 minute (1/60), got {self.landing_cadence_h!r}")
        for asset in ("windows", "champion"):
            warn, fail = getattr(self, f"{asset}_warn_after_h"), getattr(self, f"{asset}_fail_after_h")
            if not issues and warn and fail and warn >= fail:
                issues.append(f"`{asset}_warn_after_h` ({warn}) must be less than `{asset}_fail_after_h` ({fail})")
        if issues:
            raise ValueError("[freshness] " + "; ".join(issues))

    def windows(self, schedule_interval: timedelta) -> dict[str, tuple[timedelta, timedelta]]:
        """``{"approved_window": (warn, fail), "champion_model": (warn, fail)}``: the settings, or the derived
        defaults of the module docstring where a setting is 0.

        Args:
            schedule_interval: the smallest interval between two ticks of ``finetune_cron``.

        Raises:
            ValueError: a derived or explicit warn window is not shorter than its fail window (e.g. only
                ``windows_fail_after_h`` set, below the derived warn window), or one is under a minute.
        """
        cadence = timedelta(hours=self.landing_cadence_h)
        derived = {
            "approved_window": (1.5 * cadence, 2 * cadence),
            "champion_model": (2 * cadence + schedule_interval, 3 * cadence + schedule_interval),
        }
        given = {
            "approved_window": (self.windows_warn_after_h, self.windows_fail_after_h),
            "champion_model": (self.champion_warn_after_h, self.champion_fail_after_h),
        }
        out = {}
        for asset, (warn_h, fail_h) in given.items():
            warn = timedelta(hours=warn_h) if warn_h else derived[asset][0]
            fail = timedelta(hours=fail_h) if fail_h else derived[asset][1]
            if warn >= fail or warn < MIN_WINDOW:
                raise ValueError(
                    f"[freshness] {asset}: warn window {warn} must be at least 1 minute and shorter than the "
                    f"fail window {fail}; set both *_warn_after_h and *_fail_after_h"
                )
            out[asset] = (warn, fail)
        return out


@dataclass(frozen=True)
class AlertsConfig:
    """``[alerts]``: a run failure, a gate rejection, a challenger waiting for approval and confirmed drift are
    written to ``<home>/<log_file>`` (JSON Lines) and, when ``webhook_url`` is set, POSTed there as
    Slack-compatible JSON (``{"text": ..., "streamtune": {...}}``). Never record text: window keys, versions,
    numbers and run ids only."""

    webhook_url: str = ""
    """http(s) URL of an incoming webhook (Slack, Mattermost, Teams workflow, ...); "" = log file only."""
    timeout_s: float = 5.0
    """Seconds before a webhook POST is given up (the alert stays in the log file, marked undelivered)."""
    log_file: str = "logs/alerts.jsonl"
    """Alert log, relative to the home."""
    run_failure: bool = True
    """Alert when a run fails (except a finetune run the promotion gate failed: that is a gate rejection)."""
    gate_rejection: bool = True
    """Alert when the promotion gate rejects a challenger."""
    approval: bool = True
    """Alert when a gate-passing challenger waits for ``streamtune promote`` (``[gate] require_approval``)."""
    drift: bool = True
    """Alert when a window profile confirms drift."""

    def __post_init__(self) -> None:
        issues: list[str] = []
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            issues.append(f"`webhook_url` must be an http:// or https:// URL (or empty), got {self.webhook_url!r}")
        ok = isinstance(self.timeout_s, (int, float)) and not isinstance(self.timeout_s, bool)
        if not ok or not 0 < self.timeout_s <= 120:
            issues.append(f"`timeout_s` must be in (0, 120] seconds, got {self.timeout_s!r}")
        if not self.log_file or self.log_file.startswith("/") or ".." in self.log_file.split("/"):
            issues.append(f"`log_file` must be a path inside the home, got {self.log_file!r}")
        if issues:
            raise ValueError("[alerts] " + "; ".join(issues))
