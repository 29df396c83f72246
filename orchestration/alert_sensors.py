"""Alert sensors: the events an operator must hear about, sent by ``orchestration.pipeline.alerts``.

``run_failure_alert`` (a ``@run_failure_sensor``): every failed run of this code location, with its failed
steps and the error's class name (never its message). A ``finetune`` run failed only by the blocking promotion
gate is left to ``gate_alert_sensor``.

``gate_alert_sensor`` reads the Dagster event log (never DuckDB or MLflow), like ``drift_sensor``:
``model_update`` materializations with ``promoted = false`` (gate rejection, with the gate's numbers),
``champion_model`` materializations whose challenger waits for approval, and ``window_profile``
materializations that confirm drift. Cursor: JSON ``{asset name: last storage id seen}``; on the first tick
it reads from the start of the event log, at most 100 events per asset and tick.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from orchestration.config.settings import Settings
from orchestration.pipeline.alerts import (
    Alert,
    approval_alert,
    drift_alert,
    gate_rejection_alert,
    run_failure_alert,
    send_alert,
)
from orchestration.tags import WINDOW_TAG

GATE_STEP = "model_update"
"""Prefix of the step keys of ``model_update`` and its blocking check ``challenger_beats_champion`` (the
promotion gate; a failed blocking check is a ``DagsterAssetCheckFailedError`` of the check's step)."""


def build_run_failure_alert_sensor(settings: Settings, interval_s: int = 10) -> dg.SensorDefinition:
    """``run_failure_alert``: one alert per failed run (``[alerts] run_failure``; running by default)."""
    cfg, home = settings.alerts, settings.home

    @dg.run_failure_sensor(
        name="run_failure_alert",
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING if cfg.run_failure else dg.DefaultSensorStatus.STOPPED,
        description="Sends an alert ([alerts] webhook_url and logs/alerts.jsonl) when a run fails: job, run id, "
        "failed steps and the error class (no message, no data).",
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
        run = context.dagster_run
        failures = context.get_step_failure_events()
        steps = [e.step_key for e in failures if e.step_key]
        errors = [_root_error(e.event_specific_data.error) for e in failures if e.event_specific_data.error]
        gate = [s.startswith(GATE_STEP) and e == "DagsterAssetCheckFailedError" for s, e in zip(steps, errors)]
        if gate and all(gate):
            return dg.SkipReason(f"run {run.run_id} failed by the promotion gate: gate_alert_sensor alerts on it")
        error = errors[0] if errors else (context.failure_event.event_type_value or "failure")
        alert = run_failure_alert(run.job_name, run.run_id, steps=steps, error=error, window=run.tags.get(WINDOW_TAG))
        delivery = send_alert(alert, cfg, Path(home))
        context.log.info(f"alert for run {run.run_id}: logged, webhook status {delivery.status} {delivery.error or ''}")
        return None

    return run_failure_alert_sensor


def _root_error(error) -> str:
    """The class name of the innermost cause of a step's ``SerializableErrorInfo`` (the user's exception, not
    Dagster's ``DagsterExecutionStepExecutionError`` wrapper)."""
    while error.cause is not None:
        error = error.cause
    return error.cls_name or "error"


def _value(metadata: dict, key: str, default=None):
    v = metadata.get(key)
    return default if v is None else getattr(v, "value", v)


def _gate_alert(r: dg.EventLogRecord) -> Alert | None:
    md = r.asset_materialization.metadata
    if _value(md, "promoted", True):
        return None
    return gate_rejection_alert(
        str(_value(md, "version", "")),
        list(_value(md, "windows", []) or []),
        dict(_value(md, "gate", {}) or {}),
        r.run_id,
        parent=_value(md, "parent_version"),
    )


def _approval_alert(r: dg.EventLogRecord) -> Alert | None:
    md = r.asset_materialization.metadata
    version = str(_value(md, "challenger_version", ""))
    pending = [v.removeprefix("v") for v in str(_value(md, "pending_approval", "none")).split(", ")]
    if _value(md, "promoted", True) or version not in pending:
        return None
    return approval_alert(version, _value(md, "champion_version"), pending, r.run_id)


def _drift_alert(r: dg.EventLogRecord) -> Alert | None:
    md = r.asset_materialization.metadata
    if not _value(md, "drift", False):
        return None
    confirmed = list(_value(md, "confirmed", []) or [])
    values = {s: float(_value(md, s, float("nan"))) for s in confirmed}
    p_values = {s: float(_value(md, f"{s}_p")) for s in confirmed if _value(md, f"{s}_p") is not None}
    return drift_alert(r.partition_key or "", values, p_values, r.run_id)


WATCHED: dict[str, tuple[str, Callable[[dg.EventLogRecord], Alert | None]]] = {
    "model_update": ("gate_rejection", _gate_alert),
    "champion_model": ("approval", _approval_alert),
    "window_profile": ("drift", _drift_alert),
}
"""Asset -> (the ``[alerts]`` switch, the alert of one materialization or None)."""


def build_gate_alert_sensor(settings: Settings, interval_s: int = 10) -> dg.SensorDefinition:
    """``gate_alert_sensor``: alerts on gate rejections, challengers waiting for approval and confirmed drift,
    read from materialization metadata in the event log; the switches of ``[alerts]`` choose which."""
    cfg, home = settings.alerts, Path(settings.home)
    watched = {asset: build for asset, (switch, build) in WATCHED.items() if getattr(cfg, switch)}

    @dg.sensor(
        name="gate_alert_sensor",
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends an alert ([alerts] webhook_url and logs/alerts.jsonl) when the promotion gate rejects a "
        "challenger, a challenger waits for approval, or a window profile confirms drift.",
    )
    def gate_alert_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        sent = []
        for asset, build in watched.items():
            records = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), after_storage_id=cursor.get(asset)),
                limit=100,
                ascending=True,
            ).records
            for r in records:
                alert = build(r)
                if alert is not None:
                    delivery = send_alert(alert, cfg, home)
                    sent.append(f"{alert.kind} ({delivery.status or delivery.error or 'log only'})")
                cursor[asset] = r.storage_id
        skip = None if sent else "no gate rejection, pending approval or confirmed drift since the last tick"
        if sent:
            context.log.info("alerts sent: " + ", ".join(sent))
        return dg.SensorResult(cursor=json.dumps(cursor), skip_reason=skip)

    return gate_alert_sensor
