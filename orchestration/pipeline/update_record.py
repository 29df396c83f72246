"""How a finished update is recorded: the ``model_update`` step of the loop, Dagster-free.

``record_update`` writes the finished update (``orchestration.pipeline.update.UpdateResult``), promoted or
not, to the version's tags and the warehouse (``model_update`` asset, pool ``duckdb``, the one writer), so a
rejected update is on record and its windows are not retried; under ``[train] recipe = "meta"`` it also credits
the recipe meta-learner (``recipe_step.record_meta_reward``). ``ledger_frame``, ``next_replay_buffer``,
``eval_matrix_frame`` and ``lineage_summary`` build the rows it writes and the continual-learning summary.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import polars as pl

from orchestration.pipeline.recipe_step import record_meta_reward
from orchestration.pipeline.snapshot import SPLITS, SnapshotManifest
from orchestration.store.warehouse import Warehouse
from training.cl_metrics import cl_summary
from training.replay import update_buffer

if TYPE_CHECKING:
    from orchestration.pipeline.update import UpdateResult
    from training.tracking import ModelRegistry


def record_update(
    warehouse: Warehouse,
    registry: ModelRegistry,
    update: UpdateResult,
    *,
    replay_size: int,
    replay_seed: int,
    trigger: str | None,
    dagster_run_id: str | None,
) -> UpdateResult:
    """Record one finished update, promoted or not, before any promotion happens.

    Writes the gate decision and numbers as version tags (MLflow), then in one DuckDB transaction the
    ledger rows, the ``train.updates`` row, the version's ``monitor.eval_matrix`` rows and the new replay
    buffer; finally computes ACC/BWT/forgetting over all updates so far (``lineage_summary``) and logs them
    to the update's MLflow run as ``cl_acc``, ``cl_bwt``, ``cl_forgetting`` (bits/byte; NaNs skipped).
    An update whose recipe has a meta-learner arm (``recipe.arm`` in ``SnapshotManifest.recipe``, ``[train] recipe
    = "meta"``) credits it (``credit_meta_reward``: one ``train.meta_rewards`` row), so the next ``meta`` update's
    choice sees it. Idempotent per model version (a retried run rewrites the same rows).

    Returns:
        ``update`` with ``cl_summary`` = ``{"cl_acc", "cl_bwt", "cl_forgetting"}`` (finite values only).
    """
    registry.tag_version(update.version, update.gate_tags)
    manifest = update.snapshot
    warehouse.record_update(
        model_version=update.version,
        mlflow_run_id=update.mlflow_run_id,
        parent_version=update.parent_version,
        snapshot_id=manifest.snapshot_id,
        window_keys=manifest.window_keys,
        ledger=ledger_frame(manifest),
        metrics=update.metrics,
        promoted=update.promote,
        reason=update.reason,
        trigger=trigger,
        dagster_run_id=dagster_run_id,
        replay_buffer=next_replay_buffer(warehouse, manifest, replay_size, replay_seed),
        eval_matrix=eval_matrix_frame(update.matrix, update.parent_version, manifest.window_keys[-1]),
    )
    credit_meta_reward(warehouse, update)
    updates = warehouse.updates()
    summary = lineage_summary(warehouse.eval_matrix(), warehouse.trained_windows(), updates["model_version"].to_list())
    out = {f"cl_{k}": v for k, v in summary.items() if v == v and k != "fwt"}
    if out:
        registry.log_metrics(update.mlflow_run_id, out, model_id=registry.model_id(update.version))
    return replace(update, cl_summary=out)


def credit_meta_reward(warehouse: Warehouse, update: UpdateResult) -> float | None:
    """The meta-learner's reward for ``update`` (``recipe_step.record_meta_reward``, ``training.meta.reward``):
    bits/byte gained on the new windows' held-out rows (champion ``champion_new_bpb`` before, challenger
    ``challenger_new_bpb`` after) per 1e6 tokens trained (``train_tokens``), written to ``train.meta_rewards``
    (replacing a retried run's row of the same version). None, nothing written, without an arm or those metrics.
    """
    m = update.metrics
    if "recipe.arm" not in update.snapshot.recipe or not {"champion_new_bpb", "challenger_new_bpb"} <= m.keys():
        return None
    tokens = max(1, int(m.get("train_tokens", 0)))
    return record_meta_reward(
        warehouse.path, update.snapshot.recipe, m["champion_new_bpb"], m["challenger_new_bpb"], tokens, update.version
    )


def ledger_frame(manifest: SnapshotManifest) -> pl.DataFrame:
    """Ledger rows of an update: every snapshot row with its role (window_key, row_number, record_id, role);
    replayed rows appear once each with role ``replay``. A refresh update (``manifest.refresh``) records its rows
    with the same roles (``train`` for the retrained rows, so a deletion request finds the version that saw
    them; ``new_eval`` for the same held-out rows): ``train.ledger`` has no key, its rows are per version."""
    frames = [
        manifest.frame(split).select("window_key", "row_number", "record_id").with_columns(role=pl.lit(split))
        for split in SPLITS
    ]
    replay = manifest.frame("replay").select("window_key", "row_number", "record_id").unique(maintain_order=True)
    frames.append(replay.with_columns(role=pl.lit("replay")))
    return pl.concat(frames)


def next_replay_buffer(warehouse: Warehouse, manifest: SnapshotManifest, capacity: int, seed: int) -> pl.DataFrame:
    """The replay buffer after this update: the current one plus the new windows' training rows, shrunk to
    ``capacity`` by the window-balanced reservoir (``training.replay.update_buffer``). Held-out rows (this
    snapshot's evaluation splits and every evaluation row in the ledger) never enter."""
    held = set(warehouse.heldout_record_ids())
    for split in ("new_eval", "retention_eval", "first_eval"):
        held.update(manifest.frame(split)["record_id"].to_list())
    order = warehouse.trained_windows()
    order += [k for k in manifest.window_keys if k not in order]
    return update_buffer(
        warehouse.replay_buffer(),
        manifest.frame("train"),
        capacity,
        seed=seed,
        window_order=order,
        exclude_record_ids=sorted(held),
    )


_EVAL_MATRIX_SCHEMA = {
    "parent_version": pl.String,
    "trained_through": pl.String,
    "eval_window": pl.String,
    "phase": pl.String,
    "loss": pl.Float64,
    "bpb": pl.Float64,
    "texts": pl.Int64,
    "bytes": pl.Int64,
}


def eval_matrix_frame(matrix: dict, parent_version: str | None, trained_through: str) -> pl.DataFrame:
    """``monitor.eval_matrix`` rows from ``{"before": {window: scores}, "after": {window: scores}}`` where
    scores = ``{"loss", "bpb", "texts", "bytes"}`` (``UpdateResult.matrix``)."""
    rows = [
        {
            "parent_version": parent_version,
            "trained_through": trained_through,
            "eval_window": window,
            "phase": phase,
            "loss": float(sc["loss"]),
            "bpb": float(sc["bpb"]),
            "texts": int(sc["texts"]),
            "bytes": int(sc["bytes"]),
        }
        for phase in ("before", "after")
        for window, sc in matrix.get(phase, {}).items()
    ]
    return pl.DataFrame(rows, schema=_EVAL_MATRIX_SCHEMA)


def lineage_summary(matrix: pl.DataFrame, window_order: list[str], versions: list[str]) -> dict[str, float]:
    """ACC, BWT and forgetting (``training.cl_metrics.cl_summary``, scores = -bits/byte) of a run of updates.

    Row i of R is the model of the update that trained through ``window_order[i]`` (its "after" rows); FWT
    needs the initial model on every window and is left NaN here (``bench/continual.py`` reports it).

    Args:
        matrix: ``monitor.eval_matrix`` rows.
        window_order: trained windows in stream order (the matrix's T).
        versions: the model versions to use as rows (e.g. every update's version, oldest first); a later
            version for the same ``trained_through`` window replaces an earlier one.
    """
    pos = {w: i for i, w in enumerate(window_order)}
    R: dict[tuple[int, int], float] = {}
    for version in versions:
        rows = matrix.filter((pl.col("model_version") == version) & (pl.col("phase") == "after"))
        for through, w, bpb in rows.select("trained_through", "eval_window", "bpb").iter_rows():
            if through in pos and w in pos:
                R[(pos[through], pos[w])] = -bpb
    if not window_order:
        return {}
    return cl_summary(R, len(window_order))
