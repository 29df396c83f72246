"""streamtune training: tokenizer, small causal LM, continual fine-tuning, evaluation, promotion gate, MLflow registry.

Modules (import the one you need; nothing heavy is imported here):

- ``config``: ``ModelConfig``, ``TrainConfig``, ``GateConfig`` (no torch).
- ``device``, ``tokenizer``, ``modeling``, ``data``, ``schedule``, ``evaluate``, ``loop``: the pieces.
- ``finetune``: ``finetune()``, the entry point of one update.
- ``gate``: ``decide_promotion()``.
- ``tracking``: ``ModelRegistry`` (MLflow runs, registered versions, aliases).

This package never imports Dagster.
"""
