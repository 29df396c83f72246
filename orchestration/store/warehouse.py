"""The DuckDB warehouse: schema, and every SQL statement streamtune runs.

No Dagster imports: this is the store layer that the Dagster resource in
``orchestration/resources.py`` wraps, and that the CLI uses for ``status``.

DuckDB allows one read-write process and no readers beside it, so every
connection here is short-lived (opened per call, closed on exit) and opening
retries for a while when another process holds the lock. Inside Dagster all
callers sit in the ``duckdb`` pool (limit 1), so retries only matter for the
CLI reading while runs are active.

Schema (documented in the README):

``raw.windows``        one row per ingested window (file, hash, row counts)
``raw.events``         parsed records of a window (row identity: window_key, row_number; record_id, ts)
``raw.staged_text``    text/metadata of a window's parsed records until the window is curated
``raw.rejects``        lines/rows that could not be parsed, verbatim, with the error
``curated.events``     rows that passed the quality gate
``curated.quarantine`` rows that failed it, with rule and reason (the one table with raw values;
                       ``purge_quarantine`` blanks text/metadata after the retention period)
``curated.window_results`` window-level GX expectations of a window's last curation

PII boundary: raw text lives in ``raw.staged_text`` only between ``replace_raw_window`` and
``replace_curated_window``; the latter deletes the window's staged rows in the same transaction
(``raw.events`` never holds text: identity, ``record_id`` and ``ts`` only). A curated row's text
then lives in ``curated.events`` (redacted), a quarantined row's in ``curated.quarantine`` (raw, the
one place); ``read_raw_window`` joins both back, so re-curating a window sees the same rows.
``raw.staged_text`` is stored uncompressed: its rows live for one run, and compressing text that is
deleted seconds later cost about a third of the raw write (``bench/ingest.py``).
``curated.windows``    windows approved for training (written only after blocking checks pass)
``train.ledger``       which records of which windows each model version saw, and in which role
``train.updates``      one row per fine-tune update: windows, metrics, gate decision
``train.replay_buffer`` window-balanced reservoir of past training rows mixed into updates (replay)
``train.rollbacks``    manual moves of the champion alias back to an earlier version, with the reason
``train.retired_versions`` versions that saw records a deletion request removed (their windows retrain)
``monitor.eval_matrix`` bits/byte of every model version on every window's held-out rows (R[i][j])
``monitor.window_profile`` one row per profiled window: drift statistics, p-values, thresholds, alarm
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS curated;
CREATE SCHEMA IF NOT EXISTS train;
CREATE SCHEMA IF NOT EXISTS monitor;
CREATE TABLE IF NOT EXISTS raw.windows (
    window_key VARCHAR PRIMARY KEY,
    file_name VARCHAR NOT NULL,
    file_sha256 VARCHAR NOT NULL,
    file_mtime_ns BIGINT,
    source_rows BIGINT NOT NULL,
    parsed_rows BIGINT NOT NULL,
    rejected_rows BIGINT NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
    dagster_run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS raw.events (
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    record_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS raw.staged_text (  -- deleted when the window is curated (PII boundary)
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    text VARCHAR USING COMPRESSION uncompressed,
    metadata VARCHAR USING COMPRESSION uncompressed
);
CREATE TABLE IF NOT EXISTS raw.rejects (
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    raw VARCHAR,
    error VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS curated.events (
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    record_id VARCHAR NOT NULL,
    text VARCHAR NOT NULL,
    ts TIMESTAMPTZ,
    metadata VARCHAR
);
CREATE TABLE IF NOT EXISTS curated.quarantine (
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    record_id VARCHAR NOT NULL,
    text VARCHAR,
    ts TIMESTAMPTZ,
    metadata VARCHAR,
    rule VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    gx_run_id VARCHAR,
    quarantined_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE curated.quarantine ADD COLUMN IF NOT EXISTS duplicate_of_window VARCHAR;
ALTER TABLE curated.quarantine ADD COLUMN IF NOT EXISTS duplicate_of_row BIGINT;
CREATE TABLE IF NOT EXISTS curated.window_results (
    window_key VARCHAR NOT NULL,
    gx_run_id VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    success BOOLEAN NOT NULL,
    observed VARCHAR
);
CREATE TABLE IF NOT EXISTS curated.windows (
    window_key VARCHAR PRIMARY KEY,
    curated_rows BIGINT NOT NULL,
    quarantined_rows BIGINT NOT NULL,
    approved_at TIMESTAMPTZ NOT NULL,
    dagster_run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS train.ledger (
    model_version VARCHAR NOT NULL,
    mlflow_run_id VARCHAR NOT NULL,
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    record_id VARCHAR NOT NULL,
    role VARCHAR NOT NULL,            -- train | new_eval | retention_eval
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS train.updates (
    model_version VARCHAR PRIMARY KEY,
    mlflow_run_id VARCHAR NOT NULL,
    parent_version VARCHAR,
    snapshot_id VARCHAR NOT NULL,
    window_keys VARCHAR[] NOT NULL,
    train_rows BIGINT NOT NULL,
    champion_new_loss DOUBLE,
    challenger_new_loss DOUBLE,
    champion_new_bpb DOUBLE,
    challenger_new_bpb DOUBLE,
    champion_retention_bpb DOUBLE,
    challenger_retention_bpb DOUBLE,
    promoted BOOLEAN NOT NULL,
    reason VARCHAR NOT NULL,
    trigger VARCHAR,
    dagster_run_id VARCHAR,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS train.replay_buffer (   -- window-balanced reservoir (training.replay)
    window_key VARCHAR NOT NULL,
    row_number BIGINT NOT NULL,
    record_id VARCHAR NOT NULL,
    text VARCHAR NOT NULL,
    reservoir_key DOUBLE NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS monitor.eval_matrix (    -- R[i][j] in bits/byte, one row per (version, window, phase)
    model_version VARCHAR NOT NULL,
    parent_version VARCHAR,
    trained_through VARCHAR NOT NULL,  -- last window of the update that produced model_version
    eval_window VARCHAR NOT NULL,
    phase VARCHAR NOT NULL,            -- before (parent, forward) | after (challenger)
    loss DOUBLE NOT NULL,              -- nats/token
    bpb DOUBLE NOT NULL,               -- bits per UTF-8 byte
    texts BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    mlflow_run_id VARCHAR,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS train.rollbacks (
    from_version VARCHAR,
    to_version VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    actor VARCHAR,
    rolled_back_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS train.retired_versions (  -- versions that saw deleted records (orchestration.pipeline.forget)
    model_version VARCHAR PRIMARY KEY,
    request_id VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    retired_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS monitor.window_profile (
    window_key VARCHAR PRIMARY KEY,
    reference_keys VARCHAR[] NOT NULL,
    rows BIGINT NOT NULL,
    sample_rows BIGINT NOT NULL,
    token_js DOUBLE,
    token_js_p DOUBLE,
    token_js_threshold DOUBLE,
    oov_rate DOUBLE,
    oov_rate_p DOUBLE,
    oov_rate_threshold DOUBLE,
    length_ks DOUBLE,
    length_ks_p DOUBLE,
    length_ks_threshold DOUBLE,
    bytes_per_token DOUBLE,
    bytes_per_token_p DOUBLE,
    bytes_per_token_threshold DOUBLE,
    lm_bpb DOUBLE,
    lm_bpb_p DOUBLE,
    lm_bpb_threshold DOUBLE,
    embedding_mmd2 DOUBLE,
    embedding_mmd2_p DOUBLE,
    embedding_mmd2_threshold DOUBLE,
    quarantine_rate DOUBLE,
    quarantine_rate_p DOUBLE,
    quarantine_rate_threshold DOUBLE,
    alpha DOUBLE NOT NULL,
    exceeded VARCHAR[] NOT NULL,
    drift BOOLEAN NOT NULL,
    confirmed VARCHAR[] NOT NULL,
    reason VARCHAR NOT NULL,
    champion_version VARCHAR,
    info VARCHAR,                     -- JSON: sizes, raw rates, seconds per part
    dagster_run_id VARCHAR,
    profiled_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE monitor.window_profile ADD COLUMN IF NOT EXISTS emerging_z DOUBLE;  -- quality.drift emerging terms
ALTER TABLE monitor.window_profile ADD COLUMN IF NOT EXISTS emerging_z_p DOUBLE;
ALTER TABLE monitor.window_profile ADD COLUMN IF NOT EXISTS emerging_z_threshold DOUBLE;
ALTER TABLE monitor.window_profile ADD COLUMN IF NOT EXISTS emerging_terms VARCHAR;  -- JSON, PII-redacted terms
"""

_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked")

ROW_GROUP_SIZE = 32_768
"""Rows per DuckDB row group of the warehouse (an ``ATTACH`` option; DuckDB's default is 122,880).
DuckDB writes an insert's full row groups straight to the database file ("optimistic writes") and
the rest through the WAL, which the checkpoint at close copies again. A 100k-row window fits in no
default row group, so it went through the WAL whole; with 32,768 its raw and curated writes take
~30% less time and the file grows ~10% (``bench/ingest.py``; 16,384: +38% file)."""


def _row_group_batches(frame: pl.DataFrame) -> pa.Table:
    """``frame`` as an Arrow table of ``ROW_GROUP_SIZE``-row record batches, to register for an
    ``INSERT ... SELECT``. DuckDB scans an Arrow table one record batch per thread, and polars
    hands over one batch: the insert (mostly compressing text into row groups) then ran on one
    thread. Batches of one row group each run in parallel, and the insertion order and row groups
    are kept: a 100k-row window's raw write took 0.21 -> 0.15 s and its curated write 0.32 ->
    0.26 s (alternating runs on real PyPI summaries)."""
    table = frame.to_arrow()
    return pa.Table.from_batches(table.to_batches(max_chunksize=ROW_GROUP_SIZE), schema=table.schema)


@dataclass(frozen=True)
class WindowCounts:
    """Row accounting of one window (all integers are row counts)."""

    window_key: str
    source_rows: int
    parsed_rows: int
    rejected_rows: int
    curated_rows: int
    quarantined_rows: int


class Warehouse:
    """Short-lived connections to one DuckDB file.

    Args:
        path: the ``warehouse.duckdb`` file; its parent directory is created.
        lock_timeout_s: how long ``connect`` retries while another process
            holds DuckDB's file lock, in seconds.

    Raises:
        duckdb.IOException: if the lock is still held after ``lock_timeout_s``.
    """

    def __init__(self, path: str | Path, lock_timeout_s: float = 120.0) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open a connection, retrying on lock conflicts; commit/close on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.1
        options = f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}" + (", READ_ONLY" if read_only and self.path.exists() else "")
        path = str(self.path).replace("'", "''")
        while True:
            con = duckdb.connect()  # in-memory; the warehouse file is attached with its storage options
            try:
                con.execute(f"ATTACH '{path}' AS warehouse ({options})")
                con.execute("USE warehouse")
                break
            except duckdb.IOException as exc:  # another process holds the file
                con.close()
                if not any(m in str(exc) for m in _LOCK_MARKERS) or time.monotonic() > deadline:
                    raise
            except BaseException:
                con.close()
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        try:
            con.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ reads back as polars Datetime(tz="UTC")
            yield con
        finally:
            con.close()

    def init_schema(self) -> None:
        """Create every schema and table if missing (idempotent)."""
        with self.connect() as con:
            con.execute(SCHEMA_SQL)
            self._migrate_raw_text(con)

    @staticmethod
    def _migrate_raw_text(con: duckdb.DuckDBPyConnection) -> None:
        """Warehouses made before ``raw.staged_text`` kept raw text in ``raw.events.text/metadata``
        (NULL once curated): move what is still there to ``raw.staged_text`` and drop the columns."""
        cols = {
            c
            for (c,) in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = 'events'"
            ).fetchall()
        }
        if "text" not in cols:
            return
        con.execute("BEGIN")
        con.execute(
            "INSERT INTO raw.staged_text SELECT window_key, row_number, text, metadata FROM raw.events "
            "WHERE text IS NOT NULL OR metadata IS NOT NULL"
        )
        con.execute("ALTER TABLE raw.events DROP COLUMN text")
        con.execute("ALTER TABLE raw.events DROP COLUMN metadata")
        con.execute("COMMIT")

    # -- ingest ---------------------------------------------------------------------------

    def replace_raw_window(
        self,
        window_key: str,
        rows: pl.DataFrame,
        rejects: pl.DataFrame,
        *,
        file_name: str,
        file_sha256: str,
        file_mtime_ns: int | None,
        dagster_run_id: str | None,
    ) -> None:
        """Replace a window's raw rows and rejects in one transaction.

        Re-materializing a window replaces it, never duplicates it. Downstream
        tables of the window (curated, quarantine, approval) are cleared too,
        since they were derived from the replaced rows.

        Args:
            rows: ``quality.schema.RAW_SCHEMA`` frame.
            rejects: ``quality.schema.REJECT_SCHEMA`` frame.
        """
        with self.connect() as con:
            con.execute("BEGIN")
            for table in (
                "raw.events",
                "raw.staged_text",
                "raw.rejects",
                "curated.events",
                "curated.quarantine",
                "curated.windows",
                "raw.windows",
            ):
                con.execute(f"DELETE FROM {table} WHERE window_key = ?", [window_key])
            con.register("new_rows", _row_group_batches(rows))
            con.execute("INSERT INTO raw.events SELECT window_key, row_number, record_id, ts FROM new_rows")
            con.execute("INSERT INTO raw.staged_text SELECT window_key, row_number, text, metadata FROM new_rows")
            con.register("new_rejects", rejects.to_arrow())
            con.execute("INSERT INTO raw.rejects SELECT window_key, row_number, raw, error FROM new_rejects")
            con.execute(
                "INSERT INTO raw.windows VALUES (?, ?, ?, ?, ?, ?, ?, now(), ?)",
                [
                    window_key,
                    file_name,
                    file_sha256,
                    file_mtime_ns,
                    rows.height + rejects.height,
                    rows.height,
                    rejects.height,
                    dagster_run_id,
                ],
            )
            con.execute("COMMIT")

    def windows_with_file(self, file_sha256: str, exclude: str | None = None) -> list[str]:
        """Other windows ingested from a file with the same sha256 (a re-delivered file)."""
        with self.connect() as con:
            return [
                k
                for (k,) in con.execute(
                    "SELECT window_key FROM raw.windows WHERE file_sha256 = ? AND window_key IS DISTINCT FROM ? "
                    "ORDER BY window_key",
                    [file_sha256, exclude],
                ).fetchall()
            ]

    def read_raw_window(self, window_key: str) -> pl.DataFrame:
        """Parsed rows of a window, ordered by row_number (``RAW_SCHEMA``).

        Before curation the text/metadata are ``raw.staged_text``'s; after it (staged rows
        deleted) they come from ``curated.quarantine`` for quarantined rows (raw values) and from
        ``curated.events`` for curated rows (redacted values)."""
        with self.connect() as con:
            return con.sql(
                "SELECT e.window_key, e.row_number, e.record_id, "
                "CASE WHEN s.row_number IS NOT NULL THEN s.text WHEN q.row_number IS NOT NULL THEN q.text "
                "ELSE c.text END AS text, e.ts, "
                "CASE WHEN s.row_number IS NOT NULL THEN s.metadata WHEN q.row_number IS NOT NULL THEN q.metadata "
                "ELSE c.metadata END AS metadata "
                "FROM raw.events e LEFT JOIN raw.staged_text s USING (window_key, row_number) "
                "LEFT JOIN curated.quarantine q USING (window_key, row_number) "
                "LEFT JOIN curated.events c USING (window_key, row_number) "
                "WHERE e.window_key = ? ORDER BY e.row_number",
                params=[window_key],
            ).pl()

    def replace_curated_window(
        self,
        window_key: str,
        curated: pl.DataFrame,
        quarantine: pl.DataFrame,
        window_results: Sequence[dict] = (),
        gx_run_id: str | None = None,
    ) -> None:
        """Replace a window's curated rows and quarantine rows in one transaction.

        Clears the window's approval: a re-curated window must pass its
        blocking checks again before training sees it. Deletes the window's ``raw.staged_text``
        rows (``read_raw_window`` reads text and metadata from the curated tables afterwards).

        Args:
            curated: ``RAW_SCHEMA`` frame (redacted).
            quarantine: ``QUARANTINE_SCHEMA`` frame (raw values).
            window_results: window-level GX results (rule, success, observed).
        """
        with self.connect() as con:
            con.execute("BEGIN")
            for table in ("curated.events", "curated.quarantine", "curated.windows", "curated.window_results"):
                con.execute(f"DELETE FROM {table} WHERE window_key = ?", [window_key])
            con.register("cur", _row_group_batches(curated))
            con.execute(
                "INSERT INTO curated.events SELECT window_key, row_number, record_id, text, ts, metadata FROM cur"
            )
            self._insert_quarantine(con, quarantine)
            self._scrub_raw(con, window_key)
            for r in window_results:
                con.execute(
                    "INSERT INTO curated.window_results VALUES (?, ?, ?, ?, ?)",
                    [window_key, gx_run_id or "", r["rule"], bool(r["success"]), str(r.get("observed"))],
                )
            con.execute("COMMIT")

    @staticmethod
    def _insert_quarantine(con: duckdb.DuckDBPyConnection, quarantine: pl.DataFrame) -> None:
        for col, dtype in (("duplicate_of_window", pl.String), ("duplicate_of_row", pl.Int64)):
            if col not in quarantine.columns:  # frames without dedup links
                quarantine = quarantine.with_columns(pl.lit(None, dtype=dtype).alias(col))
        con.register("quar", _row_group_batches(quarantine))
        con.execute(
            "INSERT INTO curated.quarantine (window_key, row_number, record_id, text, ts, metadata, rule, reason, "
            "gx_run_id, duplicate_of_window, duplicate_of_row) "
            "SELECT window_key, row_number, record_id, text, ts, metadata, rule, reason, gx_run_id, "
            "duplicate_of_window, duplicate_of_row FROM quar"
        )
        con.unregister("quar")

    @staticmethod
    def _scrub_raw(con: duckdb.DuckDBPyConnection, window_key: str) -> None:
        """Drop the window's raw text/metadata (``raw.staged_text`` rows; see the PII boundary above).
        The table holds uncurated windows only, so this usually empties whole row groups, whose
        blocks the next checkpoint frees."""
        con.execute("DELETE FROM raw.staged_text WHERE window_key = ?", [window_key])

    def window_results(self, window_key: str) -> list[dict]:
        """Window-level GX results of the window's last curation: rule, success, observed."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT rule, success, observed FROM curated.window_results WHERE window_key = ? ORDER BY rule",
                [window_key],
            ).fetchall()
        return [{"rule": r, "success": bool(ok), "observed": obs} for r, ok, obs in rows]

    def recent_norm_hashes(
        self, window_key: str, n_windows: int, include_self: bool = False, with_text: bool = False
    ) -> pl.DataFrame:
        """``window_key, row_number, norm_hash`` (and ``text`` when ``with_text``, for near-duplicate
        detection) of the curated rows of the ``n_windows`` windows landed just before
        ``window_key`` (landing order: file mtime, then file name; so a rerun sees the same
        windows), plus its own rows when ``include_self``. The hash is
        ``quality.dedup.NORM_HASH_SQL``; curated text is already PII-redacted."""
        from quality.dedup import NORM_HASH_SQL

        with self.connect() as con:
            return con.sql(
                "WITH me AS (SELECT coalesce(file_mtime_ns, 0) AS m, file_name AS f FROM raw.windows WHERE window_key = ?), "
                "recent AS (SELECT w.window_key FROM raw.windows w, me WHERE w.window_key <> ? AND "
                "(coalesce(w.file_mtime_ns, 0) < me.m OR (coalesce(w.file_mtime_ns, 0) = me.m AND w.file_name < me.f)) "
                "ORDER BY coalesce(w.file_mtime_ns, 0) DESC, w.file_name DESC LIMIT ?) "
                f"SELECT window_key, row_number, {NORM_HASH_SQL} AS norm_hash{', text' if with_text else ''} "
                "FROM curated.events WHERE window_key IN (SELECT window_key FROM recent) OR (? AND window_key = ?) "
                "ORDER BY window_key, row_number",
                params=[window_key, window_key, max(int(n_windows), 0), include_self, window_key],
            ).pl()

    # -- quarantine -------------------------------------------------------------------------

    def quarantine_rows(self, window_key: str | None = None, rule: str | None = None) -> pl.DataFrame:
        """Quarantine rows without their values: window_key, row_number, record_id, rule, reason,
        gx_run_id, duplicate_of_window, duplicate_of_row, quarantined_at (filters optional)."""
        with self.connect(read_only=True) as con:
            return con.sql(
                "SELECT window_key, row_number, record_id, rule, reason, gx_run_id, duplicate_of_window, "
                "duplicate_of_row, quarantined_at FROM curated.quarantine "
                "WHERE (? IS NULL OR window_key = ?) AND (? IS NULL OR rule = ?) ORDER BY window_key, row_number",
                params=[window_key, window_key, rule, rule],
            ).pl()

    def read_quarantined_raw(self, window_key: str, rule: str) -> pl.DataFrame:
        """Raw rows (``RAW_SCHEMA``) of a window quarantined under ``rule``, for re-judging."""
        with self.connect() as con:
            return con.sql(
                "SELECT window_key, row_number, record_id, text, ts, metadata FROM curated.quarantine "
                "WHERE window_key = ? AND rule = ? ORDER BY row_number",
                params=[window_key, rule],
            ).pl()

    def release_quarantined(self, window_key: str, curated: pl.DataFrame, requarantined: pl.DataFrame) -> int:
        """Move re-judged rows out of quarantine in one transaction (idempotent).

        Args:
            curated: ``RAW_SCHEMA`` rows (redacted) that now pass: they replace any curated row with
                the same (window_key, row_number) and leave the quarantine.
            requarantined: ``QUARANTINE_SCHEMA`` rows that still fail: their quarantine rows are
                replaced (new rule/reason).
        Returns: rows released. An approved window's counts in ``curated.windows`` are refreshed.
        """
        with self.connect() as con:
            con.execute("BEGIN")
            con.register("rel", curated.to_arrow())
            con.execute(
                "DELETE FROM curated.events WHERE window_key = ? AND row_number IN (SELECT row_number FROM rel)",
                [window_key],
            )
            con.execute(
                "DELETE FROM curated.quarantine WHERE window_key = ? AND row_number IN (SELECT row_number FROM rel)",
                [window_key],
            )
            con.execute(
                "INSERT INTO curated.events SELECT window_key, row_number, record_id, text, ts, metadata FROM rel"
            )
            con.register("req", requarantined.select("row_number").to_arrow())
            con.execute(
                "DELETE FROM curated.quarantine WHERE window_key = ? AND row_number IN (SELECT row_number FROM req)",
                [window_key],
            )
            self._insert_quarantine(con, requarantined)
            self._scrub_raw(con, window_key)
            con.execute(
                "UPDATE curated.windows SET curated_rows = (SELECT count(*) FROM curated.events WHERE window_key = ?), "
                "quarantined_rows = (SELECT count(*) FROM curated.quarantine WHERE window_key = ?) WHERE window_key = ?",
                [window_key, window_key, window_key],
            )
            con.execute("COMMIT")
        return curated.height

    def purge_quarantine(self, retention_days: float) -> int:
        """Blank ``text`` and ``metadata`` of quarantine rows older than ``retention_days`` (the row,
        its rule and reason stay, so row accounting still holds). Returns rows purged."""
        with self.connect() as con:
            return int(
                con.execute(
                    "UPDATE curated.quarantine SET text = NULL, metadata = NULL "
                    "WHERE quarantined_at < now() - to_microseconds(CAST(? * 86400e6 AS BIGINT)) "
                    "AND (text IS NOT NULL OR metadata IS NOT NULL)",
                    [float(retention_days)],
                ).fetchall()[0][0]
            )

    def read_curated_window(self, window_key: str) -> pl.DataFrame:
        """Curated rows of a window, ordered by row_number."""
        with self.connect() as con:
            return con.sql(
                "SELECT window_key, row_number, record_id, text, ts, metadata FROM curated.events "
                "WHERE window_key = ? ORDER BY row_number",
                params=[window_key],
            ).pl()

    def window_counts(self, window_key: str) -> WindowCounts:
        """Row accounting of one window; zeros for a window never ingested."""
        with self.connect() as con:
            src = con.execute(
                "SELECT coalesce(max(source_rows), 0), coalesce(max(parsed_rows), 0), coalesce(max(rejected_rows), 0) "
                "FROM raw.windows WHERE window_key = ?",
                [window_key],
            ).fetchall()[0]
            cur = con.execute("SELECT count(*) FROM curated.events WHERE window_key = ?", [window_key]).fetchall()[0][0]
            qua = con.execute("SELECT count(*) FROM curated.quarantine WHERE window_key = ?", [window_key]).fetchall()[
                0
            ][0]
        return WindowCounts(window_key, int(src[0]), int(src[1]), int(src[2]), int(cur), int(qua))

    def quarantine_counts(self, window_key: str) -> dict[str, int]:
        """Quarantined rows of a window by rule id."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT rule, count(*) FROM curated.quarantine WHERE window_key = ? GROUP BY rule ORDER BY rule",
                [window_key],
            ).fetchall()
        return {rule: int(n) for rule, n in rows}

    def approve_window(self, window_key: str, dagster_run_id: str | None) -> WindowCounts:
        """Mark a curated window as approved for training (after its blocking checks passed)."""
        counts = self.window_counts(window_key)
        with self.connect() as con:
            con.execute("DELETE FROM curated.windows WHERE window_key = ?", [window_key])
            con.execute(
                "INSERT INTO curated.windows VALUES (?, ?, ?, now(), ?)",
                [window_key, counts.curated_rows, counts.quarantined_rows, dagster_run_id],
            )
        return counts

    # -- training -------------------------------------------------------------------------

    def pending_windows(self, limit: int | None = None) -> list[str]:
        """Approved windows not yet in ``train.ledger``, oldest landing first. Windows trained only by
        versions in ``train.retired_versions`` (a deletion request) are pending again: they are retrained.

        Args:
            limit: at most this many (None or 0: all).
        """
        sql = (
            "SELECT w.window_key FROM curated.windows w JOIN raw.windows r USING (window_key) "
            "WHERE w.window_key NOT IN (SELECT DISTINCT window_key FROM train.ledger WHERE role IN ('train', 'new_eval') "
            "AND model_version NOT IN (SELECT model_version FROM train.retired_versions)) "
            "ORDER BY r.file_mtime_ns, r.file_name"
        )
        with self.connect() as con:
            keys = [k for (k,) in con.execute(sql).fetchall()]
        return keys[:limit] if limit else keys

    def trained_windows(self) -> list[str]:
        """Windows some model version was trained on, oldest landing first."""
        with self.connect() as con:
            return [
                k
                for (k,) in con.execute(
                    "SELECT l.window_key FROM (SELECT DISTINCT window_key FROM train.ledger) l "
                    "JOIN raw.windows r USING (window_key) ORDER BY r.file_mtime_ns, r.file_name"
                ).fetchall()
            ]

    def curated_rows(self, window_keys: Sequence[str]) -> pl.DataFrame:
        """Curated rows (window_key, row_number, record_id, text) of several windows."""
        if not window_keys:
            return pl.DataFrame(
                schema={"window_key": pl.String, "row_number": pl.Int64, "record_id": pl.String, "text": pl.String}
            )
        with self.connect() as con:
            return con.sql(
                "SELECT window_key, row_number, record_id, text FROM curated.events "
                "WHERE list_contains(?, window_key) ORDER BY window_key, row_number",
                params=[list(window_keys)],
            ).pl()

    def retention_rows(self, max_rows: int, seed: int = 0) -> pl.DataFrame:
        """Held-out evaluation rows of already-trained windows, balanced across windows.

        Takes the rows recorded with role ``new_eval`` in the ledger (they were
        held out when their window was new, so no model trained on them) and
        samples up to ``max_rows`` in total, the same share from each window,
        deterministically for a given seed.
        """
        with self.connect() as con:
            df = con.sql(
                "SELECT DISTINCT l.window_key, l.row_number, l.record_id, c.text FROM train.ledger l "
                "JOIN curated.events c USING (window_key, row_number) WHERE l.role = 'new_eval' "
                "ORDER BY l.window_key, l.row_number"
            ).pl()
        if df.is_empty() or max_rows <= 0:
            return df.head(0)
        keys = df["window_key"].unique().sort().to_list()
        per_window = max(1, max_rows // len(keys))
        parts = []
        rng = random.Random(seed)
        for key in keys:
            part = df.filter(pl.col("window_key") == key)
            if part.height > per_window:
                idx = sorted(rng.sample(range(part.height), per_window))
                part = part[idx]
            parts.append(part)
        return pl.concat(parts).head(max_rows)

    def record_update(
        self,
        *,
        model_version: str,
        mlflow_run_id: str,
        parent_version: str | None,
        snapshot_id: str,
        window_keys: Sequence[str],
        ledger: pl.DataFrame,
        metrics: dict[str, float],
        promoted: bool,
        reason: str,
        trigger: str | None,
        dagster_run_id: str | None,
        replay_buffer: pl.DataFrame | None = None,
        eval_matrix: pl.DataFrame | None = None,
    ) -> None:
        """Write an update's ledger rows and its ``train.updates`` row atomically (idempotent per version).

        Args:
            ledger: columns window_key, row_number, record_id, role.
            metrics: ``training.finetune.FinetuneResult.metrics()``.
            replay_buffer: if given, replaces ``train.replay_buffer`` (``training.replay.BUFFER_COLUMNS``).
            eval_matrix: if given, replaces this version's ``monitor.eval_matrix`` rows (columns
                parent_version, trained_through, eval_window, phase, loss, bpb, texts, bytes).
        """
        with self.connect() as con:
            con.execute("BEGIN")
            if replay_buffer is not None:
                con.execute("DELETE FROM train.replay_buffer")
                con.register(
                    "rb",
                    replay_buffer.select("window_key", "row_number", "record_id", "text", "reservoir_key").to_arrow(),
                )
                con.execute(
                    "INSERT INTO train.replay_buffer (window_key, row_number, record_id, text, reservoir_key) "
                    "SELECT * FROM rb"
                )
            if eval_matrix is not None:
                con.execute("DELETE FROM monitor.eval_matrix WHERE model_version = ?", [model_version])
                con.register(
                    "em",
                    eval_matrix.select(
                        "parent_version", "trained_through", "eval_window", "phase", "loss", "bpb", "texts", "bytes"
                    ).to_arrow(),
                )
                con.execute(
                    "INSERT INTO monitor.eval_matrix (model_version, parent_version, trained_through, eval_window, "
                    "phase, loss, bpb, texts, bytes, mlflow_run_id) SELECT ?, parent_version, trained_through, "
                    "eval_window, phase, loss, bpb, texts, bytes, ? FROM em",
                    [model_version, mlflow_run_id],
                )
            con.execute("DELETE FROM train.ledger WHERE model_version = ?", [model_version])
            con.execute("DELETE FROM train.updates WHERE model_version = ?", [model_version])
            con.register("led", ledger.select("window_key", "row_number", "record_id", "role").to_arrow())
            con.execute(
                "INSERT INTO train.ledger (model_version, mlflow_run_id, window_key, row_number, record_id, role) "
                "SELECT ?, ?, window_key, row_number, record_id, role FROM led",
                [model_version, mlflow_run_id],
            )
            m = metrics.get
            con.execute(
                "INSERT INTO train.updates (model_version, mlflow_run_id, parent_version, snapshot_id, window_keys, "
                "train_rows, champion_new_loss, challenger_new_loss, champion_new_bpb, challenger_new_bpb, "
                "champion_retention_bpb, challenger_retention_bpb, promoted, reason, trigger, dagster_run_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    model_version,
                    mlflow_run_id,
                    parent_version,
                    snapshot_id,
                    list(window_keys),
                    int(ledger.filter(pl.col("role") == "train").height),
                    m("champion_new_loss"),
                    m("challenger_new_loss"),
                    m("champion_new_bpb"),
                    m("challenger_new_bpb"),
                    m("champion_retention_bpb"),
                    m("challenger_retention_bpb"),
                    promoted,
                    reason,
                    trigger,
                    dagster_run_id,
                ],
            )
            con.execute("COMMIT")

    # -- reporting ------------------------------------------------------------------------

    def window_report(self) -> pl.DataFrame:
        """One row per ingested window: row accounting and the update that trained on it.

        Columns: window_key, file_name, source_rows, parsed_rows, rejected_rows,
        curated_rows, quarantined_rows, approved, model_version, champion_new_loss,
        challenger_new_loss, champion_new_bpb, challenger_new_bpb, champion_retention_bpb,
        challenger_retention_bpb, promoted, mlflow_run_id.
        """
        sql = """
        WITH cur AS (SELECT window_key, count(*) AS n FROM curated.events GROUP BY window_key),
             qua AS (SELECT window_key, count(*) AS n FROM curated.quarantine GROUP BY window_key),
             upd AS (SELECT unnest(window_keys) AS window_key, * EXCLUDE (window_keys) FROM train.updates)
        SELECT r.window_key, r.file_name, r.source_rows, r.parsed_rows, r.rejected_rows,
               coalesce(cur.n, 0) AS curated_rows, coalesce(qua.n, 0) AS quarantined_rows,
               (w.window_key IS NOT NULL) AS approved,
               upd.model_version, upd.champion_new_loss, upd.challenger_new_loss,
               upd.champion_new_bpb, upd.challenger_new_bpb, upd.champion_retention_bpb,
               upd.challenger_retention_bpb, upd.promoted, upd.mlflow_run_id
        FROM raw.windows r
        LEFT JOIN cur USING (window_key) LEFT JOIN qua USING (window_key)
        LEFT JOIN curated.windows w USING (window_key)
        LEFT JOIN upd USING (window_key)
        ORDER BY r.file_mtime_ns, r.file_name, upd.created_at
        """
        with self.connect(read_only=True) as con:
            return con.sql(sql).pl()

    def updates(self) -> pl.DataFrame:
        """All fine-tune updates, oldest first."""
        with self.connect(read_only=True) as con:
            return con.sql("SELECT * FROM train.updates ORDER BY created_at").pl()

    # -- continual learning -----------------------------------------------------------------

    def replay_buffer(self) -> pl.DataFrame:
        """The replay buffer (window_key, row_number, record_id, text, reservoir_key), oldest window first."""
        with self.connect() as con:
            return con.sql(
                "SELECT b.window_key, b.row_number, b.record_id, b.text, b.reservoir_key FROM train.replay_buffer b "
                "LEFT JOIN raw.windows r USING (window_key) "
                "ORDER BY r.file_mtime_ns, r.file_name, b.window_key, b.reservoir_key"
            ).pl()

    def heldout_record_ids(self) -> list[str]:
        """Record ids ever used for evaluation (ledger roles new_eval / retention_eval): never replayed."""
        with self.connect() as con:
            return [
                r
                for (r,) in con.execute(
                    "SELECT DISTINCT record_id FROM train.ledger WHERE role IN ('new_eval', 'retention_eval')"
                ).fetchall()
            ]

    def first_window_heldout(self) -> pl.DataFrame:
        """Held-out rows (ledger role new_eval) of the first window ever trained: the fixed first-window set.

        Columns window_key, row_number, record_id, text; empty before the first update.
        """
        with self.connect() as con:
            return con.sql(
                "WITH first AS (SELECT DISTINCT window_key, file_mtime_ns, file_name FROM train.ledger "
                "JOIN raw.windows USING (window_key) ORDER BY file_mtime_ns, file_name LIMIT 1) "
                "SELECT DISTINCT l.window_key, l.row_number, l.record_id, c.text FROM train.ledger l "
                "JOIN first USING (window_key) JOIN curated.events c USING (window_key, row_number) "
                "WHERE l.role = 'new_eval' ORDER BY l.row_number"
            ).pl()

    def eval_matrix(self) -> pl.DataFrame:
        """``monitor.eval_matrix``, oldest first (see the table's comment for the columns)."""
        with self.connect(read_only=True) as con:
            return con.sql("SELECT * FROM monitor.eval_matrix ORDER BY recorded_at, eval_window, phase").pl()

    def update_parent(self, model_version: str) -> str | None:
        """The parent (champion at training time) of an update's version; None if unknown."""
        with self.connect(read_only=True) as con:
            rows = con.execute(
                "SELECT parent_version FROM train.updates WHERE model_version = ?", [model_version]
            ).fetchall()
        return rows[0][0] if rows else None

    def record_rollback(self, from_version: str | None, to_version: str, reason: str, actor: str | None) -> None:
        """Append a row to ``train.rollbacks``."""
        with self.connect() as con:
            con.execute(
                "INSERT INTO train.rollbacks (from_version, to_version, reason, actor) VALUES (?, ?, ?, ?)",
                [from_version, to_version, reason, actor],
            )

    def rollbacks(self) -> pl.DataFrame:
        """``train.rollbacks``, oldest first."""
        with self.connect(read_only=True) as con:
            return con.sql("SELECT * FROM train.rollbacks ORDER BY rolled_back_at").pl()

    # -- drift monitor --------------------------------------------------------------------

    def drift_inputs(self, window_key: str, reference_windows: int) -> dict:
        """Everything the drift monitor needs about one window, read in one short connection.

        The reference is the ``reference_windows`` most recent *approved* windows that landed before
        ``window_key`` (landing order = file mtime, then name).

        Returns:
            dict with ``current`` (list[str], curated texts of the window), ``reference`` (list[str],
            curated texts of the reference windows), ``reference_keys`` (oldest first),
            ``earlier_windows`` (int, approved windows landed before this one), ``quarantine``
            (ref_quarantined, ref_total, cur_quarantined, cur_total) row counts, and
            ``pre_update_bpb`` (the champion's bits/byte on the window's held-out rows from an update
            that trained on this window alone, else None).
        """
        with self.connect() as con:
            order = con.execute(
                "SELECT r.window_key FROM raw.windows r JOIN curated.windows w USING (window_key) "
                "WHERE (r.file_mtime_ns, r.file_name) < (SELECT (file_mtime_ns, file_name) FROM raw.windows WHERE window_key = ?) "
                "ORDER BY r.file_mtime_ns, r.file_name",
                [window_key],
            ).fetchall()
            earlier = [k for (k,) in order]
            ref_keys = earlier[-reference_windows:] if reference_windows > 0 else []
            current = [
                t
                for (t,) in con.execute(
                    "SELECT text FROM curated.events WHERE window_key = ? ORDER BY row_number", [window_key]
                ).fetchall()
            ]
            reference = (
                [
                    t
                    for (t,) in con.execute(
                        "SELECT text FROM curated.events WHERE list_contains(?, window_key) ORDER BY window_key, row_number",
                        [ref_keys],
                    ).fetchall()
                ]
                if ref_keys
                else []
            )

            def q(keys: list[str]) -> tuple[int, int]:
                if not keys:
                    return 0, 0
                quar = con.execute(
                    "SELECT count(*) FROM curated.quarantine WHERE list_contains(?, window_key)", [keys]
                ).fetchall()[0][0]
                cur = con.execute(
                    "SELECT count(*) FROM curated.events WHERE list_contains(?, window_key)", [keys]
                ).fetchall()[0][0]
                return int(quar), int(quar + cur)

            rq, rt = q(ref_keys)
            cq, ct = q([window_key])
            pre = con.execute(
                "SELECT champion_new_bpb FROM train.updates WHERE window_keys = [?]::VARCHAR[] "
                "AND champion_new_bpb IS NOT NULL ORDER BY created_at LIMIT 1",
                [window_key],
            ).fetchall()
        return {
            "current": current,
            "reference": reference,
            "reference_keys": ref_keys,
            "earlier_windows": len(earlier),
            "quarantine": (rq, rt, cq, ct),
            "pre_update_bpb": float(pre[0][0]) if pre else None,
        }

    def record_window_profile(self, row: dict) -> None:
        """Insert or replace one ``monitor.window_profile`` row (keys = column names; missing columns NULL)."""
        with self.connect() as con:
            cols = [
                c
                for (c,) in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'monitor' "
                    "AND table_name = 'window_profile' AND column_name <> 'profiled_at' ORDER BY ordinal_position"
                ).fetchall()
            ]
            unknown = set(row) - set(cols)
            if unknown:
                raise ValueError(f"monitor.window_profile has no columns {sorted(unknown)}")
            con.execute("BEGIN")
            con.execute("DELETE FROM monitor.window_profile WHERE window_key = ?", [row["window_key"]])
            con.execute(
                f"INSERT INTO monitor.window_profile ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                [row.get(c) for c in cols],
            )
            con.execute("COMMIT")

    def window_profiles(self, before: str | None = None) -> pl.DataFrame:
        """Profiled windows in landing order (all columns of ``monitor.window_profile``).

        Args:
            before: only windows that landed before this window key (None: all).
        """
        sql = (
            "SELECT p.* FROM monitor.window_profile p JOIN raw.windows r USING (window_key) {where} "
            "ORDER BY r.file_mtime_ns, r.file_name"
        )
        with self.connect() as con:
            if before is None:
                return con.sql(sql.format(where="")).pl()
            return con.sql(
                sql.format(
                    where="WHERE (r.file_mtime_ns, r.file_name) < "
                    "(SELECT (file_mtime_ns, file_name) FROM raw.windows WHERE window_key = ?)"
                ),
                params=[before],
            ).pl()
