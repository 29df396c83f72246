"""The fine-tune as an external process: entry point of every rank launched through Dagster Pipes.

Started by ``orchestration.pipes`` as
``python -m torch.distributed.run --standalone --nproc-per-node N -m orchestration.pipeline.train_entry``
(``PipesSubprocessClient``; with ``PipesK8sClient`` the same command runs in the pod). Imports
``dagster_pipes`` (the small dependency-free distribution), never ``dagster`` nor the DuckDB warehouse:
the training data is the snapshot's Parquet files named in the Pipes extras.

Rank 0 alone opens the Pipes session: it reads the extras and broadcasts them to the other ranks, logs
the loss curve live to the update's MLflow run, forwards step logs to Dagster, and at the end reports the
asset materialization (world size, backend, training speed as metadata; merged into the asset's) and
the full ``FinetuneResult`` as a custom message.
The other ranks only train (DDP on gloo for CPU, nccl for CUDA; ``training.distributed``).

Extras: ``parent_dir``, ``snapshot_dir``, ``out_dir``, ``checkpoint_dir``, ``train_config`` (dict),
``mlflow_tracking_uri`` and ``mlflow_run_id`` ("" = no live MLflow logging), ``progress_file`` ("" = none).
"""

from __future__ import annotations

from pathlib import Path

import torch
from dagster_pipes import open_dagster_pipes

from orchestration.pipeline.progress import ProgressFile
from training.distributed import finetune_rank, init_distributed, result_to_dict


def _broadcast(obj: dict | None) -> dict:
    """Rank 0's ``obj`` on every rank (no-op outside a process group)."""
    if not torch.distributed.is_initialized():
        assert obj is not None
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _train(extras: dict, log=None, report_step=None, on_progress=None) -> dict:
    """Fine-tune this rank's share of the snapshot named in ``extras``; ``result_to_dict`` of the result."""

    def on_step(step: int, loss: float, lr: float) -> None:
        if log is not None:
            log.info(f"step {step}: train loss {loss:.4f}, lr {lr:.2e}")
        if report_step is not None:
            report_step(step, loss, lr)

    return result_to_dict(
        finetune_rank(
            extras["parent_dir"],
            extras["snapshot_dir"],
            extras["train_config"],
            extras["out_dir"],
            extras.get("checkpoint_dir"),
            on_step=on_step,
            on_progress=on_progress,
        )
    )


def _mlflow_step_logger(extras: dict):
    """Log ``train_loss``/``lr`` step metrics to the update's MLflow run as training goes (rank 0 only)."""
    if not extras.get("mlflow_run_id"):
        return None
    # lazy: mlflow takes seconds to import and only rank 0 with a live run needs it
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=extras["mlflow_tracking_uri"], registry_uri=extras["mlflow_tracking_uri"])
    run_id = extras["mlflow_run_id"]

    def report(step: int, loss: float, lr: float) -> None:
        client.log_metric(run_id, "train_loss", loss, step=step)
        client.log_metric(run_id, "lr", lr, step=step)

    return report


def main() -> int:
    """Entry point of every rank (see the module docstring); returns the exit status 0."""
    rank, world = init_distributed()
    try:
        if rank == 0:
            with open_dagster_pipes() as pipes:
                extras = _broadcast(dict(pipes.extras))
                pipes.log.info(
                    f"fine-tuning on {world} process(es), backend "
                    f"{torch.distributed.get_backend() if world > 1 else 'none'}"
                )
                progress = None
                if extras.get("progress_file"):
                    progress = ProgressFile(Path(extras["progress_file"]), run_id=pipes.run_id).update
                result = _train(extras, log=pipes.log, report_step=_mlflow_step_logger(extras), on_progress=progress)
                pipes.report_custom_message({"finetune_result": result, "world_size": world})
                pipes.report_asset_materialization(
                    metadata={
                        "launcher": "pipes",
                        "world_size": world,
                        "backend": _backend(world),
                        "train_wall_s": float(result["fit"]["wall_seconds"]),
                        "train_tokens_per_s": float(result["fit"]["tokens_per_second"]),
                    }
                )
        else:
            extras = _broadcast(None)
            _train(extras)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


def _backend(world: int) -> str:
    return str(torch.distributed.get_backend()) if world > 1 and torch.distributed.is_initialized() else "none"


if __name__ == "__main__":
    raise SystemExit(main())
