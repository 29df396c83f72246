"""D3-lite: order the training units of a window along a loss-based directional influence graph.

Source: Xu, Hao, Zhang, Li, "D3: Dynamic Directional graph-constrained Data scheduling" (ICML 2026,
arXiv 2605.31164; only the abstract is public, the repo ``xuyj233/D3`` has no code). This is the
small-scale design of the research notes (continual.md sec. 1, option (b)), not the paper's method.

Algorithm, at the start of every pass over the update's blocks (so the graph is "dynamic"):

1. Units: the N packed blocks are clustered once per update into ``units`` groups by k-means
   (``kmeans_iters`` Lloyd steps, seeded) on their L2-normalised token histograms.
2. Probes: ``probe`` random blocks of each unit; g_k = gradient of unit k's probe loss L_k over all
   trainable parameters (one forward + backward per unit).
3. Edges: w_{i->j} = g_j^T P g_i / L_j, the first-order *relative* decrease of unit j's loss from one
   AdamW step on unit i (P = 1 / (sqrt(v_hat) + eps) from AdamW's second moment; identity before the
   first step). Dividing by L_j makes the graph directional.
4. Order: greedy feedback-arc-set heuristic: repeatedly take the remaining unit with the largest net
   out-influence sum_j (w_{i->j} - w_{j->i}) over the remaining units.
5. Batches: the units' blocks in that order (shuffled within a unit), cut into batches; every block is
   used once per pass, as with uniform's shuffled passes. Weights are 1.

Cost: per pass, ``units`` forward/backward passes over ``probe`` blocks plus a units x units Gram of
flat gradients (negligible), i.e. about ``units * probe / batch_size`` training steps.

Simplifications: first-order edges instead of the paper's loss-change measurements, no explicit
constraint set (the greedy order is the whole schedule), units are token-histogram clusters.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from training.data import IGNORE_INDEX, split_block
from training.selection.base import CandidateBatch, Selection, Selector, TrainState, per_token_loss, sample_loss
from training.selection.params import D3Params

__all__ = ["D3", "greedy_order", "kmeans_units"]


def kmeans_units(blocks: torch.Tensor, vocab: int, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """(N,) int64 unit id of each (N, T + 1) block: k-means on L2-normalised token histograms.

    ``k`` is capped at N; empty clusters are re-seeded with a random block.
    """
    n = blocks.shape[0]
    k = min(k, n)
    ids = blocks.clamp_min(0).clamp_max(vocab - 1)
    hist = torch.zeros(n, vocab).scatter_add_(1, ids, (blocks != IGNORE_INDEX).float())
    hist = torch.nn.functional.normalize(hist, dim=1)
    centers = hist[torch.randperm(n, generator=generator)[:k]].clone()
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(iters):
        assign = (hist @ centers.T).argmax(1)  # cosine similarity on unit vectors
        for c in range(k):
            members = hist[assign == c]
            centers[c] = members.mean(0) if members.numel() else hist[torch.randint(n, (1,), generator=generator)][0]
        centers = torch.nn.functional.normalize(centers, dim=1)
    return assign


def greedy_order(w: torch.Tensor) -> list[int]:
    """Order of the K nodes of a (K, K) edge matrix ``w[i, j]`` = influence of i on j (diagonal ignored):
    repeatedly pick the remaining node with the largest ``sum_j w[i, j] - w[j, i]`` over remaining j."""
    k = w.shape[0]
    w = w.clone().double()
    w.fill_diagonal_(0)
    remaining = list(range(k))
    order = []
    while remaining:
        sub = w[remaining][:, remaining]
        net = sub.sum(1) - sub.sum(0)
        pick = remaining[int(net.argmax())]
        order.append(pick)
        remaining.remove(pick)
    return order


class D3(Selector):
    """Unit order from a first-order directional influence graph, recomputed every pass."""

    name = "d3"

    def __init__(self, params: D3Params, seed: int = 0) -> None:
        super().__init__()
        self.params = params
        self.gen = torch.Generator().manual_seed(seed + 13)
        self.units = torch.empty(0, dtype=torch.long)
        self.blocks = torch.empty(0)
        self.orders: list[list[int]] = []

    def start(self, state: TrainState, blocks: torch.Tensor) -> None:
        with self.timed():
            vocab = int(blocks.max().item()) + 1
            self.blocks = blocks
            self.units = kmeans_units(blocks, vocab, self.params.units, self.params.kmeans_iters, self.gen)

    def influence(self, state: TrainState) -> torch.Tensor:
        """(K, K) edge matrix w[i, j] = g_j^T P g_i / L_j over the current units (see module docstring)."""
        params = [p for g in state.optimizer.param_groups for p in g["params"] if p.requires_grad]
        precond = []
        for p in params:
            st = state.optimizer.state.get(p, {})
            if "exp_avg_sq" in st and "step" in st:
                beta2 = next(g["betas"][1] for g in state.optimizer.param_groups if any(q is p for q in g["params"]))
                v_hat = st["exp_avg_sq"].float() / (1 - beta2 ** float(st["step"]))
                precond.append((1.0 / (v_hat.sqrt() + 1e-8)).flatten())
            else:
                precond.append(torch.ones(p.numel(), device=p.device))
        P = torch.cat(precond)
        grads, losses = [], []
        for u in range(int(self.units.max()) + 1):
            members = (self.units == u).nonzero().flatten()
            if members.numel() == 0:
                continue
            pick = members[torch.randperm(members.numel(), generator=self.gen)[: self.params.probe]]
            x, y = split_block(self.blocks[pick].to(state.device))
            loss = sample_loss(per_token_loss(state.model, x, y, state.bf16), y).mean()
            g = torch.autograd.grad(loss, params)
            grads.append(torch.cat([t.flatten() for t in g]).float())
            losses.append(loss.item())
        G = torch.stack(grads)  # (K, n_params)
        S = (G * P) @ G.T  # S[i, j] = g_i^T P g_j (symmetric)
        L = torch.tensor(losses, device=S.device)
        return S / L[None, :]  # w[i, j] = g_j^T P g_i / L_j

    def batches(
        self, n_blocks: int, size: int, generator: torch.Generator, state: TrainState
    ) -> Iterator[torch.Tensor]:
        buf = torch.empty(0, dtype=torch.long)
        present = sorted(set(self.units.tolist()))
        while True:
            while buf.numel() < size:
                with self.timed():
                    order = greedy_order(self.influence(state).cpu())
                self.orders.append([present[i] for i in order])
                parts = []
                for u in self.orders[-1]:
                    members = (self.units == u).nonzero().flatten()
                    parts.append(members[torch.randperm(members.numel(), generator=generator)])
                buf = torch.cat([buf, *parts])
            yield buf[:size]
            buf = buf[size:]

    def select(self, batch: CandidateBatch, state: TrainState) -> Selection:
        return Selection.make(torch.arange(len(batch)))
