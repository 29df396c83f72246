"""One continual update: parent (champion) -> challenger, scored before and after on the same texts.

The recipe of Ibrahim et al. 2024 ("Simple and Scalable Strategies to Continually Pre-train Large
Language Models", arXiv 2403.08763): start from the current model, re-warm and re-decay the learning
rate, train on the new window (plus whatever replay the caller mixes into ``train_texts``), and check
both the new distribution and retention of older data. AdamW moments are carried over from the
parent's ``train_state.pt`` when present. The parent directory is only read, never written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.config import TrainConfig
from training.data import heldout_mask, pack_texts
from training.device import bf16_supported, configure_threads, select_device
from training.evaluate import EvalResult, evaluate
from training.loop import FitResult, fit, load_optimizer_state, make_optimizer
from training.modeling import load_model
from training.schedule import ar_meta_peak_lr
from training.selection import make_selector, needs_reference, reference_fraction

__all__ = ["CHECKPOINT_FILE", "TRAIN_STATE_FILE", "FinetuneResult", "finetune", "total_steps_for", "update_fingerprint"]

log = logging.getLogger(__name__)

TRAIN_STATE_FILE = "train_state.pt"
"""File in a model directory with ``{"optimizer": state_dict, "global_step": int, "train_config": dict}``."""

CHECKPOINT_FILE = "checkpoint.pt"
"""Mid-update checkpoint in ``checkpoint_dir``: ``{"fingerprint": str, "step": int, "train_tokens": int,
"model": state_dict, "optimizer": state_dict}``, written atomically (temp file + rename)."""


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
    peak_lr: float = math.nan
    """Peak learning rate this update re-warmed to (``cfg.peak_lr``, or the AR meta-schedule's value)."""
    resumed_from_step: int = 0
    """Step a killed update was resumed from (0 = started fresh)."""
    champion_first: EvalResult | None = None
    """Parent on the fixed first-window held-out set."""
    challenger_first: EvalResult | None = None
    """Trained model on the fixed first-window held-out set."""
    forward_before: dict[str, EvalResult] = field(default_factory=dict)
    """Parent on each new window's held-out rows, before training (``R[t-1][t]``, plasticity)."""
    matrix_after: dict[str, EvalResult] = field(default_factory=dict)
    """Trained model on every window's held-out rows (one row ``R[t][*]`` of the eval matrix)."""
    lora: bool = False
    """Whether LoRA adapters were trained (and merged into the saved model)."""

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow/Dagster; keys of an evaluation are absent when it is None.

        Keys: ``{champion,challenger}_{new,retention}_{loss,ppl,bpb}`` (nats/token, perplexity,
        bits/byte), ``{new,retention}_eval_{texts,tokens,bytes}``, ``train_tokens``, ``tokens_per_s``,
        ``wall_s``, ``final_train_loss``, ``steps``, ``train_blocks``, ``global_step``,
        ``optimizer_resumed`` (0/1), ``peak_lr``, ``resumed_from_step``; the online selection statistics
        ``selection_{overhead_s,overhead_cpu_s,kept_fraction,weight_entropy,scored_tokens,steps,
        reference_texts}`` (+ strategy extras; trivial values for uniform); ``{champion,challenger}_first_*``
        when a first-window set was given. The per-window matrix is in ``forward_before``/``matrix_after``.
        """
        out: dict[str, float] = {}
        for name, result in [
            ("champion_new", self.champion_new),
            ("champion_retention", self.champion_retention),
            ("challenger_new", self.challenger_new),
            ("challenger_retention", self.challenger_retention),
            ("champion_first", self.champion_first),
            ("challenger_first", self.challenger_first),
        ]:
            if result is not None:
                d = result.to_dict(name)
                out.update({k: d[k] for k in (f"{name}_loss", f"{name}_ppl", f"{name}_bpb")})
        for slice_name, result in [
            ("new", self.champion_new or self.challenger_new),
            ("retention", self.champion_retention or self.challenger_retention),
        ]:
            if result is not None:
                out.update(
                    {
                        f"{slice_name}_eval_texts": float(result.texts),
                        f"{slice_name}_eval_tokens": float(result.tokens),
                        f"{slice_name}_eval_bytes": float(result.bytes),
                    }
                )
        out.update(
            {
                "train_tokens": float(self.fit.train_tokens),
                "tokens_per_s": self.fit.tokens_per_second,
                "wall_s": self.fit.wall_seconds,
                "final_train_loss": self.fit.final_loss,
                "steps": float(self.fit.steps),
                "train_blocks": float(self.train_blocks),
                "global_step": float(self.global_step),
                "optimizer_resumed": float(self.optimizer_resumed),
                "peak_lr": self.peak_lr,
                "resumed_from_step": float(self.resumed_from_step),
                **self.fit.selection,  # selection_{overhead_s,kept_fraction,weight_entropy,...}
            }
        )
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


def _rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of an initialised ``torch.distributed`` process group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _split_reference(
    train_texts: Sequence[str], reference_texts: Sequence[str], cfg: TrainConfig
) -> tuple[list[str], list[str]]:
    """``(train, reference)`` for ``cfg.selection``: the given reference, or ``reference_fraction`` of the
    training texts held back by a salted hash (at least one text, never all); no reference if unneeded."""
    if reference_texts or not needs_reference(cfg.selection):
        return list(train_texts), list(reference_texts)
    held = heldout_mask(
        list(train_texts), reference_fraction(cfg.selection, cfg.selection_params), salt="selection-ref"
    )
    if not any(held):
        held[-1] = True
    if all(held):
        held[0] = False
    return [t for t, h in zip(train_texts, held) if not h], [t for t, h in zip(train_texts, held) if h]


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def update_fingerprint(parent: str | Path, train_texts: Sequence[str], cfg: TrainConfig) -> str:
    """Identity of an update, for checkpoint reuse: sha256 of the parent's weights file (or its name), the
    training texts in order and the training config. A checkpoint with another fingerprint is discarded."""
    h = hashlib.sha256()
    parent_path = Path(parent)
    weights = parent_path / "model.safetensors"
    if weights.is_file():
        with weights.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(str(parent).encode())
    for t in train_texts:
        h.update(t.encode())
        h.update(b"\x1e")
    h.update(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    return h.hexdigest()


def _save_checkpoint(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a kill leaves either the old or the new checkpoint


def _apply_lora(model, cfg: TrainConfig):
    """Wrap ``model`` with peft LoRA adapters (only adapter weights train)."""
    from peft import LoraConfig, get_peft_model

    targets = [m.strip() for m in cfg.lora_target_modules.split(",") if m.strip()] or None
    lcfg = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, lcfg)


def finetune(
    parent: str | Path,
    train_texts: Sequence[str],
    new_eval_texts: Sequence[str],
    retention_eval_texts: Sequence[str],
    cfg: TrainConfig,
    out_dir: Path,
    *,
    on_step: Callable[[int, float, float], None] | None = None,
    first_eval_texts: Sequence[str] = (),
    forward_eval: Mapping[str, Sequence[str]] | None = None,
    matrix_eval: Mapping[str, Sequence[str]] | None = None,
    checkpoint_dir: Path | None = None,
    on_trained: Callable[[torch.nn.Module], None] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    reference_texts: Sequence[str] = (),
) -> FinetuneResult:
    """Fine-tune ``parent`` on ``train_texts`` and save the challenger to ``out_dir``.

    Steps: seed torch with ``cfg.seed``; set threads; pick the device and bf16 (``cfg.bf16 = None`` ->
    auto); load the parent; score it on ``new_eval_texts``, ``retention_eval_texts``, ``first_eval_texts``
    and each window of ``forward_eval``; pack ``train_texts``; optionally wrap in LoRA (``cfg.lora_r > 0``);
    carry over AdamW state from ``parent/train_state.pt`` if present and compatible (its stale
    ``initial_lr`` is overridden, ``loop.load_optimizer_state``); pick the peak (``cfg.peak_lr`` or
    ``schedule.ar_meta_peak_lr`` of the parent's ``global_step``); resume from ``checkpoint_dir`` if it
    holds a checkpoint of this very update (``update_fingerprint``), else discard it; ``fit`` for
    ``total_steps_for(cfg, n_blocks)`` steps, checkpointing every ``cfg.checkpoint_every`` steps; merge
    LoRA; score the challenger on the same texts and on every window of ``matrix_eval``; save
    ``config.json``, ``model.safetensors``, tokenizer files and ``train_state.pt`` to ``out_dir``; delete
    the checkpoint. The parent directory is only read.

    Inside an initialised ``torch.distributed`` process group (``training.distributed``, one process per
    rank) the model is wrapped in ``DistributedDataParallel`` and every rank trains on its share of each
    global batch (``fit(shard=...)``, same updates as one process); only rank 0 evaluates, checkpoints and
    saves, so on the other ranks the evaluations of the result are None.

    Args:
        parent: champion directory (``save_pretrained`` layout, optionally with ``train_state.pt``)
            or a Hub id.
        train_texts: training documents of this update (new window + replay), non-empty.
        new_eval_texts: held-out rows of the new window(s); may be empty.
        retention_eval_texts: held-out rows of earlier windows; may be empty.
        cfg: training settings (``cfg.seq_len`` <= the parent's maximum positions).
        out_dir: created if missing. Must not be inside ``parent``.
        on_step: forwarded to ``fit``; called as ``on_step(step, loss, lr)`` at each curve point.
        on_progress: called as ``on_progress(phase, done, total)`` with phase ``"eval_before"``,
            ``"train"`` (optimizer steps) or ``"eval_after"`` (evaluation sets scored), for progress bars.
        first_eval_texts: fixed held-out rows of the first window (scored before and after).
        forward_eval: ``{window_key: held-out texts}`` of the new windows, scored before training.
        matrix_eval: ``{window_key: held-out texts}`` of every window so far, scored after training.
        checkpoint_dir: where mid-update checkpoints live (``CHECKPOINT_FILE``); None = no checkpoints.
            Must not be inside ``parent``.
        on_trained: called with the trained (LoRA-merged) model right after training, on every rank
            (``training.distributed`` checks that the ranks' weights agree).
        reference_texts: reference slice of an online selection strategy that needs one
            (``cfg.selection`` in rho_loss/greats/dwm: target, validation or irreducible-loss data); never
            trained on. Empty = ``selection.reference_fraction`` of ``train_texts`` is held back by hash.

    Returns:
        ``FinetuneResult``; ``metrics()`` gives the flat numbers to log.

    Raises:
        ValueError: if ``train_texts`` is empty, ``cfg.seq_len`` exceeds the model's context, or
            ``out_dir``/``checkpoint_dir`` lies inside the parent directory.
        OSError: if the parent cannot be loaded.
        ImportError: if ``cfg.lora_r > 0`` and ``peft`` is not installed.
        FloatingPointError: if training diverges.
    """
    if len(train_texts) == 0:
        raise ValueError("`train_texts` is empty: nothing to fine-tune on")
    out_dir = Path(out_dir)
    parent_dir = Path(parent) if Path(parent).is_dir() else None
    for name, d in (("out_dir", out_dir), ("checkpoint_dir", checkpoint_dir)):
        if d is not None and parent_dir is not None and _is_within(Path(d).resolve(), parent_dir.resolve()):
            raise ValueError(f"`{name}` {d} is inside the parent {parent_dir}: the champion must stay untouched")

    torch.manual_seed(cfg.seed)
    threads = configure_threads(cfg.threads)
    device = select_device()
    rank, world = _rank_world()  # data parallel (training.distributed): rank 0 scores and saves
    bf16 = bf16_supported(device) if cfg.bf16 is None else cfg.bf16
    fingerprint = update_fingerprint(parent, train_texts, cfg) if checkpoint_dir is not None else ""
    cfg = dataclasses.replace(cfg, bf16=bf16, threads=threads)  # record what actually ran

    model, tokenizer = load_model(parent, device)
    max_positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if max_positions is not None and cfg.seq_len > max_positions:
        raise ValueError(f"`seq_len` {cfg.seq_len} exceeds the parent's maximum positions {max_positions}")

    eval_sets = {"eval_before": 3 + len(forward_eval or {}), "eval_after": 3 + len(matrix_eval or {})}
    eval_done = {"eval_before": 0, "eval_after": 0}
    eval_phase = ["eval_before"]

    def score(texts: Sequence[str]) -> EvalResult | None:
        if rank:  # data parallel: only rank 0 evaluates; the other ranks only train
            return None
        result = evaluate(model, tokenizer, texts, seq_len=cfg.seq_len, batch_size=cfg.eval_batch_size, device=device)
        phase = eval_phase[0]
        eval_done[phase] += 1
        if on_progress is not None:
            on_progress(phase, eval_done[phase], eval_sets[phase])
        return result

    champion_new, champion_retention = score(new_eval_texts), score(retention_eval_texts)
    champion_first = score(first_eval_texts)
    forward_before = {k: r for k, v in (forward_eval or {}).items() if (r := score(v)) is not None}

    train_texts, reference = _split_reference(train_texts, reference_texts, cfg)  # selection's held-back slice
    blocks = pack_texts(tokenizer, train_texts, cfg.seq_len)  # (N, T + 1), tail dropped
    ref_blocks = pack_texts(tokenizer, reference, cfg.seq_len, keep_tail=True) if reference else None
    total_steps = total_steps_for(cfg, blocks.shape[0])
    lora = cfg.lora_r > 0
    if lora:
        model = _apply_lora(model, cfg)
    optimizer = make_optimizer(model, cfg)
    parent_step, resumed = 0, False
    if parent_dir is not None and (parent_dir / TRAIN_STATE_FILE).is_file():
        state = torch.load(parent_dir / TRAIN_STATE_FILE, map_location="cpu", weights_only=True)
        parent_step = int(state.get("global_step", 0))
        resumed = load_optimizer_state(optimizer, parent_dir / TRAIN_STATE_FILE, cfg.peak_lr)
    min_lr = cfg.peak_lr * cfg.min_lr_ratio
    peak_lr = (
        cfg.peak_lr if cfg.lr_schedule == "rewarm" else ar_meta_peak_lr(parent_step, total_steps, cfg.peak_lr, min_lr)
    )
    if resumed:
        for group in optimizer.param_groups:  # the stale initial_lr is replaced by this update's peak
            group["lr"] = group["initial_lr"] = peak_lr

    start_step, carried_tokens = 0, 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if ckpt_path is not None and ckpt_path.is_file():
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:  # a torn or foreign file: start over
            log.warning("unreadable checkpoint %s (%s); discarding it", ckpt_path, e)
            ckpt = None
        if ckpt is not None and ckpt.get("fingerprint") == fingerprint and 0 < int(ckpt["step"]) < total_steps:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            start_step, carried_tokens = int(ckpt["step"]), int(ckpt["train_tokens"])
            log.info("resuming a killed update at step %d/%d from %s", start_step, total_steps, ckpt_path)
        else:
            log.info("discarding checkpoint %s of another update", ckpt_path)
            ckpt_path.unlink(missing_ok=True)

    def on_checkpoint(step: int, tokens: int) -> None:
        assert ckpt_path is not None
        if rank:  # data parallel: ranks hold identical weights; rank 0 writes the checkpoint
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        _save_checkpoint(
            ckpt_path,
            {
                "fingerprint": fingerprint,
                "step": step,
                "train_tokens": carried_tokens + tokens,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
            },
        )

    log.info(
        "fine-tuning %s: %d blocks x %d tokens, %d steps from %d, peak_lr=%.3g, device=%s bf16=%s threads=%d "
        "optimizer_resumed=%s lora=%s",
        parent,
        blocks.shape[0],
        cfg.seq_len + 1,
        total_steps,
        start_step,
        peak_lr,
        device.type,
        bf16,
        threads,
        resumed,
        lora,
    )

    def progress_step(step: int, loss: float, lr: float) -> None:
        if on_step is not None:
            on_step(step, loss, lr)
        if on_progress is not None:
            on_progress("train", step, total_steps)

    if world > 1 and min(cfg.batch_size, blocks.shape[0]) < world:
        raise ValueError(
            f"data-parallel training over {world} processes needs a global batch of at least {world} "
            f"blocks, got min(batch_size={cfg.batch_size}, blocks={blocks.shape[0]})"
        )
    trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    fit_result = fit(
        trained,
        optimizer,
        blocks,
        cfg,
        device=device,
        total_steps=total_steps,
        on_step=progress_step,
        peak_lr=peak_lr,
        start_step=start_step,
        on_checkpoint=on_checkpoint if ckpt_path is not None else None,
        shard=(rank, world) if world > 1 else None,
        selector=make_selector(cfg, ref_blocks),
    )
    fit_result.train_tokens += carried_tokens
    fit_result.selection["selection_reference_texts"] = float(len(reference))
    if lora:
        model = model.merge_and_unload()  # register a plain model: adapters folded into the weights
    if on_trained is not None:
        on_trained(model)

    eval_phase[0] = "eval_after"
    challenger_new, challenger_retention = score(new_eval_texts), score(retention_eval_texts)
    challenger_first = score(first_eval_texts)
    matrix_after = {k: r for k, v in (matrix_eval or {}).items() if (r := score(v)) is not None}

    global_step = parent_step + fit_result.steps
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        torch.save(
            {
                "optimizer": optimizer.state_dict() if not lora else {},
                "global_step": global_step,
                "train_config": cfg.to_dict(),
            },
            out_dir / TRAIN_STATE_FILE,
        )
        if ckpt_path is not None:
            ckpt_path.unlink(missing_ok=True)
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
        peak_lr=peak_lr,
        resumed_from_step=start_step,
        champion_first=champion_first,
        challenger_first=challenger_first,
        forward_before=forward_before,
        matrix_after=matrix_after,
        lora=lora,
    )
