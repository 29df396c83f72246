"""Monitor: per-window drift statistics (``window_profile``) and their history (``drift_report``).

Thin assets: the work is in ``orchestration.pipeline.monitor`` (I/O order, registry, MLflow),
``orchestration.pipeline.report`` (the history) and ``quality.drift`` (statistics). ``drift_sensor`` reads
``window_profile`` materialization metadata.
"""

import dagster as dg

from assets.metadata import profile_metadata
from assets.specs import WINDOW_STEP
from orchestration.pipeline.monitor import profile_and_record
from orchestration.pipeline.report import draw_drift_report
from orchestration.resources import MlflowResource, StreamtuneResource, WarehouseResource


@dg.asset(
    **WINDOW_STEP,
    group_name="monitoring",
    kinds={"duckdb", "mlflow"},
    description="Drift statistics of an approved window against the recent windows before it (unigram JS, OOV, "
    "length KS, emerging-term log-odds z with the top emerging terms, bytes/token and champion bits/byte shift, "
    "MiniLM MMD², quarantine share), each with a calibrated "
    "p-value (permutation null, and once enough history exists also the windows' own month-to-month churn); drift "
    "is confirmed when an exceedance is also a change of the series (churn null, ADWIN or new extreme). Stored "
    "in monitor.window_profile and logged to the MLflow '<experiment>-drift' experiment.",
    deps=["approved_window"],
)
def window_profile(
    context: dg.AssetExecutionContext,
    streamtune: StreamtuneResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    out = profile_and_record(
        streamtune.settings(),
        warehouse.warehouse(),
        context.partition_key,
        registry=mlflow.registry(),
        run_id=context.run_id,
    )
    context.log.info(f"{context.partition_key}: {out.row['reason']}")
    return dg.MaterializeResult(metadata=profile_metadata(out))


@dg.asset(
    deps=[window_profile],
    pool="duckdb",
    group_name="monitoring",
    kinds={"duckdb", "matplotlib"},
    description="History of every drift statistic over windows with thresholds, exceedances and confirmed drift "
    "marked (PNG under <home>/monitor/ and inline in the metadata), plus a table of the recent windows.",
)
def drift_report(streamtune: StreamtuneResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    report = draw_drift_report(streamtune.settings(), warehouse.warehouse())
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(report.markdown),
            "plot": dg.MetadataValue.path(str(report.plot)),
            "windows": report.windows,
            "drift_windows": dg.MetadataValue.json(report.drift_windows),
        }
    )


MONITOR_ASSETS = [window_profile, drift_report]
