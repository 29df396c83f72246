"""The row-level gate of one window (``curate_window``): GX rules, then PII, then dedup; and its metadata."""

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl

from quality.dedup import find_duplicates, norm_hashes
from quality.pii import PendingScan, PiiOutcome, PiiPolicy, redact_rows, start_scan
from quality.schema import QUARANTINE_SCHEMA, RAW_SCHEMA
from quality.suite.config import RULES, WINDOW_RULES, QualityConfig, WindowVerdict
from quality.suite.gx import _gx, _Run
from quality.suite.rules import (
    RecordIdMissing,
    RowRule,
    _check_raw_frame,
    _fffd_position,
    _hash_key,
    _score,
    row_rules,
)
from quality.suite.user_expectations import user_columns

DEFAULT_CONFIG = QualityConfig()
"""The default thresholds (``QualityConfig()``; frozen, so one shared instance)."""


def curate_window(
    rows: pl.DataFrame,
    cfg: QualityConfig = DEFAULT_CONFIG,
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
    hashes in DuckDB; same verdicts either way): rows with a quarantine-policy entity are quarantined
    as ``pii_<entity>``, others are redacted; (3) dedup (``quality.dedup``) on the redacted texts.

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

    Rules and their exact ``reason`` parts (``quality.suite.rules``):
        - ``text_missing``: ``"text_missing: text is null"``
        - ``valid_utf8``: ``"valid_utf8: invalid UTF-8 replaced by U+FFFD at byte 4 of text"`` (first
          U+FFFD; field ``record_id``, ``text`` or ``metadata``; byte offset in the stored field)
        - ``text_too_short``: ``"text_too_short: 0 chars after stripping whitespace, min_chars=1"``
        - ``text_too_long``: ``"text_too_long: 2345 chars, max_chars=2000"``
        - ``text_control_chars``: ``"text_control_chars: contains C0/C1 control characters"``
        - ``record_id_missing``: ``"record_id_missing: record_id is null"``
        - ``pii_<entity>``: ``"pii_private_key: contains PRIVATE_KEY (policy: quarantine)"``
        - ``duplicate_exact`` / ``duplicate_near``: see ``quality.dedup.find_duplicates``.
        - a user expectation (``cfg.expectations_file``, after the built-in rules, in file order): its name,
          ``"<name>: fails <type> <kwargs as JSON>"`` (``quality.suite.user_expectations``).
        A null text fails only ``text_missing``. Quarantine rows keep the *raw* text.

    Returns:
        ``WindowVerdict``; ``curated.height + quarantine.height == rows.height`` (asserted).

    Raises:
        ValueError: ``rows`` does not match RAW_SCHEMA, or ``row_number`` is null or duplicated.
        QualityGateError: GX raised while evaluating an expectation, or a result is missing.
    """
    _check_raw_frame(rows)
    if window_key is None:
        window_key = rows.get_column("window_key")[0] if rows.height else ""
    policy = cfg.pii_policy()
    run, scored, hashes, pending = _validate(rows, cfg, policy, docs_dir)
    parts, passed = _judge(rows, cfg, scored, run)
    redacted, pii, changed = _apply_pii(passed, policy, pending, run.run_id, parts)
    redacted = _dedup(redacted, passed, hashes, cfg, window_key, prior_hashes, run.run_id, parts)
    curated = redacted.select(list(RAW_SCHEMA)).cast(RAW_SCHEMA)
    quarantine = pl.concat([p.cast(QUARANTINE_SCHEMA) for p in parts]).sort("row_number")
    assert curated.height + quarantine.height == rows.height, (
        f"rows not conserved: {rows.height} in, {curated.height} curated + {quarantine.height} quarantined"
    )
    n_hash = hashes.get_column("norm_hash").drop_nulls()
    return WindowVerdict(
        curated=curated,
        quarantine=quarantine,
        counts={rule: len(run.failing_rows(rule)) for rule in (*RULES, *(r.name for r in cfg.extra_expectations))},
        gx_success=run.success,
        gx_statistics=run.statistics,
        gx_run_id=run.run_id,
        gx_results=run.summaries,
        rule_counts={r: int(n) for r, n in quarantine.group_by("rule").len().sort("rule").iter_rows()},
        redactions=pii.redactions,
        window_results=_window_results(run),
        duplicate_rate=float((1 - n_hash.n_unique() / n_hash.len()) if n_hash.len() else 0.0),
        docs_index=run.docs_index,
        raw_text_rows=tuple(changed.get_column("row_number").to_list()),
        expectation_suite=run.suite_json,
    )


def _all_row_rules(cfg: QualityConfig) -> list[RowRule]:
    """Every row rule in priority order: the enabled built-in ones, ``record_id_missing``, the user's."""
    return [*row_rules(cfg), RecordIdMissing(), *cfg.extra_expectations]


def _window_results(run: _Run) -> tuple[dict, ...]:
    """Window-level GX expectations of the run: rule, success, observed (numbers only)."""
    return tuple(
        {"rule": s["rule"], "success": s["success"], "observed": _json_number(run.observed_value(s["rule"]))}
        for s in run.summaries
        if s["rule"] in WINDOW_RULES
    )


def _validate(
    rows: pl.DataFrame, cfg: QualityConfig, policy: PiiPolicy, docs_dir: str | os.PathLike | None
) -> tuple[_Run, pl.DataFrame, pl.DataFrame, PendingScan | None]:
    """Stage 1: start the PII scan, hash the texts beside the polars scores, run the GX suite once.

    Returns ``(GX run, score frame with norm_hash_key, norm hashes, pending PII scan or None)``.
    """
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
        if cfg.extra_expectations:  # user expectations read the window's own columns (text included)
            scored = scored.with_columns(user_columns(rows))
        specs = [rule.expectation() for rule in (*row_rules(cfg), RecordIdMissing())]
        specs += _window_specs(cfg, list(scored.columns))
        specs += [rule.expectation() for rule in cfg.extra_expectations]
        run = _gx().validate("curate_window", specs, scored, docs_dir=docs_dir)
    except BaseException:
        if pending is not None:
            pending.close()
        raise
    return run, scored, hashes, pending


def _judge(
    rows: pl.DataFrame, cfg: QualityConfig, scored: pl.DataFrame, run: _Run
) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """Rows failing a GX row rule, with ``rule`` (first failing, ``RULES`` order) and ``reason`` (all failing).

    Returns ``([QUARANTINE_SCHEMA frame of the GX failures], RAW_SCHEMA frame of the rows GX passed)``.
    """
    rules = _all_row_rules(cfg)
    known = set(rows.get_column("row_number").to_list())
    flags = {}
    for rule in rules:
        ids = run.failing_rows(rule.name)
        assert set(ids) <= known, f"GX reported unknown row_numbers for {rule.name}"
        flags[rule.name] = pl.col("row_number").is_in(pl.Series(ids, dtype=pl.Int64))
    rule_expr = pl.when(flags[rules[0].name]).then(pl.lit(rules[0].name))
    for rule in rules[1:]:
        rule_expr = rule_expr.when(flags[rule.name]).then(pl.lit(rule.name))
    judged = rows.with_columns(
        scored.get_column("text_chars"), scored.get_column("text_stripped_chars"), **_fffd_position()
    ).with_columns(
        rule=rule_expr.otherwise(pl.lit(None, dtype=pl.String)),
        reason=pl.concat_str(
            [pl.when(flags[r.name]).then(r.reason()) for r in rules], separator="; ", ignore_nulls=True
        ),
        gx_run_id=pl.lit(run.run_id, dtype=pl.String),
        duplicate_of_window=pl.lit(None, dtype=pl.String),
        duplicate_of_row=pl.lit(None, dtype=pl.Int64),
    )
    gx_bad = pl.col("rule").is_not_null()
    return [judged.filter(gx_bad).select(list(QUARANTINE_SCHEMA))], judged.filter(~gx_bad).select(list(RAW_SCHEMA))


def _apply_pii(
    passed: pl.DataFrame, policy: PiiPolicy, pending: PendingScan | None, run_id: str, parts: list[pl.DataFrame]
) -> tuple[pl.DataFrame, PiiOutcome, pl.DataFrame]:
    """Stage 2: redact PII in the rows GX passed, or quarantine them (raw row kept; appended to ``parts``).

    Returns ``(redacted rows still curated, PII outcome, passed rows whose text or metadata changed)``.
    """
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
        parts.append(_quarantine_rows(passed, qrows, run_id))
        redacted = redacted.filter(~pl.col("row_number").is_in(qrows.get_column("row_number")))
    return redacted, pii, changed


def _dedup(
    redacted: pl.DataFrame,
    passed: pl.DataFrame,
    hashes: pl.DataFrame,
    cfg: QualityConfig,
    window_key: str,
    prior_hashes: pl.DataFrame | None,
    run_id: str,
    parts: list[pl.DataFrame],
) -> pl.DataFrame:
    """Stage 3: quarantine duplicates among the redacted texts (appended to ``parts``); returns the rest.

    Dedup runs on the redacted texts (no PII in hashes or links): hashes of unchanged texts are reused.
    """
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
        parts.append(_quarantine_rows(passed, dups, run_id))
        redacted = redacted.filter(~pl.col("row_number").is_in(dups.get_column("row_number")))
    return redacted


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
