"""DWM-lite: a small weighting model scores the samples of each batch; it is trained by a one-step
hypergradient against the loss on a validation (reference) slice, alternating with the LM.

Source: Yu, Han, Zhou, Tang, Huang, Wang, Tao, "LLM Data Selection and Utilization via Dynamic
Bi-level Optimization" (ICML 2025, arXiv 2507.16178, sec. 3: the data weighting model and its bi-level
update). No public code; the update below is the standard one-step hypergradient (research notes
continual.md sec. 2).

Algorithm:

- Features of block i from the training forward (no extra pass): its mean token loss, the std and the
  max of its token losses, and the mean loss z-scored within the batch (so weights depend on
  batch-mates). Weighting model f_phi: Linear(4, hidden) - tanh - Linear(hidden, 1), last layer zero-
  initialised (uniform weights at the start). Weights w = B * softmax(f_phi(x) / temperature).
- The LM trains on sum_i w_i l_i / B with phi frozen.
- Every ``every`` steps (one stage), after the LM step theta -> theta', phi takes one Adam step on
  dL_val(theta')/dphi = sum_i (dL_val/dw_i) dw_i/dphi, with dL_val/dw_i ~ -(eta / B) g_val(theta')^T
  P g_i: the first-order effect of up-weighting sample i on the validation loss under AdamW's
  preconditioner P. g_i come factored from one forward + partial backward of the stage's last batch,
  g_val from ``target_batch`` reference blocks, both on the MLP weights of the last block (ghost.py).

Cost per step: the weighting MLP on B x 4 features (negligible). Per stage: a forward and partial
backward over the batch and over ``target_batch`` reference blocks, i.e. roughly (B + target_batch) /
(3 B) of a training step, amortised over ``every`` steps.

Simplifications: DWM's weighting model is a transformer over pooled LM states, trained in a few long
stages with LAMBADA as validation; here it is a tiny MLP over loss statistics, updated every few steps
against the update's reference slice. Per-sample gradients are taken at theta' (after the step) rather
than theta, restricted to the last block's MLP weights; momentum is ignored; P is rank-1 factorised.
"""

from __future__ import annotations

import torch

from training.data import IGNORE_INDEX, split_block
from training.selection.base import CandidateBatch, ReferenceSelector, Selection, TrainState
from training.selection.ghost import adam_scales, capture, last_mlp_layers, layer_weight_grads, target_products
from training.selection.params import DwmParams

__all__ = ["Dwm", "batch_features"]


def batch_features(token_losses: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, 4) float32 features: mean, std and max token loss of each block, and the mean z-scored in the batch.

    Args:
        token_losses: (B, T) float32 per-token losses (0 at padding); targets: (B, T) with IGNORE_INDEX padding.
    """
    mask = (targets != IGNORE_INDEX).float()
    n = mask.sum(1).clamp_min(1)
    mean = (token_losses * mask).sum(1) / n
    var = (((token_losses - mean[:, None]) * mask) ** 2).sum(1) / n
    mx = (token_losses * mask).max(1).values
    z = (mean - mean.mean()) / (mean.std() + 1e-8) if mean.numel() > 1 else torch.zeros_like(mean)
    return torch.stack([mean, var.sqrt(), mx, z], dim=1).float()


class Dwm(ReferenceSelector):
    """In-batch weights from a small MLP trained by one-step hypergradients on the reference slice."""

    name = "dwm"
    scores_in_step = True

    def __init__(self, params: DwmParams, reference: torch.Tensor, seed: int = 0) -> None:
        """``reference``: the reference (validation) blocks (``ReferenceSelector``)."""
        super().__init__(params, reference, "dwm needs a non-empty (M, T + 1) reference slice as its validation set")
        g = torch.Generator().manual_seed(seed + 11)
        self.gen = g
        lin1 = torch.nn.Linear(4, params.hidden)
        lin2 = torch.nn.Linear(params.hidden, 1)
        with torch.no_grad():
            lin1.weight.copy_(torch.randn(lin1.weight.shape, generator=g) * 0.5)
            lin1.bias.zero_()
            lin2.weight.zero_()  # uniform weights until the first hypergradient
            lin2.bias.zero_()
        self.net = torch.nn.Sequential(lin1, torch.nn.Tanh(), lin2)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=params.lr)
        self.layers: list[torch.nn.Module] = []
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def weights(self, features: torch.Tensor) -> torch.Tensor:
        """(B,) weights ``B * softmax(f_phi(features) / temperature)`` (with the graph to phi)."""
        s = self.net(features).squeeze(-1) / self.params.temperature
        return torch.softmax(s, dim=0) * features.shape[0]

    def start(self, state: TrainState, blocks: torch.Tensor) -> None:
        self.layers = last_mlp_layers(state.model, 1)

    def select(self, batch: CandidateBatch, state: TrainState) -> Selection:
        feats = batch_features(batch.token_losses, batch.targets).cpu()
        with torch.no_grad():
            w = self.weights(feats)
        self._last = (feats, batch.inputs, batch.targets, w)
        return Selection.make(torch.arange(len(batch)), w)

    def after_step(self, state: TrainState) -> None:
        if self._last is None or (state.step + 1) % self.params.every:
            return
        with self.timed():
            feats, x, y, _ = self._last
            _, factors = capture(state.model, self.layers, x, y, state.bf16)  # g_i at theta'
            m = self.reference.shape[0]
            pick = torch.randperm(m, generator=self.gen)[: min(self.params.target_batch, m)]
            rx, ry = split_block(self.reference[pick].to(state.device))
            _, g_val = layer_weight_grads(state.model, self.layers, rx, ry, state.bf16)
            scales = [adam_scales(state.optimizer, layer) for layer in self.layers]
            b, _ = target_products(factors, g_val, scales, with_gram=False)  # (B,) = g_val^T P g_i
            hyper = -(state.lr / feats.shape[0]) * b.cpu()  # dL_val / dw_i
            self.opt.zero_grad(set_to_none=True)
            (hyper.detach() * self.weights(feats)).sum().backward()
            self.opt.step()
            self.stats.observe("hypergrad_norm", float(hyper.norm()))
