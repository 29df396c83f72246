"""bench/gpu_smoke.py runs the CPU path and says whether the GPU path was verified."""

import json
import subprocess
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu_smoke.py"


def test_gpu_smoke_reports_both_paths_or_says_unverified(tmp_path):
    args = ["--tiny", "--steps", "2", "--corpus-bytes", "30000", "--threads", "1", "--out", str(tmp_path)]
    proc = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "gpu_smoke.json").read_text())
    assert report["cpu"]["tokens_per_s"] > 0 and report["cpu"]["peak_memory_mb"] > 0
    if torch.cuda.is_available():
        assert report["cuda"]["weights"] == "bfloat16" and report["cuda"]["fused_adamw"]
    else:
        assert "cuda" not in report and "UNVERIFIED" in proc.stdout
