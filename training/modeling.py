"""Build, load and copy the causal language model (any ``AutoModelForCausalLM`` architecture).

The default base is a small randomly initialised GPT-2 (Radford et al. 2019) with a byte-level BPE
tokenizer trained on the first window's text, so the platform runs fully offline. Any Hugging Face
causal LM id or ``save_pretrained`` directory of the Llama, Qwen2, Mistral, GPT-NeoX or GPT-2 families
can be used instead (``training.pretrain`` builds a pretrained Llama stand-in offline). Weights load in
fp32 by default (bf16 then only through autocast); ``torch_dtype="bfloat16"`` stores them in bf16 where
the device supports it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.config import ModelConfig
from training.device import bf16_supported
from training.model_files import ModelFileError, check_structure, copy_label
from training.tokenizer import train_tokenizer

__all__ = ["build_base_model", "load_model", "prepare_base", "resolve_dtype"]

log = logging.getLogger(__name__)


def build_base_model(texts: Sequence[str], model_cfg: ModelConfig, out_dir: Path, seed: int = 0) -> Path:
    """Train a tokenizer on ``texts`` and save a randomly initialised ``GPT2LMHeadModel`` with it.

    The model has ``vocab_size = len(tokenizer)`` (may be below ``model_cfg.vocab_size`` on little
    text), ``n_positions = model_cfg.block_size``, bos/eos = ``<|endoftext|>``, pad = ``<|pad|>``, and
    no dropout (one pass over a stream rarely overfits; the promotion gate checks held-out text).
    Initialisation is seeded without disturbing the caller's global torch RNG.

    Args:
        texts: tokenizer training text (e.g. the first window).
        model_cfg: model shape.
        out_dir: created if missing; receives ``config.json``, ``model.safetensors``,
            ``generation_config.json``, ``tokenizer.json``, ``tokenizer_config.json``.
        seed: weight-initialisation seed.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: if ``texts`` is empty.
    """
    if len(texts) == 0:
        raise ValueError("`texts` is empty: the base tokenizer needs some text to train on")
    tokenizer = train_tokenizer(texts, model_cfg.vocab_size, model_cfg.block_size)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=model_cfg.block_size,
        n_embd=model_cfg.n_embd,
        n_layer=model_cfg.n_layer,
        n_head=model_cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def resolve_dtype(torch_dtype: str, device: torch.device, checkpoint_dtype: object = None) -> torch.dtype:
    """The weight dtype to load with: ``torch.float32`` or ``torch.bfloat16``.

    Args:
        torch_dtype: "float32"; "bfloat16" (bf16 if ``device.bf16_supported(device)``, else fp32 with a
            warning); "auto" (bf16 when the checkpoint's ``config.json`` says bfloat16 and the device supports
            it, else fp32: fp16 checkpoints are upcast, since fp16 training needs loss scaling).
        device: where the model will run.
        checkpoint_dtype: the checkpoint's ``torch_dtype``/``dtype`` from its config (str or torch.dtype).

    Raises:
        ValueError: an unknown ``torch_dtype``.
    """
    if torch_dtype not in ("float32", "bfloat16", "auto"):
        raise ValueError(f"`torch_dtype` must be 'float32', 'bfloat16' or 'auto', got {torch_dtype!r}")
    if torch_dtype == "float32":
        return torch.float32
    wants_bf16 = torch_dtype == "bfloat16" or str(checkpoint_dtype).removeprefix("torch.") == "bfloat16"
    if wants_bf16 and bf16_supported(device):
        return torch.bfloat16
    if torch_dtype == "bfloat16":
        log.warning("torch_dtype='bfloat16' but %s has no fast bf16 support: loading fp32 weights", device.type)
    return torch.float32


def _checkpoint_dtype(path: Path) -> object:
    """``torch_dtype`` (or ``dtype``) of a local checkpoint's ``config.json``; None if absent."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("torch_dtype") or config.get("dtype")


def load_model(
    source: str | Path,
    device: torch.device | None = None,
    *,
    torch_dtype: str = "float32",
    attn_implementation: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local ``save_pretrained`` directory or a Hub id.

    Any architecture ``AutoModelForCausalLM`` knows (Llama, Qwen2, Mistral, GPT-NeoX, GPT-2, ...). A local
    adapter version (``adapter_config.json``, ``training.adapters``) loads as its base, found through the
    ``.base_dir`` link or the sibling ``v<base_version>`` copy (``adapters.base_dir_of``), plus the adapter: a
    peft model, unmerged, in eval mode.

    Args:
        source: directory path or Hugging Face model id (a Hub id needs network access or the
            local HF cache; with ``HF_HUB_OFFLINE=1`` only the cache is used).
        device: where to put the model; None = CPU.
        torch_dtype: weight dtype, see ``resolve_dtype`` (default fp32 master weights).
        attn_implementation: "sdpa", "eager" or None (the transformers default for the architecture).

    Returns:
        ``(model, tokenizer)``: model in eval mode on ``device`` with weights in the resolved dtype; the
        tokenizer has a pad token (the eos token when the checkpoint defines none, as Llama's does not),
        mirrored in ``model.config.pad_token_id``. Packed training never pads, so pad = eos is harmless.

    Raises:
        OSError: if the model or tokenizer cannot be found or read; the message names ``source`` (and
            the registry version of a ``local_copy``) and, for a Hub id, explains the HF_HUB_OFFLINE
            setting (``FileNotFoundError`` for a missing local directory; ``ModelFileError`` naming the
            file when a local file is truncated or malformed, e.g. a safetensors header error;
            ``FileNotFoundError`` for an adapter whose base is not found).
        ValueError: if the tokenizer has neither a pad nor an eos token, or an adapter's base weights differ
            from those it was trained on.
    """
    name = str(source)
    local = isinstance(source, Path) or Path(name).is_absolute() or name.startswith((".", "~")) or Path(name).is_dir()
    if local:
        path = Path(name).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"cannot load model {name!r}: no such directory")
        name = str(path)
        if (path / "adapter_config.json").is_file():  # an adapter version: its base (.base_dir) + the adapter
            from training.adapters import load_adapter_model  # lazy: training.adapters imports this module

            return load_adapter_model(path, device, torch_dtype=torch_dtype, attn_implementation=attn_implementation)
    try:
        dtype = resolve_dtype(
            torch_dtype, device or torch.device("cpu"), _checkpoint_dtype(Path(name)) if local else None
        )
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **extra)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as e:  # safetensors/tokenizers raise their own types: name the directory and the file
        if local:
            raise _local_load_error(Path(name), e) from e
        if not isinstance(e, (OSError, ValueError)):
            raise
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
            hint = "HF_HUB_OFFLINE=1 is set, so a Hub id loads only if it is already in the local HF cache"
        else:
            hint = "HF_HUB_OFFLINE is not set, so the Hub was tried online; set HF_HUB_OFFLINE=1 on offline hosts"
        raise OSError(
            f"cannot load model {name!r}: {e}\nPass a directory written by save_pretrained or a Hugging Face "
            f"model id ({hint})."
        ) from e
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {str(source)!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device or torch.device("cpu"))
    model.eval()
    return model, tokenizer


def _local_load_error(path: Path, error: Exception) -> OSError:
    """The error for a local directory that failed to load: a ``ModelFileError`` naming the damaged file
    (and the registry version of a local copy) when ``check_structure`` finds one, else an ``OSError``
    naming the directory and the original error."""
    label = f"cannot load model {copy_label(path)}"
    hint = "delete the directory so it is downloaded or built again"
    try:
        check_structure(path, label)
    except ModelFileError as damaged:
        return ModelFileError(f"{damaged}; {hint}")
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return OSError(
        f"{label}: {type(error).__name__}: {first_line}; pass a directory written by save_pretrained or {hint}"
    )


def prepare_base(
    source: str | Path | None, texts: Sequence[str], model_cfg: ModelConfig, out_dir: Path, seed: int = 0
) -> Path:
    """Materialise the lineage's base model as a self-contained directory ``out_dir``.

    Args:
        source: None or "" builds the local GPT-2 base with ``build_base_model(texts, ...)``;
            otherwise a Hub id or directory that is loaded and re-saved with ``save_pretrained``
            (``texts`` and ``model_cfg`` are then unused).
        texts, model_cfg, seed: see ``build_base_model``.
        out_dir: destination directory (created if missing).

    Returns:
        ``out_dir``.

    Raises:
        ValueError: if a local base is built from empty ``texts``.
        OSError: if ``source`` cannot be loaded (see ``load_model``).
    """
    if not source:
        return build_base_model(texts, model_cfg, out_dir, seed)
    model, tokenizer = load_model(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
