"""Train: snapshot -> base model (once) -> challenger (fine-tune) -> model_update (recorded) -> gate check -> champion.

``challenger_model`` (pool ``training``) trains, scores and registers the challenger; it reads DuckDB once, before
training, to refuse windows already trained (a retried run whose windows another run took).
``model_update`` (pool ``duckdb``, the one writer) records it, promoted or not: version tags, ledger, updates,
eval matrix, replay buffer. The promotion gate is the blocking check ``challenger_beats_champion`` on
``model_update``; it only judges. A rejection fails the check (ERROR, blocking): ``champion_model``, which only
moves the ``champion`` alias, is skipped and the run ends failed with the gate's reason, while the windows are
not retried (they are in the ledger). The steps are in ``orchestration.pipeline.snapshot``, ``.base`` and ``.update``.
"""

from functools import partial

import dagster as dg

from assets.metadata import challenger_metadata, model_card_link
from orchestration.pipeline.alerts import gate_numbers
from orchestration.pipeline.approval import pending_approvals, settle_champion
from orchestration.pipeline.base import ensure_base
from orchestration.pipeline.lineage import AlreadyTrained, SnapshotGone
from orchestration.pipeline.model_card import record_with_card
from orchestration.pipeline.recipe_step import snapshot_for_update
from orchestration.pipeline.snapshot import SnapshotManifest
from orchestration.pipeline.trigger import REFRESH_WINDOWS_TAG
from orchestration.pipeline.update import NoHeldOutRows, UpdateResult, run_update
from orchestration.pipes import finetune_via_pipes
from orchestration.resources import MlflowResource, StreamtuneResource, WarehouseResource
from orchestration.store.warehouse import Warehouse
from orchestration.tags import TRIGGER_TAG

_PER_RUN = {"io_manager_key": "run_io_manager"}
"""Outputs kept per run (``orchestration.resources.RunScopedIOManager``): a retried run reloads its own
snapshot and challenger, never those of a later run."""
_MODEL = {"pool": "training", "group_name": "training", "kinds": {"pytorch", "mlflow"}, **_PER_RUN}
"""An asset that trains or builds a model: pool ``training`` (it only reads train.ledger, once, before training)."""
_RECORD = {"pool": "duckdb", "group_name": "training", **_PER_RUN}
"""An asset that reads or writes the warehouse: pool ``duckdb``."""


def _trigger(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> str:
    return context.run.tags.get(TRIGGER_TAG, "manual")


@dg.asset(
    **_RECORD,
    deps=["approved_window"],
    output_required=False,
    kinds={"duckdb", "parquet"},
    description="Approved windows not yet in train.ledger, split into train / held-out rows, plus a retention "
    "slice of earlier windows, exported to Parquet so training never opens DuckDB; the [train] recipe is chosen "
    "here and kept in the manifest. Skips (and so skips the fine-tune) when no window is pending, or when the "
    "recipe says no update for a new_data / drift run (an observation gives the reason). A drift run with "
    "nothing pending refreshes its drifted windows (streamtune/refresh_windows).",
)
def training_snapshot(context: dg.AssetExecutionContext, streamtune: StreamtuneResource, warehouse: WarehouseResource):
    refresh = [w for w in context.run.tags.get(REFRESH_WINDOWS_TAG, "").split(",") if w]
    out = snapshot_for_update(
        streamtune.settings(), warehouse.warehouse(), trigger=_trigger(context), refresh_windows=refresh
    )
    manifest = out.manifest
    if manifest is None:
        context.log.info(out.skip)
        if out.recipe:  # the recipe said no update: on record in the asset's history, with its reason
            context.log_event(dg.AssetObservation(context.asset_key, metadata={"no_update": out.skip, **out.recipe}))
        return
    yield dg.Output(
        manifest.to_dict(),
        metadata={
            "dagster/row_count": manifest.rows["train"],
            "windows": dg.MetadataValue.json(manifest.window_keys),
            "rows_by_split": manifest.rows,
            "content_sha256": manifest.content_sha256,
            "path": dg.MetadataValue.path(manifest.directory),
            **({"refresh": True} if manifest.refresh else {}),
            **manifest.recipe,
        },
    )


@dg.asset(
    **_MODEL,
    description="The first champion: a byte-level BPE tokenizer and a small GPT-style model built from the first "
    "snapshot's training rows (or the Hugging Face id / local path in settings.base_model), registered with "
    "aliases base and champion. Built once; later runs reuse it.",
)
def base_model(
    context: dg.AssetExecutionContext, training_snapshot: dict, streamtune: StreamtuneResource, mlflow: MlflowResource
) -> dg.Output:
    manifest = SnapshotManifest.from_dict(training_snapshot)
    base = ensure_base(streamtune.settings(), mlflow.registry(), manifest, dagster_run_id=context.run_id)
    if base.reused:
        return dg.Output({"version": base.version, "reused": True}, metadata={"version": base.version, "reused": True})
    return dg.Output(
        {"version": base.version, "reused": False},
        metadata={"version": base.version, "mlflow_run_id": base.mlflow_run_id},
    )


@dg.asset(
    **_MODEL,
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
    warehouse: WarehouseResource,
) -> dg.Output:
    settings, registry = streamtune.settings(), mlflow.registry()
    try:
        update = run_update(
            settings,
            registry,
            SnapshotManifest.from_dict(training_snapshot),
            warehouse=Warehouse(warehouse.path),  # read-only, before training: the ledger check
            base_version=base_model["version"],
            dagster_run_id=context.run_id,
            trigger=_trigger(context),
            log=context.log.info,
            pipes_launch=partial(finetune_via_pipes, context),
        )
    except (NoHeldOutRows, AlreadyTrained, SnapshotGone) as e:
        raise dg.Failure(str(e)) from e
    return dg.Output(update.to_dict(), metadata=challenger_metadata(update, settings, registry))


@dg.asset(
    **_RECORD,
    kinds={"duckdb", "mlflow"},
    description="The finished update on record, promoted or not: gate decision as version tags, train.ledger, "
    "train.updates, monitor.eval_matrix, the new train.replay_buffer, ACC/BWT/forgetting logged to the "
    "update's MLflow run, and the version's model card (model_card.md in that run). The blocking gate check "
    "challenger_beats_champion judges it.",
)
def model_update(
    context: dg.AssetExecutionContext,
    challenger_model: dict,
    streamtune: StreamtuneResource,
    mlflow: MlflowResource,
    warehouse: WarehouseResource,
) -> dg.Output:
    settings, registry = streamtune.settings(), mlflow.registry()
    update, _ = record_with_card(  # + the version's model card (model_card.md in the update's MLflow run)
        warehouse.warehouse(),
        registry,
        UpdateResult.from_dict(challenger_model),
        replay_size=settings.replay.size,
        replay_seed=settings.replay.seed,
        trigger=_trigger(context),
        dagster_run_id=context.run_id,
    )
    return dg.Output(
        update.to_dict(),
        metadata={
            "version": update.version,
            "promoted": update.promote,
            "reason": update.reason,
            "windows": dg.MetadataValue.json(update.snapshot.window_keys),
            "model_card": model_card_link(update, settings, registry),
            "parent_version": update.parent_version,
            "gate": dg.MetadataValue.json(gate_numbers(update.gate_tags)),
            **{k: float(v) for k, v in update.cl_summary.items()},
        },
    )


@dg.asset_check(
    asset=model_update,
    blocking=True,
    description="Promotion gate (blocking): new-window bits/byte improve by gate.min_improvement and "
    "retention bits/byte worsen by at most gate.retention_tolerance. Judges only: model_update has recorded the "
    "update already, so a rejection is on record; a rejection then blocks champion_model.",
)
def challenger_beats_champion(model_update: dict) -> dg.AssetCheckResult:
    update = UpdateResult.from_dict(model_update)
    return dg.AssetCheckResult(
        passed=bool(update.promote),
        severity=dg.AssetCheckSeverity.ERROR,
        description=update.reason,
        metadata={
            **{k: v for k, v in update.gate_tags.items() if k.startswith("gate.")},
            "version": update.version,
            **{k: float(v) for k, v in update.cl_summary.items()},
        },
    )


@dg.asset(
    **_RECORD,
    kinds={"mlflow", "duckdb"},
    description="The champion alias: moved to the challenger once the blocking gate check challenger_beats_champion "
    "on model_update has passed (model_update records every update, promoted or not). Skipped when the gate rejects. "
    "With [gate] require_approval = true the challenger waits instead (train.approvals, pending_approval metadata).",
)
def champion_model(
    context: dg.AssetExecutionContext,
    model_update: dict,
    mlflow: MlflowResource,
    streamtune: StreamtuneResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    update = UpdateResult.from_dict(model_update)
    require_approval = streamtune.settings().gate.require_approval
    out = settle_champion(
        mlflow.registry(),
        warehouse.warehouse(),
        update,
        require_approval=require_approval,
        dagster_run_id=context.run_id,
    )
    pending = ", ".join(f"v{v}" for v in out.pending)
    verb = "promoted" if out.moved else ("held for approval" if update.promote else "rejected")
    context.log.info(f"{verb} v{update.version}: {update.reason}")
    return dg.MaterializeResult(
        metadata={
            "champion_version": out.champion,
            "challenger_version": update.version,
            "promoted": out.moved,
            "reason": update.reason,
            "pending_approval": pending or "none",
        },
    )


@dg.asset_check(
    asset=champion_model,
    pool="duckdb",
    description="WARN while a challenger that passed the gate waits for `streamtune promote --version N` (or "
    "`reject`): [gate] require_approval = true. Reads train.approvals: runs after champion_model, and again with "
    "Execute after a decision.",
)
def no_pending_approval(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    pending = ", ".join(f"v{v}" for v in pending_approvals(warehouse.warehouse()))
    return dg.AssetCheckResult(
        passed=not pending,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"pending approval: {pending} (streamtune promote --version N, or reject)"
        if pending
        else "no challenger waits for approval",
        metadata={"pending_approval": pending or "none"},
    )


TRAINING_ASSETS = [training_snapshot, base_model, challenger_model, model_update, champion_model]
