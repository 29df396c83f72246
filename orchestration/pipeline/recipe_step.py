"""The update's recipe (``[train] recipe``): peak lr, steps and replay share chosen from the measured shift.

The recipe is chosen once, when the snapshot is built (``snapshot_for_update``, the ``training_snapshot`` step,
pool ``duckdb``: the window keys are known there), and stored in the manifest (``SnapshotManifest.recipe``), so a
retried or re-executed fine-tune trains the recipe its snapshot was built for:

* ``fixed`` (default): nothing read, nothing stored; the ``[train]`` settings and ``[replay] fraction`` as before;
* ``adaptive``: ``training.recipe.adaptive_recipe`` from the ``monitor.window_profile`` rows of the update's
  windows (drift alarm, p-values, the champion's bits/byte on the window and on its reference windows);
* ``meta``: ``training.meta.ThompsonRecipeLearner`` over ``training.meta.GRID`` in the drift bucket of the same
  shift strength, its posterior rebuilt from ``train.meta_rewards`` (``orchestration.store.meta``).

The recipe's ``replay_fraction`` sets the snapshot's replay draw. ``update = False`` (shift below
``training.recipe.MIN_SHIFT``) skips the update when the trigger is ``new_data`` or ``drift`` (``SKIPPABLE_TRIGGERS``;
the windows stay pending and train with the next update); ``staleness``, ``schedule``, ``forget`` and manual runs
always train, so windows cannot pile up for ever. A ``drift`` run that finds no pending window builds a *refresh*
snapshot of its ``streamtune/refresh_windows`` (trained windows, trained again with replay).

``apply_recipe`` (``orchestration.pipeline.update.run_update``, before training) puts the manifest's peak lr and
epochs / max_steps into the plan's ``TrainConfig``; ``recipe.*`` (numbers, the arm and the one-line reason) become
MLflow params of the update run and Dagster metadata. ``record_meta_reward`` (``update_record.record_update``, pool
``duckdb``) credits a ``meta`` update's reward. No Dagster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from orchestration.config.settings import Settings
from orchestration.pipeline.snapshot import SnapshotManifest, build_snapshot
from orchestration.store.meta import MetaTables
from orchestration.store.warehouse import Warehouse
from training.meta import ThompsonRecipeLearner, drift_bucket, reward
from training.recipe import Recipe, RecipeBase, adaptive_recipe, prequential_gap, shift_strength, summarize

SKIPPABLE_TRIGGERS = ("new_data", "drift")
"""``streamtune/trigger`` values whose run honours a recipe's ``update = False`` (skips); others always train."""


def choose_recipe(settings: Settings, warehouse_path, window_keys: list[str], seed_key: str) -> Recipe | None:
    """The recipe of an update on ``window_keys`` under ``settings.train.recipe`` (None for ``fixed``).

    Args:
        warehouse_path: the ``warehouse.duckdb`` file (read-only here).
        seed_key: seeds the meta-learner's draw with ``[train] seed`` (``snapshot_for_update`` passes the window
            keys), so a retried run on the same windows picks the same arm.
    """
    kind = settings.train.recipe
    if kind == "fixed":
        return None
    profiles = MetaTables(warehouse_path).window_profiles(list(window_keys))
    drift = summarize(profiles)
    base = RecipeBase.of(settings.train)
    recipe = adaptive_recipe(drift, drift.bpb_window, drift.bpb_reference, base)
    if not profiles:
        recipe = replace(recipe, reason=f"no drift profile for {list(window_keys)}: " + recipe.reason)
    if kind == "adaptive":
        return recipe
    shift = shift_strength(drift, prequential_gap(drift.bpb_window, drift.bpb_reference))
    bucket = drift_bucket(shift)
    learner = ThompsonRecipeLearner(MetaTables(warehouse_path).arm_stats())
    seed = int.from_bytes(hashlib.sha256(f"{seed_key}:{settings.train.seed}".encode()).digest()[:8], "little")
    return learner.choose(bucket, np.random.default_rng(seed)).recipe(base, bucket, shift)


@dataclass(frozen=True)
class SnapshotOutcome:
    """What the ``training_snapshot`` step decided: a snapshot to train, or why nothing trains."""

    manifest: SnapshotManifest | None
    """None: nothing to train (``skip`` says why); the run skips the fine-tune."""
    skip: str = ""
    """One line: no pending window, or the recipe's ``update = False`` with its reason."""
    recipe: dict = field(default_factory=dict)
    """The recipe's ``recipe.*`` params ({} for ``fixed``), also when it skipped."""


def snapshot_for_update(
    settings: Settings, warehouse: Warehouse, *, trigger: str, refresh_windows: Sequence[str] = ()
) -> SnapshotOutcome:
    """Choose the windows and the recipe of the next update and build its snapshot (``build_snapshot``).

    The windows: the pending ones (at most ``max_windows_per_update``); when none is pending and ``trigger`` is
    ``drift``, a refresh of those of ``refresh_windows`` that are trained already; a refresh whose snapshot (same
    content, so same id) is in ``train.updates`` already skips (a crashed run retried after its ``model_update``).
    The recipe (``choose_recipe``, seeded by the window keys) sets the replay share and is stored in the manifest;
    a recipe with ``update = False`` skips when ``trigger`` is in ``SKIPPABLE_TRIGGERS`` (module docstring).

    Args:
        trigger: the run's ``streamtune/trigger`` tag (``manual`` when absent).
        refresh_windows: the run's ``streamtune/refresh_windows`` (the drifted windows, ``drift_sensor``).
    """
    keys, refresh = warehouse.pending_windows(limit=settings.max_windows_per_update), False
    if not keys and trigger == "drift" and refresh_windows:
        trained = warehouse.trained_by(list(refresh_windows))
        keys, refresh = [w for w in refresh_windows if w in trained], True
    if not keys:
        return SnapshotOutcome(None, "no approved window is pending: nothing to fine-tune")
    recipe = choose_recipe(settings, warehouse.path, keys, ",".join(keys))
    params = recipe.params() if recipe is not None else {}
    if recipe is not None and not recipe.update and trigger in SKIPPABLE_TRIGGERS:
        return SnapshotOutcome(None, f"no update ({trigger} trigger): {recipe.reason}; {keys} stay pending", params)
    manifest = build_snapshot(
        warehouse,
        settings.paths.snapshots,
        eval_fraction=settings.eval_fraction,
        retention_rows=settings.retention_rows,
        seed=settings.train.seed,
        replay_fraction=recipe.replay_fraction if recipe is not None else settings.replay.fraction,
        window_keys=keys,
        refresh=refresh,
        recipe=params,
    )
    if refresh and manifest.snapshot_id in warehouse.updates()["snapshot_id"].to_list():  # a retried run
        return SnapshotOutcome(None, f"refresh snapshot {manifest.snapshot_id} was trained already", params)
    return SnapshotOutcome(manifest, recipe=params)


def apply_recipe(plan: Any) -> Any:
    """``plan`` (``update._Plan``) with its manifest's recipe (``SnapshotManifest.recipe``) in its ``TrainConfig``
    and the ``recipe.*`` params in ``plan.recipe``; ``plan`` itself when the manifest has none (``fixed``)."""
    if not plan.manifest.recipe:
        return plan
    recipe = Recipe.from_params(plan.manifest.recipe)
    return replace(plan, cfg=recipe.apply(plan.cfg), recipe=dict(plan.manifest.recipe))


def record_meta_reward(
    warehouse_path, params: dict, bpb_before: float, bpb_after: float, train_tokens: int, model_version: str
) -> float | None:
    """Credit one ``meta`` update: ``training.meta.reward`` appended to ``train.meta_rewards`` for the arm and
    bucket in its ``recipe.*`` params (None, nothing written, for an update without an arm).

    Args:
        params: the update's ``recipe.*`` params (``Recipe.params()``).
        bpb_before: the champion's bits/byte on the window before the update.
        bpb_after: the challenger's bits/byte on that window's held-out rows.
        train_tokens: tokens the update trained on.
    """
    arm = params.get("recipe.arm")
    if not arm:
        return None
    shift = float(params.get("recipe.shift", -1.0))
    value = reward(bpb_before, bpb_after, train_tokens)
    MetaTables(warehouse_path).add_reward(drift_bucket(shift), str(arm), value, model_version)
    return value
