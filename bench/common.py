"""Pieces the benchmarks share: the model and training settings, M_0, the replay update loop, logging.

``bench/continual.py``, ``bench/selection.py`` and ``bench/drift.py`` (policy comparison) train the same
small GPT-2 the same way; ``bench/drift.py`` and ``bench/ingest.py`` land a parsed window the same way.
Nothing here imports ``training`` or ``quality`` at module level (``bench/ingest.py`` is imported before
``bench/ingest_revisions.py`` puts the tree under test first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any


def hf_offline_env() -> None:
    """Hugging Face libraries offline and quiet (unless the environment says otherwise); call before they load."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def add_stream_args(p: argparse.ArgumentParser) -> None:
    """The stream, model and update flags shared by ``bench/continual.py run`` and ``bench/selection.py``."""
    p.add_argument("--stream", type=Path, required=True, help="directory of window files, one per window")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--text-field", default="text")
    p.add_argument("--eval-fraction", type=float, default=0.1)


def add_training_args(p: argparse.ArgumentParser) -> None:
    """The update budget and model size flags shared by ``bench/continual.py run`` and ``bench/selection.py``."""
    p.add_argument("--steps", type=int, default=40, help="optimiser steps per update (every continual method)")
    p.add_argument("--m0-steps", type=int, default=120, help="steps of M_0 on W_0 (from random init)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--buffer", type=int, default=2048)


def base_train_cfg(*, seq_len: int, batch: int, lr: float, steps: int, threads: int, seed: int) -> dict[str, Any]:
    """``TrainConfig`` keyword arguments of one update (CPU, fp32, no step logging)."""
    return dict(
        seq_len=seq_len,
        batch_size=batch,
        peak_lr=lr,
        max_steps=steps,
        bf16=False,
        threads=threads,
        eval_batch_size=64,
        log_every=10**6,
        seed=seed,
    )


def args_train_cfg(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """``base_train_cfg`` from the flags of ``add_training_args`` (and ``--threads``)."""
    return base_train_cfg(
        seq_len=args.seq_len, batch=args.batch, lr=args.lr, steps=args.steps, threads=args.threads, seed=seed
    )


def args_model_cfg(args: argparse.Namespace):
    """The GPT-2 ``ModelConfig`` of the flags of ``add_training_args``."""
    from training.config import ModelConfig

    return ModelConfig(
        n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.seq_len, vocab_size=args.vocab
    )


def train_m0(
    init: Path,
    windows: list[dict],
    base_cfg: dict[str, Any],
    m0_steps: int,
    work: Path,
    matrix_eval: dict[str, list[str]] | None = None,
):
    """M_0: the randomly initialised model ``init`` (``training.modeling.build_base_model`` on W_0) trained
    ``m0_steps`` steps on W_0 into ``work/m0``. Returns the ``finetune`` result (``matrix_after`` scores
    ``matrix_eval``)."""
    from training.config import TrainConfig
    from training.finetune import FinetuneRequest, finetune

    return finetune(
        FinetuneRequest(
            parent=init,
            train_texts=windows[0]["train"],
            cfg=TrainConfig(**{**base_cfg, "max_steps": m0_steps}),
            out_dir=work / "m0",
            matrix_eval=matrix_eval,
        )
    )


def replay_updates(
    windows: list[dict],
    cfg,
    *,
    name: str,
    work: Path,
    seed: int,
    buffer_rows: int,
    replay_fraction: float,
    split: Callable[[int, list[str]], tuple[list[str], list[str]]] | None = None,
) -> dict[str, Any]:
    """Updates t = 1..T-1 from ``work/m0``, each on W_t's training rows + replay from the window-balanced
    reservoir (``training.replay``, ``buffer_rows`` rows, ``replay_fraction``), into ``work/<name>-<t>``
    (the previous update's directory is removed). ``split(t, rows)`` -> ``(train, reference)`` gives a
    selection strategy its reference slice. Returns ``rows`` (bpb after each update on every window),
    ``forward`` (bpb before it on W_t), ``fits`` (each update's ``FitResult``), ``wall`` (seconds) and
    ``last`` (the final model's directory, left in place)."""
    import polars as pl

    from training.finetune import FinetuneRequest, finetune
    from training.replay import replay_count, sample_replay, update_buffer

    keys = [w["key"] for w in windows]
    evals = {w["key"]: w["eval"] for w in windows}
    rows: dict[int, dict[str, float]] = {}
    forward: dict[int, float] = {}
    fits = []
    wall = 0.0
    buffer = update_buffer(pl.DataFrame(), window_frame(windows[0], 0), buffer_rows, seed=seed)
    parent = work / "m0"
    for t in range(1, len(windows)):
        new, reference = windows[t]["train"], []
        if split is not None:
            new, reference = split(t, new)
        n_rep = replay_count(len(windows[t]["train"]), replay_fraction)
        replay = sample_replay(buffer["text"].to_list(), n_rep, seed=seed * 1000 + t)
        s = time.perf_counter()
        res = finetune(
            FinetuneRequest(
                parent=parent,
                train_texts=new + replay,
                cfg=cfg,
                out_dir=work / f"{name}-{t}",
                reference_texts=reference,
                forward_eval={keys[t]: evals[keys[t]]},
                matrix_eval=evals,
            )
        )
        wall += time.perf_counter() - s
        fits.append(res.fit)
        forward[t] = res.forward_before[keys[t]].bits_per_byte
        rows[t] = {k: r.bits_per_byte for k, r in res.matrix_after.items()}
        buffer = update_buffer(buffer, window_frame(windows[t], t), buffer_rows, seed=seed)
        if parent != work / "m0":
            shutil.rmtree(parent, ignore_errors=True)
        parent = work / f"{name}-{t}"
    return {"rows": rows, "forward": forward, "fits": fits, "wall": wall, "last": parent}


def window_frame(window: dict, t: int):
    """A window's training rows as the replay buffer's input frame."""
    import polars as pl

    n = len(window["train"])
    return pl.DataFrame(
        {
            "window_key": [window["key"]] * n,
            "row_number": list(range(n)),
            "record_id": [f"{window['key']}/{i}" for i in range(n)],
            "text": window["train"],
        }
    )


def make_log(start: float, logf: IO[str]) -> Callable[[str], None]:
    """``log(msg)``: ``[seconds since start] msg`` to stdout and ``logf``, flushed."""

    def log(msg: str) -> None:
        line = f"[{time.perf_counter() - start:7.1f}s] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    return log


def run_meta(args: argparse.Namespace, windows: list[dict], command: str, wall_min: float) -> dict[str, Any]:
    """The run description both model benchmarks write into their report and JSON (callers add their own)."""
    keys = [w["key"] for w in windows]
    return {
        "generated": datetime.now(UTC).isoformat(timespec="minutes"),
        "command": command,
        "wall_min": wall_min,
        "machine": f"{os.cpu_count()} CPUs shared, torch threads={args.threads}",
        "stream": str(args.stream),
        "T": len(windows),
        "first": keys[0],
        "last": keys[-1],
        "train_rows": sum(len(w["train"]) for w in windows),
        "eval_rows": sum(len(w["eval"]) for w in windows),
        "model": f"{args.n_layer} layers x {args.n_embd} dims, vocab {args.vocab}",
        "steps": args.steps,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "lr": args.lr,
        "buffer": args.buffer,
    }


def write_raw(wh, key: str, parsed, file_name: str) -> None:
    """Land a parsed window file (``quality.readers.read_window_file``) as raw window ``key`` of ``wh``."""
    wh.replace_raw_window(
        key,
        parsed.rows,
        parsed.rejects,
        file_name=file_name,
        file_sha256=parsed.file_sha256,
        file_mtime_ns=0,
        dagster_run_id=None,
    )
