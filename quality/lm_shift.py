"""Model-based drift inputs: per-text bits under the champion, token counts under its tokenizer.

No Dagster or MLflow imports. The champion directory is a ``save_pretrained`` folder (the
``window_profile`` asset downloads it from the registry, cached under ``models/registry/v{N}``).

Scoring follows ``training.evaluate.evaluate``: each text is preceded by the eos token, every token
after it is predicted once, loss in fp32 nats; here the sum is kept per text (so the drift test can
permute texts) and converted to bits. Bytes per text are ``len(utf8) + 1`` (the separator), as in
``evaluate``'s bits-per-byte. Texts longer than the context are truncated to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["ChampionScorer"]


class ChampionScorer:
    """Per-text bits and token counts under one causal LM (CPU unless a device is given).

    Args:
        model_dir: ``save_pretrained`` directory of the model and tokenizer.
        batch_size: texts per forward pass.
        max_tokens: tokens per text including the leading eos (default: the model's maximum positions).

    Raises:
        OSError: the model or tokenizer cannot be read.
        ValueError: the tokenizer has no eos token.
    """

    def __init__(self, model_dir: str | Path, batch_size: int = 16, max_tokens: int | None = None, device=None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or torch.device("cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer of {model_dir} has no eos token")
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(self.device).eval()
        limit = getattr(self.model.config, "n_positions", None) or getattr(
            self.model.config, "max_position_embeddings", 1024
        )
        self.max_tokens = min(max_tokens or limit, limit)
        self.batch_size = batch_size

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) int64 tokens per text under the tokenizer (no special tokens, no truncation)."""
        return np.array([len(i) for i in self._ids(texts)], dtype=np.int64)

    def bits(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) float64 total bits the model assigns to each text's tokens given a leading eos."""
        import math

        import torch
        import torch.nn.functional as F

        eos = self.tokenizer.eos_token_id
        seqs = [[eos, *ids][: self.max_tokens] for ids in self._ids(texts)]
        out = np.zeros(len(seqs), dtype=np.float64)
        with torch.inference_mode():
            for i in range(0, len(seqs), self.batch_size):
                batch = seqs[i : i + self.batch_size]
                width = max(len(s) for s in batch)
                x = torch.full((len(batch), width), eos, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for j, s in enumerate(batch):
                    x[j, : len(s)] = torch.tensor(s)
                    mask[j, : len(s)] = 1
                x, mask = x.to(self.device), mask.to(self.device)
                logits = self.model(input_ids=x, attention_mask=mask, use_cache=False).logits.float()  # (B, T, V)
                nll = F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none"
                ).view(len(batch), -1)  # (B, T-1) nats
                nll = (nll * mask[:, 1:]).sum(1)
                out[i : i + len(batch)] = nll.double().cpu().numpy() / math.log(2)
        return out
