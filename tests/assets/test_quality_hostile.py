"""The committed hostile corpus (data/hostile/) end to end: landing sensor -> ingest run per file.

For every file: source rows = curated + quarantined + rejected, every rejected/quarantined row has
a reason, the outcome matches data/hostile/expected.json, other windows are unaffected by a rerun,
and a rerun gives identical tables. An unreadable file fails its run naming the file and cause."""

import json
import os
import shutil
import sys
from pathlib import Path

import dagster as dg
from st_helpers import tiny_home

from assets.checks import WINDOW_CHECKS
from assets.curate import approved_window, curated_window
from assets.ingest import raw_window
from orchestration.definitions import build_definitions
from orchestration.resources import StreamtuneResource, build_resources
from orchestration.sensors import build_landing_sensor
from orchestration.store.warehouse import Warehouse

HOSTILE = Path(__file__).resolve().parents[2] / "data" / "hostile"
sys.path.insert(0, str(HOSTILE))
from build import write_big_line  # noqa: E402

INGEST = [raw_window, curated_window, approved_window, *WINDOW_CHECKS]
ORDER = ["bom-crlf.jsonl"]  # the original must land before its re-delivered copy


def snapshot(wh, key):
    with wh.connect(read_only=True) as con:
        q = lambda sql: con.execute(sql, [key]).fetchall()  # noqa: E731
        return {
            "raw": q("SELECT row_number, record_id, ts FROM raw.events WHERE window_key = ? ORDER BY 1"),
            "staged": q("SELECT * FROM raw.staged_text WHERE window_key = ? ORDER BY row_number"),
            "rejects": q("SELECT * FROM raw.rejects WHERE window_key = ? ORDER BY row_number"),
            "curated": q("SELECT * FROM curated.events WHERE window_key = ? ORDER BY row_number"),
            "quarantine": q(
                "SELECT * EXCLUDE (gx_run_id, quarantined_at) FROM curated.quarantine "
                "WHERE window_key = ? ORDER BY row_number"
            ),
            "approved": q("SELECT curated_rows, quarantined_rows FROM curated.windows WHERE window_key = ?"),
        }


def failure_messages(result):
    return [
        str(e.event_specific_data.error.message)
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE
    ]


def test_hostile_corpus_end_to_end(tmp_path):
    expected = {k: v for k, v in json.loads((HOSTILE / "expected.json").read_text()).items() if not k.startswith("_")}
    home = tiny_home(tmp_path / "home")  # default quality settings: exact dedup on
    landing = home.paths.landing
    for p in (HOSTILE / "files").iterdir():
        shutil.copyfile(p, landing / p.name)
    write_big_line(landing)
    names = sorted(expected, key=lambda n: (n not in ORDER, n))
    assert sorted(p.name for p in landing.iterdir()) == sorted(names)
    for i, name in enumerate(names):
        os.utime(landing / name, ns=(10**18 + i, 10**18 + i))

    resources = build_resources(home)
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(
            instance=instance,
            instance_ref=instance.get_ref(),
            cursor=None,
            resources={"streamtune": StreamtuneResource(home=str(home.home))},
            definitions=build_definitions(home),
        )
        tick = build_landing_sensor(1).evaluate_tick(ctx)
        for req in tick.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        requests = {r.tags["streamtune/landing_file"]: r for r in tick.run_requests}
        assert list(requests) == names

        def run(name):
            req = requests[name]
            return dg.materialize(
                INGEST,
                partition_key=req.partition_key,
                resources=resources,
                instance=instance,
                tags=req.tags,
                raise_on_error=False,
            )

        results = {name: run(name) for name in names}
        wh = Warehouse(home.paths.warehouse)
        report = {r["file_name"]: r for r in wh.window_report().iter_rows(named=True)}
        for name, exp in expected.items():
            result, key = results[name], requests[name].partition_key
            if exp["run"] == "read_error":
                assert not result.success
                msgs = failure_messages(result)
                assert any(all(part in m for part in exp["message"]) for m in msgs), msgs
                assert name not in report  # nothing half-written
                continue
            checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
            if exp["run"] == "success":
                assert result.success, (name, checks, failure_messages(result))
            else:
                assert not result.success and checks[exp["failed_check"]] is False, (name, checks)
            r = report[name]
            got = {k: r[f"{k}_rows"] for k in ("source", "rejected", "curated", "quarantined")}
            assert got == {k: exp[k] for k in got}, (name, got)
            assert r["source_rows"] == r["curated_rows"] + r["quarantined_rows"] + r["rejected_rows"]
            assert checks["rows_conserved"] and checks["source_rows_accounted"], (name, checks)
            snap = snapshot(wh, key)
            assert all(row[-1] for row in snap["rejects"])  # every reject has an error
            rules = {row[6] for row in snap["quarantine"]}
            assert rules == set(exp.get("rules", [])), (name, rules)
            assert all(row[7] for row in snap["quarantine"])  # every quarantined row has a reason
            errors = [row[3] for row in snap["rejects"]]
            for part in exp.get("errors", []):
                assert any(part in e for e in errors), (name, part, errors)
            if name == "invalid-utf8.jsonl":  # U+FFFD in quarantine and rejects; the bad bytes nowhere
                (q,) = snap["quarantine"]
                assert "\ufffd" in q[3] and q[7] == "valid_utf8: invalid UTF-8 replaced by U+FFFD at byte 3 of text"
                assert "\ufffd" in snap["rejects"][0][2] and "\\x" not in snap["rejects"][0][2]
                mat = result.asset_materializations_for_node("curated_window")[0]
                assert mat.metadata["quarantined_by_rule"].value == {"valid_utf8": 1}
            if "same_file_as" in exp:
                mat = result.asset_materializations_for_node("raw_window")[0]
                assert mat.metadata["same_file_as"].value == exp["same_file_as"]
                assert all(row[-2] == exp["same_file_as"] for row in snap["quarantine"])

        # reruns are identical and leave every other window untouched
        keys = {n: requests[n].partition_key for n in names if expected[n]["run"] != "read_error"}
        before = {k: snapshot(wh, k) for k in keys.values()}
        for name in ("malformed-json.jsonl", "nul-bytes.jsonl", "bom-crlf redelivered.jsonl", "truncated.jsonl.gz"):
            again = run(name)
            assert again.success == results[name].success
        after = {k: snapshot(wh, k) for k in keys.values()}
        assert after == before
