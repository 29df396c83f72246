"""Side-by-side ingest benchmark of two source trees (e.g. main and a change), in one run.

``bench/ingest.py`` measures one tree; on a shared, noisy machine two separate runs of it can
differ by more than a change's effect. This script starts one long-lived worker process per tree
(``git worktree`` or ``git archive`` exports), warms each up once (imports, GX, Presidio), then asks
them in turn, alternating the order every round, to load the same window file twice, with
``bench/ingest.py``'s own functions: the plain DuckDB ``read_json`` load (``plain_load``) and the
gated path (``gated_load``: parse → raw write → raw read → curate with the default
``QualityConfig`` and Data Docs → curated write, a new window each time).
Every tree is measured under the same load, and the ratio plain/gated is computed per round.

    python bench/ingest_revisions.py --window W.jsonl --rounds 6 /tmp/old /work/main

Output: per tree, the best plain and gated wall times, the ratio of the bests and every round's
ratio; with ``--json``, the same as JSON. The window file can come from ``bench/ingest.py``'s
generators (``make_window``, ``make_real_window``) via ``--make-real PARQUET`` / ``--make-synthetic``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(root: str, window: Path) -> None:
    """Serve rounds on stdin: for each line, print ``plain_s gated_s curated_rows``, with
    ``bench/ingest.py``'s ``plain_load`` and ``gated_load`` running the tree ``root``'s code."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ingest import gated_load, plain_load  # puts this checkout's root first on sys.path

    sys.path.insert(0, root)  # ... so the tree under test goes before it
    from orchestration.store.warehouse import Warehouse
    from quality.readers import read_window_file
    from quality.suite import QualityConfig, curate_window

    for module in (Warehouse, curate_window):
        if not Path(sys.modules[module.__module__].__file__).resolve().is_relative_to(Path(root).resolve()):
            raise SystemExit(f"{module.__module__} was imported from outside {root}")
    tmp = Path(tempfile.mkdtemp(prefix="ingest-rev-"))
    cfg = QualityConfig(dedup_exact=True)
    curate_window(read_window_file(window, "warm").rows.head(200), cfg)
    wh = Warehouse(tmp / "warehouse.duckdb")
    wh.init_schema()

    print("ready", flush=True)
    for i, _ in enumerate(sys.stdin):
        t0 = time.perf_counter()
        plain_load(window, tmp / "plain.duckdb")
        t1 = time.perf_counter()
        key = f"rev-{i:03d}"
        verdict = gated_load(wh, window, key, cfg, tmp / "docs" / key)
        print(f"{t1 - t0:.4f} {time.perf_counter() - t1:.4f} {verdict.curated.height}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", help="source trees to compare (each with quality/ and orchestration/)")
    ap.add_argument("--window", type=Path, required=True, help="JSON Lines window file (created if --make-*)")
    ap.add_argument("--make-real", type=Path, default=None, help="write 100k real summaries from this parquet")
    ap.add_argument("--make-synthetic", action="store_true", help="write bench/ingest.py's synthetic window")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        return worker(args.worker, args.window)

    if args.make_real or args.make_synthetic:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from ingest import make_real_window, make_window

        if args.make_real:
            make_real_window(args.window, args.make_real, args.rows)
        else:
            make_window(args.window, args.rows, pii_rate=0.01, dup_rate=0.02)
    procs = {
        t: subprocess.Popen(
            [sys.executable, __file__, "--window", str(args.window), "--worker", t, t],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for t in args.trees
    }
    for t, p in procs.items():
        if p.stdout.readline().strip() != "ready":
            raise SystemExit(f"worker for {t} failed to start")
    runs: dict[str, list[tuple[float, float]]] = {t: [] for t in args.trees}
    curated = {}
    for i in range(args.rounds):
        for t in args.trees if i % 2 == 0 else args.trees[::-1]:
            procs[t].stdin.write("go\n")
            procs[t].stdin.flush()
            plain_s, gated_s, rows = procs[t].stdout.readline().split()
            runs[t].append((float(plain_s), float(gated_s)))
            curated[t] = int(rows)
    for p in procs.values():
        p.stdin.close()
        p.wait()
    out = {}
    for t, v in runs.items():
        plain_s, gated_s = min(a for a, _ in v), min(b for _, b in v)
        out[t] = {
            "best_plain_s": plain_s,
            "best_gated_s": gated_s,
            "ratio_of_bests": round(plain_s / gated_s, 3),
            "round_ratios": sorted(round(a / b, 3) for a, b in v),
            "curated_rows": curated[t],
        }
        print(
            f"{t}: plain {plain_s:.2f} s, gated {gated_s:.2f} s, ratio of bests {plain_s / gated_s:.3f}, "
            f"rounds {out[t]['round_ratios']}, curated rows {curated[t]}"
        )
    if len(set(curated.values())) > 1:
        print("WARNING: the trees curated different row counts")
    if args.json:
        args.json.write_text(json.dumps({"window": args.window.name, "rounds": args.rounds, "trees": out}, indent=2))


if __name__ == "__main__":
    main()
