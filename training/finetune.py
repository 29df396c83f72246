"""One continual update: parent (champion) -> challenger, scored before and after on the same texts.

The recipe of Ibrahim et al. 2024 ("Simple and Scalable Strategies to Continually Pre-train Large
Language Models", arXiv 2403.08763): start from the current model, re-warm and re-decay the learning
rate, train on the new window (plus whatever replay the caller mixes into ``train_texts``), and check
both the new distribution and retention of older data. AdamW moments are carried over from the
parent's ``train_state.pt`` when present. The parent directory is only read, never written.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from training.config import TrainConfig
from training.data import pack_texts
from training.device import bf16_supported, configure_threads, select_device
from training.evaluate import EvalResult, evaluate
from training.loop import FitResult, fit, load_optimizer_state, make_optimizer
from training.modeling import load_model

__all__ = ["TRAIN_STATE_FILE", "FinetuneResult", "finetune", "total_steps_for"]

log = logging.getLogger(__name__)

TRAIN_STATE_FILE = "train_state.pt"
"""File in a model directory with ``{"optimizer": state_dict, "global_step": int, "train_config": dict}``."""


@dataclass
class FinetuneResult:
    """Scores and facts of one update. The four evaluations are None when their text list was empty."""

    champion_new: EvalResult | None
    """Parent on the new windows' held-out slice, before training."""
    champion_retention: EvalResult | None
    """Parent on the retention slice (held-out rows of earlier windows)."""
    challenger_new: EvalResult | None
    """Trained model on the new windows' held-out slice."""
    challenger_retention: EvalResult | None
    """Trained model on the retention slice."""
    fit: FitResult
    """The training loop's result (steps, tokens, speed, loss curve)."""
    device: str
    """Device type used, "cpu" or "cuda"."""
    bf16: bool
    """Whether training ran under bf16 autocast (evaluation always runs in fp32)."""
    threads: int
    """Torch intra-op threads used."""
    output_dir: Path
    """Directory holding the challenger (``save_pretrained`` layout + ``train_state.pt``)."""
    train_blocks: int = 0
    """Packed training blocks of ``seq_len + 1`` tokens."""
    optimizer_resumed: bool = False
    """Whether AdamW state was carried over from the parent's ``train_state.pt``."""
    global_step: int = 0
    """Optimiser steps of the whole lineage after this update (parent's ``global_step`` + ``fit.steps``)."""

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow/Dagster; keys of an evaluation are absent when it is None.

        Keys: ``{champion,challenger}_{new,retention}_{loss,ppl,bpb}`` (nats/token, perplexity,
        bits/byte), ``{new,retention}_eval_{texts,tokens,bytes}``, ``train_tokens``, ``tokens_per_s``,
        ``wall_s``, ``final_train_loss``, ``steps``, ``train_blocks``, ``global_step``,
        ``optimizer_resumed`` (0/1).
        """
        out: dict[str, float] = {}
        for name, result in [
            ("champion_new", self.champion_new),
            ("champion_retention", self.champion_retention),
            ("challenger_new", self.challenger_new),
            ("challenger_retention", self.challenger_retention),
        ]:
            if result is not None:
                d = result.to_dict(name)
                out.update({k: d[k] for k in (f"{name}_loss", f"{name}_ppl", f"{name}_bpb")})
        for slice_name, result in [
            ("new", self.champion_new or self.challenger_new),
            ("retention", self.champion_retention or self.challenger_retention),
        ]:
            if result is not None:
                out.update({
                    f"{slice_name}_eval_texts": float(result.texts),
                    f"{slice_name}_eval_tokens": float(result.tokens),
                    f"{slice_name}_eval_bytes": float(result.bytes),
                })
        out.update({
            "train_tokens": float(self.fit.train_tokens),
            "tokens_per_s": self.fit.tokens_per_second,
            "wall_s": self.fit.wall_seconds,
            "final_train_loss": self.fit.final_loss,
            "steps": float(self.fit.steps),
            "train_blocks": float(self.train_blocks),
            "global_step": float(self.global_step),
            "optimizer_resumed": float(self.optimizer_resumed),
        })
        return out


def total_steps_for(cfg: TrainConfig, n_blocks: int) -> int:
    """``cfg.max_steps`` if set, else ``ceil(cfg.epochs * n_blocks / min(cfg.batch_size, n_blocks))``, >= 1.

    The effective batch is capped at ``n_blocks`` (as in ``fit``), so small windows still get
    ``epochs`` passes.
    """
    if cfg.max_steps is not None:
        return cfg.max_steps
    batch = max(1, min(cfg.batch_size, n_blocks))
    return max(1, math.ceil(cfg.epochs * n_blocks / batch))


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def finetune(
    parent: str | Path,
    train_texts: Sequence[str],
    new_eval_texts: Sequence[str],
    retention_eval_texts: Sequence[str],
    cfg: TrainConfig,
    out_dir: Path,
    *,
    on_step: Callable[[int, float, float], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``parent`` on ``train_texts`` and save the challenger to ``out_dir``.

    Steps: seed torch with ``cfg.seed``; set threads; pick the device and bf16 (``cfg.bf16 = None`` ->
    auto); load the parent; score it on ``new_eval_texts`` and ``retention_eval_texts``; pack
    ``train_texts``; carry over AdamW state from ``parent/train_state.pt`` if present and compatible;
    ``fit`` for ``total_steps_for(cfg, n_blocks)`` steps; score the challenger on the same texts;
    save ``config.json``, ``model.safetensors``, tokenizer files and ``train_state.pt`` to ``out_dir``.

    Args:
        parent: champion directory (``save_pretrained`` layout, optionally with ``train_state.pt``)
            or a Hub id.
        train_texts: training documents of this update (new window + replay), non-empty.
        new_eval_texts: held-out rows of the new window(s); may be empty.
        retention_eval_texts: held-out rows of earlier windows; may be empty.
        cfg: training settings (``cfg.seq_len`` <= the parent's maximum positions).
        out_dir: created if missing; nothing is written elsewhere. Must not be inside ``parent``.
        on_step: forwarded to ``fit``; called as ``on_step(step, loss, lr)`` at each curve point.

    Returns:
        ``FinetuneResult``; ``metrics()`` gives the flat numbers to log.

    Raises:
        ValueError: if ``train_texts`` is empty, ``cfg.seq_len`` exceeds the model's context, or
            ``out_dir`` lies inside the parent directory.
        OSError: if the parent cannot be loaded.
        FloatingPointError: if training diverges.
    """
    if len(train_texts) == 0:
        raise ValueError("`train_texts` is empty: nothing to fine-tune on")
    out_dir = Path(out_dir)
    parent_dir = Path(parent) if Path(parent).is_dir() else None
    if parent_dir is not None and _is_within(out_dir.resolve(), parent_dir.resolve()):
        raise ValueError(f"`out_dir` {out_dir} is inside the parent {parent_dir}: the champion must stay untouched")

    torch.manual_seed(cfg.seed)
    threads = configure_threads(cfg.threads)
    device = select_device()
    bf16 = bf16_supported(device) if cfg.bf16 is None else cfg.bf16
    cfg = dataclasses.replace(cfg, bf16=bf16, threads=threads)  # record what actually ran

    model, tokenizer = load_model(parent, device)
    max_positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if max_positions is not None and cfg.seq_len > max_positions:
        raise ValueError(f"`seq_len` {cfg.seq_len} exceeds the parent's maximum positions {max_positions}")

    def score(texts: Sequence[str]) -> EvalResult | None:
        return evaluate(
            model, tokenizer, texts, seq_len=cfg.seq_len, batch_size=cfg.eval_batch_size, device=device
        )

    champion_new, champion_retention = score(new_eval_texts), score(retention_eval_texts)

    blocks = pack_texts(tokenizer, train_texts, cfg.seq_len)  # (N, T + 1), tail dropped
    total_steps = total_steps_for(cfg, blocks.shape[0])
    optimizer = make_optimizer(model, cfg)
    parent_step, resumed = 0, False
    if parent_dir is not None and (parent_dir / TRAIN_STATE_FILE).is_file():
        resumed = load_optimizer_state(optimizer, parent_dir / TRAIN_STATE_FILE, cfg.peak_lr)
        if resumed:
            state = torch.load(parent_dir / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
            parent_step = int(state.get("global_step", 0))
    log.info(
        "fine-tuning %s: %d blocks x %d tokens, %d steps, device=%s bf16=%s threads=%d optimizer_resumed=%s",
        parent, blocks.shape[0], cfg.seq_len + 1, total_steps, device.type, bf16, threads, resumed,
    )
    fit_result = fit(model, optimizer, blocks, cfg, device=device, total_steps=total_steps, on_step=on_step)

    challenger_new, challenger_retention = score(new_eval_texts), score(retention_eval_texts)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    global_step = parent_step + fit_result.steps
    torch.save(
        {"optimizer": optimizer.state_dict(), "global_step": global_step, "train_config": cfg.to_dict()},
        out_dir / TRAIN_STATE_FILE,
    )
    return FinetuneResult(
        champion_new=champion_new,
        champion_retention=champion_retention,
        challenger_new=challenger_new,
        challenger_retention=challenger_retention,
        fit=fit_result,
        device=device.type,
        bf16=bf16,
        threads=threads,
        output_dir=out_dir,
        train_blocks=int(blocks.shape[0]),
        optimizer_resumed=resumed,
        global_step=global_step,
    )
