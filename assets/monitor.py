"""Monitor: per-window drift statistics (``window_profile``) and their history (``drift_report``).

Thin assets: the work is in ``orchestration.monitoring`` (I/O order, registry, MLflow) and
``quality.drift`` (statistics). ``drift_sensor`` reads ``window_profile`` materialization metadata.
"""

import dagster as dg

from orchestration.partitions import windows_partitions
from orchestration.resources import MlflowResource, StreamtuneResource, WarehouseResource

DRIFT_METADATA_KEYS = ("drift", "confirmed", "exceeded", "reason")


@dg.asset(
    deps=["approved_window"],
    partitions_def=windows_partitions,
    pool="duckdb",
    group_name="monitor",
    kinds={"duckdb", "mlflow"},
    description="Drift statistics of an approved window against the recent windows before it (unigram JS, OOV, "
    "length KS, bytes/token and champion bits/byte shift, MiniLM MMD², quarantine share), each with a calibrated "
    "p-value; drift is confirmed when an exceedance is also a change of the series (ADWIN / new extreme). Stored "
    "in monitor.window_profile and logged to the MLflow '<experiment>-drift' experiment.",
)
def window_profile(
    context: dg.AssetExecutionContext,
    streamtune: StreamtuneResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from orchestration.monitoring import profile_and_record

    out = profile_and_record(streamtune.settings(), warehouse.warehouse(), context.partition_key,
                             registry=mlflow.registry(), run_id=context.run_id)
    row = out.row
    stats = {k: float(v) for k, v in out.profile.flat().items() if v is not None}
    context.log.info(f"{context.partition_key}: {row['reason']}")
    return dg.MaterializeResult(
        metadata={
            "drift": bool(row["drift"]),
            "confirmed": dg.MetadataValue.json(row["confirmed"]),
            "exceeded": dg.MetadataValue.json(row["exceeded"]),
            "reason": row["reason"],
            "alpha": float(row["alpha"]),
            "reference_windows": dg.MetadataValue.json(row["reference_keys"]),
            "champion_version": row["champion_version"] or "",
            "mlflow_run_id": out.mlflow_run_id or "",
            "dagster/row_count": int(row["rows"]),
            **stats,
        }
    )


@dg.asset(
    deps=[window_profile],
    pool="duckdb",
    group_name="monitor",
    kinds={"duckdb", "matplotlib"},
    description="History of every drift statistic over windows with thresholds, exceedances and confirmed drift "
    "marked (PNG under <home>/monitor/ and inline in the metadata), plus a table of the recent windows.",
)
def drift_report(streamtune: StreamtuneResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    from quality.drift_report import history_markdown, plot_drift_history, png_data_uri

    rows = warehouse.warehouse().window_profiles().to_dicts()
    path = streamtune.settings().paths.root / "monitor" / "drift_report.png"
    plot_drift_history(rows, path)
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(history_markdown(rows, png_data_uri(path))),
            "plot": dg.MetadataValue.path(str(path)),
            "windows": len(rows),
            "drift_windows": dg.MetadataValue.json([r["window_key"] for r in rows if r["drift"]]),
        }
    )


MONITOR_ASSETS = [window_profile, drift_report]
