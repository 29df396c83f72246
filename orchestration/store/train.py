"""Schema ``train``: what each model version saw, the updates, the replay buffer and champion moves.

``train.ledger`` which records of which windows each model version saw, and in which role;
``train.updates`` one row per fine-tune update (windows, metrics, gate decision); ``train.replay_buffer``
window-balanced reservoir of past training rows mixed into updates (``training.replay``);
``train.rollbacks`` manual moves of the champion alias back to an earlier version, with the reason;
``train.retired_versions`` versions that saw records a deletion request removed (their windows retrain).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import duckdb
import polars as pl

from orchestration.store.connection import Connector


class TrainTables(Connector):
    """Reads and writes of the ``train`` schema (a part of ``Warehouse``)."""

    def pending_windows(self, limit: int | None = None) -> list[str]:
        """Approved windows not yet in ``train.ledger``, oldest landing first. Windows trained only by
        versions in ``train.retired_versions`` (a deletion request) are pending again: they are retrained.

        Args:
            limit: at most this many (None or 0: all).
        """
        sql = (
            "SELECT w.window_key FROM curated.windows w JOIN raw.windows r USING (window_key) "
            "WHERE w.window_key NOT IN (SELECT DISTINCT window_key FROM train.ledger WHERE role IN ('train', "
            "'new_eval') "
            "AND model_version NOT IN (SELECT model_version FROM train.retired_versions)) "
            "ORDER BY r.file_mtime_ns, r.file_name"
        )
        with self.connect() as con:
            keys = [k for (k,) in con.execute(sql).fetchall()]
        return keys[:limit] if limit else keys

    def trained_by(self, window_keys: Sequence[str]) -> dict[str, str]:
        """``{window_key: model_version}`` for those of ``window_keys`` that ``train.ledger`` records as trained
        (roles train / new_eval) by a version not in ``train.retired_versions``: the windows that are not pending.
        The newest such version (highest number) per window; a short read-only connection.
        """
        if not window_keys:
            return {}
        sql = (
            "SELECT window_key, max(TRY_CAST(model_version AS BIGINT)) AS v, max(model_version) FROM train.ledger "
            "WHERE list_contains(?, window_key) AND role IN ('train', 'new_eval') "
            "AND model_version NOT IN (SELECT model_version FROM train.retired_versions) GROUP BY window_key"
        )
        with self.connect(read_only=True) as con:
            rows = con.execute(sql, [list(window_keys)]).fetchall()
        return {key: str(v) if v is not None else fallback for key, v, fallback in rows}

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
                self._replace_replay_buffer(con, replay_buffer)
            if eval_matrix is not None:
                self._replace_eval_matrix(con, model_version, mlflow_run_id, eval_matrix)
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

    @staticmethod
    def _replace_replay_buffer(con: duckdb.DuckDBPyConnection, replay_buffer: pl.DataFrame) -> None:
        """Replace ``train.replay_buffer`` with ``replay_buffer`` (inside the caller's transaction)."""
        con.execute("DELETE FROM train.replay_buffer")
        con.register(
            "rb",
            replay_buffer.select("window_key", "row_number", "record_id", "text", "reservoir_key").to_arrow(),
        )
        con.execute(
            "INSERT INTO train.replay_buffer (window_key, row_number, record_id, text, reservoir_key) SELECT * FROM rb"
        )

    @staticmethod
    def _replace_eval_matrix(
        con: duckdb.DuckDBPyConnection, model_version: str, mlflow_run_id: str, eval_matrix: pl.DataFrame
    ) -> None:
        """Replace ``model_version``'s ``monitor.eval_matrix`` rows (inside the caller's transaction)."""
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

    def updates(self) -> pl.DataFrame:
        """All fine-tune updates, oldest first."""
        with self.connect(read_only=True) as con:
            return con.sql("SELECT * FROM train.updates ORDER BY created_at").pl()

    def update_parent(self, model_version: str) -> str | None:
        """The parent (champion at training time) of an update's version; None if unknown."""
        with self.connect(read_only=True) as con:
            rows = con.execute(
                "SELECT parent_version FROM train.updates WHERE model_version = ?", [model_version]
            ).fetchall()
        return rows[0][0] if rows else None

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

    # -- champion moves -------------------------------------------------------------------

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
