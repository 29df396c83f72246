"""A pretrained stand-in base, built offline: a small Llama on the Python standard library's prose.

A continual-learning loop needs a base that *knows something* before the stream starts, or forgetting
cannot be measured. Every machine with Python has a general English/technical corpus without any
download: the docstrings and comments of the standard library (``sysconfig.get_paths()["stdlib"]``).
``stdlib_corpus`` extracts them (``ast.get_docstring`` for modules, classes and functions; ``tokenize``
COMMENT tokens, consecutive comment lines joined into one paragraph), in sorted file order, skipping
tests, ``site-packages`` and vendored demo trees, exact duplicates and fragments under 16 characters.

``pretrain_base`` trains a byte-level BPE tokenizer (``training.tokenizer``) and a Llama-architecture
model (Touvron et al. 2023, arXiv 2302.13971: RMSNorm, SwiGLU, rotary positions) with the project's
own loop (``training.loop.fit``: AdamW, warm-up + cosine), holds out a hashed slice of the corpus as
the general-knowledge evaluation set (``general_eval.jsonl``, one ``{"text": ...}`` per line) and caches
the result in a directory keyed by the configuration and the standard library's file listing.
No Dagster, no MLflow: the CLI (``streamtune base pretrain``) registers the result.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import logging
import math
import shutil
import sys
import sysconfig
import tempfile
import time
import tokenize
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from training.config import TrainConfig
from training.data import heldout_mask, pack_texts
from training.device import configure_threads, select_device
from training.evaluate import evaluate

__all__ = [
    "GENERAL_EVAL_FILE",
    "PRETRAIN_FILE",
    "PretrainConfig",
    "build_llama",
    "corpus_key",
    "pretrain_base",
    "stdlib_corpus",
    "stdlib_files",
]

log = logging.getLogger(__name__)

GENERAL_EVAL_FILE = "general_eval.jsonl"
"""Held-out corpus slice in the model directory: JSONL, one ``{"text": str}`` per line."""
PRETRAIN_FILE = "pretrain.json"
"""Facts of the build in the model directory: config, corpus sizes, steps, losses, wall time."""
_SKIP_PARTS = frozenset({"site-packages", "dist-packages", "test", "tests", "__pycache__", "idlelib", "turtledemo"})
_MIN_CHARS = 16


@dataclass(frozen=True)
class PretrainConfig:
    """Shape and budget of the stand-in base (``LlamaConfig`` fields; defaults give ~5.3M parameters)."""

    hidden_size: int = 256
    """Width of the residual stream."""
    n_layer: int = 4
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads (as many key/value heads: plain multi-head attention)."""
    intermediate_size: int = 688
    """SwiGLU hidden width (~8/3 x hidden, rounded to a multiple of 16)."""
    vocab_size: int = 4096
    """Target byte-level BPE vocabulary, special tokens included."""
    block_size: int = 128
    """Context length (``max_position_embeddings``) and training sequence length, in tokens."""
    steps: int = 240
    """AdamW steps (warm-up 5%, cosine to 10% of the peak); ~1.3 CPU-seconds each at the default shape
    (bf16 autocast), so about 3 minutes on 2 idle cores."""
    batch_size: int = 8
    """Sequences per step (8 x 128 = 1,024 tokens)."""
    peak_lr: float = 3e-3
    """Peak learning rate."""
    heldout_fraction: float = 0.02
    """Share of corpus documents (by hash of their text) held out as the general evaluation set."""
    heldout_max_bytes: int = 65536
    """At most this many UTF-8 bytes of held-out documents are kept (sorted file order): each update scores them."""
    max_corpus_bytes: int = 0
    """Use only the first this-many bytes of documents (sorted file order); 0 = the whole corpus."""
    seed: int = 0
    """Seeds the initialisation, the minibatch order and nothing else."""
    threads: int | None = None
    """Torch intra-op threads; None = all available cores."""

    def __post_init__(self) -> None:
        ints = ("hidden_size", "n_layer", "n_head", "intermediate_size", "block_size", "steps", "batch_size")
        bad = [n for n in ints if not isinstance(getattr(self, n), int) or getattr(self, n) < 1]
        if bad:
            raise ValueError(f"invalid PretrainConfig: {bad} must be positive ints")
        if self.hidden_size % self.n_head or (self.hidden_size // self.n_head) % 2:
            raise ValueError(f"`hidden_size` {self.hidden_size} / `n_head` {self.n_head} must be an even integer")
        if self.vocab_size < 258:
            raise ValueError(f"`vocab_size` must be >= 258, got {self.vocab_size}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"`heldout_fraction` must be in (0, 1), got {self.heldout_fraction}")
        if self.heldout_max_bytes < 1 or self.max_corpus_bytes < 0:
            raise ValueError("`heldout_max_bytes` must be >= 1 and `max_corpus_bytes` >= 0")

    @classmethod
    def tiny(cls, **overrides) -> PretrainConfig:
        """A seconds-long build for tests: hidden 32, 2 layers, 384-token vocabulary, 200 KB of corpus."""
        values = dict(
            hidden_size=32,
            n_layer=2,
            n_head=2,
            intermediate_size=64,
            vocab_size=384,
            block_size=64,
            steps=30,
            batch_size=8,
            max_corpus_bytes=200_000,
            heldout_max_bytes=8192,
            heldout_fraction=0.05,
        )
        return cls(**{**values, **overrides})


def stdlib_files(root: str | Path | None = None) -> list[Path]:
    """The standard library's ``*.py`` files in sorted relative-path order, without tests, ``site-packages``,
    ``idlelib`` and ``turtledemo``. ``root`` defaults to ``sysconfig.get_paths()["stdlib"]``."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    files = [p for p in base.rglob("*.py") if not _SKIP_PARTS & set(p.relative_to(base).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(base).as_posix())


def _docstrings(tree: ast.AST) -> list[str]:
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [d for node in ast.walk(tree) if isinstance(node, nodes) if (d := ast.get_docstring(node, clean=True))]


def _comment_paragraphs(source: str) -> list[str]:
    """Consecutive ``#`` comment lines joined into paragraphs (shebang, coding, noqa and type lines dropped)."""
    paragraphs: list[list[str]] = []
    last_line = -2
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            text = tok.string.lstrip("#!").strip()
            if not text or text.startswith(("-*-", "noqa", "type:", "pragma")) or text.startswith("coding"):
                continue
            if tok.start[0] == last_line + 1 and paragraphs:
                paragraphs[-1].append(text)
            else:
                paragraphs.append([text])
            last_line = tok.start[0]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return [" ".join(p) for p in paragraphs]


def stdlib_corpus(root: str | Path | None = None, max_bytes: int = 0) -> list[str]:
    """Docstrings and comment paragraphs of the standard library, one document each (module docstring).

    Args:
        root: the library folder; None = ``sysconfig.get_paths()["stdlib"]``.
        max_bytes: stop after this many UTF-8 bytes of documents; 0 = all.

    Returns:
        Deterministic list of documents (same Python installation -> same list), duplicates removed.
    """
    seen: set[str] = set()
    docs: list[str] = []
    total = 0
    for path in stdlib_files(root):
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        for doc in [*_docstrings(tree), *_comment_paragraphs(source)]:
            doc = doc.strip()
            if len(doc) < _MIN_CHARS or doc in seen:
                continue
            seen.add(doc)
            docs.append(doc)
            total += len(doc.encode("utf-8"))
            if max_bytes and total >= max_bytes:
                return docs
    return docs


def corpus_key(cfg: PretrainConfig, root: str | Path | None = None) -> str:
    """16 hex digits identifying a build: sha256 of the config, the Python version and the library's file
    listing (relative path and size of each file), so another Python or another config gets another dir."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(sys.version.encode())
    for p in stdlib_files(base):
        h.update(f"{p.relative_to(base).as_posix()}:{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def _split(docs: list[str], cfg: PretrainConfig) -> tuple[list[str], list[str]]:
    """``(train, heldout)``: held out by hash of the text, capped at ``cfg.heldout_max_bytes`` (the rest trains)."""
    held = heldout_mask([hashlib.sha256(d.encode()).hexdigest() for d in docs], cfg.heldout_fraction, "general")
    train, heldout, size = [], [], 0
    for doc, h in zip(docs, held):
        if h and size < cfg.heldout_max_bytes:
            heldout.append(doc)
            size += len(doc.encode("utf-8"))
        else:
            train.append(doc)
    return train, heldout


def build_llama(tokenizer, cfg: PretrainConfig):
    """A randomly initialised ``LlamaForCausalLM`` of ``cfg``'s shape for ``tokenizer`` (vocabulary
    ``len(tokenizer)``, untied embeddings, seeded by ``cfg.seed`` without touching the global RNG)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_head,
        max_position_embeddings=cfg.block_size,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return LlamaForCausalLM(config)


def pretrain_base(
    out_dir: str | Path, cfg: PretrainConfig | None = None, *, corpus_root: str | Path | None = None
) -> Path:
    """Build (or reuse) the stand-in base under the cache folder ``out_dir`` and return its model directory.

    The model directory is ``out_dir / corpus_key(cfg)``: ``save_pretrained`` files of a
    ``LlamaForCausalLM`` and its tokenizer, ``general_eval.jsonl`` (held-out documents, field ``text``)
    and ``pretrain.json`` (config, corpus files/documents/bytes/tokens, train and held-out sizes, steps,
    first and final training loss in nats/token, held-out bits/byte before and after, parameters, wall
    seconds). An existing directory with ``pretrain.json`` is reused as is; a new one is written to a
    temporary sibling and renamed, so a killed build leaves no half directory.

    Args:
        out_dir: cache folder (e.g. ``~/.cache/streamtune/base`` or ``<home>/models/pretrained``).
        cfg: shape and budget; None = ``PretrainConfig()`` (~5.3M parameters, 240 steps).
        corpus_root: the library folder to read; None = this interpreter's standard library.

    Returns:
        The model directory (loadable with ``training.modeling.load_model``).

    Raises:
        ValueError: the corpus is empty or too small to hold out and train on.
        FloatingPointError: training diverged.
    """
    cfg = cfg or PretrainConfig()
    target = Path(out_dir).expanduser() / corpus_key(cfg, corpus_root)
    if (target / PRETRAIN_FILE).is_file():
        log.info("reusing the stand-in base at %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        facts = _train_and_save(tmp, cfg, corpus_root)
        facts["key"] = target.name
        (tmp / PRETRAIN_FILE).write_text(json.dumps(facts, indent=2))
        if target.exists():  # a concurrent build finished first: keep it
            shutil.rmtree(tmp)
        else:
            tmp.replace(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _train_and_save(out: Path, cfg: PretrainConfig, corpus_root: str | Path | None) -> dict:
    """Corpus, tokenizer, model, training and evaluation into ``out``; returns the facts for ``pretrain.json``."""
    from training.loop import fit, make_optimizer  # lazy: keeps this module's import light
    from training.tokenizer import train_tokenizer

    t0 = time.perf_counter()
    docs = stdlib_corpus(corpus_root, cfg.max_corpus_bytes)
    train, heldout = _split(docs, cfg)
    if len(train) < 2 or not heldout:
        raise ValueError(f"the corpus has {len(docs)} documents: too few to hold out and train on")
    tokenizer = train_tokenizer(train, cfg.vocab_size, cfg.block_size)
    blocks = pack_texts(tokenizer, train, cfg.block_size)  # (N, T + 1)
    model = build_llama(tokenizer, cfg)
    threads = configure_threads(cfg.threads)
    device = select_device()
    model.to(device)
    tcfg = TrainConfig(
        seq_len=cfg.block_size,
        batch_size=cfg.batch_size,
        peak_lr=cfg.peak_lr,
        max_steps=cfg.steps,
        seed=cfg.seed,
        threads=threads,
        log_every=max(1, cfg.steps // 20),
        eval_batch_size=16,
    )
    torch.manual_seed(cfg.seed)
    before = evaluate(model, tokenizer, heldout, seq_len=cfg.block_size, batch_size=16, device=device)
    result = fit(
        model,
        make_optimizer(model, tcfg),
        blocks,
        tcfg,
        device=device,
        total_steps=cfg.steps,
        on_step=lambda step, loss, lr: log.info("pretrain step %d/%d: loss %.4f, lr %.2e", step, cfg.steps, loss, lr),
    )
    after = evaluate(model, tokenizer, heldout, seq_len=cfg.block_size, batch_size=16, device=device)
    model.to("cpu")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    with (out / GENERAL_EVAL_FILE).open("w", encoding="utf-8") as fh:
        for doc in heldout:
            fh.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    return {
        "config": asdict(cfg),
        "python": sys.version.split()[0],
        "corpus": "docstrings and comments of the Python standard library",
        "corpus_files": len(stdlib_files(corpus_root)),
        "corpus_documents": len(docs),
        "corpus_bytes": n_bytes,
        "train_documents": len(train),
        "train_tokens": int(blocks.shape[0] * cfg.block_size),
        "heldout_documents": len(heldout),
        "heldout_bytes": before.bytes if before else 0,
        "heldout_tokens": before.tokens if before else 0,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": result.steps,
        "tokens_seen": result.train_tokens,
        "epochs": result.train_tokens / max(1, blocks.shape[0] * cfg.block_size),
        "first_loss": result.curve[0][1] if result.curve else math.nan,
        "final_loss": result.final_loss,
        "heldout_bpb_init": before.bits_per_byte if before else math.nan,
        "heldout_bpb": after.bits_per_byte if after else math.nan,
        "device": device.type,
        "threads": threads,
        "train_seconds": result.wall_seconds,
        "wall_seconds": time.perf_counter() - t0,
    }
