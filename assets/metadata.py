"""Dagster metadata of the model and monitor assets: Markdown tables and MLflow links built from step results."""

from __future__ import annotations

import dagster as dg

from orchestration.config.settings import Settings
from orchestration.pipeline.monitor import ProfileOutcome
from orchestration.pipeline.update import UpdateResult


def mlflow_links(settings: Settings, registry, run_id: str, version: str | None = None) -> str:
    """URL of an MLflow run (or, with ``version``, of the registered model version) in the MLflow UI."""
    base = settings.mlflow_ui_url.rstrip("/")
    if version is not None:
        return f"{base}/#/models/{registry.model_name}/versions/{version}"
    return f"{base}/#/experiments/{registry.experiment_id()}/runs/{run_id}"


def model_card_link(update: UpdateResult, settings: Settings, registry) -> dg.MetadataValue:
    """URL of the version's model card (``model_card.md`` in the update's MLflow run, written by ``model_update``;
    ``orchestration.pipeline.model_card``) in the MLflow UI."""
    return dg.MetadataValue.url(mlflow_links(settings, registry, update.mlflow_run_id) + "/artifacts/model_card.md")


def challenger_metadata(update: UpdateResult, settings: Settings, registry) -> dict:
    """``challenger_model`` metadata: version, gate preview, eval tables, sample sizes (no text) with a link to
    the samples artifact, MLflow links (run, version, the model card ``model_update`` writes into the run), every
    metric as a float, and what a Pipes launch reported."""
    return {
        "version": update.version,
        "mlflow_run_id": update.mlflow_run_id,
        "parent_version": update.parent_version,
        "windows": dg.MetadataValue.json(update.snapshot.window_keys),
        "gate": update.reason,
        "eval": dg.MetadataValue.md(eval_table(update.metrics)),
        "eval_matrix": dg.MetadataValue.md(matrix_table(update.matrix)),
        # counts only: record text never goes into the event log, which `forget` cannot reach
        "sample_generations": dg.MetadataValue.md(samples_table(update.samples)),
        "sample_generations_artifact": dg.MetadataValue.url(
            mlflow_links(settings, registry, update.mlflow_run_id) + "/artifacts/samples/generations.json"
        ),
        "mlflow_run": dg.MetadataValue.url(mlflow_links(settings, registry, update.mlflow_run_id)),
        "model_card": model_card_link(update, settings, registry),
        "mlflow_model_version": dg.MetadataValue.url(
            mlflow_links(settings, registry, update.mlflow_run_id, update.version)
        ),
        **{k: float(v) for k, v in update.metrics.items()},
        **update.launch_metadata,
    }


def profile_metadata(out: ProfileOutcome) -> dict:
    """``window_profile`` metadata: the drift decision, its reference windows, calibration, every statistic."""
    row = out.row
    return {
        "drift": bool(row["drift"]),
        "confirmed": dg.MetadataValue.json(row["confirmed"]),
        "exceeded": dg.MetadataValue.json(row["exceeded"]),
        "reason": row["reason"],
        "alpha": float(row["alpha"]),
        "reference_windows": dg.MetadataValue.json(row["reference_keys"]),
        "champion_version": row["champion_version"] or "",
        "champion_scored": str(out.profile.info.get("champion_scored", "")),
        "mlflow_run_id": out.mlflow_run_id or "",
        "dagster/row_count": int(row["rows"]),
        # top emerging terms (Fightin' Words z), already through the PII redaction
        "emerging_terms": dg.MetadataValue.md(terms_table(out.profile.emerging)),
        "emerging_terms_over_threshold": int(out.profile.emerging_over_threshold),
        "calibration": dg.MetadataValue.json(out.profile.calibration),
        **{k: float(v) for k, v in out.profile.flat().items() if v is not None},
    }


def samples_table(samples: list[dict[str, str]]) -> str:
    """Markdown table of the challenger's sample continuations, one row per sample with its sizes only
    (prompt words and characters, continuation characters): prompts are held-out rows' first words, so the
    text stays in the MLflow artifact ``samples/generations.json``, which ``forget`` deletes, never in
    Dagster's event log."""
    if not samples:
        return "no samples (samples_per_update = 0)"
    return "\n".join(
        [
            "| sample | prompt (text in MLflow: samples/generations.json) | challenger's continuation |",
            "|---|---|---|",
            *[
                f"| {i} | {len(s['prompt'].split())} words, {len(s['prompt'])} chars | {len(s['completion'])} chars |"
                for i, s in enumerate(samples, 1)
            ],
        ]
    )


def matrix_table(matrix: dict) -> str:
    """Bits/byte per evaluated window, champion (before) and challenger (after)."""
    before, after = matrix.get("before", {}), matrix.get("after", {})
    lines = ["| window | champion bits/byte | challenger bits/byte |", "|---|---|---|"]
    for w in sorted(set(before) | set(after)):
        b, a = before.get(w, {}).get("bpb"), after.get(w, {}).get("bpb")
        lines.append(f"| {w} | {'' if b is None else f'{b:.4f}'} | {'' if a is None else f'{a:.4f}'} |")
    return "\n".join(lines)


def eval_table(metrics: dict[str, float]) -> str:
    """Loss (nats/token), perplexity and bits/byte of champion and challenger on the new and retention slices."""
    lines = ["| slice | model | loss | perplexity | bits/byte |", "|---|---|---|---|---|"]
    for slice_ in ("new", "retention"):
        for model in ("champion", "challenger"):
            p = f"{model}_{slice_}_"
            if p + "loss" in metrics:
                loss, ppl, bpb = metrics[p + "loss"], metrics[p + "ppl"], metrics[p + "bpb"]
                lines.append(f"| {slice_} | {model} | {loss:.4f} | {ppl:.2f} | {bpb:.4f} |")
    return "\n".join(lines)


def terms_table(terms: list[dict]) -> str:
    """Markdown table of a profile's emerging terms (term, z, texts containing it in reference / window)."""
    if not terms:
        return "no emerging terms (nothing tested)"
    lines = ["| term | z | reference texts | window texts |", "|---|---|---|---|"]
    lines += [f"| {t['term']} | {t['z']:.2f} | {t['reference_texts']} | {t['current_texts']} |" for t in terms]
    return "\n".join(lines)
