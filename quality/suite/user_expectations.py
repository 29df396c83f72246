"""User expectations: extra GX expectation configurations from a JSON file, applied to every window.

``[quality] expectations_file`` names a JSON list of GX 1.x expectation configurations, as
``ExpectationConfiguration.to_json_dict()`` writes them (``type`` in snake case, ``kwargs``; an optional
``meta.name`` names the rule, else the type does)::

    [{"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "text", "max_value": 500}},
     {"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "text", "regex": "lorem"},
      "meta": {"name": "no_placeholder_text"}}]

Each must be a row-level (map) expectation over the window's own columns (``USER_COLUMNS``): a row it flags is
quarantined with the rule's name as ``rule`` and ``"<name>: fails <type> <kwargs>"`` as ``reason`` (after the
built-in rules, in file order). The file is read and every configuration built (GX's own kwargs validation)
when the settings load, so a bad file is a settings error, not a failed run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from quality.suite.config import RULES, WINDOW_RULES
from quality.suite.rules import RowRule, Spec

USER_COLUMNS = ("record_id", "text", "ts", "metadata")
"""Columns a user expectation may name: the window's rows as read (``RAW_SCHEMA``), beside the score columns."""

_RESERVED = {*RULES, *WINDOW_RULES, "record_id_missing"}
_RESERVED_PREFIXES = ("pii_", "duplicate_")
_COLUMN_KWARGS = ("column", "column_A", "column_B", "column_list")


@dataclass(frozen=True, eq=False)
class UserExpectation(RowRule):
    """One user expectation: a GX map expectation whose flagged rows are quarantined as ``name``."""

    name: str  # type: ignore[misc]  (an instance field here; a ClassVar on the built-in rules)
    type: str
    """GX expectation type, snake case (``expect_column_values_to_match_regex``)."""
    class_name: str
    """The class in ``great_expectations.expectations`` (``ExpectColumnValuesToMatchRegex``)."""
    kwargs_json: str
    """The expectation's kwargs as sorted JSON (kept as text: the dataclass stays immutable)."""

    @property
    def kwargs(self) -> dict:
        return json.loads(self.kwargs_json)

    def expectation(self) -> Spec:
        return (self.name, self.class_name, self.kwargs)

    def reason(self) -> pl.Expr:
        return pl.lit(f"{self.name}: fails {self.type} {self.kwargs_json}")


def load_expectations_file(path: str | os.PathLike) -> tuple[UserExpectation, ...]:
    """Read and validate a user expectations file (format in the module docstring).

    Returns:
        One ``UserExpectation`` per entry, in file order.

    Raises:
        ValueError: the file is missing or not JSON, not a list of ``{"type", "kwargs"[, "meta"]}`` objects,
            names an unknown GX expectation type or one that is not row-level (a map expectation), names a
            column outside ``USER_COLUMNS``, has kwargs GX rejects, or two entries share a rule name (or one
            takes a built-in rule's name). The message names the file and the entry.
    """
    file = Path(path)
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"expectations_file {file} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"expectations_file {file} is not readable JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise ValueError(f"expectations_file {file} must hold a JSON list of expectation configurations")
    out: list[UserExpectation] = []
    for i, entry in enumerate(entries):
        rule = _build(entry, f"expectations_file {file} entry {i}")
        if rule.name in {r.name for r in out} or rule.name in _RESERVED or rule.name.startswith(_RESERVED_PREFIXES):
            raise ValueError(
                f"expectations_file {file} entry {i}: rule name {rule.name!r} is taken (a built-in rule or an "
                'earlier entry); give it another with "meta": {"name": "..."}'
            )
        out.append(rule)
    return tuple(out)


def _build(entry: object, where: str) -> UserExpectation:
    """One entry checked and built with GX (``where`` prefixes every message)."""
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("type"), str)
        or not isinstance(entry.get("kwargs"), dict)
    ):
        raise ValueError(f'{where}: expected {{"type": "expect_...", "kwargs": {{...}}}}, got {entry!r}')
    unknown = sorted(set(entry) - {"type", "kwargs", "meta", "id", "notes", "description"})
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}")
    kind, kwargs, meta = entry["type"], dict(entry["kwargs"]), entry.get("meta") or {}
    if not isinstance(meta, dict) or not isinstance(meta.get("name", kind), str) or not meta.get("name", kind):
        raise ValueError(f"{where}: meta.name must be a non-empty string")
    if {"meta", "result_format"} & set(kwargs):
        raise ValueError(f"{where}: kwargs may not set meta or result_format (the gate sets them)")
    for key in set(_COLUMN_KWARGS) & set(kwargs):
        columns = kwargs[key] if key == "column_list" and isinstance(kwargs[key], list) else [kwargs[key]]
        for column in columns:
            if column not in USER_COLUMNS:
                raise ValueError(f"{where}: {key} {column!r} is not a window column; use one of {list(USER_COLUMNS)}")
    cls = _expectation_class(kind, where)
    try:
        cls(**kwargs)
    except Exception as exc:  # pydantic's ValidationError, TypeError, GX's InvalidExpectationConfigurationError
        raise ValueError(f"{where}: GX rejects the kwargs of {kind}: {exc}") from exc
    return UserExpectation(
        name=meta.get("name", kind), type=kind, class_name=cls.__name__, kwargs_json=json.dumps(kwargs, sort_keys=True)
    )


def _expectation_class(kind: str, where: str) -> type:
    """The core GX expectation class of ``kind``, which must be row-level (a map expectation)."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before the import reads it
    import great_expectations.expectations as gxe
    from great_expectations.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        cls = get_expectation_impl(kind)
    except ExpectationNotFoundError as exc:
        raise ValueError(f"{where}: unknown GX expectation type {kind!r}") from exc
    if getattr(gxe, cls.__name__, None) is not cls:
        raise ValueError(f"{where}: {kind!r} is not a core GX expectation")
    if not issubclass(cls, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)):
        raise ValueError(
            f"{where}: {kind!r} is not row-level; only map expectations (column, column pair, multicolumn) "
            "can quarantine rows"
        )
    return cls


def user_columns(rows: pl.DataFrame) -> list[pl.Series]:
    """The window's own columns user expectations validate (``USER_COLUMNS``), in row order."""
    return [rows.get_column(c) for c in USER_COLUMNS]


def write_suite(suite_json: dict, path: str | os.PathLike) -> Path:
    """Write a GX suite (``ExpectationSuite.to_json_dict()``) as indented JSON to ``path`` (parents created).

    Returns:
        The file written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(suite_json, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return target
