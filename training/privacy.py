"""Differentially private updates: DP-SGD on the adapter parameters with Opacus (``TrainConfig.dp_epsilon``).

DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy", CCS, alg. 1): each step samples a
Poisson batch (every packed block independently with rate ``q = batch_size / N``), clips each block's
gradient to L2 norm ``dp_max_grad_norm``, sums, adds Gaussian noise of std ``sigma * dp_max_grad_norm`` and
averages by the expected batch size; AdamW then steps on the noisy gradient (DP holds for any
post-processing). ``sigma`` is the smallest noise multiplier for which the RDP accountant (Mironov 2017;
Opacus ``RDPAccountant``) reaches ``(dp_epsilon, dp_delta)`` after this update's steps.

What it covers: only the trainable parameters, i.e. the LoRA adapter (``adapter = "lora"``; the base is
frozen and was not trained on the stream). The privacy unit is one packed block of ``seq_len + 1`` tokens:
a stream row longer than a block, or several blocks of one person, get a proportionally weaker guarantee
(group privacy). The before/after evaluations and the data-selection strategies are not private and are
off (``selection`` must be "uniform"); the held-out evaluation rows are never trained on.

Cumulative (epsilon, delta): the accountant history of the lineage (``(sigma, q, steps)`` per update) is
kept in ``train_state.pt`` under ``"dp_history"``; composing it with this update's steps gives the
cumulative epsilon at ``dp_delta`` (an upper bound: updates on disjoint windows compose in parallel).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from training.config import TrainConfig
from training.data import IGNORE_INDEX, split_block
from training.loop import FitResult, warmup_steps
from training.schedule import get_lr

__all__ = ["DPReport", "dp_fit"]


@dataclass
class DPReport:
    """The privacy spent by one DP update and by its lineage."""

    epsilon: float
    """Epsilon of this update alone at ``delta`` (RDP accountant)."""
    cumulative_epsilon: float
    """Epsilon of every DP update of the lineage so far, this one included, composed at ``delta``."""
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    history: list[tuple[float, float, int]] = field(default_factory=list)
    """``(noise_multiplier, sample_rate, steps)`` of every DP update of the lineage (stored in train_state)."""

    def metrics(self) -> dict[str, float]:
        """``dp_epsilon``, ``dp_epsilon_cumulative``, ``dp_delta``, ``dp_noise_multiplier``, ``dp_sample_rate``."""
        return {
            "dp_epsilon": self.epsilon,
            "dp_epsilon_cumulative": self.cumulative_epsilon,
            "dp_delta": self.delta,
            "dp_noise_multiplier": self.noise_multiplier,
            "dp_sample_rate": self.sample_rate,
        }


def _epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    from opacus.accountants import RDPAccountant  # lazy: opacus is the optional `privacy` extra

    accountant = RDPAccountant()
    accountant.history = [tuple(h) for h in history]
    return float(accountant.get_epsilon(delta=delta))


def _dp_loop(gsm, dp_opt, optimizer, blocks, cfg: TrainConfig, device, total_steps: int, peak_lr: float, q, generator):
    """The DP-SGD steps of ``dp_fit``: Poisson batch, per-block mean token loss, ``DPOptimizer.step`` (clip,
    noise, AdamW). Returns ``(curve, train_tokens)``."""
    n = blocks.shape[0]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    warmup, min_lr = warmup_steps(total_steps, cfg.warmup_fraction), min(cfg.peak_lr * cfg.min_lr_ratio, peak_lr)
    curve, pending, tokens = [], [], 0
    for step in range(total_steps):
        lr = get_lr(step, total_steps, peak_lr, warmup, min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = (torch.rand(n, generator=generator) < q).nonzero().flatten()  # Poisson sampling
        dp_opt.zero_grad(set_to_none=True)
        if idx.numel() == 0:  # an empty Poisson batch: the step is pure noise (Opacus' empty-batch path)
            for p in params:
                p.grad_sample = torch.zeros((0, *p.shape), device=p.device)
        else:
            x, y = split_block(blocks[idx].to(device))  # (B, T), (B, T)
            logits = gsm(input_ids=x, use_cache=False).logits  # (B, T, V)
            per_token = F.cross_entropy(
                logits.float().transpose(1, 2), y, ignore_index=IGNORE_INDEX, reduction="none"
            )  # (B, T)
            counts = (y != IGNORE_INDEX).sum(dim=1).clamp(min=1)
            loss = (per_token.sum(dim=1) / counts).mean()  # mean over blocks of each block's mean token loss
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"DP training loss is {loss.item()} at step {step + 1}/{total_steps}")
            loss.backward()
            pending.append(loss.item())
            tokens += int((y != IGNORE_INDEX).sum())
        dp_opt.step()
        if ((step + 1) % cfg.log_every == 0 or step + 1 == total_steps) and pending:
            curve.append((step + 1, sum(pending) / len(pending), lr))
            pending = []
    for p in params:
        p.grad_sample = None
    return curve, tokens


def dp_fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    blocks: torch.Tensor,
    cfg: TrainConfig,
    *,
    device: torch.device,
    total_steps: int,
    peak_lr: float,
    history: list[tuple[float, float, int]] | None = None,
) -> tuple[FitResult, DPReport]:
    """DP-SGD for ``total_steps`` steps on ``blocks`` ((N, T + 1) int64), same lr schedule as ``loop.fit``.

    Args:
        model: peft model whose only trainable parameters are the adapter's; wrapped here in Opacus'
            ``GradSampleModule`` (per-block gradients by hooks on the LoRA ``nn.Linear`` layers).
        optimizer: AdamW over those parameters (``loop.make_optimizer``), wrapped in ``DPOptimizer``;
            its state (moments) remains that of the plain optimizer, so it carries over between updates.
        history: the lineage's earlier DP updates (``DPReport.history``), for the cumulative epsilon.

    Returns:
        ``(FitResult, DPReport)``; ``DPReport.epsilon <= cfg.dp_epsilon`` (up to the accountant's search
        tolerance of 0.01).

    Raises:
        ImportError: opacus is not installed (``pip install streamtune[privacy]``).
        ValueError: ``cfg.dp_epsilon`` is 0, ``selection`` is not uniform, or ``blocks`` is empty.
        FloatingPointError: the loss becomes NaN or infinite.
    """
    from opacus import GradSampleModule
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.optimizers import DPOptimizer

    if cfg.dp_epsilon <= 0 or cfg.selection != "uniform":
        raise ValueError("dp_fit needs `dp_epsilon` > 0 and `selection = 'uniform'`")
    if blocks.dim() != 2 or blocks.shape[0] == 0:
        raise ValueError(f"`blocks` must be a non-empty (N, T + 1) tensor, got shape {tuple(blocks.shape)}")
    n = blocks.shape[0]
    batch = min(cfg.batch_size, n)
    q = batch / n
    sigma = get_noise_multiplier(
        target_epsilon=cfg.dp_epsilon, target_delta=cfg.dp_delta, sample_rate=q, steps=total_steps, accountant="rdp"
    )
    gsm = GradSampleModule(model, loss_reduction="mean")
    generator = torch.Generator().manual_seed(cfg.seed)
    dp_opt = DPOptimizer(
        optimizer, noise_multiplier=sigma, max_grad_norm=cfg.dp_max_grad_norm, expected_batch_size=batch
    )
    gsm.train()
    t0, c0 = time.perf_counter(), time.process_time()
    curve, tokens = _dp_loop(gsm, dp_opt, optimizer, blocks, cfg, device, total_steps, peak_lr, q, generator)
    gsm._close()  # remove the hooks: the model is saved and evaluated as a plain peft model
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    this = [(float(sigma), float(q), int(total_steps))]
    lineage = [tuple(h) for h in (history or [])] + this
    report = DPReport(
        epsilon=_epsilon(this, cfg.dp_delta),
        cumulative_epsilon=_epsilon(lineage, cfg.dp_delta),
        delta=cfg.dp_delta,
        noise_multiplier=float(sigma),
        sample_rate=float(q),
        steps=total_steps,
        history=lineage,
    )
    fit = FitResult(
        steps=total_steps,
        train_tokens=tokens,
        wall_seconds=wall,
        tokens_per_second=tokens / wall if wall > 0 else math.inf,
        curve=curve,
        final_loss=curve[-1][1] if curve else math.nan,
        cpu_seconds=cpu,
    )
    return fit, report
