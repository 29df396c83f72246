"""RHO-LOSS: train on the candidates with the highest reducible holdout loss (Mindermann et al.,
"Prioritized Training on Points that are Learnable, Worth Learning, and Not Yet Learnt", ICML 2022,
sec. 3, Algorithm 1; code ``OATML/RHO-Loss/src/curricula/selection_methods.py``).

Algorithm: an irreducible-loss (IL) model is trained once on holdout data; its per-block losses
l_IL(x) are precomputed for every training block. At each step ``pool * batch_size`` candidates are
drawn, the current model's losses l(x; theta_t) computed in a no-grad forward, and the ``batch_size``
blocks with the largest reducible loss l(x; theta_t) - l_IL(x) are trained on with weight 1: learnable
(low IL loss), worth learning and not yet learnt (high current loss); noisy blocks have high IL loss and
are skipped.

IL model here: a copy of the parent (the champion) fine-tuned for ``il_steps`` AdamW steps on the update's
reference slice (held-out rows of the new data, never trained on); ``il_steps = 0`` lets the champion
itself serve, as the issue allows.

Cost per step: one no-grad forward over ``pool * batch_size`` blocks (about ``pool / 3`` of a training
step's FLOPs). Once per update: ``il_steps`` small training steps and one forward over all N blocks.

Simplifications: the paper's IL model is a separate small model trained to convergence on a holdout
split, with ``pool`` ~ 10; here it is the parent briefly adapted to a small slice, and ``pool`` defaults to
2 because on CPU every candidate forward is wall-clock the strategy must earn back.
"""

from __future__ import annotations

import copy

import torch

from training.data import split_block
from training.selection.base import CandidateBatch, Selection, Selector, TrainState, per_token_loss, sample_loss
from training.selection.params import RhoLossParams

__all__ = ["RhoLoss", "block_losses", "train_il_model"]


@torch.no_grad()
def block_losses(
    model: torch.nn.Module, blocks: torch.Tensor, device: torch.device, batch_size: int = 64
) -> torch.Tensor:
    """(N,) float32 per-block mean token loss of ``model`` over (N, T + 1) ``blocks`` (no grad, CPU result)."""
    out = []
    for i in range(0, blocks.shape[0], batch_size):
        x, y = split_block(blocks[i : i + batch_size].to(device))
        out.append(sample_loss(per_token_loss(model, x, y), y).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def train_il_model(
    parent: torch.nn.Module,
    ref_blocks: torch.Tensor,
    steps: int,
    lr: float,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
) -> torch.nn.Module:
    """A copy of ``parent`` trained ``steps`` AdamW steps (constant ``lr``) on ``ref_blocks``; eval mode."""
    il = copy.deepcopy(parent)
    if steps == 0:
        return il.eval()
    il.train()
    opt = torch.optim.AdamW([p for p in il.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    bs = min(batch_size, ref_blocks.shape[0])
    for _ in range(steps):
        x, y = split_block(ref_blocks[torch.randperm(ref_blocks.shape[0], generator=gen)[:bs]].to(device))
        loss = sample_loss(per_token_loss(il, x, y), y).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return il.eval()


class RhoLoss(Selector):
    """Top ``batch_size`` of ``pool * batch_size`` candidates by reducible loss, weight 1."""

    name = "rho_loss"

    def __init__(self, params: RhoLossParams, reference: torch.Tensor, lr: float, seed: int = 0) -> None:
        """
        Args:
            params: strategy settings.
            reference: (M, T + 1) int64 reference blocks (the IL model's training data), M >= 1.
            lr: learning rate of the IL model's fine-tuning (the update's peak lr).

        Raises:
            ValueError: if ``reference`` is empty.
        """
        super().__init__()
        if reference.dim() != 2 or reference.shape[0] == 0:
            raise ValueError("rho_loss needs a non-empty (M, T + 1) reference slice for its irreducible-loss model")
        self.params, self.reference, self.lr, self.seed = params, reference, lr, seed
        self.pool_factor = params.pool
        self.il_loss = torch.empty(0)

    def start(self, state: TrainState, blocks: torch.Tensor) -> None:
        with self.timed():
            il = train_il_model(
                state.model, self.reference, self.params.il_steps, self.lr, state.batch_size, state.device, self.seed
            )
            self.il_loss = block_losses(il, blocks, state.device)  # (N,)
            del il
        state.model.train()

    def select(self, batch: CandidateBatch, state: TrainState) -> Selection:
        with torch.no_grad():
            current = sample_loss(per_token_loss(state.model, batch.inputs, batch.targets, state.bf16), batch.targets)
        reducible = current.float().cpu() - self.il_loss[batch.index]
        k = min(state.batch_size, len(batch))
        top = torch.topk(reducible, k).indices
        self.stats.observe("reducible_kept", float(reducible[top].mean()))
        self.stats.observe("reducible_pool", float(reducible.mean()))
        return Selection.make(top)
