"""Tiny random-initialised modern causal LMs (Llama, Qwen2) saved locally with their tokenizers: no Hub.

Each builder trains a byte-level BPE tokenizer (``training.tokenizer.train_tokenizer``) on a few hundred
PyPI-like summaries and the stdlib-style sentences below, builds the model from its config class with
hidden size 32, 2 layers, and ``save_pretrained``s both into a directory that ``base_model`` can name.
The Llama tokenizer has no pad token (like Meta's checkpoints), so loading must fall back to eos.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from st_helpers import window_records
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from training.tokenizer import EOS_TOKEN, train_tokenizer

EXTRA = [
    "Return the number of items in the container.",
    "Raise ValueError if the argument is negative.",
    "A fast parser for configuration files and command line options.",
]


@functools.cache  # trained once per process: the builders only save it (save_pretrained does not modify it)
def _tokenizer(pad: bool, max_len: int) -> PreTrainedTokenizerFast:
    texts = [r["text"] for i in range(6) for r in window_records(i, 60)] + EXTRA * 20
    tok = train_tokenizer(texts, vocab_size=400, model_max_length=max_len)
    if pad:
        return tok
    # a checkpoint without a pad token: same vocabulary, pad unset (Llama convention)
    no_pad = PreTrainedTokenizerFast(
        tokenizer_object=tok.backend_tokenizer, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, unk_token=EOS_TOKEN
    )
    no_pad.model_max_length = max_len
    return no_pad


def _save(model, tokenizer, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def make_tiny_llama(out_dir: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A ``LlamaForCausalLM`` (hidden ``hidden``, ``layers`` layers, 2 heads, context 64) and a pad-less
    tokenizer saved to ``out_dir``; returns ``out_dir``."""
    tok = _tokenizer(pad=False, max_len=64)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    return _save(LlamaForCausalLM(config), tok, out_dir)


def make_tiny_qwen2(out_dir: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A ``Qwen2ForCausalLM`` (hidden ``hidden``, ``layers`` layers, 4 query / 2 key-value heads, tied
    embeddings, context 64) and its tokenizer (with a pad token) saved to ``out_dir``; returns ``out_dir``."""
    tok = _tokenizer(pad=True, max_len=64)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return _save(Qwen2ForCausalLM(config), tok, out_dir)


TINY_BUILDERS = {"llama": make_tiny_llama, "qwen2": make_tiny_qwen2}
"""Architecture name -> builder, for ``pytest.mark.parametrize``."""
