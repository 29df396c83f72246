"""Deletion requests end to end: windows run through the assets by the real daemon, then
``streamtune forget`` (CLI) deletes records everywhere, marks the MLflow versions, rolls the champion back,
queues a retrain on the home's Dagster instance, and the daemon's retrain produces a model without them."""

import json
import os
import subprocess
import sys

import duckdb
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window

from orchestration.cli.daemon import Daemon, open_instance
from orchestration.pipeline.forget import ForgetError, parse_where
from orchestration.sources.landing import replay
from orchestration.store.warehouse import Warehouse

ROW_TABLES = ("raw.events", "curated.events", "curated.quarantine", "train.replay_buffer")


def test_where_is_parsed_into_one_field_and_one_literal_value():
    assert parse_where("package = pkg3") == ("package", "pkg3")
    assert parse_where("package='a b'") == ("package", "a b")
    assert parse_where('id = "x\\"y"') == ("id", 'x"y')
    assert parse_where("author == 'O\\'Brien; DROP TABLE raw.events'") == ("author", "O'Brien; DROP TABLE raw.events")
    for bad in (
        "package = 'x' OR 1=1",
        "1 = 1",
        "package = x; DROP TABLE raw.events",
        "a = b = c",
        "package",
        "package = 'unterminated",
        "metadata->>'x' = 1",
        "",
    ):
        with pytest.raises(ForgetError):
            parse_where(bad)


def _cli(home, *args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli.app", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"streamtune {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _count(con, table, ids):
    return con.execute(f"SELECT count(*) FROM {table} WHERE list_contains(?, record_id)", [ids]).fetchall()[0][0]


@pytest.mark.slow
def test_forget_deletes_everywhere_marks_versions_and_the_daemon_retrains_without_them(tmp_path):
    settings = tiny_home(tmp_path / "home", max_windows_per_update=1, drift={"enabled": False})
    source = tmp_path / "stream"
    bad_ts = json.dumps({"id": "bad-ts", "text": "Fast parser", "ts": "not a date", "package": "pkg3"})
    write_window(source, "f-2025-01.jsonl", window_records(0, 50), extra_lines=[bad_ts])
    write_window(source, "f-2025-02.jsonl", window_records(1, 50))
    with Daemon(settings) as daemon:
        replay(source, settings.paths.landing)
        first = daemon.wait_until_idle(timeout_s=900)
    assert first.failures == []

    wh = Warehouse(settings.paths.warehouse)
    client = MlflowClient(settings.tracking_uri)
    name = settings.model_name
    assert sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'")) == [1, 2, 3]
    champion_before = str(client.get_model_version_by_alias(name, "champion").version)
    # package "pkg3" is row 4 of each window (ids w0-3, w1-3); w1-10 is asked for by id
    gone = ["w0-3", "w1-3", "w1-10"]
    with wh.connect(read_only=True) as con:
        before = {t: _count(con, t, gone) for t in ROW_TABLES}
        trained_on = {
            v
            for (v,) in con.execute(
                "SELECT DISTINCT model_version FROM train.ledger WHERE list_contains(?, record_id)", [gone]
            ).fetchall()
        }
        total_raw = con.execute("SELECT count(*) FROM raw.events").fetchall()[0][0]
    assert before["raw.events"] == 3 and before["curated.events"] == 3 and trained_on == {"2", "3"}

    # the field must be known; the value is a literal (an injection attempt matches nothing)
    bad = _cli(settings.home, "forget", "--where", "nosuchfield = 1", check=False)
    assert bad.returncode == 1 and "unknown field 'nosuchfield'" in bad.stderr and "package" in bad.stderr
    inj = json.loads(_cli(settings.home, "forget", "--where", "package = \"x' OR '1'='1\"", "--json").stdout)
    assert inj["records"] == [] and inj["deleted"]["raw.events"] == 0 and inj["trained_versions"] == []
    dry = json.loads(
        _cli(settings.home, "forget", "--where", "package = pkg3", "--id", "w1-10", "--dry-run", "--json").stdout
    )
    assert sorted(dry["record_ids"]) == sorted(gone) and dry["deleted"]["raw.rejects"] == 1
    with wh.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.events").fetchall()[0][0] == total_raw  # dry run: untouched

    # curated windows' files sit in the landing archive (landing_retention = "archive"), the rest in landing/
    landed = [*settings.paths.landing.iterdir(), *settings.paths.landing_archive.iterdir()]
    assert sorted(p.name for p in landed) == ["f-2025-01.jsonl", "f-2025-02.jsonl"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in landed}
    out = _cli(
        settings.home, "forget", "--where", "package = pkg3", "--id", "w1-10", "--reason", "user request", "--json"
    )
    report = json.loads(out.stdout)

    # deleted from every table, counted in the report
    assert sorted(report["record_ids"]) == sorted(gone)
    assert report["deleted"]["raw.events"] == 3 and report["deleted"]["raw.rejects"] == 1
    assert report["deleted"]["curated.events"] + report["deleted"]["curated.quarantine"] == 3
    assert report["deleted"]["train.replay_buffer"] == before["train.replay_buffer"]
    with wh.connect(read_only=True) as con:
        assert {t: _count(con, t, gone) for t in ROW_TABLES} == dict.fromkeys(ROW_TABLES, 0)
        assert con.execute("SELECT count(*) FROM raw.rejects WHERE raw LIKE '%\"pkg3\"%'").fetchall() == [(0,)]
        for table in ("raw.staged_text", "curated.events", "curated.quarantine"):
            assert con.execute(f"SELECT count(*) FROM {table} WHERE metadata LIKE '%\"pkg3\"%'").fetchall() == [(0,)]
        assert con.execute("SELECT sum(source_rows) FROM raw.windows").fetchall()[0][0] == total_raw + 1 - 4
        req = con.execute(
            "SELECT request_id, reason, criteria, trained_versions, status, record_ids "
            "FROM monitor.forget_requests ORDER BY requested_at"
        ).fetchall()
        retired = {v for (v,) in con.execute("SELECT model_version FROM train.retired_versions").fetchall()}
        ledger_kept = con.execute(
            "SELECT count(*) FROM train.ledger WHERE list_contains(?, record_id)", [gone]
        ).fetchall()[0][0]
    # two requests on record: the injection attempt (matched nothing, nothing to retrain) and this one
    assert [(r[0], r[4]) for r in req] == [
        (inj["request_id"], "retrain_not_needed"),
        (report["request_id"], "retrain_requested"),
    ]
    req = req[1]
    assert req[1] == "user request" and "pkg3" not in req[2] and sorted(req[3]) == ["2", "3"]
    assert sorted(req[5]) == sorted(gone)
    assert retired == {"2", "3"} and ledger_kept > 0  # the ledger stays as the audit trail (ids, no text)
    assert wh.pending_windows() == ["f-2025-01", "f-2025-02"]

    # landing files and snapshots no longer hold them; landing mtimes unchanged (no re-ingest)
    for p in [*settings.paths.landing.iterdir(), *settings.paths.landing_archive.iterdir()]:
        assert '"pkg3"' not in p.read_text() and '"w1-10"' not in p.read_text() and '"pkg30"' in p.read_text()
        assert p.stat().st_mtime_ns == mtimes[p.name]
    snap = pl.concat([pl.read_parquet(f) for f in settings.paths.snapshots.glob("*/*.parquet")])
    assert snap.filter(pl.col("record_id").is_in(gone)).height == 0

    # MLflow: every version trained on them is tagged; the champion moved back to the clean base
    for v in ("2", "3"):
        tags = client.get_model_version(name, v).tags
        assert tags["streamtune.contains_deleted"] == "true" and tags["streamtune.retired"] == "true"
        assert report["request_id"] in tags["streamtune.forget_requests"]
    # their files are deleted through MLflow (weights, optimizer state, samples, snapshot manifest); the
    # version entries and their tags stay as the audit trail
    for v in ("2", "3"):
        mv = client.get_model_version(name, v)
        assert mv.tags["streamtune.artifacts_deleted"] == report["request_id"]
        assert client.list_artifacts(mv.run_id) == []
        if mv.model_id:  # versions registered from a logged model (MLflow 3); else the run's artifacts above
            assert client.list_logged_model_artifacts(mv.model_id) == []
    assert not any((settings.paths.models / "registry" / f"v{v}").exists() for v in ("2", "3"))
    assert report["champion_before"] == champion_before and report["champion_after"] == "1"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    with wh.connect(read_only=True) as con:
        rb = con.execute("SELECT from_version, to_version, reason FROM train.rollbacks").fetchall()
    assert rb == [
        (
            champion_before,
            "1",
            f"forget request {report['request_id']}: v{champion_before} was trained on deleted records",
        )
    ]

    # the retrain request: two finetune runs queued on the home's instance (max_windows_per_update = 1)
    assert len(report["retrain_run_ids"]) == 2 and report["retrain_windows"] == ["f-2025-01", "f-2025-02"]
    with open_instance(settings) as instance:
        for run_id in report["retrain_run_ids"]:
            run = instance.get_run_by_id(run_id)
            assert run.job_name == "finetune" and run.status.value == "QUEUED"
            assert run.tags["streamtune/trigger"] == "forget"
            assert run.tags["streamtune/forget_request"] == report["request_id"]
    assert (settings.home / "forget" / f"{report['request_id']}.json").is_file()

    # the daemon picks the queued runs up: new versions trained without the records, champion clean again
    with Daemon(settings) as daemon:
        second = daemon.wait_until_idle(timeout_s=900)
    assert second.failures == []
    with open_instance(settings) as instance:
        assert {instance.get_run_by_id(r).status.value for r in report["retrain_run_ids"]} == {"SUCCESS"}
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    assert versions == [1, 2, 3, 4, 5]
    with duckdb.connect(str(settings.paths.warehouse), read_only=True) as con:
        new_ledger = con.execute(
            "SELECT count(*) FROM train.ledger WHERE model_version IN ('4', '5') AND list_contains(?, record_id)",
            [gone],
        ).fetchall()[0][0]
        updates = con.execute(
            "SELECT model_version, parent_version, window_keys, trigger FROM train.updates "
            "WHERE model_version IN ('4', '5') ORDER BY created_at"
        ).fetchall()
    assert new_ledger == 0
    assert updates[0] == ("4", "1", ["f-2025-01"], "forget") and updates[1][2:] == (["f-2025-02"], "forget")
    assert wh.pending_windows() == []
    champion = str(client.get_model_version_by_alias(name, "champion").version)
    assert champion in {"4", "5"} and "streamtune.contains_deleted" not in client.get_model_version(name, champion).tags
