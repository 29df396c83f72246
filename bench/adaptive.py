"""Adaptive fine-tuning benchmark (issue 17 item 5): when to update and with which recipe, on a real drifting stream.

A Dagster-free simulation of the loop over a stream directory (one window file per window, file-name order;
default: monthly PyPI windows 2024-05 .. 2025-08 sampled from ``pypi_summaries_2023_2026.parquet``, crossing the
MCP / agents rise of 2025). Every arm starts from the same M_0 (per seed: ``bench/common.py``'s tiny GPT-2, BPE
fitted on W_0, ``--m0-steps`` from random init) and walks the windows t = 1..T-1:

1. score the current model on W_t's held-out rows (prequential / forward bits per byte, ``training.evaluate``);
2. ask ``orchestration.pipeline.trigger.should_finetune`` (the loop's own rule) whether to update now;
3. if so, pick the recipe (fixed, ``training.recipe.adaptive_recipe``, ``training.meta.ThompsonRecipeLearner`` or
   one grid arm) and run one ``training.finetune.finetune`` on every window pending since the last update plus
   replay from the window-balanced reservoir (``training.replay``) at the recipe's replay share.

Arms: ``every_window`` (fixed recipe); ``cadence_k`` (every k windows, fixed); ``drift`` (policy "drift": a
confirmed alarm or the window staleness bound K, fixed recipe); ``drift+adaptive`` (same trigger, adaptive
recipe, whose ``update=False`` skips the update); ``drift+meta`` (same trigger, Thompson sampling over
``training.meta.GRID`` with the drift bucket as context, rewarded after each update with
``training.meta.reward``: bits/byte gained on the new window's held-out rows per 1e6 training tokens); and
``grid:<arm>``, each grid recipe fixed for the whole stream under the same trigger (``--grid-seeds`` seeds), so
the meta-learner can be compared with the best single grid recipe chosen in hindsight.

Drift statistics are the production ones, computed once per stream as in ``bench/drift.py``
(``bench.drift.run_stream``: ``quality.drift.profile_window`` against the 3 windows before, churn history, then
``confirm_drift``; lexical statistics, no embeddings), on up to ``--lex-rows`` texts of each window. The
adaptive recipe's prequential gap is the current model's bpb on W_t over its mean bpb on the held-out rows of the
reference windows (the ``lm_bpb_window`` / ``lm_bpb_reference`` pair of the monitor).

Fixed recipe: ``--steps`` optimizer steps x ``--batch`` x ``--seq-len`` tokens per update at peak lr ``--lr``
(re-warm + cosine re-decay, AdamW state carried over), 25% replay: an update costs the same whatever it covers.

    python bench/adaptive.py [--stream DIR | --parquet P --first 2024-05 --last 2025-08 --per-month 1500]
                             [--seeds 3] [--grid-seeds 1] [--cadence 3] [--staleness 3] [--out bench/results]

Writes ``adaptive.md`` (table, targets, verdict), ``adaptive.json`` (everything) and ``adaptive.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

common.hf_offline_env()

FIXED_REPLAY = 0.25
"""Replay share of the fixed recipe (the engine default, ``bench/continual.py``'s ``replay-0.25``)."""
DEFAULT_PARQUET = Path(__file__).resolve().parents[2] / "shared/data/pypi_summaries_2023_2026.parquet"


@dataclass(frozen=True)
class ArmSpec:
    """One arm: the trigger policy and the recipe source ("fixed", "adaptive", "meta" or a grid arm's name)."""

    name: str
    policy: str
    recipe: str


def arm_specs(cadence: int, grid: bool) -> list[ArmSpec]:
    """The five arms (and, with ``grid``, one fixed arm per ``training.meta.GRID`` recipe, drift-triggered)."""
    from training.meta import GRID

    arms = [
        ArmSpec("every_window", "every_window", "fixed"),
        ArmSpec(f"cadence_{cadence}", "cadence", "fixed"),
        ArmSpec("drift", "drift", "fixed"),
        ArmSpec("drift+adaptive", "drift", "adaptive"),
        ArmSpec("drift+meta", "drift", "meta"),
    ]
    return arms + ([ArmSpec(f"grid:{a.name}", "drift", a.name) for a in GRID] if grid else [])


def window_drift(windows: list[dict], lex_rows: int, null_splits: int, seed: int) -> list[dict]:
    """Per window, the drift monitor's row (``bench.drift.run_stream``: ``drift``, ``<stat>`` and ``<stat>_p``, ...)
    from up to ``lex_rows`` of its texts (training and held-out rows), lexical statistics only."""
    from bench.drift import run_stream
    from quality.drift import DriftConfig, sample

    cfg = DriftConfig(sample_rows=lex_rows, seed=seed, null_splits=null_splits)
    keys = [w["key"] for w in windows]
    lex = {w["key"]: sample(w["train"] + w["eval"], lex_rows, seed + i) for i, w in enumerate(windows)}
    rows = run_stream("adaptive", keys, lex, {}, None, cfg, cfg.reference_windows)
    return [{k: v for k, v in r.items() if k == "drift" or k.endswith("_p") or k in ("window_key", "reason")}
            for r in rows]  # fmt: skip


class Scorer:
    """Bits per byte of a model directory on a window's held-out rows (``training.evaluate.evaluate``), cached."""

    def __init__(self, windows: list[dict], seq_len: int) -> None:
        self.windows, self.seq_len = windows, seq_len
        self.cache: dict[tuple[str, int], float] = {}
        self.loaded: tuple[str, object, object] | None = None

    def __call__(self, model_dir: Path, t: int) -> float:
        import torch

        from training.evaluate import evaluate
        from training.modeling import load_model

        key = (str(model_dir), t)
        if key not in self.cache:
            if self.loaded is None or self.loaded[0] != str(model_dir):
                self.loaded = (str(model_dir), *load_model(model_dir))
            _, model, tok = self.loaded
            res = evaluate(model, tok, self.windows[t]["eval"], seq_len=self.seq_len, batch_size=64,
                           device=torch.device("cpu"))  # fmt: skip
            self.cache[key] = res.bits_per_byte
        return self.cache[key]


def choose_recipe(spec: ArmSpec, drift_rows: list[dict], gap_bpb: tuple[float, float], base, learner, rng):
    """``(Recipe, bucket)`` for one update of ``spec`` on the windows whose drift rows are ``drift_rows``;
    ``gap_bpb`` = (current model on the new window, on its reference windows)."""
    from training.meta import GRID, drift_bucket
    from training.recipe import Recipe, adaptive_recipe, prequential_gap, shift_strength, summarize

    drift = summarize(drift_rows)
    shift = shift_strength(drift, prequential_gap(*gap_bpb))
    bucket = drift_bucket(shift)
    if spec.recipe == "fixed":
        return Recipe(base.peak_lr, base.epochs, base.max_steps, FIXED_REPLAY, True, "fixed", "fixed", shift), bucket
    if spec.recipe == "adaptive":
        return adaptive_recipe(drift, gap_bpb[0], gap_bpb[1], base), bucket
    if spec.recipe == "meta":
        return learner.choose(bucket, rng).recipe(base, bucket, shift), bucket
    arm = next(a for a in GRID if a.name == spec.recipe)
    return arm.recipe(base, bucket, shift), bucket


def simulate(spec: ArmSpec, windows: list[dict], drift: list[dict], args, seed: int, work: Path, log) -> dict:
    """One arm on one seed from ``work/m0``: forward curve, updates, compute, final retention (module docstring)."""
    import numpy as np
    import polars as pl

    from orchestration.pipeline.trigger import should_finetune
    from training.config import TrainConfig
    from training.finetune import FinetuneRequest, finetune
    from training.meta import ThompsonRecipeLearner, reward
    from training.recipe import RecipeBase
    from training.replay import replay_count, sample_replay, update_buffer

    started = time.perf_counter()
    keys = [w["key"] for w in windows]
    base_cfg = TrainConfig(**common.args_train_cfg(args, seed))
    base = RecipeBase.of(base_cfg)
    score = Scorer(windows, args.seq_len)
    learner, rng = ThompsonRecipeLearner(), np.random.default_rng(seed)
    buffer = update_buffer(pl.DataFrame(), common.window_frame(windows[0], 0), args.buffer, seed=seed)
    model, pending, curve, updates, skipped = work / "m0", [], [], [], 0
    for t in range(1, len(windows)):
        curve.append(score(model, t))
        pending.append(t)
        dec = should_finetune(
            spec.policy, [keys[p] for p in pending], bool(drift[t]["drift"]), 0.0, 0.0,
            spec.policy == "cadence" and t % args.cadence == 0, new_window=True, drifted_windows=(keys[t],),
            staleness_bound_windows=args.staleness if spec.policy == "drift" else 0,
        )  # fmt: skip
        if not dec.run:
            continue
        ref = [score(model, j) for j in range(max(0, t - args.reference_windows), t)]
        recipe, bucket = choose_recipe(spec, [drift[p] for p in pending], (curve[-1], statistics.mean(ref)), base,
                                       learner, rng)  # fmt: skip
        if not recipe.update:
            skipped += 1
            continue
        new = [x for p in pending for x in windows[p]["train"]]
        replay = sample_replay(buffer["text"].to_list(), replay_count(len(new), recipe.replay_fraction),
                               seed=seed * 1000 + t)  # fmt: skip
        nxt = work / f"{spec.name.replace(':', '_')}-{t}"
        res = finetune(FinetuneRequest(parent=model, train_texts=new + replay, cfg=recipe.apply(base_cfg),
                                       out_dir=nxt, matrix_eval={keys[t]: windows[t]["eval"]}))  # fmt: skip
        after = res.matrix_after[keys[t]].bits_per_byte
        gain = reward(curve[-1], after, res.fit.train_tokens)
        if spec.recipe == "meta":
            learner.update(bucket, recipe.arm, gain)
        updates.append({"t": t, "window": keys[t], "trigger": dec.trigger, "covers": len(pending),
                        "tokens": res.fit.train_tokens, "train_s": res.fit.wall_seconds, "peak_lr": recipe.peak_lr,
                        "steps": recipe.max_steps, "replay": recipe.replay_fraction, "shift": recipe.shift,
                        "bucket": bucket, "arm": recipe.arm, "bpb_before": curve[-1], "bpb_after": after,
                        "reward": gain})  # fmt: skip
        for p in pending:
            buffer = update_buffer(buffer, common.window_frame(windows[p], p), args.buffer, seed=seed)
        if model.name != "m0":
            shutil.rmtree(model, ignore_errors=True)
        model, pending = nxt, []
    final = [score(model, j) for j in range(len(windows))]
    if model.name != "m0":
        shutil.rmtree(model, ignore_errors=True)
    out = {
        "area_bpb": statistics.mean(curve),
        "curve": curve,
        "retention_bpb": statistics.mean(final[: args.retention_windows]),
        "final_mean_bpb": statistics.mean(final),
        "updates": len(updates),
        "skipped": skipped,
        "train_tokens": sum(u["tokens"] for u in updates),
        "train_s": sum(u["train_s"] for u in updates),
        "wall_s": time.perf_counter() - started,
        "update_log": updates,
    }
    log(f"seed {seed} {spec.name}: area {out['area_bpb']:.4f}, retention {out['retention_bpb']:.4f}, "
        f"{out['updates']} updates ({skipped} skipped), {out['train_tokens']} tokens, "
        f"{out['wall_s']:.0f}s")  # fmt: skip
    return out


def run_seed(windows, drift, specs: list[ArmSpec], args, seed: int, work: Path, log) -> dict[str, dict]:
    """M_0 for ``seed`` (``bench.common.train_m0`` on the warm-up rows + W_0's), then every arm of ``specs`` from it."""
    from training.modeling import build_base_model

    first = [{**windows[0], "train": list(args.warmup_texts) + windows[0]["train"]}, *windows[1:]]
    init = build_base_model(first[0]["train"], common.args_model_cfg(args), work / "init", seed=seed)
    common.train_m0(init, first, common.args_train_cfg(args, seed), args.m0_steps, work)
    log(f"seed {seed}: M_0 trained")
    return {s.name: simulate(s, windows, drift, args, seed, work, log) for s in specs}


# -- summary, report, plot -----------------------------------------------------------------------------------


def _ms(xs: list[float], fmt: str) -> str:
    if len(xs) == 1:
        return format(xs[0], fmt)
    return f"{format(statistics.mean(xs), fmt)} ± {format(statistics.stdev(xs), fmt)}"


def summarise(results: dict[str, dict[int, dict]], main_arms: list[str]) -> dict:
    """Per arm, mean over its seeds and ratios to ``every_window`` on the same seeds; the two targets and a pick.

    Target 1: ``drift+adaptive`` area <= 1.01 x every_window's and tokens <= 0.5 x. Target 2: ``drift+meta`` area
    <= the best ``grid:*`` arm's area (chosen in hindsight), on the seeds the grid ran."""
    ew = results["every_window"]
    table = {}
    for name, by_seed in results.items():
        seeds = sorted(by_seed)

        def ratio(field: str, seeds=seeds, by_seed=by_seed) -> float:
            return statistics.mean(by_seed[s][field] for s in seeds) / statistics.mean(ew[s][field] for s in seeds)

        table[name] = {
            "seeds": seeds,
            **{
                f: [by_seed[s][f] for s in seeds]
                for f in ("area_bpb", "retention_bpb", "train_tokens", "train_s", "wall_s", "updates")
            },  # fmt: skip
            "area_vs_every_window": ratio("area_bpb") - 1,
            "tokens_vs_every_window": ratio("train_tokens"),
            "train_s_vs_every_window": ratio("train_s"),
        }
    ad = table["drift+adaptive"]
    t1 = {"area_vs_every_window": ad["area_vs_every_window"], "tokens_vs_every_window": ad["tokens_vs_every_window"],
          "met": ad["area_vs_every_window"] <= 0.01 and ad["tokens_vs_every_window"] <= 0.5}  # fmt: skip
    grid = {n: v for n, v in table.items() if n.startswith("grid:")}
    t2 = None
    if grid:
        gseeds = sorted(set.intersection(*(set(v["seeds"]) for v in grid.values())))
        g_area = {n: statistics.mean(results[n][s]["area_bpb"] for s in gseeds) for n in grid}
        best = min(g_area, key=g_area.get)
        meta = statistics.mean(results["drift+meta"][s]["area_bpb"] for s in gseeds)
        t2 = {"seeds": gseeds, "meta_area": meta, "best_grid": best, "best_grid_area": g_area[best],
              "grid_areas": g_area, "rank_of_meta": 1 + sum(a < meta for a in g_area.values()),
              "met": meta <= g_area[best]}  # fmt: skip
    ok = [n for n in main_arms if table[n]["area_vs_every_window"] <= 0.01]
    pick = min(ok, key=lambda n: table[n]["tokens_vs_every_window"]) if ok else "every_window"
    return {"arms": table, "target_adaptive": t1, "target_meta": t2, "pick": pick}


def report(summary: dict, meta: dict, out: Path) -> str:
    """``adaptive.md``: run description, the table, the targets and the automatic pick."""
    lines = [
        "| arm | seeds | area under forward bpb | vs every window | retention bpb (first windows, end) "
        "| updates | train tokens | tokens vs every window | train s | train s vs every window |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in summary["arms"].items():
        lines.append(
            f"| {name} | {len(v['seeds'])} | {_ms(v['area_bpb'], '.4f')} | {100 * v['area_vs_every_window']:+.2f}% "
            f"| {_ms(v['retention_bpb'], '.4f')} | {_ms(v['updates'], '.1f')} "
            f"| {statistics.mean(v['train_tokens']):,.0f} "
            f"| {100 * v['tokens_vs_every_window']:.0f}% | {statistics.mean(v['train_s']):.0f} "
            f"| {100 * v['train_s_vs_every_window']:.0f}% |"
        )
    t1, t2 = summary["target_adaptive"], summary["target_meta"]
    targets = [
        f"- **Adaptive within 1% of every window at <= 50% of its compute**: drift+adaptive area "
        f"{100 * t1['area_vs_every_window']:+.2f}%, tokens {100 * t1['tokens_vs_every_window']:.0f}% of every window: "
        f"**{'met' if t1['met'] else 'not met'}**.",
    ]
    if t2:
        targets.append(
            f"- **Meta >= the best fixed grid recipe in hindsight** (seeds {t2['seeds']}): drift+meta area "
            f"{t2['meta_area']:.4f} vs best grid arm `{t2['best_grid']}` {t2['best_grid_area']:.4f} (meta ranks "
            f"{t2['rank_of_meta']} of {len(t2['grid_areas']) + 1}): **{'met' if t2['met'] else 'not met'}**."
        )
    md = [
        "# Adaptive fine-tuning benchmark (issue 17)",
        "",
        f"Generated {meta['generated']} by `{meta['command']}` in {meta['wall_min']:.1f} min wall ({meta['machine']}); "
        "all arms side by side in one process, so compare the ratios, not the absolute seconds.",
        "",
        f"Stream `{meta['stream']}`: {meta['T']} windows ({meta['first']} .. {meta['last']}), {meta['train_rows']} "
        f"training and {meta['eval_rows']} held-out rows. Model: GPT-2 {meta['model']}, BPE fitted on W_0, M_0 = "
        f"{meta['m0_steps']} steps on W_0 (+ {meta['warmup_rows']} warm-up rows before the stream) from random init "
        f"(per seed). Fixed recipe: {meta['steps']} steps x "
        f"{meta['batch']} x {meta['seq_len']} tokens per update, peak lr {meta['lr']}, {FIXED_REPLAY:.0%} replay "
        f"(buffer {meta['buffer']} rows). Trigger: `should_finetune`; cadence k = {meta['cadence']}; drift policy = "
        f"confirmed alarm or {meta['staleness']} pending windows. Confirmed drift alarms (lexical statistics on "
        f"<= {meta['lex_rows']} rows a window): {meta['alarms'] or 'none'}.",
        "",
        "Area = mean over t = 1..T-1 of the current model's bits/byte on W_t's held-out rows before any update on W_t "
        f"(prequential; lower is better). Retention = the final model on the held-out rows of the first "
        f"{meta['retention_windows']} windows. Tokens / seconds: the updates after M_0 (`FitResult`). ± = std over "
        "seeds; ratios are to every window on the same seeds.",
        "",
        *lines,
        "",
        "## Targets",
        "",
        *targets,
        "",
        f"Automatic pick (fewest training tokens among the main arms within 1% of every window's area): "
        f"**{summary['pick']}**.",
        "",
        "![curves](adaptive.png)",
        "",
        *meta.get("notes", []),
    ]
    (out / "adaptive.md").write_text("\n".join(md) + "\n")
    return "\n".join(lines + [""] + targets)


def plot(results: dict[str, dict[int, dict]], summary: dict, keys: list[str], out: Path) -> None:
    """Left: forward bpb per window, mean over seeds, per main arm (dots: seed-0 updates). Right: area vs compute."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 2]})
    x = list(range(1, len(keys)))
    for name, by_seed in results.items():
        v = summary["arms"][name]
        if not name.startswith("grid:"):
            curves = [r["curve"] for r in by_seed.values()]
            mean = [statistics.mean(c[i] for c in curves) for i in range(len(x))]
            (line,) = a1.plot(x, mean, lw=1.2, label=f"{name} ({statistics.mean(v['updates']):.1f} updates)")
            ts = [u["t"] for u in by_seed[min(by_seed)]["update_log"]]
            a1.scatter(ts, [mean[t - 1] for t in ts], s=12, color=line.get_color())
        a2.scatter(100 * v["tokens_vs_every_window"], 100 * v["area_vs_every_window"], s=14,
                   color="gray" if name.startswith("grid:") else "tab:blue")  # fmt: skip
        if not name.startswith("grid:") or name == (summary["target_meta"] or {}).get("best_grid"):
            a2.annotate(name, (100 * v["tokens_vs_every_window"], 100 * v["area_vs_every_window"]), fontsize=7)
    a1.set_xticks(x)
    a1.set_xticklabels([k.replace("pypi-", "") for k in keys[1:]], rotation=60, fontsize=7)
    a1.set_ylabel("forward bits/byte (before the update)")
    a1.set_title("mean over seeds; dots: seed-0 updates after scoring that window", fontsize=9)
    a1.legend(fontsize=7)
    a1.grid(alpha=0.3)
    a2.axhline(1.0, ls="--", color="red", lw=0.8)
    a2.axvline(50, ls="--", color="red", lw=0.8)
    a2.set_xlabel("training tokens, % of every window")
    a2.set_ylabel("area vs every window, %")
    a2.set_title("target: below the dashed line, left of it (grid arms grey)", fontsize=9)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "adaptive.png", dpi=90)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------------------------


def load_windows(args, tmp: Path) -> list[dict]:
    """The stream's windows (``bench/continual.py``'s ``load_stream``: record-id hash split), each held-out slice
    capped at ``--eval-rows``; without ``--stream``, monthly PyPI windows written first (``continual.prepare``).
    Sets ``args.warmup_texts``: the rows of ``--warmup`` (or of the ``--warmup-months`` PyPI months before
    ``--first``), which M_0 trains on with W_0 and which are never scored."""
    from bench.continual import load_stream, prepare

    if args.stream is None:
        args.stream = tmp / "stream"
        prepare(args.parquet, args.stream, args.per_month, 1, args.first, args.last, args.data_seed)
    windows = load_stream(args.stream, args.text_field, args.eval_fraction)
    args.warmup_texts = []
    if args.warmup is None and args.warmup_months > 0 and args.stream == tmp / "stream":
        y, m = map(int, args.first.split("-"))
        lo, hi = y * 12 + m - 1 - args.warmup_months, y * 12 + m - 2
        args.warmup = tmp / "warmup"
        prepare(args.parquet, args.warmup, args.per_month, 1, f"{lo // 12}-{lo % 12 + 1:02d}",
                f"{hi // 12}-{hi % 12 + 1:02d}", args.data_seed)  # fmt: skip
    if args.warmup is not None:
        args.warmup_texts = [t for w in load_stream(args.warmup, args.text_field, 0.0) for t in w["train"]]
    for w in windows:
        w["eval"] = w["eval"][: args.eval_rows]
    return windows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stream", type=Path, default=None, help="directory of window files (default: PyPI months)")
    p.add_argument("--parquet", type=Path, default=DEFAULT_PARQUET)
    p.add_argument("--first", default="2024-05")
    p.add_argument("--last", default="2025-08")
    p.add_argument("--per-month", type=int, default=1500, help="rows sampled per month (drift monitor input)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--warmup", type=Path, default=None, help="window files M_0 also trains on (never scored)")
    p.add_argument("--warmup-months", type=int, default=0, help="PyPI default: months before --first M_0 trains on")
    p.add_argument("--text-field", default="text")
    p.add_argument("--eval-fraction", type=float, default=0.1)
    p.add_argument("--eval-rows", type=int, default=150, help="held-out rows scored per window (cap)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--grid-seeds", type=int, default=1, help="seeds of the 12 fixed grid arms (0: skip them)")
    p.add_argument("--cadence", type=int, default=3)
    p.add_argument("--staleness", type=int, default=3, help="drift policy: update once this many windows pend")
    p.add_argument("--reference-windows", type=int, default=3, help="windows of the adaptive recipe's bpb reference")
    p.add_argument("--retention-windows", type=int, default=3)
    p.add_argument("--lex-rows", type=int, default=1500)
    p.add_argument("--null-splits", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true", help="re-render md/png from <out>/adaptive.json")
    p.add_argument("--log", type=Path, default=None, help="also write the progress lines to this file")
    common.add_training_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report_only:
        return rerender(args.out)
    default_stream = args.stream is None
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    log = common.make_log(start, (args.log or Path(os.devnull)).open("w"))
    results: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="streamtune-adaptive-") as tmp:
        windows = load_windows(args, Path(tmp))
        keys = [w["key"] for w in windows]
        drift = window_drift(windows, args.lex_rows, args.null_splits, args.data_seed)
        alarms = [r["window_key"] for r in drift if r["drift"]]
        log(f"{len(windows)} windows {keys[0]}..{keys[-1]}; drift alarms {alarms}")
        main_arms = arm_specs(args.cadence, grid=False)
        for seed in range(args.seeds):
            specs = arm_specs(args.cadence, grid=seed < args.grid_seeds)
            for name, r in run_seed(windows, drift, specs, args, seed, Path(tmp) / f"s{seed}", log).items():
                results.setdefault(name, {})[seed] = r
            (args.out / "adaptive.json").write_text(json.dumps({"keys": keys, "results": results}, indent=1))
    wall_min = (time.perf_counter() - start) / 60
    command = "python bench/adaptive.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {
        **common.run_meta(args, windows, command, wall_min),
        **{k: getattr(args, k) for k in ("m0_steps", "cadence", "staleness", "lex_rows", "retention_windows")},
        "alarms": alarms,
        "warmup_rows": len(args.warmup_texts),
        "drift": drift,
    }
    if default_stream:
        meta["stream"] = f"{args.parquet.name}, {args.per_month} rows sampled per month (seed {args.data_seed})"
    log(f"done in {wall_min:.1f} min\n{write_outputs(keys, meta, results, [s.name for s in main_arms], args.out)}")


def write_outputs(keys: list[str], meta: dict, results: dict, main_arms: list[str], out: Path) -> str:
    """``adaptive.md``, ``adaptive.png`` and ``adaptive.json`` from the per-seed results; returns the table."""
    summary = summarise(results, main_arms)
    table = report(summary, meta, out)
    plot(results, summary, keys, out)
    (out / "adaptive.json").write_text(
        json.dumps({"keys": keys, "meta": meta, "summary": summary, "results": results}, indent=1, default=float)
    )
    return table


def rerender(out: Path) -> None:
    """``--report-only``: the report, plot and summary again from ``out/adaptive.json`` (no training)."""
    data = json.loads((out / "adaptive.json").read_text())
    results = {arm: {int(s): r for s, r in by_seed.items()} for arm, by_seed in data["results"].items()}
    main_arms = [n for n in results if not n.startswith("grid:")]
    print(write_outputs(data["keys"], data["meta"], results, main_arms, out))


if __name__ == "__main__":
    main()
