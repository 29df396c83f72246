"""Data-parallel fine-tuning (PyTorch DDP) in processes started by ``torchrun``.

No Dagster imports. ``torchrun`` (``python -m torch.distributed.run``) starts one process per rank and
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``.
Each process calls ``init_distributed`` (gloo on CPU, nccl on CUDA) and then ``finetune_snapshot``, which
reads the training snapshot's Parquet files (never the DuckDB warehouse) and runs ``training.finetune.finetune``:
inside a process group it wraps the model in ``DistributedDataParallel``; every rank draws the same global
minibatch and trains on its share of it, so the updates equal those of one process on the whole batch
(``training.loop.fit(shard=...)``). Only rank 0 evaluates, checkpoints, saves the challenger and (in the
caller) logs to MLflow and reports to the orchestrator.

Run directly (no orchestrator), e.g. for a benchmark::

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m training.distributed spec.json

``spec.json``: ``{"parent": dir, "snapshot": dir, "out_dir": dir, "train_config": {...},
"checkpoint_dir": dir | null, "result": path}``; rank 0 writes the metrics and per-parameter checksums
to ``result`` as JSON. ``orchestration.pipeline.train_entry`` is the same path under Dagster Pipes.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch

from training.config import TrainConfig
from training.device import available_cores
from training.evaluate import EvalResult
from training.finetune import FinetuneRequest, FinetuneResult, finetune
from training.loop import FitResult

__all__ = [
    "finetune_snapshot",
    "init_distributed",
    "is_rank_zero",
    "parameter_digest",
    "rank_threads",
    "result_from_dict",
    "result_to_dict",
    "snapshot_texts",
    "snapshot_texts_by_window",
]


def init_distributed(backend: str | None = None, timeout_s: float = 600.0) -> tuple[int, int]:
    """Join the process group described by torchrun's environment; ``(rank, world_size)``.

    Without ``WORLD_SIZE`` in the environment (a plain ``python`` start) nothing is initialised and
    ``(0, 1)`` is returned, so the same entry point also runs single-process.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; None = nccl when CUDA is available, else gloo.
        timeout_s: collective timeout.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not torch.distributed.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def is_rank_zero() -> bool:
    """True outside a process group and on rank 0 inside one."""
    return (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )


def rank_threads(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``threads`` set to this process's share of the cores when it is None.

    N processes on one host each taking every core oversubscribe the CPU (torch's OpenMP pool collapses,
    see ``training.device``), so each rank gets ``cores // LOCAL_WORLD_SIZE`` (at least 1).
    """
    if cfg.threads is not None:
        return cfg
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return dataclasses.replace(cfg, threads=max(1, available_cores() // local))


def snapshot_texts(snapshot: str | Path, split: str) -> list[str]:
    """Texts of one split of a Parquet training snapshot (``<snapshot>/<split>.parquet``), in file order;
    [] when the file is absent (optional splits such as ``replay``)."""
    path = Path(snapshot) / f"{split}.parquet"
    if not path.exists():
        return []
    return pl.read_parquet(path, columns=["text"])["text"].to_list()


def snapshot_texts_by_window(snapshot: str | Path, split: str) -> dict[str, list[str]]:
    """``{window_key: texts}`` of one split, windows in first-appearance order."""
    path = Path(snapshot) / f"{split}.parquet"
    if not path.exists():
        return {}
    out: dict[str, list[str]] = {}
    for key, text in pl.read_parquet(path, columns=["window_key", "text"]).iter_rows():
        out.setdefault(key, []).append(text)
    return out


def finetune_snapshot(
    parent: str | Path,
    snapshot: str | Path,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    checkpoint_dir: str | Path | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
    on_trained: Callable[[torch.nn.Module], None] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> FinetuneResult:
    """One update from a Parquet snapshot, as the ``challenger_model`` asset runs it in-process.

    Train on ``train`` + ``replay``; score ``new_eval``, ``retention_eval`` and ``first_eval``, each new
    window before training and every window after (the eval matrix). Works single-process and inside a
    process group (``init_distributed``), where only rank 0's result carries evaluations.
    """
    new_by_window = snapshot_texts_by_window(snapshot, "new_eval")
    request = FinetuneRequest(
        parent=parent,
        train_texts=snapshot_texts(snapshot, "train") + snapshot_texts(snapshot, "replay"),
        new_eval_texts=snapshot_texts(snapshot, "new_eval"),
        retention_eval_texts=snapshot_texts(snapshot, "retention_eval"),
        cfg=cfg,
        out_dir=Path(out_dir),
        first_eval_texts=snapshot_texts(snapshot, "first_eval"),
        forward_eval=new_by_window,
        matrix_eval={**snapshot_texts_by_window(snapshot, "retention_eval"), **new_by_window},
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
        on_step=on_step,
        on_trained=on_trained,
        on_progress=on_progress,
        fisher_texts=snapshot_texts(snapshot, "replay"),  # as the in-process update (EWC's Fisher rows)
        meta_tasks=snapshot_texts_by_window(snapshot, "replay") if cfg.reptile_init else {},
    )
    return finetune(request)


def finetune_rank(
    parent: str | Path,
    snapshot: str | Path,
    train_config: dict,
    out_dir: str | Path,
    checkpoint_dir: str | Path | None = None,
    **callbacks: Callable,
) -> FinetuneResult:
    """This rank's ``finetune_snapshot`` with a ``TrainConfig.to_dict()`` config, its threads set by
    ``rank_threads``; ``callbacks``: ``on_step``, ``on_trained``, ``on_progress``."""
    cfg = rank_threads(TrainConfig.from_dict(train_config))
    return finetune_snapshot(parent, snapshot, cfg, out_dir, checkpoint_dir=checkpoint_dir, **callbacks)


def result_to_dict(result: FinetuneResult) -> dict:
    """A JSON-serializable form of a ``FinetuneResult`` (rank 0 hands it to the orchestrator)."""
    d = dataclasses.asdict(result)
    d["output_dir"] = str(result.output_dir)
    d["fit"]["curve"] = [list(p) for p in result.fit.curve]
    return d


def result_from_dict(d: dict) -> FinetuneResult:
    """Inverse of ``result_to_dict``."""

    def ev(x: dict | None) -> EvalResult | None:
        return EvalResult(**x) if x is not None else None

    fit = dict(d["fit"])
    fit["curve"] = [tuple(p) for p in fit["curve"]]
    names = {f.name for f in dataclasses.fields(FinetuneResult)}
    kw = {k: v for k, v in d.items() if k in names}
    for k in (
        "champion_new",
        "champion_retention",
        "challenger_new",
        "challenger_retention",
        "champion_first",
        "challenger_first",
    ):
        kw[k] = ev(kw.get(k))
    for k in ("forward_before", "matrix_after"):
        kw[k] = {w: EvalResult(**r) for w, r in (kw.get(k) or {}).items()}
    kw["fit"] = FitResult(**fit)
    kw["output_dir"] = Path(d["output_dir"])
    return FinetuneResult(**kw)


def parameter_digest(model_or_state: torch.nn.Module | dict) -> dict[str, str]:
    """``{parameter name: sha256 of its bytes}``: equal digests on two ranks = bit-identical weights."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    return {k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest() for k, v in state.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m torch.distributed.run --nproc-per-node N -m training.distributed SPEC.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    rank, world = init_distributed(spec.get("backend"))
    try:
        digest: dict[str, str] = {}
        result = finetune_rank(
            spec["parent"],
            spec["snapshot"],
            spec["train_config"],
            spec["out_dir"],
            spec.get("checkpoint_dir"),
            on_trained=lambda m: digest.update(parameter_digest(m)),
        )
        digests: list = [None] * world
        if world > 1:  # every rank's weights, gathered on all ranks: equal digests = parameters in sync
            torch.distributed.all_gather_object(digests, digest)
        else:
            digests = [digest]
        if rank == 0 and spec.get("result"):
            payload = {
                "world_size": world,
                "metrics": result.metrics(),
                "curve": result.fit.curve,
                "digests": digests,
                "threads": result.threads,
            }
            Path(spec["result"]).write_text(json.dumps(payload))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
