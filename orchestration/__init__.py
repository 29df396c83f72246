"""Wiring: settings, the DuckDB warehouse and landing zone, Dagster resources, partitions,
sensors, schedules, jobs, ``Definitions``, the daemon driver and the ``streamtune`` CLI."""
