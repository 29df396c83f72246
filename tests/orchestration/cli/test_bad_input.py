"""Bad input is refused before anything changes: one error line and a hint, exit status 2, no traceback.

Settings that do not validate (wrong type, misspelled key, TOML syntax error), a home that does not
exist (every command but ``demo``, ``replay`` and ``run``), empty ``forget`` values and unknown windows
for ``quarantine release/purge``; real warehouses in temporary homes, the CLI as a subprocess. Also CI
honesty: a test that needs a missing external tool fails instead of skipping when ``CI`` is set.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from st_helpers import tiny_home, window_records, write_window

from orchestration.cli.app import main
from orchestration.pipeline.curate import curate
from orchestration.pipeline.ingest import ingest_window
from orchestration.store.warehouse import Warehouse

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[2] / "conftest.py"


def cli(*args, env=None):
    """The CLI as a subprocess (its real exit status)."""
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli.app", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture
def streamtune(capsys, monkeypatch):
    """The CLI's ``main()`` in this process (imports once: many cases stay fast); returns like ``cli``."""
    monkeypatch.delenv("STREAMTUNE_HOME", raising=False)  # main() exports --home; undone after the test

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["streamtune", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def assert_refused(out, *expected: str) -> str:
    """Exit 2, exactly an ``error:`` line naming ``expected`` and a ``hint:`` line, no traceback."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), out.stderr
    for part in expected:
        assert part in lines[0], (part, lines[0])
    return lines[0]


BAD_SETTINGS = {
    "wrong type": ('[train]\nepochs = "three"\n', "[train] epochs: expected float, got 'three'"),
    "misspelled key": ("[train]\nepoch = 3\n", "[train] unknown key(s) ['epoch']"),
    "TOML syntax error": ("[train\nepochs = 1\n", "not valid TOML"),
}


@pytest.mark.parametrize("command", [["status"], ["run", "--until-idle", "--timeout", "30"]], ids=["status", "run"])
@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_settings_that_do_not_validate_are_one_line_naming_the_file_and_exit_2(tmp_path, streamtune, command, case):
    content, expected = BAD_SETTINGS[case]
    home = tmp_path / "home"
    home.mkdir()
    toml = home / "streamtune.toml"
    toml.write_text(content)
    out = streamtune(*command, "--home", str(home))
    assert_refused(out, f"error: {toml}: ", expected)
    assert [p.name for p in home.iterdir()] == ["streamtune.toml"]  # nothing created (no warehouse, no instance)


def test_bad_settings_exit_2_from_the_process_for_status_and_run(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "streamtune.toml").write_text(BAD_SETTINGS["misspelled key"][0])
    for command in (["status"], ["run", "--until-idle", "--timeout", "30"]):
        assert_refused(cli(*command, "--home", str(home)), "[train] unknown key(s) ['epoch']")
    assert [p.name for p in home.iterdir()] == ["streamtune.toml"]


MISSING_HOME_COMMANDS = {
    "status": ["status"],
    "status --json": ["status", "--json"],
    "rollback": ["rollback", "--to", "1"],
    "forget": ["forget", "--id", "REC-1"],
    "quarantine list": ["quarantine", "list"],
    "quarantine release": ["quarantine", "release", "--window", "w-01", "--rule", "text_too_long"],
    "quarantine purge": ["quarantine", "purge"],
    "ui": ["ui", "--dagster-port", "1", "--mlflow-port", "1"],
}


@pytest.mark.parametrize("name", list(MISSING_HOME_COMMANDS))
def test_a_missing_home_is_an_error_and_is_never_created(tmp_path, streamtune, name):
    home = tmp_path / "no-such-home"
    out = streamtune(*MISSING_HOME_COMMANDS[name], "--home", str(home))
    assert_refused(out, f"streamtune home {home} does not exist")
    assert not home.exists()


def test_the_home_from_the_environment_and_a_home_that_is_a_file_are_checked_too(tmp_path, streamtune, monkeypatch):
    monkeypatch.setenv("STREAMTUNE_HOME", str(tmp_path / "gone"))
    assert_refused(streamtune("status"), f"streamtune home {tmp_path / 'gone'} does not exist")
    assert not (tmp_path / "gone").exists()
    (tmp_path / "file").write_text("not a home\n")
    assert_refused(streamtune("quarantine", "list", "--home", str(tmp_path / "file")), "is not a directory")
    assert_refused(streamtune("run", "--until-idle", "--home", str(tmp_path / "file")), "is not a directory")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home with two ingested and curated windows (real DuckDB), one row of each quarantined."""
    settings = tiny_home(tmp_path_factory.mktemp("bad-input") / "home", quality={"max_chars": 300})
    wh = Warehouse(settings.paths.warehouse)
    wh.init_schema()
    for i in (0, 1):
        key = f"w-0{i + 1}"
        write_window(
            settings.paths.landing, f"{key}.jsonl", [*window_records(i, 6), {"id": f"long{i}", "text": "x" * 400}]
        )
        ingest_window(settings, wh, key, file_hint=f"{key}.jsonl", dagster_run_id="test")
        curate(settings, wh, key)
    assert wh.window_counts("w-01").quarantined_rows == 1
    return settings


def snapshot(settings) -> dict:
    """Every warehouse table's row count, and the home's top-level entries."""
    with Warehouse(settings.paths.warehouse).connect(read_only=True) as con:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_catalog = 'warehouse'"
        ).fetchall()
        counts = {f"{s}.{t}": con.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchall()[0][0] for s, t in tables}
    return {"tables": counts, "home": sorted(p.name for p in settings.home.iterdir())}


@pytest.mark.parametrize(
    "args",
    [
        ["--where", "id = ''"],
        ["--where", 'id = "   "'],
        ["--where", "package = ''"],
        ["--id", "  "],
        ["--id", ""],
        ["--id", "w0-1", "--where", "text = ' '"],
    ],
    ids=["where-empty", "where-spaces", "where-metadata-empty", "id-spaces", "id-empty", "one-of-two-empty"],
)
def test_forget_refuses_empty_values_and_records_no_request(home, streamtune, args):
    before = snapshot(home)
    out = streamtune("forget", "--home", str(home.home), *args)
    assert_refused(out, "is empty")
    after = snapshot(home)
    assert after == before
    assert "monitor.forget_requests" not in after["tables"] or after["tables"]["monitor.forget_requests"] == 0
    assert "forget" not in after["home"]  # no request report written


@pytest.mark.parametrize("command", ["release", "purge"])
def test_quarantine_of_an_unknown_window_is_an_error_and_changes_nothing(home, streamtune, command):
    before = snapshot(home)
    extra = ["--rule", "text_too_long"] if command == "release" else ["--days", "1000"]
    out = streamtune("quarantine", command, "--home", str(home.home), "--window", "w-99", *extra)
    assert_refused(out, "no window 'w-99'")
    assert snapshot(home) == before
    # a known window still works (nothing old enough to purge; the long row still fails max_chars)
    known = streamtune("quarantine", command, "--home", str(home.home), "--window", "w-01", *extra)
    assert known.returncode == 0, known.stderr
    assert snapshot(home)["tables"] == before["tables"]


NEEDS_TOOL = """
import pytest


@pytest.mark.requires_tool("no-such-tool", False, "apt-get install no-such-tool")
def test_marked():
    pass


@pytest.fixture
def server(require_tool):
    require_tool("no-such-server", False, "apt-get install no-such-server")


def test_fixture(server):
    pass
"""


def test_a_missing_tool_skips_locally_and_fails_when_ci_is_set(pytester, monkeypatch):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_needs_tool=NEEDS_TOOL)
    monkeypatch.delenv("CI", raising=False)
    local = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    local.assert_outcomes(skipped=2)
    local.stdout.fnmatch_lines(["*no-such-tool is not available (apt-get install no-such-tool)*"])
    monkeypatch.setenv("CI", "1")
    ci = pytester.runpytest("-p", "no:cacheprovider")
    ci.assert_outcomes(errors=2)  # a failure in setup is an error
    ci.stdout.fnmatch_lines(["*CI is set, so a missing tool fails instead of skipping*"])
