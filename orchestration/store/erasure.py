"""Deletion requests in the warehouse: find the rows a request's criteria match, delete them in one
transaction, and keep ``monitor.forget_requests`` (the steps around it are ``orchestration.pipeline.forget``).

A criterion is an equality on a known column (``record_id``, ``window_key``, ``text``) or on a top-level
key of the ``metadata`` JSON; field names are validated (``FIELD``) and values are always bound
parameters, never interpolated.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl

from orchestration.store.connection import Connector, load_sql

FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")
"""A field name a request may use (a column or a metadata key); other metadata keys are never offered."""

ROW_TABLES = ("raw.events", "raw.staged_text", "curated.events", "curated.quarantine", "train.replay_buffer")
"""Tables whose rows a request deletes by identity (window_key, row_number); ``raw.rejects`` comes after them."""

_RAW_ROWS = (
    "(SELECT e.window_key, e.row_number, e.record_id, s.text, s.metadata FROM raw.events e "
    "LEFT JOIN raw.staged_text s USING (window_key, row_number)) AS raw_rows"
)
"""Parsed rows with their staged text/metadata (NULL once the window is curated: the text is then in
``curated.events`` / ``curated.quarantine``)."""


@dataclass(frozen=True)
class Criterion:
    """One equality: ``column`` is ``record_id``, ``window_key``, ``text`` or ``metadata``; ``key`` is the
    field name (the JSON key for metadata and rejects)."""

    field: str
    column: str
    key: str
    value: str

    def describe(self) -> dict:
        """``{field, column, value_sha256}``: the criterion as stored and reported (never the value itself)."""
        return {
            "field": self.field,
            "column": self.column,
            "value_sha256": hashlib.sha256(self.value.encode()).hexdigest(),
        }


@dataclass
class ErasureMatch:
    """What a request's criteria match in the warehouse, read in one connection."""

    rows: pl.DataFrame
    """Matching parsed rows: window_key, row_number, record_id (every table holding a copy uses this identity)."""
    rejects: pl.DataFrame
    """Matching ``raw.rejects`` lines: window_key, row_number."""
    ledger: list[tuple[str, str, int]]
    """(model_version, role, rows) of ``train.ledger`` rows on the matching rows."""
    updates: list[tuple[str, str | None, list[str]]]
    """(model_version, parent_version, window_keys) of every update, oldest first."""
    retired: set[str]
    """Versions already in ``train.retired_versions``."""
    first_train: int
    """Matching rows the first update trained on (its base tokenizer was built from them)."""


def _json_path(key: str) -> str:
    assert FIELD.fullmatch(key), key  # validated names only; still passed as a bound parameter
    return f'$."{key}"'


def _row_predicate(c: Criterion, alias: str = "") -> tuple[str, list[Any]]:
    """SQL condition (with ``?`` placeholders) and its parameters for a row table."""
    p = f"{alias}." if alias else ""
    if c.column == "metadata":
        return (f"(json_valid({p}metadata) AND json_extract_string({p}metadata, ?) = ?)", [_json_path(c.key), c.value])
    return f"{p}{c.column} = ?", [c.value]


def _reject_predicate(c: Criterion) -> tuple[str, list[Any]]:
    """SQL condition and parameters for ``raw.rejects``: the window, or the field of the line's JSON object."""
    if c.column == "window_key":
        return "window_key = ?", [c.value]
    return "(json_valid(raw) AND json_type(raw) = 'OBJECT' AND json_extract_string(raw, ?) = ?)", [
        _json_path(c.key),
        c.value,
    ]


def _any(preds: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    sql = " OR ".join(p for p, _ in preds) or "FALSE"
    params = [x for _, ps in preds for x in ps]
    return f"({sql})", params


def _matched_rows(con: duckdb.DuckDBPyConnection, criteria: list[Criterion]) -> pl.DataFrame:
    """(window_key, row_number, record_id) of every matching row; the replay buffer only holds copies of
    curated rows (same identity), so it is covered by these keys."""
    where, params = _any([_row_predicate(c) for c in criteria])
    tables = (_RAW_ROWS, "curated.events", "curated.quarantine")
    sql = " UNION ".join(f"SELECT window_key, row_number, record_id FROM {t} WHERE {where}" for t in tables)
    return con.sql(f"SELECT DISTINCT * FROM ({sql}) ORDER BY window_key, row_number", params=params * len(tables)).pl()


class ErasureTables(Connector):
    """Deletion requests against the warehouse (a part of ``Warehouse``)."""

    def metadata_keys(self) -> set[str]:
        """Every top-level key of a ``metadata`` JSON object in raw, curated and quarantine rows that is a
        valid field name (``FIELD``)."""
        sql = " UNION ".join(
            f"SELECT DISTINCT unnest(json_keys(metadata)) AS k FROM {t} WHERE metadata IS NOT NULL "
            "AND json_valid(metadata) AND json_type(metadata) = 'OBJECT'"
            for t in ("raw.staged_text", "curated.events", "curated.quarantine")
        )
        with self.connect(read_only=True) as con:
            return {k for (k,) in con.execute(sql).fetchall() if k and FIELD.fullmatch(k)}

    def find_erasure(self, criteria: list[Criterion]) -> ErasureMatch:
        """The rows, reject lines and ledger entries the criteria (OR-ed) match, with the update lineage.

        Creates ``monitor.forget_requests`` if missing (``erasure.sql``).
        """
        with self.connect() as con:
            con.execute(load_sql("erasure.sql"))
            rows = _matched_rows(con, criteria)
            con.register("fg_rows", rows.to_arrow())
            rej_where, rej_params = _any([_reject_predicate(c) for c in criteria])
            rejects = con.sql(
                f"SELECT window_key, row_number FROM raw.rejects WHERE {rej_where}", params=rej_params
            ).pl()
            ledger = con.execute(
                "SELECT l.model_version, l.role, count(*) FROM train.ledger l JOIN fg_rows r USING (window_key, "
                "row_number) "
                "GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
            updates = con.execute(
                "SELECT model_version, parent_version, window_keys FROM train.updates ORDER BY created_at"
            ).fetchall()
            retired = {v for (v,) in con.execute("SELECT model_version FROM train.retired_versions").fetchall()}
            first_train = con.execute(
                "SELECT count(*) FROM train.ledger l JOIN fg_rows r USING (window_key, row_number) WHERE l.role = "
                "'train' "
                "AND l.model_version = (SELECT model_version FROM train.updates ORDER BY created_at LIMIT 1)"
            ).fetchall()[0][0]
            con.unregister("fg_rows")
        return ErasureMatch(rows, rejects, ledger, updates, retired, first_train)

    def erasure_preview(self, rows: pl.DataFrame, rejects: pl.DataFrame) -> dict[str, int]:
        """Rows ``erase`` would delete, per table (``ROW_TABLES``, then ``raw.rejects``); changes nothing."""
        with self.connect(read_only=True) as con:
            con.register("fg_rows", rows.to_arrow())
            out = {
                t: int(
                    con.execute(f"SELECT count(*) FROM {t} JOIN fg_rows USING (window_key, row_number)").fetchall()[0][
                        0
                    ]
                )
                for t in ROW_TABLES
            }
        out["raw.rejects"] = rejects.height
        return out

    def erase(
        self,
        rows: pl.DataFrame,
        rejects: pl.DataFrame,
        *,
        window_keys: list[str],
        retire: list[tuple[str, str]],
        request: dict[str, Any],
    ) -> dict[str, int]:
        """Delete a request's rows everywhere in one transaction and record the request.

        Deletes ``rows`` (by window_key, row_number) from ``ROW_TABLES`` and ``rejects`` from ``raw.rejects``;
        refreshes the row counts of ``window_keys`` in ``raw.windows`` / ``curated.windows`` (a window left
        without curated rows loses its approval); adds ``retire`` (model_version, reason) to
        ``train.retired_versions``; inserts the ``monitor.forget_requests`` row (status ``deleted``).

        Args:
            request: the request row's values: request_id, actor, reason, criteria (JSON text), record_ids,
                windows, trained_versions, derived_versions, evaluated_versions, champion_before,
                retrain_windows (``deleted`` is filled in here).

        Returns: rows deleted per table (``ROW_TABLES``, then ``raw.rejects``).
        """
        with self.connect() as con:
            con.execute(load_sql("erasure.sql"))
            con.execute("BEGIN")
            deleted = self._delete_rows(con, rows, rejects)
            self._refresh_window_counts(con, window_keys)
            for version, why in retire:
                con.execute(
                    "INSERT INTO train.retired_versions (model_version, request_id, reason) VALUES (?, ?, ?)",
                    [version, request["request_id"], why],
                )
            r = request
            con.execute(
                "INSERT INTO monitor.forget_requests (request_id, actor, reason, criteria, deleted, record_ids, "
                "windows, "
                "trained_versions, derived_versions, evaluated_versions, champion_before, retrain_windows, "
                "retrain_run_ids, "
                "status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, [], 'deleted')",
                [
                    r["request_id"],
                    r["actor"],
                    r["reason"],
                    r["criteria"],
                    json.dumps(deleted),
                    r["record_ids"],
                    r["windows"],
                    r["trained_versions"],
                    r["derived_versions"],
                    r["evaluated_versions"],
                    r["champion_before"],
                    r["retrain_windows"],
                ],
            )
            con.execute("COMMIT")
        return deleted

    @staticmethod
    def _delete_rows(con: duckdb.DuckDBPyConnection, rows: pl.DataFrame, rejects: pl.DataFrame) -> dict[str, int]:
        con.register("fg_rows", rows.to_arrow())
        con.register("fg_rejects", rejects.to_arrow())
        deleted: dict[str, int] = {}
        for table in ROW_TABLES:
            n = con.execute(
                f"DELETE FROM {table} t USING fg_rows r WHERE t.window_key = r.window_key "
                "AND t.row_number = r.row_number"
            ).fetchall()[0][0]
            deleted[table] = int(n)
        deleted["raw.rejects"] = int(
            con.execute(
                "DELETE FROM raw.rejects t USING fg_rejects r WHERE t.window_key = r.window_key "
                "AND t.row_number = r.row_number"
            ).fetchall()[0][0]
        )
        return deleted

    @staticmethod
    def _refresh_window_counts(con: duckdb.DuckDBPyConnection, window_keys: list[str]) -> None:
        con.execute(
            "UPDATE raw.windows w SET parsed_rows = (SELECT count(*) FROM raw.events e WHERE e.window_key = "
            "w.window_key), "
            "rejected_rows = (SELECT count(*) FROM raw.rejects j WHERE j.window_key = w.window_key) "
            "WHERE list_contains(?, w.window_key)",
            [window_keys],
        )
        con.execute(
            "UPDATE raw.windows SET source_rows = parsed_rows + rejected_rows WHERE list_contains(?, window_key)",
            [window_keys],
        )
        con.execute(
            "UPDATE curated.windows w SET curated_rows = (SELECT count(*) FROM curated.events e WHERE e.window_key = "
            "w.window_key), "
            "quarantined_rows = (SELECT count(*) FROM curated.quarantine q WHERE q.window_key = w.window_key) "
            "WHERE list_contains(?, w.window_key)",
            [window_keys],
        )
        # a window left without curated rows is no longer approved (nothing in it to train on)
        con.execute(
            "DELETE FROM curated.windows WHERE list_contains(?, window_key) AND curated_rows = 0", [window_keys]
        )

    def finish_forget_request(
        self, request_id: str, *, champion_after: str | None, retrain_run_ids: list[str], status: str, report_path: str
    ) -> None:
        """Record the outcome of a request (after the files, the registry and the retrain request)."""
        with self.connect() as con:
            con.execute(
                "UPDATE monitor.forget_requests SET champion_after = ?, retrain_run_ids = ?, status = ?, "
                "report_path = ? WHERE request_id = ?",
                [champion_after, retrain_run_ids, status, report_path, request_id],
            )

    def forget_requests(self) -> pl.DataFrame:
        """``monitor.forget_requests``, oldest first (empty frame before the first request)."""
        with self.connect() as con:
            con.execute(load_sql("erasure.sql"))
            return con.sql("SELECT * FROM monitor.forget_requests ORDER BY requested_at").pl()
