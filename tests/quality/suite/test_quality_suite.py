"""quality.suite: the GX row gate (exact rule/reason per row) and the blocking checks."""

import json
from datetime import UTC, datetime

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quality.schema import QUARANTINE_SCHEMA, RAW_SCHEMA
from quality.suite import (
    RULES,
    CheckOutcome,
    QualityConfig,
    QualityGateError,
    check_rows_conserved,
    check_text_length,
    check_text_not_null,
    check_window_not_empty,
    curate_window,
)
from quality.suite.gx import _gx

TS = datetime(2024, 9, 1, tzinfo=UTC)
PII = "Contact jane.doe@example.com, SSN 536-22-8726"


def window(*texts: str | None, key: str = "2024-09") -> pl.DataFrame:
    """RAW_SCHEMA frame, row_number = position (1-based)."""
    n = len(texts)
    return pl.DataFrame(
        {
            "window_key": [key] * n,
            "row_number": list(range(1, n + 1)),
            "record_id": [f"id{i}" for i in range(1, n + 1)],
            "text": list(texts),
            "ts": [TS] * n,
            "metadata": ['{"k":1}'] * n,
        },
        schema=RAW_SCHEMA,
    )


DEFAULT_CFG = QualityConfig()


def check_rule(text: str | None, rule: str, reason: str, cfg: QualityConfig = DEFAULT_CFG, good: str = "ok") -> None:
    """datatrove check_filter style: a good row, then ``text`` -> exactly that row quarantined."""
    rows = window(good, text)
    verdict = curate_window(rows, cfg)
    assert_frame_equal(verdict.curated, rows.head(1))
    assert verdict.quarantine.select("row_number", "rule", "reason").rows() == [(2, rule, reason)]
    assert verdict.counts[rule] == 1


# --- one rule at a time ----------------------------------------------------------------------------


def test_null_text_is_quarantined_as_text_missing():
    check_rule(None, "text_missing", "text_missing: text is null")


@pytest.mark.parametrize("text", ["", "   ", " \t\n\r ", "\u3000\u00a0"])
def test_empty_or_whitespace_text_is_quarantined_as_too_short(text):
    check_rule(text, "text_too_short", "text_too_short: 0 chars after stripping whitespace, min_chars=1")


def test_min_chars_counts_stripped_characters():
    cfg = QualityConfig(min_chars=5)
    check_rule(
        "  abcd  ",
        "text_too_short",
        "text_too_short: 4 chars after stripping whitespace, min_chars=5",
        cfg,
        good=" abcde ",
    )


def test_text_over_max_chars_is_quarantined_as_too_long():
    check_rule("x" * 2001, "text_too_long", "text_too_long: 2001 chars, max_chars=2000")
    check_rule("é" * 11, "text_too_long", "text_too_long: 11 chars, max_chars=10", QualityConfig(max_chars=10))


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x0b", "\x1b", "\x7f", "\x85", "\x9f"])
def test_control_characters_are_quarantined(char):
    check_rule(f"bad{char}text", "text_control_chars", "text_control_chars: contains C0/C1 control characters")


def test_tab_newline_and_carriage_return_are_allowed():
    rows = window("tab\there", "line\nbreak", "crlf\r\nend", "x" * 2000)
    verdict = curate_window(rows)
    assert_frame_equal(verdict.curated, rows)
    assert verdict.quarantine.height == 0
    assert verdict.gx_success is True
    assert verdict.counts == dict.fromkeys(RULES, 0)


def test_multiple_failing_rules_are_all_listed_first_one_is_the_rule():
    cfg = QualityConfig(max_chars=3)
    check_rule(
        "\x01\x02\x03\x04\x05",
        "text_too_long",
        "text_too_long: 5 chars, max_chars=3; text_control_chars: contains C0/C1 control characters",
        cfg,
    )
    verdict = curate_window(window("\x01\x02\x03\x04\x05", "\x01"), cfg)
    assert verdict.counts == {
        "text_missing": 0,
        "valid_utf8": 0,
        "text_too_short": 0,
        "text_too_long": 1,
        "text_control_chars": 2,
    }


def test_invalid_utf8_replacement_is_quarantined_by_a_gx_expectation():
    check_rule("caf\ufffd", "valid_utf8", "valid_utf8: invalid UTF-8 replaced by U+FFFD at byte 3 of text")
    rows = window("ok", "fine text", "also fine").with_columns(
        record_id=pl.Series(["id1", "i\ufffdd", "id3"]), metadata=pl.Series(['{"k":1}', '{"k":1}', '{"k\ufffd":1}'])
    )
    verdict = curate_window(rows)
    assert verdict.quarantine.select("row_number", "rule", "reason").rows() == [
        (2, "valid_utf8", "valid_utf8: invalid UTF-8 replaced by U+FFFD at byte 1 of record_id"),
        (3, "valid_utf8", "valid_utf8: invalid UTF-8 replaced by U+FFFD at byte 3 of metadata"),
    ]
    gx = {r["rule"]: r for r in verdict.gx_results}
    assert gx["valid_utf8"]["unexpected_count"] == 2 and gx["valid_utf8"]["success"] is False
    # relaxing the rule lets them through (what `quarantine release --rule valid_utf8` relies on)
    assert curate_window(rows, QualityConfig(require_valid_utf8=False)).quarantine.height == 0


def test_null_text_fails_only_text_missing():
    verdict = curate_window(window(None))
    assert verdict.counts == {
        "text_missing": 1,
        "valid_utf8": 0,
        "text_too_short": 0,
        "text_too_long": 0,
        "text_control_chars": 0,
    }


def test_none_disables_rules():
    cfg = QualityConfig(min_chars=None, max_chars=None, forbid_control_chars=False, require_valid_utf8=False)
    rows = window("", "x" * 5000, "a\x00b", "caf\ufffd")
    verdict = curate_window(rows, cfg)
    assert_frame_equal(verdict.curated, rows)
    assert verdict.counts == dict.fromkeys(RULES, 0)
    assert [r["rule"] for r in verdict.gx_results] == [
        "text_missing",
        "record_id_missing",
        "schema_columns",
        "window_row_count",
    ]


# --- whole verdict -----------------------------------------------------------------------------------


def test_verdict_frames_conservation_and_order():
    texts = ["keep 1", None, "keep 2", "", "x" * 2001, "keep 3", "ctl\x1b", "keep 4", "caf\u00e9\ufffd bytes"]
    rows = window(*texts)
    verdict = curate_window(rows)
    assert_frame_equal(verdict.curated, rows.filter(pl.col("row_number").is_in([1, 3, 6, 8])))
    expected_quarantine = rows.filter(pl.col("row_number").is_in([2, 4, 5, 7, 9])).with_columns(
        rule=pl.Series(["text_missing", "text_too_short", "text_too_long", "text_control_chars", "valid_utf8"]),
        reason=pl.Series(
            [
                "text_missing: text is null",
                "text_too_short: 0 chars after stripping whitespace, min_chars=1",
                "text_too_long: 2001 chars, max_chars=2000",
                "text_control_chars: contains C0/C1 control characters",
                "valid_utf8: invalid UTF-8 replaced by U+FFFD at byte 5 of text",
            ]
        ),
        gx_run_id=pl.lit(verdict.gx_run_id),
        duplicate_of_window=pl.lit(None, dtype=pl.String),
        duplicate_of_row=pl.lit(None, dtype=pl.Int64),
    )
    assert_frame_equal(verdict.quarantine, expected_quarantine)
    assert verdict.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert verdict.curated.height + verdict.quarantine.height == rows.height
    assert verdict.counts == dict.fromkeys(RULES, 1)
    assert verdict.gx_success is False
    # 5 failing row rules + record_id_missing, schema_columns, window_row_count (passing)
    assert verdict.gx_statistics == {
        "evaluated_expectations": 8,
        "successful_expectations": 3,
        "unsuccessful_expectations": 5,
        "success_percent": 3 / 8 * 100,
    }
    assert verdict.gx_run_id.startswith("curate_window-")


def test_row_numbers_need_not_be_contiguous():
    rows = window("a", "", "c").with_columns(row_number=pl.Series([10, 20, 30]))
    verdict = curate_window(rows)
    assert verdict.curated.get_column("row_number").to_list() == [10, 30]
    assert verdict.quarantine.get_column("row_number").to_list() == [20]


def test_empty_window_gives_empty_verdict():
    verdict = curate_window(window())
    assert (verdict.curated.height, verdict.quarantine.height) == (0, 0)
    assert verdict.curated.schema == pl.Schema(RAW_SCHEMA)
    assert verdict.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)


def test_no_row_text_reaches_gx_results(monkeypatch):
    import great_expectations as gx

    kept = []
    original = gx.ValidationDefinition.run

    def spy(self, **kwargs):
        result = original(self, **kwargs)
        kept.append(json.dumps(result.to_json_dict(), default=str))
        return result

    monkeypatch.setattr(gx.ValidationDefinition, "run", spy)
    texts = [PII + "\x07", PII + " " + "y" * 2000, PII]
    verdict = curate_window(window(*texts), QualityConfig())
    assert verdict.quarantine.get_column("row_number").to_list() == [1, 2]
    for fragment in ("jane.doe", "536-22-8726", "yyyy"):
        assert fragment not in str(verdict.gx_statistics)
        assert fragment not in str(verdict.gx_results)
        assert fragment not in "".join(verdict.quarantine.get_column("reason"))
        assert kept and fragment not in kept[0]  # the full GX validation result (what Data Docs render)
    json.dumps(verdict.gx_results)  # JSON-able


def test_repeated_calls_do_not_grow_the_gx_context():
    rows = window("a", "", "b")
    curate_window(rows)
    gx = _gx()
    definitions = len(gx.definitions)
    run_ids = {curate_window(rows).gx_run_id for _ in range(20)}
    assert len(run_ids) == 20
    assert len(gx.definitions) == definitions
    assert gx.ctx.validation_results_store.list_keys() == []


def test_bad_frames_raise_value_error():
    with pytest.raises(ValueError, match="does not match RAW_SCHEMA"):
        curate_window(window("a").drop("metadata"))
    with pytest.raises(ValueError, match="does not match RAW_SCHEMA"):
        curate_window(window("a").with_columns(pl.col("row_number").cast(pl.Int32)))
    with pytest.raises(ValueError, match="row_number must be non-null and unique"):
        curate_window(pl.concat([window("a"), window("b")]))


def test_invalid_config_raises_once_with_every_issue():
    with pytest.raises(ValueError, match=r"min_chars must be .*; max_window_rows must be"):
        QualityConfig(min_chars=-1, max_window_rows=-5)
    with pytest.raises(ValueError, match="min_chars=10 > max_chars=5"):
        QualityConfig(min_chars=10, max_chars=5)
    with pytest.raises(ValueError, match="min_window_rows=3 > max_window_rows=2"):
        QualityConfig(min_window_rows=3, max_window_rows=2)


def test_gx_evaluation_error_fails_closed():
    with pytest.raises(
        QualityGateError, match=r"GX could not evaluate expect_column_values_to_not_be_null \(rule probe\)"
    ):
        _gx().validate(
            "probe",
            [("probe", "ExpectColumnValuesToNotBeNull", {"column": "no_such_column"})],
            window("a").select("row_number", "text"),
        )


# --- blocking checks ---------------------------------------------------------------------------------


def _without_run_id(outcome: CheckOutcome) -> CheckOutcome:
    assert json.dumps(outcome.metadata)  # JSON-able
    return CheckOutcome(
        outcome.passed, outcome.description, {k: v for k, v in outcome.metadata.items() if k != "gx_run_id"}
    )


def test_check_text_not_null():
    assert _without_run_id(check_text_not_null(window("a", "b"))) == CheckOutcome(
        True, "text is non-null in all 2 curated rows", {"row_count": 2, "unexpected_count": 0}
    )
    assert _without_run_id(check_text_not_null(window("a", None, None))) == CheckOutcome(
        False, "2 of 3 curated rows have null text", {"row_count": 3, "unexpected_count": 2}
    )


def test_check_text_length():
    cfg = QualityConfig(min_chars=2, max_chars=5)
    assert _without_run_id(check_text_length(window("ab", "abcde", None), cfg)) == CheckOutcome(
        True,
        "all 3 curated texts are 2 to 5 chars long",
        {"row_count": 3, "too_short_count": 0, "too_long_count": 0, "min_chars": 2, "max_chars": 5},
    )
    assert _without_run_id(check_text_length(window(" a ", "abcdef", "abcdefg", "abc"), cfg)) == CheckOutcome(
        False,
        "1 curated rows below min_chars (stripped) and 2 above max_chars, of 4 (expected 2 to 5 chars)",
        {"row_count": 4, "too_short_count": 1, "too_long_count": 2, "min_chars": 2, "max_chars": 5},
    )
    disabled = QualityConfig(min_chars=None, max_chars=None)
    assert check_text_length(window(""), disabled) == CheckOutcome(
        True,
        "text length checks disabled (min_chars=None, max_chars=None)",
        {"row_count": 1, "too_short_count": 0, "too_long_count": 0},
    )


def test_check_window_not_empty():
    assert _without_run_id(check_window_not_empty(window("a"), QualityConfig())) == CheckOutcome(
        True, "curated window has 1 rows (at least 1)", {"observed_row_count": 1, "min_window_rows": 1}
    )
    assert _without_run_id(check_window_not_empty(window(), QualityConfig())) == CheckOutcome(
        False, "curated window has 0 rows, expected at least 1", {"observed_row_count": 0, "min_window_rows": 1}
    )
    assert check_window_not_empty(window(), QualityConfig(min_window_rows=0)).passed
    assert _without_run_id(
        check_window_not_empty(window("a", "b", "c"), QualityConfig(max_window_rows=2))
    ) == CheckOutcome(
        False,
        "curated window has 3 rows, expected at least 1 and at most 2",
        {"observed_row_count": 3, "min_window_rows": 1, "max_window_rows": 2},
    )


def test_check_rows_conserved():
    assert check_rows_conserved(5, 3, 2) == CheckOutcome(
        True,
        "5 raw rows == 3 curated + 2 quarantined",
        {"raw_rows": 5, "curated_rows": 3, "quarantined_rows": 2, "unaccounted_rows": 0},
    )
    assert check_rows_conserved(5, 3, 1) == CheckOutcome(
        False,
        "5 raw rows != 3 curated + 1 quarantined (1 unaccounted)",
        {"raw_rows": 5, "curated_rows": 3, "quarantined_rows": 1, "unaccounted_rows": 1},
    )
    with pytest.raises(ValueError, match="curated_rows must be a non-negative int"):
        check_rows_conserved(5, -1, 1)


def test_checks_pass_on_a_curated_verdict():
    rows = window("good one", None, "", "good two", "x" * 3000)
    verdict = curate_window(rows)
    cfg = QualityConfig()
    assert check_text_not_null(verdict.curated).passed
    assert check_text_length(verdict.curated, cfg).passed
    assert check_window_not_empty(verdict.curated, cfg).passed
    assert check_rows_conserved(rows.height, verdict.curated.height, verdict.quarantine.height).passed
    # the raw window itself would fail the curated-window checks
    assert not check_text_not_null(rows).passed
    assert not check_text_length(rows, cfg).passed


def test_presidio_in_worker_processes_gives_the_same_verdict_as_inline():
    """start_scan forks workers that run Presidio while GX validates; verdicts, reasons, redactions
    and counts equal the inline path. The over-long row (GX quarantines it first) is left out of
    the workers' scan, and a quarantine-policy entity still quarantines its row."""
    from quality import pii

    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7x3Jexample\n-----END RSA PRIVATE KEY-----"
    texts = [
        PII,
        "call +1 (415) 555-0132 now",
        "card 4111 1111 1111 1111 at 10.0.3.4",
        "plain text, no pii",
        pem,
        "mail a@b.co " + "x" * 3000,
        None,
        "tel 030 12345678 and ghp_" + "a" * 36,
        PII,
    ]
    rows = window(*texts).with_columns(
        metadata=pl.Series(['{"author": "x@y.org"}'] + ['{"k":1}'] * (len(texts) - 1), dtype=pl.String)
    )
    inline = curate_window(rows, QualityConfig(max_chars=2000, pii_workers=0))
    forked = curate_window(rows, QualityConfig(max_chars=2000, pii_workers=2, pii_parallel_min_candidates=1))
    assert_frame_equal(forked.curated, inline.curated)
    assert_frame_equal(forked.quarantine.drop("gx_run_id"), inline.quarantine.drop("gx_run_id"))
    assert forked.redactions == inline.redactions and forked.rule_counts == inline.rule_counts
    assert inline.rule_counts == {"duplicate_exact": 1, "pii_private_key": 1, "text_missing": 1, "text_too_long": 1}
    assert set(inline.redactions) == {"EMAIL_ADDRESS", "US_SSN", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS", "API_KEY"}
    assert "x@y.org" not in inline.curated.get_column("metadata").to_list()[0]
    pending = pii.start_scan(rows, pii.PiiPolicy(), workers=1, min_candidates=1, max_chars=2000)
    assert pending.forked and 6 not in pending.result() and 1 in pending.result()
    few = pii.start_scan(rows, pii.PiiPolicy(), workers=1, min_candidates=100, max_chars=2000)  # too few to fork
    assert not few.forked and few.result() == pending.result()
    assert pii.start_scan(rows, pii.PiiPolicy(enabled=False), workers=1, min_candidates=1) is None
    with pytest.raises(ValueError, match="pii_workers must be a non-negative int"):
        QualityConfig(pii_workers=-1)
