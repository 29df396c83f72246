"""bench/freshness.py end to end on two tiny windows through the real daemon: every phase is read back from
Dagster's event log and the freshness figures are consistent with each other."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from st_helpers import window_records, write_window

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_freshness_bench_times_every_phase_of_two_windows(tmp_path):
    source = tmp_path / "stream"
    for i in range(2):
        write_window(source, f"s-2025-0{i + 1}.jsonl", window_records(i, 60))
    out = tmp_path / "results" / "freshness"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "freshness.py"), "--tiny", "--source", str(source)]
        + ["--interval", "3", "--home", str(tmp_path / "home"), "--out", str(out), "--timeout", "780"],
        capture_output=True,
        text=True,
        timeout=860,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["failures"] == [] and data["settings"] == "tiny"
    assert [w["window"] for w in data["windows"]] == ["s-2025-01", "s-2025-02"]
    for w in data["windows"]:
        assert 0 < w["landed_to_approved_s"] < w["landed_to_decided_s"]
        assert w["training_s"] > 0 and w["version"] and isinstance(w["promoted"], bool)
        assert w["freshness_ratio"] == pytest.approx(w["landed_to_decided_s"] / w["training_s"], rel=1e-2)
        for run in (w["ingest"], w["finetune"]):
            assert run["status"] == "SUCCESS"
            assert all(run[p] is not None and run[p] >= 0 for p in ("queued_s", "launch_s", "import_s", "steps_s"))
            assert run["launch_to_end_s"] >= run["steps_s"]
        assert {"raw_window", "curated_window", "approved_window"} <= set(w["ingest"]["step_s"])
        assert w["finetune"]["step_s"]["challenger_model"] >= w["training_s"]
        assert w["finetune_overhead_s"] <= w["finetune_wall_minus_training_s"]
    jobs = data["summary"]["jobs"]
    assert jobs["ingest_window"]["runs"] == 2 and jobs["finetune"]["runs"] >= 2
    markdown = out.with_suffix(".md").read_text()
    assert "| s-2025-02 |" in markdown and "| ingest_window | raw_window |" in markdown and "load average" in markdown
