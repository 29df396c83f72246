"""`dg` (dagster-dg-cli) runs on the project: ``[tool.dg]`` in pyproject.toml points it at orchestration.definitions.

Real subprocesses of the installed ``dg`` in the project venv, as ``make lint`` runs ``dg check defs``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).with_name("dg")

pytestmark = pytest.mark.skipif(not DG.exists(), reason="dagster-dg-cli is not installed (pip install -e '.[dev]')")


def _dg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STREAMTUNE_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster")}
    (tmp_path / "dagster").mkdir(exist_ok=True)
    return subprocess.run([str(DG), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_dg_check_defs_loads_the_definitions(tmp_path):
    proc = _dg(tmp_path, "check", "defs")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr


def test_dg_list_defs_json_lists_the_pipeline(tmp_path):
    proc = _dg(tmp_path, "list", "defs", "--json")
    assert proc.returncode == 0, proc.stderr
    defs = json.loads(proc.stdout)
    assets = {a["asset_key"] for a in defs["assets"]}
    assert {"raw_window", "curated_window", "approved_window", "challenger_model", "champion_model"} <= assets
    checks = {c["key"] if isinstance(c, dict) and "key" in c else json.dumps(c) for c in defs.get("asset_checks", [])}
    assert any("challenger_beats_champion" in c for c in checks)
    assert any(s["name"] == "landing_sensor" for s in defs["sensors"])
