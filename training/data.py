"""Held-out splitting and sequence packing for causal-LM training and evaluation.

Packing concatenates documents separated by an end-of-text token and cuts the stream into fixed-length
blocks, as in GPT-2/GPT-3 pre-training (Brown et al. 2020, arXiv 2005.14165, sec. 2.2) and nanoGPT's
``train.bin``: no padding is wasted and every token is used.

Block layout (the contract shared by ``loop.fit`` and ``evaluate.evaluate``):

- the stream is ``[eos] + text_1 + [eos] + text_2 + [eos] + ...``; the leading eos acts as a BOS, so
  the first token of every text is predicted too;
- blocks hold ``seq_len + 1`` tokens and start every ``seq_len`` tokens (consecutive blocks overlap by
  one token), so every token after the leading eos is a target exactly once;
- padding never holds the pad id: padded positions hold ``IGNORE_INDEX`` (-100), the ignore index of
  ``torch.nn.functional.cross_entropy``, so they can never be confused with a real token (Hub models
  often use eos as pad). ``split_block`` turns a block into model inputs and targets.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

__all__ = ["IGNORE_INDEX", "heldout_mask", "pack_texts", "split_block", "token_ids"]

IGNORE_INDEX = -100
"""Target value skipped by the loss; also marks padded positions inside packed blocks."""


def heldout_mask(record_ids: Sequence[str], fraction: float, salt: str = "streamtune") -> list[bool]:
    """Deterministic held-out split by hashing: True means the record is held out (evaluation only).

    A record is held out iff the first 8 bytes of ``sha256(f"{salt}:{record_id}")`` read as a big-endian
    integer, divided by 2**64, are below ``fraction``. The same id always lands on the same side, in any
    window and any process, so held-out rows of earlier windows stay unseen and form the retention set.

    Args:
        record_ids: stable record identifiers.
        fraction: expected held-out fraction, in [0, 1].
        salt: changes the split without changing the ids.

    Returns:
        One bool per id, in order.

    Raises:
        ValueError: if ``fraction`` is outside [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"`fraction` must be in [0, 1], got {fraction}")
    mask = []
    for record_id in record_ids:
        digest = hashlib.sha256(f"{salt}:{record_id}".encode()).digest()
        mask.append(int.from_bytes(digest[:8], "big") / 2**64 < fraction)
    return mask


def token_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (no truncation, no length warnings)."""
    if len(texts) == 0:
        return []
    return tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]


def pack_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], seq_len: int, *, keep_tail: bool = False
) -> torch.Tensor:
    """Tokenize, join with eos and cut into blocks of ``seq_len + 1`` tokens (layout: module docstring).

    Args:
        tokenizer: must define ``eos_token_id``.
        texts: documents; each contributes its tokens followed by one eos.
        seq_len: model sequence length T; blocks hold T + 1 tokens so inputs/targets come from one shift.
        keep_tail: if True, the tokens after the last full block go into one more block padded with
            ``IGNORE_INDEX`` (evaluation: every token is scored). If False they are dropped (training).
            A stream shorter than one block always yields one padded block.

    Returns:
        ``torch.int64`` tensor of shape (N, seq_len + 1); N = 0 iff ``texts`` is empty.

    Raises:
        ValueError: if ``seq_len`` < 1 or the tokenizer has no eos token.
    """
    if seq_len < 1:
        raise ValueError(f"`seq_len` must be >= 1, got {seq_len}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos token; packing needs a document separator")
    if len(texts) == 0:
        return torch.empty((0, seq_len + 1), dtype=torch.long)
    ids = token_ids(tokenizer, texts)
    stream = torch.tensor(list(itertools.chain([eos], *([*x, eos] for x in ids))), dtype=torch.long)
    n_full = (stream.numel() - 1) // seq_len
    # (n_full, T + 1) windows starting every T tokens: block i covers stream[i*T : i*T + T + 1]
    blocks = stream.unfold(0, seq_len + 1, seq_len) if n_full else stream.new_empty((0, seq_len + 1))
    assert blocks.shape[0] == n_full, f"expected {n_full} full blocks, got {blocks.shape[0]}"
    tail = stream[n_full * seq_len :]  # starts with the last target of the previous block
    if tail.numel() > 1 and (keep_tail or n_full == 0):
        padded = torch.full((1, seq_len + 1), IGNORE_INDEX, dtype=torch.long)
        padded[0, : tail.numel()] = tail
        blocks = torch.cat([blocks, padded])
    return blocks.contiguous()


def split_block(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split packed blocks (B, T + 1) into inputs (B, T) and targets (B, T), both int64.

    Targets keep ``IGNORE_INDEX`` at padded positions. Padded input positions get token id 0: they only
    sit after the last real token, so under causal attention they influence no scored prediction.
    """
    assert blocks.dim() == 2 and blocks.shape[1] >= 2, f"blocks must be (B, T + 1), got {tuple(blocks.shape)}"
    inputs = blocks[:, :-1].clamp_min(0)
    targets = blocks[:, 1:]
    return inputs, targets
