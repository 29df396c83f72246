"""The gate through real Dagster runs: per-rule metadata, Data Docs, window checks, dedup against
recent windows, and `streamtune quarantine list|release` after a rule fix."""

import json
import subprocess
import sys

import dagster as dg
from st_helpers import TINY_SETTINGS, tiny_home, write_window

from assets.checks import WINDOW_CHECKS
from assets.curate import approved_window, curated_window
from assets.ingest import raw_window
from orchestration.config.settings import load_settings, write_settings
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.resources import build_resources
from orchestration.store.warehouse import Warehouse

INGEST = [raw_window, curated_window, approved_window, *WINDOW_CHECKS]


def unique_records(index, n):
    return [
        {"id": f"w{index}-{i}", "text": f"window {index} record {i}: {word} tooling for {thing} teams"}
        for i, (word, thing) in enumerate(
            zip(["async", "fast", "typed", "tiny", "safe"] * 20, ["data", "cloud", "web", "ml", "audio", "graph"] * 20)
        )
        if i < n
    ]


def ingest(settings, instance, name, records, extra_lines=()):
    write_window(settings.paths.landing, name, records, extra_lines)
    key = name.rsplit(".", 1)[0]
    instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
    return key, dg.materialize(
        INGEST, partition_key=key, resources=build_resources(settings), instance=instance, raise_on_error=False
    )


def test_metadata_docs_checks_and_cross_window_dedup(tmp_path):
    home = tiny_home(tmp_path / "home", quality={"dedup_exact": True, "near_dup_threshold": 0.85, "max_chars": 300})
    base = "Command line tool to manage kubernetes deployments across many clusters with ease and safety"
    first = unique_records(1, 20) + [{"id": "base", "text": base}]
    second = unique_records(2, 20) + [
        {"id": "near", "text": base + "!"},  # near duplicate of window 1 row 21 (cross-window MinHash)
        {"id": "again", "text": first[3]["text"].upper()},  # exact duplicate of window 1 row 4
        {"id": "dup", "text": "window 2 record 0: async tooling for data teams"},  # exact, within window
        {"id": "mail", "text": "contact jane.roe.1987@example.org for access"},
        {
            "id": "key",
            "text": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
        },
        {"id": "long", "text": "x" * 400},
    ]
    with dg.instance_for_test() as instance:
        k1, r1 = ingest(home, instance, "q-01.jsonl", first)
        k2, r2 = ingest(home, instance, "q-02.jsonl", second, extra_lines=['{"text": "bad json from 10.20.30.40'])
        assert r1.success and r2.success
        checks = {e.check_name: e.passed for e in r2.get_asset_check_evaluations()}
        assert checks["pii_free"] and checks["window_expectations"] and checks["rows_conserved"]
        meta = {k: v.value for k, v in r2.asset_materializations_for_node("curated_window")[0].metadata.items()}
    assert meta["dagster/row_count"] == 21
    assert meta["quarantined_by_rule"] == {
        "duplicate_exact": 2,
        "duplicate_near": 1,
        "pii_private_key": 1,
        "text_too_long": 1,
    }
    assert meta["redactions_by_entity"] == {"EMAIL_ADDRESS": 1}
    assert meta["duplicates_exact"] == 2 and meta["duplicate_rate"] > 0
    docs = meta["gx_data_docs"]
    assert docs.endswith("index.html") and (home.paths.data_docs / k2 / "index.html").exists()
    assert len(list((home.paths.data_docs / k2 / "validations").rglob("*.html"))) == 1  # the window's validation
    docs_text = "".join(p.read_text(errors="ignore") for p in (home.paths.data_docs / k2).rglob("*.html"))
    assert "jane.roe" not in docs_text and "MIIEvQ" not in docs_text and "window 2 record" not in docs_text

    wh = Warehouse(home.paths.warehouse)
    q = wh.quarantine_rows(k2)
    links = {
        (r["rule"], r["duplicate_of_window"], r["duplicate_of_row"])
        for r in q.iter_rows(named=True)
        if r["rule"] == "duplicate_exact"
    }
    assert links == {("duplicate_exact", k1, 4), ("duplicate_exact", k2, 1)}
    near = q.filter(q["rule"] == "duplicate_near")
    assert near.select("record_id", "duplicate_of_window", "duplicate_of_row").rows() == [("near", k1, 21)]
    with wh.connect(read_only=True) as con:
        assert "text" not in {
            c
            for (c,) in con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'raw' AND table_name = 'events'"
            ).fetchall()
        }
        # the window is curated: its staged raw text is gone (the PII boundary)
        raw_texts = [
            t for (t,) in con.execute("SELECT text FROM raw.staged_text WHERE window_key = ?", [k2]).fetchall()
        ]
        assert raw_texts == []
        rejects = [r for (r,) in con.execute("SELECT raw FROM raw.rejects WHERE window_key = ?", [k2]).fetchall()]
    assert not any(t and ("jane.roe" in t or "MIIEvQ" in t) for t in raw_texts)
    assert rejects == ['{"text": "bad json from <IP_ADDRESS>']


def cli(*args):
    return subprocess.run([sys.executable, "-m", "orchestration.cli.app", *args], capture_output=True, text=True)


def test_quarantine_list_and_release_after_a_rule_fix(tmp_path):
    home = tiny_home(tmp_path / "home", quality={"max_chars": 60})
    records = unique_records(1, 10) + [{"id": f"long{i}", "text": f"long record {i} " + "word " * 20} for i in range(3)]
    with dg.instance_for_test() as instance:
        key, result = ingest(home, instance, "r-01.jsonl", records)
        assert result.success
    wh = Warehouse(home.paths.warehouse)
    assert wh.window_counts(key).quarantined_rows == 3

    out = cli("quarantine", "list", "--home", str(home.home), "--window", key, "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert [r["rule"] for r in listed] == ["text_too_long"] * 3 and "text" not in listed[0]

    # still failing: nothing moves
    out = cli("quarantine", "release", "--home", str(home.home), "--window", key, "--rule", "text_too_long")
    assert out.returncode == 0, out.stderr
    assert "0 released" in out.stdout and wh.window_counts(key).quarantined_rows == 3

    # fix the rule, release, release again (idempotent)
    values = {"quality": {"max_chars": 2000}, **TINY_SETTINGS}
    write_settings(home.home, values)
    assert load_settings(home.home).quality.max_chars == 2000
    for expected in ("3 released", "0 released"):
        out = cli("quarantine", "release", "--home", str(home.home), "--window", key, "--rule", "text_too_long")
        assert out.returncode == 0, out.stderr
        assert expected in out.stdout
        c = wh.window_counts(key)
        assert (c.curated_rows, c.quarantined_rows, c.parsed_rows) == (13, 0, 13)
    assert wh.window_report().filter(key == wh.window_report()["window_key"])["curated_rows"].to_list() == [13]
