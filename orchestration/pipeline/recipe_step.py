"""The update's recipe (``[train] recipe``): peak lr, steps and replay share chosen from the measured shift.

``apply_recipe`` is the hook ``orchestration.pipeline.update.run_update`` calls on its plan before training:

* ``fixed`` (default): the plan as it is (``[train]`` settings), nothing logged, nothing read;
* ``adaptive``: ``training.recipe.adaptive_recipe`` from the ``monitor.window_profile`` rows of the update's
  windows (drift alarm, p-values, the champion's bits/byte on the window and on its reference windows);
* ``meta``: ``training.meta.ThompsonRecipeLearner`` over ``training.meta.GRID`` in the drift bucket of the same
  shift strength, its posterior rebuilt from ``train.meta_rewards`` (``orchestration.store.meta``).

The recipe's peak lr and epochs / max_steps replace the plan's ``TrainConfig``; ``recipe.*`` (numbers, the
arm and the one-line reason) become MLflow params of the update run and ``challenger_model`` metadata.
Not applied yet: ``replay_fraction`` (the snapshot step draws the replay rows before this step runs, at
``[replay] fraction``; it is logged as the recipe's recommendation) and ``update = False`` (logged; the update
still trains). ``record_meta_reward`` credits an update's reward; the loop does not call it yet.
Reads DuckDB read-only, once, before training; no Dagster.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import numpy as np

from orchestration.config.settings import Settings
from orchestration.store.meta import MetaTables
from training.meta import ThompsonRecipeLearner, drift_bucket, reward
from training.recipe import Recipe, RecipeBase, adaptive_recipe, prequential_gap, shift_strength, summarize


def choose_recipe(settings: Settings, warehouse_path, window_keys: list[str], snapshot_id: str) -> Recipe | None:
    """The recipe of an update on ``window_keys`` under ``settings.train.recipe`` (None for ``fixed``).

    Args:
        warehouse_path: the ``warehouse.duckdb`` file (read-only here).
        snapshot_id: seeds the meta-learner's draw, so a retried run picks the same arm.
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
    seed = int.from_bytes(hashlib.sha256(f"{snapshot_id}:{settings.train.seed}".encode()).digest()[:8], "little")
    return learner.choose(bucket, np.random.default_rng(seed)).recipe(base, bucket, shift)


def apply_recipe(plan: Any, settings: Settings, warehouse: Any) -> Any:
    """``plan`` (``update._Plan``) with the recipe's ``TrainConfig`` and its ``recipe.*`` params in ``plan.recipe``;
    ``plan`` itself under ``[train] recipe = "fixed"``.

    Args:
        warehouse: the ``Warehouse`` ``run_update`` was given (its ``path`` is read, read-only).
    """
    recipe = choose_recipe(settings, warehouse.path, list(plan.manifest.window_keys), plan.manifest.snapshot_id)
    if recipe is None:
        return plan
    return replace(plan, cfg=recipe.apply(plan.cfg), recipe=recipe.params())


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
