"""The request and the result of one continual update (``training.finetune.finetune``).

Plain dataclasses with attribute docstrings (litgpt ``args.py`` style); the request checks itself on
construction. Imports torch only for type names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.config import TrainConfig
from training.device import bf16_supported, configure_threads, select_device
from training.evaluate import EvalResult
from training.loop import FitResult

__all__ = ["CHECKPOINT_FILE", "TRAIN_STATE_FILE", "FinetuneRequest", "FinetuneResult", "Runtime", "setup"]

TRAIN_STATE_FILE = "train_state.pt"
"""File in a model directory with ``{"optimizer": state_dict, "global_step": int, "train_config": dict}``."""

CHECKPOINT_FILE = "checkpoint.pt"
"""Mid-update checkpoint in ``checkpoint_dir``: ``{"fingerprint": str, "step": int, "train_tokens": int,
"model": state_dict, "optimizer": state_dict}``, written atomically (temp file + rename)."""


@dataclass
class FinetuneRequest:
    """One update to run: the parent, the texts to train on and to score, where to write, whom to tell.

    Construction checks the request (``ValueError``): ``train_texts`` non-empty, and neither ``out_dir``
    nor ``checkpoint_dir`` inside the parent directory (the champion must stay untouched).
    """

    parent: str | Path
    """Champion directory (``save_pretrained`` layout, optionally with ``train_state.pt``) or a Hub id."""
    train_texts: Sequence[str]
    """Training documents of this update (new window + replay), non-empty."""
    cfg: TrainConfig
    """Training settings (``cfg.seq_len`` <= the parent's maximum positions)."""
    out_dir: Path
    """Where the challenger is saved; created if missing. Must not be inside ``parent``."""
    new_eval_texts: Sequence[str] = ()
    """Held-out rows of the new window(s); may be empty."""
    retention_eval_texts: Sequence[str] = ()
    """Held-out rows of earlier windows; may be empty."""
    first_eval_texts: Sequence[str] = ()
    """Fixed held-out rows of the first window (scored before and after)."""
    forward_eval: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """``{window_key: held-out texts}`` of the new windows, scored before training."""
    matrix_eval: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """``{window_key: held-out texts}`` of every window so far, scored after training."""
    reference_texts: Sequence[str] = ()
    """Reference slice of an online selection strategy that needs one (``cfg.selection`` in
    rho_loss/greats/dwm: target, validation or irreducible-loss data); never trained on. Empty =
    ``selection.reference_fraction`` of ``train_texts`` is held back by hash."""
    checkpoint_dir: Path | None = None
    """Where mid-update checkpoints live (``CHECKPOINT_FILE``); None = no checkpoints. Not inside ``parent``."""
    on_step: Callable[[int, float, float], None] | None = None
    """Forwarded to ``fit``; called as ``on_step(step, loss, lr)`` at each curve point."""
    on_progress: Callable[[str, int, int], None] | None = None
    """Called as ``on_progress(phase, done, total)`` with phase ``"eval_before"``, ``"train"`` (optimizer
    steps) or ``"eval_after"`` (evaluation sets scored), for progress bars."""
    on_trained: Callable[[torch.nn.Module], None] | None = None
    """Called with the trained (LoRA-merged) model right after training, on every rank
    (``training.distributed`` checks that the ranks' weights agree)."""
    base_version: str | None = None
    """Registry version of the parent when it is the frozen base of a first adapter update
    (``cfg.adapter = "lora"``); written into the adapter's ``adapter_base.json``. Unused otherwise."""
    fisher_texts: Sequence[str] = ()
    """Rows of old data (replayed or held-out rows, a general set) on which EWC estimates the Fisher
    (``cfg.ewc_lambda > 0``); empty = the training texts."""
    meta_tasks: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """``{window_key: texts}`` of past windows, the tasks of the Reptile meta-initialisation run before
    training when ``cfg.reptile_init`` (``training.reptile.meta_init``); empty = none."""

    def __post_init__(self) -> None:
        if len(self.train_texts) == 0:
            raise ValueError("`train_texts` is empty: nothing to fine-tune on")
        self.out_dir = Path(self.out_dir)
        self.checkpoint_dir = Path(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        self.forward_eval = self.forward_eval or {}
        self.matrix_eval = self.matrix_eval or {}
        parent_dir = self.parent_dir
        for name, d in (("out_dir", self.out_dir), ("checkpoint_dir", self.checkpoint_dir)):
            if d is not None and parent_dir is not None and _is_within(d.resolve(), parent_dir.resolve()):
                raise ValueError(f"`{name}` {d} is inside the parent {parent_dir}: the champion must stay untouched")

    @property
    def parent_dir(self) -> Path | None:
        """The parent as a local directory, or None when it is a Hub id."""
        return Path(self.parent) if Path(self.parent).is_dir() else None

    def parent_state(self) -> dict:
        """The parent's ``train_state.pt`` as a dict (AdamW state, ``global_step``, ``ewc_fisher``,
        ``dp_history``); {} when there is none or it cannot be read (logged)."""
        path = self.parent_dir / TRAIN_STATE_FILE if self.parent_dir is not None else None
        if path is None or not path.is_file():
            return {}
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged state: the options start fresh, as the optimizer does
            logging.getLogger(__name__).warning("cannot read %s (%s); EWC/DP history start fresh", path, e)
            return {}
        return state if isinstance(state, dict) else {}

    @property
    def checkpoint_path(self) -> Path | None:
        """``checkpoint_dir / CHECKPOINT_FILE``, or None without checkpoints."""
        return self.checkpoint_dir / CHECKPOINT_FILE if self.checkpoint_dir is not None else None


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
    """Whether LoRA adapters were trained (merged into the saved model unless ``adapter``)."""
    adapter: bool = False
    """Whether the saved version is an adapter on a frozen base (``training.adapters``)."""
    stored_bytes: int = 0
    """Bytes of the saved version's files (``adapters.stored_bytes``; train_state.pt included)."""
    extra: dict[str, float] = field(default_factory=dict)
    """Metrics of the options: ``ewc_*`` (``ewc_fisher_rows``, ``ewc_fisher_s``) and ``dp_*``
    (``privacy.DPReport.metrics``: per-update and cumulative epsilon, delta, noise multiplier)."""

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
                "stored_bytes": float(self.stored_bytes),
                **self.extra,
                **self.fit.selection,  # selection_{overhead_s,kept_fraction,weight_entropy,...}
            }
        )
        return out


@dataclass(frozen=True)
class Runtime:
    """Where and how an update runs (``setup``)."""

    device: torch.device
    """Training and evaluation device."""
    bf16: bool
    """Whether training runs under bf16 autocast (evaluation always runs in fp32)."""
    threads: int
    """Torch intra-op threads."""
    rank: int = 0
    """Rank in an initialised ``torch.distributed`` process group (0 outside one)."""
    world: int = 1
    """World size of that group (1 outside one)."""


def _rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of an initialised ``torch.distributed`` process group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def setup(cfg: TrainConfig) -> Runtime:
    """Seed torch with ``cfg.seed``, set the thread count, pick the device and bf16 (``cfg.bf16 = None`` ->
    auto), and read the data-parallel rank (``training.distributed``: rank 0 scores and saves)."""
    torch.manual_seed(cfg.seed)
    threads = configure_threads(cfg.threads)
    device = select_device()
    rank, world = _rank_world()
    bf16 = bf16_supported(device) if cfg.bf16 is None else cfg.bf16
    return Runtime(device=device, bf16=bf16, threads=threads, rank=rank, world=world)


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
