"""Run-tag and metadata-key constants shared by assets, sensors, schedules, jobs and pipeline steps.

No Dagster import here, so every layer can use them without an import cycle.
"""

TRIGGER_TAG = "streamtune/trigger"
"""What started a run: ``landing``, ``new_data``, ``monitor``, ``drift``, ``staleness``, ``schedule``, ``forget``,
``manual``."""
PIPELINE_TAG = "streamtune/pipeline"
"""The job family of a run: ``ingest``, ``finetune`` or ``monitor``."""
COMPUTE_TAG = "streamtune/compute"
"""``model`` on runs that load a model (fine-tune, drift profile)."""
WINDOW_TAG = "streamtune/window"
"""The window key a fine-tune or monitor run was requested for."""
LANDING_FILE_TAG = "streamtune/landing_file"
"""The landing file name the landing sensor saw for an ingest run."""
REQUEST_TAG = "streamtune/forget_request"
"""The deletion request id of a fine-tune started by ``streamtune forget``."""
DRIFT_TAG_PREFIX = "streamtune/drift."
"""Prefix of the drift statistics copied onto a drift-triggered fine-tune run."""
MODEL_PRIORITY = {"dagster/priority": "1"}
"""Run-queue priority of model runs: they dequeue before queued ingests."""
