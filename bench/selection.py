"""Online data selection benchmark: every ``training.selection`` strategy against uniform on the PyPI stream.

Reuses the continual-learning harness (``bench/continual.py``: stream loading, the 10% record-id-hash
held-out slices, M_0 from random init, ``training.finetune.finetune`` updates with the engine's recipe,
replay-0.25 from the window-balanced reservoir, and its summary metrics). Protocol:

* Same model, seeds and M_0 per seed for every method. Each update t = 1..T-1 fine-tunes the previous
  model of *that method* on W_t's training rows + 25% replay for ``--steps`` optimiser steps of
  ``--batch`` x ``--seq-len`` tokens (equal steps; a strategy that drops candidates trains on fewer tokens
  and its ``train tokens`` say so).
* Strategies needing a reference slice (rho_loss, greats, dwm) get 5% of W_t's training rows (by a salted
  record hash), removed from their training set; the held-out evaluation slices are never touched, and
  nothing is tuned on them (all strategy settings are their module defaults, fixed before the run).
* Uniform is also run at ``--budgets`` x the step budget, giving per seed a curve of forward bpb vs
  training tokens and vs training wall-clock. From it: **token efficiency** = tokens uniform needs to reach
  the strategy's forward bpb (log-linear interpolation on the curve) / tokens the strategy trained on, and
  the **equal wall-clock** comparison = strategy bpb - uniform's bpb interpolated at the strategy's
  training wall-clock.
* Forward bpb = the model before an update on the new window's held-out slice (mean over t); retention
  bpb = the final model on W_0..W_{T-2}'s held-out slices (``bench.continual._summarise``). Time =
  ``fit`` time (training + selection, including one-off setup such as RHO's irreducible-loss model) with
  torch threads = 1, measured as process CPU seconds (= wall-clock on an unshared core; the measured wall
  seconds are reported too, but on a shared machine they mostly measure the neighbours).

Usage::

    python bench/continual.py prepare --parquet ../shared/data/pypi_summaries_2023_2026.parquet \\
        --out /tmp/pypi-stream --per-month 1000 --month-step 4
    python bench/selection.py --stream /tmp/pypi-stream --out bench/results --windows 7 --seeds 3

Outputs ``<out>/selection.md`` (table + reading), ``<out>/selection.png``, ``<out>/selection.json``,
``<out>/selection.log``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402

from bench import common  # noqa: E402
from bench.continual import _ms, _summarise, load_stream  # noqa: E402

common.hf_offline_env()

STRATEGIES = ["loss_reweight", "rho_loss", "greats", "dwm", "d3"]


def _uniform_name(budget: float) -> str:
    return "uniform" if budget == 1 else f"uniform@{budget:g}x"


def split_reference(window: dict, ref_fraction: float) -> tuple[list[str], list[str]]:
    """A window's training rows split by a salted record hash: ``(train, reference)``, ``ref_fraction`` of them
    the reference slice of a strategy that needs one."""
    from training.data import heldout_mask

    new = window["train"]
    held = heldout_mask([f"{window['key']}/{i}" for i in range(len(new))], ref_fraction, salt="selection-ref")
    return [x for x, h in zip(new, held) if not h], [x for x, h in zip(new, held) if h]


def run_seed(windows: list[dict], methods: list[tuple[str, str, float]], args, seed: int, work: Path, log) -> dict:
    """Every method on one seed: ``{name: summary}`` (``_summarise`` + selection statistics)."""
    from training.config import TrainConfig
    from training.modeling import build_base_model
    from training.selection import needs_reference

    keys = [w["key"] for w in windows]
    evals = {w["key"]: w["eval"] for w in windows}
    base_cfg = common.args_train_cfg(args, seed)
    if args.base:  # a pretrained base (e.g. bench/forgetting.py's stand-in): M_0 = it fine-tuned on W_0
        init = Path(args.base)
    else:
        init = build_base_model(windows[0]["train"], common.args_model_cfg(args), work / "init", seed=seed)
    m0 = common.train_m0(init, windows, base_cfg, args.m0_steps, work, matrix_eval=evals)
    frozen_row = {k: r.bits_per_byte for k, r in m0.matrix_after.items()}
    log(f"seed {seed}: M_0 trained ({m0.fit.train_tokens} tokens); bpb on W_0 {frozen_row[keys[0]]:.3f}")
    out: dict[str, dict] = {}
    for name, selection, budget in methods:
        cfg = TrainConfig(**{**base_cfg, "max_steps": max(1, round(args.steps * budget)), "selection": selection})
        run = common.replay_updates(
            windows,
            cfg,
            name=name,
            work=work,
            seed=seed,
            buffer_rows=args.buffer,
            replay_fraction=args.replay,
            split=(lambda t, _: split_reference(windows[t], args.ref_fraction)) if needs_reference(selection) else None,
        )
        shutil.rmtree(run["last"], ignore_errors=True)
        rows, forward, wall = {0: frozen_row, **run["rows"]}, run["forward"], run["wall"]
        tokens = sum(f.train_tokens for f in run["fits"])
        train_wall = sum(f.wall_seconds for f in run["fits"])
        cpu = sum(f.cpu_seconds for f in run["fits"])
        sel_stats: list[dict[str, float]] = [f.selection for f in run["fits"]]
        summary = _summarise(rows, forward, keys, frozen_row, tokens, train_wall, wall)
        summary.pop("matrix_bpb")
        summary.update(
            {
                "selection": selection,
                "budget": budget,
                "train_cpu_s": cpu,
                "selection_overhead_s": sum(st["selection_overhead_s"] for st in sel_stats),
                "selection_cpu_s": sum(st["selection_overhead_cpu_s"] for st in sel_stats),
                "kept_fraction": statistics.mean(st["selection_kept_fraction"] for st in sel_stats),
                "weight_entropy": statistics.mean(st["selection_weight_entropy"] for st in sel_stats),
            }
        )
        log(
            f"seed {seed} {name}: forward {summary['forward_bpb']:.4f}, "
            f"retention {summary['final_retention_bpb']:.4f}, "
            f"{tokens} tokens, train {train_wall:.1f}s wall / {cpu:.1f}s CPU "
            f"(selection {summary['selection_cpu_s']:.1f}s CPU), "
            f"kept {summary['kept_fraction']:.2f}, entropy {summary['weight_entropy']:.3f}"
        )
        out[name] = summary
    return out


# -- analysis ----------------------------------------------------------------------------------------


def tokens_to_reach(curve: list[tuple[float, float]], target: float) -> tuple[float, str]:
    """Tokens at which a decreasing ``[(tokens, bpb)]`` curve reaches ``target``, log-linear interpolation.

    Returns ``(tokens, flag)``: flag "" inside the curve, ">" if ``target`` is below the curve's best point
    (the value is then the largest budget: a lower bound), "<" if above its worst (an upper bound: the
    smallest budget). Non-monotone stretches are handled by taking the first crossing.
    """
    pts = sorted(curve)
    if target >= pts[0][1]:
        return pts[0][0], "<" if target > pts[0][1] else ""
    for (t0, b0), (t1, b1) in zip(pts, pts[1:]):
        if b0 >= target >= b1 and b0 != b1:
            f = (b0 - target) / (b0 - b1)
            return math.exp(math.log(t0) + f * (math.log(t1) - math.log(t0))), ""
    return pts[-1][0], ">"


def value_at(curve: list[tuple[float, float]], x: float) -> tuple[float, str]:
    """``curve`` ``[(x, y)]`` linearly interpolated at ``x``; clamped (flag "<"/">") outside its range."""
    pts = sorted(curve)
    if x <= pts[0][0]:
        return pts[0][1], "<" if x < pts[0][0] else ""
    if x >= pts[-1][0]:
        return pts[-1][1], ">" if x > pts[-1][0] else ""
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 + (x - x0) / (x1 - x0) * (y1 - y0), ""
    raise AssertionError("unreachable")


def analyse(results: dict[str, list[dict]], budgets: list[float]) -> dict[str, dict]:
    """Per strategy and seed: token efficiency (forward and retention bpb), equal-wall-clock deltas, overhead."""
    uni = [results[_uniform_name(b)] for b in budgets]
    n_seeds = len(results["uniform"])
    out: dict[str, dict] = {}
    for name, runs in results.items():
        per: dict[str, list] = {
            k: []
            for k in (
                "eff_fwd",
                "eff_ret",
                "flag_fwd",
                "flag_ret",
                "d_fwd",
                "d_ret",
                "d_fwd_wall",
                "flag_wall",
                "overhead",
                "overhead_wall",
            )
        }
        for s in range(min(n_seeds, len(runs))):
            r = runs[s]
            fwd_tok = [(u[s]["train_tokens"], u[s]["forward_bpb"]) for u in uni]
            ret_tok = [(u[s]["train_tokens"], u[s]["final_retention_bpb"]) for u in uni]
            fwd_wall = [(u[s]["train_cpu_s"], u[s]["forward_bpb"]) for u in uni]
            need, flag = tokens_to_reach(fwd_tok, r["forward_bpb"])
            per["eff_fwd"].append(need / r["train_tokens"])
            per["flag_fwd"].append(flag)
            need, flag = tokens_to_reach(ret_tok, r["final_retention_bpb"])
            per["eff_ret"].append(need / r["train_tokens"])
            per["flag_ret"].append(flag)
            base = results["uniform"][s]
            per["d_fwd"].append(r["forward_bpb"] - base["forward_bpb"])
            per["d_ret"].append(r["final_retention_bpb"] - base["final_retention_bpb"])
            at_wall, flag = value_at(fwd_wall, r["train_cpu_s"])
            per["d_fwd_wall"].append(r["forward_bpb"] - at_wall)
            per["flag_wall"].append(flag)
            per["overhead"].append(r["train_cpu_s"] / base["train_cpu_s"] - 1)
            per["overhead_wall"].append(r["train_wall_s"] / base["train_wall_s"] - 1)
        out[name] = per
    return out


def _flagged(xs: list[float], flags: list[str], fmt: str) -> str:
    text = _ms(xs, fmt)
    marks = sorted({f for f in flags if f})
    return text + (f" ({'/'.join(marks)})" if marks else "")


def report(results: dict[str, list[dict]], analysis: dict[str, dict], meta: dict, out: Path) -> str:
    lines = [
        "| method | seeds | forward bpb | Δ forward vs uniform (equal steps) | retention bpb | Δ retention "
        "| train tokens "
        "| train time s (CPU / wall) | time overhead vs uniform (CPU / wall) | selection CPU s | kept fraction "
        "| weight entropy "
        "| token efficiency (forward) | token efficiency (retention) | Δ forward vs uniform at equal wall-clock |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        a = analysis[name]
        uniform_row = name.startswith("uniform")  # the reference curve itself: efficiency is not defined
        eff_fwd = "—" if uniform_row else _flagged(a["eff_fwd"], a["flag_fwd"], ".2f")
        eff_ret = "—" if uniform_row else _flagged(a["eff_ret"], a["flag_ret"], ".2f")
        lines.append(
            f"| {name} | {len(runs)} | {_ms([r['forward_bpb'] for r in runs], '.4f')} | {_ms(a['d_fwd'], '+.4f')} "
            f"| {_ms([r['final_retention_bpb'] for r in runs], '.4f')} | {_ms(a['d_ret'], '+.4f')} "
            f"| {statistics.mean(r['train_tokens'] for r in runs):,.0f} "
            f"| {statistics.mean(r['train_cpu_s'] for r in runs):.1f} "
            f"/ {statistics.mean(r['train_wall_s'] for r in runs):.1f} "
            f"| {_ms([100 * x for x in a['overhead']], '+.0f')}% / {statistics.mean(a['overhead_wall']):+.0%} "
            f"| {_ms([r['selection_cpu_s'] for r in runs], '.1f')} "
            f"| {_ms([r['kept_fraction'] for r in runs], '.2f')} | {_ms([r['weight_entropy'] for r in runs], '.3f')} "
            f"| {eff_fwd} | {eff_ret} "
            f"| {_flagged(a['d_fwd_wall'], a['flag_wall'], '+.4f')} |"
        )
    table = "\n".join(lines)
    md = [
        "# Online data selection benchmark",
        "",
        f"Generated {meta['generated']} by `{meta['command']}` in {meta['wall_min']:.1f} min wall ({meta['machine']}).",
        "",
        f"Stream: `{meta['stream']}` (built as in `continual.md`: `python bench/continual.py prepare --parquet "
        f"../shared/data/pypi_summaries_2023_2026.parquet --out /tmp/pypi-stream --per-month 1000 --month-step 4`), "
        f"first {meta['T']} windows ({meta['first']} .. {meta['last']}), {meta['train_rows']} training rows, "
        f"{meta['eval_rows']} held-out rows. Model: GPT-2 {meta['model']}; M_0 = {meta['m0_steps']} steps on W_0; each "
        f"update {meta['steps']} steps x {meta['batch']} x {meta['seq_len']} tokens, peak lr {meta['lr']}, replay "
        f"{meta['replay']} (engine default), buffer {meta['buffer']} rows. Uniform budgets for the reference curve: "
        f"{meta['budgets']} x the step budget. Strategy settings: module defaults (`training/selection/params.py`).",
        "",
        "bpb = bits per UTF-8 byte on held-out rows (lower is better). Forward = model before each update on the new "
        "window (mean over t = 1..T-1); retention = final model on W_0..W_{T-2}. Δ = strategy − uniform on the same "
        "seed (negative = better). Train time = `fit` time summed over updates (training + selection + one-off "
        "selection setup), as process CPU seconds (one torch thread, so the wall-clock on an unshared core) and "
        "as measured wall seconds (inflated and noisy: the 2 cores were shared with other jobs); overhead and "
        "the equal-time comparison use CPU seconds. Token efficiency = tokens uniform needs to "
        "reach the strategy's bpb (log-linear interpolation over the uniform budgets) ÷ tokens the strategy trained "
        "on; '(>)' = the strategy beat uniform's largest budget, so the number is a lower bound; '(<)' = worse "
        "than uniform's smallest budget, an upper bound. Equal wall-clock = strategy bpb − uniform's bpb "
        "interpolated at the strategy's train time ('(>)': beyond uniform's largest budget, clamped). "
        "Weight entropy = normalised Shannon entropy of the per-step weights (1 = uniform). ± = std over seeds.",
        "",
        table,
        "",
    ]
    (out / f"{meta['tag']}.md").write_text("\n".join(md) + "\n")
    return table


def plot(results: dict[str, list[dict]], budgets: list[float], out: Path, tag: str = "selection") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, xkey, xlabel in (
        (axes[0], "train_tokens", "training tokens (sum over updates)"),
        (axes[1], "train_cpu_s", "training time s, 1 thread CPU (sum over updates)"),
    ):
        ux = [statistics.mean(r[xkey] for r in results[_uniform_name(b)]) for b in budgets]
        uy = [statistics.mean(r["forward_bpb"] for r in results[_uniform_name(b)]) for b in budgets]
        ue = [
            statistics.stdev(r["forward_bpb"] for r in results[_uniform_name(b)])
            if len(results[_uniform_name(b)]) > 1
            else 0
            for b in budgets
        ]
        ax.errorbar(ux, uy, yerr=ue, color="black", marker="o", label="uniform (budgets)")
        for name in STRATEGIES:
            if name not in results:
                continue
            runs = results[name]
            x = statistics.mean(r[xkey] for r in runs)
            y = statistics.mean(r["forward_bpb"] for r in runs)
            e = statistics.stdev(r["forward_bpb"] for r in runs) if len(runs) > 1 else 0
            ax.errorbar([x], [y], yerr=[e], marker="s", linestyle="none", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean forward bits/byte")
        ax.grid(alpha=0.3)
    axes[0].set_title("equal tokens: strategy vs uniform's token curve")
    axes[1].set_title("equal wall-clock: strategy vs uniform's time curve")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{tag}.png", dpi=110)


def diagnose(windows: list[dict], args, out: Path, log) -> str:
    """Where each strategy puts its training weight: new-window rows vs replayed rows (seed 0, update t=1).

    Trains M_0 as ``run_seed`` does, then runs the first update's ``fit`` once per strategy with the
    selector's ``select`` recorded. New texts are packed before the replayed ones, so blocks below the
    first replay block are new-window data. Writes ``<out>/<tag>_diagnostic.md`` and returns its table.
    """
    import torch

    from training.config import TrainConfig
    from training.data import pack_texts
    from training.loop import fit, make_optimizer
    from training.modeling import build_base_model, load_model
    from training.replay import replay_count, sample_replay, update_buffer
    from training.selection import make_selector, needs_reference
    from training.selection.uniform import Uniform

    evals = {w["key"]: w["eval"] for w in windows}
    base_cfg = common.args_train_cfg(args, 0)
    rows = [
        "| strategy | replay share of kept blocks | replay share of training weight | new-window share of weight |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="streamtune-selection-diag-") as tmp:
        work = Path(tmp)
        init = build_base_model(windows[0]["train"], common.args_model_cfg(args), work / "init", seed=0)
        common.train_m0(init, windows, base_cfg, args.m0_steps, work, matrix_eval=evals)
        buffer = update_buffer(pl.DataFrame(), common.window_frame(windows[0], 0), args.buffer, seed=0)
        replay = sample_replay(buffer["text"].to_list(), replay_count(len(windows[1]["train"]), args.replay), seed=1)
        for selection in ["uniform", *STRATEGIES]:
            new, reference = windows[1]["train"], []
            if needs_reference(selection):
                new, reference = split_reference(windows[1], args.ref_fraction)
            model, tok = load_model(work / "m0")
            torch.manual_seed(0)
            cfg = TrainConfig(**{**base_cfg, "selection": selection})
            blocks = pack_texts(tok, new + replay, args.seq_len)
            boundary = pack_texts(tok, new, args.seq_len).shape[0]  # blocks >= boundary hold replayed text
            ref_blocks = pack_texts(tok, reference, args.seq_len, keep_tail=True) if reference else None
            # uniform through the selective path (same batches as the plain loop) so its choices are recorded
            selector = Uniform() if selection == "uniform" else make_selector(cfg, ref_blocks)
            kept, weights = [], []
            inner = selector.select

            def record(batch, state, inner=inner, kept=kept, weights=weights):
                sel = inner(batch, state)
                kept.append(batch.index[sel.indices])
                weights.append(sel.weights)
                return sel

            selector.select = record
            fit(
                model,
                make_optimizer(model, cfg),
                blocks,
                cfg,
                device=torch.device("cpu"),
                total_steps=args.steps,
                selector=selector,
            )
            k, w = torch.cat(kept), torch.cat(weights)
            is_replay = k >= boundary
            share_kept = float(is_replay.float().mean())
            share_w = float(w[is_replay].sum() / w.sum())
            rows.append(f"| {selection} | {share_kept:.3f} | {share_w:.3f} | {1 - share_w:.3f} |")
            log(f"diagnostic {selection}: replay share kept {share_kept:.3f}, weight {share_w:.3f}")
    table = "\n".join(rows)
    (out / f"{args.tag}_diagnostic.md").write_text(
        f"# Where the strategies put their weight (seed 0, update on {windows[1]['key']})\n\n"
        f"`{' '.join(sys.argv)}`. Blocks are packed new-window rows first, then the replayed rows "
        f"(replay fraction {args.replay}), so a block at or after the first replay block counts as replay.\n\n"
        + table
        + "\n"
    )
    return table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_stream_args(p)
    p.add_argument("--windows", type=int, default=0, help="use only the first N windows (0 = all)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--budgets", default="0.5,1,1.5,2", help="uniform step budgets (x --steps); must include 1")
    common.add_training_args(p)
    p.add_argument("--replay", type=float, default=0.25)
    p.add_argument("--ref-fraction", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="selection", help="output file stem")
    p.add_argument("--base", default="", help="pretrained base model directory (default: GPT-2 from random init)")
    p.add_argument(
        "--diagnose", action="store_true", help="only run the replay-share diagnostic (one update per strategy, seed 0)"
    )
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    budgets = sorted(float(b) for b in args.budgets.split(","))
    if 1.0 not in budgets:
        raise SystemExit("--budgets must include 1")
    strategies = [s for s in args.strategies.split(",") if s]
    methods = [(_uniform_name(b), "uniform", b) for b in budgets] + [(s, s, 1.0) for s in strategies]
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    log = common.make_log(
        start, (args.out / (f"{args.tag}_diagnostic.log" if args.diagnose else f"{args.tag}.log")).open("w")
    )

    windows = load_stream(args.stream, args.text_field, args.eval_fraction)
    if args.windows:
        windows = windows[: args.windows]
    if args.diagnose:
        log("\n" + diagnose(windows, args, args.out, log))
        return
    keys = [w["key"] for w in windows]
    results: dict[str, list[dict]] = {name: [] for name, _, _ in methods}
    with tempfile.TemporaryDirectory(prefix="streamtune-selection-") as tmp:
        for seed in range(args.seeds):
            res = run_seed(windows, methods, args, seed, Path(tmp) / f"s{seed}", log)
            for m, r in res.items():
                results[m].append(r)
            (args.out / f"{args.tag}.json").write_text(json.dumps({"keys": keys, "results": results}, indent=1))
    wall_min = (time.perf_counter() - start) / 60
    command = "python bench/selection.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {
        **common.run_meta(args, windows, command, wall_min),
        "replay": args.replay,
        "m0_steps": args.m0_steps,
        "budgets": budgets,
        "tag": args.tag,
    }
    analysis = analyse(results, budgets)
    table = report(results, analysis, meta, args.out)
    plot(results, budgets, args.out, args.tag)
    (args.out / f"{args.tag}.json").write_text(
        json.dumps({"keys": keys, "meta": meta, "results": results, "analysis": analysis}, indent=1)
    )
    log(f"done in {wall_min:.1f} min\n{table}")


if __name__ == "__main__":
    main()
