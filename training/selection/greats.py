"""Optimizer-aware Filter-then-Weight / GREATS: pick and weight the candidates whose Adam-preconditioned
gradients best reduce the loss on a target set, accounting for their redundancy.

Sources: Wang, Baghershahi, He, Zou, Medya, Yu, "Filter-then-Weight: Online Data Selection and
Reweighting for LLM Fine-Tuning" (arXiv 2604.00001; filter by alignment, then a small QP for weights,
optimizer-aware geometry, factorised outer-product gradients) and Wang, Wu, Song, Mittal, Jia, "GREATS:
Online Selection of High-Quality Data for LLM Training in Every Iteration" (NeurIPS 2024; the
second-order utility and the ghost inner products, ``utils_ghost_dot_prod.py``).

Algorithm, per step (research notes continual.md sec. 3):

1. Draw ``pool * batch_size`` candidates; one forward and a partial backward (to the selected layers'
   outputs only) give every candidate's factored per-sample gradient G_i = A_i^T D_i on the MLP layers of
   the last ``layers`` blocks (``ghost.capture``).
2. Target gradient g_T: mean loss of ``target_batch`` reference blocks (held-out rows of the new data,
   never trained on), differentiated w.r.t. the same layer weights; refreshed every ``target_every`` steps.
3. Preconditioner P = 1 / (sqrt(v_hat) + eps) from AdamW's second moment (rank-1 factorised, so the
   factored form survives: ``ghost.adam_scales``); identity before the first step or with ``adam=false``.
4. Alignment b_i = <P o G_i, g_T> (first-order decrease of the target loss per unit weight); Gram
   K_ij = <P o G_i, P o G_j> (curvature ~ identity: the redundancy between candidates).
5. Filter: keep the ``batch_size`` candidates with the largest b_i.
6. Weight: for the Adam step theta' = theta - (eta / k) P sum_i c_i g_i, the second-order change of the
   target loss is -(eta / k) b^T c + (eta^2 / 2k^2) c^T K c; maximise  b^T c - (eta / 2k) c^T K c  over
   {0 <= c_i <= cap, sum c = k} by projected gradient ascent (k <= 64: microseconds). Candidates whose
   weight is 0 are dropped from the step.

Cost per step: a forward over ``pool * batch_size`` blocks plus a backward through the last block(s)
and the output head only; a forward + partial backward of ``target_batch`` blocks every ``target_every``
steps; O(B^2 d_in d_out) or O(B^2 T^2 (d_in + d_out)) for the Gram, whichever is cheaper.

Simplifications: gradients only on the last blocks' MLP weights (no biases, attention or embeddings);
Adam's momentum is ignored (the update direction is taken as P g, not the moving average); the Hessian in
the quadratic term is the identity; Adam's v is approximated rank-1; the QP is solved approximately
with a fixed number of projected-gradient iterations; GREATS' greedy pick is replaced by the FtW
filter + QP.
"""

from __future__ import annotations

import numpy as np
import torch

from training.data import split_block
from training.selection.base import CandidateBatch, ReferenceSelector, Selection, TrainState
from training.selection.ghost import adam_scales, capture, last_mlp_layers, layer_weight_grads, target_products
from training.selection.params import GreatsParams

__all__ = ["Greats", "project_capped_simplex", "solve_weights"]


def project_capped_simplex(v: np.ndarray, total: float, cap: float) -> np.ndarray:
    """Euclidean projection of (k,) ``v`` onto {0 <= c <= cap, sum c = total}: ``clip(v - tau, 0, cap)``.

    f(tau) = sum clip(v - tau, 0, cap) is piecewise linear and non-increasing with breakpoints at v_i and
    v_i - cap; it is evaluated at all 2k breakpoints at once and tau interpolated on the crossing segment
    (exact, vectorised; k is tiny).

    Raises:
        ValueError: if the set is empty (``total > k * cap`` or ``total < 0``).
    """
    v = np.asarray(v, dtype=np.float64)
    k = v.size
    if total < 0 or total > k * cap + 1e-9:
        raise ValueError(f"no c in [0, {cap}]^{k} sums to {total}")
    taus = np.sort(np.concatenate([v, v - cap]))  # ascending; f descending along it
    f = np.clip(v[None, :] - taus[:, None], 0.0, cap).sum(1)
    i = int(np.searchsorted(-f, -total, side="left"))  # first breakpoint with f <= total
    if i == 0:
        tau = taus[0]
    else:
        t0, t1, f0, f1 = taus[i - 1], taus[i], f[i - 1], f[i]
        tau = t1 if f0 == f1 else t0 + (f0 - total) * (t1 - t0) / (f0 - f1)
    return np.clip(v - tau, 0.0, cap)


def solve_weights(b: torch.Tensor, K: torch.Tensor, eta: float, cap: float, iters: int = 100) -> torch.Tensor:
    """Approximately maximise ``b^T c - eta / (2k) c^T K c`` over {0 <= c <= cap, sum c = k}.

    Projected gradient ascent from all-ones with step ``1 / max(L, max|b|)`` (L = the quadratic term's
    Lipschitz constant), so one iteration moves at most about one unit of weight.

    Args:
        b: (k,) alignments; K: (k, k) symmetric PSD Gram; eta: learning rate (>= 0); cap: >= 1.

    Returns:
        (k,) float32 weights in [0, cap] summing to k.
    """
    bn = b.detach().double().cpu().numpy()
    Kn = K.detach().double().cpu().numpy()
    k = bn.size
    cap = max(cap, 1.0)
    quad = eta / k
    lipschitz = quad * max(float(np.linalg.eigvalsh(Kn).max()), 0.0)
    step = 1.0 / max(lipschitz, float(np.abs(bn).max()), 1e-30)
    c = np.ones(k)
    for _ in range(iters):
        c = project_capped_simplex(c + step * (bn - quad * (Kn @ c)), float(k), cap)
    return torch.from_numpy(c).float()


class Greats(ReferenceSelector):
    """Filter the pool by Adam-preconditioned alignment with the target gradient, then QP weights."""

    name = "greats"

    def __init__(self, params: GreatsParams, reference: torch.Tensor, seed: int = 0) -> None:
        """``reference``: the reference blocks (target set) (``ReferenceSelector``)."""
        super().__init__(
            params, reference, "greats needs a non-empty (M, T + 1) reference slice for its target gradient"
        )
        self.pool_factor = params.pool
        self.gen = torch.Generator().manual_seed(seed + 7)
        self.layers: list[torch.nn.Module] = []
        self.target: list[torch.Tensor] = []

    def start(self, state: TrainState, blocks: torch.Tensor) -> None:
        self.layers = last_mlp_layers(state.model, self.params.layers)

    def _target(self, state: TrainState) -> list[torch.Tensor]:
        if not self.target or state.step % self.params.target_every == 0:
            m = self.reference.shape[0]
            pick = torch.randperm(m, generator=self.gen)[: min(self.params.target_batch, m)]
            x, y = split_block(self.reference[pick].to(state.device))
            _, self.target = layer_weight_grads(state.model, self.layers, x, y, state.bf16)
        return self.target

    def select(self, batch: CandidateBatch, state: TrainState) -> Selection:
        _, factors = capture(state.model, self.layers, batch.inputs, batch.targets, state.bf16)
        target = self._target(state)
        scales = [adam_scales(state.optimizer, layer) if self.params.adam else None for layer in self.layers]
        b, K = target_products(factors, target, scales)
        k = min(state.batch_size, len(batch))
        keep = torch.topk(b, k).indices  # filter
        c = solve_weights(b[keep].cpu(), K[keep][:, keep].cpu(), state.lr, self.params.cap)
        nonzero = c > 1e-6
        self.stats.observe("positive_alignment_fraction", float((b > 0).float().mean()))
        return Selection.make(keep.cpu()[nonzero], c[nonzero])
