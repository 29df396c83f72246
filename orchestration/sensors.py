"""Sensors: what runs when a file lands, and when new approved windows exist.

``landing_sensor`` turns each closed landing file into one dynamic partition and
one ingest run (run key = window key, so a window is ingested exactly once). Its
cursor is the last (mtime_ns, name) handed out, so it only moves forward. It
never opens DuckDB.

``new_window_sensor`` watches ``approved_window`` materializations in the
Dagster event log (not DuckDB) and requests a fine-tune run for each new one;
the run tag ``streamtune/trigger=new_data`` says why it ran.
"""


import dagster as dg

from assets.ingest import LANDING_FILE_TAG
from assets.train import TRIGGER_TAG
from orchestration.jobs import finetune_job, ingest_job
from orchestration.landing import closed_files_after, parse_cursor, window_key_for
from orchestration.partitions import WINDOWS_PARTITION, windows_partitions
from orchestration.resources import StreamtuneResource


def build_landing_sensor(interval_s: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="landing_sensor",
        job=ingest_job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One closed file in the landing folder = one window partition + one ingest run.",
    )
    def landing_sensor(context: dg.SensorEvaluationContext, streamtune: StreamtuneResource) -> dg.SensorResult:
        landing = streamtune.settings().paths.landing
        files = closed_files_after(landing, parse_cursor(context.cursor))
        if not files:
            return dg.SensorResult(skip_reason=f"no new closed files in {landing}")
        known = set(context.instance.get_dynamic_partitions(WINDOWS_PARTITION))
        new_keys, requests = [], []
        for f in files:
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
            cursor=files[-1].cursor(),
        )

    return landing_sensor


def build_new_window_sensor(interval_s: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_window_sensor",
        job=finetune_job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a fine-tune when a window passes its quality gate (approved_window materialized).",
    )
    def new_window_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        after = int(context.cursor) if context.cursor else None
        result = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("approved_window"), after_storage_id=after),
            limit=100,
            ascending=True,
        )
        if not result.records:
            return dg.SensorResult(skip_reason="no newly approved windows")
        requests = [
            dg.RunRequest(
                run_key=f"new-window-{r.storage_id}",
                tags={TRIGGER_TAG: "new_data", "streamtune/window": r.partition_key or ""},
            )
            for r in result.records
        ]
        return dg.SensorResult(run_requests=requests, cursor=str(result.records[-1].storage_id))

    return new_window_sensor
