"""Schema ``monitor``: the evaluation matrix and the drift profile of each window.

``monitor.eval_matrix`` bits/byte of every model version on every window's held-out rows (R[i][j]),
written with an update (``TrainTables.record_update``); ``monitor.window_profile`` one row per profiled
window: drift statistics, p-values, thresholds, alarm (``quality.drift``). ``monitor.forget_requests``
belongs to deletion requests (``orchestration.store.erasure``).
"""

from __future__ import annotations

import duckdb
import polars as pl

from orchestration.store.connection import Connector


class MonitorTables(Connector):
    """Reads and writes of the ``monitor`` schema (a part of ``Warehouse``)."""

    def eval_matrix(self) -> pl.DataFrame:
        """``monitor.eval_matrix``, oldest first (see the table's comment in ``schema.sql`` for the columns)."""
        with self.connect(read_only=True) as con:
            return con.sql("SELECT * FROM monitor.eval_matrix ORDER BY recorded_at, eval_window, phase").pl()

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
            that trained on this window alone, else None), ``trained`` (bool: some update in
            ``train.updates`` trained on the window) and ``pre_update_version`` (the ``parent_version`` of the
            first such update, the champion that had not seen the window; None when it had no parent) and
            ``pre_update_retired`` (bool: that parent is in ``train.retired_versions``).
        """
        with self.connect() as con:
            order = con.execute(
                "SELECT r.window_key FROM raw.windows r JOIN curated.windows w USING (window_key) "
                "WHERE (r.file_mtime_ns, r.file_name) < (SELECT (file_mtime_ns, file_name) FROM raw.windows WHERE "
                "window_key = ?) "
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
                        "SELECT text FROM curated.events WHERE list_contains(?, window_key) ORDER BY window_key, "
                        "row_number",
                        [ref_keys],
                    ).fetchall()
                ]
                if ref_keys
                else []
            )
            rq, rt = self._quarantine_share(con, ref_keys)
            cq, ct = self._quarantine_share(con, [window_key])
            pre = con.execute(
                "SELECT champion_new_bpb FROM train.updates WHERE window_keys = [?]::VARCHAR[] "
                "AND champion_new_bpb IS NOT NULL ORDER BY created_at LIMIT 1",
                [window_key],
            ).fetchall()
            first = con.execute(
                "SELECT parent_version, parent_version IN (SELECT model_version FROM train.retired_versions) "
                "FROM train.updates WHERE list_contains(window_keys, ?) ORDER BY created_at LIMIT 1",
                [window_key],
            ).fetchall()
        return {
            "current": current,
            "reference": reference,
            "reference_keys": ref_keys,
            "earlier_windows": len(earlier),
            "quarantine": (rq, rt, cq, ct),
            "pre_update_bpb": float(pre[0][0]) if pre else None,
            "trained": bool(first),
            "pre_update_version": first[0][0] if first else None,
            "pre_update_retired": bool(first and first[0][1]),
        }

    @staticmethod
    def _quarantine_share(con: duckdb.DuckDBPyConnection, keys: list[str]) -> tuple[int, int]:
        """(quarantined rows, quarantined + curated rows) of the windows ``keys``; (0, 0) for none."""
        if not keys:
            return 0, 0
        quar = con.execute(
            "SELECT count(*) FROM curated.quarantine WHERE list_contains(?, window_key)", [keys]
        ).fetchall()[0][0]
        cur = con.execute("SELECT count(*) FROM curated.events WHERE list_contains(?, window_key)", [keys]).fetchall()[
            0
        ][0]
        return int(quar), int(quar + cur)

    def record_window_profile(self, row: dict) -> None:
        """Insert or replace one ``monitor.window_profile`` row (keys = column names; missing columns NULL).

        Raises:
            ValueError: ``row`` has keys that are not columns of ``monitor.window_profile``.
        """
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
