"""Thin Dagster assets and asset checks, one module per stage.

``ingest`` (raw_window), ``curate`` (curated_window, approved_window),
``checks`` (blocking GX checks on the window assets), ``train``
(training_snapshot, base_model, challenger_model, model_update, champion_model and the blocking
promotion gate check), ``monitor`` (window_profile, drift_report); ``metadata`` builds their
Markdown tables and MLflow links.
Each asset reads its inputs, calls one ``orchestration.pipeline`` step (or one warehouse method), and
returns metadata; assets never import ``quality/`` or ``training/``.
"""
