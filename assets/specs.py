"""``dg.asset`` / ``dg.asset_check`` arguments the stage modules share."""

from orchestration.partitions import windows_partitions

WINDOW_STEP = {"partitions_def": windows_partitions, "pool": "duckdb"}
"""A step on one window partition (``windows``); it reads or writes the warehouse, so it runs in the ``duckdb``
pool. A check without ``partitions_def`` would load every partition."""
