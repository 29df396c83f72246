"""Drift monitor benchmark on the real PyPI stream (monthly windows 2023-01 .. 2026-10).

    python bench/drift.py [--data PATH] [--out bench/results] [--lex-rows 4000] [--embed-rows 250] [--no-embeddings]
                          [--near-dup-jaccard 0.5] [--emerging-windows 2] [--seed 0]

Measures, in one run:

1. *Real stream*: every monthly window profiled against the 3 months before it with the production
   code (``quality.drift.profile_window`` with the earlier windows' profiles as churn history, then
   ``confirm_drift``; MiniLM MMD² included unless ``--no-embeddings``); when each alarm fires, next to
   the share of summaries about MCP servers / AI agents per month, and the top emerging terms.
2. *Shuffled stream* (no drift by construction): the same sampled records permuted across the
   windows (window sizes kept); alarm rate over the testable windows.
3. *Cost*: monitor seconds per 10k window rows vs ingest (read + GX gate + DuckDB writes) seconds
   per 10k rows, measured side by side on the same month in this process.

Not measured here: the model-based statistic (``lm_bpb``, needs a champion per month) and the
quarantine-rate statistic (needs the gate per month).

``--no-embeddings`` skips the MiniLM part (620 s of embedding on 2 shared CPUs): the statistics are
then the lexical ones (JS, OOV, length KS, emerging-term z), and the cost line measures them only.

    python bench/drift.py --policy [--per-month 600] [--eval-fraction 0.25] [--stalenesses 2,3] [--cadences 2,3]
                          [--budget per-new-data|per-window|per-retrain]

4. *Policy comparison* (reads the alarms from ``drift.json``): every window, a fixed cadence, drift
   only, and drift OR staleness bound K (``max_windows_without_retrain``), through the continual
   benchmark's machinery (``bench/continual.py``: the same monthly files, held-out split, M_0 recipe,
   update recipe with 25% replay); see ``run_policies``.

Writes ``drift.md``, ``drift.json``, ``drift_pypi.png``, ``drift_shuffled.png``, ``drift_mcp.png`` and
(``--policy``) ``drift_policy.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from quality.drift import STAT_NAMES, DriftConfig, confirm_drift, profile_window, sample  # noqa: E402
from quality.drift.report import plot_drift_history  # noqa: E402

TOPIC = re.compile(r"\bmcp\b|model context protocol|\bagents?\b|\bagentic\b", re.IGNORECASE)


def load_months(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    df = pl.read_parquet(path, columns=["month", "summary"]).filter(
        pl.col("summary").is_not_null() & (pl.col("summary").str.strip_chars() != "")
    )
    months = sorted(df["month"].unique().to_list())
    return months, {m: df.filter(pl.col("month") == m)["summary"].to_list() for m in months}


def run_stream(name, months, lex, emb_texts, emb_vecs, cfg, ref_windows=3):
    """Profile every window of a stream; ``lex[m]``: texts, ``emb_texts[m]``/``emb_vecs[m]``: embedded sample
    (``emb_vecs`` None: no embedding statistic)."""
    rows, history = [], []
    for i, m in enumerate(months):
        refk = months[max(0, i - ref_windows) : i]
        ref = [t for k in refk for t in lex[k]]
        vec_of = {}
        if emb_vecs is not None:
            for k in [*refk, m]:
                vec_of.update(zip(emb_texts[k], emb_vecs[k]))
        ref_e = [t for k in refk for t in emb_texts[k]] if emb_vecs is not None else []

        def embed(texts, vec_of=vec_of):
            return np.stack([vec_of[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)

        # the embedding test sees the embedded subsets only: pass them through the same sampler
        t0 = time.perf_counter()
        # emerging_z: the last cfg.emerging_windows windows vs the ref_windows before them
        # (as orchestration.pipeline.monitor)
        e = cfg.emerging_windows
        recent_k, before_k = (
            months[max(0, i - e + 1) : i + 1],
            months[max(0, i - e + 1 - ref_windows) : max(0, i - e + 1)],
        )
        emerging = (
            ([t for k in recent_k for t in lex[k]], [t for k in before_k for t in lex[k]])
            if e > 1 and before_k
            else None
        )
        prof = profile_window(m, lex[m], ref, reference_keys=refk, cfg=cfg, history=history, emerging_samples=emerging)
        if len(ref_e) >= 2 and len(emb_texts[m]) >= 2:
            from quality.drift import mmd2_permutation_test

            rs = sample(ref_e, cfg.embed_rows, cfg.seed + 4)
            r = mmd2_permutation_test(embed(rs), embed(emb_texts[m]), permutations=cfg.permutations, seed=cfg.seed)
            prof.stats["embedding_mmd2"] = r
            prof.stats = {k: prof.stats[k] for k in STAT_NAMES if k in prof.stats}
            prof.alpha = cfg.false_alarm_rate / len(prof.stats)
            prof.exceeded = [k for k, s in prof.stats.items() if s.p_value < prof.alpha]
        dec = confirm_drift(prof, history, cfg, len(refk))
        row = {
            "window_key": m,
            **prof.flat(),
            "alpha": prof.alpha,
            "exceeded": prof.exceeded,
            "drift": dec.drift,
            "confirmed": dec.confirmed,
            "reason": dec.reason,
            "seconds": time.perf_counter() - t0,
            "emerging_terms": prof.emerging,
            "emerging_over_threshold": prof.emerging_over_threshold,
            "calibration": prof.calibration,
            "permutation_exceeded": [
                k for k in prof.stats if prof.info.get(f"{k}_p_permutation", prof.stats[k].p_value) < prof.alpha
            ],
            "info": {k: v for k, v in prof.info.items() if k.endswith(("_p_permutation", "_p_churn"))},
        }
        rows.append(row)
        history.append({k: row[k] for k in STAT_NAMES})
        print(f"[{name}] {m} drift={dec.drift} exceeded={prof.exceeded} {dec.reason[:90]}", flush=True)
    return rows


def measure_cost(texts: list[str], cfg: DriftConfig, ref: list[str], embedder) -> dict:
    """Monitor vs ingest seconds on one window, side by side in this process."""
    from bench.common import write_raw
    from orchestration.store.warehouse import Warehouse
    from quality.readers import read_window_file
    from quality.suite import curate_window

    out = {"rows": len(texts)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pypi-cost.jsonl"
        path.write_text("\n".join(json.dumps({"id": f"r{i}", "text": t}) for i, t in enumerate(texts)) + "\n")
        wh = Warehouse(Path(tmp) / "warehouse.duckdb")
        wh.init_schema()
        t0 = time.perf_counter()
        parsed = read_window_file(path, "cost")
        write_raw(wh, "cost", parsed, path.name)
        verdict = curate_window(wh.read_raw_window("cost"))
        wh.replace_curated_window("cost", verdict.curated, verdict.quarantine)
        out["ingest_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # emerging_samples: the second (emerging-window) lexical pass costs what the first does; same sizes here
        prof = profile_window(
            "cost",
            texts,
            ref,
            reference_keys=["r"],
            cfg=cfg,
            embed=embedder or None,
            quarantine=(0, len(ref), verdict.quarantine.height, len(texts)),
            emerging_samples=(texts, ref) if cfg.emerging_windows > 1 else None,
        )
        out["monitor_s"] = time.perf_counter() - t0
        out["monitor_parts_s"] = {k: v for k, v in prof.info.items() if k.startswith("seconds")}
    out["ingest_s_per_10k"] = out["ingest_s"] * 10_000 / len(texts)
    out["monitor_s_per_10k"] = out["monitor_s"] * 10_000 / len(texts)
    out["monitor_over_ingest"] = out["monitor_s"] / out["ingest_s"]
    return out


TOPIC_TERMS = re.compile(r"^(mcp|agents?|agentic|llm|llms)$")
"""Terms counted as 'the MCP/agent rise' when they appear among a window's top emerging terms."""


def plot_mcp(real: list[dict], share: dict[str, float], path: Path) -> None:
    """MCP/agent share per month with the confirmed alarms, and the emerging-term z with its threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [r["window_key"] for r in real]
    x = list(range(len(keys)))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    a1.plot(x, [100 * share[k] for k in keys], marker=".", color="tab:purple", label="MCP/agent share (%)")
    for i, r in enumerate(real):
        if r["drift"]:
            a1.axvline(i, color="red", alpha=0.35, lw=2)
    a1.set_ylabel("% of summaries")
    a1.legend(loc="upper left", fontsize=8)
    a1.set_title("red lines: confirmed drift (any statistic)", fontsize=9)
    z = [r.get("emerging_z") for r in real]
    thr = [r.get("emerging_z_threshold") for r in real]
    a2.plot(x, [np.nan if v is None else v for v in z], marker=".", label="top emerging-term z")
    a2.plot(x, [np.nan if v is None else v for v in thr], ls="--", color="gray", label="calibrated threshold")
    for i, r in enumerate(real):
        top = [t["term"] for t in r.get("emerging_terms") or []][:1]
        if top and z[i] is not None:
            a2.annotate(top[0], (i, z[i]), fontsize=6, rotation=60)
    a2.set_ylabel("z")
    a2.legend(loc="upper left", fontsize=8)
    a2.set_xticks(x[::2])
    a2.set_xticklabels(keys[::2], rotation=60, fontsize=7, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared/data/pypi_summaries_2023_2026.parquet",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--lex-rows", type=int, default=4000, help="texts sampled per window and per reference (lexical)")
    ap.add_argument("--embed-rows", type=int, default=250)
    ap.add_argument("--no-embeddings", action="store_true", help="skip MiniLM (lexical statistics only)")
    ap.add_argument("--reference-windows", type=int, default=3, help="months pooled as the reference")
    ap.add_argument(
        "--near-dup-jaccard",
        type=float,
        default=DriftConfig.near_dup_jaccard,
        help="emerging_z near-duplicate weighting threshold (0 = off)",
    )
    ap.add_argument(
        "--emerging-windows",
        type=int,
        default=DriftConfig.emerging_windows,
        help="emerging_z: last N windows vs the reference before them (1 = window vs its reference)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    months, by = load_months(args.data)
    cfg = DriftConfig(
        sample_rows=args.lex_rows,
        embed_rows=args.embed_rows,
        seed=args.seed,
        reference_windows=args.reference_windows,
        near_dup_jaccard=args.near_dup_jaccard,
        emerging_windows=args.emerging_windows,
    )
    rng = random.Random(args.seed)
    lex = {m: sample(by[m], args.lex_rows, args.seed + i) for i, m in enumerate(months)}
    emb_texts = {m: sample(lex[m], args.embed_rows, args.seed + 100 + i) for i, m in enumerate(months)}

    embedder, vecs, embed_s, uniq = None, None, 0.0, []
    if not args.no_embeddings:
        from quality.drift.embeddings import MiniLMEmbedder

        embedder = MiniLMEmbedder(batch_size=64)
        t0 = time.perf_counter()
        uniq = sorted({t for m in months for t in emb_texts[m]})
        vecs = dict(zip(uniq, embedder(uniq)))
        embed_s = time.perf_counter() - t0
        print(f"embedded {len(uniq)} texts in {embed_s:.0f} s", flush=True)
    emb_vecs = {m: [vecs[t] for t in emb_texts[m]] for m in months} if vecs else None

    real = run_stream("pypi", months, lex, emb_texts, emb_vecs, cfg, cfg.reference_windows)

    # shuffled: every sampled record reassigned to a random window, sizes kept (no drift by construction)
    def shuffle(d):
        pool = [t for m in months for t in d[m]]
        rng.shuffle(pool)
        out, i = {}, 0
        for m in months:
            out[m] = pool[i : i + len(d[m])]
            i += len(d[m])
        return out

    s_lex, s_emb = shuffle(lex), shuffle(emb_texts)
    s_vecs = {m: [vecs[t] for t in s_emb[m]] for m in months} if vecs else None
    shuffled = run_stream("shuffled", months, s_lex, s_emb, s_vecs, cfg, cfg.reference_windows)

    cost_month = min(months, key=lambda m: abs(len(by[m]) - 10_000))
    ci = months.index(cost_month)
    cost_ref = [t for k in months[max(0, ci - 3) : ci] for t in by[k]]
    cost = measure_cost(by[cost_month], DriftConfig(seed=args.seed), cost_ref, embedder)
    cost["month"] = cost_month

    share = {m: sum(bool(TOPIC.search(t)) for t in by[m]) / len(by[m]) for m in months}
    testable = [r for i, r in enumerate(real) if i >= cfg.min_reference_windows]
    s_testable = [r for i, r in enumerate(shuffled) if i >= cfg.min_reference_windows]
    # fixed before the run (as in the first version of this bench): onset = first month from 2024-06 on with a
    # 2% MCP/agent share; "detected within one window" = a confirmed alarm in the onset month or the one
    # before or after it
    onset = next(m for m in months if share[m] >= 0.02 and m >= "2024-06")
    oi = months.index(onset)
    window_ok = months[max(0, oi - 1) : oi + 2]
    first_after = next((r["window_key"] for r in real if r["drift"] and r["window_key"] >= "2024-10"), None)
    topic_top = [
        r["window_key"] for r in real if any(TOPIC_TERMS.match(t["term"]) for t in (r.get("emerging_terms") or [])[:5])
    ]
    topic_confirmed = [
        r["window_key"]
        for r in real
        if r["drift"]
        and "emerging_z" in r["confirmed"]
        and any(TOPIC_TERMS.match(t["term"]) for t in (r.get("emerging_terms") or [])[:5])
    ]
    summary = {
        "windows": len(months),
        "testable_windows": len(testable),
        "embeddings": not args.no_embeddings,
        "real_alarms": [r["window_key"] for r in real if r["drift"]],
        "real_alarm_reasons": {r["window_key"]: r["reason"] for r in real if r["drift"]},
        "real_exceeded_windows": sum(bool(r["exceeded"]) for r in testable),
        "real_permutation_exceeded_windows": sum(bool(r["permutation_exceeded"]) for r in testable),
        "shuffled_alarms": [r["window_key"] for r in shuffled if r["drift"]],
        "shuffled_alarm_rate": sum(r["drift"] for r in s_testable) / len(s_testable),
        "shuffled_exceeded_rate": sum(bool(r["exceeded"]) for r in s_testable) / len(s_testable),
        "mcp_agent_onset_month(share>=2%)": onset,
        "detection_window": window_ok,
        "alarms_in_detection_window": [r["window_key"] for r in real if r["drift"] and r["window_key"] in window_ok],
        "first_alarm_from_2024_10": first_after,
        "windows_with_mcp_agent_terms_in_top5": topic_top,
        "confirmed_emerging_alarms_naming_mcp_agent_terms": topic_confirmed,
        "cost": cost,
        "embed_seconds": embed_s,
        "embedded_texts": len(uniq),
        "config": cfg.to_dict(),
        "wall_seconds": time.perf_counter() - t_start,
        "host": platform.platform(),
        "cpus": os.cpu_count(),
    }
    plot_drift_history(real, args.out / "drift_pypi.png", "PyPI summaries, monthly windows (real order)")
    plot_drift_history(shuffled, args.out / "drift_shuffled.png", "PyPI records shuffled across windows (no drift)")
    plot_mcp(real, share, args.out / "drift_mcp.png")
    (args.out / "drift.json").write_text(
        json.dumps(
            {"summary": summary, "real": real, "shuffled": shuffled, "topic_share": share}, indent=1, default=float
        )
    )
    cmd = (
        "python bench/drift.py"
        + (" --no-embeddings" if args.no_embeddings else "")
        + (f" --reference-windows {args.reference_windows}" if args.reference_windows != 3 else "")
        + (f" --lex-rows {args.lex_rows}" if args.lex_rows != ap.get_default("lex_rows") else "")
        + (
            f" --near-dup-jaccard {args.near_dup_jaccard}"
            if args.near_dup_jaccard != DriftConfig.near_dup_jaccard
            else ""
        )
        + (
            f" --emerging-windows {args.emerging_windows}"
            if args.emerging_windows != DriftConfig.emerging_windows
            else ""
        )
        + (f" --seed {args.seed}" if args.seed else "")
        + (f" --out {_rel(args.out)}" if args.out != ap.get_default("out") else "")
    )
    emb_note = (
        f"(embedding {len(uniq)} texts: {embed_s:.0f} s)"
        if not args.no_embeddings
        else "(--no-embeddings: MiniLM MMD² not computed; lexical statistics only)"
    )
    lines = [
        "# Drift monitor on the PyPI stream",
        "",
        f"`{cmd}` — wall {summary['wall_seconds']:.0f} s on {os.cpu_count()} shared CPUs {emb_note}.",
        "",
        f"Per window: {args.lex_rows} texts vs {args.lex_rows} texts sampled from the {cfg.reference_windows} "
        "previous months "
        f"(lexical: JS, OOV, length KS, emerging-term z with prior scale {cfg.prior_scale}, near-duplicate "
        f"weighting at Jaccard {cfg.near_dup_jaccard or 'off'}, over the last {cfg.emerging_windows} window(s) vs the "
        f"{cfg.reference_windows} before them)"
        + (
            ""
            if args.no_embeddings
            else f", {args.embed_rows} vs {args.embed_rows} MiniLM embeddings (MMD², {cfg.permutations} permutations)"
        )
        + f"; family-wise false-alarm rate {cfg.false_alarm_rate} (Bonferroni over the statistics); "
        f"{cfg.null_splits} permutations; churn null from the last {cfg.churn_windows} windows' values once "
        f"{cfg.churn_min_windows} exist.",
        "",
        "## Summary",
        "",
        f"- real stream: confirmed drift in {summary['real_alarms']} "
        f"({len(summary['real_alarms'])}/{len(testable)} testable windows); some statistic exceeded its "
        f"calibrated threshold in {summary['real_exceeded_windows']}/{len(testable)} (the permutation null alone: "
        f"{summary['real_permutation_exceeded_windows']}/{len(testable)})",
        f"- MCP/agent share first >= 2% in {onset}; alarms within one window of it ({', '.join(window_ok)}): "
        f"{summary['alarms_in_detection_window'] or 'none'}; first confirmed alarm from 2024-10 on: {first_after}",
        f"- windows whose top-5 emerging terms include mcp/agent(s)/agentic/llm(s): {topic_top or 'none'}; "
        f"of them confirmed on emerging_z: {topic_confirmed or 'none'}",
        f"- shuffled stream: alarm rate {summary['shuffled_alarm_rate']:.3f} "
        f"({summary['shuffled_alarms']}); exceedance rate {summary['shuffled_exceeded_rate']:.3f}",
        f"- cost on {cost_month} ({cost['rows']} rows): monitor {cost['monitor_s_per_10k']:.1f} s / 10k rows vs "
        f"ingest {cost['ingest_s_per_10k']:.1f} s / 10k rows (ratio {cost['monitor_over_ingest']:.2f}); "
        f"monitor parts {json.dumps({k: round(v, 2) for k, v in cost['monitor_parts_s'].items()})}",
        "",
        "## Per window (real order)",
        "",
        "p = the p-value used (max of permutation and churn p once the churn null applies). Top emerging "
        "terms: highest log-odds z first, with texts containing the term in reference / window samples.",
        "",
        "| month | MCP/agent share | JS (p) | OOV (p) | len KS (p) | emerging z (p) | terms over z thr. "
        "| top emerging terms | MMD² (p) | exceeded | drift |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(r, s):
        return "-" if r.get(s) is None else f"{r[s]:.4g} ({r[s + '_p']:.3g})"

    for r in real:
        terms = (
            ", ".join(
                f"{t['term']} {t['z']:.1f} ({t['reference_texts']}/{t['current_texts']})"
                for t in (r.get("emerging_terms") or [])[:3]
            )
            or "-"
        )
        lines.append(
            f"| {r['window_key']} | {share[r['window_key']]:.3f} | {cell(r, 'token_js')} | {cell(r, 'oov_rate')} "
            f"| {cell(r, 'length_ks')} | {cell(r, 'emerging_z')} | {r.get('emerging_over_threshold', 0)} "
            f"| {terms} | {cell(r, 'embedding_mmd2')} | {', '.join(r['exceeded']) or '-'} "
            f"| {'**yes**' if r['drift'] else 'no'} |"
        )
    lines += ["", "![mcp](drift_mcp.png)", "", "![real](drift_pypi.png)", "", "![shuffled](drift_shuffled.png)", ""]
    (args.out / "drift.md").write_text("\n".join(lines))
    print("\n".join(lines[:16]))


BUDGET_NOTES = {
    "per-window": " per window it covers",
    "per-new-data": " per mean window of new rows (catch-up: steps proportional to the rows not trained on yet)",
}


def policy_schedules(
    n_windows: int, alarms: list[bool], cadences: list[int], stalenesses: list[int]
) -> dict[str, list[int]]:
    """Windows t = 1..n-1 at which each policy retrains.

    A policy retrains after scoring t, on every window pending since its last retrain.

    ``drift+staleness_K`` is the ``drift_sensor`` rule with ``max_windows_without_retrain = K``: retrain on a
    confirmed alarm at t, or when t is the K-th window since the last retrain (the cooldown is shorter than a
    monthly window, so it never binds here).
    """
    out = {"every_window": list(range(1, n_windows))}
    for k in cadences:
        out[f"cadence_{k}"] = [t for t in range(1, n_windows) if t % k == 0]
    out["drift"] = [t for t in range(1, n_windows) if alarms[t]]
    for k in stalenesses:
        sched, since = [], 0
        for t in range(1, n_windows):
            since += 1
            if alarms[t] or since >= k:
                sched.append(t)
                since = 0
        out[f"drift+staleness_{k}"] = sched
    return out


def retrain_steps(
    budget: str, steps_per_window: int, windows_covered: int, new_rows: int, mean_window_rows: float
) -> int:
    """Optimizer steps of one retrain under a budget rule.

    ``per-retrain``: ``steps_per_window`` whatever the retrain covers (fewer retrains = less training).
    ``per-window``: ``steps_per_window`` for each window pending since the previous retrain.
    ``per-new-data``: catch-up, steps proportional to the rows not trained on yet,
    ``round(steps_per_window * new_rows / mean_window_rows)`` (at least 1) — what a production retrain
    does: it trains on everything unseen since the last one, so fewer retrains do not mean less data.

    Raises:
        ValueError: unknown ``budget`` or ``mean_window_rows <= 0``.
    """
    if budget == "per-retrain":
        return steps_per_window
    if budget == "per-window":
        return steps_per_window * windows_covered
    if budget == "per-new-data":
        if mean_window_rows <= 0:
            raise ValueError(f"mean_window_rows must be > 0, got {mean_window_rows}")
        return max(1, round(steps_per_window * new_rows / mean_window_rows))
    raise ValueError(f"unknown budget {budget!r}")


def run_policies(args) -> None:
    """Policy comparison through the continual benchmark's machinery (``bench/continual.py``).

    The monthly stream is written with ``continual.prepare`` (``--per-month`` rows a month, every month
    2023-01..2026-10) and read back with ``continual.load_stream`` (record-id hash split, ``--eval-fraction``
    held out, never trained on). M_0 and every update follow ``continual.run_seed``'s recipe and defaults
    (GPT-2 2x64, BPE 2048 fitted on W_0, M_0 = 120 steps from random init; an update = ``training.finetune``
    with the engine's re-warm schedule, 40 steps x 16 x 64 tokens, 25% replay from a 2048-row window-balanced
    reservoir, ``training.replay``). What changes between policies is *when* an update happens; an update
    trains on every window pending since the previous one (plus replay); its optimizer steps follow
    ``--budget`` (``retrain_steps``: default ``per-new-data`` = catch-up, steps proportional to the new rows,
    so every policy trains on the same data with the same compute; ``per-retrain`` = 40 steps whatever it
    covers). Forward bpb at t = the current model on W_t's held-out rows before any update
    on W_t (``training.evaluate.text_bits``, bits / (UTF-8 bytes + 1 per text)); area under the forward
    curve = mean over t = 1..T-1. Policies with identical schedules are trained once.
    """
    import shutil

    import polars as pl
    import torch

    from bench.common import base_train_cfg, train_m0, window_frame
    from bench.continual import load_stream, prepare
    from training.config import ModelConfig, TrainConfig
    from training.evaluate import text_bits
    from training.finetune import FinetuneRequest, finetune
    from training.modeling import build_base_model, load_model
    from training.replay import replay_count, sample_replay, update_buffer

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    res = json.loads((args.out / "drift.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="drift-policy-"))
    prepare(args.data, work / "stream", args.per_month, 1, "2023-01", "2026-10", args.seed)
    windows = load_stream(work / "stream", "text", args.eval_fraction)
    keys = [w["key"].replace("pypi-", "") for w in windows]
    alarm_set = set(res["summary"]["real_alarms"])
    alarms = [k in alarm_set for k in keys]
    schedules = policy_schedules(len(windows), alarms, args.cadences, args.stalenesses)
    mcfg = ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=2048)
    base = base_train_cfg(seq_len=64, batch=16, lr=1e-3, steps=40, threads=args.threads, seed=args.seed)
    init = build_base_model(windows[0]["train"], mcfg, work / "init", seed=args.seed)
    train_m0(init, windows, base, 120, work)
    cfg = TrainConfig(**base)
    mean_train_rows = float(np.mean([len(w["train"]) for w in windows[1:]]))

    def fwd(model_dir: Path, texts: list[str]) -> float:
        bits = text_bits(*load_model(model_dir), texts)
        return float(bits.sum() / sum(len(t.encode("utf-8")) + 1 for t in texts))

    out, done = {}, {}
    for name, sched in schedules.items():
        key = tuple(sched)
        if key in done:
            out[name] = {**out[done[key]], "same_schedule_as": done[key]}
            print(f"[policy {name}] same schedule as {done[key]}", flush=True)
            continue
        t0 = time.perf_counter()
        model_dir, pending, curve = work / "m0", [], []
        buffer = update_buffer(pl.DataFrame(), window_frame(windows[0], 0), 2048, seed=args.seed)
        retrain_at = set(sched)
        for t in range(1, len(windows)):
            curve.append(fwd(model_dir, windows[t]["eval"]))
            pending.append(t)
            if t in retrain_at:
                new = [x for p in pending for x in windows[p]["train"]]
                replay = sample_replay(
                    buffer["text"].to_list(), replay_count(len(new), 0.25), seed=args.seed * 1000 + t
                )
                nxt = work / f"{name}-{t}"
                steps = retrain_steps(args.budget, cfg.max_steps, len(pending), len(new), mean_train_rows)
                finetune(
                    FinetuneRequest(
                        parent=model_dir,
                        train_texts=new + replay,
                        cfg=TrainConfig(**{**base, "max_steps": steps}),
                        out_dir=nxt,
                    )
                )
                for p in pending:
                    buffer = update_buffer(buffer, window_frame(windows[p], p), 2048, seed=args.seed)
                if model_dir.name != "m0":
                    shutil.rmtree(model_dir, ignore_errors=True)
                model_dir, pending = nxt, []
            print(f"[policy {name}] {keys[t]} forward bpb {curve[-1]:.4f} retrain={t in retrain_at}", flush=True)
        if model_dir.name != "m0":
            shutil.rmtree(model_dir, ignore_errors=True)
        out[name] = {
            "retrains": len(sched),
            "retrain_windows": [keys[t] for t in sched],
            "area_forward_bpb": float(np.mean(curve)),
            "curve": curve,
            "seconds": time.perf_counter() - t0,
        }
        done[key] = name
    shutil.rmtree(work, ignore_errors=True)
    ref = out["every_window"]
    for v in out.values():
        v["area_vs_every_window"] = v["area_forward_bpb"] / ref["area_forward_bpb"] - 1
        v["retrains_vs_every_window"] = v["retrains"] / ref["retrains"]
        v["meets_target"] = bool(v["area_vs_every_window"] <= 0.01 and v["retrains_vs_every_window"] <= 0.60)
    res["policy"] = {
        "results": out,
        "budget": args.budget,
        "per_month": args.per_month,
        "eval_fraction": args.eval_fraction,
        "train_rows": sum(len(w["train"]) for w in windows),
        "eval_rows": sum(len(w["eval"]) for w in windows),
        "model": mcfg.to_dict(),
        "train": cfg.to_dict(),
        "wall_seconds": time.perf_counter() - t_start,
        "months": keys[1:],
        "alarms_used": sorted(alarm_set),
        "stalenesses": args.stalenesses,
        "cadences": args.cadences,
    }
    (args.out / "drift.json").write_text(json.dumps(res, indent=1, default=float))
    plot_policies(out, keys[1:], args.out / "drift_policy.png")
    cmd = (
        f"python bench/drift.py --policy --per-month {args.per_month} --eval-fraction {args.eval_fraction} "
        + f"--budget {args.budget} "
        + (f"--out {_rel(args.out)} " if args.out.resolve() != (Path(__file__).resolve().parent / "results") else "")
        + f"--cadences {','.join(map(str, args.cadences))} --stalenesses {','.join(map(str, args.stalenesses))}"
    )
    lines = [
        "",
        "## Policy comparison",
        "",
        f"`{cmd}` — wall {res['policy']['wall_seconds']:.0f} s, 1 seed. Machinery of bench/continual.py "
        f"(prepare / load_stream, M_0 and update recipe): GPT-2 {mcfg.n_layer}x{mcfg.n_embd}, BPE "
        f"{mcfg.vocab_size}; {res['policy']['train_rows']} training and {res['policy']['eval_rows']} held-out "
        f"rows over {len(windows)} months; one retrain = {cfg.max_steps} steps x {cfg.batch_size} x {cfg.seq_len} "
        f"tokens{BUDGET_NOTES.get(args.budget, '')} on every window pending since "
        "the previous retrain + 25% replay. Forward bpb = the "
        "current model on month t's held-out rows before training on t. Drift alarms: the confirmed "
        f"alarms of the real-stream run above ({sorted(alarm_set)}). K and the cadences were fixed "
        "before the run.",
        "",
        "| policy | retrains | area under forward bpb (mean) | vs every window | retrains vs every window "
        "| target (≤ +1%, ≤ 60%) |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in out.items():
        same = f" (= {v['same_schedule_as']})" if v.get("same_schedule_as") else ""
        lines.append(
            f"| {k}{same} | {v['retrains']} | {v['area_forward_bpb']:.4f} | {100 * v['area_vs_every_window']:+.2f}% "
            f"| {100 * v['retrains_vs_every_window']:.0f}% | {'met' if v['meets_target'] else 'not met'} |"
        )
    lines += ["", "![policy](drift_policy.png)", ""]
    md = args.out / "drift.md"
    text = md.read_text()
    if "## Policy comparison" in text:
        text = text[: text.index("\n## Policy comparison")]
    md.write_text(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


def _rel(path: Path) -> str:
    """``path`` relative to the repository root when inside it (for the commands written to drift.md)."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def plot_policies(out: dict, months: list[str], path: Path) -> None:
    """Forward bpb per month for each policy, retrains marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4.5))
    x = list(range(len(months)))
    for name, v in out.items():
        if v.get("same_schedule_as"):
            continue
        (line,) = ax.plot(
            x, v["curve"], lw=1, label=f"{name} ({v['retrains']} retrains, {100 * v['area_vs_every_window']:+.2f}%)"
        )
        idx = [months.index(m) for m in v["retrain_windows"]]
        ax.scatter(idx, [v["curve"][i] for i in idx], s=8, color=line.get_color())
    ax.set_xticks(x[::2])
    ax.set_xticklabels(months[::2], rotation=60, fontsize=7, ha="right")
    ax.set_ylabel("forward bits/byte (before the update)")
    ax.set_title("dots: retrain after scoring that month")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    if "--policy" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--policy", action="store_true")
        ap.add_argument(
            "--data",
            type=Path,
            default=Path(__file__).resolve().parents[2] / "shared/data/pypi_summaries_2023_2026.parquet",
        )
        ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
        ap.add_argument("--per-month", type=int, default=600)
        ap.add_argument("--eval-fraction", type=float, default=0.25)
        ap.add_argument("--cadences", type=lambda s: [int(x) for x in s.split(",")], default=[2, 3])
        ap.add_argument("--stalenesses", type=lambda s: [int(x) for x in s.split(",")], default=[2, 3])
        ap.add_argument("--threads", type=int, default=1)
        ap.add_argument(
            "--budget",
            choices=["per-retrain", "per-window", "per-new-data"],
            default="per-new-data",
            help="per-retrain: every retrain = 40 steps whatever it covers (retrains = compute); "
            "per-window: 40 steps per window covered (equal compute, only the timing differs); "
            "per-new-data: catch-up, 40 steps per mean window's worth of new rows",
        )
        ap.add_argument("--seed", type=int, default=0)
        run_policies(ap.parse_args())
    else:
        main()
