"""Great Expectations gate for one window: row-level verdicts (curated vs quarantine) and the
blocking checks run on the curated window.

Row verdicts come from GX's ``unexpected_index_list`` (indexed by ``row_number``), never from
``success``: an expectation passing under ``mostly`` still lists its failing rows. The result
format keeps row *values* out of every result (``exclude_unexpected_values``), so texts (and any
PII in them) never reach validation results, statistics, logs or Data Docs.

GX is imported lazily (2.5-5 s) and a single ephemeral context is kept per process; validation
results are not kept in it, so calling ``curate_window`` for every window of a long-running process
does not grow memory. Analytics and progress bars are off.

Scores (lengths, control-character and U+FFFD counts, a 60-bit key of the normalized-text hash) are
computed with polars and GX makes the decisions on them, as NeMo-Curator separates
``score_document`` from ``keep_document``. The frame GX validates is all integers (no text): GX
hashes the whole batch and evaluates map expectations vectorized on int64/float64 columns only, so
this keeps the GX stage proportional to the row count at numpy speed.
"""

import hashlib
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from quality.schema import QUARANTINE_SCHEMA, RAW_SCHEMA

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

RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": ["row_number"],
    "exclude_unexpected_values": True,  # row numbers only: no text in results
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 0,
}


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


@dataclass(frozen=True, eq=False)
class WindowVerdict:
    """Outcome of ``curate_window``: every input row is in exactly one of curated / quarantine."""

    curated: pl.DataFrame
    """RAW_SCHEMA: rows passing every row-level rule, input order."""
    quarantine: pl.DataFrame
    """QUARANTINE_SCHEMA: one row per failing input row, input order; ``rule`` = first failing rule
    (``RULES`` order), ``reason`` = every failing rule with its measurement, "; "-separated."""
    counts: dict[str, int]
    """Rows failing each rule id of ``RULES`` (0 for disabled rules); a row counts under every rule
    it fails, so the sum can exceed ``quarantine.height``."""
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


@dataclass(frozen=True)
class CheckOutcome:
    """Body of a blocking asset check on a curated window."""

    passed: bool
    description: str
    metadata: dict
    """JSON-able numbers, strings and booleans only; never row values."""


# ---------------------------------------------------------------------------------------------
# row-level gate


def curate_window(
    rows: pl.DataFrame,
    cfg: QualityConfig = QualityConfig(),
    *,
    window_key: str | None = None,
    prior_hashes: pl.DataFrame | None = None,
    docs_dir: str | os.PathLike | None = None,
) -> WindowVerdict:
    """Split a window's rows into curated (PII-redacted, deduplicated) rows and quarantine.

    Stages: (1) one GX validation of the window (row rules ``RULES`` + window rules
    ``WINDOW_RULES``); rows failing a row rule are quarantined; (2) PII/secrets (``quality.pii``)
    on the rows GX passed (Presidio runs before GX on every row within ``cfg.max_chars``: with
    ``cfg.pii_parallel_min_candidates`` or more candidates in ``cfg.pii_workers`` forked processes
    that overlap the hash and GX, else in this process while a thread computes the normalized-text
    hashes in DuckDB; same verdicts either way):
    rows with a quarantine-policy entity are quarantined as
    ``pii_<entity>``, others are redacted; (3) dedup (``quality.dedup``) on the redacted texts.

    Args:
        rows: RAW_SCHEMA frame (exact column names and dtypes) with unique, non-null
            ``row_number`` (one window's rows, as ``quality.readers.read_window_file`` returns).
        cfg: thresholds; rules whose threshold is None/False are not evaluated (count 0).
        window_key: the window (for duplicate links); defaults to the rows' ``window_key``.
        prior_hashes: ``window_key, row_number, norm_hash`` of recent windows' curated rows
            (cross-window dedup), plus ``text`` when ``cfg.near_dup_threshold`` is set (near
            duplicates against recent windows); None = within the window only.
        docs_dir: build GX Data Docs for this validation into this directory (PII-free: results
            hold row numbers and counts only).

    Rules and their exact ``reason`` parts:
        - ``text_missing``: ``"text_missing: text is null"``
        - ``valid_utf8``: ``"valid_utf8: invalid UTF-8 replaced by U+FFFD at byte 4 of text"`` (first
          U+FFFD; field ``record_id``, ``text`` or ``metadata``; byte offset in the stored field)
        - ``text_too_short``: ``"text_too_short: 0 chars after stripping whitespace, min_chars=1"``
        - ``text_too_long``: ``"text_too_long: 2345 chars, max_chars=2000"``
        - ``text_control_chars``: ``"text_control_chars: contains C0/C1 control characters"``
        - ``record_id_missing``: ``"record_id_missing: record_id is null"``
        - ``pii_<entity>``: ``"pii_private_key: contains PRIVATE_KEY (policy: quarantine)"``
        - ``duplicate_exact`` / ``duplicate_near``: see ``quality.dedup.find_duplicates``.
        A null text fails only ``text_missing``. Quarantine rows keep the *raw* text.

    Returns:
        ``WindowVerdict``; ``curated.height + quarantine.height == rows.height`` (asserted).

    Raises:
        ValueError: ``rows`` does not match RAW_SCHEMA, or ``row_number`` is null or duplicated.
        QualityGateError: GX raised while evaluating an expectation, or a result is missing.
    """
    from quality.dedup import find_duplicates, norm_hashes
    from quality.pii import redact_rows, start_scan

    _check_raw_frame(rows)
    if window_key is None:
        window_key = rows.get_column("window_key")[0] if rows.height else ""
    policy = cfg.pii_policy()
    # Presidio (pure Python) in worker processes while this process hashes and runs GX, or inline
    # while a thread hashes (DuckDB releases the GIL); texts over max_chars are left out (GX
    # quarantines them before PII). The fork comes before the thread starts.
    pending = start_scan(
        rows, policy, workers=cfg.pii_workers, min_candidates=cfg.pii_parallel_min_candidates, max_chars=cfg.max_chars
    )
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="norm-hash") as pool:
            hashing = pool.submit(norm_hashes, rows)
            scored = _score(rows)  # polars, beside the DuckDB hash (both release the GIL)
            if pending is not None and not pending.forked:
                pending.result()
            hashes = hashing.result()
        scored = scored.with_columns(norm_hash_key=_hash_key(hashes.get_column("norm_hash")))
        specs = _row_specs(cfg) + [
            ("record_id_missing", "ExpectColumnValuesToNotBeNull", {"column": "record_id_bytes"})
        ]
        wspecs = _window_specs(cfg, list(scored.columns))
        run = _gx().validate("curate_window", specs + wspecs, scored, docs_dir=docs_dir)
    except BaseException:
        if pending is not None:
            pending.close()
        raise

    gx_rules = (*RULES, "record_id_missing")
    failing = {rule: run.failing_rows(rule) for rule in gx_rules}
    counts = {rule: len(failing[rule]) for rule in RULES}
    known = set(rows.get_column("row_number").to_list())
    for rule, ids in failing.items():
        assert set(ids) <= known, f"GX reported unknown row_numbers for {rule}"

    flags = {rule: pl.col("row_number").is_in(pl.Series(failing[rule], dtype=pl.Int64)) for rule in gx_rules}
    reasons = {
        "text_missing": pl.lit("text_missing: text is null"),
        "valid_utf8": pl.format(
            "valid_utf8: invalid UTF-8 replaced by U+FFFD at byte {} of {}", pl.col("_fffd_at"), pl.col("_fffd_field")
        ),
        "text_too_short": pl.format(
            "text_too_short: {} chars after stripping whitespace, min_chars={}",
            pl.col("_stripped_chars"),
            pl.lit(cfg.min_chars),
        ),
        "text_too_long": pl.format("text_too_long: {} chars, max_chars={}", pl.col("_chars"), pl.lit(cfg.max_chars)),
        "text_control_chars": pl.lit("text_control_chars: contains C0/C1 control characters"),
        "record_id_missing": pl.lit("record_id_missing: record_id is null"),
    }
    rule_expr = pl.when(flags[gx_rules[0]]).then(pl.lit(gx_rules[0]))
    for rule in gx_rules[1:]:
        rule_expr = rule_expr.when(flags[rule]).then(pl.lit(rule))
    judged = rows.with_columns(
        _chars=scored.get_column("text_chars"),
        _stripped_chars=scored.get_column("text_stripped_chars"),
        **_fffd_position(),
    ).with_columns(
        rule=rule_expr.otherwise(pl.lit(None, dtype=pl.String)),
        reason=pl.concat_str([pl.when(flags[r]).then(reasons[r]) for r in gx_rules], separator="; ", ignore_nulls=True),
        gx_run_id=pl.lit(run.run_id, dtype=pl.String),
        duplicate_of_window=pl.lit(None, dtype=pl.String),
        duplicate_of_row=pl.lit(None, dtype=pl.Int64),
    )
    gx_bad = pl.col("rule").is_not_null()
    parts = [judged.filter(gx_bad).select(list(QUARANTINE_SCHEMA))]
    passed = judged.filter(~gx_bad).select(list(RAW_SCHEMA))

    # PII: redact or quarantine (quarantine keeps the raw row).
    pii = redact_rows(passed, policy, scan=pending)
    redacted = passed.with_columns(text=pii.text, metadata=pii.metadata)
    changed = passed.filter((pl.col("text") != pii.text) | (pl.col("metadata") != pii.metadata))
    if pii.quarantine:
        qrows = pl.DataFrame(
            {
                "row_number": list(pii.quarantine),
                "rule": [f"pii_{ents[0].lower()}" for ents in pii.quarantine.values()],
                "reason": [
                    "; ".join(f"pii_{e.lower()}: contains {e} (policy: quarantine)" for e in ents)
                    for ents in pii.quarantine.values()
                ],
            },
            schema={"row_number": pl.Int64, "rule": pl.String, "reason": pl.String},
        )
        parts.append(_quarantine_rows(passed, qrows, run.run_id))
        redacted = redacted.filter(~pl.col("row_number").is_in(qrows.get_column("row_number")))

    # Dedup on the redacted texts (no PII in hashes or links): hashes of unchanged texts are reused.
    redacted_hashes = None
    if cfg.dedup_exact or cfg.near_dup_threshold is not None:
        redone = (
            redacted.join(passed.select("row_number", raw_text="text"), on="row_number")
            .filter(pl.col("text") != pl.col("raw_text"))
            .select("row_number", "text")
        )
        redacted_hashes = pl.concat(
            [
                hashes.join(redacted.select("row_number"), on="row_number").filter(
                    ~pl.col("row_number").is_in(redone.get_column("row_number"))
                ),
                norm_hashes(redone),
            ]
        )
    dups = find_duplicates(
        redacted,
        window_key,
        prior_hashes if cfg.dedup_recent_windows else None,
        exact=cfg.dedup_exact,
        near_threshold=cfg.near_dup_threshold,
        num_perm=cfg.near_dup_num_perm,
        hashes=redacted_hashes,
    )
    if dups.height:
        parts.append(_quarantine_rows(passed, dups, run.run_id))
        redacted = redacted.filter(~pl.col("row_number").is_in(dups.get_column("row_number")))

    curated = redacted.select(list(RAW_SCHEMA)).cast(RAW_SCHEMA)
    quarantine = pl.concat([p.cast(QUARANTINE_SCHEMA) for p in parts]).sort("row_number")
    assert curated.height + quarantine.height == rows.height, (
        f"rows not conserved: {rows.height} in, {curated.height} curated + {quarantine.height} quarantined"
    )
    rule_counts = {r: int(n) for r, n in quarantine.group_by("rule").len().sort("rule").iter_rows()}
    n_hash = hashes.get_column("norm_hash").drop_nulls()
    dup_rate = (1 - n_hash.n_unique() / n_hash.len()) if n_hash.len() else 0.0
    window_results = tuple(
        {"rule": s["rule"], "success": s["success"], "observed": _json_number(run.observed_value(s["rule"]))}
        for s in run.summaries
        if s["rule"] in WINDOW_RULES
    )
    return WindowVerdict(
        curated=curated,
        quarantine=quarantine,
        counts=counts,
        gx_success=run.success,
        gx_statistics=run.statistics,
        gx_run_id=run.run_id,
        gx_results=run.summaries,
        rule_counts=rule_counts,
        redactions=pii.redactions,
        window_results=window_results,
        duplicate_rate=float(dup_rate),
        docs_index=run.docs_index,
        raw_text_rows=tuple(changed.get_column("row_number").to_list()),
    )


def _quarantine_rows(source: pl.DataFrame, verdicts: pl.DataFrame, run_id: str) -> pl.DataFrame:
    """Raw rows of ``source`` for the row_numbers in ``verdicts`` (rule, reason, optional links)."""
    for col, dtype in (("duplicate_of_window", pl.String), ("duplicate_of_row", pl.Int64)):
        if col not in verdicts.columns:
            verdicts = verdicts.with_columns(pl.lit(None, dtype=dtype).alias(col))
    return (
        source.join(verdicts, on="row_number", how="inner")
        .with_columns(gx_run_id=pl.lit(run_id, dtype=pl.String))
        .select(list(QUARANTINE_SCHEMA))
    )


def _json_number(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _window_specs(cfg: QualityConfig, columns: list[str]) -> list[tuple[str, str, dict]]:
    """Window-level expectations of the curate suite (``WINDOW_RULES``)."""
    specs = [("schema_columns", "ExpectTableColumnsToMatchSet", {"column_set": columns, "exact_match": True})]
    specs.append(
        ("window_row_count", "ExpectTableRowCountToBeBetween", {"min_value": 0, "max_value": cfg.max_window_rows})
    )
    if cfg.max_duplicate_rate is not None:
        specs.append(
            (
                "duplicate_rate",
                "ExpectColumnProportionOfUniqueValuesToBeBetween",
                {"column": "norm_hash_key", "min_value": 1 - cfg.max_duplicate_rate},
            )
        )
    return specs


def verdict_metadata(verdict: WindowVerdict, raw_rows: int) -> dict[str, Any]:
    """Dagster metadata of a curated window: counts and rates only, never row values.

    Keys: ``dagster/row_count`` (curated rows), ``raw_rows``, ``quarantined_rows``,
    ``quarantined_by_rule`` (rule -> rows), ``rule_failures`` (GX row rule -> failing rows),
    ``redactions_by_entity`` (entity -> placeholders written), ``duplicate_rate`` (share of parsed
    rows repeating an earlier normalized text in the window), ``duplicates_exact`` /
    ``duplicates_near`` (rows quarantined), ``window_expectations`` (rule -> success),
    ``gx_success``, ``gx_run_id``."""
    rc = verdict.rule_counts
    return {
        "dagster/row_count": verdict.curated.height,
        "raw_rows": raw_rows,
        "quarantined_rows": verdict.quarantine.height,
        "quarantined_by_rule": dict(sorted(rc.items())),
        "rule_failures": dict(sorted(verdict.counts.items())),
        "redactions_by_entity": dict(verdict.redactions),
        "duplicate_rate": round(verdict.duplicate_rate, 6),
        "duplicates_exact": int(rc.get("duplicate_exact", 0)),
        "duplicates_near": int(rc.get("duplicate_near", 0)),
        "window_expectations": {r["rule"]: bool(r["success"]) for r in verdict.window_results},
        "gx_success": verdict.gx_success,
        "gx_run_id": verdict.gx_run_id,
    }


def rejudge_quarantined(
    rows: pl.DataFrame, cfg: QualityConfig, *, window_key: str, prior_hashes: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Run the row-level gate again on quarantined raw rows (``RAW_SCHEMA``) with the current
    config: returns (rows that now pass, redacted, ``RAW_SCHEMA``; rows still failing,
    ``QUARANTINE_SCHEMA`` with their new rule/reason). Window-level expectations are ignored.
    ``prior_hashes`` should include the window's own curated rows so a released row that
    duplicates a curated one stays quarantined."""
    if rows.height == 0:
        return pl.DataFrame(schema=RAW_SCHEMA), pl.DataFrame(schema=QUARANTINE_SCHEMA)
    verdict = curate_window(rows, cfg, window_key=window_key, prior_hashes=prior_hashes)
    return verdict.curated, verdict.quarantine


def check_window_expectations(results: list[dict]) -> CheckOutcome:
    """Blocking check body: every window-level GX expectation of the curate suite passed.

    Args: ``results``: the stored ``WindowVerdict.window_results`` (rule, success, observed).
    Metadata: ``<rule>`` -> observed value, ``failed_rules``.
    """
    failed = sorted(r["rule"] for r in results if not r["success"])
    meta = {r["rule"]: r["observed"] for r in results}
    meta["failed_rules"] = ", ".join(failed)
    if not results:
        return CheckOutcome(False, "no window-level GX results stored for this window", meta)
    if failed:
        return CheckOutcome(False, f"window-level GX expectations failed: {', '.join(failed)}", meta)
    return CheckOutcome(True, f"all {len(results)} window-level GX expectations passed", meta)


def check_pii_free(curated: pl.DataFrame) -> CheckOutcome:
    """Blocking check body: re-scan curated ``text`` and ``metadata`` (prefilter + Presidio) and
    fail if any entity is still detectable. Metadata: findings by entity (counts, never values)."""
    from quality.pii import scan_counts

    found = scan_counts(curated.get_column("text").to_list() + curated.get_column("metadata").to_list())
    meta: dict[str, Any] = {"row_count": curated.height, "findings": sum(found.values())}
    meta.update({f"findings_{e.lower()}": n for e, n in found.items()})
    if found:
        return CheckOutcome(
            False,
            f"{sum(found.values())} detectable PII/secret findings remain in the curated "
            f"window ({', '.join(sorted(found))})",
            meta,
        )
    return CheckOutcome(True, f"no detectable PII/secrets in {curated.height} curated rows", meta)


# ---------------------------------------------------------------------------------------------
# blocking checks on the curated window


def check_text_not_null(curated: pl.DataFrame) -> CheckOutcome:
    """GX ``ExpectColumnValuesToNotBeNull`` on the text length (null iff ``text`` is) of a curated frame.

    Metadata: ``row_count``, ``unexpected_count`` (null texts), ``gx_run_id``.
    Raises ValueError if the frame does not match RAW_SCHEMA, QualityGateError if GX fails.
    """
    _check_raw_frame(curated)
    run = _gx().validate(
        "check_text_not_null",
        [("text_missing", "ExpectColumnValuesToNotBeNull", {"column": "text_chars"})],
        _score(curated),
    )
    n, bad = curated.height, len(run.failing_rows("text_missing"))
    passed = bad == 0 and run.success
    description = f"text is non-null in all {n} curated rows" if passed else f"{bad} of {n} curated rows have null text"
    return CheckOutcome(passed, description, {"row_count": n, "unexpected_count": bad, "gx_run_id": run.run_id})


def check_text_length(curated: pl.DataFrame, cfg: QualityConfig) -> CheckOutcome:
    """GX ``ExpectColumnValuesToBeBetween`` on the stripped length (``>= cfg.min_chars``) and the
    length (``<= cfg.max_chars``) of ``text`` in a curated (RAW_SCHEMA) frame; null texts are left
    to ``check_text_not_null``. Passes without running GX when both thresholds are None.

    Metadata: ``row_count``, ``too_short_count``, ``too_long_count``, ``min_chars`` / ``max_chars``
    (only when set), ``gx_run_id`` (when GX ran).
    Raises ValueError if the frame does not match RAW_SCHEMA, QualityGateError if GX fails.
    """
    _check_raw_frame(curated)
    meta: dict[str, Any] = {"row_count": curated.height, "too_short_count": 0, "too_long_count": 0}
    if cfg.min_chars is not None:
        meta["min_chars"] = cfg.min_chars
    if cfg.max_chars is not None:
        meta["max_chars"] = cfg.max_chars
    specs = [spec for spec in _row_specs(cfg) if spec[0] in ("text_too_short", "text_too_long")]
    if not specs:
        return CheckOutcome(True, "text length checks disabled (min_chars=None, max_chars=None)", meta)
    run = _gx().validate("check_text_length", specs, _score(curated))
    meta["too_short_count"] = len(run.failing_rows("text_too_short"))
    meta["too_long_count"] = len(run.failing_rows("text_too_long"))
    meta["gx_run_id"] = run.run_id
    passed = run.success and meta["too_short_count"] == 0 and meta["too_long_count"] == 0
    bounds = (
        f"{cfg.min_chars if cfg.min_chars is not None else 0} to "
        f"{cfg.max_chars if cfg.max_chars is not None else 'unbounded'} chars"
    )
    if passed:
        description = f"all {curated.height} curated texts are {bounds} long"
    else:
        description = (
            f"{meta['too_short_count']} curated rows below min_chars (stripped) and "
            f"{meta['too_long_count']} above max_chars, of {curated.height} (expected {bounds})"
        )
    return CheckOutcome(passed, description, meta)


def check_window_not_empty(curated: pl.DataFrame, cfg: QualityConfig) -> CheckOutcome:
    """GX ``ExpectTableRowCountToBeBetween(cfg.min_window_rows, cfg.max_window_rows)`` on a
    curated (RAW_SCHEMA) frame.

    Metadata: ``observed_row_count``, ``min_window_rows``, ``max_window_rows`` (only when set),
    ``gx_run_id``. Raises ValueError if the frame does not match RAW_SCHEMA, QualityGateError if
    GX fails.
    """
    _check_raw_frame(curated)
    spec = (
        "window_rows",
        "ExpectTableRowCountToBeBetween",
        {"min_value": cfg.min_window_rows, "max_value": cfg.max_window_rows},
    )
    run = _gx().validate("check_window_not_empty", [spec], curated.select("row_number"))
    observed = int(run.observed_value("window_rows"))
    meta: dict[str, Any] = {"observed_row_count": observed, "min_window_rows": cfg.min_window_rows}
    expected = f"at least {cfg.min_window_rows}"
    if cfg.max_window_rows is not None:
        meta["max_window_rows"] = cfg.max_window_rows
        expected += f" and at most {cfg.max_window_rows}"
    meta["gx_run_id"] = run.run_id
    passed = run.success
    description = (
        f"curated window has {observed} rows ({expected})"
        if passed
        else f"curated window has {observed} rows, expected {expected}"
    )
    return CheckOutcome(passed, description, meta)


def check_rows_conserved(raw_rows: int, curated_rows: int, quarantined_rows: int) -> CheckOutcome:
    """Every parsed row is either curated or quarantined: ``raw == curated + quarantined``.

    Plain arithmetic (GX needs a frame; here there are only counts). Metadata: the three counts and
    ``unaccounted_rows = raw - curated - quarantined`` (negative: rows appeared from nowhere).
    Raises ValueError for a negative or non-int count.
    """
    counts = {"raw_rows": raw_rows, "curated_rows": curated_rows, "quarantined_rows": quarantined_rows}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    unaccounted = raw_rows - curated_rows - quarantined_rows
    passed = unaccounted == 0
    sign = "==" if passed else "!="
    description = f"{raw_rows} raw rows {sign} {curated_rows} curated + {quarantined_rows} quarantined"
    if not passed:
        description += f" ({unaccounted} unaccounted)"
    return CheckOutcome(passed, description, {**counts, "unaccounted_rows": unaccounted})


# ---------------------------------------------------------------------------------------------
# helpers


def _row_specs(cfg: QualityConfig) -> list[tuple[str, str, dict]]:
    """(rule id, GX expectation class, kwargs) for every enabled row-level rule, RULES order.
    Columns are those of ``_score``."""
    # text_missing is always on: a null text can never be curated (text_chars is null iff text is).
    specs = [("text_missing", "ExpectColumnValuesToNotBeNull", {"column": "text_chars"})]
    if cfg.require_valid_utf8:
        specs.append(("valid_utf8", "ExpectColumnValuesToBeBetween", {"column": "invalid_utf8_chars", "max_value": 0}))
    if cfg.min_chars is not None:
        specs.append(
            (
                "text_too_short",
                "ExpectColumnValuesToBeBetween",
                {"column": "text_stripped_chars", "min_value": cfg.min_chars},
            )
        )
    if cfg.max_chars is not None:
        specs.append(
            ("text_too_long", "ExpectColumnValuesToBeBetween", {"column": "text_chars", "max_value": cfg.max_chars})
        )
    if cfg.forbid_control_chars:
        specs.append(
            ("text_control_chars", "ExpectColumnValuesToBeBetween", {"column": "text_control_chars", "max_value": 0})
        )
    return specs


def _check_raw_frame(rows: pl.DataFrame) -> None:
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


@dataclass(frozen=True)
class _Run:
    run_id: str
    success: bool
    statistics: dict
    summaries: tuple[dict, ...]
    _rows: dict[str, list[int]] = field(repr=False)
    _observed: dict[str, Any] = field(repr=False)
    docs_index: str | None = None

    def failing_rows(self, rule: str) -> list[int]:
        """row_numbers failing ``rule`` (empty if the rule was not evaluated)."""
        return self._rows.get(rule, [])

    def observed_value(self, rule: str) -> Any:
        return self._observed[rule]


class _Gx:
    """One ephemeral GX context per process; one validation definition per distinct suite."""

    def __init__(self) -> None:
        os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before the import reads it
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx, self.RunIdentifier = gx, RunIdentifier
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.batch_definition = (
            self.ctx.data_sources.add_pandas("streamtune")
            .add_dataframe_asset("window")
            .add_batch_definition_whole_dataframe("whole")
        )
        self.definitions: dict[str, Any] = {}
        self.lock = threading.Lock()

    def _definition(self, kind: str, specs: list[tuple[str, str, dict]]) -> Any:
        import great_expectations.expectations as gxe

        name = f"{kind}-{hashlib.sha256(repr(specs).encode()).hexdigest()[:16]}"
        if name not in self.definitions:
            suite = self.ctx.suites.add(self.gx.ExpectationSuite(name=name))
            for rule, expectation, kwargs in specs:
                suite.add_expectation(getattr(gxe, expectation)(**kwargs, meta={"rule": rule}))
            self.definitions[name] = self.ctx.validation_definitions.add(
                self.gx.ValidationDefinition(name=name, data=self.batch_definition, suite=suite)
            )
        return self.definitions[name]

    def validate(
        self,
        kind: str,
        specs: list[tuple[str, str, dict]],
        frame: pl.DataFrame,
        docs_dir: str | os.PathLike | None = None,
    ) -> _Run:
        run_id = f"{kind}-{uuid.uuid4().hex}"
        docs_index = None
        with self.lock:
            definition = self._definition(kind, specs)
            result = definition.run(
                batch_parameters={"dataframe": frame.to_pandas()},
                result_format=RESULT_FORMAT,
                run_id=self.RunIdentifier(run_name=run_id, run_time=datetime.now(UTC)),
            )
            store = self.ctx.validation_results_store
            try:
                if docs_dir is not None:
                    docs_index = self._build_docs(docs_dir)
            finally:
                for key in store.list_keys():  # keep the context from accumulating results
                    store.remove_key(key)

        rows: dict[str, list[int]] = {}
        observed: dict[str, Any] = {}
        summaries = []
        for r in result.results:
            rule = (r.expectation_config.meta or {}).get("rule")
            raised = _raised_exception(r.exception_info)
            res = r.result or {}
            if raised is not None or not res:
                raise QualityGateError(
                    f"GX could not evaluate {r.expectation_config.type} (rule {rule})", gx_exception_message=raised
                )
            ids: list[int] = []
            for entry in res.get("unexpected_index_list") or []:
                value = entry["row_number"] if isinstance(entry, dict) else entry
                ids.extend(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
            if "unexpected_count" in res and res["unexpected_count"] != len(ids):
                raise QualityGateError(
                    f"GX listed {len(ids)} rows for rule {rule} but counted {res['unexpected_count']}"
                )
            rows[rule] = sorted(ids)
            observed[rule] = res.get("observed_value")
            summaries.append(
                {
                    "rule": rule,
                    "expectation_type": r.expectation_config.type,
                    "success": bool(r.success),
                    "element_count": int(res.get("element_count") or 0),
                    "unexpected_count": int(res.get("unexpected_count") or 0),
                    "missing_count": int(res.get("missing_count") or 0),
                }
            )
        order = {rule: i for i, (rule, _, _) in enumerate(specs)}
        missing = set(order) - set(rows)
        if missing:
            raise QualityGateError(f"GX returned no result for rules {sorted(missing)}")
        return _Run(
            run_id=run_id,
            success=bool(result.success),
            statistics={
                k: (float(v) if k == "success_percent" and v is not None else v)
                for k, v in dict(result.statistics).items()
            },
            summaries=tuple(sorted(summaries, key=lambda s: order[s["rule"]])),
            _rows=rows,
            _observed=observed,
            docs_index=docs_index,
        )

    def _build_docs(self, docs_dir: str | os.PathLike) -> str:
        """Render the stored validation result(s) as a Data Docs site in ``docs_dir`` (replaced)."""
        import shutil
        from pathlib import Path

        from quality.data_docs import site_config

        site = f"window-{uuid.uuid4().hex[:12]}"
        target = Path(docs_dir)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        self.ctx.add_data_docs_site(site_name=site, site_config=site_config(target))
        try:
            self.ctx.build_data_docs(site_names=[site])
        finally:
            self.ctx.delete_data_docs_site(site)
        return str(target / "index.html")


def _raised_exception(info: dict | None) -> str | None:
    """The exception message if GX raised; ``exception_info`` is either flat or keyed by metric."""
    if not info:
        return None
    candidates = [info, *(v for v in info.values() if isinstance(v, dict))]
    for candidate in candidates:
        if candidate.get("raised_exception"):
            return str(candidate.get("exception_message") or "")
    return None


_GX: _Gx | None = None
_GX_INIT_LOCK = threading.Lock()


def _gx() -> _Gx:
    global _GX
    with _GX_INIT_LOCK:
        if _GX is None:
            _GX = _Gx()
        return _GX
