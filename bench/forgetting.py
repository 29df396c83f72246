"""Forgetting benchmark: a pretrained stand-in base kept current on another domain, method by method.

Protocol (issue 16, item 6):

* Base: the stand-in Llama pretrained offline on the Python standard library's docstrings and comments
  (``training.pretrain.pretrain_base``, a tiny budget here); its held-out slice ``general_eval.jsonl`` is
  the **general set**. Its other documents are the general replay pool (never the general set).
* Stream: ``--windows`` monthly windows of ``--rows`` rows each from the PyPI summaries (``--stream``: a
  Parquet file with ``month`` + ``--text-field`` columns, or a folder of one ``.parquet``/``.jsonl`` file per
  window), ``--eval-fraction`` of each window held out by a salted hash of the text.
* Methods, each a chain of ``training.finetune.finetune`` updates W_1..W_T with ``--steps`` AdamW steps each:
  ``naive`` (full fine-tuning on the window), ``replay`` (+25% rows from the general pool and earlier windows),
  ``ewc`` (online EWC, ``--ewc-lambda``, Fisher on general-pool rows), ``lora`` (adapter versions on the frozen
  base, ``--lora-lr``), ``lora+replay``, ``cumulative`` (retrain from the base on all windows so far, steps
  x t), ``dp-lora-eps8`` / ``dp-lora-eps1`` (DP-SGD on the adapter, ``training.privacy``).
* Metrics: **forward bpb** = the model trained through W_{t-1} on W_t's held-out rows, mean over t >= 2
  (for W_1 it is the base for every method; for ``cumulative`` the previous retrain, not the base);
  **new bpb** = after update t on W_t; **general rise** = general-set bits/byte
  after the last update minus the base's (forgetting; max over updates too); **stream retention** = W_1's
  held-out bits/byte after the last update; training tokens, wall seconds (fit), bytes stored per version
  (model files + train_state.pt, as the registry holds them). Headline methods run ``--seeds`` seeds;
  the DP rows one seed.

Usage::

    nice -n 10 python bench/forgetting.py --out bench/results

Writes ``<out>/forgetting.json`` and ``<out>/forgetting.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

common.hf_offline_env()

DEFAULT_STREAM = Path("/work/shared/data/pypi_summaries_2023_2026.parquet")
HEADLINE = ["naive", "replay", "ewc", "lora", "lora+replay", "cumulative"]
DP = {"dp-lora-eps8": 8.0, "dp-lora-eps1": 1.0}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", type=Path, default=DEFAULT_STREAM)
    p.add_argument("--text-field", default="summary")
    p.add_argument("--first-month", default="2024-01")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--rows", type=int, default=300, help="rows sampled per window")
    p.add_argument("--eval-fraction", type=float, default=0.15)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lora-lr", type=float, default=5e-3)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    p.add_argument("--ewc-lambda", type=float, default=1e5)
    p.add_argument("--replay-fraction", type=float, default=0.25)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--base-cache", type=Path, default=Path.home() / ".cache" / "streamtune" / "bench-base")
    p.add_argument("--base-steps", type=int, default=600)
    p.add_argument("--methods", default=",".join([*HEADLINE, *DP]))
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    return p.parse_args()


def _held(text: str, fraction: float) -> bool:
    return int(hashlib.sha256(b"forgetting-eval" + text.encode()).hexdigest()[:8], 16) / 2**32 < fraction


def load_windows(args: argparse.Namespace) -> list[dict]:
    """``[{"key", "train", "eval"}]``: ``args.windows`` windows of ``args.rows`` distinct non-empty texts."""
    import polars as pl

    stream = args.stream
    if stream.is_dir():
        files = sorted(p for p in stream.iterdir() if p.suffix in (".parquet", ".jsonl"))[: args.windows]
        frames = [(f.stem, pl.read_parquet(f) if f.suffix == ".parquet" else pl.read_ndjson(f)) for f in files]
    else:
        df = pl.read_parquet(stream, columns=["month", args.text_field])
        months = sorted(m for m in df["month"].unique().to_list() if m >= args.first_month)[: args.windows]
        frames = [(m, df.filter(pl.col("month") == m)) for m in months]
    windows = []
    for key, frame in frames:
        texts = [t.strip() for t in frame[args.text_field].drop_nulls().unique(maintain_order=True).to_list()]
        texts = [t for t in texts if len(t) >= 8]
        texts = random.Random(key).sample(texts, min(args.rows, len(texts)))
        held = [_held(t, args.eval_fraction) for t in texts]
        windows.append(
            {
                "key": key,
                "train": [t for t, h in zip(texts, held) if not h],
                "eval": [t for t, h in zip(texts, held) if h],
            }
        )
    if len(windows) < 2:
        raise SystemExit(f"{stream}: need at least 2 windows, found {len(windows)}")
    return windows


def build_base(args: argparse.Namespace) -> tuple[Path, list[str], list[str], dict]:
    """``(base dir, general set, general replay pool, pretrain facts)`` from ``training.pretrain``."""
    from training.pretrain import GENERAL_EVAL_FILE, PRETRAIN_FILE, PretrainConfig, pretrain_base, stdlib_corpus

    cfg = PretrainConfig(
        hidden_size=128,
        n_layer=2,
        n_head=4,
        intermediate_size=352,
        vocab_size=2048,
        block_size=args.seq_len,
        steps=args.base_steps,
        batch_size=16,
        max_corpus_bytes=3_000_000,
        heldout_max_bytes=32768,
        threads=args.threads,
    )
    base = pretrain_base(args.base_cache, cfg)
    general = [json.loads(line)["text"] for line in (base / GENERAL_EVAL_FILE).read_text().splitlines() if line]
    held = set(general)
    pool = [d for d in stdlib_corpus(None, cfg.max_corpus_bytes) if d not in held]
    return base, general, pool, json.loads((base / PRETRAIN_FILE).read_text())


def _train_cfg(args: argparse.Namespace, method: str, seed: int, t: int):
    from training.config import TrainConfig

    lora = "lora" in method
    kw = dict(
        seq_len=args.seq_len,
        batch_size=args.batch,
        peak_lr=args.lora_lr if lora else args.lr,
        max_steps=args.steps * (t + 1 if method == "cumulative" else 1),
        bf16=False,
        threads=args.threads,
        eval_batch_size=64,
        log_every=10**6,
        seed=seed,
    )
    if lora:
        kw.update(
            adapter="lora", lora_r=args.lora_r, lora_alpha=2.0 * args.lora_r, lora_target_modules=args.lora_targets
        )
    if method == "ewc":
        kw.update(ewc_lambda=args.ewc_lambda, ewc_gamma=1.0, ewc_rows=64)
    if method in DP:
        kw.update(dp_epsilon=DP[method], dp_delta=1e-5, dp_max_grad_norm=1.0)
    return TrainConfig(**kw)


def _replay(args, method: str, windows: list[dict], t: int, pool: list[str], rng: random.Random) -> list[str]:
    """Rows mixed into update t: ``fraction / (1 - fraction)`` x the new rows, half from the general pool
    and half from earlier windows (all from the pool at t = 0); none for other methods."""
    if "replay" not in method:
        return []
    n = round(args.replay_fraction / (1 - args.replay_fraction) * len(windows[t]["train"]))
    old = [x for w in windows[:t] for x in w["train"]]
    n_old = n // 2 if old else 0
    return rng.sample(pool, n - n_old) + (rng.sample(old, min(n_old, len(old))) if n_old else [])


def run_method(args, method: str, seed: int, base: Path, windows, general, pool, work: Path) -> dict:
    """One chain of updates; returns its per-update scores and totals."""
    from training.adapters import stored_bytes
    from training.finetune import FinetuneRequest, finetune

    rng = random.Random(f"{method}-{seed}")
    parent, updates = base, []
    for t, w in enumerate(windows):
        train = [x for v in windows[: t + 1] for x in v["train"]] if method == "cumulative" else list(w["train"])
        train += _replay(args, method, windows, t, pool, rng)
        out = work / f"{method}-s{seed}-t{t}"
        req = FinetuneRequest(
            parent=base if method == "cumulative" else parent,
            train_texts=train,
            cfg=_train_cfg(args, method, seed, t),
            out_dir=out,
            new_eval_texts=w["eval"],
            matrix_eval={
                "general": general,
                "first": windows[0]["eval"],
                **({"next": windows[t + 1]["eval"]} if t + 1 < len(windows) else {}),
            },
            fisher_texts=rng.sample(pool, 64) if method == "ewc" else (),
        )
        r = finetune(req)
        m = r.metrics()
        updates.append(
            {
                "window": w["key"],
                "parent_new_bpb": r.champion_new.bits_per_byte,
                "next_bpb": r.matrix_after["next"].bits_per_byte if "next" in r.matrix_after else None,
                "new_bpb": r.challenger_new.bits_per_byte,
                "general_bpb": r.matrix_after["general"].bits_per_byte,
                "first_bpb": r.matrix_after["first"].bits_per_byte,
                "train_tokens": r.fit.train_tokens,
                "fit_s": r.fit.wall_seconds,
                "version_bytes": stored_bytes(out) - (out / "train_state.pt").stat().st_size,
                "train_state_bytes": (out / "train_state.pt").stat().st_size,
                **{k: v for k, v in m.items() if k.startswith(("dp_", "ewc_"))},
            }
        )
        if parent != base:  # adapters point at the base, not at their parent: the parent is done with
            shutil.rmtree(parent, ignore_errors=True)
        parent = out
    return {"method": method, "seed": seed, "updates": updates}


def summarise(run: dict, base_general: float) -> dict:
    """Flat numbers of one run (see the module docstring)."""
    u = run["updates"]
    return {
        "forward_bpb": statistics.fmean(x["next_bpb"] for x in u[:-1]),
        "new_bpb": statistics.fmean(x["new_bpb"] for x in u),
        "general_rise": u[-1]["general_bpb"] - base_general,
        "general_rise_max": max(x["general_bpb"] for x in u) - base_general,
        "retention_w1_bpb": u[-1]["first_bpb"],
        "train_tokens": sum(x["train_tokens"] for x in u),
        "fit_s": sum(x["fit_s"] for x in u),
        "version_bytes": statistics.fmean(x["version_bytes"] for x in u),
        "train_state_bytes": statistics.fmean(x["train_state_bytes"] for x in u),
        **(
            {"dp_epsilon": u[-1]["dp_epsilon"], "dp_epsilon_cumulative": u[-1]["dp_epsilon_cumulative"]}
            if "dp_epsilon" in u[-1]
            else {}
        ),
    }


def _agg(rows: list[dict]) -> dict:
    out = {}
    for k in rows[0]:
        vals = [r[k] for r in rows]
        out[k] = statistics.fmean(vals)
        out[k + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    out["seeds"] = len(rows)
    return out


def verdict(table: dict[str, dict]) -> str:
    """The issue's target: a method within 1% of naive's forward bpb with >= 70% less general-set rise."""
    naive = table["naive"]
    lines = []
    for name, row in table.items():
        if name == "naive":
            continue
        gap = row["forward_bpb"] / naive["forward_bpb"] - 1
        less = 1 - row["general_rise"] / naive["general_rise"] if naive["general_rise"] > 0 else float("nan")
        ok = gap <= 0.01 and less >= 0.70
        mark = "MEETS" if ok else "misses"
        lines.append(
            f"- {name}: forward bpb {gap:+.1%} vs naive, general-set rise {less:.0%} lower -> {mark} the target"
        )
    return "\n".join(lines)


def write_md(path: Path, meta: dict, table: dict[str, dict]) -> None:
    cols = [
        ("forward_bpb", "forward bpb", ".4f"),
        ("new_bpb", "new bpb", ".4f"),
        ("general_rise", "general rise (last)", "+.4f"),
        ("general_rise_max", "general rise (max)", "+.4f"),
        ("retention_w1_bpb", "W1 retention bpb", ".4f"),
        ("train_tokens", "train tokens", ",.0f"),
        ("fit_s", "fit s", ".1f"),
        ("version_bytes", "bytes/version", ",.0f"),
        ("train_state_bytes", "train_state bytes", ",.0f"),
    ]
    lines = [
        "# Forgetting benchmark (bench/forgetting.py)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Generated {meta['generated']}, {meta['wall_min']:.1f} min wall on {meta['machine']}.  ",
        f"Base: {meta['base']['parameters']:,}-parameter Llama stand-in, {meta['base']['steps']} steps on "
        f"{meta['base']['corpus_bytes']:,} bytes of stdlib docstrings/comments; general set "
        f"{meta['base']['heldout_bytes']:,} bytes, base general bpb {meta['base_general_bpb']:.4f}.  ",
        f"Stream: {meta['stream']}, windows {', '.join(meta['windows'])} ({meta['rows']} rows each, "
        f"{meta['eval_fraction']:.0%} held out); {meta['steps']} steps x {meta['batch']} x {meta['seq_len']} tokens "
        f"per update; lr {meta['lr']} (LoRA r={meta['lora_r']} on {meta['lora_targets']}: {meta['lora_lr']}), "
        f"EWC lambda {meta['ewc_lambda']:g}.",
        "",
        "| method | seeds | " + " | ".join(c[1] for c in cols) + " | epsilon (update / cumulative) |",
        "|" + "---|" * (len(cols) + 3),
    ]
    for name, row in table.items():
        cells = []
        for key, _, fmt in cols:
            spread = row["seeds"] > 1 and (key.endswith("bpb") or key.startswith("general"))
            sd = f" ± {row[key + '_sd']:{fmt.lstrip('+,')}}" if spread else ""
            cells.append(f"{row[key]:{fmt}}{sd}")
        eps = f"{row['dp_epsilon']:.2f} / {row['dp_epsilon_cumulative']:.2f}" if "dp_epsilon" in row else ""
        lines.append(f"| {name} | {row['seeds']} | " + " | ".join(cells) + f" | {eps} |")
    lines += ["", "## Target (issue 16)", "", verdict(table), ""]
    path.write_text("\n".join(lines))


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    from training.evaluate import evaluate
    from training.modeling import load_model

    windows = load_windows(args)
    base, general, pool, facts = build_base(args)
    model, tok = load_model(base)
    base_general = evaluate(model, tok, general, seq_len=args.seq_len, batch_size=64, device=torch.device("cpu"))
    print(f"[{time.perf_counter() - start:6.1f}s] base ready: general bpb {base_general.bits_per_byte:.4f}", flush=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    runs, table = [], {}
    with tempfile.TemporaryDirectory(prefix="forgetting-") as tmp:
        for method in methods:
            seeds = 1 if method in DP else args.seeds
            per_seed = []
            for seed in range(seeds):
                run = run_method(args, method, seed, base, windows, general, pool, Path(tmp))
                runs.append(run)
                per_seed.append(summarise(run, base_general.bits_per_byte))
                print(f"[{time.perf_counter() - start:6.1f}s] {method} seed {seed}: {per_seed[-1]}", flush=True)
            table[method] = _agg(per_seed)
    meta = {
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "nice -n 10 python " + " ".join(sys.argv),
        "wall_min": (time.perf_counter() - start) / 60,
        "machine": f"shared CPU, torch threads={args.threads}",
        "base": facts,
        "base_dir": str(base),
        "base_general_bpb": base_general.bits_per_byte,
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "windows": [w["key"] for w in windows],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "forgetting.json").write_text(json.dumps({"meta": meta, "table": table, "runs": runs}, indent=1))
    write_md(args.out / "forgetting.md", meta, table)
    print((args.out / "forgetting.md").read_text())


if __name__ == "__main__":
    main()
