"""The DuckDB warehouse: every SQL statement of the project lives in this package.

Schemas ``raw``, ``curated``, ``train`` and ``monitor`` in one DuckDB file; connections are
short-lived (one writer process at a time, enforced by the Dagster pool ``duckdb``).
"""

from orchestration.store.warehouse import Warehouse, WindowCounts

__all__ = ["Warehouse", "WindowCounts"]
