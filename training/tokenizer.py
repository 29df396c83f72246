"""Byte-level BPE tokenizer trained from the stream's own text (GPT-2 recipe, built offline).

Byte-level BPE (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", sec. 2.2;
BPE: Sennrich et al. 2016, arXiv 1508.07909) maps any UTF-8 string to tokens and back exactly, so the
vocabulary never has unknown symbols. The vocabulary fixes the embedding ids: freeze it for the whole
model lineage and log ``tokenizer_sha256`` with every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = ["EOS_TOKEN", "PAD_TOKEN", "tokenizer_sha256", "train_tokenizer"]

EOS_TOKEN = "<|endoftext|>"
"""Document separator; also the bos and unk token (GPT-2 convention). Id 0 in a trained tokenizer."""
PAD_TOKEN = "<|pad|>"
"""Padding token (id 1 in a trained tokenizer); never a training target."""


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``.

    Args:
        texts: training strings (consumed once).
        vocab_size: target vocabulary size including the 256 byte symbols and 2 special tokens;
            the result may be smaller when the text has too few mergeable pairs.
        model_max_length: recorded as the tokenizer's ``model_max_length`` (the model's context).

    Returns:
        A ``PreTrainedTokenizerFast`` with ``<|endoftext|>`` as bos/eos/unk and ``<|pad|>`` as pad.
        Deterministic: the same texts and sizes give the same ``tokenizer_sha256``.

    Raises:
        ValueError: if ``vocab_size`` < 258 or ``model_max_length`` < 1.
    """
    if vocab_size < 258:
        raise ValueError(f"`vocab_size` must be >= 258 (256 bytes + 2 special tokens), got {vocab_size}")
    if model_max_length < 1:
        raise ValueError(f"`model_max_length` must be >= 1, got {model_max_length}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, unk_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )
    fast.model_max_length = model_max_length
    return fast


def tokenizer_sha256(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hex sha256 of the serialized ``tokenizer.json`` (vocabulary, merges, normalisation, specials).

    Equal before and after ``save_pretrained``/``from_pretrained``, so it identifies a lineage's tokenizer.

    Raises:
        TypeError: if ``tokenizer`` is not backed by a ``tokenizers.Tokenizer`` (a slow tokenizer).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise TypeError(f"tokenizer_sha256 needs a fast tokenizer, got {type(tokenizer).__name__}")
    return hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()
