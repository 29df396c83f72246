"""The drift monitor's glue between the warehouse, the registry, MLflow and ``quality.drift``.

No SQL here (``Warehouse`` methods) and no Dagster imports: ``assets/monitor.py`` calls
``profile_and_record`` and turns its result into Dagster metadata.

Order of work for one window (the DuckDB connection is never held during computation):
read rows + reference + quarantine counts (one short connection) -> fetch the champion that had not seen the
window (``scored_champion``) from the registry (cached under ``models/registry/v{N}``) -> embeddings, champion
scoring, statistics -> confirm against the earlier windows' profiles (short read) -> write ``monitor.window_profile``
(short write) -> one MLflow run in the ``<experiment>-drift`` experiment.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestration.config.profiles import open_registry
from orchestration.config.settings import Settings
from orchestration.store.warehouse import Warehouse
from quality.drift import STAT_NAMES, DriftConfig, DriftDecision, WindowProfile, confirm_drift, profile_window

log = logging.getLogger(__name__)

DRIFT_EXPERIMENT_SUFFIX = "-drift"


@dataclass
class ProfileOutcome:
    """What ``profile_and_record`` did: the profile, the decision, the stored row, the MLflow run."""

    profile: WindowProfile
    decision: DriftDecision
    row: dict
    champion_version: str | None
    mlflow_run_id: str | None


def champion_dir(settings: Settings, registry) -> tuple[str | None, Path | None]:
    """The champion's version and a local ``save_pretrained`` directory of it (None, None if none exists).

    Downloads once into ``models/registry/v{N}`` (``ModelRegistry.local_copy``: a temporary directory
    renamed into place, so a concurrent fine-tune never sees a half-written folder).
    """
    version = registry.version_for_alias("champion")
    if version is None:
        return None, None
    return version, registry.local_copy(version, settings.paths.registry_copy(version))


def scored_champion(settings: Settings, registry, inputs: dict) -> tuple[str | None, Path | None, str]:
    """The model version a window's model-based statistics score, its local copy, and why that one.

    Prequential: the champion that had not seen the window. The drift profile and the fine-tune on the same
    window are separate runs that the daemon may start in either order, so "the champion now" could already
    be trained on the window (its bits/byte biased low) or not, depending on the order. Instead:

    * no update trained on the window yet (``inputs["trained"]`` false): the current champion;
    * else the first update's ``parent_version`` (``Warehouse.drift_inputs``): the champion before it, the
      same version whichever run went first; ``(None, None)`` when that update had no parent (no champion
      existed before the window);
    * that parent retired by ``streamtune forget``, or gone from the registry: the current champion, and the
      reason says so.

    Args:
        inputs: ``Warehouse.drift_inputs`` of the window.

    Returns:
        ``(version, directory, reason)``; ``(None, None, reason)`` for nothing to score.
    """
    if not inputs.get("trained"):
        version, directory = champion_dir(settings, registry)
        return version, directory, "current champion (no update has trained on the window yet)"
    parent = inputs.get("pre_update_version")
    if parent is None:
        return None, None, "no champion existed before the first update on the window"
    if not inputs.get("pre_update_retired"):
        try:
            dest = registry.local_copy(parent, settings.paths.registry_copy(parent))
            return parent, dest, f"version {parent}, the champion before the first update on the window"
        except Exception as exc:  # deleted from the registry: fall back, but say so
            log.warning("pre-update champion v%s of the window is unavailable (%s); scoring the champion", parent, exc)
    version, directory = champion_dir(settings, registry)
    return version, directory, f"current champion (pre-update version {parent} is retired or unavailable)"


def profile_row(
    profile: WindowProfile, decision: DriftDecision, champion_version: str | None, run_id: str | None
) -> dict:
    """The ``monitor.window_profile`` row of a profile (column -> value)."""
    return {
        "window_key": profile.window_key,
        "reference_keys": list(profile.reference_keys),
        "rows": profile.rows,
        "sample_rows": profile.sample_rows,
        **profile.flat(),
        "alpha": profile.alpha,
        "exceeded": list(profile.exceeded),
        "drift": decision.drift,
        "confirmed": list(decision.confirmed),
        "reason": decision.reason,
        "champion_version": champion_version,
        "info": json.dumps(profile.info, sort_keys=True),
        "dagster_run_id": run_id,
        "emerging_terms": json.dumps(profile.emerging),
    }


def redact_emerging_terms(profile: WindowProfile) -> None:
    """Run the emerging terms of a profile through the PII redaction (``quality.pii.redact_values``), in place.

    Terms are ``\\w+`` vocabulary (public words, not PII), but they are raw text of the window and go
    to Dagster metadata, DuckDB and MLflow, so they take the same path as any other free text.
    """
    if not profile.emerging:
        return
    from quality.pii import redact_values

    for item, term in zip(profile.emerging, redact_values([t["term"] for t in profile.emerging])):
        item["term"] = term


class ChampionScorer:
    """Per-text bits and token counts under the champion, computed by ``training.evaluate.text_bits``.

    Args:
        model_dir: ``save_pretrained`` directory of the champion (``training.modeling.load_model``, fp32, CPU).

    Raises:
        OSError: the model or tokenizer cannot be read.
        ValueError: the tokenizer has no eos token.
    """

    def __init__(self, model_dir: str | Path) -> None:
        # lazy: keeps torch and transformers out of the imports of the code location and of the ingest run
        from training.modeling import load_model

        self.model, self.tokenizer = load_model(Path(model_dir))
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer of {model_dir} has no eos token")

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) int64 tokens per text under the champion's tokenizer (no special tokens, no truncation)."""
        from training.data import token_ids  # lazy: see __init__

        return np.array([len(ids) for ids in token_ids(self.tokenizer, texts)], dtype=np.int64)

    def bits(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) float64 total bits the champion assigns to each text given a leading eos."""
        from training.evaluate import text_bits  # lazy: see __init__

        return text_bits(self.model, self.tokenizer, texts)


def emerging_samples(warehouse: Warehouse, inputs: dict, cfg: DriftConfig) -> tuple[list[str], list[str]] | None:
    """``(recent, before)`` texts of ``emerging_z``: the last ``cfg.emerging_windows`` windows (from ``inputs``,
    the current window's ``Warehouse.drift_inputs``) and the ``reference_windows`` before them; None when
    there is no earlier reference (one short connection per extra window)."""
    recent, keys, back = list(inputs["current"]), inputs["reference_keys"], None
    for _ in range(cfg.emerging_windows - 1):
        if not keys:
            break
        back = warehouse.drift_inputs(keys[-1], cfg.reference_windows)  # short connection each
        recent += back["current"]
        keys = back["reference_keys"]
    return (recent, back["reference"]) if back is not None and back["reference"] else None


def profile_and_record(
    settings: Settings,
    warehouse: Warehouse,
    window_key: str,
    *,
    registry=None,
    embedder=None,
    run_id: str | None = None,
    log_mlflow: bool = True,
) -> ProfileOutcome:
    """Profile one window, decide drift, store it in DuckDB and (optionally) MLflow.

    Args:
        settings: the home's settings (``[drift]`` -> ``DriftConfig``).
        warehouse: the DuckDB warehouse.
        window_key: the approved window to profile.
        registry: ``training.tracking.ModelRegistry`` (None: no model-based statistic, no MLflow).
        embedder: texts -> (n, 384) embeddings; None loads ``quality.drift.embeddings.MiniLMEmbedder``.
            Pass ``False`` to skip the embedding statistic.
        run_id: Dagster run id recorded with the row.
        log_mlflow: log one run per window to the ``<experiment>-drift`` experiment.

    Returns:
        ``ProfileOutcome``.
    """
    cfg: DriftConfig = settings.drift
    inputs = warehouse.drift_inputs(window_key, cfg.reference_windows)  # short connection, closed here
    if embedder is None:
        from quality.drift.embeddings import MiniLMEmbedder

        embedder = MiniLMEmbedder(threads=settings.train.threads or None)
    version, scorer = None, None
    scored = "no registry"
    if registry is not None:
        version, directory, scored = scored_champion(settings, registry, inputs)
        if directory is not None:
            scorer = ChampionScorer(directory)
    history = [{k: r.get(k) for k in STAT_NAMES} for r in warehouse.window_profiles(before=window_key).to_dicts()]
    profile = profile_window(
        window_key,
        inputs["current"],
        inputs["reference"],
        reference_keys=inputs["reference_keys"],
        cfg=cfg,
        quarantine=inputs["quarantine"],
        embed=embedder or None,
        count_tokens=scorer.count_tokens if scorer else None,
        score_bits=scorer.bits if scorer else None,
        history=history,
        emerging_samples=emerging_samples(warehouse, inputs, cfg),
    )
    profile.info["champion_scored"] = scored
    redact_emerging_terms(profile)  # before the reason (which names them) is built
    if inputs["pre_update_bpb"] is not None:
        profile.info["lm_bpb_pre_update"] = inputs["pre_update_bpb"]
    decision = confirm_drift(profile, history, cfg, inputs["earlier_windows"])
    row = profile_row(profile, decision, version, run_id)
    warehouse.record_window_profile(row)
    mlflow_run_id = None
    if log_mlflow and registry is not None:
        try:
            mlflow_run_id = log_profile_to_mlflow(registry, settings, row)
        except Exception as exc:  # tracking must not lose the profile
            log.warning("could not log the drift profile of %s to MLflow: %s", window_key, exc)
    return ProfileOutcome(profile, decision, row, version, mlflow_run_id)


def log_profile_to_mlflow(registry, settings: Settings, row: dict) -> str:
    """One MLflow run per window in ``<experiment>-drift``: statistics and p-values as metrics, decision as tags.

    Returns:
        the run id.
    """
    from mlflow.entities import Metric

    drift_reg = open_registry(
        tracking_uri=registry.tracking_uri,
        artifact_root=registry.artifact_location,
        experiment=settings.experiment + DRIFT_EXPERIMENT_SUFFIX,
        model_name=registry.model_name,
    )
    client = drift_reg.client
    run = client.create_run(
        drift_reg.experiment_id(),
        run_name=f"drift {row['window_key']}",
        tags={
            "streamtune.window": row["window_key"],
            "streamtune.drift": str(bool(row["drift"])).lower(),
            "streamtune.drift_confirmed": ",".join(row["confirmed"]),
            "streamtune.drift_exceeded": ",".join(row["exceeded"]),
            "streamtune.drift_reason": row["reason"][:4000],
            "streamtune.reference_windows": ",".join(row["reference_keys"]),
            "dagster.run_id": row.get("dagster_run_id") or "",
            "streamtune.champion_version": row.get("champion_version") or "",
            "streamtune.emerging_terms": ", ".join(
                f"{t['term']} ({t['z']:.1f})" for t in json.loads(row.get("emerging_terms") or "[]")
            )[:4000],
        },
    )
    import time

    now = int(time.time() * 1000)
    names = [f"{s}{suffix}" for s in STAT_NAMES for suffix in ("", "_p", "_threshold")]
    metrics = [Metric(k, float(row[k]), now, 0) for k in names if row.get(k) is not None]
    metrics += [
        Metric("alpha", float(row["alpha"]), now, 0),
        Metric("drift", float(bool(row["drift"])), now, 0),
        Metric("rows", float(row["rows"]), now, 0),
    ]
    info = json.loads(row["info"])
    metrics += [Metric(f"info.{k}", float(v), now, 0) for k, v in info.items() if isinstance(v, (int, float))]
    client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id)
    return run.info.run_id
