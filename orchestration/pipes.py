"""Launch the fine-tune as an external, possibly multi-process job through Dagster Pipes.

``[train] launcher = "pipes"`` (with ``nproc = N``) makes the update step (``orchestration.pipeline.update``, run
by ``challenger_model``) call ``finetune_via_pipes`` instead of ``training.finetune.finetune``: a
``PipesSubprocessClient`` starts
``python -m torch.distributed.run --standalone --nproc-per-node N -m orchestration.pipeline.train_entry``, which runs
DDP over N processes (gloo on CPU). Rank 0 reports step logs and the result back through Pipes; the
step then scores, logs and registers the challenger exactly as in-process.

The same call works with ``dagster_k8s.PipesK8sClient`` (pass ``client=``, the pod's ``image`` through
``client_kwargs`` and the image's ``python``): the command and the extras are the same; the pod must mount the
streamtune home (snapshots and models folders) at the same path, e.g. one ReadWriteMany volume.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # type names only: training.finetune loads torch, and this module loads with the code location
    from training.config import TrainConfig
    from training.finetune import FinetuneResult

LAUNCHERS = ("inprocess", "pipes")


def torchrun_command(nproc: int, python: str | None = None) -> list[str]:
    """The command every Pipes launch runs: torchrun (as ``python -m torch.distributed.run``) over
    ``nproc`` local processes, each running ``orchestration.pipeline.train_entry``."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "orchestration.pipeline.train_entry",
    ]


def finetune_via_pipes(
    context: dg.AssetExecutionContext,
    *,
    parent_dir: Path,
    snapshot_dir: str | Path,
    cfg: TrainConfig,
    out_dir: Path,
    checkpoint_dir: Path | None,
    nproc: int,
    mlflow_tracking_uri: str = "",
    mlflow_run_id: str = "",
    progress_file: Path | None = None,
    client=None,
    client_kwargs: dict | None = None,
    python: str | None = None,
) -> tuple[FinetuneResult, dict]:
    """Run one update in ``nproc`` external processes; ``(rank 0's FinetuneResult, reported metadata)``.

    ``client`` defaults to ``PipesSubprocessClient``; with ``PipesK8sClient`` pass ``client_kwargs={"image":
    ...}`` and ``python="python"`` (the interpreter inside the image; default: this one).

    Raises:
        dagster.DagsterPipesExecutionError: the external process failed (its error is in the message).
        dagster.Failure: the process exited without reporting a result.
    """
    # lazy: training.distributed imports torch
    from training.distributed import result_from_dict

    client = client or dg.PipesSubprocessClient(forward_termination=True)
    extras = {
        "parent_dir": str(parent_dir),
        "snapshot_dir": str(snapshot_dir),
        "out_dir": str(out_dir),
        "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir is not None else None,
        "train_config": cfg.to_dict(),
        "mlflow_tracking_uri": mlflow_tracking_uri,
        "mlflow_run_id": mlflow_run_id,
        "progress_file": str(progress_file) if progress_file is not None else "",
    }
    context.log.info(f"launching the fine-tune through Dagster Pipes on {nproc} process(es)")
    invocation = client.run(
        context=context, extras=extras, command=torchrun_command(nproc, python), **(client_kwargs or {})
    )
    messages = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "finetune_result" in m]
    if not messages:
        raise dg.Failure("the external fine-tune exited without reporting a result")
    reported = invocation.get_materialize_result()
    metadata = {k: getattr(v, "value", v) for k, v in (reported.metadata or {}).items()}
    return result_from_dict(messages[-1]["finetune_result"]), metadata
