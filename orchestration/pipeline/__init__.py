"""Dagster-free pipeline steps that the assets and the CLI call: ingest, curate, snapshot, update, monitor, forget.

Each step takes settings, a warehouse and (for model steps) a registry, and returns plain dataclasses;
nothing here imports Dagster, so every step is testable and callable without an instance.
"""
