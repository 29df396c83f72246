"""Reptile meta-initialisation over windows: the champion learns an initialisation that adapts in fewer steps.

Algorithm (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms", arXiv 1803.02999,
Algorithm 1 and the batched variant of sec. 3): each window is a task. For each meta-iteration, pick a task,
copy the weights ``theta``, take ``k`` Adam steps on the task's packed blocks (the inner loop, a fresh
optimiser each time), which gives ``phi``, and move the initialisation towards the adapted weights:
``theta <- theta + eps * (phi - theta)``. The outer step size ``eps`` is annealed linearly to 0 over the
meta-iterations (sec. 6 of the paper). With ``k = 1`` this is joint training on the tasks; with ``k > 1``
the update contains the gradient-inner-product term that favours weights from which each task is learned
quickly (sec. 5).

Cost per meta-iteration: ``k`` forward + backward passes over ``batch_size`` blocks of ``seq_len + 1`` tokens
(the same as ``k`` steps of plain fine-tuning) plus two parameter-sized copies; memory: one extra copy of the
weights (``theta``) and the inner Adam state (two more copies). A run of ``meta_iters`` iterations costs
``meta_iters * k`` training steps. No Dagster. In the loop, ``[train] reptile_init = true`` runs
``meta_init`` on the parent before each update's fine-tune (``training.finetune.finetune``), with the update's
replayed rows grouped by window as the tasks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.data import IGNORE_INDEX, pack_texts, split_block


@dataclass(frozen=True)
class ReptileConfig:
    """Settings of one Reptile run.

    Attributes:
        meta_iters: outer iterations (tasks visited, cycling through a shuffled order).
        inner_steps: ``k``, Adam steps on one task per iteration (>= 1).
        inner_lr: Adam learning rate of the inner loop.
        outer_lr: ``eps`` at the first iteration, in (0, 1]; annealed linearly to 0.
        batch_size: blocks per inner step.
        seq_len: tokens per block (``seq_len + 1`` packed).
        seed: seeds the task order and the batches.
    """

    meta_iters: int = 20
    inner_steps: int = 5
    inner_lr: float = 1e-3
    outer_lr: float = 1.0
    batch_size: int = 8
    seq_len: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.meta_iters, self.inner_steps, self.batch_size, self.seq_len) < 1:
            raise ValueError("meta_iters, inner_steps, batch_size and seq_len must be >= 1")
        if not 0 < self.outer_lr <= 1 or not self.inner_lr > 0:
            raise ValueError(f"outer_lr must be in (0, 1] and inner_lr > 0, got {self.outer_lr}, {self.inner_lr}")


@dataclass(frozen=True)
class ReptileResult:
    """What a Reptile run did: iterations, inner steps in total, tokens trained on, mean inner loss per iteration
    (nats/token, after the inner loop's last step)."""

    meta_iters: int
    steps: int
    tokens: int
    inner_losses: list[float]


def lm_loss(model: torch.nn.Module, blocks: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats/token) of a causal LM on packed blocks (B, T + 1), int64."""
    inputs, targets = split_block(blocks)
    logits = model(input_ids=inputs).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def adapt(
    model: torch.nn.Module, blocks: torch.Tensor, steps: int, lr: float, batch_size: int, gen: torch.Generator
) -> float:
    """``steps`` Adam steps (fresh optimiser) of ``model`` in place on random batches of ``blocks`` (N, T + 1);
    returns the last step's loss (nats/token).

    Raises:
        ValueError: ``blocks`` is empty.
    """
    if blocks.shape[0] == 0:
        raise ValueError("a task needs at least one packed block")
    model.train()
    device = next(model.parameters()).device
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        loss = _adam_step(model, opt, blocks, batch_size, gen, device)
    return float(loss.detach())


def _adam_step(model, opt, blocks: torch.Tensor, batch_size: int, gen: torch.Generator, device) -> torch.Tensor:
    """One optimiser step of ``model`` on a random batch of ``batch_size`` rows of ``blocks`` (N, T + 1); returns
    the batch loss (nats/token) before the step."""
    idx = torch.randint(0, blocks.shape[0], (min(batch_size, blocks.shape[0]),), generator=gen)
    loss = lm_loss(model, blocks[idx].to(device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def reptile(model: torch.nn.Module, tokenizer, tasks: Sequence[Sequence[str]], cfg: ReptileConfig) -> ReptileResult:
    """Reptile over ``tasks`` (one list of texts per window), updating ``model``'s weights in place to the
    meta-learned initialisation (module docstring: algorithm, source, cost).

    Args:
        model: a causal LM (``transformers`` ``...ForCausalLM``: ``model(input_ids=...).logits``), float weights.
        tokenizer: its tokenizer (must define ``eos_token_id``; ``training.data.pack_texts``).
        tasks: at least one window's texts.

    Returns:
        ``ReptileResult``.

    Raises:
        ValueError: no task, or a task too short to fill one block.
    """
    task_blocks = [pack_texts(tokenizer, list(t), cfg.seq_len) for t in tasks]
    if not task_blocks or any(b.shape[0] == 0 for b in task_blocks):
        raise ValueError("reptile needs at least one task, each with at least one text")
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    theta = [p.detach().clone() for p in params]
    order: list[int] = []
    losses, tokens = [], 0
    for it in range(cfg.meta_iters):
        if not order:
            order = torch.randperm(len(task_blocks), generator=gen).tolist()
        blocks = task_blocks[order.pop()]
        losses.append(adapt(model, blocks, cfg.inner_steps, cfg.inner_lr, cfg.batch_size, gen))
        tokens += cfg.inner_steps * min(cfg.batch_size, blocks.shape[0]) * cfg.seq_len
        eps = cfg.outer_lr * (1 - it / cfg.meta_iters)
        with torch.no_grad():
            for p, t in zip(params, theta, strict=True):
                t.add_(p.detach() - t, alpha=eps)
                p.copy_(t)
    model.eval()
    return ReptileResult(cfg.meta_iters, cfg.meta_iters * cfg.inner_steps, tokens, losses)


def meta_init(model: torch.nn.Module, tokenizer, tasks: dict[str, Sequence[str]], cfg) -> dict[str, float]:
    """The update's Reptile meta-initialisation (``[train] reptile_init``): ``reptile`` over ``tasks`` in place,
    with ``cfg.reptile_iters`` meta-iterations of ``cfg.reptile_inner_steps`` Adam steps at ``cfg.peak_lr``,
    ``cfg.batch_size`` blocks of ``cfg.seq_len`` tokens, seed ``cfg.seed``.

    Args:
        tasks: ``{window_key: texts}`` of past windows (the update's replayed rows); windows too short to fill
            one block are left out.
        cfg: the update's ``training.config.TrainConfig``.

    Returns:
        Metrics to log (all floats): ``reptile_tasks``, ``reptile_steps``, ``reptile_tokens``,
        ``reptile_inner_loss`` (mean inner loss, nats/token) and ``reptile_wall_s``; only ``reptile_tasks = 0``
        when no task can fill a block (nothing changed).
    """
    start = time.perf_counter()
    usable = [list(t) for t in tasks.values() if pack_texts(tokenizer, list(t), cfg.seq_len).shape[0] > 0]
    if not usable:
        return {"reptile_tasks": 0.0}
    rcfg = ReptileConfig(
        meta_iters=cfg.reptile_iters,
        inner_steps=cfg.reptile_inner_steps,
        inner_lr=cfg.peak_lr,
        batch_size=cfg.batch_size,
        seq_len=cfg.seq_len,
        seed=cfg.seed,
    )
    result = reptile(model, tokenizer, usable, rcfg)
    return {
        "reptile_tasks": float(len(usable)),
        "reptile_steps": float(result.steps),
        "reptile_tokens": float(result.tokens),
        "reptile_inner_loss": float(sum(result.inner_losses) / len(result.inner_losses)),
        "reptile_wall_s": time.perf_counter() - start,
    }


def adaptation_curve(
    model: torch.nn.Module,
    train_blocks: torch.Tensor,
    eval_blocks: torch.Tensor,
    steps: int,
    lr: float,
    batch_size: int = 8,
    seed: int = 0,
) -> list[float]:
    """Held-out loss (nats/token) of ``model`` adapted in place by Adam on ``train_blocks``: before any step, then
    after each of ``steps`` steps (one optimiser throughout); ``steps + 1`` values. How fast an initialisation
    adapts to a new window (the measure of Nichol et al. 2018, sec. 7)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    curve = []
    for step in range(steps + 1):
        model.eval()
        with torch.no_grad():
            curve.append(float(lm_loss(model, eval_blocks)))
        if step == steps:
            break
        model.train()
        _adam_step(model, opt, train_blocks, batch_size, gen, next(model.parameters()).device)
    model.eval()
    return curve
