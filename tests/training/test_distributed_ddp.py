"""Data-parallel fine-tuning: 2 processes on gloo (CPU) under torchrun vs. one process, same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def write_snapshot(directory: Path, corpus: list[str]) -> Path:
    """A Parquet snapshot in the layout of orchestration.pipeline.snapshot (train / new_eval / retention_eval)."""
    directory.mkdir(parents=True, exist_ok=True)
    splits = {"train": corpus[:240], "new_eval": corpus[240:260], "retention_eval": corpus[260:280]}
    for split, texts in splits.items():
        window = "w2" if split != "retention_eval" else "w1"
        pl.DataFrame(
            {
                "window_key": [window] * len(texts),
                "row_number": list(range(len(texts))),
                "record_id": [f"{split}-{i}" for i in range(len(texts))],
                "text": texts,
            }
        ).write_parquet(directory / f"{split}.parquet")
    return directory


def run_training(tmp: Path, parent: Path, snapshot: Path, nproc: int, cfg: dict) -> tuple[dict, Path, float]:
    out_dir = tmp / f"out-{nproc}"
    spec = {
        "parent": str(parent),
        "snapshot": str(snapshot),
        "out_dir": str(out_dir),
        "train_config": cfg,
        "result": str(tmp / f"result-{nproc}.json"),
        "backend": "gloo",
    }
    spec_path = tmp / f"spec-{nproc}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "training.distributed", str(spec_path)]
        for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            env.pop(k, None)
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "training.distributed",
            str(spec_path),
        ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(Path(spec["result"]).read_text()), out_dir, wall


@pytest.mark.slow
def test_two_gloo_ranks_stay_in_sync_and_match_one_process(tmp_path, base_dir, corpus):
    snapshot = write_snapshot(tmp_path / "snapshot", corpus)
    # same global batch (8 blocks) in both runs; each of the 2 ranks trains on 4 of them per step
    cfg = {
        "seq_len": 32,
        "batch_size": 8,
        "peak_lr": 3e-3,
        "bf16": False,
        "threads": 1,
        "eval_batch_size": 16,
        "log_every": 5,
        "max_steps": 20,
        "seed": 3,
    }
    two, out2, wall2 = run_training(tmp_path, base_dir, snapshot, 2, cfg)
    one, out1, wall1 = run_training(tmp_path, base_dir, snapshot, 1, cfg)

    # parameters are bit-identical on both ranks after training (DDP all-reduce + identical AdamW steps)
    assert two["world_size"] == 2 and len(two["digests"]) == 2
    assert two["digests"][0] == two["digests"][1]
    assert len(two["digests"][0]) > 5

    # and match the single-process run within float tolerance (summation order differs only)
    w1, w2 = load_file(out1 / "model.safetensors"), load_file(out2 / "model.safetensors")
    assert w1.keys() == w2.keys()
    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    moved = max(float((w1[k] - load_file(base_dir / "model.safetensors")[k]).abs().max()) for k in w1)
    assert moved > 1e-3, "training did not change the weights"
    assert worst < 1e-4, f"2-process weights differ from 1-process by {worst}"
    for key in ("challenger_new_loss", "challenger_retention_loss", "final_train_loss"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-4), key
    assert two["metrics"]["train_tokens"] == one["metrics"]["train_tokens"]
    assert [p[0] for p in two["curve"]] == [p[0] for p in one["curve"]]
    for (_, l2, lr2), (_, l1, lr1) in zip(two["curve"], one["curve"]):
        assert l2 == pytest.approx(l1, rel=1e-4) and lr2 == pytest.approx(lr1)
    # only rank 0 saved a model
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out-")) == ["out-1", "out-2"]
    print(
        f"\nDDP gloo: max |w2 - w1| = {worst:.2e}; wall 2-proc {wall2:.1f} s vs 1-proc {wall1:.1f} s "
        f"(ratio {wall2 / wall1:.2f}); train tokens/s 2-proc {two['metrics']['tokens_per_s']:.0f} "
        f"vs 1-proc {one['metrics']['tokens_per_s']:.0f}"
    )


def test_global_batch_smaller_than_world_is_refused(tmp_path, base_dir, corpus):
    snapshot = write_snapshot(tmp_path / "snapshot", corpus)
    cfg = {"seq_len": 32, "batch_size": 1, "bf16": False, "threads": 1, "max_steps": 2}
    spec = {"parent": str(base_dir), "snapshot": str(snapshot), "out_dir": str(tmp_path / "out"), "train_config": cfg}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "training.distributed",
            str(tmp_path / "spec.json"),
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "needs a global batch of at least 2" in proc.stderr + proc.stdout
