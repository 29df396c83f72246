"""The DuckDB warehouse against a real file in tmp_path."""

from datetime import UTC, datetime

import duckdb
import polars as pl
import pytest

from orchestration.store.warehouse import Warehouse

RAW = {
    "window_key": pl.String,
    "row_number": pl.Int64,
    "record_id": pl.String,
    "text": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "metadata": pl.String,
}
REJ = {"window_key": pl.String, "row_number": pl.Int64, "raw": pl.String, "error": pl.String}


def _rows(key: str, texts: list[str | None]) -> pl.DataFrame:
    ts = datetime(2025, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "window_key": [key] * len(texts),
            "row_number": list(range(1, len(texts) + 1)),
            "record_id": [f"{key}-{i}" for i in range(len(texts))],
            "text": texts,
            "ts": [ts] * len(texts),
            "metadata": ["{}"] * len(texts),
        },
        schema=RAW,
    )


@pytest.fixture
def wh(tmp_path):
    w = Warehouse(tmp_path / "warehouse.duckdb")
    w.init_schema()
    return w


def _ingest(wh, key, texts, rejects=0, mtime=0):
    rej = pl.DataFrame(
        {
            "window_key": [key] * rejects,
            "row_number": list(range(100, 100 + rejects)),
            "raw": ["{bad"] * rejects,
            "error": ["invalid JSON: x"] * rejects,
        },
        schema=REJ,
    )
    wh.replace_raw_window(
        key,
        _rows(key, texts),
        rej,
        file_name=f"{key}.jsonl",
        file_sha256="0" * 64,
        file_mtime_ns=mtime,
        dagster_run_id="run",
    )


def test_replacing_a_window_never_duplicates_it(wh):
    _ingest(wh, "w1", ["a", "b", "c"], rejects=1)
    _ingest(wh, "w1", ["a", "b"], rejects=2)
    c = wh.window_counts("w1")
    assert (c.source_rows, c.parsed_rows, c.rejected_rows) == (4, 2, 2)
    assert wh.read_raw_window("w1")["text"].to_list() == ["a", "b"]


def test_reingesting_clears_the_windows_curation_and_approval(wh):
    _ingest(wh, "w1", ["a", "b"])
    raw = wh.read_raw_window("w1")
    quarantine = raw.head(1).with_columns(rule=pl.lit("text_too_short"), reason=pl.lit("x"), gx_run_id=pl.lit("g"))
    wh.replace_curated_window("w1", raw.tail(1), quarantine)
    wh.approve_window("w1", "run")
    assert wh.pending_windows() == ["w1"]
    assert wh.quarantine_counts("w1") == {"text_too_short": 1}
    _ingest(wh, "w1", ["a", "b"])
    assert wh.pending_windows() == []
    assert wh.window_counts("w1").curated_rows == 0


def test_curating_deletes_the_staged_raw_text_and_reads_it_back_from_curated_tables(wh):
    _ingest(wh, "w1", ["raw a", "raw b"])
    with wh.connect(read_only=True) as con:
        assert con.execute("SELECT text FROM raw.staged_text ORDER BY row_number").fetchall() == [
            ("raw a",),
            ("raw b",),
        ]
    raw = wh.read_raw_window("w1")
    quarantine = raw.head(1).with_columns(rule=pl.lit("text_too_short"), reason=pl.lit("x"), gx_run_id=pl.lit("g"))
    wh.replace_curated_window("w1", raw.tail(1).with_columns(text=pl.lit("<REDACTED> b")), quarantine)
    with wh.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.staged_text").fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM raw.events").fetchall() == [(2,)]
    assert wh.read_raw_window("w1")["text"].to_list() == ["raw a", "<REDACTED> b"]


def test_init_schema_moves_raw_text_of_an_older_warehouse_to_staged_text(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))  # the raw.events layout before raw.staged_text
    con.execute(
        "CREATE SCHEMA raw; CREATE TABLE raw.events (window_key VARCHAR NOT NULL, row_number BIGINT NOT NULL, "
        "record_id VARCHAR NOT NULL, text VARCHAR, ts TIMESTAMPTZ, metadata VARCHAR)"
    )
    con.execute(
        "INSERT INTO raw.events VALUES ('curated', 1, 'a', NULL, NULL, NULL), "
        "('pending', 1, 'b', 'pending text', NULL, '{\"k\":1}')"
    )
    con.close()
    wh = Warehouse(path)
    wh.init_schema()
    wh.init_schema()  # idempotent
    with wh.connect(read_only=True) as con:
        assert [
            c
            for (c,) in con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'raw' AND table_name = 'events'"
            ).fetchall()
        ] == ["window_key", "row_number", "record_id", "ts"]
        assert con.execute("SELECT * FROM raw.staged_text").fetchall() == [("pending", 1, "pending text", '{"k":1}')]
    assert wh.read_raw_window("pending")["text"].to_list() == ["pending text"]


def test_pending_windows_follow_landing_order_and_skip_trained_ones(wh):
    for key, mtime in [("w2", 20), ("w1", 10), ("w3", 30)]:
        _ingest(wh, key, ["x", "y"], mtime=mtime)
        wh.replace_curated_window(
            key,
            wh.read_raw_window(key),
            _rows(key, []).with_columns(rule=pl.lit(""), reason=pl.lit(""), gx_run_id=pl.lit("")),
        )
        wh.approve_window(key, None)
    assert wh.pending_windows() == ["w1", "w2", "w3"]
    assert wh.pending_windows(limit=1) == ["w1"]
    ledger = wh.curated_rows(["w1"]).with_columns(role=pl.lit("train"))
    wh.record_update(
        model_version="2",
        mlflow_run_id="r",
        parent_version="1",
        snapshot_id="s",
        window_keys=["w1"],
        ledger=ledger.select("window_key", "row_number", "record_id", "role"),
        metrics={"champion_new_loss": 5.0, "challenger_new_loss": 4.0},
        promoted=True,
        reason="ok",
        trigger="manual",
        dagster_run_id="run",
    )
    assert wh.pending_windows() == ["w2", "w3"]
    assert wh.trained_windows() == ["w1"]
    report = wh.window_report()
    assert report["window_key"].to_list() == ["w1", "w2", "w3"]
    assert report["model_version"].to_list() == ["2", None, None]
    # recording the same version again is idempotent
    wh.record_update(
        model_version="2",
        mlflow_run_id="r",
        parent_version="1",
        snapshot_id="s",
        window_keys=["w1"],
        ledger=ledger.select("window_key", "row_number", "record_id", "role"),
        metrics={},
        promoted=True,
        reason="ok",
        trigger="manual",
        dagster_run_id="run",
    )
    with duckdb.connect(str(wh.path)) as con:
        assert con.execute("SELECT count(*) FROM train.ledger").fetchall() == [(2,)]


def test_retention_rows_are_held_out_rows_balanced_across_windows(wh):
    for key in ["w1", "w2"]:
        _ingest(wh, key, [f"{key} text {i}" for i in range(10)])
        wh.replace_curated_window(
            key,
            wh.read_raw_window(key),
            _rows(key, []).with_columns(rule=pl.lit(""), reason=pl.lit(""), gx_run_id=pl.lit("")),
        )
        rows = wh.curated_rows([key])
        ledger = rows.with_columns(
            role=pl.when(pl.col("row_number") <= 4).then(pl.lit("new_eval")).otherwise(pl.lit("train"))
        )
        wh.record_update(
            model_version=key,
            mlflow_run_id="r",
            parent_version=None,
            snapshot_id=key,
            window_keys=[key],
            ledger=ledger.select("window_key", "row_number", "record_id", "role"),
            metrics={},
            promoted=True,
            reason="ok",
            trigger=None,
            dagster_run_id=None,
        )
    ret = wh.retention_rows(4)
    assert ret.height == 4
    assert ret.group_by("window_key").len().sort("window_key")["len"].to_list() == [2, 2]
    assert ret["row_number"].max() <= 4  # only held-out rows
    assert wh.retention_rows(4).equals(ret)  # deterministic


def test_connect_waits_for_a_lock_then_gives_up(tmp_path):
    import multiprocessing as mp

    path = tmp_path / "w.duckdb"
    Warehouse(path).init_schema()
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(path), ready, release))
    p.start()
    try:
        assert ready.wait(30)
        with pytest.raises(duckdb.IOException), Warehouse(path, lock_timeout_s=0.5).connect():
            pass
    finally:
        release.set()
        p.join(30)
    with Warehouse(path, lock_timeout_s=5).connect() as con:
        assert con.execute("SELECT 1").fetchall() == [(1,)]


def _hold_lock(path, ready, release):
    con = duckdb.connect(path)
    ready.set()
    release.wait(30)
    con.close()


def test_snapshot_holds_out_at_least_one_row_of_every_new_window(wh, tmp_path):
    from orchestration.pipeline.snapshot import build_snapshot

    for key, n in [("w1", 3), ("w2", 40)]:
        _ingest(wh, key, [f"{key} text {i}" for i in range(n)], mtime=n)
        wh.replace_curated_window(
            key,
            wh.read_raw_window(key),
            _rows(key, []).with_columns(rule=pl.lit(""), reason=pl.lit(""), gx_run_id=pl.lit("")),
        )
        wh.approve_window(key, None)
    m = build_snapshot(wh, tmp_path / "snap", eval_fraction=0.1, retention_rows=10)
    assert m.window_keys == ["w1", "w2"]
    new_eval = m.frame("new_eval")
    assert set(new_eval["window_key"]) == {"w1", "w2"}
    assert m.rows["train"] + m.rows["new_eval"] == 43
    again = build_snapshot(wh, tmp_path / "snap2", eval_fraction=0.1, retention_rows=10)
    assert again.content_sha256 == m.content_sha256  # deterministic
