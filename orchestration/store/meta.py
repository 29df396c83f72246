"""Adaptive fine-tuning state: the meta-learner's rewards (``train.meta_rewards``) and the drift measurements a
recipe is computed from (``monitor.window_profile``, read only).

``train.meta_rewards`` holds one row per rewarded update (bucket, arm, reward, model version); the posterior of
``training.meta.ThompsonRecipeLearner`` is rebuilt from their per-(bucket, arm) count, mean and sum of squared
deviations (``arm_stats``), so it survives restarts and is auditable row by row. The DDL is in ``schema.sql``
(``Warehouse.init_schema``).
"""

from __future__ import annotations

import json
import math

import duckdb

from orchestration.store.connection import Connector
from training.meta import ArmStats

PROFILE_P_COLUMNS = (
    "token_js_p",
    "oov_rate_p",
    "length_ks_p",
    "emerging_z_p",
    "bytes_per_token_p",
    "lm_bpb_p",
    "embedding_mmd2_p",
    "quarantine_rate_p",
)
"""p-value columns of ``monitor.window_profile`` a recipe reads."""


class MetaTables(Connector):
    """Reads and writes of ``train.meta_rewards`` and the recipe's read of ``monitor.window_profile`` (same
    connection rules as ``Warehouse``; call ``Warehouse.init_schema`` once before)."""

    def add_reward(self, bucket: str, arm: str, reward: float, model_version: str | None = None) -> None:
        """Append one reward (bits/byte per 1e6 training tokens) of ``arm`` in drift bucket ``bucket``; a reward
        already stored for ``model_version`` (a retried ``model_update``) is replaced, in one transaction.

        Raises:
            ValueError: a non-finite reward.
        """
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward!r}")
        with self.connect() as con:
            con.execute("BEGIN")
            if model_version is not None:
                con.execute("DELETE FROM train.meta_rewards WHERE model_version = ?", [model_version])
            con.execute(
                "INSERT INTO train.meta_rewards (bucket, arm, reward, model_version) VALUES (?, ?, ?, ?)",
                [bucket, arm, float(reward), model_version],
            )
            con.execute("COMMIT")

    def arm_stats(self) -> dict[tuple[str, str], ArmStats]:
        """``{(bucket, arm): ArmStats(n, mean, m2)}`` over every stored reward ({} when none)."""
        with self.connect(read_only=True) as con:
            try:
                rows = con.execute(
                    "SELECT bucket, arm, count(*), avg(reward), coalesce(var_pop(reward) * count(*), 0) "
                    "FROM train.meta_rewards GROUP BY bucket, arm"
                ).fetchall()
            except duckdb.CatalogException:  # a warehouse whose schema predates the table: no rewards yet
                return {}
        return {(b, a): ArmStats(int(n), float(mean), float(m2)) for b, a, n, mean, m2 in rows}

    def window_profiles(self, window_keys: list[str]) -> list[dict]:
        """The ``monitor.window_profile`` rows of ``window_keys`` (windows never profiled are absent), ordered by
        window key, as dicts with ``window_key``, ``drift``, the ``*_p`` columns and, when the champion was
        scored, ``lm_bpb_window`` / ``lm_bpb_reference`` (bits/byte, from the row's ``info`` JSON)."""
        if not window_keys:
            return []
        cols = ", ".join(PROFILE_P_COLUMNS)
        with self.connect(read_only=True) as con:
            cur = con.execute(
                f"SELECT window_key, drift, info, {cols} FROM monitor.window_profile "
                "WHERE window_key IN (SELECT unnest(?)) ORDER BY window_key",
                [list(window_keys)],
            )
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        for row in rows:
            info = json.loads(row.pop("info") or "{}")
            for key in ("lm_bpb_window", "lm_bpb_reference"):
                if info.get(key) is not None:
                    row[key] = float(info[key])
        return rows
