"""Schedules: periodic fine-tuning (cron from settings.finetune_cron)."""

import dagster as dg

from orchestration.jobs import finetune_job
from orchestration.tags import TRIGGER_TAG


def build_periodic_finetune(cron: str) -> dg.ScheduleDefinition:
    """The ``periodic_finetune`` schedule; its runs skip cleanly when no window is pending."""
    return dg.ScheduleDefinition(
        name="periodic_finetune",
        cron_schedule=cron,
        job=finetune_job,
        execution_timezone="UTC",
        tags={TRIGGER_TAG: "schedule"},
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Fine-tune the champion on every window approved since the last update.",
    )
