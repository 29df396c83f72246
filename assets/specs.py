"""``dg.asset`` / ``dg.asset_check`` arguments the stage modules share."""

import dagster as dg

from orchestration.config.settings import Settings
from orchestration.partitions import windows_partitions

WINDOW_STEP = {"partitions_def": windows_partitions, "pool": "duckdb"}
"""A step on one window partition (``windows``); it reads or writes the warehouse, so it runs in the ``duckdb``
pool. A check without ``partitions_def`` would load every partition."""


def freshness_policies(settings: Settings) -> dict[str, dg.FreshnessPolicy]:
    """``{asset name: FreshnessPolicy.time_window(fail_window, warn_window)}`` for ``approved_window`` and
    ``champion_model`` from ``[freshness]`` (``orchestration.config.operations.FreshnessConfig.windows``: the
    settings, or defaults derived from the landing cadence and the ``finetune_cron`` schedule); {} when
    ``[freshness] enabled = false``. Dagster's freshness daemon evaluates them (PASS / WARN / FAIL).

    Raises:
        ValueError: a warn window not shorter than its fail window (``FreshnessConfig.windows``).
    """
    if not settings.freshness.enabled:
        return {}
    # the interval FreshnessPolicy.cron itself checks against; no public equivalent in dagster 1.13
    from dagster._utils.schedules import get_smallest_cron_interval

    windows = settings.freshness.windows(get_smallest_cron_interval(settings.finetune_cron))
    return {
        name: dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)
        for name, (warn, fail) in windows.items()
    }


def with_freshness(assets: list, settings: Settings) -> list:
    """``assets`` with ``freshness_policies(settings)`` set on the specs they name (others unchanged)."""
    policies = freshness_policies(settings)
    if not policies:
        return assets
    return dg.map_asset_specs(
        lambda spec: (
            spec.replace_attributes(freshness_policy=policies[spec.key.to_user_string()])
            if spec.key.to_user_string() in policies
            else spec
        ),
        assets,
    )
