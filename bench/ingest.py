"""Ingest throughput: raw -> gates -> curated vs a plain DuckDB ``read_json`` load, in one run.

    python bench/ingest.py [--rows 100000] [--pii-rate 0.01] [--dup-rate 0.02] [--near-dup]

Writes one synthetic window (PyPI-summary-like texts of 60-200 chars, ``--pii-rate`` of them with an
e-mail/phone/card/IP, ``--dup-rate`` exact re-posts) to a temp dir, then times, side by side:

- ``plain``: ``CREATE TABLE t AS SELECT * FROM read_json('file')`` into a fresh DuckDB file;
- ``gated``: the path of the ``raw_window`` + ``curated_window`` assets without Dagster:
  ``read_window_file`` -> ``Warehouse.replace_raw_window`` -> ``read_raw_window`` ->
  ``curate_window`` (GX suite + Data Docs, Presidio, dedup) -> ``replace_curated_window``;
- stages in isolation on the same rows: parse, GX (``curate_window`` with PII and dedup off),
  PII (``quality.pii.redact_rows``), dedup (``quality.dedup.find_duplicates``).

Prints a Markdown table of seconds and rows/s and the ratio gated/plain. Timings are wall clock
on a shared machine: read ratios, not absolutes. One warm-up pass loads GX and Presidio first
(process start-up cost, paid once per Dagster run process, reported separately).
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("fast async typed tiny safe simple modern robust lightweight pure python rust bindings client server "
         "library toolkit framework parser validator scheduler pipeline stream cache queue database driver "
         "for the with and of a an to in on cloud data web ml audio image graph kafka redis postgres http json "
         "yaml toml cli api sdk plugin extension testing logging metrics tracing deployment kubernetes docker").split()
PII = ["contact jane.roe{i}@example.org", "call +1 (415) 555-{i:04d}", "card 4111 1111 1111 1111",
       "server 10.0.{a}.{b} is down"]


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


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--pii-rate", type=float, default=0.01)
    ap.add_argument("--dup-rate", type=float, default=0.02)
    ap.add_argument("--near-dup", action="store_true", help="also MinHash LSH near-dup (threshold 0.9)")
    args = ap.parse_args()

    import duckdb

    from orchestration.warehouse import Warehouse
    from quality.dedup import find_duplicates
    from quality.pii import redact_rows
    from quality.readers import read_window_file
    from quality.suite import QualityConfig, curate_window

    near = 0.9 if args.near_dup else None
    cfg = QualityConfig(dedup_exact=True, near_dup_threshold=near)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "bench-window.jsonl"
        make_window(src, args.rows, args.pii_rate, args.dup_rate)
        mb = src.stat().st_size / 1e6

        # warm-up: imports and engines (GX context, Presidio analyzer)
        t_warm, _ = timed(lambda: curate_window(read_window_file(src, "warm").rows.head(200), cfg))

        def plain():
            con = duckdb.connect(str(tmp / "plain.duckdb"))
            con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM read_json(?, format='newline_delimited')", [str(src)])
            n = con.execute("SELECT count(*) FROM t").fetchall()[0][0]
            con.close()
            return n

        t_plain, n_plain = timed(plain)
        assert n_plain == args.rows

        wh = Warehouse(tmp / "warehouse.duckdb")
        wh.init_schema()

        def gated():
            parsed = read_window_file(src, "bench")
            wh.replace_raw_window("bench", parsed.rows, parsed.rejects, file_name=src.name,
                                  file_sha256=parsed.file_sha256, file_mtime_ns=0, dagster_run_id=None)
            rows = wh.read_raw_window("bench")
            verdict = curate_window(rows, cfg, window_key="bench", prior_hashes=None, docs_dir=tmp / "docs")
            wh.replace_curated_window("bench", verdict.curated, verdict.quarantine, verdict.window_results,
                                      verdict.gx_run_id)
            return verdict

        t_gated, verdict = timed(gated)
        assert verdict.curated.height + verdict.quarantine.height == args.rows

        t_parse, parsed = timed(lambda: read_window_file(src, "bench"))
        rows = parsed.rows
        t_gx, _ = timed(lambda: curate_window(rows, QualityConfig(pii=False)))
        t_pii, pii = timed(lambda: redact_rows(rows))
        t_dedup, _ = timed(lambda: find_duplicates(rows, "bench", exact=True, near_threshold=near))

    n = args.rows
    table = [
        ("plain DuckDB read_json", t_plain),
        ("**gated: raw -> gates -> curated**", t_gated),
        ("  parse (read_window_file)", t_parse),
        ("  GX suite (row + window rules)", t_gx),
        (f"  PII (prefilter + Presidio on {pii.candidates} candidates)", t_pii),
        ("  dedup (exact" + (" + MinHash LSH)" if near else ")"), t_dedup),
    ]
    print(f"{n} rows, {mb:.1f} MB JSONL, pii_rate={args.pii_rate}, dup_rate={args.dup_rate}, "
          f"near_dup={'on' if near else 'off'}; warm-up (imports, engines) {t_warm:.1f} s")
    print(f"curated {verdict.curated.height}, quarantined {verdict.quarantine.height} "
          f"{dict(sorted(verdict.rule_counts.items()))}, redactions {verdict.redactions}\n")
    print("| stage | seconds | rows/s |")
    print("|---|---:|---:|")
    for name, t in table:
        print(f"| {name} | {t:.2f} | {n / t:,.0f} |")
    print(f"\nratio gated/plain rows/s: {t_plain / t_gated:.3f} (target >= 0.25)")


if __name__ == "__main__":
    main()
