"""The base model step: the first champion, built once. No Dagster imports.

``base_model`` (pool ``training``) calls ``ensure_base``; later runs find the ``base`` alias and reuse it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orchestration.config.settings import Settings
from orchestration.pipeline.snapshot import SnapshotManifest

if TYPE_CHECKING:
    from training.tracking import ModelRegistry

STANDIN_EVAL_FILE = "eval_sets/standin_general.jsonl"
"""Where ``register_pretrained_base`` copies the stand-in's held-out corpus slice, under the home."""


@dataclass(frozen=True)
class BaseModel:
    """The first champion: ``version`` registered (or found) with aliases base and champion."""

    version: str
    reused: bool
    """True when a base version already existed (nothing was built)."""
    mlflow_run_id: str | None = None
    """The ``base-model`` run; None when reused."""
    facts: dict = field(default_factory=dict)
    """``pretrain.json`` of a stand-in built by ``register_pretrained_base`` (corpus, steps, losses); else {}."""


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


def register_pretrained_base(
    settings: Settings, registry: ModelRegistry, cache_dir: Path, *, tiny: bool = False, steps: int | None = None
) -> BaseModel:
    """Build (or reuse from ``cache_dir``) the pretrained stand-in base (``training.pretrain.pretrain_base``) and
    register it as the home's base version (aliases base and champion), with its held-out corpus slice copied
    to ``<home>/eval_sets/standin_general.jsonl`` and named in the version's ``streamtune.general_eval`` tag:
    the default general-capability set of the promotion gate (``pipeline.general``).

    Args:
        cache_dir: content-keyed cache folder (``~/.cache/streamtune/base`` by default in the CLI).
        tiny: the seconds-long test configuration (``PretrainConfig.tiny``).
        steps: override the number of training steps.

    Raises:
        ValueError: the home already has a base version (a lineage's base never changes).
    """
    # lazy: torch and transformers
    from dataclasses import replace

    from orchestration.pipeline.general import GENERAL_EVAL_TAG
    from training.pretrain import GENERAL_EVAL_FILE, PRETRAIN_FILE, PretrainConfig, pretrain_base

    existing = registry.version_for_alias("base")
    if existing is not None:
        raise ValueError(f"{settings.home} already has base version v{existing}; pretrain into a new home")
    cfg = PretrainConfig.tiny() if tiny else PretrainConfig()
    cfg = replace(cfg, steps=steps) if steps else cfg
    model_dir = pretrain_base(cache_dir, cfg)
    facts = json.loads((model_dir / PRETRAIN_FILE).read_text())
    eval_file = settings.home / STANDIN_EVAL_FILE
    eval_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_dir / GENERAL_EVAL_FILE, eval_file)
    params = {"base_model": "pretrained-standin", "pretrain.key": facts["key"]}
    params.update({f"pretrain.{k}": v for k, v in facts.items() if isinstance(v, (int, float, str)) and k != "key"})
    params.update({f"pretrain.config.{k}": v for k, v in facts["config"].items()})
    tags = {"streamtune.role": "base", "streamtune.base_kind": "pretrained-standin", GENERAL_EVAL_TAG: str(eval_file)}
    run_id, version = registry.register_base(model_dir=model_dir, params=params, tags=tags)
    return BaseModel(version=version, reused=False, mlflow_run_id=run_id, facts=facts)
