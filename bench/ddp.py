"""Data-parallel fine-tuning benchmark: torchrun + gloo (CPU) against one process, same global batch.

Builds a small GPT-2 base (4 layers, width 128, BPE vocabulary 1024) on a synthetic corpus, writes a
Parquet snapshot in ``orchestration.pipeline.snapshot``' layout and runs ``training.distributed`` three ways, in
rounds (alternating, so a busy machine hurts every layout alike):

* ``1proc-1thread``: one process, one torch thread;
* ``1proc-Nthreads``: one process, every core;
* ``Nproc-1thread``: ``python -m torch.distributed.run --standalone --nproc-per-node N`` (DDP, gloo).

Reports the training loop's tokens/s (``FitResult``), the command's wall time (process start, model
load, evaluation by rank 0, save), the final training loss and the challenger's held-out loss, and the
largest weight difference to the 1-process run. Usage::

    python bench/ddp.py --nproc 2 --steps 40 --rounds 2 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    adj = ["fast", "tiny", "async", "typed", "simple", "modern", "robust", "minimal", "lazy", "secure"]
    noun = ["HTTP client", "JSON parser", "YAML loader", "CLI toolkit", "task queue", "ORM", "test runner", "logger"]
    dom = ["Python", "Django", "data science", "asyncio", "the web", "scientific computing", "Kafka", "Redis"]
    return [
        f"A {rng.choice(adj)} {rng.choice(noun)} for {rng.choice(dom)}, version {rng.randint(0, 9)}." for _ in range(n)
    ]


def write_snapshot(directory: Path, texts: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    n = len(texts)
    for split, rows, window in (
        ("train", texts[: n - 400], "w2"),
        ("new_eval", texts[n - 400 : n - 200], "w2"),
        ("retention_eval", texts[n - 200 :], "w1"),
    ):
        pl.DataFrame(
            {
                "window_key": [window] * len(rows),
                "row_number": list(range(len(rows))),
                "record_id": [f"{split}-{i}" for i in range(len(rows))],
                "text": rows,
            }
        ).write_parquet(directory / f"{split}.parquet")


def run(work: Path, label: str, nproc: int, threads: int, base: Path, snapshot: Path, steps: int) -> dict:
    cfg = {
        "seq_len": 128,
        "batch_size": 16,
        "peak_lr": 1e-3,
        "bf16": False,
        "threads": threads,
        "max_steps": steps,
        "seed": 0,
        "log_every": 10,
    }
    spec = {
        "parent": str(base),
        "snapshot": str(snapshot),
        "out_dir": str(work / f"out-{label}"),
        "train_config": cfg,
        "result": str(work / f"result-{label}.json"),
        "backend": "gloo",
    }
    spec_path = work / f"spec-{label}.json"
    spec_path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads))
    cmd = (
        [sys.executable, "-m", "training.distributed", str(spec_path)]
        if nproc == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "training.distributed",
            str(spec_path),
        ]
    )
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{label} failed:\n{proc.stderr[-3000:]}")
    m = json.loads(Path(spec["result"]).read_text())["metrics"]
    return {
        "wall_s": wall,
        "loop_s": m["wall_s"],
        "tokens_per_s": m["tokens_per_s"],
        "final_train_loss": m["final_train_loss"],
        "challenger_new_loss": m["challenger_new_loss"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/streamtune-ddp-bench"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT))
    from safetensors.torch import load_file

    from training.config import ModelConfig
    from training.modeling import build_base_model

    args.work.mkdir(parents=True, exist_ok=True)
    texts = corpus(12_000, seed=1)
    base = args.work / "base"
    if not (base / "config.json").exists():
        build_base_model(
            texts[:3000], ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=1024), base, seed=0
        )
    snapshot = args.work / "snapshot"
    write_snapshot(snapshot, texts)
    layouts = [
        ("1proc-1thread", 1, 1),
        (f"1proc-{args.nproc}threads", 1, args.nproc),
        (f"{args.nproc}proc-1thread", args.nproc, 1),
    ]
    rows: dict[str, list[dict]] = {label: [] for label, _, _ in layouts}
    for r in range(args.rounds):
        for label, nproc, threads in layouts:
            rows[label].append(run(args.work, label, nproc, threads, base, snapshot, args.steps))
            print(f"round {r + 1} {label}: {rows[label][-1]}", flush=True)
    ref = load_file(args.work / "out-1proc-1thread" / "model.safetensors")
    summary = {}
    for label, _, _ in layouts:
        w = load_file(args.work / f"out-{label}" / "model.safetensors")
        summary[label] = {
            "tokens_per_s_median": statistics.median(x["tokens_per_s"] for x in rows[label]),
            "loop_s_median": statistics.median(x["loop_s"] for x in rows[label]),
            "wall_s_median": statistics.median(x["wall_s"] for x in rows[label]),
            "final_train_loss": rows[label][-1]["final_train_loss"],
            "challenger_new_loss": rows[label][-1]["challenger_new_loss"],
            "max_abs_weight_diff_vs_1proc": max(float((w[k] - ref[k]).abs().max()) for k in ref),
        }
    result = {
        "nproc": args.nproc,
        "steps": args.steps,
        "global_batch": 16,
        "seq_len": 128,
        "rounds": rows,
        "summary": summary,
        "load_avg_1min_at_end": os.getloadavg()[0],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ddp.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
