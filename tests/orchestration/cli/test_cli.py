"""The streamtune CLI: readable errors, replay, status on an empty home."""

import json
import subprocess
import sys

from st_helpers import window_records, write_window


def cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli.app", *args], capture_output=True, text=True, env=env
    )


def test_replay_lands_files_and_status_reports_an_empty_home(tmp_path):
    src = tmp_path / "src"
    write_window(src, "s-01.jsonl", window_records(0, 3))
    write_window(src, "s-02.jsonl", window_records(1, 3))
    home = tmp_path / "home"
    out = cli("replay", str(src), "--home", str(home))
    assert out.returncode == 0, out.stderr
    assert "landed 2 window file(s)" in out.stdout
    assert sorted(p.name for p in (home / "landing").iterdir()) == ["s-01.jsonl", "s-02.jsonl"]
    status = cli("status", "--home", str(home), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["windows"] == []


def test_errors_are_one_line_and_a_hint_not_a_traceback(tmp_path):
    out = cli("replay", str(tmp_path / "missing"), "--home", str(tmp_path / "home"))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("error: replay source") and lines[1].startswith("hint:")


def test_bad_settings_file_is_a_clear_error(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "streamtune.toml").write_text("unknown_knob = 3\n")
    out = cli("status", "--home", str(home))
    assert out.returncode == 2  # bad input: refused before anything changed (issue 20)
    assert "unknown settings ['unknown_knob']" in out.stderr
    assert "Traceback" not in out.stderr


def test_help_lists_every_command_without_importing_dagster_torch_or_mlflow():
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('HEAVY', sorted({'dagster', 'torch', 'mlflow'} & set(sys.modules))))\n"
        "sys.argv = ['streamtune', '--help']\n"
        "from orchestration.cli.app import main\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    for command in ("replay", "run", "status", "demo", "ui", "rollback", "forget", "quarantine"):
        assert command in out.stdout
