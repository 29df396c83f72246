"""The streamtune code location: assets, checks, jobs, sensors, schedule and resources of one home.

The home comes from ``STREAMTUNE_HOME`` (default ``./.streamtune``); ``dagster dev``,
``dagster-daemon`` and ``streamtune run`` load this module.
"""

import dagster as dg

from assets.checks import WINDOW_CHECKS
from assets.curate import approved_window, curated_window
from assets.ingest import raw_window
from assets.monitor import MONITOR_ASSETS
from assets.specs import with_freshness
from assets.train import TRAINING_ASSETS, challenger_beats_champion, no_pending_approval
from orchestration.alert_sensors import build_gate_alert_sensor, build_run_failure_alert_sensor
from orchestration.config.settings import Settings, load_settings
from orchestration.jobs import drift_report_job, finetune_job, ingest_job, monitor_job
from orchestration.pipeline.trigger import new_window_sensor_enabled
from orchestration.resources import build_resources
from orchestration.run_workers import in_code_server
from orchestration.run_workers import install as install_run_workers
from orchestration.schedules import build_periodic_finetune
from orchestration.sensors import (
    build_drift_sensor,
    build_landing_sensor,
    build_new_window_sensor,
    build_profile_sensor,
    build_run_outputs_sensor,
)
from orchestration.source_sensors import build_source_sensors


def with_owners(assets: list, owners: str) -> list:
    """The assets with ``owners`` (comma-separated e-mails or ``team:<name>``) shown in the Dagster UI."""
    names = [o.strip() for o in owners.split(",") if o.strip()]
    return dg.map_asset_specs(lambda spec: spec.replace_attributes(owners=names), assets) if names else assets


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """Definitions for one streamtune home (tests pass their own settings)."""
    settings = settings or load_settings()
    drift = settings.drift
    return dg.Definitions(
        assets=with_freshness(
            with_owners(
                [raw_window, curated_window, approved_window, *TRAINING_ASSETS, *MONITOR_ASSETS], settings.owners
            ),
            settings,
        ),
        asset_checks=[*WINDOW_CHECKS, challenger_beats_champion, no_pending_approval],
        jobs=[ingest_job, finetune_job, monitor_job, drift_report_job],
        sensors=[
            build_landing_sensor(settings.landing_interval_s),
            build_new_window_sensor(
                settings.finetune_trigger_interval_s,
                enabled=new_window_sensor_enabled(settings.schedule.policy, drift.retrain_on),
            ),
            build_profile_sensor(settings.finetune_trigger_interval_s, enabled=drift.enabled),
            build_drift_sensor(
                settings.finetune_trigger_interval_s,
                drift.cooldown_s,
                drift.max_windows_without_retrain,
                settings.schedule,
            ),
            build_run_outputs_sensor(settings.run_outputs_retention_days),
            *build_source_sensors(settings),  # [sources.redis] / [sources.sse]: none unless configured
            build_run_failure_alert_sensor(settings),  # [alerts]
            build_gate_alert_sensor(settings),
        ],
        schedules=[build_periodic_finetune(settings.finetune_cron)],
        resources=build_resources(settings),
        executor=dg.in_process_executor,
    )


_settings = load_settings()
if in_code_server():  # the webserver, dg check, tests and the run workers leave Dagster alone
    install_run_workers(_settings.run_workers)
defs = build_definitions(_settings)
