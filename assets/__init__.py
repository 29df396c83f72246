"""Thin Dagster assets and asset checks, one module per stage.

``ingest`` (raw_window), ``curate`` (curated_window, approved_window),
``checks`` (blocking GX checks on the window assets), ``train``
(training_snapshot, base_model, challenger_model, champion_model).
Each asset reads its inputs, calls one ``quality/``, ``training/`` or warehouse
function, and returns metadata.
"""
