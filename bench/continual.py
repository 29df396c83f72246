"""Continual-learning benchmark: the streamtune engine against the standard baselines on a real stream.

Protocol (research notes ``continual.md`` sec. 7; TiC-LM, Li et al. 2025, arXiv 2504.02107; metrics as in
Avalanche / Lopez-Paz & Ranzato 2017, arXiv 1706.08840):

* The stream is any directory of window files (``.jsonl``, ``.jsonl.gz``, ``.ndjson``, ``.csv``, ``.parquet``
  with a text field), one file = one window, taken in file-name order. Each window is split by the same
  record-id hash as the pipeline (``training.data.heldout_mask``, 10%): training rows and a held-out slice
  that no method ever trains on (nor replays).
* M_0: a byte-level BPE tokenizer fitted on W_0's training rows (then frozen) and a small GPT-2 trained
  from random init on W_0. Every method starts from the same M_0 (per seed).
* For t = 1..T-1, each continual method makes one update with the *same* token budget (``--steps``
  optimiser steps x batch x seq_len) and the engine's recipe: ``training.finetune.finetune`` (linear
  re-warm + cosine re-decay, AdamW state carried over). Before the update the model is scored on W_t's
  held-out slice (forward / plasticity); after it, on every window's held-out slice (a row of R).
* Methods: ``frozen`` (M_0 forever); ``naive`` (sequential fine-tuning, no replay); ``replay-f`` (window-
  balanced reservoir, ``training.replay``, fraction f of each update's rows; ``replay-0.25`` is the default
  engine); optionally ``replay-0.25-ar`` (TiC-LM AR meta-schedule); ``oracle`` (re-train from scratch on
  the union W_0..W_t with ``steps * (t + 1)`` steps, same architecture and schedule family; run every
  ``--oracle-every`` windows and at the last one; between retrains the last oracle model is used).
* Scores are bits per UTF-8 byte (``training.evaluate``). R[i][j] = -bpb of the model after window i on
  window j. ACC/BWT/forgetting from ``training.cl_metrics.cl_summary``; FWT uses the frozen M_0 as b_j.

Usage::

    python bench/continual.py prepare --parquet ../shared/data/pypi_summaries_2023_2026.parquet \\
        --out /tmp/pypi-stream --per-month 400 --month-step 4
    python bench/continual.py run --stream /tmp/pypi-stream --out bench/results --seeds 3

Outputs ``<out>/continual.md`` (table), ``<out>/continual.png`` (plot), ``<out>/continual.json`` (raw).
Nothing is tuned on the held-out slices: all hyper-parameters are the engine defaults or fixed up front.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402

from bench import common  # noqa: E402

common.hf_offline_env()

SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".csv", ".parquet")


# -- stream ------------------------------------------------------------------------------------------


def prepare(parquet: Path, out: Path, per_month: int, month_step: int, first: str, last: str, seed: int) -> list[Path]:
    """Write one ``pypi-YYYY-MM.jsonl`` per selected month: ``per_month`` rows sampled with ``seed``.

    Records: ``{"id": "name@version", "text": summary, "ts": "YYYY-MM-01T00:00:00Z"}``; empty summaries
    are dropped. Months from ``first`` to ``last`` (inclusive), every ``month_step``-th.
    """
    df = pl.read_parquet(parquet).filter(pl.col("summary").str.strip_chars().str.len_chars() > 0)
    months = sorted(m for m in df["month"].unique().to_list() if first <= m <= last)[::month_step]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for m in months:
        part = df.filter(pl.col("month") == m).unique(["name", "version"], maintain_order=True)
        part = part.sample(min(per_month, part.height), seed=seed, shuffle=True)
        recs = part.select(
            id=pl.col("name") + "@" + pl.col("version"), text=pl.col("summary"), ts=pl.lit(f"{m}-01T00:00:00Z")
        )
        path = out / f"pypi-{m}.jsonl"
        recs.write_ndjson(path)
        paths.append(path)
    return paths


def load_stream(stream: Path, text_field: str, eval_fraction: float) -> list[dict]:
    """Windows of a directory, in file-name order: ``[{"key", "train": [str], "eval": [str]}]``."""
    from quality.readers import RecordFields, read_window_file
    from training.data import heldout_mask

    files = sorted(
        p
        for p in Path(stream).iterdir()
        if p.is_file() and p.name.lower().endswith(SUFFIXES) and not p.name.startswith(".")
    )
    if len(files) < 2:
        raise SystemExit(f"{stream}: need at least 2 window files, found {len(files)}")
    windows = []
    for f in files:
        key = f.name.split(".")[0]
        rows = read_window_file(f, key, fields=RecordFields(text=text_field)).rows
        rows = rows.filter(pl.col("text").is_not_null() & (pl.col("text").str.strip_chars().str.len_chars() > 0))
        held = heldout_mask(rows["record_id"].to_list(), eval_fraction)
        texts = rows["text"].to_list()
        windows.append(
            {
                "key": key,
                "train": [t for t, h in zip(texts, held) if not h],
                "eval": [t for t, h in zip(texts, held) if h],
            }
        )
    return windows


# -- methods -----------------------------------------------------------------------------------------


def run_seed(windows: list[dict], methods: list[str], args, seed: int, work: Path, log) -> dict:
    from training.config import TrainConfig
    from training.finetune import FinetuneRequest, finetune
    from training.modeling import build_base_model

    T = len(windows)
    keys = [w["key"] for w in windows]
    evals = {w["key"]: w["eval"] for w in windows}
    model_cfg = common.args_model_cfg(args)
    base_cfg = common.args_train_cfg(args, seed)
    init = build_base_model(windows[0]["train"], model_cfg, work / "init", seed=seed)
    t0 = time.perf_counter()
    m0 = common.train_m0(init, windows, base_cfg, args.m0_steps, work, matrix_eval=evals)
    m0_wall = time.perf_counter() - t0
    frozen_row = {k: r.bits_per_byte for k, r in m0.matrix_after.items()}
    log(
        f"seed {seed}: M_0 trained ({m0.fit.train_tokens} tokens, {m0_wall:.0f}s); frozen bpb on W_0 "
        f"{frozen_row[keys[0]]:.3f}, on W_T {frozen_row[keys[-1]]:.3f}"
    )
    out: dict[str, dict] = {}
    for method in methods:
        rows = {0: frozen_row}  # R as bpb: rows[i][window]
        forward: dict[int, float] = {}
        tokens, train_wall, wall = 0, 0.0, 0.0
        if method == "frozen":
            for t in range(1, T):
                rows[t] = frozen_row
                forward[t] = frozen_row[keys[t]]
            out[method] = _summarise(rows, forward, keys, frozen_row, tokens, train_wall, wall)
            continue
        if method == "oracle":
            retrain_at = sorted({t for t in range(1, T) if t % args.oracle_every == 0} | {T - 1})
            current_row = frozen_row
            for t in range(1, T):
                forward[t] = current_row[keys[t]]
                if t in retrain_at:
                    union = [x for w in windows[: t + 1] for x in w["train"]]
                    cfg = TrainConfig(**{**base_cfg, "max_steps": args.m0_steps + args.steps * t})
                    s = time.perf_counter()
                    res = finetune(
                        FinetuneRequest(
                            parent=init, train_texts=union, cfg=cfg, out_dir=work / f"oracle-{t}", matrix_eval=evals
                        )
                    )
                    wall += time.perf_counter() - s
                    tokens += res.fit.train_tokens
                    train_wall += res.fit.wall_seconds
                    current_row = {k: r.bits_per_byte for k, r in res.matrix_after.items()}
                    log(f"seed {seed} oracle t={t}: {cfg.max_steps} steps, bpb W_t {current_row[keys[t]]:.3f}")
                rows[t] = current_row
            out[method] = _summarise(rows, forward, keys, frozen_row, tokens, train_wall, wall)
            out[method]["oracle_retrains"] = retrain_at
            continue
        fraction = 0.0 if method == "naive" else float(method.split("-")[1])
        schedule = "ar_meta" if method.endswith("-ar") else "rewarm"
        cfg = TrainConfig(**{**base_cfg, "lr_schedule": schedule})
        run = common.replay_updates(
            windows, cfg, name=method, work=work, seed=seed, buffer_rows=args.buffer, replay_fraction=fraction
        )
        rows.update(run["rows"])
        forward.update(run["forward"])
        tokens = sum(f.train_tokens for f in run["fits"])
        train_wall = sum(f.wall_seconds for f in run["fits"])
        wall = run["wall"]
        log(
            f"seed {seed} {method}: forward {statistics.mean(forward.values()):.4f}, "
            f"final W_0 {rows[T - 1][keys[0]]:.4f}, {tokens} tokens, {wall:.0f}s"
        )
        out[method] = _summarise(rows, forward, keys, frozen_row, tokens, train_wall, wall)
    return out


def _summarise(
    rows: dict[int, dict],
    forward: dict[int, float],
    keys: list[str],
    frozen: dict[str, float],
    tokens: int,
    train_wall: float,
    wall: float,
) -> dict:
    from training.cl_metrics import cl_summary

    T = len(keys)
    R = {(i, j): -rows[i][keys[j]] for i in rows for j in range(T)}  # full rows; cl_summary reads what it needs
    summary = cl_summary(R, T, base=[-frozen[k] for k in keys])
    final = rows[T - 1]
    return {
        "forward_bpb": statistics.mean(forward[t] for t in range(1, T)),
        "forward_curve": [forward[t] for t in range(1, T)],
        "final_retention_bpb": statistics.mean(final[keys[j]] for j in range(T - 1)),
        "final_first_bpb": final[keys[0]],
        "final_new_bpb": final[keys[T - 1]],
        "acc_bpb": -summary["acc"],
        "bwt_bpb": -summary["bwt"],
        "fwt_bpb": -summary["fwt"],
        "forgetting_bpb": summary["forgetting"],
        "train_tokens": tokens,
        "train_wall_s": train_wall,
        "wall_s": wall,
        "matrix_bpb": {str(i): rows[i] for i in rows},
    }


# -- report ------------------------------------------------------------------------------------------


def _ms(xs: list[float], fmt: str) -> str:
    if len(xs) == 1:
        return format(xs[0], fmt)
    return f"{format(statistics.mean(xs), fmt)} ± {format(statistics.stdev(xs), fmt.lstrip('+'))}"


def report(results: dict[str, list[dict]], meta: dict, out: Path) -> str:
    oracle = results.get("oracle")
    fresh = meta.get("fresh_t", [])  # windows t whose oracle was retrained through t-1 (W_0: M_0)
    for runs in results.values():
        for r in runs:
            r["forward_fresh_bpb"] = statistics.mean(r["forward_curve"][t - 1] for t in fresh) if fresh else math.nan
    o_fwd = statistics.mean(r["forward_bpb"] for r in oracle) if oracle else math.nan
    o_fresh = statistics.mean(r["forward_fresh_bpb"] for r in oracle) if oracle else math.nan
    o_tok = statistics.mean(r["train_tokens"] for r in oracle) if oracle else math.nan
    o_wall = statistics.mean(r["wall_s"] for r in oracle) if oracle else math.nan
    naive = results.get("naive")
    n_forg = statistics.mean(r["forgetting_bpb"] for r in naive) if naive else math.nan
    lines = [
        "| method | seeds | mean forward bpb | forward bpb, oracle-fresh windows | final retention bpb | final W_0 bpb "
        "| forgetting (bpb) | ACC (bpb) | BWT (bpb) "
        "| FWT vs frozen (bpb) | train tokens | wall s | forward / oracle | fresh forward / oracle | tokens / oracle "
        "| wall / oracle "
        "| forgetting vs naive |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, runs in results.items():
        fwd = [r["forward_bpb"] for r in runs]
        forg = statistics.mean(r["forgetting_bpb"] for r in runs)
        tok = statistics.mean(r["train_tokens"] for r in runs)
        wall = statistics.mean(r["wall_s"] for r in runs)
        vs_naive = f"{1 - forg / n_forg:+.0%} less" if naive and n_forg > 0 and method != "naive" else ""
        lines.append(
            f"| {method} | {len(runs)} | {_ms(fwd, '.4f')} | {_ms([r['forward_fresh_bpb'] for r in runs], '.4f')} "
            f"| {_ms([r['final_retention_bpb'] for r in runs], '.4f')} "
            f"| {_ms([r['final_first_bpb'] for r in runs], '.4f')} | {_ms([r['forgetting_bpb'] for r in runs], '.4f')} "
            f"| {_ms([r['acc_bpb'] for r in runs], '.4f')} | {_ms([r['bwt_bpb'] for r in runs], '+.4f')} "
            f"| {_ms([r['fwt_bpb'] for r in runs], '+.4f')} | {tok:,.0f} | {wall:.0f} "
            f"| {statistics.mean(fwd) / o_fwd:.4f} "
            f"| {statistics.mean(r['forward_fresh_bpb'] for r in runs) / o_fresh:.4f} | {tok / o_tok:.3f} "
            f"| {wall / o_wall:.3f} | {vs_naive} |"
        )
    table = "\n".join(lines)
    md = [
        "# Continual-learning benchmark",
        "",
        f"Generated {meta['generated']} by `{meta['command']}` in {meta['wall_min']:.1f} min wall ({meta['machine']}).",
        "",
        f"Stream: `{meta['stream']}`: {meta['T']} windows ({meta['first']} .. {meta['last']}), "
        f"{meta['train_rows']} training rows and {meta['eval_rows']} held-out rows in total. Model: GPT-2 "
        f"{meta['model']}; M_0 = {meta['m0_steps']} steps on W_0 from random init; {meta['steps']} steps x "
        f"{meta['batch']} x {meta['seq_len']} tokens per update "
        "(oracle at t: M_0's + t x that, from scratch on the union); "
        f"peak lr {meta['lr']}; replay buffer {meta['buffer']} rows; oracle retrained at windows "
        f"{meta['oracle_retrains']}.",
        "",
        "bpb = bits per UTF-8 byte on held-out rows (lower is better). Forward = the model before an update on "
        "the new window (plasticity), mean over t = 1..T-1. Retention = the final model, mean over the held-out "
        "slices of W_0..W_{T-2}. Forgetting = Chaudhry et al. (max over past rows minus final), in bpb. ACC/BWT/FWT "
        "as in Avalanche with R = -bpb, reported here in bpb (ACC = mean final bpb over all windows, BWT > 0 = "
        "worse on old windows, FWT < 0 = better than frozen M_0 on the next window). Tokens and wall time cover "
        "the updates after M_0 (the oracle: its retrains, as executed). Between retrains the oracle serves its "
        "last model, so its forward score is stale on some windows: the fair comparison is the 'oracle-fresh' "
        f"column (windows t = {meta['fresh_t']}, where the oracle was trained through t-1). ± = std over seeds.",
        "",
        table,
        "",
    ]
    for line in meta.get("notes", []):
        md.append(line)
    text = "\n".join(md) + "\n"
    (out / "continual.md").write_text(text)
    return table


def plot(results: dict[str, list[dict]], keys: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for method, runs in results.items():
        curves = [r["forward_curve"] for r in runs]
        mean = [statistics.mean(c[i] for c in curves) for i in range(len(curves[0]))]
        axes[0].plot(range(1, len(keys)), mean, marker="o", ms=3, label=method)
        final = [statistics.mean(r["matrix_bpb"][str(len(keys) - 1)][k] for r in runs) for k in keys]
        axes[1].plot(range(len(keys)), final, marker="o", ms=3, label=method)
    axes[0].set_title("forward bpb: model before the update on the new window")
    axes[1].set_title("final model on every window's held-out slice")
    for ax in axes:
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([k.replace("pypi-", "") for k in keys], rotation=60, fontsize=7)
        ax.set_ylabel("bits per byte")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "continual.png", dpi=110)


# -- main --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="sample a monthly stream of window files from the PyPI parquet")
    pp.add_argument("--parquet", type=Path, required=True)
    pp.add_argument("--out", type=Path, required=True)
    pp.add_argument("--per-month", type=int, default=400)
    pp.add_argument("--month-step", type=int, default=4)
    pp.add_argument("--first", default="2023-01")
    pp.add_argument("--last", default="2026-10")
    pp.add_argument("--seed", type=int, default=0)
    pr = sub.add_parser("run", help="run the benchmark on a directory of window files")
    common.add_stream_args(pr)
    pr.add_argument("--seeds", type=int, default=3, help="seeds for the headline rows (naive, replay-0.25, oracle)")
    pr.add_argument("--methods", default="frozen,naive,replay-0.1,replay-0.25,oracle")
    pr.add_argument("--headline", default="naive,replay-0.25,oracle")
    common.add_training_args(pr)
    pr.add_argument("--oracle-every", type=int, default=3)
    pr.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    if args.cmd == "prepare":
        paths = prepare(args.parquet, args.out, args.per_month, args.month_step, args.first, args.last, args.seed)
        print(f"wrote {len(paths)} windows to {args.out}")
        return

    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    log = common.make_log(start, (args.out / "continual.log").open("w"))
    windows = load_stream(args.stream, args.text_field, args.eval_fraction)
    keys = [w["key"] for w in windows]
    methods = args.methods.split(",")
    headline = set(args.headline.split(","))
    results: dict[str, list[dict]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory(prefix="streamtune-bench-") as tmp:
        for seed in range(args.seeds):
            todo = methods if seed == 0 else [m for m in methods if m in headline]
            res = run_seed(windows, todo, args, seed, Path(tmp) / f"s{seed}", log)
            for m, r in res.items():
                results[m].append(r)
            (args.out / "continual.json").write_text(json.dumps({"keys": keys, "results": results}, indent=1))
    wall_min = (time.perf_counter() - start) / 60
    command = "python bench/continual.py run " + " ".join(sys.argv[2:] if argv is None else argv[1:])
    meta = {
        **common.run_meta(args, windows, command, wall_min),
        "oracle_retrains": results["oracle"][0]["oracle_retrains"] if results.get("oracle") else [],
        "m0_steps": args.m0_steps,
    }
    meta["fresh_t"] = [1] + [t + 1 for t in meta["oracle_retrains"] if t + 1 < len(windows)]
    table = report(results, meta, args.out)
    plot(results, keys, args.out)
    (args.out / "continual.json").write_text(json.dumps({"keys": keys, "meta": meta, "results": results}, indent=1))
    log(f"done in {wall_min:.1f} min\n{table}")


if __name__ == "__main__":
    main()
