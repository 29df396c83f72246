"""Schema ``curated``: rows that passed the quality gate, the quarantine, GX results and approvals.

``curated.events`` rows that passed (PII-redacted); ``curated.quarantine`` rows that failed, with rule
and reason (the one table with raw values; ``purge_quarantine`` blanks text/metadata after the
retention period); ``curated.window_results`` window-level GX expectations of a window's last curation;
``curated.windows`` windows approved for training (written only after blocking checks pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import polars as pl

from orchestration.store.connection import Connector, row_group_batches
from quality.dedup import NORM_HASH_SQL


@dataclass(frozen=True)
class WindowCounts:
    """Row accounting of one window (all integers are row counts)."""

    window_key: str
    source_rows: int
    parsed_rows: int
    rejected_rows: int
    curated_rows: int
    quarantined_rows: int


class CuratedTables(Connector):
    """Reads and writes of the ``curated`` schema (a part of ``Warehouse``)."""

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
            con.register("cur", row_group_batches(curated))
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
        con.register("quar", row_group_batches(quarantine))
        con.execute(
            "INSERT INTO curated.quarantine (window_key, row_number, record_id, text, ts, metadata, rule, reason, "
            "gx_run_id, duplicate_of_window, duplicate_of_row) "
            "SELECT window_key, row_number, record_id, text, ts, metadata, rule, reason, gx_run_id, "
            "duplicate_of_window, duplicate_of_row FROM quar"
        )
        con.unregister("quar")

    @staticmethod
    def _scrub_raw(con: duckdb.DuckDBPyConnection, window_key: str) -> None:
        """Drop the window's raw text/metadata (``raw.staged_text`` rows; see the PII boundary in
        ``orchestration.store.warehouse``). The table holds uncurated windows only, so this usually
        empties whole row groups, whose blocks the next checkpoint frees."""
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
        with self.connect() as con:
            return con.sql(
                "WITH me AS (SELECT coalesce(file_mtime_ns, 0) AS m, file_name AS f FROM raw.windows WHERE window_key "
                "= ?), "
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
                "quarantined_rows = (SELECT count(*) FROM curated.quarantine WHERE window_key = ?) WHERE window_key = "
                "?",
                [window_key, window_key, window_key],
            )
            con.execute("COMMIT")
        return curated.height

    def purge_quarantine(self, retention_days: float, window_key: str | None = None) -> int:
        """Blank ``text`` and ``metadata`` of quarantine rows older than ``retention_days`` (the row,
        its rule and reason stay, so row accounting still holds), of every window or only ``window_key``.
        Returns rows purged."""
        with self.connect() as con:
            return int(
                con.execute(
                    "UPDATE curated.quarantine SET text = NULL, metadata = NULL "
                    "WHERE quarantined_at < now() - to_microseconds(CAST(? * 86400e6 AS BIGINT)) "
                    "AND (text IS NOT NULL OR metadata IS NOT NULL) AND (? IS NULL OR window_key = ?)",
                    [float(retention_days), window_key, window_key],
                ).fetchall()[0][0]
            )

    def window_exists(self, window_key: str) -> bool:
        """Whether ``window_key`` was ingested (has a ``raw.windows`` row)."""
        with self.connect(read_only=True) as con:
            return bool(
                con.execute("SELECT count(*) FROM raw.windows WHERE window_key = ?", [window_key]).fetchall()[0][0]
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
