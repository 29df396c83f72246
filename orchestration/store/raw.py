"""Schema ``raw``: ingested windows, their parsed records, staged text and unparseable lines.

``raw.windows`` one row per ingested window (file, hash, row counts); ``raw.events`` parsed records
(identity ``window_key, row_number``; ``record_id``, ``ts``; never text); ``raw.staged_text`` text and
metadata of a window's records until the window is curated (the PII boundary, see
``orchestration.store.warehouse``); ``raw.rejects`` lines/rows that could not be parsed, verbatim, with the error.
"""

from __future__ import annotations

import duckdb
import polars as pl

from orchestration.store.connection import Connector, row_group_batches


class RawTables(Connector):
    """Reads and writes of the ``raw`` schema (a part of ``Warehouse``)."""

    @staticmethod
    def migrate_raw_text(con: duckdb.DuckDBPyConnection) -> None:
        """Warehouses made before ``raw.staged_text`` kept raw text in ``raw.events.text/metadata``
        (NULL once curated): move what is still there to ``raw.staged_text`` and drop the columns."""
        cols = {
            c
            for (c,) in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = "
                "'events'"
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
            con.register("new_rows", row_group_batches(rows))
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

    def landing_order(self, windows: set[str]) -> list[str]:
        """``windows`` in landing order (file mtime, then file name); keys not in ``raw.windows`` last, sorted."""
        if not windows:
            return []
        with self.connect(read_only=True) as con:
            order = [
                k
                for (k,) in con.execute(
                    "SELECT window_key FROM raw.windows ORDER BY file_mtime_ns, file_name"
                ).fetchall()
            ]
        return [k for k in order if k in windows] + sorted(windows - set(order))

    def window_files(self, window_keys: list[str]) -> dict[str, str]:
        """Landing file name of each of ``window_keys`` that was ingested (``{window_key: file_name}``)."""
        with self.connect(read_only=True) as con:
            return dict(
                con.execute(
                    "SELECT window_key, file_name FROM raw.windows WHERE list_contains(?, window_key)", [window_keys]
                ).fetchall()
            )
