"""The model card step: gather one update's numbers from DuckDB and MLflow, render the card, log it to the run.

``record_with_card`` is the ``model_update`` asset's step (pool ``duckdb``): ``record_update``, then the card,
once the update is on record, so the card carries the continual-learning metrics too. The card is
``model_card.md`` at the root of the update's MLflow run artifacts; the version gets the tag
``streamtune.model_card`` naming it. Counts only, never a row (``orchestration.store.cards``,
``training.model_card``). No Dagster imports.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration.pipeline.update import UpdateResult
from orchestration.pipeline.update_record import record_update
from orchestration.store.cards import window_card_rows
from orchestration.store.warehouse import Warehouse
from quality.pii import ENTITIES
from training.model_card import EvalSet, ModelCard, WindowRows, render_model_card

if TYPE_CHECKING:
    from training.tracking import ModelRegistry

MODEL_CARD_ARTIFACT = "model_card.md"
"""Run-relative artifact path of the card."""

_RECIPE_PREFIXES = ("train.", "replay.")
_RECIPE_KEYS = ("replay_rows", "lora", "launcher", "nproc", "device", "bf16", "snapshot_id")


def record_with_card(
    warehouse: Warehouse, registry: ModelRegistry, update: UpdateResult, **record: Any
) -> tuple[UpdateResult, str]:
    """``orchestration.pipeline.update_record.record_update`` (``record`` = its keyword arguments), then the version's
    model card logged to the update's run (``log_model_card``).

    Returns:
        ``(the recorded update, with cl_summary; the card's artifact URI)``.
    """
    recorded = record_update(warehouse, registry, update, **record)
    return recorded, log_model_card(warehouse, registry, recorded)


def gather_model_card(warehouse: Warehouse, registry: ModelRegistry, update: UpdateResult) -> ModelCard:
    """The card of ``update``'s version: windows from DuckDB, recipe and datasets from its MLflow run, the base
    from the ``base`` version's run, gate and metrics from ``update`` (``cl_summary`` included when set).

    Raises:
        mlflow.exceptions.MlflowException: the update's run or the base version cannot be read.
    """
    run = registry.client.get_run(update.mlflow_run_id)
    params = run.data.params
    recipe = {k: v for k, v in params.items() if k.startswith(_RECIPE_PREFIXES) or k in _RECIPE_KEYS}
    windows = window_card_rows(warehouse, list(update.snapshot.window_keys), list(ENTITIES))
    return ModelCard(
        model_name=registry.model_name,
        version=update.version,
        parent_version=update.parent_version,
        base=_base(registry),
        windows=tuple(WindowRows(**w) for w in windows),
        rows_by_split={k: int(v) for k, v in update.snapshot.rows.items()},
        recipe=recipe,
        gate=dict(update.gate_tags),
        metrics=dict(update.metrics),
        datasets=tuple(_eval_set(d) for d in (run.inputs.dataset_inputs if run.inputs else [])),
        cl_metrics=dict(update.cl_summary),
        promoted=update.promote,
    )


def log_model_card(warehouse: Warehouse, registry: ModelRegistry, update: UpdateResult) -> str:
    """Render the card of ``update`` and log it as ``MODEL_CARD_ARTIFACT`` into the update's MLflow run
    (replacing an earlier card of the same run); tag the version ``streamtune.model_card``.

    Returns:
        The card's artifact URI (the run's artifact root + ``/model_card.md``).
    """
    text = render_model_card(gather_model_card(warehouse, registry, update))
    with tempfile.TemporaryDirectory(prefix="model-card-") as tmp:
        path = Path(tmp) / MODEL_CARD_ARTIFACT
        path.write_text(text, encoding="utf-8")
        registry.log_artifact_file(update.mlflow_run_id, path)
    registry.tag_version(update.version, {"streamtune.model_card": MODEL_CARD_ARTIFACT})
    root = registry.client.get_run(update.mlflow_run_id).info.artifact_uri.rstrip("/")
    return f"{root}/{MODEL_CARD_ARTIFACT}"


def _base(registry: ModelRegistry) -> dict[str, str]:
    """``base_model`` and the ``model.*`` params of the base version's run ({} when there is no base alias)."""
    version = registry.version_for_alias("base")
    run_id = registry.version_run_id(version) if version else None
    if run_id is None:
        return {}
    params = registry.client.get_run(run_id).data.params
    out = {"version": str(version)}
    out.update({k: v for k, v in params.items() if k == "base_model" or k.startswith("model.")})
    return out


def _eval_set(dataset_input) -> EvalSet:
    """An MLflow ``DatasetInput`` (as ``training.mlflow_runs.DatasetRef.to_input`` logs it) as an ``EvalSet``."""
    d = dataset_input.dataset
    try:
        profile = json.loads(d.profile or "{}")
    except json.JSONDecodeError:
        profile = {}
    context = next((t.value for t in dataset_input.tags if t.key == "mlflow.data.context"), "")
    return EvalSet(
        name=d.name,
        rows=int(profile.get("num_rows", 0)),
        digest=d.digest,
        windows=tuple(profile.get("windows", ())),
        context=context,
    )
