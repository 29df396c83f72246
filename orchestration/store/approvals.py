"""Table ``train.approvals``: challengers that passed the promotion gate and wait for a person
(``[gate] require_approval = true``), and the decision: who, why, when.

One row per held model version: ``status`` is ``pending`` until ``streamtune promote`` (``promoted``) or
``streamtune reject`` (``rejected``) decides it; a decided row never changes again. The DDL is in
``schema.sql`` (``Warehouse.init_schema``); the rules are in ``orchestration.pipeline.approval``.
"""

from __future__ import annotations

import polars as pl

from orchestration.store.connection import Connector

STATUSES = ("pending", "promoted", "rejected")


class ApprovalTables(Connector):
    """Reads and writes of ``train.approvals`` (same connection rules as ``Warehouse``; call
    ``Warehouse.init_schema`` once before, which creates the table)."""

    def hold(self, model_version: str, champion_before: str | None, dagster_run_id: str | None) -> bool:
        """Record ``model_version`` as pending approval; a version already recorded is left as it is (a retried
        run does not reopen a decision).

        Returns:
            True if a new pending row was written.
        """
        with self.connect() as con:
            n = con.execute(
                "INSERT INTO train.approvals (model_version, status, champion_before, dagster_run_id) "
                "VALUES (?, 'pending', ?, ?) ON CONFLICT (model_version) DO NOTHING RETURNING model_version",
                [model_version, champion_before, dagster_run_id],
            ).fetchall()
        return bool(n)

    def approval(self, model_version: str) -> dict | None:
        """The row of ``model_version`` as a dict (columns of ``train.approvals``), or None."""
        with self.connect(read_only=True) as con:
            frame = con.sql("SELECT * FROM train.approvals WHERE model_version = ?", params=[model_version]).pl()
        return frame.row(0, named=True) if frame.height else None

    def decide(self, model_version: str, status: str, decided_by: str, reason: str) -> bool:
        """Set the decision of a pending row (``status`` = ``promoted`` or ``rejected``, ``decided_at`` = now).

        Returns:
            True if a pending row was decided; False if there was none (unknown or already decided).

        Raises:
            ValueError: ``status`` is not ``promoted`` or ``rejected``.
        """
        if status not in STATUSES[1:]:
            raise ValueError(f"an approval decision is 'promoted' or 'rejected', got {status!r}")
        with self.connect() as con:
            n = con.execute(
                "UPDATE train.approvals SET status = ?, decided_by = ?, reason = ?, decided_at = now() "
                "WHERE model_version = ? AND status = 'pending' RETURNING model_version",
                [status, decided_by, reason, model_version],
            ).fetchall()
        return bool(n)

    def approvals(self, status: str | None = None) -> pl.DataFrame:
        """``train.approvals`` (all rows, or those with ``status``), oldest request first."""
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        with self.connect(read_only=True) as con:
            return con.sql(f"SELECT * FROM train.approvals {where} ORDER BY requested_at", params=params).pl()

    def statuses(self) -> dict[str, str]:
        """``{model_version: status}`` of every held version (``pending`` | ``promoted`` | ``rejected``)."""
        with self.connect(read_only=True) as con:
            rows = con.execute("SELECT model_version, status FROM train.approvals").fetchall()
        return {str(v): str(st) for v, st in rows}
