"""Adapter versions on a frozen, shared base: save, load, merge (``TrainConfig.adapter = "lora"``).

An adapter version is a directory holding only the peft LoRA adapter (Hu et al. 2021, arXiv 2106.09685:
``adapter_config.json`` + ``adapter_model.safetensors``, written by ``PeftModel.save_pretrained``), the
tokenizer files, ``adapter_base.json`` (``ADAPTER_BASE_FILE``: which registered base version it adapts, and
the SHA-256 of that base's weights) and, locally only, ``.base_dir`` (``BASE_DIR_FILE``: the path of the
base's local copy, relative to the adapter directory so a moved home keeps working; a dot file, so it is never
part of a version's checksums). The base is never trained; every update continues training the champion's
adapter (``load_adapter_model(trainable=True)``). ``training.modeling.load_model`` of an adapter directory
loads it here (base + adapter): the absolute base path peft writes into ``adapter_config.json`` is never used.

Bytes (``stored_bytes``, measured by ``bench/forgetting.py``): the 0.93M-parameter stand-in Llama stores
3.8 MB of model files per full version and 0.29 MB per rank-8 adapter on all linear projections (the
tokenizer included); the AdamW state in ``train_state.pt`` shrinks alike (7.4 MB -> 0.34 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from training.config import TrainConfig
from training.modeling import load_model

__all__ = [
    "ADAPTER_BASE_FILE",
    "ADAPTER_CONFIG_FILE",
    "BASE_DIR_FILE",
    "apply_lora",
    "base_dir_of",
    "base_ref_for",
    "export_merged",
    "fill_base_version",
    "is_adapter_dir",
    "load_adapter_model",
    "load_any",
    "load_start",
    "read_base_ref",
    "save_adapter",
    "stored_bytes",
    "weights_sha256",
    "write_base_link",
]

ADAPTER_CONFIG_FILE = "adapter_config.json"
"""peft's adapter config: its presence makes a directory an adapter version."""

ADAPTER_BASE_FILE = "adapter_base.json"
"""``{"base_version": str, "base_sha256": str}``: the registered base version an adapter belongs to."""

BASE_DIR_FILE = ".base_dir"
"""Local-only pointer (one line: a path relative to the adapter directory, or an absolute one) from an adapter
directory to its base's directory."""


def is_adapter_dir(path: str | Path) -> bool:
    """Whether ``path`` is a local directory holding a peft adapter (``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG_FILE).is_file()


def weights_sha256(model_dir: str | Path) -> str:
    """SHA-256 of ``model_dir/model.safetensors`` (taken from the registry's ``checksums.json`` when the
    directory has one, else hashed); "" when the directory has no such file (e.g. sharded weights)."""
    model_dir = Path(model_dir)
    manifest = model_dir / "checksums.json"
    if manifest.is_file():
        entry = json.loads(manifest.read_text()).get("files", {}).get("model.safetensors")
        if entry:
            return str(entry["sha256"])
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        return ""
    h = hashlib.sha256()
    with weights.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_base_ref(adapter_dir: str | Path) -> dict[str, str]:
    """``adapter_base.json`` of an adapter directory.

    Raises:
        FileNotFoundError: the directory has no ``adapter_base.json``.
    """
    path = Path(adapter_dir) / ADAPTER_BASE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{adapter_dir} is an adapter without {ADAPTER_BASE_FILE}: its base is unknown")
    return {str(k): str(v) for k, v in json.loads(path.read_text()).items()}


def base_ref_for(parent: str | Path, base_version: str | None) -> dict[str, str]:
    """The base reference of an adapter trained from ``parent``: the parent's own reference when it is an
    adapter, else ``{"base_version": base_version or "", "base_sha256": weights_sha256(parent)}``."""
    if is_adapter_dir(parent):
        return read_base_ref(parent)
    return {"base_version": base_version or "", "base_sha256": weights_sha256(parent)}


def write_base_link(adapter_dir: str | Path, base_dir: str | Path) -> None:
    """Write ``adapter_dir/.base_dir`` pointing at ``base_dir``: relative to ``adapter_dir`` (both resolved),
    so moving the home that holds both keeps the link valid; absolute where no relative path exists."""
    adapter_dir, base = Path(adapter_dir).resolve(), Path(base_dir).resolve()
    try:
        target = os.path.relpath(base, adapter_dir)
    except ValueError:  # another drive (Windows): no relative path
        target = str(base)
    (adapter_dir / BASE_DIR_FILE).write_text(target + "\n")


def base_dir_of(adapter_dir: str | Path) -> Path:
    """The local base directory of an adapter, resolved: the ``.base_dir`` link (relative to ``adapter_dir``,
    or absolute), else the ``ModelRegistry.local_copy`` layout's sibling ``v<base_version>`` (so an adapter
    copy whose absolute link went stale when its home moved still finds its base).

    Raises:
        FileNotFoundError: neither names an existing directory (a copy not made by ``local_copy``, or a base
            that was deleted); the message names the adapter and where it looked.
    """
    adapter_dir = Path(adapter_dir)
    link = adapter_dir / BASE_DIR_FILE
    candidates = []
    if link.is_file():
        candidates.append(adapter_dir / Path(link.read_text().strip()))  # an absolute link replaces adapter_dir
    ref_file = adapter_dir / ADAPTER_BASE_FILE
    version = json.loads(ref_file.read_text()).get("base_version") if ref_file.is_file() else None
    if version:
        candidates.append(adapter_dir.resolve().parent / f"v{version}")
    for base in candidates:
        if (base / "config.json").is_file():
            return base.resolve()
    looked = ", ".join(str(c) for c in candidates) or f"no {BASE_DIR_FILE} and no base version"
    raise FileNotFoundError(
        f"the base of adapter {adapter_dir} was not found ({looked}): materialise the adapter with "
        "ModelRegistry.local_copy, which fetches its base version too"
    )


def apply_lora(model: torch.nn.Module, cfg: TrainConfig):
    """Wrap ``model`` with fresh peft LoRA adapters (``cfg.lora_r``, ``lora_alpha``, ``lora_dropout``,
    ``lora_target_modules``); only adapter weights train, the base is frozen.

    Raises:
        ImportError: peft is not installed.
    """
    from peft import LoraConfig, get_peft_model  # lazy: peft is optional and only LoRA updates need it

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


def load_adapter_model(
    adapter_dir: str | Path,
    device: torch.device | None = None,
    *,
    trainable: bool = False,
    torch_dtype: str = "float32",
    attn_implementation: str | None = None,
):
    """``(peft model, tokenizer)``: the base (``base_dir_of``, loaded by ``load_model`` with ``torch_dtype`` and
    ``attn_implementation``) with the adapter loaded on top (``PeftModel.from_pretrained``), unmerged;
    ``trainable`` = adapter weights require grad. The tokenizer is the base's (same vocabulary; pad = eos
    where the base has no pad token).

    Raises:
        FileNotFoundError: no base pointer or base directory (``base_dir_of``).
        ValueError: the base's weights differ from those the adapter was trained on (``base_sha256``).
    """
    from peft import PeftModel  # lazy: peft is optional

    adapter_dir = Path(adapter_dir)
    base_dir = base_dir_of(adapter_dir)
    expected = read_base_ref(adapter_dir).get("base_sha256", "")
    actual = weights_sha256(base_dir) if expected else ""
    if expected and actual and actual != expected:
        raise ValueError(
            f"adapter {adapter_dir} was trained on base weights sha256 {expected[:12]}..., but {base_dir} holds "
            f"{actual[:12]}...: the base version changed"
        )
    base, tokenizer = load_model(base_dir, device, torch_dtype=torch_dtype, attn_implementation=attn_implementation)
    model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=trainable)
    model.to(device or torch.device("cpu"))
    if not trainable:
        model.eval()
    return model, tokenizer


def load_any(path: str | Path, device: torch.device | None = None):
    """``(model, tokenizer)`` of a full model directory / Hub id (``load_model``) or of an adapter version
    (``load_adapter_model``, base + adapter, eval mode)."""
    if is_adapter_dir(path):
        return load_adapter_model(path, device)
    return load_model(path, device)


def save_adapter(model, tokenizer, out_dir: Path, base_ref: dict[str, str], base_dir: str | Path) -> None:
    """Write an adapter version to ``out_dir``: the adapter (``model.save_pretrained``: adapter weights
    only), the tokenizer, ``adapter_base.json`` (``base_ref``) and the local ``.base_dir`` pointer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / ADAPTER_BASE_FILE).write_text(json.dumps(base_ref, sort_keys=True) + "\n")
    write_base_link(out_dir, base_dir)


def export_merged(source: str | Path, out_dir: str | Path) -> Path:
    """Write a plain ``save_pretrained`` model for serving: an adapter version merged into its base
    (``merge_and_unload``), or a full model re-saved, plus the tokenizer. Returns ``out_dir``.

    Raises:
        FileNotFoundError: an adapter without its base (``base_dir_of``).
    """
    model, tokenizer = load_any(source)
    if is_adapter_dir(source):
        model = model.merge_and_unload()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def stored_bytes(model_dir: str | Path, *, weights_only: bool = False) -> int:
    """Bytes a version stores: the regular files directly in ``model_dir`` except dot files (local markers
    and pointers); ``weights_only`` counts only ``*.safetensors``."""
    files = [p for p in Path(model_dir).iterdir() if p.is_file() and not p.name.startswith(".")]
    if weights_only:
        files = [p for p in files if p.suffix == ".safetensors"]
    return sum(p.stat().st_size for p in files)


def load_start(parent: str | Path, cfg: TrainConfig, device: torch.device, load_parent):
    """``(model, tokenizer, base_dir)`` an update starts from.

    An adapter parent loads as base + adapter (``load_adapter_model``; trainable when ``cfg.adapter =
    "lora"``: the update continues that adapter, ``base_dir`` = its base); with ``cfg.adapter = "none"`` it is
    merged and trains as a full model (``base_dir`` None). A full parent loads with ``load_parent(parent,
    cfg.seq_len, device)``; ``base_dir`` is the parent itself in adapter mode (it becomes the frozen base).

    Raises:
        ValueError: adapter mode from a parent that is not a local directory (a Hub id: save it first), or
            ``cfg.seq_len`` beyond the model's positions.
        FileNotFoundError: an adapter parent without its base (``base_dir_of``).
    """
    if is_adapter_dir(parent):
        options = {"torch_dtype": cfg.torch_dtype, "attn_implementation": cfg.attn_implementation}
        model, tokenizer = load_adapter_model(parent, device, trainable=cfg.adapter == "lora", **options)
        positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 0)
        if positions and cfg.seq_len > positions:
            raise ValueError(f"`seq_len` {cfg.seq_len} exceeds the parent's maximum positions {positions}")
        if cfg.adapter != "lora":  # settings moved away from adapters: continue as a full model
            model = model.merge_and_unload()
            model.requires_grad_(True)
            return model, tokenizer, None
        return model, tokenizer, base_dir_of(parent)
    model, tokenizer = load_parent(parent, cfg.seq_len, device, cfg)  # cfg: torch_dtype, attention, checkpointing
    if cfg.adapter != "lora":
        return model, tokenizer, None
    if not Path(parent).is_dir():
        raise ValueError(f"adapter mode needs a local base directory, got {str(parent)!r}: save_pretrained it first")
    return model, tokenizer, Path(parent)


def fill_base_version(model_dir: str | Path, version: str) -> None:
    """Set ``base_version`` in ``model_dir/adapter_base.json`` when it is empty (an update launched without
    knowing the registry version of its base); no-op for a full model or a reference that names one."""
    path = Path(model_dir) / ADAPTER_BASE_FILE
    if not is_adapter_dir(model_dir) or not path.is_file():
        return
    ref = json.loads(path.read_text())
    if not ref.get("base_version"):
        ref["base_version"] = str(version)
        path.write_text(json.dumps(ref, sort_keys=True) + "\n")
