"""The general-capability guard of an update: fixed evaluation sets scored for champion and challenger.

``GeneralGuard.start`` reads the sets named in ``[gate] eval_sets`` (relative paths under the home) or,
when none are named and the base version is the pretrained stand-in (``streamtune base pretrain``), the
held-out slice of its corpus recorded in the base version's ``streamtune.general_eval`` tag. A missing,
empty or malformed file raises ``EvalSetError`` here, before anything trains. The champion is scored at
once, the challenger after training; ``decide`` passes both to ``training.gate.decide_promotion``, which
rejects a challenger worse by more than ``general_tolerance`` on any set. No Dagster imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orchestration.config.settings import Settings
from training.config import GateConfig, TrainConfig
from training.gate import GateDecision, decide_promotion

if TYPE_CHECKING:
    from training.tracking import ModelRegistry

GENERAL_EVAL_TAG = "streamtune.general_eval"
"""Base-version tag: path of the stand-in base's held-out corpus slice (JSONL), the default general set."""


def general_set_paths(settings: Settings, base_tags: dict[str, str]) -> dict[str, Path]:
    """``{name: path}`` of the general sets of an update: ``[gate] eval_sets`` (relative to the home), else
    ``{"general": <base tag path>}`` when the base carries ``GENERAL_EVAL_TAG``, else {}."""
    if settings.gate.eval_sets:
        return {name: settings.home / Path(p).expanduser() for name, p in settings.gate.eval_sets.items()}
    if base_tags.get(GENERAL_EVAL_TAG):
        return {"general": Path(base_tags[GENERAL_EVAL_TAG])}
    return {}


@dataclass
class GeneralGuard:
    """One update's general sets and the bits/byte of champion and challenger on each."""

    texts: dict[str, list[str]]
    """``{name: texts}`` (non-empty sets only)."""
    cfg: TrainConfig
    """The update's settings (``seq_len``, ``eval_batch_size``)."""
    champion: dict[str, float] = field(default_factory=dict)
    """``{name: bits/byte}`` of the parent."""
    challenger: dict[str, float] = field(default_factory=dict)
    """``{name: bits/byte}`` of the trained model."""

    @classmethod
    def start(
        cls, settings: Settings, registry: ModelRegistry, base_version: str, parent_dir: Path, cfg: TrainConfig
    ) -> GeneralGuard:
        """Read every set (``training.evaluate.read_eval_set``) and score the parent in ``parent_dir`` on them.

        Raises:
            EvalSetError: a set file is missing, empty, not JSONL/Parquet or lacks a string ``text`` field.
        """
        from training.evaluate import read_eval_set  # lazy: torch stays out of the code location's imports

        paths = general_set_paths(settings, registry.version_tags(base_version) if base_version else {})
        guard = cls({name: read_eval_set(path, name) for name, path in paths.items()}, cfg)
        guard.champion = guard._score(parent_dir)
        return guard

    def _score(self, model_dir: Path) -> dict[str, float]:
        from training.evaluate import score_eval_sets

        results = score_eval_sets(model_dir, self.texts, seq_len=self.cfg.seq_len, batch_size=self.cfg.eval_batch_size)
        return {name: r.bits_per_byte for name, r in results.items()}

    def score_challenger(self, model_dir: Path) -> None:
        """Score the trained model in ``model_dir`` on the same sets (no-op without sets)."""
        self.challenger = self._score(model_dir)

    def metrics(self) -> dict[str, float]:
        """``eval/<name>/bpb`` (challenger), ``eval/<name>/champion_bpb`` and ``eval/<name>/rel_change`` per set."""
        out = {}
        for name, after in self.challenger.items():
            before = self.champion[name]
            out[f"eval/{name}/bpb"] = after
            out[f"eval/{name}/champion_bpb"] = before
            out[f"eval/{name}/rel_change"] = (after - before) / before if before else 0.0
        return out

    def decide(self, metrics: dict[str, float], gate: GateConfig) -> GateDecision:
        """``decide_promotion`` on the new-window and retention bits/byte in ``metrics`` and the general sets."""
        return decide_promotion(
            metrics.get("champion_new_bpb"),
            metrics["challenger_new_bpb"],
            metrics.get("champion_retention_bpb"),
            metrics.get("challenger_retention_bpb"),
            gate,
            general={n: (self.champion[n], after) for n, after in self.challenger.items()},
        )
