"""Elastic weight consolidation against forgetting: diagonal Fisher, online accumulation, the penalty.

EWC (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks", PNAS 114(13), eq. 3)
adds ``lambda/2 * sum_i F_i (theta_i - theta*_i)^2`` to the loss, where ``theta*`` are the parameters the
update starts from and ``F`` the diagonal of the Fisher information at ``theta*``. Online EWC (Schwarz et
al. 2018, "Progress & Compress", ICML, sec. 4) keeps one running Fisher ``F <- gamma * F_old + F_new``
instead of one per task, with ``theta*`` always the latest parameters.

Here ``F_new`` is the empirical Fisher: the mean over minibatches of the squared gradient of the LM loss
(nats/token) on rows of old data (replayed or held-out rows, or the base's general set), estimated on the
parent when an update starts (``estimate_fisher``). The accumulated Fisher is stored with the version in
``train_state.pt`` under ``"ewc_fisher"`` (next to the AdamW state) and read back by the next update.

Cost: one extra forward + backward per ``batch_size`` Fisher rows when an update starts (``ewc_rows``
blocks, default 64: ~4 steps' worth), one fused multiply-add over the trainable parameters per step for the
penalty, and memory for two extra copies of the trainable parameters (``F`` and ``theta*``): 2x params
(fp32) for full fine-tuning, 2x the adapter for LoRA.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.data import IGNORE_INDEX, split_block

__all__ = ["EWCPenalty", "accumulate", "estimate_fisher", "ewc_for_update", "trainable_named"]


def trainable_named(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """``{name: parameter}`` of the parameters that require grad (LoRA: only the adapter)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def estimate_fisher(
    model: torch.nn.Module, blocks: torch.Tensor, *, batch_size: int, device: torch.device, max_rows: int
) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher of the trainable parameters at the current weights.

    ``F_i = mean over minibatches b of (d loss_b / d theta_i)^2``, ``loss_b`` the mean next-token
    cross-entropy (nats/token) of minibatch b (Kirkpatrick et al. 2017 use per-example squares; the
    minibatch form costs one backward per minibatch instead of one per row). Runs in fp32, eval mode
    (no dropout); gradients of the model are cleared afterwards and its mode restored.

    Args:
        blocks: (N, T + 1) int64 packed blocks (``data.pack_texts``); the first ``max_rows`` are used.
        batch_size: blocks per backward, >= 1.
        max_rows: most blocks to use, >= 1.

    Returns:
        ``{name: fp32 CPU tensor of the parameter's shape}`` for every trainable parameter.

    Raises:
        ValueError: ``blocks`` is empty or malformed.
    """
    if blocks.dim() != 2 or blocks.shape[0] == 0 or blocks.shape[1] < 2:
        raise ValueError(f"`blocks` must be a non-empty (N, T + 1) tensor, got shape {tuple(blocks.shape)}")
    params = trainable_named(model)
    fisher = {n: torch.zeros_like(p, dtype=torch.float32, device="cpu") for n, p in params.items()}
    rows = blocks[: max(1, max_rows)]
    was_training = model.training
    model.eval()
    batches = 0
    for start in range(0, rows.shape[0], max(1, batch_size)):
        x, y = split_block(rows[start : start + batch_size].to(device))  # (B, T), (B, T)
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=x, use_cache=False).logits  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach().float().cpu() ** 2
        batches += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: f / batches for n, f in fisher.items()}


def accumulate(
    previous: dict[str, torch.Tensor] | None, new: dict[str, torch.Tensor], gamma: float
) -> dict[str, torch.Tensor]:
    """Online-EWC Fisher (Schwarz et al. 2018, sec. 4): ``gamma * previous + new`` per parameter; a name
    missing from ``previous`` (or a shape that differs: another model) takes ``new`` alone."""
    out = {}
    for name, f in new.items():
        old = (previous or {}).get(name)
        out[name] = f + gamma * old if old is not None and tuple(old.shape) == tuple(f.shape) else f.clone()
    return out


@dataclass
class EWCPenalty:
    """``lambda/2 * sum_i F_i (theta_i - theta*_i)^2`` over the trainable parameters (Kirkpatrick et al.
    2017, eq. 3); callable with no arguments, returning a 0-dim tensor on the parameters' device (called by
    ``loop.fit`` each step and added to the loss)."""

    model: torch.nn.Module
    fisher: dict[str, torch.Tensor]
    """Diagonal Fisher per parameter name (fp32)."""
    anchor: dict[str, torch.Tensor]
    """``theta*``: the parameters when the update started (fp32, detached)."""
    lam: float
    """``lambda`` (``TrainConfig.ewc_lambda``)."""

    @classmethod
    def at_current(cls, model: torch.nn.Module, fisher: dict[str, torch.Tensor], lam: float) -> EWCPenalty:
        """Anchor at the model's current trainable parameters, with ``fisher`` moved to their devices."""
        params = trainable_named(model)
        anchor = {n: p.detach().float().clone() for n, p in params.items()}
        moved = {n: fisher[n].to(p.device) for n, p in params.items() if n in fisher}
        return cls(model=model, fisher=moved, anchor=anchor, lam=lam)

    def __call__(self) -> torch.Tensor:
        total = None
        for name, p in trainable_named(self.model).items():
            f = self.fisher.get(name)
            if f is None:
                continue
            term = (f * (p.float() - self.anchor[name]) ** 2).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return 0.5 * self.lam * total


def ewc_for_update(
    model: torch.nn.Module,
    fisher_blocks: torch.Tensor,
    parent_fisher: dict[str, torch.Tensor] | None,
    cfg,
    device: torch.device,
) -> tuple[EWCPenalty | None, dict[str, float], dict]:
    """The online-EWC penalty of an update starting from ``model`` (the parent, theta*).

    Estimates the Fisher on ``fisher_blocks`` ((N, T + 1) int64; at most ``cfg.ewc_rows``, ``cfg.batch_size``
    per backward), accumulates it with the parent's (``accumulate``, ``cfg.ewc_gamma``) and anchors the
    penalty (``cfg.ewc_lambda``) at the current parameters.

    Returns:
        ``(penalty or None when cfg.ewc_lambda == 0, metrics, state to store)``: metrics ``ewc_fisher_rows``,
        ``ewc_fisher_s`` (wall seconds of the estimate), ``ewc_fisher_carried`` (1 if the parent had one),
        ``ewc_fisher_mean``; state ``{"ewc_fisher": {name: tensor}}`` for ``train_state.pt``.
    """
    if cfg.ewc_lambda <= 0:
        return None, {}, {}
    t0 = time.perf_counter()
    new = estimate_fisher(model, fisher_blocks, batch_size=cfg.batch_size, device=device, max_rows=cfg.ewc_rows)
    fisher = accumulate(parent_fisher, new, cfg.ewc_gamma)
    numel = sum(f.numel() for f in fisher.values())
    metrics = {
        "ewc_fisher_rows": float(min(cfg.ewc_rows, fisher_blocks.shape[0])),
        "ewc_fisher_s": time.perf_counter() - t0,
        "ewc_fisher_carried": float(bool(parent_fisher)),
        "ewc_fisher_mean": float(sum(f.sum() for f in fisher.values()) / max(1, numel)),
    }
    return EWCPenalty.at_current(model, fisher, cfg.ewc_lambda), metrics, {"ewc_fisher": fisher}
