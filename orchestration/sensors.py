"""Sensors: what runs when a file lands, and when new approved windows exist.

``landing_sensor`` turns each closed, settled landing file into one dynamic partition and
one ingest run (run key = window key, so a window is ingested exactly once). Its
cursor is the last (mtime_ns, name) handed out, so it only moves forward, plus the files
still settling (size and mtime must hold still across two ticks). Symbolic links are
refused (logged) unless ``landing_symlinks = "inside"``. It never opens DuckDB.

``new_window_sensor`` watches ``approved_window`` materializations in the
Dagster event log (not DuckDB) and requests a fine-tune run for each new one (only under
``[schedule] policy = "every_window"``, ``orchestration.pipeline.trigger``);
the run tag ``streamtune/trigger=new_data`` says why it ran.

``profile_sensor`` requests the ``monitor_window`` job (``window_profile``) for each newly approved
window, off the ingest job's critical path.

``drift_sensor`` watches ``window_profile`` materializations (event log metadata, never DuckDB): it
requests a ``drift_report`` redraw for each batch of new profiles and, when a profile confirms
drift, the ``finetune`` job with ``streamtune/trigger=drift`` and the confirmed statistics as tags.
A cooldown (``drift.cooldown_s``, measured between the profiles' event timestamps) keeps alarms in
quick succession from starting a retrain storm; the periodic schedule and ``new_window_sensor`` are
independent of it. With ``drift.max_windows_without_retrain`` = K it also bounds staleness: after K
profiled windows without a fine-tune it asks for one with ``streamtune/trigger=staleness``.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from orchestration.jobs import drift_report_job, finetune_job, ingest_job, monitor_job
from orchestration.partitions import WINDOWS_PARTITION, windows_partitions
from orchestration.pipeline.trigger import should_finetune
from orchestration.resources import StreamtuneResource, clear_run_outputs, prune_run_outputs
from orchestration.sources.landing import LandingScanner, LandingTick, prune_archive, window_key_for
from orchestration.tags import DRIFT_TAG_PREFIX, LANDING_FILE_TAG, TRIGGER_TAG, WINDOW_TAG


def build_landing_sensor(interval_s: int) -> dg.SensorDefinition:
    """The landing sensor: each settled closed file in the landing folder becomes one dynamic partition and one
    ingest run (``orchestration.sources.landing.LandingScanner``: cursor = last file handed out + files still
    settling + entries already reported). Refused entries (symbolic links, FIFOs), files changed after their
    window was handed out and files landed with an old mtime are logged once, as warnings, and never block
    later files."""

    @dg.sensor(
        name="landing_sensor",
        job=ingest_job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One closed, settled file in the landing folder = one window partition + one ingest run.",
    )
    def landing_sensor(context: dg.SensorEvaluationContext, streamtune: StreamtuneResource) -> dg.SensorResult:
        settings = streamtune.settings()
        landing = settings.paths.landing
        pruned = prune_archive(settings.paths.landing_archive, settings.landing_archive_days)
        if pruned:
            context.log.info(f"landing_archive_days = {settings.landing_archive_days:g}: deleted archived {pruned}")
        known = set(context.instance.get_dynamic_partitions(WINDOWS_PARTITION))
        tick = LandingScanner.parse(context.cursor).tick(
            landing, known, symlinks=settings.landing_symlinks, settle_s=settings.landing_settle_s
        )
        for line in tick.reports:
            context.log.warning(line)
        if not tick.ready:
            return dg.SensorResult(skip_reason=_landing_skip_reason(landing, tick), cursor=tick.cursor)
        new_keys, requests = [], []
        for f in tick.ready:
            key = window_key_for(f.name)
            if key not in known and key not in new_keys:
                new_keys.append(key)
            requests.append(
                dg.RunRequest(
                    run_key=key,
                    partition_key=key,
                    tags={LANDING_FILE_TAG: f.name, TRIGGER_TAG: "landing"},
                )
            )
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[windows_partitions.build_add_request(new_keys)] if new_keys else [],
            cursor=tick.cursor,
        )

    return landing_sensor


def build_run_outputs_sensor(retention_days: float, interval_s: int = 30) -> dg.SensorDefinition:
    """``run_outputs_cleanup``: when a run succeeds, delete its ``RunScopedIOManager`` outputs and those of the
    runs it re-executed (``orchestration.resources.clear_run_outputs``), then those of runs that ended over
    ``retention_days`` days ago (``prune_run_outputs``; ``run_outputs_retention_days``, 0 = no age limit)."""

    @dg.run_status_sensor(
        name="run_outputs_cleanup",
        run_status=dg.DagsterRunStatus.SUCCESS,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Deletes the per-run outputs (run_io_manager) of each successful run and of old ended runs.",
    )
    def run_outputs_cleanup(context: dg.RunStatusSensorContext) -> None:
        cleared = clear_run_outputs(context.instance, context.dagster_run.run_id)
        pruned = prune_run_outputs(context.instance, retention_days)
        if cleared or pruned:
            context.log.info(f"deleted the stored outputs of runs {cleared} (succeeded) and {pruned} (expired)")

    return run_outputs_cleanup


def _landing_skip_reason(landing, tick: LandingTick) -> str:
    """Why a landing-sensor tick requested nothing: files still settling, and this tick's reports."""
    parts = [f"no new settled closed files in {landing}"]
    if tick.settling:
        parts.append(f"still changing or just landed (handed out once size and mtime hold still): {tick.settling}")
    return "; ".join(parts + tick.reports)


def _approved_since(context: dg.SensorEvaluationContext) -> list:
    """``approved_window`` materialization records after the sensor's cursor (a storage id), oldest first, at
    most 100 per tick."""
    after = int(context.cursor) if context.cursor else None
    return list(
        context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("approved_window"), after_storage_id=after),
            limit=100,
            ascending=True,
        ).records
    )


def _approved_window_sensor(
    name: str,
    job,
    interval_s: int,
    description: str,
    enabled: bool,
    disabled_reason: str,
    request: Callable[[dg.EventLogRecord], dg.RunRequest | None],
) -> dg.SensorDefinition:
    """A sensor that turns each newly approved window into ``request(record)`` (``None``: no run for it).
    ``enabled=False``: the cursor moves, but nothing is requested (skip reason ``disabled_reason``)."""

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        records = _approved_since(context)
        if not records:
            return dg.SensorResult(skip_reason="no newly approved windows")
        cursor = str(records[-1].storage_id)
        if not enabled:
            return dg.SensorResult(skip_reason=disabled_reason, cursor=cursor)
        requests = [req for req in map(request, records) if req is not None]
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return _sensor


def _new_window_request(r: dg.EventLogRecord) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"new-window-{r.storage_id}",
        tags={TRIGGER_TAG: "new_data", WINDOW_TAG: r.partition_key or ""},
    )


def _profile_request(r: dg.EventLogRecord) -> dg.RunRequest | None:
    if not r.partition_key:
        return None
    return dg.RunRequest(
        run_key=f"profile-{r.storage_id}",
        partition_key=r.partition_key,
        tags={TRIGGER_TAG: "monitor", WINDOW_TAG: r.partition_key},
    )


def build_new_window_sensor(interval_s: int, enabled: bool = True) -> dg.SensorDefinition:
    """``enabled=False`` (``[schedule] policy`` other than ``every_window``, or ``[drift] retrain_on = "drift"``;
    ``orchestration.pipeline.trigger.new_window_sensor_enabled``): the cursor moves, but nothing is requested."""
    description = "Requests a fine-tune when a window passes its quality gate (approved_window materialized)."
    disabled = "[schedule] policy (or retrain_on = drift): new windows wait for drift, staleness or the schedule"
    return _approved_window_sensor(
        "new_window_sensor", finetune_job, interval_s, description, enabled, disabled, _new_window_request
    )


def build_profile_sensor(interval_s: int, enabled: bool = True) -> dg.SensorDefinition:
    description = "Requests a drift profile (window_profile) for each window that passes its quality gate."
    disabled = "drift monitor disabled ([drift] enabled = false)"
    return _approved_window_sensor(
        "profile_sensor", monitor_job, interval_s, description, enabled, disabled, _profile_request
    )


def _meta_value(metadata: dict, key: str, default=None):
    v = metadata.get(key)
    if v is None:
        return default
    return getattr(v, "value", v)


_NEVER = float("-inf")


@dataclass
class _DriftCursor:
    """The drift sensor's state between ticks (JSON in the cursor; see ``build_drift_sensor``)."""

    after: int | None = None
    """Storage id of the last ``window_profile`` materialization seen."""
    last_request_ts: float = _NEVER
    """Event time of the profile that made the last drift request (the cooldown starts there)."""
    since_retrain: list[str] = field(default_factory=list)
    """Windows profiled since the last fine-tune (request or run from elsewhere)."""
    finetune_ts: float = _NEVER
    """Creation time of the newest ``finetune`` run seen that this sensor did not request."""
    staleness_ts: float = _NEVER
    """Event time of the profile that made the last staleness request (``[schedule] staleness_bound_h``)."""
    origin_ts: float = _NEVER
    """Event time of the first profile this sensor saw: before any fine-tune, ``staleness_bound_h`` counts from
    there (a home never fine-tuned is not infinitely stale at its first window)."""

    @classmethod
    def parse(cls, cursor: str | None) -> "_DriftCursor":
        state = json.loads(cursor) if cursor else {}
        return cls(
            after=state.get("after"),
            last_request_ts=float(state.get("last_request_ts", _NEVER)),
            since_retrain=list(state.get("since_retrain", [])),
            finetune_ts=float(state.get("finetune_ts", _NEVER)),
            staleness_ts=float(state.get("staleness_ts", _NEVER)),
            origin_ts=float(state.get("origin_ts", _NEVER)),
        )

    def dump(self) -> str:
        cursor: dict = {"after": self.after}
        if self.last_request_ts != _NEVER:
            cursor["last_request_ts"] = self.last_request_ts
        cursor["since_retrain"] = self.since_retrain[-200:]  # bounded cursor; K > 200 is not a staleness bound
        if self.finetune_ts != _NEVER:
            cursor["finetune_ts"] = self.finetune_ts
        if self.staleness_ts != _NEVER:
            cursor["staleness_ts"] = self.staleness_ts
        if self.origin_ts != _NEVER:
            cursor["origin_ts"] = self.origin_ts
        return json.dumps(cursor)


def _note_other_finetunes(instance: dg.DagsterInstance, state: _DriftCursor) -> None:
    """A fine-tune from elsewhere (schedule, new_window_sensor, CLI) since the last tick resets the staleness
    count: windows profiled before it was created are covered by it (the newest 20 finetune runs are looked at)."""
    others = [
        rec
        for rec in instance.get_run_records(dg.RunsFilter(job_name=finetune_job.name), limit=20)
        if rec.dagster_run.tags.get(TRIGGER_TAG) not in {"drift", "staleness"}
    ]
    if others and others[0].create_timestamp.timestamp() > state.finetune_ts:
        state.finetune_ts = others[0].create_timestamp.timestamp()
        state.since_retrain = []


def _drift_tags(metadata: dict, window: str, since: int) -> dict[str, str]:
    """Run tags of a drift fine-tune: the confirmed statistics with their values and p-values."""
    confirmed = list(_meta_value(metadata, "confirmed", []) or [])
    tags = {TRIGGER_TAG: "drift", WINDOW_TAG: window, "streamtune/drift_stats": ",".join(confirmed)}
    for stat in confirmed:
        tags[f"{DRIFT_TAG_PREFIX}{stat}"] = f"{float(_meta_value(metadata, stat, float('nan'))):.6g}"
        p = _meta_value(metadata, f"{stat}_p")
        if p is not None:
            tags[f"{DRIFT_TAG_PREFIX}{stat}_p"] = f"{float(p):.4g}"
    tags["streamtune/windows_since_retrain"] = str(since)
    return tags


def _profile_requests(
    records: list, state: _DriftCursor, cooldown_s: float, max_windows_without_retrain: int, schedule=None
) -> tuple[list[dg.RunRequest], list[str]]:
    """Fine-tune requests for new ``window_profile`` records, oldest first (``state`` updated in place), as
    ``orchestration.pipeline.trigger.should_finetune`` decides under ``schedule`` (a ``ScheduleConfig``; None =
    ``every_window``): a confirmed drift outside the cooldown, or the staleness bound (K windows profiled without
    a fine-tune; under ``drift`` also ``staleness_bound_h`` hours). Returns ``(requests, windows whose drift the
    cooldown suppressed)``."""
    policy = schedule.policy if schedule else "every_window"
    bound_h = schedule.staleness_bound_h if schedule else 0.0
    requests, suppressed = [], []
    for r in records:
        md = r.asset_materialization.metadata if r.asset_materialization else {}
        window = r.partition_key or ""
        if window not in state.since_retrain and r.timestamp > state.finetune_ts:
            state.since_retrain.append(window)
        drift = bool(_meta_value(md, "drift", False))
        cooling = r.timestamp - state.last_request_ts < cooldown_s
        if drift and cooling:
            suppressed.append(window)
        if state.origin_ts == _NEVER:
            state.origin_ts = r.timestamp
        last = max(state.finetune_ts, state.last_request_ts, state.staleness_ts, state.origin_ts)
        hours = (r.timestamp - last) / 3600
        decision = should_finetune(
            policy, state.since_retrain, drift and not cooling, max(hours, 0.0), bound_h, False,
            drifted_windows=[window], staleness_bound_windows=max_windows_without_retrain,
        )  # fmt: skip
        if not decision.run:
            continue
        tags = {TRIGGER_TAG: decision.tag, WINDOW_TAG: window, "streamtune/trigger_reason": decision.reason}
        if decision.trigger == "drift":
            tags.update(_drift_tags(md, window, len(state.since_retrain)))
            if decision.refresh:
                tags["streamtune/refresh_windows"] = ",".join(decision.windows)
        else:
            tags["streamtune/windows_since_retrain"] = str(len(state.since_retrain))
        key = f"{decision.trigger}-{r.storage_id}"
        requests.append(dg.RunRequest(run_key=key, job_name=finetune_job.name, tags=tags))
        if decision.trigger == "drift":  # the cooldown is measured between drift requests only
            state.last_request_ts = r.timestamp
        else:
            state.staleness_ts = r.timestamp
        state.since_retrain = []
    return requests, suppressed


def build_drift_sensor(
    interval_s: int, cooldown_s: float, max_windows_without_retrain: int = 0, schedule=None
) -> dg.SensorDefinition:
    """The drift sensor; cursor = JSON ``{"after": storage id, "last_request_ts": event time of the last drift
    request, "since_retrain": [windows profiled since the last request]}``.

    ``max_windows_without_retrain`` = K > 0 (``[drift] max_windows_without_retrain``) bounds staleness: once K
    distinct windows were profiled since this sensor's last fine-tune request, the K-th one requests a
    fine-tune tagged ``streamtune/trigger=staleness`` (no drift, or drift suppressed by the cooldown). A
    drift request resets the count too, and so does any other ``finetune`` run (not tagged drift/staleness:
    periodic schedule, ``new_window_sensor``, CLI) created since the last tick: windows profiled before its
    creation no longer count (cursor key ``finetune_ts`` = creation time of the newest such run seen; the
    newest 20 fine-tune runs are looked at). The cooldown is measured
    between *drift* requests only (it stops alarm storms; the staleness bound fires at most once per K
    windows by construction). ``schedule`` (``[schedule]``, None = ``every_window``) applies the trigger policy
    (``orchestration.pipeline.trigger``): under ``cadence`` no fine-tune is requested here.
    """

    @dg.sensor(
        name="drift_sensor",
        jobs=[finetune_job, drift_report_job],
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a fine-tune when a window profile confirms drift (cooldown against retrain storms), "
        "and redraws the drift report after new profiles.",
    )
    def drift_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        state = _DriftCursor.parse(context.cursor)
        result = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("window_profile"), after_storage_id=state.after),
            limit=100,
            ascending=True,
        )
        if not result.records:
            return dg.SensorResult(skip_reason="no new window profiles")
        _note_other_finetunes(context.instance, state)
        requests, suppressed = _profile_requests(
            result.records, state, cooldown_s, max_windows_without_retrain, schedule
        )
        if suppressed:
            context.log.info(f"drift in {suppressed} within the {cooldown_s:.0f} s cooldown: no extra fine-tune")
        state.after = result.records[-1].storage_id
        requests.append(
            dg.RunRequest(
                run_key=f"drift-report-{state.after}", job_name=drift_report_job.name, tags={TRIGGER_TAG: "monitor"}
            )
        )
        return dg.SensorResult(run_requests=requests, cursor=state.dump())

    return drift_sensor
