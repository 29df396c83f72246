"""streamtune training: tokenizer, small causal LM, continual fine-tuning, evaluation, promotion gate, MLflow registry.

Modules (import the one you need; nothing heavy is imported here):

- ``config``: ``ModelConfig``, ``TrainConfig``, ``GateConfig``, ``ReplayConfig`` (no torch).
- ``replay``: window-balanced reservoir replay buffer (no torch); ``cl_metrics``: ACC/BWT/FWT/forgetting.
- ``device``, ``tokenizer``, ``modeling``, ``data``, ``schedule``, ``evaluate``, ``loop``: the pieces.
- ``finetune``: ``finetune()``, the entry point of one update.
- ``gate``: ``decide_promotion()``.
- ``tracking``: ``ModelRegistry`` (MLflow runs, registered versions, aliases).

This package never imports Dagster.
"""
