"""The DuckDB warehouse: every SQL statement of the project lives in this package.

Schemas ``raw``, ``curated``, ``train`` and ``monitor`` in one DuckDB file (DDL in ``schema.sql`` and
``erasure.sql``); connections are short-lived (one writer process at a time, enforced by the Dagster
pool ``duckdb``). ``Warehouse`` (``warehouse.py``) joins the per-schema parts: ``raw.py``, ``curated.py``,
``train.py``, ``monitor.py`` and ``erasure.py`` (deletion requests), over ``connection.py``.
"""

from orchestration.store.warehouse import Warehouse, WindowCounts

__all__ = ["Warehouse", "WindowCounts"]
