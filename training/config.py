"""Typed configuration for the training package: model shape, fine-tuning run, promotion gate.

One dataclass per concern, each field followed by its docstring, validated in ``__post_init__``
(litgpt ``args.py`` style: every problem is collected, then one ``ValueError`` names the fields).
This module imports no torch, so the orchestration layer can build and log configs cheaply.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self

from training.selection.params import parse_params

__all__ = ["GateConfig", "ModelConfig", "ReplayConfig", "TrainConfig"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _check_positive_int(issues: list[str], cfg: object, name: str) -> None:
    value = getattr(cfg, name)
    if not _is_int(value) or value < 1:
        issues.append(f"`{name}` must be a positive int, got {value!r}")


class _ConfigMixin:
    """Shared ``to_dict``/``from_dict`` and the raise-once validation helper."""

    def _raise_if(self, issues: list[str]) -> None:
        if issues:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(issues))

    def to_dict(self) -> dict[str, Any]:
        """Flat ``{field: value}`` dict (values are plain Python scalars or None), e.g. for MLflow params."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Build from a dict such as one made by ``to_dict``; missing keys take their defaults.

        Raises:
            ValueError: on keys that are not fields (named in the message) or invalid values.
        """
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        return cls(**d)


@dataclass
class ModelConfig(_ConfigMixin):
    """Shape of the small GPT-2 style base model built locally (``transformers.GPT2Config``)."""

    n_layer: int = 4
    """Number of transformer blocks."""
    n_head: int = 4
    """Attention heads per block; must divide ``n_embd``."""
    n_embd: int = 128
    """Width of the residual stream."""
    block_size: int = 128
    """Maximum context length in tokens (``n_positions``); ``TrainConfig.seq_len`` must not exceed it."""
    vocab_size: int = 4096
    """Target vocabulary of the byte-level BPE tokenizer, special tokens included (>= 258:
    256 byte symbols plus ``<|endoftext|>`` and ``<|pad|>``)."""

    def __post_init__(self) -> None:
        issues: list[str] = []
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            _check_positive_int(issues, self, name)
        if _is_int(self.n_embd) and _is_int(self.n_head) and self.n_head > 0 and self.n_embd % self.n_head:
            issues.append(f"`n_embd` ({self.n_embd}) must be divisible by `n_head` ({self.n_head})")
        if _is_int(self.vocab_size) and 0 < self.vocab_size < 258:
            issues.append(f"`vocab_size` must be >= 258 (256 bytes + 2 special tokens), got {self.vocab_size}")
        self._raise_if(issues)


@dataclass
class TrainConfig(_ConfigMixin):
    """One continual fine-tuning update: packing, optimiser, schedule, precision, threads."""

    seq_len: int = 128
    """Tokens per training sequence (each packed block holds ``seq_len + 1`` tokens)."""
    batch_size: int = 16
    """Sequences per optimiser step (capped to the number of packed blocks)."""
    peak_lr: float = 1e-3
    """Learning rate reached at the end of warm-up; re-warmed on every update."""
    min_lr_ratio: float = 0.1
    """Cosine floor as a fraction of ``peak_lr`` (``min_lr = peak_lr * min_lr_ratio``)."""
    warmup_fraction: float = 0.05
    """Fraction of the update's steps spent in linear warm-up (at least one step)."""
    epochs: float = 1.0
    """Passes over the packed training blocks; fractional values allowed."""
    max_steps: int | None = None
    """If set, the exact number of optimiser steps (overrides ``epochs``)."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay, applied to 2-D parameters only."""
    grad_clip: float = 1.0
    """Global gradient-norm clipping threshold; 0 disables clipping."""
    seed: int = 0
    """Seeds torch and the minibatch shuffle."""
    bf16: bool | None = None
    """bf16 autocast for training; None = on iff the device supports it (CUDA bf16 or CPU mkldnn bf16)."""
    threads: int | None = None
    """Torch intra-op threads; None = all cores available to this process."""
    eval_batch_size: int = 32
    """Sequences per forward pass during evaluation."""
    log_every: int = 10
    """Record (step, loss, lr) every this many steps, and at the last step."""
    lr_schedule: str = "rewarm"
    """Per-update peak: "rewarm" = every update re-warms to ``peak_lr`` (Ibrahim et al. 2024,
    arXiv 2403.08763); "ar_meta" = the TiC-LM AR meta-schedule (Li et al. 2025, arXiv 2504.02107,
    sec. 4): the peak of an update is where one cosine over all steps so far (this update included)
    stands at the update's first step (``schedule.ar_meta_peak_lr``)."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint (weights, AdamW state, step) every this many steps; 0 = never."""
    lora_r: int = 0
    """LoRA rank (Hu et al. 2021, arXiv 2106.09685) via ``peft``; 0 = full fine-tuning (the default for
    the small local model). The registered model is the merged one."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator (update scale = ``lora_alpha / lora_r``)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input, in [0, 1)."""
    lora_target_modules: str = ""
    """Comma-separated module names to adapt; "" = peft's default for the architecture (GPT-2: ``c_attn``)."""
    adapter: str = "none"
    """"none": the registered version is a full model (with ``lora_r > 0`` the LoRA update is merged in);
    "lora": adapter versions on a frozen, shared base (``training.adapters``): each version stores only the
    peft adapter (rank ``lora_r``, > 0) plus a reference to its base version, and the next update continues
    training that adapter with its AdamW state."""
    ewc_lambda: float = 0.0
    """Strength of the (online) EWC penalty ``lambda/2 * sum F (theta - theta*)^2`` (Kirkpatrick et al. 2017;
    Schwarz et al. 2018, ``training.ewc``); 0 = off."""
    ewc_gamma: float = 1.0
    """Online-EWC decay of the stored Fisher: ``F = gamma * F_parent + F_new`` (1 = plain sum, 0 = last only)."""
    ewc_rows: int = 64
    """Packed blocks used to estimate the diagonal Fisher (one extra backward per ``batch_size`` of them)."""
    dp_epsilon: float = 0.0
    """Target epsilon of DP-SGD on the trainable (adapter) parameters for one update (Opacus,
    ``training.privacy``); 0 = no differential privacy. Needs ``adapter = "lora"``."""
    dp_delta: float = 1e-5
    """Target delta of DP-SGD, in (0, 1)."""
    dp_max_grad_norm: float = 1.0
    """Per-sample (per packed block) gradient clipping norm of DP-SGD, > 0."""
    selection: str = "uniform"
    """Online data selection/weighting strategy of the fine-tune step (``training.selection``): "uniform"
    (default, the plain loop), "loss_reweight", "rho_loss", "greats", "dwm" or "d3"."""
    selection_params: str = ""
    """The strategy's settings as ``"key=value,..."`` (``training.selection.params``); "" = its defaults."""
    torch_dtype: str = "float32"
    """Dtype the weights are loaded, trained and stored in: "float32" (default: fp32 master weights, bf16 only
    through autocast), "bfloat16" (bf16 storage, halves memory; only where the device supports bf16, else
    fp32 with a warning) or "auto" (the checkpoint's own dtype when it is bf16 and supported, else fp32)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (``model.activation_checkpointing_enable()``): less memory,
    ~30% more compute; for models whose activations do not fit."""
    attn_implementation: str | None = None
    """Attention kernel passed to ``from_pretrained``: "sdpa" (``torch.nn.functional.scaled_dot_product_attention``),
    "eager", or None = the transformers default for the architecture."""
    recipe: str = "fixed"
    """How an update's peak lr, steps and replay share are chosen: "fixed" (default: these settings as they are),
    "adaptive" (``training.recipe.adaptive_recipe`` from the window's drift statistics) or "meta" (Thompson
    sampling over a recipe grid, ``training.meta``; ``orchestration.pipeline.recipe_step``)."""
    reptile_init: bool = False
    """Reptile meta-initialisation before each update (``training.reptile.meta_init``): ``reptile_iters``
    meta-iterations over the replayed rows grouped by window (past windows as tasks), then the usual fine-tune
    from the meta-learned weights. Full-weight updates in one process only (not with LoRA/adapters, DP-SGD
    or ``nproc`` > 1). Extra cost per update: ``reptile_iters * reptile_inner_steps`` training steps."""
    reptile_iters: int = 8
    """Reptile meta-iterations per update (one past window each), >= 1."""
    reptile_inner_steps: int = 4
    """Adam steps on one window per meta-iteration (Reptile's ``k``; ``k = 1`` is joint training), >= 1."""

    def __post_init__(self) -> None:
        issues: list[str] = []
        for name in ("seq_len", "batch_size", "eval_batch_size", "log_every"):
            _check_positive_int(issues, self, name)
        if not _is_number(self.peak_lr) or self.peak_lr <= 0:
            issues.append(f"`peak_lr` must be a finite number > 0, got {self.peak_lr!r}")
        if not _is_number(self.min_lr_ratio) or not 0 <= self.min_lr_ratio <= 1:
            issues.append(f"`min_lr_ratio` must be in [0, 1], got {self.min_lr_ratio!r}")
        if not _is_number(self.warmup_fraction) or not 0 <= self.warmup_fraction < 1:
            issues.append(f"`warmup_fraction` must be in [0, 1), got {self.warmup_fraction!r}")
        if not _is_number(self.epochs) or self.epochs <= 0:
            issues.append(f"`epochs` must be a finite number > 0, got {self.epochs!r}")
        if self.max_steps is not None and (not _is_int(self.max_steps) or self.max_steps < 1):
            issues.append(f"`max_steps` must be None or a positive int, got {self.max_steps!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            issues.append(f"`weight_decay` must be a finite number >= 0, got {self.weight_decay!r}")
        if not _is_number(self.grad_clip) or self.grad_clip < 0:
            issues.append(f"`grad_clip` must be a finite number >= 0, got {self.grad_clip!r}")
        if not _is_int(self.seed) or self.seed < 0:
            issues.append(f"`seed` must be an int >= 0, got {self.seed!r}")
        if self.bf16 is not None and not isinstance(self.bf16, bool):
            issues.append(f"`bf16` must be None, True or False, got {self.bf16!r}")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            issues.append(f"`threads` must be None or a positive int, got {self.threads!r}")
        if self.lr_schedule not in ("rewarm", "ar_meta"):
            issues.append(f"`lr_schedule` must be 'rewarm' or 'ar_meta', got {self.lr_schedule!r}")
        if not _is_int(self.checkpoint_every) or self.checkpoint_every < 0:
            issues.append(f"`checkpoint_every` must be an int >= 0, got {self.checkpoint_every!r}")
        if not _is_int(self.lora_r) or self.lora_r < 0:
            issues.append(f"`lora_r` must be an int >= 0, got {self.lora_r!r}")
        if not _is_number(self.lora_alpha) or self.lora_alpha <= 0:
            issues.append(f"`lora_alpha` must be a finite number > 0, got {self.lora_alpha!r}")
        if not _is_number(self.lora_dropout) or not 0 <= self.lora_dropout < 1:
            issues.append(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout!r}")
        if not isinstance(self.lora_target_modules, str):
            issues.append(f"`lora_target_modules` must be a string, got {self.lora_target_modules!r}")
        self._check_adapter_options(issues)
        self._check_model_options(issues)
        if not isinstance(self.selection, str) or not isinstance(self.selection_params, str):
            issues.append(
                f"`selection`/`selection_params` must be strings, got {self.selection!r}, {self.selection_params!r}"
            )
        else:
            try:
                parse_params(self.selection, self.selection_params)
            except ValueError as e:
                issues.append(f"`selection`/`selection_params`: {e}")
        self._raise_if(issues)

    def _check_model_options(self, issues: list[str]) -> None:
        """Validate ``torch_dtype``, ``gradient_checkpointing`` and ``attn_implementation`` (appends to ``issues``)."""
        if self.torch_dtype not in ("float32", "bfloat16", "auto"):
            issues.append(f"`torch_dtype` must be 'float32', 'bfloat16' or 'auto', got {self.torch_dtype!r}")
        if not isinstance(self.gradient_checkpointing, bool):
            issues.append(f"`gradient_checkpointing` must be true or false, got {self.gradient_checkpointing!r}")
        if self.recipe not in ("fixed", "adaptive", "meta") or not isinstance(self.reptile_init, bool):
            issues.append(f"`recipe` must be 'fixed', 'adaptive' or 'meta' ({self.recipe!r}), `reptile_init` a bool")
        for name in ("reptile_iters", "reptile_inner_steps"):
            _check_positive_int(issues, self, name)
        lora = _is_int(self.lora_r) and self.lora_r > 0
        if self.reptile_init is True and (
            lora or self.adapter != "none" or (_is_number(self.dp_epsilon) and self.dp_epsilon > 0)
        ):
            issues.append("`reptile_init` updates the full weights: not with `lora_r`/`adapter` or `dp_epsilon`")
        if self.attn_implementation not in (None, "sdpa", "eager"):
            issues.append(f"`attn_implementation` must be 'sdpa', 'eager' or unset, got {self.attn_implementation!r}")

    def _check_adapter_options(self, issues: list[str]) -> None:
        """Validate ``adapter``, ``ewc_*`` and ``dp_*`` (appends to ``issues``)."""
        if self.adapter not in ("none", "lora"):
            issues.append(f"`adapter` must be 'none' or 'lora', got {self.adapter!r}")
        elif self.adapter == "lora" and _is_int(self.lora_r) and self.lora_r < 1:
            issues.append("`adapter = 'lora'` needs `lora_r` >= 1 (the adapter rank), got 0")
        if not _is_number(self.ewc_lambda) or self.ewc_lambda < 0:
            issues.append(f"`ewc_lambda` must be a finite number >= 0, got {self.ewc_lambda!r}")
        if not _is_number(self.ewc_gamma) or not 0 <= self.ewc_gamma <= 1:
            issues.append(f"`ewc_gamma` must be in [0, 1], got {self.ewc_gamma!r}")
        _check_positive_int(issues, self, "ewc_rows")
        if not _is_number(self.dp_epsilon) or self.dp_epsilon < 0:
            issues.append(f"`dp_epsilon` must be a finite number >= 0, got {self.dp_epsilon!r}")
        elif self.dp_epsilon > 0 and self.adapter != "lora":
            issues.append("`dp_epsilon` > 0 (DP-SGD) needs `adapter = 'lora'`: DP covers only adapter parameters")
        if not _is_number(self.dp_delta) or not 0 < self.dp_delta < 1:
            issues.append(f"`dp_delta` must be in (0, 1), got {self.dp_delta!r}")
        if not _is_number(self.dp_max_grad_norm) or self.dp_max_grad_norm <= 0:
            issues.append(f"`dp_max_grad_norm` must be a finite number > 0, got {self.dp_max_grad_norm!r}")


@dataclass
class GateConfig(_ConfigMixin):
    """Promotion rule comparing a challenger with the champion on the same held-out texts (bits/byte)."""

    min_improvement: float = 0.0
    """Relative new-window bits/byte improvement required to promote (0.01 = 1%); 0 = strictly better."""
    retention_tolerance: float = 0.02
    """Largest relative worsening of retention bits/byte allowed (0.02 = 2%)."""
    require_approval: bool = False
    """True: a challenger that passes the gate waits under the ``challenger`` alias until a person runs
    ``streamtune promote`` / ``reject`` (``orchestration.pipeline.approval``); False: it becomes champion."""
    eval_sets: dict[str, str] = field(default_factory=dict)
    """Named fixed general-capability sets ``{name: path}`` (JSONL or Parquet with a ``text`` field; a relative
    path is relative to the streamtune home), scored for champion and challenger on every update; empty = the
    held-out slice of the stand-in base's corpus when the base is ``streamtune base pretrain``'s, else none."""
    general_tolerance: float = 0.02
    """Largest relative worsening of bits/byte allowed on each ``eval_sets`` set (0.02 = 2%)."""

    def __post_init__(self) -> None:
        issues: list[str] = []
        self._check_eval_sets(issues)
        if not isinstance(self.require_approval, bool):
            issues.append(f"`require_approval` must be true or false, got {self.require_approval!r}")
        if not _is_number(self.min_improvement) or not 0 <= self.min_improvement < 1:
            issues.append(f"`min_improvement` must be in [0, 1), got {self.min_improvement!r}")
        if not _is_number(self.retention_tolerance) or self.retention_tolerance < 0:
            issues.append(f"`retention_tolerance` must be a finite number >= 0, got {self.retention_tolerance!r}")
        self._raise_if(issues)

    def _check_eval_sets(self, issues: list[str]) -> None:
        """Validate ``eval_sets`` (names fit metric keys, paths end .jsonl/.parquet) and ``general_tolerance``."""
        if not _is_number(self.general_tolerance) or self.general_tolerance < 0:
            issues.append(f"`general_tolerance` must be a finite number >= 0, got {self.general_tolerance!r}")
        if not isinstance(self.eval_sets, dict):
            issues.append(f'`eval_sets` must be a table {{name = "path"}}, got {self.eval_sets!r}')
            return
        for name, path in self.eval_sets.items():
            if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-." for c in name):
                issues.append(f"`eval_sets` name {name!r} must be letters, digits, '_', '-' or '.'")
            if not isinstance(path, str) or not path.lower().endswith((".jsonl", ".parquet")):
                issues.append(f"`eval_sets.{name}` must be a .jsonl or .parquet path, got {path!r}")


@dataclass
class ReplayConfig(_ConfigMixin):
    """Window-balanced replay buffer (reservoir inside each window, equal share per window).

    Ibrahim et al. 2024 (arXiv 2403.08763, sec. 5) mix 5% (weak shift) to 25% (strong shift) of old
    data into each update; Avalanche's ``ExperienceBalancedBuffer`` is the balancing policy.
    """

    size: int = 2048
    """Most rows the buffer holds over all windows (each window keeps ``size // windows``)."""
    fraction: float = 0.25
    """Share of each update's training rows drawn from the buffer: ``replay = fraction / (1 - fraction)
    * new_rows`` (0 = no replay, naive sequential fine-tuning)."""
    seed: int = 0
    """Seeds the reservoir keys and the replay draw."""

    def __post_init__(self) -> None:
        issues: list[str] = []
        if not _is_int(self.size) or self.size < 0:
            issues.append(f"`size` must be an int >= 0, got {self.size!r}")
        if not _is_number(self.fraction) or not 0 <= self.fraction < 1:
            issues.append(f"`fraction` must be in [0, 1), got {self.fraction!r}")
        if not _is_int(self.seed) or self.seed < 0:
            issues.append(f"`seed` must be an int >= 0, got {self.seed!r}")
        self._raise_if(issues)
