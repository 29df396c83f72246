"""Blocking asset-check bodies on a curated window: GX on its scores, a PII re-scan, row conservation."""

from typing import Any

import polars as pl

from quality.suite.config import CheckOutcome, QualityConfig
from quality.suite.gx import _gx
from quality.suite.rules import _check_raw_frame, _row_specs, _score


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
