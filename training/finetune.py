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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training import adapters
from training.config import TrainConfig
from training.data import heldout_mask, pack_texts
from training.evaluate import EvalResult, evaluate
from training.ewc import ewc_for_update
from training.finetune_types import (
    CHECKPOINT_FILE,
    TRAIN_STATE_FILE,
    FinetuneRequest,
    FinetuneResult,
    Runtime,
    setup,
)
from training.loop import FitResult, fit, load_optimizer_state, make_optimizer
from training.modeling import load_model
from training.privacy import dp_fit
from training.reptile import meta_init
from training.schedule import ar_meta_peak_lr
from training.selection import make_selector, needs_reference, reference_fraction

__all__ = [
    "CHECKPOINT_FILE",
    "TRAIN_STATE_FILE",
    "FinetuneRequest",
    "FinetuneResult",
    "finetune",
    "total_steps_for",
    "update_fingerprint",
]

log = logging.getLogger(__name__)


def total_steps_for(cfg: TrainConfig, n_blocks: int) -> int:
    """``cfg.max_steps`` if set, else ``ceil(cfg.epochs * n_blocks / min(cfg.batch_size, n_blocks))``, >= 1.

    The effective batch is capped at ``n_blocks`` (as in ``fit``), so small windows still get
    ``epochs`` passes.
    """
    if cfg.max_steps is not None:
        return cfg.max_steps
    batch = max(1, min(cfg.batch_size, n_blocks))
    return max(1, math.ceil(cfg.epochs * n_blocks / batch))


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


def update_fingerprint(parent: str | Path, train_texts: Sequence[str], cfg: TrainConfig) -> str:
    """Identity of an update, for checkpoint reuse: sha256 of the parent's weights file (or its name), the
    training texts in order and the training config. A checkpoint with another fingerprint is discarded."""
    h = hashlib.sha256()
    parent_path = Path(parent)
    weights = parent_path / "model.safetensors"
    if adapters.is_adapter_dir(parent_path):
        weights = parent_path / "adapter_model.safetensors"
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


@dataclass
class Scores:
    """One model's evaluations on an update's held-out sets (``score``); None/empty on ranks other than 0."""

    new: EvalResult | None = None
    """On the new windows' held-out slice."""
    retention: EvalResult | None = None
    """On the retention slice (held-out rows of earlier windows)."""
    first: EvalResult | None = None
    """On the fixed first-window held-out set."""
    windows: dict[str, EvalResult] = field(default_factory=dict)
    """Per window key (windows with no held-out texts are absent)."""


@dataclass
class Restored:
    """Optimizer and schedule state an update starts from (``restore``)."""

    optimizer: torch.optim.Optimizer
    """AdamW over the (possibly LoRA-wrapped) model, with carried-over or checkpointed state."""
    parent_step: int = 0
    """The parent's ``global_step`` from its ``train_state.pt`` (0 if none)."""
    resumed: bool = False
    """Whether the parent's AdamW state was carried over."""
    peak_lr: float = math.nan
    """Peak learning rate of this update."""
    start_step: int = 0
    """Step a killed update resumes from (0 = fresh)."""
    carried_tokens: int = 0
    """Training tokens the killed run had already processed."""


def load_parent(parent: str | Path, seq_len: int, device: torch.device, cfg: TrainConfig | None = None):
    """``(model, tokenizer)`` of the parent on ``device``, loaded with ``cfg.torch_dtype`` and
    ``cfg.attn_implementation`` (``training.modeling.load_model``), gradient checkpointing on when
    ``cfg.gradient_checkpointing`` (None = fp32, defaults).

    Raises:
        ValueError: ``seq_len`` exceeds the model's maximum positions.
        OSError: the parent cannot be loaded.
    """
    options = {} if cfg is None else {"torch_dtype": cfg.torch_dtype, "attn_implementation": cfg.attn_implementation}
    model, tokenizer = load_model(parent, device, **options)
    if cfg is not None and cfg.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})  # transformers 5 name of gradient ckpt
    max_positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if max_positions is not None and seq_len > max_positions:
        raise ValueError(f"`seq_len` {seq_len} exceeds the parent's maximum positions {max_positions}")
    return model, tokenizer


def score(model, tokenizer, req: FinetuneRequest, cfg: TrainConfig, runtime: Runtime, phase: str) -> Scores:
    """Evaluate ``model`` (fp32, ``evaluate``) on the new, retention and first-window texts, then on each
    window of ``req.forward_eval`` (``phase="eval_before"``) or ``req.matrix_eval`` (``"eval_after"``),
    reporting ``req.on_progress(phase, done, total)`` after each set. Only rank 0 evaluates."""
    if runtime.rank:  # data parallel: only rank 0 evaluates; the other ranks only train
        return Scores()
    windows = req.forward_eval if phase == "eval_before" else req.matrix_eval
    sets = [req.new_eval_texts, req.retention_eval_texts, req.first_eval_texts, *windows.values()]
    results: list[EvalResult | None] = []
    for texts in sets:
        results.append(
            evaluate(
                model, tokenizer, texts, seq_len=cfg.seq_len, batch_size=cfg.eval_batch_size, device=runtime.device
            )
        )
        if req.on_progress is not None:
            req.on_progress(phase, len(results), len(sets))
    by_window = {k: r for k, r in zip(windows, results[3:]) if r is not None}
    return Scores(new=results[0], retention=results[1], first=results[2], windows=by_window)


def restore(
    model: torch.nn.Module, req: FinetuneRequest, cfg: TrainConfig, total_steps: int, fingerprint: str
) -> Restored:
    """Build AdamW for ``model``, carry over the parent's AdamW state from ``parent/train_state.pt`` if
    present and compatible (``loop.load_optimizer_state``), pick the peak (``cfg.peak_lr``, or
    ``schedule.ar_meta_peak_lr`` of the parent's ``global_step``), then resume from ``req.checkpoint_path``
    if it holds a checkpoint of this very update (``fingerprint``, ``update_fingerprint``), else discard it."""
    optimizer = make_optimizer(model, cfg)
    parent_step, resumed = 0, False
    parent_dir = req.parent_dir
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
    restored = Restored(optimizer, parent_step=parent_step, resumed=resumed, peak_lr=peak_lr)
    if req.checkpoint_path is not None and req.checkpoint_path.is_file():
        _resume_checkpoint(model, restored, req.checkpoint_path, fingerprint, total_steps)
    return restored


def _resume_checkpoint(
    model: torch.nn.Module, restored: Restored, path: Path, fingerprint: str, total_steps: int
) -> None:
    """Load model and optimizer from the checkpoint at ``path`` into ``model``/``restored`` if it belongs
    to this update and lies strictly inside it; delete it otherwise (a torn or foreign file: start over)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign file: start over
        log.warning("unreadable checkpoint %s (%s); discarding it", path, e)
        ckpt = None
    if ckpt is not None and ckpt.get("fingerprint") == fingerprint and 0 < int(ckpt["step"]) < total_steps:
        model.load_state_dict(ckpt["model"])
        restored.optimizer.load_state_dict(ckpt["optimizer"])
        restored.start_step, restored.carried_tokens = int(ckpt["step"]), int(ckpt["train_tokens"])
        log.info("resuming a killed update at step %d/%d from %s", restored.start_step, total_steps, path)
    else:
        log.info("discarding checkpoint %s of another update", path)
        path.unlink(missing_ok=True)


@dataclass
class _Checkpointer:
    """``fit``'s ``on_checkpoint`` on rank 0: writes model + optimizer state of this update atomically."""

    path: Path
    fingerprint: str
    carried_tokens: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def __call__(self, step: int, tokens: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "fingerprint": self.fingerprint,
            "step": step,
            "train_tokens": self.carried_tokens + tokens,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        _save_checkpoint(self.path, payload)


@dataclass
class _StepReporter:
    """``fit``'s ``on_step``: forwards each curve point and reports ``("train", step, total_steps)``."""

    on_step: Callable[[int, float, float], None] | None
    on_progress: Callable[[str, int, int], None] | None
    total_steps: int

    def __call__(self, step: int, loss: float, lr: float) -> None:
        if self.on_step is not None:
            self.on_step(step, loss, lr)
        if self.on_progress is not None:
            self.on_progress("train", step, self.total_steps)


def train(
    model: torch.nn.Module,
    blocks: torch.Tensor,
    ref_blocks: torch.Tensor | None,
    req: FinetuneRequest,
    cfg: TrainConfig,
    runtime: Runtime,
    restored: Restored,
    fingerprint: str,
    regularizer: Callable[[], torch.Tensor] | None = None,
) -> FitResult:
    """``fit`` ``model`` on ``blocks`` ((N, T + 1) int64) for ``total_steps_for(cfg, N)`` steps.

    Inside a process group the model is wrapped in ``DistributedDataParallel`` and each rank trains on
    its share of each global batch; rank 0 checkpoints to ``req.checkpoint_path`` every
    ``cfg.checkpoint_every`` steps. ``ref_blocks`` ((M, T + 1) or None) feeds the selection strategy;
    ``regularizer`` (the EWC penalty) joins every step's loss. ``train_tokens`` include a resumed run's.

    Raises:
        ValueError: data-parallel training with a global batch smaller than the world size.
        FloatingPointError: if training diverges.
    """
    world, total_steps = runtime.world, total_steps_for(cfg, blocks.shape[0])
    if world > 1 and min(cfg.batch_size, blocks.shape[0]) < world:
        raise ValueError(
            f"data-parallel training over {world} processes needs a global batch of at least {world} "
            f"blocks, got min(batch_size={cfg.batch_size}, blocks={blocks.shape[0]})"
        )
    checkpointer = None
    if req.checkpoint_path is not None and runtime.rank == 0:  # ranks hold identical weights: rank 0 writes
        checkpointer = _Checkpointer(
            req.checkpoint_path, fingerprint, restored.carried_tokens, model, restored.optimizer
        )
    trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    fit_result = fit(
        trained,
        restored.optimizer,
        blocks,
        cfg,
        device=runtime.device,
        total_steps=total_steps,
        on_step=_StepReporter(req.on_step, req.on_progress, total_steps),
        peak_lr=restored.peak_lr,
        start_step=restored.start_step,
        on_checkpoint=checkpointer,
        shard=(runtime.rank, world) if world > 1 else None,
        selector=make_selector(cfg, ref_blocks),
        regularizer=regularizer,
    )
    fit_result.train_tokens += restored.carried_tokens
    return fit_result


def save(
    model,
    tokenizer,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    req: FinetuneRequest,
    global_step: int,
    *,
    base_dir: Path | None = None,
    extra_state: dict | None = None,
) -> None:
    """Write the version to ``req.out_dir``, then delete the checkpoint: ``config.json``, ``model.safetensors``
    and tokenizer files, or with ``base_dir`` (adapter mode) only the adapter (``adapters.save_adapter``);
    and ``train_state.pt`` (AdamW state, empty for a merged LoRA update; ``global_step``; ``cfg.to_dict()``;
    ``extra_state``: ``ewc_fisher``, ``dp_history``)."""
    req.out_dir.mkdir(parents=True, exist_ok=True)
    if base_dir is not None:
        ref = adapters.base_ref_for(req.parent, req.base_version)
        adapters.save_adapter(model, tokenizer, req.out_dir, ref, base_dir)
    else:
        model.save_pretrained(req.out_dir)
        tokenizer.save_pretrained(req.out_dir)
    merged_lora = cfg.lora_r > 0 and base_dir is None  # a fresh adapter next time: its moments do not apply
    torch.save(
        {
            "optimizer": {} if merged_lora else optimizer.state_dict(),
            "global_step": global_step,
            "train_config": cfg.to_dict(),
            **(extra_state or {}),
        },
        req.out_dir / TRAIN_STATE_FILE,
    )
    if req.checkpoint_path is not None:
        req.checkpoint_path.unlink(missing_ok=True)


def finetune(request: FinetuneRequest) -> FinetuneResult:
    """Fine-tune ``request.parent`` on ``request.train_texts`` and save the challenger to ``request.out_dir``.

    Phases (litgpt's setup/fit/validate/save): ``setup`` (seed, threads, device, bf16, rank); load the
    parent (an adapter version loads its base + adapter, ``adapters.load_start``); ``score`` it before
    training; pack the training texts (holding back a selection reference slice, ``_split_reference``);
    wrap in LoRA (``cfg.lora_r > 0`` or ``cfg.adapter = "lora"``, unless the parent's adapter continues);
    ``restore`` the parent's AdamW state and any checkpoint of this update; the EWC penalty
    (``cfg.ewc_lambda > 0``, ``ewc.ewc_for_update``); ``train`` (DP-SGD when ``cfg.dp_epsilon > 0``,
    ``privacy.dp_fit``); merge LoRA unless adapter mode; ``score`` the challenger on the same texts and on
    every window of ``matrix_eval``; ``save``. The parent directory is only read. ``cfg.reptile_init``: after
    scoring, a Reptile meta-initialisation over ``req.meta_tasks`` (``reptile.meta_init``, Nichol et al. 2018).

    Inside an initialised ``torch.distributed`` process group (``training.distributed``, one process per
    rank) every rank trains on its share of each global batch (same updates as one process); only rank 0
    evaluates, checkpoints and saves, so on the other ranks the evaluations of the result are None.

    Returns:
        ``FinetuneResult``; ``metrics()`` gives the flat numbers to log.

    Raises:
        ValueError: ``cfg.seq_len`` beyond the model's context, or DP-SGD with data parallelism.
        OSError: if the parent (or an adapter's base) cannot be loaded.
        ImportError: if LoRA is asked for and ``peft`` is not installed, or DP and ``opacus`` is not.
        FloatingPointError: if training diverges.
    """
    req = request
    runtime = setup(req.cfg)
    fingerprint = update_fingerprint(req.parent, req.train_texts, req.cfg) if req.checkpoint_dir is not None else ""
    cfg = dataclasses.replace(req.cfg, bf16=runtime.bf16, threads=runtime.threads)  # record what actually ran
    _check_single_process_options(cfg, runtime)
    model, tokenizer, base_dir = adapters.load_start(req.parent, cfg, runtime.device, load_parent)
    before = score(model, tokenizer, req, cfg, runtime, "eval_before")  # the champion as it is, for the gate
    meta = meta_init(model, tokenizer, dict(req.meta_tasks), cfg) if cfg.reptile_init and req.meta_tasks else {}
    train_texts, reference = _split_reference(req.train_texts, req.reference_texts, cfg)  # selection's slice
    blocks = pack_texts(tokenizer, train_texts, cfg.seq_len)  # (N, T + 1), tail dropped
    ref_blocks = pack_texts(tokenizer, reference, cfg.seq_len, keep_tail=True) if reference else None
    lora = cfg.lora_r > 0 or base_dir is not None
    if lora and not hasattr(model, "peft_config"):
        model = adapters.apply_lora(model, cfg)
    total_steps = total_steps_for(cfg, blocks.shape[0])
    restored = restore(model, req, cfg, total_steps, fingerprint)
    _log_start(req, cfg, runtime, restored, blocks.shape[0])
    fit_result, extra, extra_state = _fit_with_options(
        model, tokenizer, blocks, ref_blocks, req, cfg, runtime, restored, fingerprint
    )
    fit_result.selection["selection_reference_texts"] = float(len(reference))
    if lora and base_dir is None:
        model = model.merge_and_unload()  # register a plain model: adapters folded into the weights
    if req.on_trained is not None:
        req.on_trained(model)
    after = score(model, tokenizer, req, cfg, runtime, "eval_after")

    global_step = restored.parent_step + fit_result.steps
    if runtime.rank == 0:
        save(model, tokenizer, restored.optimizer, cfg, req, global_step, base_dir=base_dir, extra_state=extra_state)
    return FinetuneResult(
        champion_new=before.new,
        champion_retention=before.retention,
        challenger_new=after.new,
        challenger_retention=after.retention,
        fit=fit_result,
        device=runtime.device.type,
        bf16=runtime.bf16,
        threads=runtime.threads,
        output_dir=req.out_dir,
        train_blocks=int(blocks.shape[0]),
        optimizer_resumed=restored.resumed,
        global_step=global_step,
        peak_lr=restored.peak_lr,
        resumed_from_step=restored.start_step,
        champion_first=before.first,
        challenger_first=after.first,
        forward_before=before.windows,
        matrix_after=after.windows,
        lora=lora,
        adapter=base_dir is not None,
        stored_bytes=adapters.stored_bytes(req.out_dir) if runtime.rank == 0 else 0,
        extra={**extra, **meta},
    )


def _check_single_process_options(cfg: TrainConfig, runtime: Runtime) -> None:
    """DP-SGD and the Reptile meta-initialisation run in one process (``ValueError`` under DDP)."""
    if (cfg.dp_epsilon > 0 or cfg.reptile_init) and runtime.world > 1:
        raise ValueError("DP-SGD (`dp_epsilon` > 0) and `reptile_init` run in one process; set [train] nproc = 1")


def _fit_with_options(
    model,
    tokenizer,
    blocks,
    ref_blocks,
    req: FinetuneRequest,
    cfg: TrainConfig,
    runtime: Runtime,
    restored,
    fingerprint,
) -> tuple[FitResult, dict[str, float], dict]:
    """``train`` with the online-EWC penalty (``ewc.ewc_for_update`` on ``req.fisher_texts``, else the training
    blocks), or ``privacy.dp_fit`` when ``cfg.dp_epsilon > 0``. Returns ``(fit result, option metrics, state to
    store in train_state.pt)``."""
    parent_state = req.parent_state()
    fisher_blocks = (
        pack_texts(tokenizer, list(req.fisher_texts), cfg.seq_len, keep_tail=True) if req.fisher_texts else blocks
    )
    penalty, extra, extra_state = ewc_for_update(
        model, fisher_blocks, parent_state.get("ewc_fisher"), cfg, runtime.device
    )
    if cfg.dp_epsilon <= 0:
        return train(model, blocks, ref_blocks, req, cfg, runtime, restored, fingerprint, penalty), extra, extra_state
    fit_result, dp = dp_fit(
        model,
        restored.optimizer,
        blocks,
        cfg,
        device=runtime.device,
        total_steps=total_steps_for(cfg, blocks.shape[0]),
        peak_lr=restored.peak_lr,
        history=parent_state.get("dp_history"),
    )
    extra.update(dp.metrics())
    extra_state["dp_history"] = dp.history
    return fit_result, extra, extra_state


def _log_start(req: FinetuneRequest, cfg: TrainConfig, runtime: Runtime, restored: Restored, n_blocks: int) -> None:
    log.info(
        "fine-tuning %s: %d blocks x %d tokens, %d steps from %d, peak_lr=%.3g, device=%s bf16=%s threads=%d "
        "optimizer_resumed=%s lora=%s adapter=%s ewc_lambda=%g dp_epsilon=%g",
        *(req.parent, n_blocks, cfg.seq_len + 1, total_steps_for(cfg, n_blocks), restored.start_step),
        *(restored.peak_lr, runtime.device.type, runtime.bf16, runtime.threads, restored.resumed, cfg.lora_r > 0),
        *(cfg.adapter, cfg.ewc_lambda, cfg.dp_epsilon),
    )
