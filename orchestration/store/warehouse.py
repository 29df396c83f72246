"""The DuckDB warehouse: one class, ``Warehouse``, over the per-schema parts of this package.

No Dagster imports: this is the store layer that the Dagster resource in
``orchestration/resources.py`` wraps, and that the CLI uses for ``status``. Connections are short-lived
(``orchestration.store.connection``); the schema is ``schema.sql``.

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
``monitor.forget_requests`` deletion requests (``erasure.sql``, created on the first request)
"""

from __future__ import annotations

import polars as pl

from orchestration.store.connection import ROW_GROUP_SIZE, Connector, load_sql
from orchestration.store.curated import CuratedTables, WindowCounts
from orchestration.store.erasure import ErasureTables
from orchestration.store.monitor import MonitorTables
from orchestration.store.raw import RawTables
from orchestration.store.train import TrainTables

__all__ = ["ROW_GROUP_SIZE", "SCHEMA_SQL", "Warehouse", "WindowCounts"]

SCHEMA_SQL = load_sql("schema.sql")
"""Every schema and table of the warehouse (``schema.sql``; idempotent)."""


class Warehouse(RawTables, CuratedTables, TrainTables, MonitorTables, ErasureTables, Connector):
    """Short-lived connections to one DuckDB file, with the reads and writes of every schema.

    Arguments and errors as ``Connector``'s: ``path`` (the ``warehouse.duckdb`` file) and ``lock_timeout_s``;
    ``duckdb.IOException`` if the file lock is still held after ``lock_timeout_s``.
    """

    def init_schema(self) -> None:
        """Create every schema and table if missing, and migrate older warehouses (idempotent)."""
        with self.connect() as con:
            con.execute(SCHEMA_SQL)
            self.migrate_raw_text(con)

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
