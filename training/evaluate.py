"""Held-out evaluation: cross-entropy, perplexity and bits per UTF-8 byte.

Bits per byte (bpb) divides the total code length of the text by its size in bytes, so models with
different tokenizers compare fairly (Gao et al. 2020, "The Pile", arXiv 2101.00027, sec. 4.1;
Radford et al. 2019 report bits per character the same way). The promotion gate compares bpb.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.data import IGNORE_INDEX, pack_texts, split_block, token_ids

__all__ = ["EvalResult", "EvalSetError", "evaluate", "read_eval_set", "score_eval_sets", "text_bits"]


class EvalSetError(ValueError):
    """A general-capability evaluation set file that cannot be used; the message names the set and the file."""


@dataclass
class EvalResult:
    """Scores of one model on one list of texts."""

    loss: float
    """Mean cross-entropy in nats per predicted token."""
    perplexity: float
    """exp(loss); inf if that overflows."""
    bits_per_byte: float
    """Total nats / ln 2 / ``bytes``: tokenizer-independent."""
    tokens: int
    """Predicted tokens: every text token plus one eos per text."""
    bytes: int
    """UTF-8 bytes of the texts plus 1 per text for its eos (the document boundary is charged as one byte)."""
    texts: int
    """Number of texts evaluated."""

    def to_dict(self, prefix: str) -> dict[str, float]:
        """``{f"{prefix}_loss", _ppl, _bpb, _tokens, _bytes, _texts: value}`` as floats (no prefix if "")."""
        p = f"{prefix}_" if prefix else ""
        return {
            f"{p}loss": self.loss,
            f"{p}ppl": self.perplexity,
            f"{p}bpb": self.bits_per_byte,
            f"{p}tokens": float(self.tokens),
            f"{p}bytes": float(self.bytes),
            f"{p}texts": float(self.texts),
        }


@torch.no_grad()
def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    seq_len: int,
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
) -> EvalResult | None:
    """Score ``model`` on ``texts`` packed exactly as for training (``data.pack_texts``, tail kept).

    Loss and bpb come from the same token stream: ``[eos] text_1 [eos] text_2 [eos] ...``, every token
    after the leading eos predicted once, in (batch_size, seq_len) chunks with fp32 log-softmax.
    The model's train/eval mode is restored afterwards.

    Args:
        model: causal LM already on ``device``.
        tokenizer: its tokenizer (needs an eos token).
        texts: evaluation documents.
        seq_len: context length per forward pass (<= the model's maximum positions).
        batch_size: sequences per forward pass.
        device: where ``model`` lives.
        bf16: run the forward pass under bf16 autocast (off by default: gate numbers stay exact).

    Returns:
        ``EvalResult``, or None if ``texts`` is empty.
    """
    if len(texts) == 0:
        return None
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
    blocks = pack_texts(tokenizer, texts, seq_len, keep_tail=True)  # (N, T + 1)
    was_training = model.training
    model.eval()
    nats, tokens = 0.0, 0
    try:
        for i in range(0, blocks.shape[0], batch_size):
            x, y = split_block(blocks[i : i + batch_size].to(device))  # (B, T), (B, T)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=x, use_cache=False).logits  # (B, T, V)
            nats += F.cross_entropy(
                logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            tokens += int((y != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts) + len(texts)
    assert tokens > 0, "packed evaluation stream has no targets"
    loss = nats / tokens
    try:
        perplexity = math.exp(loss)
    except OverflowError:
        perplexity = math.inf
    return EvalResult(
        loss=loss,
        perplexity=perplexity,
        bits_per_byte=nats / math.log(2) / n_bytes,
        tokens=tokens,
        bytes=n_bytes,
        texts=len(texts),
    )


@torch.inference_mode()
def text_bits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    max_tokens: int | None = None,
) -> np.ndarray:
    """Total bits the model assigns to each text on its own: ``[eos] text`` with every text token predicted once.

    The per-text counterpart of ``evaluate`` (same eos prefix, fp32 cross-entropy), kept per text so the drift
    monitor can permute texts; its bits per byte divides by ``len(utf8) + 1`` per text like ``evaluate``.
    Texts are right-padded per batch (attention mask) and truncated to ``max_tokens`` tokens including the eos.

    Args:
        model: causal LM in eval mode (its device is used).
        tokenizer: its tokenizer (needs an eos token).
        texts: documents.
        batch_size: texts per forward pass.
        max_tokens: tokens per text including the leading eos; None or above the model's maximum positions
            (``n_positions``, else ``max_position_embeddings``, else 1024) = that maximum.

    Returns:
        (n,) float64 bits per text.

    Raises:
        ValueError: the tokenizer has no eos token.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos token")
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 1024)
    width_cap = min(max_tokens or limit, limit)
    device = next(model.parameters()).device
    seqs = [[eos, *ids][:width_cap] for ids in token_ids(tokenizer, texts)]
    out = np.zeros(len(seqs), dtype=np.float64)
    for i in range(0, len(seqs), batch_size):
        batch = seqs[i : i + batch_size]
        width = max(len(s) for s in batch)
        x = torch.full((len(batch), width), eos, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, s in enumerate(batch):
            x[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        x, mask = x.to(device), mask.to(device)
        logits = model(input_ids=x, attention_mask=mask, use_cache=False).logits.float()  # (B, T, V)
        nll = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none"
        ).view(len(batch), -1)  # (B, T-1) nats
        out[i : i + len(batch)] = (nll * mask[:, 1:]).sum(1).double().cpu().numpy() / math.log(2)
    return out


def read_eval_set(path: str | Path, name: str = "", field: str = "text") -> list[str]:
    """The texts of one fixed evaluation set: a JSONL file (one object per line) or a Parquet file, ``field`` column.

    Args:
        path: ``.jsonl`` or ``.parquet`` file.
        name: the set's name, for messages (``[gate] eval_sets.<name>``).
        field: the text field.

    Returns:
        The non-empty texts, in file order (at least one).

    Raises:
        EvalSetError: the file is missing or unreadable, a line is not a JSON object, the field is missing
            or not a string in some row, or the set holds no non-empty text; the message names the set, the
            file and (JSONL) the line.
    """
    path = Path(path)
    label = f"[gate] eval_sets.{name} ({path})" if name else str(path)
    if not path.is_file():
        raise EvalSetError(f"{label}: no such file")
    if path.suffix.lower() == ".parquet":
        texts = _parquet_texts(path, label, field)
    else:
        texts = _jsonl_texts(path, label, field)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise EvalSetError(f"{label}: no non-empty `{field}` value: the set is empty")
    return texts


def _jsonl_texts(path: Path, label: str, field: str) -> list[str]:
    texts = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EvalSetError(f"{label}: cannot read: {e}") from e
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalSetError(f"{label}: line {i} is not JSON ({e.msg})") from e
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise EvalSetError(f"{label}: line {i} has no string field `{field}`")
        texts.append(row[field])
    return texts


def _parquet_texts(path: Path, label: str, field: str) -> list[str]:
    import polars as pl  # lazy: only Parquet sets need it

    try:
        schema = pl.read_parquet_schema(path)
        if field not in schema:
            raise EvalSetError(f"{label}: no column `{field}` (columns: {sorted(schema)})")
        column = pl.read_parquet(path, columns=[field])[field]
    except EvalSetError:
        raise
    except Exception as e:  # polars raises its own error types for damaged files
        raise EvalSetError(f"{label}: cannot read Parquet: {e}") from e
    if column.dtype != pl.String:
        raise EvalSetError(f"{label}: column `{field}` is {column.dtype}, not text")
    return [t for t in column.to_list() if t is not None]


def score_eval_sets(
    model_dir: str | Path,
    sets: Mapping[str, Sequence[str]],
    *,
    seq_len: int,
    batch_size: int,
) -> dict[str, EvalResult]:
    """Load the model in ``model_dir`` (a full model or an adapter version, ``training.adapters.load_any``) once,
    in fp32 on ``device.select_device()``, and ``evaluate`` it on each named set.

    Args:
        model_dir: ``save_pretrained`` directory (champion's local copy or a challenger).
        sets: ``{name: texts}`` (e.g. ``read_eval_set`` of each ``[gate] eval_sets`` entry).
        seq_len, batch_size: as for ``evaluate`` (the update's ``seq_len``/``eval_batch_size``).

    Returns:
        ``{name: EvalResult}`` for every non-empty set; {} (nothing loaded) when ``sets`` is empty.
    """
    if not any(sets.values()):
        return {}
    # lazy: adapters imports peft and modeling; evaluate is imported by the training loop's modules
    from training.adapters import load_any
    from training.device import select_device

    device = select_device()
    model, tokenizer = load_any(model_dir, device)
    out = {}
    for name, texts in sets.items():
        result = evaluate(model, tokenizer, texts, seq_len=seq_len, batch_size=batch_size, device=device)
        if result is not None:
            out[name] = result
    return out
