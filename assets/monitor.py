"""Monitor: per-window drift statistics (``window_profile``) and their history (``drift_report``).

Thin assets: the work is in ``orchestration.pipeline.monitor`` (I/O order, registry, MLflow) and
``quality.drift`` (statistics). ``drift_sensor`` reads ``window_profile`` materialization metadata.
"""

import dagster as dg

from orchestration.partitions import windows_partitions
from orchestration.resources import MlflowResource, StreamtuneResource, WarehouseResource


@dg.asset(
    deps=["approved_window"],
    partitions_def=windows_partitions,
    pool="duckdb",
    group_name="monitoring",
    kinds={"duckdb", "mlflow"},
    description="Drift statistics of an approved window against the recent windows before it (unigram JS, OOV, "
    "length KS, emerging-term log-odds z with the top emerging terms, bytes/token and champion bits/byte shift, MiniLM MMD², quarantine share), each with a calibrated "
    "p-value (permutation null, and once enough history exists also the windows' own month-to-month churn); drift "
    "is confirmed when an exceedance is also a change of the series (churn null, ADWIN or new extreme). Stored "
    "in monitor.window_profile and logged to the MLflow '<experiment>-drift' experiment.",
)
def window_profile(
    context: dg.AssetExecutionContext,
    streamtune: StreamtuneResource,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from orchestration.pipeline.monitor import profile_and_record

    out = profile_and_record(
        streamtune.settings(),
        warehouse.warehouse(),
        context.partition_key,
        registry=mlflow.registry(),
        run_id=context.run_id,
    )
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
            # top emerging terms (Fightin' Words z), already through the PII redaction
            "emerging_terms": dg.MetadataValue.md(_terms_markdown(out.profile.emerging)),
            "emerging_terms_over_threshold": int(out.profile.emerging_over_threshold),
            "calibration": dg.MetadataValue.json(out.profile.calibration),
            **stats,
        }
    )


def _terms_markdown(terms: list[dict]) -> str:
    """Markdown table of a profile's emerging terms (term, z, texts containing it in reference / window)."""
    if not terms:
        return "no emerging terms (nothing tested)"
    lines = ["| term | z | reference texts | window texts |", "|---|---|---|---|"]
    lines += [f"| {t['term']} | {t['z']:.2f} | {t['reference_texts']} | {t['current_texts']} |" for t in terms]
    return "\n".join(lines)


@dg.asset(
    deps=[window_profile],
    pool="duckdb",
    group_name="monitoring",
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
