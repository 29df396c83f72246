"""The base model step: the first champion, built once. No Dagster imports.

``base_model`` (pool ``training``) calls ``ensure_base``; later runs find the ``base`` alias and reuse it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestration.config.settings import Settings
from orchestration.pipeline.snapshot import SnapshotManifest

if TYPE_CHECKING:
    from training.tracking import ModelRegistry


@dataclass(frozen=True)
class BaseModel:
    """The first champion: ``version`` registered (or found) with aliases base and champion."""

    version: str
    reused: bool
    """True when a base version already existed (nothing was built)."""
    mlflow_run_id: str | None = None
    """The ``base-model`` run; None when reused."""


def ensure_base(
    settings: Settings, registry: ModelRegistry, manifest: SnapshotManifest, dagster_run_id: str
) -> BaseModel:
    """The base version, built once: a byte-level BPE tokenizer and a small GPT-style model from the snapshot's
    training rows (or the Hugging Face id / local path in ``settings.base_model``; ``training.modeling.prepare_base``),
    registered with aliases base and champion. Reused when the ``base`` alias exists."""
    # lazy: keeps torch and transformers out of the code location's imports
    from training.modeling import prepare_base

    existing = registry.version_for_alias("base")
    if existing is not None:
        return BaseModel(version=existing, reused=True)
    out_dir = settings.paths.models / "base"
    shutil.rmtree(out_dir, ignore_errors=True)
    model_cfg = settings.model
    prepare_base(settings.base_model or None, manifest.texts("train"), model_cfg, out_dir, seed=settings.train.seed)
    params = {
        "base_model": settings.base_model or "local-gpt2",
        **{f"model.{k}": v for k, v in model_cfg.to_dict().items()},
        "tokenizer_windows": ",".join(manifest.window_keys),
    }
    run_id, version = registry.register_base(
        model_dir=out_dir, params=params, tags={"dagster.run_id": dagster_run_id, "streamtune.role": "base"}
    )
    return BaseModel(version=version, reused=False, mlflow_run_id=run_id)
