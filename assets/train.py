"""Train: snapshot -> base model (once) -> challenger (fine-tune from the champion) -> gate check -> champion.

The promotion gate is the blocking check ``challenger_beats_champion`` on ``challenger_model``. It runs in
the ``duckdb`` pool and first *records* the update (version tags, ledger, updates, eval matrix, replay
buffer) and only then judges it, so a rejected challenger is always on record. A rejection fails the
check (ERROR, blocking): ``champion_model``, which only moves the ``champion`` alias, is skipped and the
run ends failed with the gate's reason, while the windows are not retried (they are in the ledger).
"""

import json
import shutil
from pathlib import Path

import dagster as dg

from orchestration.pipeline.progress import PROGRESS_FILE, ProgressFile
from orchestration.resources import MlflowResource, StreamtuneResource, WarehouseResource
from orchestration.tags import TRIGGER_TAG


def _trigger(context: dg.AssetExecutionContext) -> str:
    return context.run.tags.get(TRIGGER_TAG, "manual")


@dg.asset(
    deps=["approved_window"],
    pool="duckdb",
    group_name="training",
    kinds={"duckdb", "parquet"},
    output_required=False,
    description="Approved windows not yet in train.ledger, split into train / held-out rows, plus a retention "
    "slice of earlier windows, exported to Parquet so training never opens DuckDB. Skips (and so skips the "
    "fine-tune) when no window is pending.",
)
def training_snapshot(context: dg.AssetExecutionContext, streamtune: StreamtuneResource, warehouse: WarehouseResource):
    from orchestration.pipeline.snapshot import build_snapshot

    settings = streamtune.settings()
    manifest = build_snapshot(
        warehouse.warehouse(),
        settings.paths.snapshots,
        eval_fraction=settings.eval_fraction,
        retention_rows=settings.retention_rows,
        max_windows=settings.max_windows_per_update,
        seed=settings.train_config().seed,
        replay_fraction=settings.replay_config().fraction,
    )
    if manifest is None:
        context.log.info("no approved window is pending: nothing to fine-tune")
        return
    yield dg.Output(
        manifest.to_dict(),
        metadata={
            "dagster/row_count": manifest.rows["train"],
            "windows": dg.MetadataValue.json(manifest.window_keys),
            "rows_by_split": manifest.rows,
            "content_sha256": manifest.content_sha256,
            "path": dg.MetadataValue.path(manifest.directory),
        },
    )


@dg.asset(
    pool="training",
    group_name="training",
    kinds={"pytorch", "mlflow"},
    description="The first champion: a byte-level BPE tokenizer and a small GPT-style model built from the first "
    "snapshot's training rows (or the Hugging Face id / local path in settings.base_model), registered with "
    "aliases base and champion. Built once; later runs reuse it.",
)
def base_model(
    context: dg.AssetExecutionContext, training_snapshot: dict, streamtune: StreamtuneResource, mlflow: MlflowResource
) -> dg.Output:
    from orchestration.pipeline.snapshot import SnapshotManifest
    from training.modeling import prepare_base

    settings = streamtune.settings()
    registry = mlflow.registry()
    existing = registry.version_for_alias("base")
    if existing is not None:
        return dg.Output({"version": existing, "reused": True}, metadata={"version": existing, "reused": True})
    manifest = SnapshotManifest.from_dict(training_snapshot)
    out_dir = settings.paths.models / "base"
    shutil.rmtree(out_dir, ignore_errors=True)
    model_cfg = settings.model_config()
    prepare_base(
        settings.base_model or None, manifest.texts("train"), model_cfg, out_dir, seed=settings.train_config().seed
    )
    params = {
        "base_model": settings.base_model or "local-gpt2",
        **{f"model.{k}": v for k, v in model_cfg.to_dict().items()},
        "tokenizer_windows": ",".join(manifest.window_keys),
    }
    run_id, version = registry.register_base(
        model_dir=out_dir, params=params, tags={"dagster.run_id": context.run_id, "streamtune.role": "base"}
    )
    return dg.Output({"version": version, "reused": False}, metadata={"version": version, "mlflow_run_id": run_id})


@dg.asset(
    pool="training",
    group_name="training",
    kinds={"pytorch", "mlflow"},
    description="Fine-tune from the current champion on the snapshot's new windows mixed with replayed rows (LR "
    "re-warm/re-decay, AdamW state carried over, checkpoints so a killed update resumes), evaluated before and after "
    "on the new windows' held-out rows, the retention slice (per window: one row of the eval matrix) and the first "
    "window. One MLflow run and one registered version (alias challenger).",
)
def challenger_model(
    context: dg.AssetExecutionContext,
    training_snapshot: dict,
    base_model: dict,
    streamtune: StreamtuneResource,
    mlflow: MlflowResource,
) -> dg.Output:
    from orchestration.pipeline.snapshot import SnapshotManifest
    from training.finetune import finetune
    from training.gate import decide_promotion

    settings = streamtune.settings()
    registry = mlflow.registry()
    manifest = SnapshotManifest.from_dict(training_snapshot)
    parent = registry.version_for_alias("champion") or base_model["version"]
    parent_dir = settings.paths.models / "registry" / f"v{parent}"
    if not (parent_dir / "config.json").exists():
        registry.download_version(parent, parent_dir)
        registry.download_train_state(parent, parent_dir)
    cfg = settings.train_config()
    launcher, nproc = settings.train_launch()
    launch_metadata: dict = {}  # what rank 0 of a Pipes launch reported (world size, backend, speed)
    # keyed by what is trained (snapshot + parent), not by the run: a retried run resumes the checkpoint
    work_dir = settings.paths.models / "updates" / f"{manifest.snapshot_id}-from-v{parent}"
    out_dir = work_dir / "challenger"
    shutil.rmtree(out_dir, ignore_errors=True)

    def on_step(step: int, loss: float, lr: float) -> None:
        context.log.info(f"step {step}: train loss {loss:.4f}, lr {lr:.2e}")

    progress = ProgressFile(settings.paths.logs / PROGRESS_FILE, run_id=context.run_id)
    first, last = manifest.window_keys[0], manifest.window_keys[-1]
    run_name = f"update {first}" if first == last else f"update {first}..{last}"
    # the run exists during training so MLflow records system metrics (CPU, memory, GPU) beside it
    run_id = registry.start_run(
        run_name, tags={"dagster.run_id": context.run_id, "streamtune.trigger": _trigger(context)}
    )
    new_by_window = manifest.texts_by_window("new_eval")
    replay = manifest.texts("replay")
    try:
        with registry.system_metrics(run_id):
            if launcher == "pipes":  # external processes (torchrun; DDP when nproc > 1), rank 0 reports back
                from orchestration.pipes import finetune_via_pipes

                result, launch_metadata = finetune_via_pipes(
                    context,
                    parent_dir=parent_dir,
                    snapshot_dir=manifest.directory,
                    cfg=cfg,
                    out_dir=out_dir,
                    checkpoint_dir=work_dir / "checkpoint",
                    nproc=nproc,
                    mlflow_tracking_uri=registry.tracking_uri,
                    mlflow_run_id=run_id,
                    progress_file=progress.path,
                )
            else:
                result = finetune(
                    parent_dir,
                    manifest.texts("train") + replay,
                    manifest.texts("new_eval"),
                    manifest.texts("retention_eval"),
                    cfg,
                    out_dir,
                    on_step=on_step,
                    first_eval_texts=manifest.texts("first_eval"),
                    forward_eval=new_by_window,
                    matrix_eval={**manifest.texts_by_window("retention_eval"), **new_by_window},
                    checkpoint_dir=work_dir / "checkpoint",
                    on_progress=progress.update,
                )
        samples = _sample_generations(out_dir, manifest.texts("new_eval"), settings.samples_per_update, cfg.seed)
    except BaseException:
        registry.fail_run(run_id)
        raise
    finally:
        progress.clear()
    if result.resumed_from_step:
        context.log.info(f"resumed a killed update at step {result.resumed_from_step}")
    metrics = result.metrics()
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
        raise dg.Failure(
            f"windows {manifest.window_keys} have no held-out rows: the promotion gate cannot judge "
            "this update; land larger windows or raise eval_fraction"
        )
    decision = decide_promotion(
        metrics.get("champion_new_bpb"),
        metrics["challenger_new_bpb"],
        metrics.get("champion_retention_bpb"),
        metrics.get("challenger_retention_bpb"),
        settings.gate_config(),
    )
    manifest_file = Path(manifest.directory) / "manifest.json"
    samples_file = work_dir / "generations.json"
    samples_file.write_text(json.dumps(samples, indent=2, ensure_ascii=False))
    run_id, version = registry.log_update(
        run_id=run_id,
        run_name=run_name,
        datasets=_dataset_refs(manifest),
        model_dir=out_dir,
        params={
            **{f"train.{k}": v for k, v in cfg.to_dict().items()},
            "parent_version": parent,
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
            "launcher": launcher,
            "nproc": nproc,
            **{f"replay.{k}": v for k, v in settings.replay_config().to_dict().items()},
        },
        metrics={**metrics, **matrix_metrics},
        curve=result.fit.curve if launcher == "inprocess" else [],  # a Pipes launch's rank 0 logged it live
        tags={
            "dagster.run_id": context.run_id,
            "dagster.asset": "challenger_model",
            "streamtune.trigger": _trigger(context),
            "streamtune.windows": ",".join(manifest.window_keys),
            "streamtune.parent_version": parent,
        },
        artifacts={"snapshot": manifest_file, "samples": samples_file},
        description=f"Fine-tuned from v{parent} on windows {', '.join(manifest.window_keys)}. Gate preview: {decision.reason}",
    )
    shutil.rmtree(work_dir, ignore_errors=True)  # the registry holds the model now
    value = {
        "version": version,
        "mlflow_run_id": run_id,
        "parent_version": parent,
        "metrics": metrics,
        "promote": decision.promote,
        "reason": decision.reason,
        "gate_tags": decision.tags(),
        "snapshot": manifest.to_dict(),
        "matrix": matrix,
    }
    return dg.Output(
        value,
        metadata={
            "version": version,
            "mlflow_run_id": run_id,
            "parent_version": parent,
            "windows": dg.MetadataValue.json(manifest.window_keys),
            "gate": decision.reason,
            "eval": dg.MetadataValue.md(_eval_table(metrics)),
            "eval_matrix": dg.MetadataValue.md(_matrix_table(matrix)),
            "sample_generations": dg.MetadataValue.md(_samples_table(samples)),
            "mlflow_run": dg.MetadataValue.url(mlflow_links(settings, registry, run_id)),
            "mlflow_model_version": dg.MetadataValue.url(mlflow_links(settings, registry, run_id, version)),
            **{k: float(v) for k, v in metrics.items()},
            **launch_metadata,
        },
    )


@dg.asset_check(
    asset=challenger_model,
    blocking=True,
    pool="duckdb",
    description="Promotion gate (blocking): new-window bits/byte improve by gate.min_improvement and "
    "retention bits/byte worsen by at most gate.retention_tolerance. Records the update first (version "
    "tags, train.ledger, train.updates, monitor.eval_matrix, train.replay_buffer), so a rejection is on "
    "record; a rejection then blocks champion_model.",
)
def challenger_beats_champion(
    context: dg.AssetCheckExecutionContext,
    challenger_model: dict,
    streamtune: StreamtuneResource,
    mlflow: MlflowResource,
    warehouse: WarehouseResource,
) -> dg.AssetCheckResult:
    from orchestration.pipeline.snapshot import record_update

    replay = streamtune.settings().replay_config()
    summary = record_update(
        warehouse.warehouse(),
        mlflow.registry(),
        challenger_model,
        replay_size=replay.size,
        replay_seed=replay.seed,
        trigger=context.run.tags.get(TRIGGER_TAG, "manual"),
        dagster_run_id=context.run.run_id,
    )
    return dg.AssetCheckResult(
        passed=bool(challenger_model["promote"]),
        severity=dg.AssetCheckSeverity.ERROR,
        description=challenger_model["reason"],
        metadata={
            **{k: v for k, v in challenger_model["gate_tags"].items() if k.startswith("gate.")},
            "version": challenger_model["version"],
            **{k: float(v) for k, v in summary.items()},
        },
    )


@dg.asset(
    pool="duckdb",
    group_name="training",
    kinds={"mlflow", "duckdb"},
    description="The champion alias: moved to the challenger once the blocking gate check challenger_beats_champion "
    "has passed (that check records every update, promoted or not). Skipped when the gate rejects.",
)
def champion_model(
    context: dg.AssetExecutionContext, challenger_model: dict, mlflow: MlflowResource
) -> dg.MaterializeResult:
    registry = mlflow.registry()
    version = challenger_model["version"]
    if challenger_model["promote"]:  # always true here: the blocking check stops rejected challengers
        registry.set_alias("champion", version)
    champion = registry.version_for_alias("champion")
    context.log.info(
        ("promoted" if challenger_model["promote"] else "rejected") + f" v{version}: {challenger_model['reason']}"
    )
    return dg.MaterializeResult(
        metadata={
            "champion_version": champion,
            "challenger_version": version,
            "promoted": challenger_model["promote"],
            "reason": challenger_model["reason"],
        }
    )


def mlflow_links(settings, registry, run_id: str, version: str | None = None) -> str:
    """URL of an MLflow run (or, with ``version``, of the registered model version) in the MLflow UI."""
    base = settings.mlflow_ui_url.rstrip("/")
    if version is not None:
        return f"{base}/#/models/{registry.model_name}/versions/{version}"
    return f"{base}/#/experiments/{registry.experiment_id()}/runs/{run_id}"


def _dataset_refs(manifest) -> list:
    """The snapshot's Parquet splits as MLflow dataset inputs (name, sha256 digest, path, rows, windows)."""
    import hashlib

    import polars as pl

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
        windows = tuple(
            pl.read_parquet(path, columns=["window_key"])["window_key"].unique(maintain_order=True).to_list()
        )
        refs.append(
            DatasetRef(
                name=f"{split}",
                digest=hashlib.sha256(path.read_bytes()).hexdigest(),
                source=path.resolve().as_uri(),
                rows=manifest.rows.get(split, 0),
                windows=windows,
                context=context,
            )
        )
    return refs


def _sample_generations(model_dir: Path, texts: list[str], n: int, seed: int) -> list[dict[str, str]]:
    """A few continuations by the challenger, prompted with held-out rows' first words, PII-redacted again."""
    if n <= 0:
        return []
    from quality.pii import redact_values
    from training.generate import prompts_from_texts, sample_generations

    samples = sample_generations(model_dir, prompts_from_texts(texts, n=n), seed=seed)
    completions = redact_values([s["completion"] for s in samples])
    return [{"prompt": s["prompt"], "completion": c or ""} for s, c in zip(samples, completions)]


def _samples_table(samples: list[dict[str, str]]) -> str:
    if not samples:
        return "no samples (samples_per_update = 0)"
    esc = lambda t: t.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return "\n".join(
        [
            "| prompt | challenger's continuation |",
            "|---|---|",
            *[f"| {esc(s['prompt'])} | {esc(s['completion'])} |" for s in samples],
        ]
    )


def _matrix_table(matrix: dict) -> str:
    """Bits/byte per evaluated window, champion (before) and challenger (after)."""
    before, after = matrix.get("before", {}), matrix.get("after", {})
    lines = ["| window | champion bits/byte | challenger bits/byte |", "|---|---|---|"]
    for w in sorted(set(before) | set(after)):
        b, a = before.get(w, {}).get("bpb"), after.get(w, {}).get("bpb")
        lines.append(f"| {w} | {'' if b is None else f'{b:.4f}'} | {'' if a is None else f'{a:.4f}'} |")
    return "\n".join(lines)


def _eval_table(metrics: dict[str, float]) -> str:
    lines = ["| slice | model | loss | perplexity | bits/byte |", "|---|---|---|---|---|"]
    for slice_ in ("new", "retention"):
        for model in ("champion", "challenger"):
            p = f"{model}_{slice_}_"
            if p + "loss" in metrics:
                lines.append(
                    f"| {slice_} | {model} | {metrics[p + 'loss']:.4f} | {metrics[p + 'ppl']:.2f} | {metrics[p + 'bpb']:.4f} |"
                )
    return "\n".join(lines)


TRAINING_ASSETS = [training_snapshot, base_model, challenger_model, champion_model]
