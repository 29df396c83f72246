"""The common interface of the online selection strategies, and the selective training step.

A strategy (``Selector``) sees a *candidate batch* of packed blocks and the training state, and returns
which candidates to train on and with what weight (``Selection``). The training loop
(``training.loop.fit``) then minimises the weighted mean of the kept blocks' per-sample losses::

    loss = sum_i w_i * l_i / sum_i w_i,   l_i = mean token cross-entropy of block i   (nats/token)

so weights only change the *direction* of the step, not its scale, and all-ones weights give the
ordinary mean loss. Two optional hooks cover the strategies that are not per-batch: ``batches`` (D3:
the block order of a pass) and ``after_step`` (DWM: the weighting model's update). ``select`` is the
only method a strategy must write (datatrove ``PipelineStep.run``: one contract, one method).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from training.data import IGNORE_INDEX, split_block

__all__ = [
    "CandidateBatch",
    "Selection",
    "SelectionStats",
    "Selector",
    "TrainState",
    "normalized_entropy",
    "per_token_loss",
    "random_batches",
    "sample_loss",
    "selective_loss",
]


@dataclass
class TrainState:
    """What a strategy may read about the training run at one step (it must not step the optimiser)."""

    model: torch.nn.Module
    """The causal LM being trained (train mode)."""
    optimizer: torch.optim.Optimizer
    """Its AdamW; ``state[p]["exp_avg_sq"]`` is the second moment used by optimizer-aware strategies."""
    device: torch.device
    step: int = 0
    """0-based step about to be taken."""
    total_steps: int = 1
    lr: float = 0.0
    """Learning rate of this step."""
    batch_size: int = 1
    """Blocks to keep per step (``min(cfg.batch_size, N)``)."""
    bf16: bool = False
    """Whether the loop runs the forward under bf16 autocast."""


@dataclass
class CandidateBatch:
    """Candidate blocks of one step.

    Attributes:
        index: (P,) int64 positions of the candidates in the update's packed blocks.
        inputs: (P, T) int64 model inputs; ``targets``: (P, T) int64, ``IGNORE_INDEX`` at padding.
        token_losses: (P, T) float32 per-token losses of the current model (0 at padding), detached;
            set only for strategies with ``scores_in_step`` (taken from the training forward itself).
    """

    index: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    token_losses: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.index.numel())

    def losses(self) -> torch.Tensor:
        """(P,) float32 per-sample mean token loss from ``token_losses`` (requires them)."""
        assert self.token_losses is not None, "token_losses were not computed for this strategy"
        return sample_loss(self.token_losses, self.targets)


@dataclass
class Selection:
    """A strategy's answer.

    Attributes:
        indices: (k,) int64 positions *in the candidate batch* to train on, 1 <= k <= P, no repeats.
        weights: (k,) float32, >= 0, normalised to mean 1 (``Selection.make`` does it).
    """

    indices: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def make(cls, indices: torch.Tensor, weights: torch.Tensor | None = None) -> Selection:
        """Build with weights rescaled to mean 1 (None = all ones).

        Raises:
            ValueError: if no index is given, weights have another length, are negative, non-finite, or
                all zero.
        """
        indices = indices.reshape(-1).long()
        if indices.numel() == 0:
            raise ValueError("a selection must keep at least one candidate")
        if weights is None:
            weights = torch.ones(indices.numel())
        weights = weights.detach().reshape(-1).float().cpu()
        if weights.numel() != indices.numel():
            raise ValueError(f"{weights.numel()} weights for {indices.numel()} kept candidates")
        if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all zero, got {weights.tolist()}")
        return cls(indices.cpu(), weights * (weights.numel() / weights.sum()))


def normalized_entropy(weights: torch.Tensor) -> float:
    """Shannon entropy of ``weights / weights.sum()`` divided by ``log(k)``: 1 = uniform, 0 = one-hot.

    A single weight counts as uniform (1.0).
    """
    k = weights.numel()
    if k <= 1:
        return 1.0
    p = weights.double() / weights.double().sum()
    h = -(p[p > 0] * p[p > 0].log()).sum().item()
    return h / math.log(k)


@dataclass
class SelectionStats:
    """Running totals of a fit's selection, turned into MLflow metrics by ``as_metrics``."""

    steps: int = 0
    kept: int = 0
    candidates: int = 0
    entropy_sum: float = 0.0
    scored_tokens: int = 0
    """Target tokens of candidates that were scored but not trained on (the filter's extra forwards)."""
    seconds: float = 0.0
    """Wall time inside the strategy (scoring, extra passes, its own updates): its overhead."""
    cpu_seconds: float = 0.0
    """Process CPU time of the same (robust to other jobs sharing the machine)."""
    extra: dict[str, float] = field(default_factory=dict)
    """Strategy-specific running sums (``observe``); reported as means."""
    extra_n: dict[str, int] = field(default_factory=dict)

    def observe(self, key: str, value: float) -> None:
        """Add one observation of a strategy-specific statistic (reported as its mean)."""
        self.extra[key] = self.extra.get(key, 0.0) + float(value)
        self.extra_n[key] = self.extra_n.get(key, 0) + 1

    def add(self, selection: Selection, n_candidates: int, scored_tokens: int) -> None:
        self.steps += 1
        self.kept += int(selection.indices.numel())
        self.candidates += n_candidates
        self.entropy_sum += normalized_entropy(selection.weights)
        self.scored_tokens += scored_tokens

    def as_metrics(self, name: str) -> dict[str, float]:
        """``selection_{overhead_s,overhead_cpu_s,kept_fraction,weight_entropy,scored_tokens,steps}`` + extras."""
        steps = max(self.steps, 1)
        out = {
            "selection_overhead_s": self.seconds,
            "selection_overhead_cpu_s": self.cpu_seconds,
            "selection_kept_fraction": self.kept / self.candidates if self.candidates else 1.0,
            "selection_weight_entropy": self.entropy_sum / steps if self.steps else 1.0,
            "selection_scored_tokens": float(self.scored_tokens),
            "selection_steps": float(self.steps),
        }
        out.update({f"selection_{k}": v / max(self.extra_n.get(k, 1), 1) for k, v in self.extra.items()})
        return out


def random_batches(n_blocks: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless minibatch indices: consecutive slices of a stream of fresh random permutations (``loop.fit``'s
    sampler, and the candidate pools of the selection strategies)."""
    buf = torch.empty(0, dtype=torch.long)
    while True:
        while buf.numel() < batch_size:
            buf = torch.cat([buf, torch.randperm(n_blocks, generator=generator)])
        yield buf[:batch_size]
        buf = buf[batch_size:]


def per_token_loss(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, bf16: bool = False
) -> torch.Tensor:
    """(B, T) float32 cross-entropy per token (0 at ``IGNORE_INDEX``), with the autograd graph if enabled."""
    with torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=inputs, use_cache=False).logits  # (B, T, V)
    tok = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    return tok.view_as(targets)


def sample_loss(token_losses: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) mean loss over each row's non-padded targets (a fully padded row gives 0)."""
    n = (targets != IGNORE_INDEX).sum(1).clamp_min(1)
    return token_losses.sum(1) / n


class Selector(ABC):
    """One online selection/weighting strategy. Subclasses implement ``select``; the rest is optional.

    Class attributes:
        name: the ``TrainConfig.selection`` value.
        pool_factor: candidates drawn per kept block (RHO-LOSS and GREATS filter a larger pool).
        scores_in_step: True = ``select`` receives ``token_losses`` from the training forward of the
            candidates (no extra pass; every candidate is also forwarded with gradients).
    """

    name: str = ""
    pool_factor: int = 1
    scores_in_step: bool = False

    def __init__(self) -> None:
        self.stats = SelectionStats()

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Count the wrapped code as selection overhead."""
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.stats.seconds += time.perf_counter() - t0
            self.stats.cpu_seconds += time.process_time() - c0

    def start(self, state: TrainState, blocks: torch.Tensor) -> None:
        """Called once by ``fit`` before the first step with the update's (N, T + 1) blocks."""

    def batches(
        self, n_blocks: int, size: int, generator: torch.Generator, state: TrainState
    ) -> Iterator[torch.Tensor]:
        """Endless stream of candidate index tensors of ``size`` (default: seeded random, as uniform)."""
        return random_batches(n_blocks, size, generator)

    @abstractmethod
    def select(self, batch: CandidateBatch, state: TrainState) -> Selection:
        """Choose the blocks to train on and their weights (at most ``state.batch_size`` of them)."""

    def after_step(self, state: TrainState) -> None:
        """Called after the optimiser step (``state.step`` is the step just taken)."""


class ReferenceSelector(Selector):
    """A selector steered by a reference slice: (M, T + 1) int64 blocks held back from training, M >= 1."""

    def __init__(self, params: Any, reference: torch.Tensor, need: str) -> None:
        """``params``: the strategy's settings; ``ValueError(need)`` when ``reference`` is empty."""
        super().__init__()
        if reference.dim() != 2 or reference.shape[0] == 0:
            raise ValueError(need)
        self.params, self.reference = params, reference


def selective_loss(
    selector: Selector, blocks: torch.Tensor, index: torch.Tensor, state: TrainState
) -> tuple[torch.Tensor, torch.Tensor, Selection]:
    """Forward and weighted loss of one selective step (the loop then backpropagates and steps).

    Args:
        selector: the strategy.
        blocks: (N, T + 1) int64 packed blocks (any device).
        index: (P,) int64 candidate block positions.
        state: the step's state.

    Returns:
        ``(loss, targets, selection)``: the scalar weighted loss with its graph, the (k, T) targets of the
        kept blocks (for token counting), and the selection.
    """
    x, y = split_block(blocks[index].to(state.device))  # (P, T), (P, T)
    if selector.scores_in_step:
        tok = per_token_loss(state.model, x, y, state.bf16)  # (P, T) with graph
        cand = CandidateBatch(index, x, y, token_losses=tok.detach())
        with selector.timed():
            sel = selector.select(cand, state)
        keep = sel.indices.to(state.device)
        per = sample_loss(tok[keep], y[keep])
    else:
        cand = CandidateBatch(index, x, y)
        with selector.timed():
            sel = selector.select(cand, state)
        keep = sel.indices.to(state.device)
        per = sample_loss(per_token_loss(state.model, x[keep], y[keep], state.bf16), y[keep])
    assert sel.indices.numel() <= state.batch_size, (
        f"{selector.name} kept {sel.indices.numel()} blocks, more than the batch size {state.batch_size}"
    )
    w = sel.weights.to(per.device)
    loss = (w * per).sum() / w.sum()
    kept_y = y[keep]
    dropped = int((y != IGNORE_INDEX).sum()) - int((kept_y != IGNORE_INDEX).sum())
    selector.stats.add(sel, len(cand), dropped)
    return loss, kept_y, sel
