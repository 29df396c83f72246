"""Jobs: ingest one window (partitioned), and fine-tune on whatever windows are pending."""

import dagster as dg

from orchestration.partitions import windows_partitions
from orchestration.tags import COMPUTE_TAG, MODEL_PRIORITY, PIPELINE_TAG

# Runs tagged COMPUTE_TAG = "model" (fine-tunes, drift profiles) run one at a time on one machine (dagster.yaml).
# They are dequeued before queued ingest runs (MODEL_PRIORITY; Dagster's run-queue priority, default 0): their
# short DuckDB step takes the ``duckdb`` slot next, then their model compute (which holds no DuckDB slot)
# overlaps the rest of an ingest backlog instead of waiting for all of it.

ingest_job = dg.define_asset_job(
    name="ingest_window",
    selection=dg.AssetSelection.assets("raw_window", "curated_window", "approved_window"),
    partitions_def=windows_partitions,
    description="Load one landed window into DuckDB, gate it with Great Expectations, approve it for training.",
    tags={PIPELINE_TAG: "ingest"},
)

# A crashed fine-tune (worker killed, machine restarted) is retried by the instance's run_retries (max_retries
# in dagster.yaml) with every step: the retry snapshots the windows pending *then*, so a retry that starts after
# another run trained its windows takes the ones still pending instead of failing, and the checkpoint of an
# identical snapshot still resumes. Failed asset checks (the promotion gate) are never retried.
FINETUNE_RETRY = {"dagster/retry_strategy": "ALL_STEPS", "dagster/retry_on_asset_or_op_failure": "false"}

finetune_job = dg.define_asset_job(
    name="finetune",
    selection=dg.AssetSelection.assets(
        "training_snapshot", "base_model", "challenger_model", "model_update", "champion_model"
    ),
    description="Fine-tune the champion on pending approved windows, log to MLflow, and run the promotion gate.",
    tags={PIPELINE_TAG: "finetune", COMPUTE_TAG: "model", **MODEL_PRIORITY, **FINETUNE_RETRY},
)

monitor_job = dg.define_asset_job(
    name="monitor_window",
    selection=dg.AssetSelection.assets("window_profile"),
    partitions_def=windows_partitions,
    description="Profile one approved window for drift (statistics, calibrated p-values, confirmation) into "
    "monitor.window_profile and MLflow; runs beside ingest, off its critical path.",
    tags={PIPELINE_TAG: "monitor", COMPUTE_TAG: "model", **MODEL_PRIORITY},
)

drift_report_job = dg.define_asset_job(
    name="redraw_drift_report",
    selection=dg.AssetSelection.assets("drift_report"),
    description="Redraw the drift history (every statistic over windows, thresholds and alarms).",
    tags={PIPELINE_TAG: "monitor"},
)
