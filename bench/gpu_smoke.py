"""GPU smoke test: one update on CUDA (bf16 weights, bf16 autocast, fused AdamW) against the CPU path.

Builds a Llama-architecture model of the stand-in base's shape (``training.pretrain.PretrainConfig``,
random init: speed does not depend on what the weights know) and a tokenizer on a slice of the standard
library's docstrings (``training.pretrain.stdlib_corpus``), saves it, then runs ``--steps`` optimiser steps
of ``training.loop.fit`` on the same packed blocks:

* CPU path: the engine's default, fp32 master weights, bf16 autocast where the CPU supports it
  (``training.device.bf16_supported``), AdamW (foreach);
* CUDA path (only when ``torch.cuda.is_available()``): weights loaded in bf16
  (``training.modeling.load_model(torch_dtype="bfloat16")``), bf16 autocast, ``torch.optim.AdamW(fused=True)``.

Reports tokens/s (target tokens / wall seconds, after one warm-up step), peak memory (CUDA:
``torch.cuda.max_memory_allocated``; CPU: the process's peak resident set, ``ru_maxrss``) and the final
loss of each path. Without CUDA it runs the CPU path and says plainly that the GPU path is unverified.

Usage::

    python bench/gpu_smoke.py --steps 20 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from training.config import TrainConfig  # noqa: E402
from training.data import pack_texts  # noqa: E402
from training.device import bf16_supported, configure_threads  # noqa: E402
from training.loop import ADAM_BETAS, fit, make_optimizer  # noqa: E402
from training.modeling import load_model  # noqa: E402
from training.pretrain import PretrainConfig, build_llama, stdlib_corpus  # noqa: E402
from training.tokenizer import train_tokenizer  # noqa: E402


def build(out_dir: Path, cfg: PretrainConfig, corpus_bytes: int) -> tuple[Path, list[str]]:
    """Save a random-init stand-in-shaped Llama and its tokenizer to ``out_dir``; return it and the texts."""
    texts = stdlib_corpus(max_bytes=corpus_bytes)
    tokenizer = train_tokenizer(texts, cfg.vocab_size, cfg.block_size)
    model = build_llama(tokenizer, cfg)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir, texts


def fused_adamw(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """``make_optimizer``'s two groups (decay on 2-D weights) with ``fused=True`` (CUDA kernels)."""
    groups = make_optimizer(model, cfg).param_groups
    return torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "lr"} for g in groups], lr=cfg.peak_lr, betas=ADAM_BETAS, fused=True
    )


def run_path(model_dir: Path, texts: list[str], device: torch.device, steps: int, batch: int, seq: int) -> dict:
    """One update of ``steps`` steps (plus one warm-up step not timed) on ``device``; the path's figures."""
    cuda = device.type == "cuda"
    model, tokenizer = load_model(model_dir, device, torch_dtype="bfloat16" if cuda else "float32")
    blocks = pack_texts(tokenizer, texts, seq)
    cfg = TrainConfig(seq_len=seq, batch_size=batch, max_steps=steps, bf16=bf16_supported(device), log_every=steps)
    optimizer = fused_adamw(model, cfg) if cuda else make_optimizer(model, cfg)
    fit(model, optimizer, blocks, cfg, device=device, total_steps=1)  # warm-up: kernels, allocator
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = fit(model, optimizer, blocks, cfg, device=device, total_steps=steps)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "weights": str(next(model.parameters()).dtype).removeprefix("torch."),
        "autocast_bf16": cfg.bf16,
        "fused_adamw": bool(optimizer.defaults.get("fused")),
        "steps": steps,
        "tokens": result.train_tokens,
        "wall_s": wall,
        "tokens_per_s": result.train_tokens / wall,
        "peak_memory_mb": peak / 2**20,
        "final_loss": result.final_loss,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--corpus-bytes", type=int, default=400_000)
    ap.add_argument("--tiny", action="store_true", help="the test-sized model (PretrainConfig.tiny)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write gpu_smoke.json here")
    args = ap.parse_args(argv)
    cfg = PretrainConfig.tiny() if args.tiny else PretrainConfig()
    seq = min(args.seq, cfg.block_size)
    configure_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        model_dir, texts = build(Path(tmp), cfg, args.corpus_bytes)
        report = {
            "torch": torch.__version__,
            "cpu": run_path(model_dir, texts, torch.device("cpu"), args.steps, args.batch, seq),
        }
        if torch.cuda.is_available():
            report["cuda"] = run_path(model_dir, texts, torch.device("cuda"), args.steps, args.batch, seq)
            report["speedup"] = report["cuda"]["tokens_per_s"] / report["cpu"]["tokens_per_s"]
            report["gpu_path"] = "verified"
        else:
            report["gpu_path"] = "UNVERIFIED: no CUDA device on this machine; only the CPU path ran"
    for name in ("cpu", "cuda"):
        if name in report:
            r = report[name]
            print(
                f"{name}: {r['device']}, weights {r['weights']}, autocast bf16 {r['autocast_bf16']}, fused AdamW "
                f"{r['fused_adamw']}: {r['tokens_per_s']:,.0f} tokens/s over {r['steps']} steps, peak memory "
                f"{r['peak_memory_mb']:,.0f} MB, final loss {r['final_loss']:.3f}"
            )
    print(f"GPU path: {report['gpu_path']}" + (f" (speed-up x{report['speedup']:.1f})" if "speedup" in report else ""))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_smoke.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
