"""The model card of a registered version: a Markdown document a reviewer reads, rendered from numbers only.

``ModelCard`` holds what the card says (base model, windows and their row accounting, quarantine and
redaction counts by rule, replay and recipe, the promotion gate's numbers, evaluation sets, continual-learning
metrics, intended use and limits); ``render_model_card`` turns it into Markdown. The sections follow Mitchell
et al., "Model Cards for Model Reporting" (FAT* 2019), section 4 (model details, intended use, factors,
metrics, evaluation data, training data, quantitative analyses, caveats), cut to what a continual update has.

Nothing here reads a record: every field is a count, a rate, a key, a setting or a bits/byte figure, so the
card is free of record text by construction (``orchestration.pipeline.model_card`` gathers the counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

INTENDED_USE = (
    "Continual fine-tuning research and internal text generation over the stream it was trained on: "
    "completing or scoring texts like the curated windows listed below. A challenger serves only once the "
    "promotion gate (or a person, in approval mode) moves the `champion` alias to it."
)
"""Default intended-use paragraph."""

LIMITS = (
    "Small model trained on a few windows of one stream: fluent only on text like the training windows, "
    "not a general-purpose assistant, not evaluated for safety, bias or factual accuracy.",
    "Bits/byte are measured on held-out rows of the same windows (and a retention slice of earlier windows); "
    "they say nothing about other domains.",
    "PII is redacted by pattern and NER (Presidio) before training; detection is not perfect, so outputs "
    "may still reproduce personal data seen in training rows.",
    "Rows a deletion request removed retire every version that saw them (`streamtune forget`); "
    "this card does not track that after it was written.",
)
"""Default limits, one bullet each."""


@dataclass(frozen=True)
class WindowRows:
    """One training window's row accounting (counts of rows, no text)."""

    window_key: str
    parsed_rows: int
    rejected_rows: int
    """Lines the reader could not parse."""
    curated_rows: int
    quarantined_rows: int
    quarantine_by_rule: dict[str, int] = field(default_factory=dict)
    """Quarantined rows by rule (GX rules, user expectations, ``pii_<entity>``, ``duplicate_*``)."""
    redactions_by_entity: dict[str, int] = field(default_factory=dict)
    """``<ENTITY>`` placeholders in the window's curated rows, by entity."""


@dataclass(frozen=True)
class EvalSet:
    """A dataset the update used (its MLflow dataset input): name, rows, digest, windows, context."""

    name: str
    rows: int
    digest: str
    windows: tuple[str, ...] = ()
    context: str = "evaluation"
    """``training`` or ``evaluation`` (MLflow's ``mlflow.data.context``)."""


@dataclass(frozen=True)
class ModelCard:
    """Everything a model card of one registered version says. Numbers in bits/byte unless named otherwise."""

    model_name: str
    version: str
    parent_version: str
    base: dict[str, str]
    """The base model's description (``base_model`` and the architecture params of the base version's run)."""
    windows: tuple[WindowRows, ...]
    rows_by_split: dict[str, int]
    """Snapshot rows per split: train, replay, new_eval, retention_eval, first_eval."""
    recipe: dict[str, str]
    """Training and replay parameters as logged in the update's MLflow run (``train.*``, ``replay.*``, ...)."""
    gate: dict[str, str]
    """The promotion gate's version tags (``gate.decision``, ``gate.reason``, ``gate.<number>``)."""
    metrics: dict[str, float]
    """The update's metrics (``{champion,challenger}_{new,retention}_{loss,ppl,bpb}`` and the rest)."""
    datasets: tuple[EvalSet, ...]
    cl_metrics: dict[str, float] = field(default_factory=dict)
    """``cl_acc``, ``cl_bwt``, ``cl_forgetting`` over every update so far (scores = -bits/byte)."""
    promoted: bool | None = None
    intended_use: str = INTENDED_USE
    limits: tuple[str, ...] = LIMITS


def render_model_card(card: ModelCard) -> str:
    """The card as Markdown (GitHub-flavoured tables); deterministic for a given ``card``.

    Returns:
        A document starting with ``# Model card: <name> v<version>``, ending with a newline.
    """
    sections = [
        f"# Model card: {card.model_name} v{card.version}",
        _details(card),
        f"## Intended use\n\n{card.intended_use}",
        "## Limits\n\n" + "\n".join(f"- {line}" for line in card.limits),
        _training_data(card),
        _quality(card),
        _recipe(card),
        _gate(card),
        _evaluation_sets(card),
        _continual(card),
    ]
    return "\n\n".join(sections) + "\n"


def _details(card: ModelCard) -> str:
    decision = {True: "promoted", False: "rejected", None: "pending"}[card.promoted]
    lines = [
        "## Model details",
        "",
        f"- registered model: `{card.model_name}`, version {card.version} (decision: {decision})",
        f"- fine-tuned from: version {card.parent_version}",
    ]
    base = dict(card.base)
    if base:
        lines.append(f"- base model: `{base.pop('base_model', 'unknown')}` (version {base.pop('version', '?')})")
    lines += [f"- base {k}: `{v}`" for k, v in sorted(base.items())]
    return "\n".join(lines)


def _training_data(card: ModelCard) -> str:
    lines = ["## Training data", "", "| split | rows |", "|---|---|"]
    lines += [f"| {split} | {rows} |" for split, rows in card.rows_by_split.items()]
    lines += [
        "",
        "| window | parsed rows | rejected lines | curated rows | quarantined rows |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {w.window_key} | {w.parsed_rows} | {w.rejected_rows} | {w.curated_rows} | {w.quarantined_rows} |"
        for w in card.windows
    ]
    return "\n".join(lines)


def _quality(card: ModelCard) -> str:
    lines = ["## Quarantine and redaction", "", "| window | kind | rule or entity | rows |", "|---|---|---|---|"]
    for w in card.windows:
        lines += [f"| {w.window_key} | quarantine | {r} | {n} |" for r, n in sorted(w.quarantine_by_rule.items())]
        lines += [f"| {w.window_key} | redaction | {e} | {n} |" for e, n in sorted(w.redactions_by_entity.items())]
    if len(lines) == 4:
        lines.append("| (all) | | nothing quarantined or redacted | 0 |")
    return "\n".join(lines)


def _recipe(card: ModelCard) -> str:
    lines = ["## Replay and recipe", "", "| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(card.recipe.items())]
    return "\n".join(lines)


def _gate(card: ModelCard) -> str:
    m = card.metrics
    lines = ["## Promotion gate", "", f"{card.gate.get('gate.reason', '')}", ""]
    lines += ["| slice | champion bits/byte | challenger bits/byte |", "|---|---|---|"]
    for slice_, label in (("new", "new windows"), ("retention", "retention"), ("first", "first window")):
        old, new = m.get(f"champion_{slice_}_bpb"), m.get(f"challenger_{slice_}_bpb")
        if old is not None or new is not None:
            lines.append(f"| {label} | {_num(old)} | {_num(new)} |")
    lines += ["", "| gate tag | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(card.gate.items()) if k != "gate.reason"]
    return "\n".join(lines)


def _evaluation_sets(card: ModelCard) -> str:
    lines = ["## Datasets", "", "| dataset | context | rows | windows | digest |", "|---|---|---|---|---|"]
    lines += [
        f"| {d.name} | {d.context} | {d.rows} | {', '.join(d.windows)} | `{d.digest[:12]}` |" for d in card.datasets
    ]
    return "\n".join(lines)


def _continual(card: ModelCard) -> str:
    lines = ["## Continual-learning metrics", ""]
    if not card.cl_metrics:
        return "\n".join([*lines, "Not computed yet (needs the update on record)."])
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_num(v)} |" for k, v in sorted(card.cl_metrics.items())]
    lines += ["", "Scores are -bits/byte on each window's held-out rows (Lopez-Paz & Ranzato 2017, GEM, section 5)."]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}"
