"""Alerts an operator needs without looking at the UI: a failed run, a challenger the promotion gate rejected,
a challenger waiting for approval, confirmed drift. Dagster-free: ``orchestration.alert_sensors`` finds the
events and calls ``send_alert``.

Every alert is appended to ``<home>/<[alerts] log_file>`` (JSON Lines) and, when ``[alerts] webhook_url`` is
set, POSTed there as Slack-compatible JSON: ``{"text": "<one line>", "streamtune": {"kind", "at", fields...}}``
(Slack and Mattermost incoming webhooks show ``text`` and ignore the other key; other receivers read the
structured part). No record text ever goes into an alert: the builders take window keys, model versions,
numbers and run ids only, and ``Alert`` refuses field values that are not numbers, booleans or short
identifier strings.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from orchestration.config.operations import AlertsConfig

_SAFE = re.compile(r"[A-Za-z0-9._:/=+-]{0,200}")
"""What a string field may hold: window keys, versions, run ids, job and step names, statistic names, URLs."""


@dataclass(frozen=True)
class Alert:
    """One alert: ``kind`` (``run_failure`` | ``gate_rejection`` | ``approval_pending`` | ``drift``), a one-line
    ``text`` built here from the fields, and the structured ``fields``.

    Raises:
        ValueError: a field value is not a finite number, a bool, None, a list of identifiers or a string of
            ``[A-Za-z0-9._:/=+-]`` up to 200 characters (record text cannot pass).
    """

    kind: str
    text: str
    fields: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.fields.items():
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, float) and not math.isfinite(v):
                    continue
                if v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and _SAFE.fullmatch(v)):
                    continue
                raise ValueError(f"alert field {key!r} must be an identifier or a number, got {v!r}")

    def payload(self, at: str | None = None) -> dict:
        """The webhook body: ``{"text": "[streamtune] <text>", "streamtune": {"kind", "at" (UTC ISO-8601), ...}}``."""
        at = at or datetime.now(UTC).isoformat(timespec="seconds")
        return {"text": f"[streamtune] {self.text}", "streamtune": {"kind": self.kind, "at": at, **self.fields}}


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def run_failure_alert(job: str, run_id: str, *, steps: list[str], error: str, window: str | None = None) -> Alert:
    """A run failed.

    Args:
        steps: the failed step keys (``model_update``, ``curated_window``, ...).
        error: the error's class name only (its message may quote data, so it stays in the Dagster UI).
        window: the run's window partition, if any.
    """
    where = f" (window {window})" if window else ""
    text = f"run {run_id[:8]} of job {job}{where} failed in {', '.join(steps) or 'the run'}: {error}"
    return Alert("run_failure", text, {"job": job, "run_id": run_id, "steps": steps, "error": error, "window": window})


def gate_rejection_alert(
    version: str, windows: list[str], numbers: dict[str, float], run_id: str | None, parent: str | None = None
) -> Alert:
    """The promotion gate rejected challenger ``version`` (``numbers``: the ``gate.*`` numbers as floats, e.g.
    ``champion_new_bpb``, ``challenger_new_bpb``, ``new_rel_change``, ``retention_rel_change``)."""
    n = numbers.get
    text = (
        f"gate rejected challenger v{version} (windows {', '.join(windows)}): new-window bits/byte "
        f"{_num(n('champion_new_bpb'))} -> {_num(n('challenger_new_bpb'))}, retention "
        f"{_num(n('champion_retention_bpb'))} -> {_num(n('challenger_retention_bpb'))}"
    )
    fields = {"version": version, "parent_version": parent, "windows": windows, "run_id": run_id}
    return Alert("gate_rejection", text, {**fields, **{k: float(v) for k, v in numbers.items()}})


def approval_alert(version: str, champion: str | None, pending: list[str], run_id: str | None) -> Alert:
    """Challenger ``version`` passed the gate and waits for ``streamtune promote`` / ``reject``."""
    text = (
        f"challenger v{version} passed the gate and waits for approval (champion v{champion}; pending: "
        f"{', '.join('v' + p for p in pending)}): streamtune promote --version {version}"
    )
    return Alert(
        "approval_pending", text, {"version": version, "champion": champion, "pending": pending, "run_id": run_id}
    )


def drift_alert(window: str, confirmed: dict[str, float], p_values: dict[str, float], run_id: str | None) -> Alert:
    """A window profile confirmed drift on the statistics ``confirmed`` (name -> value; p-values by name)."""
    stats = ", ".join(f"{k} {_num(v)} (p {_num(p_values.get(k))})" for k, v in confirmed.items())
    fields = {"window": window, "statistics": list(confirmed), "run_id": run_id}
    fields.update({k: float(v) for k, v in confirmed.items()})
    fields.update({f"{k}_p": float(v) for k, v in p_values.items() if k in confirmed})
    return Alert("drift", f"drift confirmed in window {window}: {stats}", fields)


@dataclass(frozen=True)
class Delivery:
    """What ``send_alert`` did: ``logged`` to the file, and the webhook's HTTP status (None: no webhook, or the
    POST failed, then ``error`` says why)."""

    logged: Path
    status: int | None = None
    error: str | None = None


def send_alert(alert: Alert, cfg: AlertsConfig, home: Path) -> Delivery:
    """Append ``alert`` to ``home / cfg.log_file`` and POST its payload to ``cfg.webhook_url`` (if set).

    The POST (``httpx``, JSON body, ``cfg.timeout_s``) never raises: a refused connection, a timeout or a
    non-2xx answer is recorded in the log line (``delivered: false``, ``error``) and returned.

    Returns:
        ``Delivery`` with the log path, the HTTP status and the error, if any.
    """
    payload = alert.payload()
    status, error = None, None
    if cfg.webhook_url:
        try:
            resp = httpx.post(cfg.webhook_url, json=payload, timeout=cfg.timeout_s)
            status = resp.status_code
            if not resp.is_success:
                error = f"HTTP {resp.status_code}"
        except httpx.HTTPError as e:
            error = type(e).__name__
    log = home / cfg.log_file
    log.parent.mkdir(parents=True, exist_ok=True)
    line = {**payload, "webhook": bool(cfg.webhook_url), "delivered": status is not None and error is None}
    if error:
        line["error"] = error
    with log.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")
    return Delivery(logged=log, status=status, error=error)


def gate_numbers(gate_tags: dict[str, str]) -> dict[str, float]:
    """The numbers among ``gate.*`` version tags (``GateDecision.tags()``), ``gate.`` removed: bits/byte, relative
    changes and thresholds as floats (``gate.decision`` and ``gate.reason`` left out)."""
    out = {}
    for key, value in gate_tags.items():
        if key.startswith("gate.") and key not in ("gate.decision", "gate.reason"):
            try:
                out[key.removeprefix("gate.")] = float(value)
            except ValueError:
                continue
    return out
