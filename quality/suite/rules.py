"""Row-level rules of the gate: scores computed once with polars, GX decides on them, each rule names its reason.

A rule is a small class holding its threshold (datatrove's filter habit, lifted to frames): ``expectation()``
is the GX expectation it adds over one column of ``_score`` (score kept apart from the decision, as
NeMo-Curator's ``score_document`` / ``keep_document``), and ``reason()`` is a vectorised polars expression of
its quarantine reason over the judged frame (the rows with the score columns and ``_fffd_position``). No
per-row Python: the throughput floor of ``bench/ingest.py`` depends on it.
"""

from dataclasses import dataclass
from typing import ClassVar

import polars as pl

from quality.schema import RAW_SCHEMA
from quality.suite.config import CONTROL_CHARS_REGEX, REPLACEMENT_CHAR, QualityConfig

Spec = tuple[str, str, dict]
"""(rule id, GX expectation class name, expectation kwargs)."""


class RowRule:
    """One row-level rule: the GX expectation that flags rows, and the reason text of a flagged row."""

    name: ClassVar[str]
    """Rule id (``quality.suite.RULES``, or ``record_id_missing``)."""

    def expectation(self) -> Spec:
        raise NotImplementedError

    def reason(self) -> pl.Expr:
        """String expression: this rule's part of a flagged row's ``reason``."""
        raise NotImplementedError


class _NotNull(RowRule):
    """A null ``field`` (its score column ``column`` is null iff the field is)."""

    field: ClassVar[str]
    column: ClassVar[str]

    def expectation(self) -> Spec:
        return (self.name, "ExpectColumnValuesToNotBeNull", {"column": self.column})

    def reason(self) -> pl.Expr:
        return pl.lit(f"{self.name}: {self.field} is null")


class TextMissing(_NotNull):
    """Null text (``text_chars`` is null iff ``text`` is); always on: a null text can never be curated."""

    name, field, column = "text_missing", "text", "text_chars"


class ValidUtf8(RowRule):
    """Any U+FFFD in record_id, text or metadata (the reader's replacement of invalid UTF-8 bytes)."""

    name = "valid_utf8"

    def expectation(self) -> Spec:
        return (self.name, "ExpectColumnValuesToBeBetween", {"column": "invalid_utf8_chars", "max_value": 0})

    def reason(self) -> pl.Expr:
        return pl.format(
            "valid_utf8: invalid UTF-8 replaced by U+FFFD at byte {} of {}", pl.col("_fffd_at"), pl.col("_fffd_field")
        )


@dataclass(frozen=True)
class TextTooShort(RowRule):
    """Fewer than ``min_chars`` code points after stripping leading/trailing Unicode whitespace."""

    min_chars: int
    name = "text_too_short"

    def expectation(self) -> Spec:
        return (
            self.name,
            "ExpectColumnValuesToBeBetween",
            {"column": "text_stripped_chars", "min_value": self.min_chars},
        )

    def reason(self) -> pl.Expr:
        return pl.format(
            "text_too_short: {} chars after stripping whitespace, min_chars={}",
            pl.col("text_stripped_chars"),
            pl.lit(self.min_chars),
        )


@dataclass(frozen=True)
class TextTooLong(RowRule):
    """More than ``max_chars`` code points (not stripped)."""

    max_chars: int
    name = "text_too_long"

    def expectation(self) -> Spec:
        return (self.name, "ExpectColumnValuesToBeBetween", {"column": "text_chars", "max_value": self.max_chars})

    def reason(self) -> pl.Expr:
        return pl.format("text_too_long: {} chars, max_chars={}", pl.col("text_chars"), pl.lit(self.max_chars))


class ControlChars(RowRule):
    """C0/C1 control characters other than tab, LF and CR (``CONTROL_CHARS_REGEX``)."""

    name = "text_control_chars"

    def expectation(self) -> Spec:
        return (self.name, "ExpectColumnValuesToBeBetween", {"column": "text_control_chars", "max_value": 0})

    def reason(self) -> pl.Expr:
        return pl.lit("text_control_chars: contains C0/C1 control characters")


class RecordIdMissing(_NotNull):
    """Null record_id (the readers always set one; a guard for frames built elsewhere)."""

    name, field, column = "record_id_missing", "record_id", "record_id_bytes"


def row_rules(cfg: QualityConfig) -> list[RowRule]:
    """The enabled row-level rules of ``cfg`` in ``RULES`` (priority) order; thresholds None/False are off."""
    rules: list[RowRule] = [TextMissing()]
    if cfg.require_valid_utf8:
        rules.append(ValidUtf8())
    if cfg.min_chars is not None:
        rules.append(TextTooShort(cfg.min_chars))
    if cfg.max_chars is not None:
        rules.append(TextTooLong(cfg.max_chars))
    if cfg.forbid_control_chars:
        rules.append(ControlChars())
    return rules


def _row_specs(cfg: QualityConfig) -> list[Spec]:
    """(rule id, GX expectation class, kwargs) for every enabled row-level rule, RULES order.
    Columns are those of ``_score``."""
    return [rule.expectation() for rule in row_rules(cfg)]


def _check_raw_frame(rows: pl.DataFrame) -> None:
    """Raise ValueError unless ``rows`` is a RAW_SCHEMA polars frame with non-null, unique ``row_number``."""
    if not isinstance(rows, pl.DataFrame):
        raise ValueError(f"expected a polars DataFrame, got {type(rows).__name__}")
    if dict(rows.schema) != RAW_SCHEMA:
        got = dict(rows.schema)
        issues = [
            f"{name}: got {got.get(name, 'missing')}, expected {dtype}"
            for name, dtype in RAW_SCHEMA.items()
            if got.get(name) != dtype
        ]
        issues += [f"{name}: unexpected column" for name in got if name not in RAW_SCHEMA]
        raise ValueError(
            "frame does not match RAW_SCHEMA (select and cast with df.select(list(RAW_SCHEMA))"
            ".cast(RAW_SCHEMA)): " + "; ".join(issues)
        )
    row_number = rows.get_column("row_number")
    if row_number.null_count() or row_number.n_unique() != rows.height:
        raise ValueError("row_number must be non-null and unique within the frame (it is the GX row index)")


def _score(rows: pl.DataFrame) -> pl.DataFrame:
    """The frame GX validates, all Int64 (vectorized in GX's pandas engine; no text values):
    ``row_number``; ``text_chars`` and ``text_stripped_chars`` (Unicode code points; null where
    text is null); ``text_control_chars`` (matches of ``CONTROL_CHARS_REGEX``, null where text is
    null); ``invalid_utf8_chars`` (U+FFFD in record_id, text and metadata; 0 if none);
    ``record_id_bytes`` (null where record_id is null)."""
    fffd = [
        pl.col(c).str.count_matches(REPLACEMENT_CHAR, literal=True).fill_null(0)
        for c in ("record_id", "text", "metadata")
    ]
    return rows.select(
        "row_number",
        text_chars=pl.col("text").str.len_chars().cast(pl.Int64),
        text_stripped_chars=pl.col("text").str.strip_chars().str.len_chars().cast(pl.Int64),
        text_control_chars=pl.col("text").str.count_matches(CONTROL_CHARS_REGEX).cast(pl.Int64),
        invalid_utf8_chars=pl.sum_horizontal(fffd).cast(pl.Int64),
        record_id_bytes=pl.col("record_id").str.len_bytes().cast(pl.Int64),
    )


def _fffd_position() -> dict[str, pl.Expr]:
    """``_fffd_field`` (first of record_id, text, metadata holding U+FFFD) and ``_fffd_at`` (its
    byte offset there): the ``valid_utf8`` reason. Positions only, never values."""
    field, at = pl.lit(None, dtype=pl.String), pl.lit(None, dtype=pl.Int64)
    for col in ("metadata", "text", "record_id"):  # reversed: the first field wins
        pos = pl.col(col).str.find(REPLACEMENT_CHAR, literal=True).cast(pl.Int64)
        field = pl.when(pos.is_not_null()).then(pl.lit(col)).otherwise(field)
        at = pl.when(pos.is_not_null()).then(pos).otherwise(at)
    return {"_fffd_field": field, "_fffd_at": at}


def _hash_key(norm_hash: pl.Series) -> pl.Series:
    """Int64 key of the normalized-text hash (its first 15 hex digits, 60 bits) for GX's
    uniqueness metric: an integer column keeps the GX frame free of strings."""
    return norm_hash.str.slice(0, 15).str.to_integer(base=16).cast(pl.Int64)
