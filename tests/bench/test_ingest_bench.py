"""bench/ingest.py and bench/ingest_revisions.py run end to end on a small window (real DuckDB
warehouse, GX, Presidio), and the side-by-side script really runs each tree's own code."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args, timeout=900):
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_ingest_bench_reports_every_stage(tmp_path):
    out = tmp_path / "ingest.json"
    run(ROOT / "bench" / "ingest.py", "--rows", 2000, "--repeat", 1, "--json", out)
    data = json.loads(out.read_text())
    assert data["rows"] == 2000 and data["ratio"] > 0
    assert {
        "plain",
        "gated",
        "gated_parse",
        "gated_raw_write",
        "gated_raw_read",
        "gated_curate",
        "gated_curated_write",
        "gated_pii_inline",
        "alone_pii",
    } <= set(data["stages"])
    assert sum(data["quarantined_by_rule"].values()) > 0 and data["redactions"]


def test_ingest_revisions_runs_each_tree_on_the_same_window(tmp_path):
    copy = tmp_path / "copy"
    for package in ("quality", "orchestration"):
        shutil.copytree(ROOT / package, copy / package)
    out = tmp_path / "revisions.json"
    stdout = run(
        ROOT / "bench" / "ingest_revisions.py",
        "--window",
        tmp_path / "w.jsonl",
        "--make-synthetic",
        "--rows",
        1500,
        "--rounds",
        2,
        "--json",
        out,
        copy,
        ROOT,
    )
    trees = json.loads(out.read_text())["trees"]
    assert set(trees) == {str(copy), str(ROOT)} and "WARNING" not in stdout
    for result in trees.values():
        assert result["curated_rows"] == trees[str(ROOT)]["curated_rows"] > 0
        assert len(result["round_ratios"]) == 2 and result["best_gated_s"] > 0

    # a tree whose code cannot be imported from it is refused, not silently replaced by this checkout
    empty = tmp_path / "empty"
    (empty / "quality").mkdir(parents=True)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ingest_revisions.py"),
            "--window",
            str(tmp_path / "w.jsonl"),
            "--rounds",
            "1",
            str(empty),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode != 0 and f"imported from outside {empty}" in proc.stderr
