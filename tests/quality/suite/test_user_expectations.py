"""User expectations (``[quality] expectations_file``) and the effective GX suite written as GX JSON.

Real GX validations, a real DuckDB warehouse and real settings files; no mocks.
"""

import json
from datetime import UTC, datetime

import great_expectations as gx
import polars as pl
import pytest
from st_helpers import tiny_home, window_records, write_window

from orchestration.config.settings import load_settings, write_settings
from orchestration.config.tables import SettingsError
from orchestration.pipeline.curate import curate
from orchestration.pipeline.ingest import ingest_window
from orchestration.store.warehouse import Warehouse
from quality.schema import RAW_SCHEMA
from quality.suite import QualityConfig, curate_window, load_expectations_file


def window(*texts: str) -> pl.DataFrame:
    """RAW_SCHEMA frame of one window, row_number = position (1-based)."""
    n = len(texts)
    ids = [f"id{i}" for i in range(1, n + 1)]
    return pl.DataFrame(
        {
            "window_key": ["w"] * n,
            "row_number": list(range(1, n + 1)),
            "record_id": ids,
            "text": list(texts),
            "ts": [datetime(2024, 9, 1, tzinfo=UTC)] * n,
            "metadata": ["{}"] * n,
        },
        schema=RAW_SCHEMA,
    )


MAX_LEN = {"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "text", "max_value": 20}}
NO_LOREM = {
    "type": "expect_column_values_to_not_match_regex",
    "kwargs": {"column": "text", "regex": "lorem"},
    "meta": {"name": "no_placeholder_text"},
}


def _file(tmp_path, entries, name="expectations.json") -> str:
    path = tmp_path / name
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries))
    return str(path)


def test_user_expectations_quarantine_rows_under_their_name(tmp_path):
    cfg = QualityConfig(expectations_file=_file(tmp_path, [MAX_LEN, NO_LOREM]))
    rows = window("short and fine", "this text is far longer than twenty", "lorem ipsum", "x" * 25 + " lorem")
    verdict = curate_window(rows, cfg)
    q = {r: (rule, reason) for r, rule, reason in verdict.quarantine.select("row_number", "rule", "reason").rows()}
    assert verdict.curated["row_number"].to_list() == [1]
    assert q[2][0] == "expect_column_value_lengths_to_be_between"
    assert q[3] == (
        "no_placeholder_text",
        'no_placeholder_text: fails expect_column_values_to_not_match_regex {"column": "text", "regex": "lorem"}',
    )
    assert q[4][0] == "expect_column_value_lengths_to_be_between"  # first failing in file order, reason lists both
    assert "no_placeholder_text" in q[4][1]
    assert verdict.curated.height + verdict.quarantine.height == rows.height  # every row accounted for
    assert (
        verdict.counts["no_placeholder_text"] == 2 and verdict.counts["expect_column_value_lengths_to_be_between"] == 2
    )
    assert verdict.rule_counts == {"expect_column_value_lengths_to_be_between": 2, "no_placeholder_text": 1}


def test_built_in_rules_come_first_and_the_suite_is_gx_json(tmp_path):
    cfg = QualityConfig(max_chars=10, expectations_file=_file(tmp_path, [MAX_LEN]))
    verdict = curate_window(window("ok", "much longer than ten and twenty chars"), cfg)
    assert verdict.quarantine["rule"].to_list() == ["text_too_long"]
    suite = verdict.expectation_suite
    types = [e["type"] for e in suite["expectations"]]
    assert "expect_column_value_lengths_to_be_between" in types and "expect_column_values_to_be_between" in types
    rebuilt = gx.ExpectationSuite(**suite)  # GX reads it back
    assert len(rebuilt.expectations) == len(suite["expectations"])
    assert "lorem" not in json.dumps(suite) and "much longer" not in json.dumps(suite)  # no record text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not readable JSON"),
        ({"type": "x"}, "must hold a JSON list"),
        ([{"type": "expect_no_such_thing", "kwargs": {"column": "text"}}], "unknown GX expectation type"),
        (
            [{"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "text", "max_value": "a"}}],
            "GX rejects the kwargs",
        ),
        ([{"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}], "not row-level"),
        ([{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "author"}}], "not a window column"),
        ([MAX_LEN, MAX_LEN], "is taken"),
        ([{**NO_LOREM, "meta": {"name": "text_too_long"}}], "is taken"),
        ([{"kwargs": {}}], "expected"),
    ],
)
def test_invalid_files_are_settings_errors_at_load(tmp_path, content, message):
    home = tmp_path / "home"
    write_settings(home, {"quality": {"expectations_file": "expectations.json"}})  # relative to the home
    _file(home, content)
    with pytest.raises(SettingsError, match=message) as err:
        load_settings(home)
    assert "[quality]" in str(err.value) and "expectations.json" in str(err.value)
    with pytest.raises(ValueError, match=message):
        load_expectations_file(home / "expectations.json")


def test_missing_file_is_a_settings_error(tmp_path):
    write_settings(tmp_path, {"quality": {"expectations_file": "nowhere.json"}})
    with pytest.raises(SettingsError, match=r"\[quality\].*nowhere.json does not exist"):
        load_settings(tmp_path)


def test_curate_step_writes_the_effective_suite_per_window(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    _file(home, [{**MAX_LEN, "kwargs": {"column": "text", "max_value": 60}}])
    settings = tiny_home(home, quality={"expectations_file": "expectations.json"})
    wh = Warehouse(settings.paths.warehouse)
    wh.init_schema()
    records = [*window_records(0, 5), {"id": "long", "text": "y" * 80}]
    write_window(settings.paths.landing, "w-01.jsonl", records)
    ingest_window(settings, wh, "w-01", file_hint="w-01.jsonl", dagster_run_id="test")
    out = curate(settings, wh, "w-01")
    path = settings.paths.expectations / "w-01.json"
    assert out.metadata["expectation_suite"] == str(path)
    suite = json.loads(path.read_text())
    assert suite["expectations"][-1]["type"] == "expect_column_value_lengths_to_be_between"
    assert suite["expectations"][-1]["kwargs"]["max_value"] == 60
    assert out.metadata["quarantined_by_rule"] == {"expect_column_value_lengths_to_be_between": 1}
    assert wh.window_counts("w-01").curated_rows == 5
