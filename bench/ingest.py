"""Ingest throughput: raw -> gates -> curated vs a plain DuckDB ``read_json`` load, in one run.

    python bench/ingest.py [--rows 100000] [--pii-rate 0.01] [--dup-rate 0.02] [--near-dup] [--repeat 3]
                           [--json bench/results/ingest.json]

Writes one synthetic window (PyPI-summary-like texts of 60-200 chars, ``--pii-rate`` of them with an
e-mail/phone/card/IP, ``--dup-rate`` exact re-posts) to a temp dir, then times, side by side:

- ``plain``: ``CREATE TABLE t AS SELECT * FROM read_json('file')`` into a fresh DuckDB file;
- ``gated``: the path of the ``raw_window`` + ``curated_window`` assets without Dagster:
  ``read_window_file`` -> ``Warehouse.replace_raw_window`` -> ``read_raw_window`` ->
  ``curate_window`` (GX suite + Data Docs, Presidio, dedup) -> ``replace_curated_window``, with the
  default config (Presidio in forked workers, one per core beside this one, while GX runs, from
  ``pii_parallel_min_candidates`` candidates; below that inline beside the hash thread) and again
  with ``pii_workers=0`` (everything in one process), same verdict asserted; every run lands a new
  window in the same warehouse, as a stream does; the table also splits the fastest gated run into
  its five steps;
- stages in isolation on the same rows: parse, GX (``curate_window`` with PII and dedup off),
  PII (``quality.pii.redact_rows``), dedup (``quality.dedup.find_duplicates``).

Prints a Markdown table of seconds (wall clock and CPU time of this process and its worker processes) and rows/s, and
the ratio gated/plain. Each timing is the best of ``--repeat`` runs, plain and gated interleaved so both see the
same machine load; the machine is shared, so read ratios, not absolutes. One warm-up pass loads GX
and Presidio first (process start-up cost, paid once per Dagster run process, reported separately).
DuckDB's ``read_json`` runs on every core, the gated path mostly on one, so its CPU seconds can
exceed its wall seconds.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_raw  # noqa: E402

WORDS = [
    "fast",
    "async",
    "typed",
    "tiny",
    "safe",
    "simple",
    "modern",
    "robust",
    "lightweight",
    "pure",
    "python",
    "rust",
    "bindings",
    "client",
    "server",
    "library",
    "toolkit",
    "framework",
    "parser",
    "validator",
    "scheduler",
    "pipeline",
    "stream",
    "cache",
    "queue",
    "database",
    "driver",
    "for",
    "the",
    "with",
    "and",
    "of",
    "a",
    "an",
    "to",
    "in",
    "on",
    "cloud",
    "data",
    "web",
    "ml",
    "audio",
    "image",
    "graph",
    "kafka",
    "redis",
    "postgres",
    "http",
    "json",
    "yaml",
    "toml",
    "cli",
    "api",
    "sdk",
    "plugin",
    "extension",
    "testing",
    "logging",
    "metrics",
    "tracing",
    "deployment",
    "kubernetes",
    "docker",
]
PII = [
    "contact jane.roe{i}@example.org",
    "call +1 (415) 555-{i:04d}",
    "card 4111 1111 1111 1111",
    "server 10.0.{a}.{b} is down",
]


def make_window(path: Path, rows: int, pii_rate: float, dup_rate: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    texts = []
    with path.open("w") as fh:
        for i in range(rows):
            if texts and rng.random() < dup_rate:
                text = rng.choice(texts)
            else:
                n = rng.randint(10, 30)
                text = " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + f" v{rng.randint(0, 9)}"
                if rng.random() < pii_rate:
                    text += " " + rng.choice(PII).format(i=i % 10000, a=i % 250, b=(i * 7) % 250)
                texts.append(text)
            fh.write(json.dumps({"id": f"r{i}", "text": text, "ts": "2025-01-01T00:00:00Z", "pkg": f"p{i}"}) + "\n")


def make_real_window(path: Path, parquet: Path, rows: int, seed: int = 0) -> None:
    """``rows`` random PyPI package summaries (real text, its own PII and duplicate rates) as JSONL."""
    import polars as pl

    df = pl.read_parquet(parquet).sample(rows, seed=seed, with_replacement=False)
    with path.open("w") as fh:
        for i, r in enumerate(df.iter_rows(named=True)):
            fh.write(
                json.dumps(
                    {
                        "id": f"{r['name']}=={r['version']}#{i}",
                        "text": r["summary"],
                        "ts": f"{r['month']}-01T00:00:00Z",
                        "pkg": r["name"],
                    }
                )
                + "\n"
            )


def plain_load(src: Path, db: Path) -> int:
    """The baseline: DuckDB's own ``read_json`` of the window file into a table of the database
    file ``db`` (replaced). Returns the rows loaded."""
    import duckdb

    con = duckdb.connect(str(db))
    try:
        con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM read_json(?, format='newline_delimited')", [str(src)])
        return con.execute("SELECT count(*) FROM t").fetchall()[0][0]
    finally:
        con.close()


def gated_load(wh, src: Path, key: str, cfg, docs_dir: Path, step=lambda name, fn: fn()):
    """The path of the ``raw_window`` + ``curated_window`` assets without Dagster, landing ``src``
    as window ``key`` in the ``Warehouse`` ``wh``: parse, raw write, raw read, curate (``cfg``; GX
    Data Docs into ``docs_dir``, Presidio, dedup), curated write. ``step(name, fn)`` runs each of
    the five stages (e.g. timing it). Returns the ``WindowVerdict``. Imports ``quality`` lazily, so
    a caller can put another source tree first on ``sys.path`` (``bench/ingest_revisions.py``)."""
    from quality.readers import read_window_file
    from quality.suite import curate_window

    parsed = step("parse", lambda: read_window_file(src, key))
    step("raw write", lambda: write_raw(wh, key, parsed, src.name))
    rows = step("raw read", lambda: wh.read_raw_window(key))
    verdict = step("curate", lambda: curate_window(rows, cfg, window_key=key, prior_hashes=None, docs_dir=docs_dir))
    step(
        "curated write",
        lambda: wh.replace_curated_window(
            key, verdict.curated, verdict.quarantine, verdict.window_results, verdict.gx_run_id
        ),
    )
    return verdict


def cpu_seconds() -> float:
    """CPU time of this process plus its reaped children (the Presidio workers), in seconds."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn):
    w, c = time.perf_counter(), cpu_seconds()
    out = fn()
    return (time.perf_counter() - w, cpu_seconds() - c), out


def best(runs):
    """Fastest (wall, cpu) pair of several timings."""
    return min(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--pii-rate", type=float, default=0.01)
    ap.add_argument("--dup-rate", type=float, default=0.02)
    ap.add_argument("--near-dup", action="store_true", help="also MinHash LSH near-dup (threshold 0.9)")
    ap.add_argument(
        "--real",
        type=Path,
        default=None,
        help="instead of synthetic texts: --rows random rows of this Parquet file (columns name, "
        "version, summary, month; e.g. ../shared/data/pypi_summaries_2023_2026.parquet)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args()

    from orchestration.store.warehouse import Warehouse
    from quality.dedup import find_duplicates
    from quality.pii import default_workers, redact_rows
    from quality.readers import read_window_file
    from quality.suite import QualityConfig, curate_window

    near = 0.9 if args.near_dup else None
    cfg = QualityConfig(dedup_exact=True, near_dup_threshold=near)  # default pii_workers (quality.pii.default_workers)
    cfg_inline = QualityConfig(dedup_exact=True, near_dup_threshold=near, pii_workers=0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "bench-window.jsonl"
        if args.real is not None:
            make_real_window(src, args.real, args.rows)
        else:
            make_window(src, args.rows, args.pii_rate, args.dup_rate)
        mb = src.stat().st_size / 1e6

        # warm-up: imports and engines (GX context, Presidio analyzer)
        (t_warm, _), _ = timed(lambda: curate_window(read_window_file(src, "warm").rows.head(200), cfg))

        def plain():
            return plain_load(src, tmp / "plain.duckdb")

        wh = Warehouse(tmp / "warehouse.duckdb")
        wh.init_schema()

        landed = iter(range(1_000_000))
        steps: dict[str, list[tuple[float, float]]] = {}

        def step(name, fn):
            t, out = timed(fn)
            steps.setdefault(name, []).append(t)
            return out

        def gated(config=cfg):
            # a new window each time, as on a stream: the warehouse keeps the earlier ones
            key = f"bench-{next(landed):03d}"
            return gated_load(wh, src, key, config, tmp / "docs" / key, step)

        plains, gateds, inlines = [], [], []
        for _ in range(args.repeat):  # interleaved: all see the same load
            t, n_plain = timed(plain)
            assert n_plain == args.rows
            plains.append(t)
            steps_before = {k: len(v) for k, v in steps.items()}
            t, verdict = timed(gated)
            assert verdict.curated.height + verdict.quarantine.height == args.rows
            gateds.append(t)
            if t == min(gateds):  # the steps of the fastest gated run
                best_steps = {k: v[steps_before.get(k, 0)] for k, v in steps.items()}
            t, inline = timed(lambda: gated(cfg_inline))
            assert inline.curated.drop("window_key").equals(verdict.curated.drop("window_key"))  # same verdict inline
            inlines.append(t)
        t_plain, t_gated, t_inline = best(plains), best(gateds), best(inlines)

        parsed = read_window_file(src, "bench")
        rows = parsed.rows
        stages = {
            "parse": best(timed(lambda: read_window_file(src, "bench"))[0] for _ in range(args.repeat)),
            "gx": best(
                timed(lambda: curate_window(rows, QualityConfig(pii=False, dedup_exact=False)))[0]
                for _ in range(args.repeat)
            ),
        }
        pii_runs = [timed(lambda: redact_rows(rows)) for _ in range(args.repeat)]
        stages["pii"] = best(t for t, _ in pii_runs)
        pii = pii_runs[0][1]
        stages["dedup"] = best(
            timed(lambda: find_duplicates(rows, "bench", exact=True, near_threshold=near))[0]
            for _ in range(args.repeat)
        )

    n = args.rows
    forks = default_workers() >= 1 and pii.candidates >= cfg.pii_parallel_min_candidates
    presidio_mode = (
        f"in {default_workers()} forked worker(s) beside GX"
        if forks
        else f"inline beside the hash thread: {pii.candidates} < {cfg.pii_parallel_min_candidates} candidates"
    )
    table = [  # (JSON key, Markdown label, (wall s, CPU s))
        ("plain", "plain DuckDB `read_json`", t_plain),
        ("gated", f"**gated: raw → gates → curated** (default config: Presidio {presidio_mode})", t_gated),
        *(
            (f"gated_{name.replace(' ', '_')}", f"  {name} (in the fastest gated run)", best_steps[name])
            for name in ("parse", "raw write", "raw read", "curate", "curated write")
        ),
        ("gated_pii_inline", "gated, Presidio inline (`pii_workers=0`)", t_inline),
        ("alone_parse", "stages alone, best of runs: parse (`read_window_file`)", stages["parse"]),
        ("alone_gx", "  GX suite (row + window rules, no Data Docs)", stages["gx"]),
        ("alone_pii", f"  PII (prefilter + Presidio on {pii.candidates} candidates, inline)", stages["pii"]),
        ("alone_dedup", "  dedup (exact" + (" + MinHash LSH)" if near else ")"), stages["dedup"]),
    ]
    ratio = t_plain[0] / t_gated[0]
    ratio_inline = t_plain[0] / t_inline[0]
    source = f"real texts from {args.real.name}" if args.real else f"pii_rate={args.pii_rate}, dup_rate={args.dup_rate}"
    print(
        f"{n} rows, {mb:.1f} MB JSONL, {source}, "
        f"near_dup={'on' if near else 'off'}, best of {args.repeat}; warm-up (imports, engines) {t_warm:.1f} s; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"curated {verdict.curated.height}, quarantined {verdict.quarantine.height} "
        f"{dict(sorted(verdict.rule_counts.items()))}, redactions {verdict.redactions}\n"
    )
    print("| stage | wall s | CPU s | rows/s (wall) |")
    print("|---|---:|---:|---:|")
    for _, name, (wall, cpu) in table:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {n / wall:,.0f} |")
    print(f"\nratio gated/plain rows/s: {ratio:.3f} (target >= 0.25); with Presidio inline: {ratio_inline:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "rows": n,
                    "mb": round(mb, 2),
                    "source": str(args.real.name) if args.real else "synthetic",
                    "pii_rate": None if args.real else args.pii_rate,
                    "dup_rate": None if args.real else args.dup_rate,
                    "near_dup": bool(near),
                    "repeat": args.repeat,
                    "warmup_s": round(t_warm, 2),
                    "load_average": os.getloadavg()[0],
                    "cpu_count": os.cpu_count(),
                    "presidio": presidio_mode,
                    "stages": {key: {"wall_s": round(w, 3), "cpu_s": round(c, 3)} for key, _, (w, c) in table},
                    "ratio": round(ratio, 4),
                    "ratio_pii_inline": round(ratio_inline, 4),
                    "pii_workers": default_workers() if forks else 0,
                    "pii_candidates": pii.candidates,
                    "quarantined_by_rule": dict(sorted(verdict.rule_counts.items())),
                    "redactions": verdict.redactions,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
