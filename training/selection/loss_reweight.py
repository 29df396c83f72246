"""Loss-based reweighting within the batch (Sow et al., "Dynamic Loss-Based Sample Reweighting for
Improved Large Language Model Pretraining", ICLR 2025, sec. 3).

Algorithm: from the training forward's per-sample losses l_i (nats/token) of the batch, z-score them
within the batch, z_i = (l_i - mean) / std, map them to scores s_i by a rule and weight the samples by
w = B * softmax(s / temperature), so the weights average 1 and depend on batch-mates. Rules:

- "linupper" (default): s_i = min(z_i, cap): weight grows with the loss (low-loss, already-learned or
  redundant samples are down-weighted, the paper's main finding), capped so that outliers (often noise)
  are not amplified without bound;
- "quadratic": s_i = -z_i^2 / 2: down-weights both the easiest and the hardest samples;
- "extremes": s_i = +z_i^2 / 2: up-weights both tails.

Cost per step: O(B) on losses the training forward computes anyway; no extra pass.

Simplifications: the paper anneals the weighting strength over training and defines the rules on
losses normalised by a running (not in-batch) statistic; this version uses in-batch z-scores and a
fixed temperature. The rule names follow the paper, the exact formulas are a reconstruction
(research notes: [V] abstract only).
"""

from __future__ import annotations

import torch

from training.selection.base import CandidateBatch, Selection, Selector, TrainState
from training.selection.params import LossReweightParams

__all__ = ["LossReweight", "loss_weights"]


def loss_weights(
    losses: torch.Tensor, rule: str = "linupper", temperature: float = 1.0, cap: float = 1.0
) -> torch.Tensor:
    """(B,) float32 weights with mean 1 from (B,) per-sample losses (see the module docstring).

    A batch of one, or of identical losses, gets uniform weights.

    Raises:
        ValueError: on an unknown ``rule``.
    """
    losses = losses.detach().float().reshape(-1)
    if losses.numel() < 2:
        return torch.ones_like(losses)
    z = (losses - losses.mean()) / (losses.std() + 1e-8)
    if rule == "linupper":
        s = z.clamp(max=cap)
    elif rule == "quadratic":
        s = -0.5 * z * z
    elif rule == "extremes":
        s = 0.5 * z * z
    else:
        raise ValueError(f"unknown loss-reweighting rule {rule!r}")
    return torch.softmax(s / temperature, dim=0) * losses.numel()


class LossReweight(Selector):
    """Keep the whole batch, weights from the in-batch loss distribution."""

    name = "loss_reweight"
    scores_in_step = True

    def __init__(self, params: LossReweightParams) -> None:
        super().__init__()
        self.params = params

    def select(self, batch: CandidateBatch, state: TrainState) -> Selection:
        w = loss_weights(batch.losses(), self.params.rule, self.params.temperature, self.params.cap)
        return Selection.make(torch.arange(len(batch)), w)
