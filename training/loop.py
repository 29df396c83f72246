"""The training loop, the AdamW optimiser, and optimiser-state carry-over between updates.

A plain, visible loop in the style of nanoGPT's ``train.py``: seeded shuffled minibatches of packed
blocks, per-step learning rate from ``schedule.get_lr`` (re-warm + re-decay each update, Ibrahim et al.
2024, arXiv 2403.08763), optional bf16 autocast with fp32 master weights, gradient-norm clipping and
AdamW (Loshchilov & Hutter 2019, arXiv 1711.05101) with weight decay on 2-D (matmul/embedding) weights
only, as in nanoGPT's ``configure_optimizers``.

Carrying AdamW moments into the next update avoids re-estimating them from scratch; the learning rate
stored in that state is stale and is replaced by the new update's peak (``load_optimizer_state``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from training.config import TrainConfig
from training.data import IGNORE_INDEX, split_block
from training.device import bf16_supported
from training.schedule import get_lr
from training.selection.base import SelectionStats, Selector, TrainState, random_batches, selective_loss

__all__ = ["ADAM_BETAS", "FitResult", "fit", "load_optimizer_state", "make_optimizer", "warmup_steps"]

log = logging.getLogger(__name__)

ADAM_BETAS = (0.9, 0.95)
"""AdamW betas (GPT-3 / nanoGPT values; beta2 = 0.95 is steadier than 0.999 for small batches)."""


@dataclass
class FitResult:
    """What one call of ``fit`` did."""

    steps: int
    """Optimiser steps taken."""
    train_tokens: int
    """Target tokens processed (padding excluded), summed over steps."""
    wall_seconds: float
    """Wall-clock time of the loop."""
    tokens_per_second: float
    """``train_tokens / wall_seconds``."""
    curve: list[tuple[int, float, float]] = field(default_factory=list)
    """``(step, loss, lr)``: 1-based step, mean training loss (nats/token) of the steps since the previous
    point, and the lr of that step; every ``log_every`` steps and at the last step."""
    final_loss: float = math.nan
    """Loss of the last curve point."""
    cpu_seconds: float = math.nan
    """Process CPU time of the loop (with one torch thread, the wall-clock it takes on an unshared core)."""
    selection: dict[str, float] = field(default_factory=dict)
    """Online selection statistics (``training.selection``): ``selection_overhead_s``, ``_kept_fraction``,
    ``_weight_entropy``, ``_scored_tokens``, ``_steps`` and strategy extras; the trivial values (0, 1, 1, 0)
    for the plain uniform loop."""


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    """Warm-up length used by ``fit``: ``max(1, round(warmup_fraction * total_steps))``, capped at total."""
    return min(total_steps, max(1, round(warmup_fraction * total_steps)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: two groups, decay (dim >= 2) and no-decay (biases, norms).

    Each group starts at ``lr = initial_lr = cfg.peak_lr``; ``fit`` sets ``lr`` every step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "initial_lr": cfg.peak_lr},
        {"params": no_decay, "weight_decay": 0.0, "initial_lr": cfg.peak_lr},
    ]
    return torch.optim.AdamW(groups, lr=cfg.peak_lr, betas=ADAM_BETAS, eps=1e-8)


def _incompatibility(optimizer: torch.optim.Optimizer, saved: object) -> str | None:
    """Why ``saved`` cannot be loaded into ``optimizer`` (None if it can)."""
    if not isinstance(saved, dict) or "state" not in saved or "param_groups" not in saved:
        return "not an optimizer state_dict"
    if len(saved["param_groups"]) != len(optimizer.param_groups):
        return f"{len(saved['param_groups'])} param groups saved, optimizer has {len(optimizer.param_groups)}"
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"]):
        if len(group["params"]) != len(saved_group["params"]):
            return "parameter count per group differs (different model?)"
        for p, pid in zip(group["params"], saved_group["params"]):
            st = saved["state"].get(pid, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st and tuple(st[key].shape) != tuple(p.shape):
                    return f"state shape {tuple(st[key].shape)} != parameter shape {tuple(p.shape)}"
    return None


def load_optimizer_state(optimizer: torch.optim.Optimizer, path: str | Path, peak_lr: float) -> bool:
    """Restore AdamW moments and step counts from a ``train_state.pt`` written by ``finetune``.

    Only the per-parameter state is carried over. Every hyper-parameter of the current param groups
    (betas, eps, weight_decay) is kept, and ``lr`` and ``initial_lr`` are set to ``peak_lr``:
    ``Optimizer.load_state_dict`` would otherwise restore the previous update's stale ``initial_lr``,
    and a scheduler built on it re-warms to the old peak (verified gotcha).

    Args:
        optimizer: built by ``make_optimizer`` for the same model.
        path: ``train_state.pt`` holding ``{"optimizer": state_dict, ...}``.
        peak_lr: this update's peak learning rate.

    Returns:
        True if the state was loaded; False (optimizer untouched, reason logged at WARNING) if the file is
        missing, unreadable, or does not match the optimizer's parameters.
    """
    path = Path(path)
    if not path.is_file():
        log.info("no optimizer state at %s; starting AdamW from zero moments", path)
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign file: a fresh optimizer is a safe fallback
        log.warning("cannot read optimizer state %s (%s: %s); starting fresh", path, type(e).__name__, e)
        return False
    saved = state.get("optimizer") if isinstance(state, dict) else None
    reason = _incompatibility(optimizer, saved)
    if reason is not None:
        log.warning("optimizer state %s not loaded: %s; starting fresh", path, reason)
        return False
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, kept in zip(optimizer.param_groups, hyper):
        group.update(kept)
        group["lr"] = group["initial_lr"] = peak_lr
    return True


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    blocks: torch.Tensor,
    cfg: TrainConfig,
    *,
    device: torch.device,
    total_steps: int,
    on_step: Callable[[int, float, float], None] | None = None,
    peak_lr: float | None = None,
    start_step: int = 0,
    on_checkpoint: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] | None = None,
    selector: Selector | None = None,
    regularizer: Callable[[], torch.Tensor] | None = None,
) -> FitResult:
    """Train ``model`` for ``total_steps`` AdamW steps on packed ``blocks``.

    Per step: lr = ``get_lr(step, total_steps, cfg.peak_lr, warmup, cfg.peak_lr * cfg.min_lr_ratio)``
    with ``warmup = warmup_steps(total_steps, cfg.warmup_fraction)``; a minibatch of
    ``min(cfg.batch_size, N)`` blocks drawn without replacement within each pass (seeded by ``cfg.seed``);
    forward under bf16 autocast if enabled; mean cross-entropy over non-padded targets
    (``_FitPlan.batch_loss``); clip the global gradient norm to ``cfg.grad_clip`` (if > 0); optimiser
    step. The model is left in train mode.

    Args:
        model: causal LM on ``device`` returning ``.logits`` of shape (B, T, V).
        optimizer: e.g. from ``make_optimizer``; its groups' ``lr`` is overwritten every step.
        blocks: (N, T + 1) int64 from ``data.pack_texts``, N >= 1, on any device.
        cfg: training settings; ``cfg.bf16 = None`` means auto (``device.bf16_supported``).
        device: where ``model`` lives.
        total_steps: number of optimiser steps, >= 1.
        on_step: called as ``on_step(step, loss, lr)`` for every curve point (see ``FitResult.curve``).
        peak_lr: this update's peak (e.g. from ``schedule.ar_meta_peak_lr``); None = ``cfg.peak_lr``. The
            floor stays ``cfg.peak_lr * cfg.min_lr_ratio`` (capped at the peak).
        start_step: resume a killed update at this 0-based step (model and optimizer already restored
            from a checkpoint): the minibatch stream is fast-forwarded by ``start_step`` draws, so the
            resumed run sees exactly the batches and learning rates of an uninterrupted one.
        on_checkpoint: called as ``on_checkpoint(steps_done, train_tokens)`` every ``cfg.checkpoint_every``
            steps (not after the last step), when ``cfg.checkpoint_every > 0``.
        shard: ``(rank, world_size)`` for data-parallel training (``training.distributed``) with ``model``
            wrapped in ``DistributedDataParallel``: same updates as one process on the whole batch
            (``_FitPlan.batch_loss``). Every shard must be non-empty.
        selector: an online selection strategy (``training.selection.make_selector``); None = uniform, the
            plain loop. Not combinable with ``shard``; see ``_FitPlan.batch_loss``.
        regularizer: a penalty added to each step's loss before backward (e.g. ``ewc.EWCPenalty``); the
            logged loss stays the data loss.

    Returns:
        ``FitResult`` (``steps`` = total_steps; ``train_tokens`` counts only the steps run in this call).

    Raises:
        ValueError: if ``blocks`` is empty or malformed, or ``total_steps`` < 1.
        FloatingPointError: if the loss becomes NaN or infinite.
    """
    plan = _FitPlan.make(model, optimizer, blocks, cfg, device, total_steps, peak_lr, start_step, shard, selector)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    model.train()
    curve = _Curve(cfg.log_every, total_steps, on_step)
    train_tokens = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(start_step, total_steps):
        lr = get_lr(step, total_steps, plan.peak, plan.warmup, plan.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr

        loss, loss_value, y, n_targets = plan.batch_loss(model, blocks, next(plan.batches), step, lr)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss is {loss_value} at step {step + 1}/{total_steps} (lr={lr:.3g})")
        optimizer.zero_grad(set_to_none=True)
        if regularizer is not None:
            loss = loss + regularizer()
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        if selector is not None:
            selector.after_step(plan.state)

        train_tokens += int((y != IGNORE_INDEX).sum()) if shard is None else n_targets
        curve.add(step + 1, loss_value, lr)
        if on_checkpoint is not None and _checkpoint_due(step + 1, total_steps, cfg.checkpoint_every):
            on_checkpoint(step + 1, train_tokens)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return plan.result(total_steps, train_tokens, curve.points, curve.pending, wall, cpu)


def _checkpoint_due(steps_done: int, total_steps: int, every: int) -> bool:
    """Every ``every`` steps (0 = never), but not after the last step (the result is saved then)."""
    return bool(every) and steps_done % every == 0 and steps_done < total_steps


@dataclass
class _Curve:
    """``FitResult.curve`` as it grows: a point every ``log_every`` steps and at the last step."""

    log_every: int
    total_steps: int
    on_step: Callable[[int, float, float], None] | None
    points: list[tuple[int, float, float]] = field(default_factory=list)
    pending: list[float] = field(default_factory=list)
    """Losses since the last curve point."""

    def add(self, steps_done: int, loss: float, lr: float) -> None:
        """Record step ``steps_done`` (1-based); emit a point (mean loss since the last one) when due."""
        self.pending.append(loss)
        if steps_done % self.log_every == 0 or steps_done == self.total_steps:
            point = (steps_done, sum(self.pending) / len(self.pending), lr)
            self.points.append(point)
            self.pending.clear()
            if self.on_step is not None:
                self.on_step(*point)


@dataclass
class _FitPlan:
    """What ``fit`` derives from its arguments before the first step, and how it computes one step's loss."""

    device: torch.device
    bf16: bool
    warmup: int
    peak: float
    min_lr: float
    shard: tuple[int, int] | None
    selector: Selector | None
    state: TrainState
    batches: Iterator[torch.Tensor]
    """Minibatch indices, already fast-forwarded past ``start_step`` draws."""
    start_seconds: float = 0.0
    """Wall-clock of the selector's one-off setup (e.g. RHO's IL model); counts as training time."""
    start_cpu: float = 0.0

    @classmethod
    def make(cls, model, optimizer, blocks, cfg, device, total_steps, peak_lr, start_step, shard, selector) -> _FitPlan:
        """Check ``fit``'s arguments (``ValueError``; same names and types as there), start the selector and the
        minibatch stream."""
        if blocks.dim() != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
            raise ValueError(f"`blocks` must be a non-empty (N, T + 1) tensor, got shape {tuple(blocks.shape)}")
        if total_steps < 1:
            raise ValueError(f"`total_steps` must be >= 1, got {total_steps}")
        bf16 = bf16_supported(device) if cfg.bf16 is None else cfg.bf16
        if not 0 <= start_step < total_steps:
            raise ValueError(f"`start_step` must be in [0, total_steps={total_steps}), got {start_step}")
        peak = cfg.peak_lr if peak_lr is None else peak_lr
        batch_size = min(cfg.batch_size, blocks.shape[0])
        if selector is not None and shard is not None:
            raise ValueError("online data selection is not supported with data-parallel `shard` training")
        state = TrainState(model, optimizer, device, total_steps=total_steps, batch_size=batch_size, bf16=bf16)
        plan = cls(
            device=device,
            bf16=bf16,
            warmup=warmup_steps(total_steps, cfg.warmup_fraction),
            peak=peak,
            min_lr=min(cfg.peak_lr * cfg.min_lr_ratio, peak),
            shard=shard,
            selector=selector,
            state=state,
            batches=iter(()),
        )
        if selector is not None:
            t_start, c_start = time.perf_counter(), time.process_time()
            selector.start(state, blocks)
            plan.start_seconds, plan.start_cpu = time.perf_counter() - t_start, time.process_time() - c_start
            pool = min(blocks.shape[0], batch_size * selector.pool_factor)
            plan.batches = selector.batches(blocks.shape[0], pool, torch.Generator().manual_seed(cfg.seed), state)
        else:
            plan.batches = random_batches(blocks.shape[0], batch_size, torch.Generator().manual_seed(cfg.seed))
        for _ in range(start_step):  # resume: replay the same minibatch stream
            next(plan.batches)
        return plan

    def batch_loss(
        self, model: torch.nn.Module, blocks: torch.Tensor, idx: torch.Tensor, step: int, lr: float
    ) -> tuple[torch.Tensor, float, torch.Tensor, int | None]:
        """``(loss to backpropagate, logged loss value, targets y (B, T), global target count or None)``.

        Plain loop: mean cross-entropy of the minibatch ``blocks[idx]`` over non-padded targets.

        Data parallel (``shard = (rank, world_size)``): every rank draws the same global minibatch and
        trains on rows ``rank::world_size`` of it. The loss is the shard's token sum over the global
        batch's target tokens times ``world_size`` (DDP averages gradients over ranks), so gradients,
        clipping and updates equal those of one process on the whole batch; the logged loss is the global
        batch mean (one all-reduce). Every shard must be non-empty.

        Online selection (``selector``): each step draws ``selector.pool_factor * batch`` candidate blocks
        (in the selector's order, ``Selector.batches``), the selector picks the kept blocks and their
        weights, and the loss is the weighted mean of the kept blocks' losses
        (``selection.base.selective_loss``). A resumed run replays the candidate stream but not the
        selector's own state.
        """
        if self.selector is not None:  # online selection: weighted mean loss of the kept blocks, y = their targets
            self.state.step, self.state.lr = step, lr
            loss, y, _ = selective_loss(self.selector, blocks, idx, self.state)
            return loss, loss.item(), y, None
        shard, n_targets = self.shard, None
        if shard is not None:  # data parallel: this rank's rows of the global batch
            n_targets = int((blocks[idx, 1:] != IGNORE_INDEX).sum())
            idx = idx[shard[0] :: shard[1]]
        x, y = split_block(blocks[idx].to(self.device))  # (B, T), (B, T)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = model(input_ids=x, use_cache=False).logits  # (B, T, V)
        if shard is None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
            return loss, loss.item(), y, None
        loss_sum = F.cross_entropy(
            logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        loss = loss_sum * (shard[1] / max(1, n_targets))
        total = loss_sum.detach().reshape(1).clone()
        torch.distributed.all_reduce(total)
        return loss, float(total) / max(1, n_targets), y, n_targets

    def result(
        self,
        total_steps: int,
        train_tokens: int,
        curve: list[tuple[int, float, float]],
        pending: list[float],
        loop_seconds: float,
        loop_cpu: float,
    ) -> FitResult:
        """The ``FitResult`` of a finished loop (the selector's setup time included)."""
        wall = loop_seconds + self.start_seconds
        selector = self.selector
        return FitResult(
            steps=total_steps,
            train_tokens=train_tokens,
            wall_seconds=wall,
            tokens_per_second=train_tokens / wall if wall > 0 else math.inf,
            curve=curve,
            final_loss=curve[-1][1] if curve else (sum(pending) / len(pending) if pending else math.nan),
            cpu_seconds=loop_cpu + self.start_cpu,
            selection=selector.stats.as_metrics(selector.name)
            if selector is not None
            else SelectionStats().as_metrics("uniform"),
        )
