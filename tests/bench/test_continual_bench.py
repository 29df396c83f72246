"""bench/continual.py runs unchanged on any directory of window files (a tiny synthetic stream here)."""

import json
import subprocess
import sys
from pathlib import Path

from st_helpers import window_records, write_window

BENCH = Path(__file__).resolve().parents[2] / "bench" / "continual.py"


def test_bench_runs_on_a_directory_of_window_files(tmp_path):
    stream = tmp_path / "stream"
    for i in range(3):
        write_window(stream, f"w-{i}.jsonl", window_records(i, 40))
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "run",
            "--stream",
            str(stream),
            "--out",
            str(out),
            "--seeds",
            "1",
            "--steps",
            "2",
            "--m0-steps",
            "2",
            "--seq-len",
            "32",
            "--n-embd",
            "16",
            "--vocab",
            "300",
            "--oracle-every",
            "1",
            "--methods",
            "frozen,naive,replay-0.25,oracle",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (out / "continual.md").read_text()
    for method in ("frozen", "naive", "replay-0.25", "oracle"):
        assert f"| {method} |" in table
    assert (out / "continual.png").stat().st_size > 0
    data = json.loads((out / "continual.json").read_text())
    assert data["keys"] == ["w-0", "w-1", "w-2"]
    oracle = data["results"]["oracle"][0]
    assert oracle["oracle_retrains"] == [1, 2] and oracle["train_tokens"] > data["results"]["naive"][0]["train_tokens"]
