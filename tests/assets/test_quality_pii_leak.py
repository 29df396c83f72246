"""Prove it: windows with injected PII of every kind go through ingest, the gate and a real
fine-tune (tiny model, sqlite MLflow store, Dagster instance stored inside the home); then every
artifact the system wrote is searched for the injected values. Only curated.quarantine may hold them."""

import json

import dagster as dg
import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window

from assets.checks import WINDOW_CHECKS
from assets.curate import approved_window, curated_window
from assets.ingest import raw_window
from assets.train import TRAINING_ASSETS, challenger_beats_champion
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.pipeline.forget import forget
from orchestration.resources import build_resources
from orchestration.store.warehouse import Warehouse

INGEST = [raw_window, curated_window, approved_window, *WINDOW_CHECKS]

# (value, text it is injected in); every value must be findable only in curated.quarantine.
INJECTED = {
    "EMAIL_ADDRESS": ("jane.roe.1987@example.org", "please mail jane.roe.1987@example.org about the release"),
    "PHONE_NUMBER": ("+1 (415) 555-0132", "support line +1 (415) 555-0132 weekdays"),
    "CREDIT_CARD": ("4111 1111 1111 1111", "paid with card 4111 1111 1111 1111 yesterday"),
    "US_SSN": ("536-22-8726", "my social security number is 536-22-8726 ok"),
    "IP_ADDRESS": ("203.0.113.77", "server at 203.0.113.77 is down"),
    "IBAN_CODE": ("DE89 3704 0044 0532 0130 00", "wire to DE89 3704 0044 0532 0130 00 today"),
    "API_KEY": ("ghp_R4nd0mT0k3nV4lu3F0rT35t1ng0000000000", "token ghp_R4nd0mT0k3nV4lu3F0rT35t1ng0000000000 leaked"),
    "AWS_KEY": ("AKIAQ7YX3EXAMPLEKEY9", "aws key AKIAQ7YX3EXAMPLEKEY9 in config"),
    "PRIVATE_KEY": (
        "MIIEowIBAAKCAQEAsecretmaterial",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretmaterial\n-----END RSA PRIVATE KEY-----",
    ),
}
META_VALUE = "bob.meta.leak@corp.example.com"  # PII in an extra field (metadata)
REJECT_VALUE = "carol.reject@example.net"  # PII in a line that cannot be parsed


def pii_records(index):
    # distinct texts per window: exact dedup (on by default) would otherwise quarantine window 2's copies
    return [
        {"id": f"pii{index}-{name}", "text": f"{text} (window {index})", "owner": META_VALUE}
        for name, (_, text) in INJECTED.items()
    ]


def values():
    return [v for v, _ in INJECTED.values()] + [META_VALUE, REJECT_VALUE]


def hits_in_bytes(data: bytes) -> list[str]:
    found = []
    for v in values():
        for enc in (v.encode(), json.dumps(v)[1:-1].encode(), v.encode("utf-16-le"), repr(v)[1:-1].encode()):
            if enc in data:
                found.append(v)
                break
    return found


def test_no_injected_pii_outside_quarantine(tmp_path):
    # Presidio in a forked worker process (as on 100k-row windows), here for every window
    home = tiny_home(tmp_path / "home", quality={"pii_workers": 1, "pii_parallel_min_candidates": 1})
    resources = build_resources(home)
    with dg.instance_for_test(temp_dir=str(home.paths.dagster_home)) as instance:
        for i in range(2):
            name = f"leak-0{i + 1}.jsonl"
            write_window(
                home.paths.landing,
                name,
                window_records(i, 60) + pii_records(i),
                extra_lines=[f'{{"text": "broken {REJECT_VALUE}'],
            )
            key = name.rsplit(".", 1)[0]
            instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
            r = dg.materialize(INGEST, partition_key=key, resources=resources, instance=instance)
            assert r.success
            checks = {e.check_name: e.passed for e in r.get_asset_check_evaluations()}
            assert checks["pii_free"], checks
            ft = dg.materialize(
                [*TRAINING_ASSETS, challenger_beats_champion],
                resources=resources,
                instance=instance,
                selection=TRAINING_ASSETS,
            )
            assert ft.success
        # Every event of every run through the instance API: materializations with their metadata,
        # asset check evaluations, step logs
        events = [e for run in instance.get_runs() for e in instance.all_logs(run.run_id)]
        kinds = {e.dagster_event.event_type for e in events if e.dagster_event is not None}
        assert {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION} <= kinds
        dump = str(events).encode()
        assert b"leak-01" in dump and b"redactions_by_entity" in dump  # the dump holds the metadata
        assert not hits_in_bytes(dump)

    wh = Warehouse(home.paths.warehouse)
    # the one place with raw values: the quarantined private keys are there, nothing else
    with wh.connect(read_only=True) as con:
        q = con.sql("SELECT rule, text FROM curated.quarantine").pl()
        assert set(q["rule"]) == {"pii_private_key"} and q.height == 2
        tables = [
            (s, t)
            for s, t in con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() WHERE NOT (schema_name = 'curated' AND "
                "table_name = 'quarantine')"
            ).fetchall()
        ]
        assert ("raw", "events") in tables and ("curated", "events") in tables
        dumped = {f"{s}.{t}": repr(con.sql(f'SELECT * FROM "{s}"."{t}"').fetchall()) for s, t in tables}
    redacted = wh.curated_rows(["leak-01"])["text"].to_list()
    assert any("<EMAIL_ADDRESS>" in t for t in redacted) and any("<CREDIT_CARD>" in t for t in redacted)
    leaks = {table: hits_in_bytes(text.encode()) for table, text in dumped.items()}
    assert not any(leaks.values()), leaks

    # every file the system wrote under the home, except the DuckDB file (holds the quarantine, its
    # tables were checked above) and the producer's input files in landing/
    files = [
        p
        for p in home.home.rglob("*")
        if p.is_file() and not p.name.startswith("warehouse.duckdb") and "landing" not in p.relative_to(home.home).parts
    ]
    kinds = {p.suffix for p in files}
    assert ".parquet" in kinds and ".safetensors" in kinds and ".db" in kinds and ".html" in kinds
    assert any(p.name == "tokenizer.json" for p in files)
    assert any("mlartifacts" in p.parts for p in files) and any("dagster" in p.parts for p in files)
    file_leaks = {}
    for p in files:
        data = p.read_bytes()
        if p.suffix == ".parquet":  # compressed pages: search the decoded values too
            data += repr(pl.read_parquet(p).to_dicts()).encode()
        found = hits_in_bytes(data)
        if found:
            file_leaks[str(p.relative_to(home.home))] = found
    assert not file_leaks, file_leaks


# -- forget: after a deletion request no copy of the record's text is left ------------------------------

MARK = "Zorblax quintessa ferrovine"  # the first three words (a sample prompt) of every forgotten record


def marked_records(n):
    return [{"id": f"zora-{i}", "text": f"{MARK} lattice {i} glimmers softly", "owner": "zora"} for i in range(n)]


def home_hits(home, needles: list[str]) -> dict[str, list[str]]:
    """Files under the home (the MLflow store, the artifact root, the Dagster instance, landing, snapshots,
    reports) holding a needle; the warehouse is searched table by table (its freed pages are not rows)."""
    found = {}
    for p in home.home.rglob("*"):
        if not p.is_file() or p.name.startswith("warehouse.duckdb"):
            continue
        data = p.read_bytes()
        if p.suffix == ".parquet":
            data += repr(pl.read_parquet(p).to_dicts()).encode()
        hits = [n for n in needles if n.encode() in data or json.dumps(n)[1:-1].encode() in data]
        if hits:
            found[str(p.relative_to(home.home))] = hits
    with Warehouse(home.paths.warehouse).connect(read_only=True) as con:
        for s, t in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall():
            dump = repr(con.sql(f'SELECT * FROM "{s}"."{t}"').fetchall())
            hits = [n for n in needles if n in dump]
            if hits:
                found[f"warehouse {s}.{t}"] = hits
    return found


@pytest.mark.slow
def test_forget_leaves_the_record_text_in_no_event_mlflow_artifact_or_file(tmp_path):
    home = tiny_home(tmp_path / "home", samples_per_update=6)
    resources = build_resources(home)
    forgotten = marked_records(20)
    needles = [MARK] + [r["text"] for r in forgotten]
    windows = {"z-01": window_records(0, 60), "z-02": forgotten + window_records(1, 40), "z-03": window_records(2, 60)}
    with dg.instance_for_test(temp_dir=str(home.paths.dagster_home)) as instance:

        def ingest_and_finetune(key):
            write_window(home.paths.landing, f"{key}.jsonl", windows[key])
            instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
            assert dg.materialize(INGEST, partition_key=key, resources=resources, instance=instance).success
            ft = dg.materialize(
                [*TRAINING_ASSETS, challenger_beats_champion],
                resources=resources,
                instance=instance,
                selection=TRAINING_ASSETS,
            )
            assert ft.success
            return ft.asset_materializations_for_node("challenger_model")[0].metadata

        ingest_and_finetune("z-01")
        meta = ingest_and_finetune("z-02")
        before = home_hits(home, needles)
        client = MlflowClient(home.tracking_uri)
        name = home.model_name
        champion_before = str(client.get_model_version_by_alias(name, "champion").version)
        # the search finds the record where it is before the request: a prompt in an MLflow artifact
        assert any("mlartifacts" in p and "generations.json" in p for p in before), before

        report = forget(home, wheres=["owner = zora"], reason="test")
        assert sorted(report.record_ids) == sorted(r["id"] for r in forgotten)
        assert report.trained_versions == ["3"] and "3" not in report.evaluated_versions

        events = [e for run in instance.get_runs() for e in instance.all_logs(run.run_id)]
        dump = str(events)
        assert "redactions_by_entity" in dump and "sample_generations" in dump and "preview" in dump
        assert [n for n in needles if n in dump or json.dumps(n)[1:-1] in dump] == []
        assert home_hits(home, needles) == {}

        # the retired version's entry and tags stay, its files are gone; the champion is a version with files
        tags = client.get_model_version(name, "3").tags
        assert tags["streamtune.retired"] == "true" and tags["streamtune.artifacts_deleted"] == report.request_id
        assert report.files["mlflow_artifacts"] and "mlflow_artifact_errors" not in report.files
        champion = str(client.get_model_version_by_alias(name, "champion").version)
        assert champion != "3" and (champion_before != "3" or report.champion_after == champion)
        # the samples' sizes are in the event log, their text only in the MLflow artifact it links to
        assert meta["sample_generations"].value.count("\n") == 1 + home.samples_per_update
        assert meta["sample_generations_artifact"].value.endswith("/artifacts/samples/generations.json")
        # the loop goes on: the next fine-tune loads the champion and trains a new version from it
        ingest_and_finetune("z-03")
        newest = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        assert client.get_model_version(name, str(newest)).tags["streamtune.parent_version"] == champion
