"""Settings and outcomes of the quality gate: rule ids, ``QualityConfig``, ``WindowVerdict``, ``CheckOutcome``."""

from dataclasses import dataclass, field
from typing import Any

import polars as pl

RULES = ("text_missing", "valid_utf8", "text_too_short", "text_too_long", "text_control_chars")
"""Row-level GX rule ids, in priority order (a quarantined row's ``rule`` is its first failing one)."""

WINDOW_RULES = ("schema_columns", "record_id_not_null", "window_row_count", "duplicate_rate")
"""Window-level GX rule ids (no row verdicts; they fail the ``window_expectations`` check)."""

LATER_RULES = ("pii_<entity>", "duplicate_exact", "duplicate_near")
"""Rules applied after GX to the rows GX passed: PII quarantine policy, then dedup (on redacted text)."""

CONTROL_CHARS_REGEX = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
"""Unicode category Cc (C0, DEL, C1) except tab, LF and CR."""

REPLACEMENT_CHAR = "\ufffd"
"""U+FFFD: what the reader puts where a record had invalid UTF-8 bytes (``valid_utf8`` rule)."""


class QualityGateError(RuntimeError):
    """Great Expectations failed to evaluate an expectation (or returned no result for it).

    A fault, not a data outcome: the window must not be promoted. The GX exception message is kept
    in ``gx_exception_message`` rather than in ``str(error)`` because it may quote row values.
    """

    def __init__(self, message: str, gx_exception_message: str | None = None) -> None:
        super().__init__(message)
        self.gx_exception_message = gx_exception_message


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the gate; ``None`` disables a check (datatrove style)."""

    min_chars: int | None = 1
    """Minimum text length in characters after stripping leading/trailing Unicode whitespace."""
    max_chars: int | None = 2000
    """Maximum text length in characters (code points), not stripped."""
    forbid_control_chars: bool = True
    """Quarantine texts containing C0/C1 control characters (``CONTROL_CHARS_REGEX``)."""
    require_valid_utf8: bool = True
    """Quarantine rows whose source had invalid UTF-8 bytes: any U+FFFD in ``record_id``, ``text`` or
    ``metadata`` (the reader replaces bad bytes by U+FFFD and never stores them; a U+FFFD already
    present in valid input means an upstream decoder lost bytes, and is quarantined the same way).
    Rule ``valid_utf8``; set False and ``quarantine release --rule valid_utf8`` to accept them."""
    min_window_rows: int = 1
    """Window level: a curated window with fewer rows fails ``check_window_not_empty``."""
    max_window_rows: int | None = None
    """Window level: a curated window with more rows fails ``check_window_not_empty``."""
    max_duplicate_rate: float | None = None
    """Window level (GX ``ExpectColumnProportionOfUniqueValuesToBeBetween`` on the normalized-text
    hash of the parsed rows): above this share of duplicate texts the window fails the blocking
    ``window_expectations`` check. None disables."""
    dedup_exact: bool = True
    """Quarantine exact duplicates (normalized-text hash) within the window and against the
    ``dedup_recent_windows`` most recent other windows (rule ``duplicate_exact``). On by default."""
    dedup_recent_windows: int = 3
    """How many recently ingested windows the cross-window dedup (exact and near) looks at (0 = none)."""
    near_dup_threshold: float | None = None
    """Quarantine near duplicates (MinHash LSH, estimated Jaccard of character 5-grams >= this; rule
    ``duplicate_near``) within the window and against the curated rows of the
    ``dedup_recent_windows`` most recent windows. None disables."""
    near_dup_num_perm: int = 64
    """MinHash permutations for near-duplicate detection."""
    pii: bool = True
    """Detect PII/secrets with Presidio; redact or quarantine per ``pii_actions``."""
    pii_actions: dict = field(default_factory=lambda: {"PRIVATE_KEY": "quarantine"})
    """Entity -> "redact" | "quarantine" (entities of ``quality.pii.ENTITIES``); others: ``pii_default``."""
    pii_default: str = "redact"
    """Action for entities not in ``pii_actions``."""
    pii_workers: int | None = None
    """Worker processes that run Presidio while GX validates the window (``quality.pii.start_scan``);
    None = one per core beside the run's own (at most 4; none on a single core), 0 = always in the
    run's own process (overlapping the DuckDB hash in a thread)."""
    pii_parallel_min_candidates: int = 1500
    """Below this many prefilter candidates Presidio runs inline, beside the hash thread. Measured
    per 100k-row window on 2 cores (``bench/ingest.py``): with 972 candidates inline was ~0.2 s
    faster than one forked worker, with 2,082 the worker was ~0.1 s faster."""
    expectations_file: str | None = None
    """A JSON list of extra GX expectation configurations applied to every window (row-level ones over
    ``record_id``, ``text``, ``ts``, ``metadata``; their failures are quarantined under the expectation's
    name): ``quality.suite.user_expectations``. Read and validated here, at load; a relative path in
    ``streamtune.toml`` is relative to the home."""
    extra_expectations: tuple[Any, ...] = field(default=(), init=False, repr=False, compare=False)
    """The ``UserExpectation`` rules read from ``expectations_file`` (set by ``__post_init__``)."""

    def pii_policy(self):
        from quality.pii import PiiPolicy

        return PiiPolicy(actions=dict(self.pii_actions), default=self.pii_default, enabled=self.pii)

    def __post_init__(self) -> None:
        issues = []
        for name in ("min_chars", "max_chars", "min_window_rows", "max_window_rows"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                issues.append(f"{name} must be a non-negative int or None, got {value!r}")
        if self.min_window_rows is None:
            issues.append("min_window_rows must be an int (0 disables it)")
        if self.max_duplicate_rate is not None and not 0 <= self.max_duplicate_rate <= 1:
            issues.append(f"max_duplicate_rate must be in [0, 1] or None, got {self.max_duplicate_rate!r}")
        if self.pii_workers is not None and (
            isinstance(self.pii_workers, bool) or not isinstance(self.pii_workers, int) or self.pii_workers < 0
        ):
            issues.append(f"pii_workers must be a non-negative int or None, got {self.pii_workers!r}")
        if self.near_dup_threshold is not None and not 0 < self.near_dup_threshold <= 1:
            issues.append(f"near_dup_threshold must be in (0, 1] or None, got {self.near_dup_threshold!r}")
        try:
            self.pii_policy()
        except ValueError as e:
            issues.append(str(e))
        if not issues:
            if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
                issues.append(f"min_chars={self.min_chars} > max_chars={self.max_chars}")
            if self.max_window_rows is not None and self.min_window_rows > self.max_window_rows:
                issues.append(f"min_window_rows={self.min_window_rows} > max_window_rows={self.max_window_rows}")
        if issues:
            raise ValueError("invalid QualityConfig: " + "; ".join(issues))
        if self.expectations_file is not None:
            from quality.suite.user_expectations import load_expectations_file

            object.__setattr__(self, "extra_expectations", load_expectations_file(self.expectations_file))


@dataclass(frozen=True, eq=False)
class WindowVerdict:
    """Outcome of ``curate_window``: every input row is in exactly one of curated / quarantine."""

    curated: pl.DataFrame
    """RAW_SCHEMA: rows passing every row-level rule, input order."""
    quarantine: pl.DataFrame
    """QUARANTINE_SCHEMA: one row per failing input row, input order; ``rule`` = first failing rule
    (``RULES`` order), ``reason`` = every failing rule with its measurement, "; "-separated."""
    counts: dict[str, int]
    """Rows failing each rule id of ``RULES`` (0 for disabled rules) and each user expectation (by name); a
    row counts under every rule it fails, so the sum can exceed ``quarantine.height``."""
    gx_success: bool
    """GX suite success: False as soon as one row fails one rule."""
    gx_statistics: dict
    """GX statistics: evaluated/successful/unsuccessful_expectations, success_percent."""
    gx_run_id: str = ""
    """Run name of the GX validation (also in every quarantine row)."""
    gx_results: tuple[dict, ...] = ()
    """Per expectation: rule, expectation_type, success, element_count, unexpected_count,
    missing_count. Counts only: JSON-able and free of row values."""
    rule_counts: dict = field(default_factory=dict)
    """Quarantined rows by their ``rule`` (GX rules, ``pii_<entity>``, ``duplicate_exact|near``)."""
    redactions: dict = field(default_factory=dict)
    """PII findings replaced by ``<ENTITY>`` placeholders in curated rows, by entity (counts only)."""
    window_results: tuple[dict, ...] = ()
    """Window-level GX expectations: rule, success, observed (numbers only)."""
    duplicate_rate: float = 0.0
    """Share of parsed rows whose normalized text hash repeats one earlier in the window."""
    docs_index: str | None = None
    """Path of the GX Data Docs ``index.html`` of this validation (when ``docs_dir`` was given)."""
    raw_text_rows: tuple[int, ...] = ()
    """row_numbers whose curated text/metadata differ from the input (redacted)."""
    expectation_suite: dict = field(default_factory=dict)
    """The GX suite that judged the window, as GX JSON (``ExpectationSuite.to_json_dict()``): the built-in
    rules over the score columns, the window rules, then the user expectations (``expectations_file``)."""


@dataclass(frozen=True)
class CheckOutcome:
    """Body of a blocking asset check on a curated window."""

    passed: bool
    description: str
    metadata: dict
    """JSON-able numbers, strings and booleans only; never row values."""
