"""streamtune training: tokenizer, small causal LM, continual fine-tuning, evaluation, promotion gate, MLflow registry.

Modules (import the one you need; nothing heavy is imported here):

- ``config``: ``ModelConfig``, ``TrainConfig``, ``GateConfig``, ``ReplayConfig`` (no torch).
- ``replay``: window-balanced reservoir replay buffer (no torch); ``cl_metrics``: ACC/BWT/FWT/forgetting.
- ``device``, ``tokenizer``, ``modeling``, ``data``, ``schedule``, ``evaluate``, ``loop``: the pieces.
- ``finetune``: ``finetune(FinetuneRequest)``, the entry point of one update, in phases (setup, score, restore,
  train, save); ``finetune_types``: ``FinetuneRequest``, ``FinetuneResult``.
- ``gate``: ``decide_promotion()``.
- ``tracking``: ``ModelRegistry`` (registered versions, aliases, downloads, ``local_copy``) on top of
  ``mlflow_runs.ExperimentRuns`` (runs: params, metrics, dataset inputs, artifacts, system metrics);
  ``model_files``: checksum manifests and structural checks of model files (``local_copy`` verifies with them).

This package never imports Dagster.
"""
