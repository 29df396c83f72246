"""Uniform: train on every drawn block with weight 1 (the baseline every strategy is measured against).

Algorithm: keep all candidates of a batch of ``batch_size`` random blocks; weights 1. Source: standard
minibatch SGD; the research notes (continual.md sec. 7) use it as the "random" selector. Cost per step:
nothing beyond the training step. ``fit`` never calls this class for ``selection="uniform"``: it runs its
ordinary loss (so the default path stays bit-for-bit what it was); the class exists so the strategy can
also be driven through the selective path, where it reproduces the same batches and loss up to
floating-point summation order.
"""

from __future__ import annotations

import torch

from training.selection.base import CandidateBatch, Selection, Selector, TrainState

__all__ = ["Uniform"]


class Uniform(Selector):
    """Keep all candidates, weight 1."""

    name = "uniform"

    def select(self, batch: CandidateBatch, state: TrainState) -> Selection:
        return Selection.make(torch.arange(len(batch)))
