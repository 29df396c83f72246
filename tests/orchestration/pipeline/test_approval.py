"""Approval mode: a gate-passing challenger waits under `challenger` until `streamtune promote` / `reject`.

Real DuckDB warehouse and real MLflow registry (sqlite) in a temporary home; the CLI's `main()` in this process.
Bad input (unknown version, one the gate rejected, one never held, one already decided) is refused with one
line and exit status 2 and changes nothing: row counts, aliases and version tags are compared before/after.
"""

import json
import subprocess
import sys

import polars as pl
import pytest
from st_helpers import tiny_home

from orchestration.cli.app import main
from orchestration.config.profiles import open_registry
from orchestration.pipeline.approval import ApprovalError, decide, settle_champion
from orchestration.pipeline.lineage import PARENT_TAG
from orchestration.pipeline.snapshot import SnapshotManifest
from orchestration.pipeline.update import UpdateResult
from orchestration.store.approvals import ApprovalTables
from orchestration.store.warehouse import Warehouse
from quality.schema import RAW_SCHEMA, REJECT_SCHEMA

MANIFEST = SnapshotManifest("s", "/nowhere/s", ["w-01"], {"train": 1}, "abc", "2026-01-01T00:00:00+00:00")


def update(version: str, promote: bool) -> UpdateResult:
    reason = "new-window bits/byte 3 -> 2.9: ok" if promote else "new-window bits/byte 3 -> 3.1: FAIL"
    return UpdateResult(version, f"run{version}", "1", {}, promote, reason, {}, MANIFEST, {})


def record(wh: Warehouse, u: UpdateResult) -> None:
    """The train.updates row model_update writes for ``u`` (one ledger row)."""
    ledger = pl.DataFrame({"window_key": ["w-01"], "row_number": [0], "record_id": ["r0"], "role": ["train"]})
    wh.record_update(
        model_version=u.version,
        mlflow_run_id=u.mlflow_run_id,
        parent_version="1",
        snapshot_id="s",
        window_keys=["w-01"],
        ledger=ledger,
        metrics={},
        promoted=u.promote,
        reason=u.reason,
        trigger="manual",
        dagster_run_id=None,
    )


@pytest.fixture
def home(tmp_path):
    """Versions 1 (champion) .. 4 registered; v2 and v4 passed the gate (held), v3 the gate rejected."""
    settings = tiny_home(tmp_path / "home", gate={"require_approval": True})
    wh = Warehouse(settings.paths.warehouse)
    wh.init_schema()
    registry = open_registry(settings)
    registry.client.create_registered_model(settings.model_name)
    for v in range(1, 5):
        (tmp_path / f"m{v}").mkdir()
        registry.client.create_model_version(settings.model_name, source=(tmp_path / f"m{v}").as_uri())
    registry.set_alias("champion", "1")
    for version, promote in (("2", True), ("3", False), ("4", True)):
        u = update(version, promote)
        record(wh, u)
        registry.set_alias("challenger", version)
        if promote:  # champion_model runs only when the blocking gate check passed
            settle_champion(registry, wh, u, require_approval=True, dagster_run_id=f"dagster-{version}")
    return settings, wh, registry


def state(settings, wh, registry) -> dict:
    """Everything a decision may change: approval rows, row counts, aliases, version tags."""
    aliases = dict(registry.client.get_registered_model(settings.model_name).aliases)
    tags = {v: registry.version_tags(v) for v in ("1", "2", "3", "4")}
    with wh.connect(read_only=True) as con:
        counts = {t: con.execute(f"SELECT count(*) FROM train.{t}").fetchone()[0] for t in TABLES}
    approvals = ApprovalTables(wh.path).approvals().to_dicts()
    return {"approvals": approvals, "counts": counts, "aliases": aliases, "tags": tags}


TABLES = ("approvals", "updates", "rollbacks")


def test_a_gate_passing_challenger_waits_and_the_champion_stays(home):
    settings, wh, registry = home
    assert registry.version_for_alias("champion") == "1"
    assert registry.version_for_alias("challenger") == "4"
    rows = ApprovalTables(wh.path).approvals()
    assert rows["model_version"].to_list() == ["2", "4"] and set(rows["status"]) == {"pending"}
    assert rows["champion_before"].to_list() == ["1", "1"]
    assert registry.version_tags("2")["approval.status"] == "pending"
    assert "approval.status" not in registry.version_tags("3")  # the gate rejected it: never held


def test_without_approval_mode_the_champion_moves_at_once(tmp_path):
    settings = tiny_home(tmp_path / "home")
    wh = Warehouse(settings.paths.warehouse)
    wh.init_schema()
    registry = open_registry(settings)
    registry.client.create_registered_model(settings.model_name)
    registry.client.create_model_version(settings.model_name, source=tmp_path.as_uri())
    out = settle_champion(registry, wh, update("1", True), require_approval=False, dagster_run_id=None)
    assert out.moved and out.champion == "1" and out.pending == []
    assert ApprovalTables(wh.path).approvals().height == 0


def test_promote_moves_champion_and_records_who_why_when(home):
    settings, wh, registry = home
    done = decide(registry, wh, "v4", "promote", decided_by="alice", reason="reviewed eval sets")
    assert (done.champion_before, done.champion_after) == ("1", "4")
    assert registry.version_for_alias("champion") == "4"
    assert registry.version_for_alias("challenger") is None  # the alias left the decided version
    tags = registry.version_tags("4")
    assert tags["approval.status"] == "promoted" and tags["approval.by"] == "alice"
    assert tags["approval.reason"] == "reviewed eval sets" and tags["approval.champion_before"] == "1"
    row = ApprovalTables(wh.path).approval("4")
    assert row["status"] == "promoted" and row["decided_by"] == "alice" and row["decided_at"] is not None
    assert ApprovalTables(wh.path).approval("2")["status"] == "pending"  # the other stays pending


def test_reject_keeps_the_champion(home):
    settings, wh, registry = home
    decide(registry, wh, "2", "reject", decided_by="bob", reason="too small an eval")
    assert registry.version_for_alias("champion") == "1"
    assert registry.version_for_alias("challenger") == "4"  # v4 holds it, not v2
    assert registry.version_tags("2")["approval.status"] == "rejected"
    assert ApprovalTables(wh.path).approval("2")["reason"] == "too small an eval"


@pytest.fixture
def streamtune(capsys, monkeypatch):
    monkeypatch.delenv("STREAMTUNE_HOME", raising=False)

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


BAD = {
    "unknown version": (["promote", "--version", "99"], "model version 99 of 'streamtune-lm' does not exist"),
    "rejected by the gate": (["promote", "--version", "3"], "v3 was rejected by the promotion gate (new-window"),
    "never held": (["promote", "--version", "1"], "v1 is not waiting for approval"),
    "reject without a reason": (["reject", "--version", "2", "--reason", " "], "needs who (--by) and why"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(home, streamtune, name):
    settings, wh, registry = home
    before = state(settings, wh, registry)
    args, message = BAD[name]
    out = streamtune(*args, "--home", str(settings.home))
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert lines[1].startswith("hint: ") and "Traceback" not in out.stderr
    assert state(settings, wh, registry) == before


def test_cli_promote_then_the_same_decision_again_is_refused(home, streamtune):
    settings, wh, registry = home
    out = streamtune("promote", "--version", "2", "--by", "carol", "--reason", "ok", "--home", str(settings.home))
    assert out.returncode == 0, out.stderr
    assert "v2 promoted by carol (ok); champion: v1 -> v2" in out.stdout
    before = state(settings, wh, registry)
    again = streamtune("reject", "--version", "2", "--reason", "changed my mind", "--home", str(settings.home))
    assert again.returncode == 2
    assert "v2 was already promoted by carol at " in again.stderr
    assert state(settings, wh, registry) == before
    listed = streamtune("approvals", "--json", "--home", str(settings.home))
    assert [(r["model_version"], r["status"]) for r in json.loads(listed.stdout)] == [
        ("2", "promoted"),
        ("4", "pending"),
    ]


def test_a_decision_raises_approval_error_for_an_unknown_version(home):
    settings, wh, registry = home
    with pytest.raises(ApprovalError, match="does not exist"):
        decide(registry, wh, "42", "promote", decided_by="x", reason="y")


def test_promoting_a_challenger_whose_parent_is_no_longer_champion_is_refused(home, streamtune):
    """v2 and v4 were both trained from v1; once v2 is promoted, promoting v4 would drop v2's training."""
    settings, wh, registry = home
    ok = streamtune("promote", "--version", "2", "--by", "carol", "--reason", "ok", "--home", str(settings.home))
    assert ok.returncode == 0, ok.stderr
    before = state(settings, wh, registry)
    out = streamtune("promote", "--version", "4", "--by", "carol", "--reason", "ok", "--home", str(settings.home))
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("error: v4 was trained from v1, but the champion is now v2"), lines[0]
    assert "streamtune reject --version 4" in lines[1] and "streamtune rollback --to 4" in lines[1], lines[1]
    assert state(settings, wh, registry) == before
    assert ApprovalTables(wh.path).approval("4")["status"] == "pending"
    # rejecting the stale challenger is still allowed, and the champion stays
    out = streamtune("reject", "--version", "4", "--reason", "stale parent", "--home", str(settings.home))
    assert out.returncode == 0, out.stderr
    assert registry.version_for_alias("champion") == "2"


def test_promotion_is_allowed_again_once_the_parent_is_champion(home):
    settings, wh, registry = home
    decide(registry, wh, "2", "promote", decided_by="alice", reason="ok")
    with pytest.raises(ApprovalError, match="champion is now v2") as refused:
        decide(registry, wh, "4", "promote", decided_by="alice", reason="ok")
    assert "rollback --to 4" in refused.value.hint
    registry.rollback_champion("1", "v2 regressed", actor="alice")
    done = decide(registry, wh, "4", "promote", decided_by="alice", reason="ok")
    assert (done.champion_before, done.champion_after) == ("1", "4")


def test_the_parent_version_tag_decides_before_the_updates_table(home):
    """A challenger tagged as trained from v2 (ahead of champion v1) would move the lineage sideways: refused."""
    settings, wh, registry = home
    registry.tag_version("4", {PARENT_TAG: "2"})
    before = state(settings, wh, registry)
    with pytest.raises(ApprovalError, match="v4 was trained from v2, but the champion is now v1"):
        decide(registry, wh, "4", "promote", decided_by="alice", reason="ok")
    assert state(settings, wh, registry) == before
    decide(registry, wh, "2", "promote", decided_by="alice", reason="ok")  # v2's own parent (v1) is champion


def test_status_shows_held_challengers_as_pending_or_rejected(home, streamtune):
    """``streamtune status``: a window whose update waits for approval reads "pending", a rejected one
    "rejected", a promoted one "yes" (train.updates says promoted = true for all: they passed the gate)."""
    settings, wh, registry = home
    empty = {"rows": pl.DataFrame(schema=RAW_SCHEMA), "rejects": pl.DataFrame(schema=REJECT_SCHEMA)}
    wh.replace_raw_window(
        "w-01", **empty, file_name="w-01.jsonl", file_sha256="x", file_mtime_ns=1, dagster_run_id=None
    )
    wh.approve_window("w-01", None)  # the fixture's three updates all trained w-01
    decide(registry, wh, "4", "reject", decided_by="bob", reason="no")

    def shown() -> tuple[dict, dict]:
        data = json.loads(streamtune("status", "--json", "--home", str(settings.home)).stdout)
        table = streamtune("status", "--home", str(settings.home)).stdout
        cells = [[c.strip() for c in line.split("│")] for line in table.splitlines() if "w-01" in line]
        return {w["model_version"]: w["approval"] for w in data["windows"]}, {c[-4]: c[-3] for c in cells}

    assert shown() == ({"2": "pending", "3": None, "4": "rejected"}, {"2": "pending", "3": "no", "4": "rejected"})
    decide(registry, wh, "2", "promote", decided_by="bob", reason="yes")
    assert shown()[1] == {"2": "yes", "3": "no", "4": "rejected"}
