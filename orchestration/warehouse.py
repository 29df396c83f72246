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
``raw.events``         parsed records of a window (row identity: window_key, row_number)
``raw.rejects``        lines/rows that could not be parsed, verbatim, with the error
``curated.events``     rows that passed the quality gate
``curated.quarantine`` rows that failed it, with rule and reason (the one table with raw failing rows)
``curated.windows``    windows approved for training (written only after blocking checks pass)
``train.ledger``       which records of which windows each model version saw, and in which role
``train.updates``      one row per fine-tune update: windows, metrics, gate decision
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
    text VARCHAR,
    ts TIMESTAMPTZ,
    metadata VARCHAR
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
"""

_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked")


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
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
                break
            except duckdb.IOException as exc:  # another process holds the file
                if not any(m in str(exc) for m in _LOCK_MARKERS) or time.monotonic() > deadline:
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
            for table in ("raw.events", "raw.rejects", "curated.events", "curated.quarantine", "curated.windows", "raw.windows"):
                con.execute(f"DELETE FROM {table} WHERE window_key = ?", [window_key])
            con.register("new_rows", rows.to_arrow())
            con.execute(
                "INSERT INTO raw.events SELECT window_key, row_number, record_id, text, ts, metadata FROM new_rows"
            )
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

    def read_raw_window(self, window_key: str) -> pl.DataFrame:
        """Parsed rows of a window, ordered by row_number (``RAW_SCHEMA``)."""
        with self.connect() as con:
            return con.sql(
                "SELECT window_key, row_number, record_id, text, ts, metadata FROM raw.events "
                "WHERE window_key = ? ORDER BY row_number",
                params=[window_key],
            ).pl()

    def replace_curated_window(self, window_key: str, curated: pl.DataFrame, quarantine: pl.DataFrame) -> None:
        """Replace a window's curated rows and quarantine rows in one transaction.

        Clears the window's approval: a re-curated window must pass its
        blocking checks again before training sees it.
        """
        with self.connect() as con:
            con.execute("BEGIN")
            for table in ("curated.events", "curated.quarantine", "curated.windows"):
                con.execute(f"DELETE FROM {table} WHERE window_key = ?", [window_key])
            con.register("cur", curated.to_arrow())
            con.execute(
                "INSERT INTO curated.events SELECT window_key, row_number, record_id, text, ts, metadata FROM cur"
            )
            con.register("quar", quarantine.to_arrow())
            con.execute(
                "INSERT INTO curated.quarantine (window_key, row_number, record_id, text, ts, metadata, rule, reason, gx_run_id) "
                "SELECT window_key, row_number, record_id, text, ts, metadata, rule, reason, gx_run_id FROM quar"
            )
            con.execute("COMMIT")

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
            qua = con.execute("SELECT count(*) FROM curated.quarantine WHERE window_key = ?", [window_key]).fetchall()[0][0]
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
        """Approved windows not yet in ``train.ledger``, oldest landing first.

        Args:
            limit: at most this many (None or 0: all).
        """
        sql = (
            "SELECT w.window_key FROM curated.windows w JOIN raw.windows r USING (window_key) "
            "WHERE w.window_key NOT IN (SELECT DISTINCT window_key FROM train.ledger) "
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
    ) -> None:
        """Write an update's ledger rows and its ``train.updates`` row atomically (idempotent per version).

        Args:
            ledger: columns window_key, row_number, record_id, role.
            metrics: ``training.finetune.FinetuneResult.metrics()``.
        """
        with self.connect() as con:
            con.execute("BEGIN")
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
