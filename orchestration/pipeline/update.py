"""How an update is made, decided and recorded: the fine-tune step of the loop, Dagster-free.

``run_update`` fine-tunes the champion on a snapshot, scores champion and challenger, asks the promotion
gate (``training.gate.decide_promotion``) and registers the challenger in MLflow (``challenger_model``
asset, pool ``training``; it reads ``train.ledger`` once, before training, and never writes DuckDB).
``orchestration.pipeline.update_record.record_update`` writes the finished update, promoted or not, to the
version's tags and the warehouse (``model_update`` asset, pool ``duckdb``), so a rejected update is on record and
its windows are not retried. The blocking asset check then only judges the ``UpdateResult``; ``champion_model``
moves the alias.

Heavy libraries (torch, transformers, mlflow) are imported inside the functions that need them: this
module is imported when the Dagster code location loads.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from orchestration.config.settings import Settings
from orchestration.pipeline.general import GeneralGuard
from orchestration.pipeline.lineage import champion_lineage, check_untrained
from orchestration.pipeline.progress import PROGRESS_FILE, ProgressFile
from orchestration.pipeline.recipe_step import apply_recipe
from orchestration.pipeline.snapshot import SnapshotManifest
from orchestration.store.warehouse import Warehouse
from quality.pii import redact_values
from training.config import TrainConfig

if TYPE_CHECKING:
    from training.finetune import FinetuneResult
    from training.tracking import DatasetRef, ModelRegistry

PipesLaunch = Callable[..., "tuple[FinetuneResult, dict]"]
"""Runs the fine-tune in external processes (``orchestration.pipes.finetune_via_pipes`` bound to its Dagster
context); called with the keyword arguments ``parent_dir``, ``snapshot_dir``, ``cfg``, ``out_dir``,
``checkpoint_dir``, ``nproc``, ``mlflow_tracking_uri``, ``mlflow_run_id``, ``progress_file`` and returns
``(rank 0's FinetuneResult, metadata rank 0 reported)``."""


class NoHeldOutRows(ValueError):
    """The snapshot's new windows have no held-out row: the promotion gate has nothing to judge."""


@dataclass(frozen=True)
class UpdateResult:
    """One finished update: the ``challenger_model`` and ``model_update`` assets' value (as ``to_dict()``)."""

    version: str
    """The challenger's registered model version."""
    mlflow_run_id: str
    """The update's MLflow run."""
    parent_version: str
    """The champion (or base) version it was fine-tuned from."""
    metrics: dict[str, float]
    """``FinetuneResult.metrics()``: losses, perplexities and bits/byte of champion and challenger, speed."""
    promote: bool
    """The promotion gate's decision."""
    reason: str
    """The gate's one-line reason (PASS/FAIL with the numbers)."""
    gate_tags: dict[str, str]
    """``PromotionDecision.tags()``: ``gate.*`` version tags."""
    snapshot: SnapshotManifest
    """The snapshot it was trained on."""
    matrix: dict[str, dict[str, dict[str, float]]]
    """``{"before" | "after": {window_key: {"loss", "bpb", "texts", "bytes"}}}``: one row of the eval matrix
    (loss in nats/token, bpb in bits/byte, texts and bytes as counts)."""
    samples: list[dict[str, str]] = field(default_factory=list)
    """A few ``{"prompt", "completion"}`` continuations by the challenger, PII-redacted."""
    launch_metadata: dict[str, Any] = field(default_factory=dict)
    """What rank 0 of a Pipes launch reported (world size, backend, speed); {} in-process."""
    cl_summary: dict[str, float] = field(default_factory=dict)
    """``{"cl_acc", "cl_bwt", "cl_forgetting"}`` over all updates so far; set by ``record_update``."""

    def to_dict(self) -> dict:
        """JSON-able dict (the snapshot as ``SnapshotManifest.to_dict()``) with ``samples`` empty: the dict is
        the asset value Dagster's IO manager keeps, where a deletion request cannot reach the prompts (held-out
        rows' first words); the samples stay in the MLflow artifact ``samples/generations.json``."""
        return {**asdict(self), "samples": [], "snapshot": self.snapshot.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> UpdateResult:
        """Inverse of ``to_dict``; keys unknown to this class are ignored, missing optional ones defaulted."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and k != "snapshot"}, snapshot=_manifest(d))


def _manifest(d: dict) -> SnapshotManifest:
    return d["snapshot"] if isinstance(d["snapshot"], SnapshotManifest) else SnapshotManifest.from_dict(d["snapshot"])


@dataclass(frozen=True)
class _Plan:
    """Where and how one update trains: keyed by what is trained (snapshot + parent), not by the run, so a
    retried run resumes the checkpoint in ``work_dir``."""

    manifest: SnapshotManifest
    parent: str
    parent_dir: Path
    work_dir: Path
    cfg: TrainConfig
    launcher: str
    nproc: int
    guard: GeneralGuard  # general sets read and the parent scored on them before training
    recipe: dict = field(default_factory=dict)  # recipe.* params of [train] recipe = adaptive | meta (recipe_step)

    @property
    def out_dir(self) -> Path:
        return self.work_dir / "challenger"

    @property
    def run_name(self) -> str:
        first, last = self.manifest.window_keys[0], self.manifest.window_keys[-1]
        return f"update {first}" if first == last else f"update {first}..{last}"


def _plan(settings: Settings, registry: ModelRegistry, manifest: SnapshotManifest, base_version: str) -> _Plan:
    """The parent (champion, else base), copied locally once under ``models/registry/v{N}``, and the work dirs."""
    parent = registry.version_for_alias("champion") or base_version
    parent_dir = registry.local_copy(parent, settings.paths.registry_copy(parent))  # + train state
    launcher, nproc = settings.launch.launcher, settings.launch.nproc
    work_dir = settings.paths.models / "updates" / f"{manifest.snapshot_id}-from-v{parent}"
    guard = GeneralGuard.start(settings, registry, base_version, parent_dir, settings.train)
    return _Plan(manifest, parent, parent_dir, work_dir, settings.train, launcher, nproc, guard)


def run_update(
    settings: Settings,
    registry: ModelRegistry,
    manifest: SnapshotManifest,
    *,
    warehouse: Warehouse,
    base_version: str,
    dagster_run_id: str,
    trigger: str,
    log: Callable[[str], None] = print,
    pipes_launch: PipesLaunch | None = None,
) -> UpdateResult:
    """Fine-tune the champion on ``manifest``, judge the challenger and register it (alias challenger).

    One MLflow run, started before training so system metrics (CPU, memory, GPU) are recorded beside it and
    marked FAILED if training raises. In-process (``[train] launcher = "inprocess"``) it calls
    ``training.finetune.finetune``; with ``launcher = "pipes"`` it calls ``pipes_launch`` (torchrun, DDP when
    ``nproc`` > 1; rank 0 logs the loss curve live). The gate (``training.gate.decide_promotion`` on the new
    windows' and retention bits/byte) only previews here: ``record_update`` records it, the asset check judges.

    Args:
        warehouse: read once, read-only, before training: the snapshot's windows must not be in ``train.ledger``.
        base_version: the base model's version, the parent when no champion alias exists.
        log: receives one line per optimizer step (``step N: train loss L, lr R``) and on resume.
        pipes_launch: required when the launcher is ``pipes``.

    Raises:
        lineage.AlreadyTrained: a window is in ``train.ledger`` or the champion's lineage (a retried run whose
            windows another run trained); nothing trained, no MLflow run.
        lineage.SnapshotGone: the snapshot folder is missing or holds another content.
        NoHeldOutRows: no new window had a held-out row (only single-row windows); nothing to judge.
        EvalSetError: a general set (``[gate] eval_sets``, ``pipeline.general``) is missing, empty or malformed.
        ValueError: the launcher is ``pipes`` and no ``pipes_launch`` was given.
    """
    check_untrained(manifest, ledger=warehouse.trained_by(manifest.window_keys), lineage=champion_lineage(registry))
    plan = apply_recipe(_plan(settings, registry, manifest, base_version))  # the manifest's [train] recipe
    if plan.launcher == "pipes" and pipes_launch is None:
        raise ValueError('[train] launcher = "pipes" needs a pipes_launch (run the update through Dagster)')
    shutil.rmtree(plan.out_dir, ignore_errors=True)
    progress = ProgressFile(settings.paths.logs / PROGRESS_FILE, run_id=dagster_run_id)
    run_id = registry.start_run(plan.run_name, tags={"dagster.run_id": dagster_run_id, "streamtune.trigger": trigger})
    launch_metadata: dict = {}
    try:
        with registry.system_metrics(run_id):
            if plan.launcher == "pipes":  # external processes (torchrun; DDP when nproc > 1), rank 0 reports back
                result, launch_metadata = pipes_launch(
                    parent_dir=plan.parent_dir,
                    snapshot_dir=manifest.directory,
                    cfg=plan.cfg,
                    out_dir=plan.out_dir,
                    checkpoint_dir=plan.work_dir / "checkpoint",
                    nproc=plan.nproc,
                    mlflow_tracking_uri=registry.tracking_uri,
                    mlflow_run_id=run_id,
                    progress_file=progress.path,
                )
            else:
                result = _finetune_inprocess(plan, log, progress.update)
        from training.adapters import fill_base_version  # lazy: torch; an adapter's base is the parent's base

        fill_base_version(plan.out_dir, plan.parent)
        plan.guard.score_challenger(plan.out_dir)
        samples = _sample_generations(plan.out_dir, manifest.texts("new_eval"), settings.samples_per_update, plan.cfg)
    except BaseException:
        registry.fail_run(run_id)
        raise
    finally:
        progress.clear()
    if result.resumed_from_step:
        log(f"resumed a killed update at step {result.resumed_from_step}")
    return _judge_and_register(
        settings, registry, plan, result, run_id, samples, launch_metadata, dagster_run_id, trigger
    )


def _finetune_inprocess(plan: _Plan, log: Callable[[str], None], on_progress: Callable[[str, int, int], None]):
    """``training.finetune.finetune`` on the snapshot's splits; returns its ``FinetuneResult``."""
    # lazy: keeps torch and transformers out of the code location's imports
    from training.finetune import FinetuneRequest, finetune

    manifest = plan.manifest
    new_by_window = manifest.texts_by_window("new_eval")

    def on_step(step: int, loss: float, lr: float) -> None:
        log(f"step {step}: train loss {loss:.4f}, lr {lr:.2e}")

    request = FinetuneRequest(
        parent=plan.parent_dir,
        train_texts=manifest.texts("train") + manifest.texts("replay"),
        cfg=plan.cfg,
        out_dir=plan.out_dir,
        new_eval_texts=manifest.texts("new_eval"),
        retention_eval_texts=manifest.texts("retention_eval"),
        first_eval_texts=manifest.texts("first_eval"),
        forward_eval=new_by_window,
        matrix_eval={**manifest.texts_by_window("retention_eval"), **new_by_window},
        checkpoint_dir=plan.work_dir / "checkpoint",
        on_step=on_step,
        on_progress=on_progress,
        base_version=plan.parent,  # adapter mode from a full parent: the parent becomes the frozen base
        fisher_texts=manifest.texts("replay"),  # EWC's Fisher on replayed rows (empty: the training rows)
        meta_tasks=manifest.texts_by_window("replay") if plan.cfg.reptile_init else {},  # Reptile: past windows
    )
    return finetune(request)


def _judge_and_register(
    settings: Settings,
    registry: ModelRegistry,
    plan: _Plan,
    result: FinetuneResult,
    run_id: str,
    samples: list[dict[str, str]],
    launch_metadata: dict,
    dagster_run_id: str,
    trigger: str,
) -> UpdateResult:
    """Gate preview, then the MLflow run finished and the challenger registered; the work dir is removed."""
    manifest = plan.manifest
    metrics = {**result.metrics(), **plan.guard.metrics()}
    matrix = {
        phase: {
            w: {"loss": r.loss, "bpb": r.bits_per_byte, "texts": r.texts, "bytes": r.bytes} for w, r in results.items()
        }
        for phase, results in (("before", result.forward_before), ("after", result.matrix_after))
    }
    matrix_metrics = {
        f"eval_matrix.{phase}.{w}.bpb": sc["bpb"] for phase, rows in matrix.items() for w, sc in rows.items()
    }
    if "challenger_new_bpb" not in metrics:  # only possible for single-row windows: nothing to judge on
        raise NoHeldOutRows(
            f"windows {manifest.window_keys} have no held-out rows: the promotion gate cannot judge "
            "this update; land larger windows or raise eval_fraction"
        )
    decision = plan.guard.decide(metrics, settings.gate)  # new window, retention and general sets
    samples_file = plan.work_dir / "generations.json"
    samples_file.write_text(json.dumps(samples, indent=2, ensure_ascii=False))
    windows = ", ".join(manifest.window_keys)
    run_id, version = registry.log_update(
        run_id=run_id,
        run_name=plan.run_name,
        datasets=_dataset_refs(manifest),
        model_dir=plan.out_dir,
        params={**_update_params(settings, plan, result), **plan.recipe},
        metrics={**metrics, **matrix_metrics},
        curve=result.fit.curve if plan.launcher == "inprocess" else [],  # a Pipes launch's rank 0 logged it live
        tags={
            "dagster.run_id": dagster_run_id,
            "dagster.asset": "challenger_model",
            "streamtune.trigger": trigger,
            "streamtune.windows": ",".join(manifest.window_keys),
            "streamtune.parent_version": plan.parent,
        },
        artifacts={"snapshot": Path(manifest.directory) / "manifest.json", "samples": samples_file},
        description=f"Fine-tuned from v{plan.parent} on windows {windows}. Gate preview: {decision.reason}",
    )
    shutil.rmtree(plan.work_dir, ignore_errors=True)  # the registry holds the model now
    return UpdateResult(
        version=version,
        mlflow_run_id=run_id,
        parent_version=plan.parent,
        metrics=metrics,
        promote=decision.promote,
        reason=decision.reason,
        gate_tags=decision.tags(),
        snapshot=manifest,
        matrix=matrix,
        samples=samples,
        launch_metadata={**launch_metadata, **plan.recipe},
    )


def _update_params(settings: Settings, plan: _Plan, result: FinetuneResult) -> dict:
    """The update run's MLflow params: train config, lineage, snapshot, row counts, device, launch, replay."""
    manifest = plan.manifest
    return {
        **{f"train.{k}": v for k, v in plan.cfg.to_dict().items()},
        "parent_version": plan.parent,
        "windows": ",".join(manifest.window_keys),
        "snapshot_id": manifest.snapshot_id,
        "snapshot_sha256": manifest.content_sha256,
        "train_rows": manifest.rows["train"],
        "new_eval_rows": manifest.rows["new_eval"],
        "retention_eval_rows": manifest.rows["retention_eval"],
        "device": result.device,
        "bf16": result.bf16,
        "threads": result.threads,
        "replay_rows": manifest.rows.get("replay", 0),
        "lora": result.lora,
        "launcher": plan.launcher,
        "nproc": plan.nproc,
        **{f"replay.{k}": v for k, v in settings.replay.to_dict().items()},
    }


def _dataset_refs(manifest: SnapshotManifest) -> list[DatasetRef]:
    """The snapshot's Parquet splits as MLflow dataset inputs (name, sha256 digest, path, rows, windows)."""
    # lazy: training.tracking imports mlflow, torch and transformers
    from training.tracking import DatasetRef

    refs = []
    for split, context in (
        ("train", "training"),
        ("replay", "training"),
        ("new_eval", "evaluation"),
        ("retention_eval", "evaluation"),
    ):
        path = manifest.path(split)
        if not path.exists():
            continue
        frame = pl.read_parquet(path, columns=["window_key"])
        refs.append(
            DatasetRef(
                name=f"{split}",
                digest=hashlib.sha256(path.read_bytes()).hexdigest(),
                source=path.resolve().as_uri(),
                rows=manifest.rows.get(split, 0),
                windows=tuple(frame["window_key"].unique(maintain_order=True).to_list()),
                context=context,
            )
        )
    return refs


def _sample_generations(model_dir: Path, texts: list[str], n: int, cfg: TrainConfig) -> list[dict[str, str]]:
    """A few continuations by the challenger, prompted with held-out rows' first words, PII-redacted again."""
    if n <= 0:
        return []
    # lazy: keeps torch and transformers out of the code location's imports
    from training.generate import prompts_from_texts, sample_generations

    samples = sample_generations(model_dir, prompts_from_texts(texts, n=n), seed=cfg.seed)
    completions = redact_values([s["completion"] for s in samples])
    return [{"prompt": s["prompt"], "completion": c or ""} for s, c in zip(samples, completions)]
