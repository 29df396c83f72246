"""quality.readers: one test per outcome, exact errors, whole-frame comparisons."""

import gzip
import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quality.readers import (
    SUPPORTED_SUFFIXES,
    ParsedWindow,
    RecordFields,
    WindowReadError,
    content_hash,
    read_window_file,
)
from quality.schema import RAW_SCHEMA, REJECT_SCHEMA

INGESTED = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
TS = datetime(2024, 9, 1, tzinfo=UTC)


def read(tmp_path: Path, name: str, content: bytes | str, **kwargs) -> ParsedWindow:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return read_window_file(path, "w1", ingested_at=INGESTED, **kwargs)


def rows(*records: tuple) -> pl.DataFrame:
    """records: (row_number, record_id, text, ts, metadata)."""
    return pl.DataFrame([("w1", *r) for r in records], schema=RAW_SCHEMA, orient="row")


def rejects(*records: tuple) -> pl.DataFrame:
    """records: (row_number, raw, error)."""
    return pl.DataFrame([("w1", *r) for r in records], schema=REJECT_SCHEMA, orient="row")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def check_reject(tmp_path: Path, line: bytes | str, raw: str, error: str) -> None:
    """datatrove check_filter style: one bad line between two good ones -> exactly one reject."""
    line = line.encode() if isinstance(line, str) else line
    parsed = read(tmp_path, "w.jsonl", b'{"text": "before"}\n' + line + b'\n{"text": "after"}\n')
    assert_frame_equal(parsed.rejects, rejects((2, raw, error)))
    assert parsed.rows.get_column("row_number").to_list() == [1, 3]
    assert parsed.source_rows == 3


# --- JSON Lines --------------------------------------------------------------------------------


def test_jsonl_good_rows(tmp_path):
    content = (
        '{"id": "a", "text": "first", "ts": "2024-09-01T00:00:00Z"}\n'
        '{"id": 7, "text": "second", "ts": "2024-09-01T02:00:00+02:00"}\n'
        '{"text": "third", "ts": "2024-09-01T00:00:00"}\n'
    )
    parsed = read(tmp_path, "w.jsonl", content)
    expected = rows(
        (1, "a", "first", TS, "{}"),
        (2, "7", "second", TS, "{}"),  # integer id kept as its decimal string; offset converted to UTC
        (3, sha("third"), "third", TS, "{}"),  # an offset-less ts is read as UTC
    )
    assert_frame_equal(parsed.rows, expected)
    assert parsed.rejects.schema == pl.Schema(REJECT_SCHEMA) and parsed.rejects.height == 0
    assert parsed.file_sha256 == hashlib.sha256(content.encode()).hexdigest()
    assert parsed.source_rows == 3


def test_ndjson_suffix_reads_as_jsonl(tmp_path):
    parsed = read(tmp_path, "w.NDJSON", '{"text": "x", "ts": "2024-09-01T00:00:00Z"}\n')
    assert_frame_equal(parsed.rows, rows((1, sha("x"), "x", TS, "{}")))


def test_jsonl_malformed_json_line_is_rejected_verbatim(tmp_path):
    check_reject(
        tmp_path, '{"text": "a" "b"}', '{"text": "a" "b"}', "invalid JSON: Expecting ',' delimiter at column 14"
    )


def test_jsonl_truncated_json_line(tmp_path):
    check_reject(
        tmp_path,
        '{"text": "unterminated}',
        '{"text": "unterminated}',
        "invalid JSON: Unterminated string starting at column 10",
    )


def test_jsonl_nan_is_not_json(tmp_path):
    check_reject(
        tmp_path, '{"text": "a", "score": NaN}', '{"text": "a", "score": NaN}', "invalid JSON: NaN is not valid JSON"
    )


@pytest.mark.parametrize(
    "line, kind",
    [
        ("[1, 2]", "an array"),
        ('"just a string"', "a string"),
        ("42", "a number"),
        ("null", "null"),
        ("true", "a boolean"),
    ],
)
def test_jsonl_non_object_json_is_rejected(tmp_path, line, kind):
    check_reject(tmp_path, line, line, f"JSON value is {kind}, expected an object")


def test_jsonl_invalid_utf8_in_a_value_is_a_row_with_replacement_chars(tmp_path):
    # the gate (rule valid_utf8) quarantines it; the bad bytes are stored nowhere
    parsed = read(tmp_path, "w.jsonl", b'{"text": "ok"}\n{"id": "x", "text": "caf\xe9 \xff\xfe", "k\xe9": 1}\n')
    assert parsed.rejects.height == 0
    assert_frame_equal(
        parsed.rows,
        rows((1, sha("ok"), "ok", INGESTED, "{}"), (2, "x", "caf\ufffd \ufffd\ufffd", INGESTED, '{"k\ufffd":1}')),
    )


def test_jsonl_invalid_utf8_breaking_the_json_is_rejected_without_the_bytes(tmp_path):
    check_reject(
        tmp_path,
        b'{"text": "a", \xff "b": 1}',
        '{"text": "a", \ufffd "b": 1}',
        "invalid UTF-8 at byte 14 (invalid JSON: Expecting property name enclosed in double quotes "
        "at column 15 after U+FFFD replacement)",
    )


def test_jsonl_orjson_and_stdlib_paths_agree(tmp_path):
    # 19+ digit integers, exponents, nesting, escapes: the same rows whichever decoder read the line
    lines = [
        '{"text": "big", "n": 123456789012345678901234567890}',
        '{"text": "f", "x": 1e-7, "y": -0.0}',
        '{"text": "esc \\u00e9\\n", "nested": {"a": [1, 2.5, null, true]}}',
        '{"text": "dup", "text": "last"}',
        '{"id": 9007199254740993, "text": "int id"}',
    ]
    parsed = read(tmp_path, "w.jsonl", "\n".join(lines) + "\n")
    assert parsed.rejects.height == 0
    assert parsed.rows.get_column("text").to_list() == ["big", "f", "esc \u00e9\n", "last", "int id"]
    assert parsed.rows.get_column("metadata").to_list() == [
        '{"n":123456789012345678901234567890}',
        '{"x":1e-07,"y":-0.0}',
        '{"nested":{"a":[1,2.5,null,true]}}',
        "{}",
        "{}",
    ]
    assert parsed.rows.get_column("record_id").to_list()[4] == "9007199254740993"


def test_jsonl_common_and_general_records_interleave_in_file_order(tmp_path):
    # the common record is appended inline, the others go through the general checks: same
    # contract, file order kept, fields checked text -> id -> ts (the ts of a bad-id record is never parsed)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    lines = [
        '{"id": 5, "text": "int id", "ts": "1970-01-01T00:00:00Z", "k": [1, 2.5]}',
        '{"text": null, "x": 1}',
        '{"id": true, "text": "a", "ts": "0001-01-01T00:00:00+01:00"}',
        '{"text": "b", "ts": "1970-01-01T00:00:00Z", "n": 123456789012345678901234567890}',
        '{"text": "c", "ts": "nope"}',
        '{"text": "c", "ts": "nope", "pkg": "p"}',
        '{"pkg": "p", "id": "r7", "text": "d", "ts": "2024-09-01T02:00:00+02:00", "z": null}',
    ]
    parsed = read(tmp_path, "w.jsonl", "\r\n".join(lines) + "\r\n")
    assert_frame_equal(
        parsed.rows,
        rows(
            (1, "5", "int id", epoch, '{"k":[1,2.5]}'),
            (2, sha(lines[1]), None, INGESTED, '{"x":1}'),
            (4, sha("b"), "b", epoch, '{"n":123456789012345678901234567890}'),
            (7, "r7", "d", TS, '{"pkg":"p","z":null}'),
        ),
    )
    assert_frame_equal(
        parsed.rejects,
        rejects(
            (3, lines[2], "field 'id' has type bool, expected string or integer"),
            (5, lines[4], "field 'ts' is not an ISO-8601 timestamp: 'nope'"),
            (6, lines[5], "field 'ts' is not an ISO-8601 timestamp: 'nope'"),
        ),
    )


def test_jsonl_unpaired_surrogate_escape_is_rejected(tmp_path):
    check_reject(
        tmp_path,
        '{"text": "a\\ud800b"}',
        '{"text": "a\\ud800b"}',
        "field 'text' is not valid Unicode (unpaired surrogate)",
    )


def test_jsonl_blank_lines_are_rejected(tmp_path):
    parsed = read(tmp_path, "w.jsonl", '{"text": "a"}\n\n   \t\n{"text": "b"}\n')
    assert_frame_equal(parsed.rejects, rejects((2, "", "blank line"), (3, "   \t", "blank line")))
    assert parsed.rows.get_column("row_number").to_list() == [1, 4]


def test_jsonl_final_newline_is_not_a_line_but_a_second_one_is(tmp_path):
    assert read(tmp_path, "a.jsonl", '{"text": "a"}\n').source_rows == 1
    assert read(tmp_path, "b.jsonl", '{"text": "a"}').source_rows == 1
    parsed = read(tmp_path, "c.jsonl", '{"text": "a"}\n\n')
    assert_frame_equal(parsed.rejects, rejects((2, "", "blank line")))


def test_jsonl_bom_and_crlf(tmp_path):
    content = (
        b'\xef\xbb\xbf{"text": "a", "ts": "2024-09-01T00:00:00Z"}\r\n'
        b'{"text": "b", "ts": "2024-09-01T00:00:00Z"}\r\n'
        b"{oops\r\n"
    )
    parsed = read(tmp_path, "w.jsonl", content)
    assert_frame_equal(parsed.rows, rows((1, sha("a"), "a", TS, "{}"), (2, sha("b"), "b", TS, "{}")))
    # only the line terminator is stripped from raw
    assert_frame_equal(
        parsed.rejects,
        rejects((3, "{oops", "invalid JSON: Expecting property name enclosed in double quotes at column 2")),
    )


def test_jsonl_missing_or_null_text_is_kept_with_null_text(tmp_path):
    content = '{"id": "x", "lang": "en"}\n{"text": null, "lang": "de"}\n'
    parsed = read(tmp_path, "w.jsonl", content)
    expected = rows(
        (1, "x", None, INGESTED, '{"lang":"en"}'),
        # no text and no id: the id is the hash of the raw record (the line)
        (2, sha('{"text": null, "lang": "de"}'), None, INGESTED, '{"lang":"de"}'),
    )
    assert_frame_equal(parsed.rows, expected)
    assert parsed.rejects.height == 0


@pytest.mark.parametrize(
    "line, error",
    [
        ('{"text": 5}', "field 'text' has type int, expected string"),
        ('{"text": ["a"]}', "field 'text' has type list, expected string"),
        ('{"text": {"en": "a"}}', "field 'text' has type dict, expected string"),
        ('{"text": true}', "field 'text' has type bool, expected string"),
        ('{"text": "a", "id": 1.5}', "field 'id' has type float, expected string or integer"),
        ('{"text": "a", "id": false}', "field 'id' has type bool, expected string or integer"),
    ],
)
def test_jsonl_wrong_type_field_is_rejected(tmp_path, line, error):
    check_reject(tmp_path, line, line, error)


@pytest.mark.parametrize(
    "line, error",
    [
        ('{"text": "a", "ts": "yesterday"}', "field 'ts' is not an ISO-8601 timestamp: 'yesterday'"),
        (
            '{"text": "a", "ts": "2024-13-01T00:00:00Z"}',
            "field 'ts' is not an ISO-8601 timestamp: '2024-13-01T00:00:00Z'",
        ),
        ('{"text": "a", "ts": 1725148800}', "field 'ts' has type int, expected an ISO-8601 string"),
        (
            '{"text": "a", "ts": "0001-01-01T00:00:00+01:00"}',
            "field 'ts' is out of range in UTC: '0001-01-01T00:00:00+01:00'",
        ),
    ],
)
def test_jsonl_bad_ts_is_rejected(tmp_path, line, error):
    check_reject(tmp_path, line, line, error)


def test_missing_ts_uses_ingested_at_and_defaults_to_utc_now(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text('{"text": "a"}\n')
    before = datetime.now(UTC)
    ts = read_window_file(path, "w1").rows.item(0, "ts")
    assert before.replace(microsecond=0) <= ts <= datetime.now(UTC)
    with pytest.raises(ValueError, match="ingested_at must be timezone-aware"):
        read_window_file(path, "w1", ingested_at=datetime(2025, 1, 1))


def test_id_defaults_to_content_hash_of_text(tmp_path):
    parsed = read(
        tmp_path, "w.jsonl", '{"text": "hello"}\n{"text": "hello", "id": null}\n{"text": "hello", "id": ""}\n'
    )
    expected_hash = hashlib.sha256(b"hello").hexdigest()[:32]
    assert content_hash("hello") == expected_hash
    assert parsed.rows.get_column("record_id").to_list() == [expected_hash, expected_hash, ""]


def test_metadata_keeps_extra_fields_as_json(tmp_path):
    line = '{"text": "a", "package": "numpy", "version": "2.0", "n": 3, "tags": ["x", "ü"], "nested": {"k": null}}'
    parsed = read(tmp_path, "w.jsonl", line + "\n")
    metadata = parsed.rows.item(0, "metadata")
    assert metadata == '{"package":"numpy","version":"2.0","n":3,"tags":["x","ü"],"nested":{"k":null}}'
    assert json.loads(metadata) == {
        "package": "numpy",
        "version": "2.0",
        "n": 3,
        "tags": ["x", "ü"],
        "nested": {"k": None},
    }


def test_custom_field_names(tmp_path):
    fields = RecordFields(text="summary", id="key", ts="time")
    parsed = read(
        tmp_path,
        "w.jsonl",
        '{"key": "k1", "summary": "s", "time": "2024-09-01T00:00:00Z", "text": "extra"}\n',
        fields=fields,
    )
    assert_frame_equal(parsed.rows, rows((1, "k1", "s", TS, '{"text":"extra"}')))
    with pytest.raises(ValueError, match="distinct"):
        RecordFields(text="a", id="a")


def test_physical_lines_equal_rows_plus_rejects(tmp_path):
    lines = ['{"text": "ok"}', "", "{bad", '{"text": 1}', "[]", '{"no_text": 1}', '{"text": "ok2"}']
    parsed = read(tmp_path, "w.jsonl", "\n".join(lines) + "\n")
    assert parsed.source_rows == len(lines)
    assert sorted(parsed.rows["row_number"].to_list() + parsed.rejects["row_number"].to_list()) == list(range(1, 8))
    assert parsed.rows.height == 3  # the record without text is a row (text null), not a reject


# --- gzip -----------------------------------------------------------------------------------------


def test_jsonl_gz_good(tmp_path):
    plain = '{"text": "a", "ts": "2024-09-01T00:00:00Z"}\n{"text": 2}\n'
    data = gzip.compress(plain.encode(), mtime=0)
    parsed = read(tmp_path, "w.jsonl.gz", data)
    assert_frame_equal(parsed.rows, rows((1, sha("a"), "a", TS, "{}")))
    assert_frame_equal(parsed.rejects, rejects((2, '{"text": 2}', "field 'text' has type int, expected string")))
    assert parsed.file_sha256 == hashlib.sha256(data).hexdigest()  # of the stored (compressed) bytes


def test_jsonl_gz_multi_member(tmp_path):
    data = gzip.compress(b'{"text": "a"}\n', mtime=0) + gzip.compress(b'{"text": "b"}\n', mtime=0)
    assert read(tmp_path, "w.jsonl.gz", data).rows.get_column("text").to_list() == ["a", "b"]


def test_jsonl_gz_truncated_raises_naming_the_file(tmp_path):
    plain = "".join(json.dumps({"text": f"record {i} " + "x" * (i % 97)}) + "\n" for i in range(5000)).encode()
    data = gzip.compress(plain, mtime=0)
    with pytest.raises(WindowReadError, match=r"w\.jsonl\.gz: truncated gzip stream after \d+ lines"):
        read(tmp_path, "w.jsonl.gz", data[: len(data) // 2])


def test_jsonl_gz_corrupt_raises(tmp_path):
    data = bytearray(gzip.compress(b'{"text": "a"}\n' * 100, mtime=0))
    data[-8] ^= 0xFF  # CRC32 in the trailer
    with pytest.raises(
        WindowReadError, match=r"w\.jsonl\.gz: corrupt gzip stream after 100 lines \(.*incorrect data check"
    ):
        read(tmp_path, "w.jsonl.gz", bytes(data))
    with pytest.raises(
        WindowReadError, match=r"x\.jsonl\.gz: corrupt gzip stream after 0 lines \(.*incorrect header check"
    ):
        read(tmp_path, "x.jsonl.gz", b'{"text": "not gzip"}\n')


# --- CSV --------------------------------------------------------------------------------------------


def test_csv_embedded_newlines_and_quotes(tmp_path):
    content = (
        "\ufeffid,text,ts,lang\r\n"
        'r1,"line one\nline two",2024-09-01T00:00:00Z,en\r\n'
        'r2,"He said ""hi"", twice",,de\r\n'
        ",plain,2024-09-01T00:00:00Z,\r\n"
    )
    parsed = read(tmp_path, "w.csv", content.encode("utf-8"))
    expected = rows(
        (1, "r1", "line one\nline two", TS, '{"lang":"en"}'),
        (2, "r2", 'He said "hi", twice', INGESTED, '{"lang":"de"}'),  # empty ts cell = absent
        (3, sha("plain"), "plain", TS, '{"lang":""}'),  # empty id cell = absent
    )
    assert_frame_equal(parsed.rows, expected)
    assert parsed.rejects.height == 0


def test_csv_ragged_row_is_rejected_reserialized(tmp_path):
    content = 'text,lang\nok,en\n"a, b",en,extra\nshort\n\nlast,fr\n'
    parsed = read(tmp_path, "w.csv", content)
    assert_frame_equal(
        parsed.rejects,
        rejects(
            (2, '"a, b",en,extra', "row has 3 fields, header has 2"),
            (3, "short", "row has 1 fields, header has 2"),
            (4, "", "blank row"),
        ),
    )
    assert parsed.rows.get_column("row_number").to_list() == [1, 5]
    assert parsed.source_rows == 5


def test_csv_missing_text_column_gives_null_text(tmp_path):
    parsed = read(tmp_path, "w.csv", "summary,lang\nhello,en\n")
    # no text and no id: the id is the hash of the raw record (the re-serialized row)
    assert_frame_equal(parsed.rows, rows((1, sha("hello,en"), None, INGESTED, '{"summary":"hello","lang":"en"}')))


def test_csv_invalid_utf8_is_replaced_and_bad_ts_is_rejected(tmp_path):
    parsed = read(tmp_path, "w.csv", b"text,ts\ncaf\xe9,\ngood,tomorrow\n")
    assert_frame_equal(parsed.rows, rows((1, sha("caf\ufffd"), "caf\ufffd", INGESTED, "{}")))
    assert_frame_equal(
        parsed.rejects, rejects((2, "good,tomorrow", "field 'ts' is not an ISO-8601 timestamp: 'tomorrow'"))
    )


def test_csv_header_only_and_duplicate_header(tmp_path):
    parsed = read(tmp_path, "a.csv", "text,lang\n")
    assert parsed.source_rows == 0
    with pytest.raises(WindowReadError, match=r"b\.csv: duplicate CSV header names \['text'\]"):
        read(tmp_path, "b.csv", "text,text\na,b\n")


# --- Parquet ----------------------------------------------------------------------------------------


def test_parquet_rows(tmp_path):
    path = tmp_path / "w.parquet"
    pl.DataFrame(
        {
            "id": [1, None, 3],
            "text": ["a", "b", None],
            "ts": [datetime(2024, 9, 1, 2), None, datetime(2024, 9, 1, 2)],
            "lang": ["en", None, "fr"],
        },
        schema={"id": pl.Int32, "text": pl.String, "ts": pl.Datetime("ns", "Europe/Berlin"), "lang": pl.String},
    ).write_parquet(path)
    parsed = read_window_file(path, "w1", ingested_at=INGESTED)
    # Berlin is UTC+2 in September: 2024-09-01 02:00 UTC is 04:00 Berlin. Null metadata values are kept.
    ts = datetime(2024, 9, 1, 2, tzinfo=UTC)
    expected = rows(
        (1, "1", "a", ts, '{"lang":"en"}'),
        (2, sha("b"), "b", INGESTED, '{"lang":null}'),
        (3, "3", None, ts, '{"lang":"fr"}'),
    )
    assert_frame_equal(parsed.rows, expected)
    assert parsed.rejects.height == 0


def test_parquet_string_ts_and_bad_values(tmp_path):
    path = tmp_path / "w.parquet"
    pl.DataFrame({"text": ["a", "b"], "ts": ["2024-09-01T00:00:00Z", "soon"]}).write_parquet(path)
    parsed = read_window_file(path, "w1", ingested_at=INGESTED)
    assert_frame_equal(parsed.rows, rows((1, sha("a"), "a", TS, "{}")))
    assert_frame_equal(
        parsed.rejects, rejects((2, '{"text": "b", "ts": "soon"}', "field 'ts' is not an ISO-8601 timestamp: 'soon'"))
    )


def test_parquet_non_string_text_column_rejects_every_row(tmp_path):
    path = tmp_path / "w.parquet"
    pl.DataFrame({"text": [1, None], "lang": ["en", "de"]}).write_parquet(path)
    parsed = read_window_file(path, "w1", ingested_at=INGESTED)
    assert parsed.rows.height == 0
    error = "column 'text' has type Int64, expected string"
    assert_frame_equal(
        parsed.rejects, rejects((1, '{"text": 1, "lang": "en"}', error), (2, '{"text": null, "lang": "de"}', error))
    )


def test_parquet_unreadable_raises(tmp_path):
    with pytest.raises(WindowReadError, match=r"w\.parquet: unreadable Parquet"):
        read(tmp_path, "w.parquet", b"PAR1 this is not parquet")


# --- file level -------------------------------------------------------------------------------------


def test_unknown_suffix_raises(tmp_path):
    with pytest.raises(
        WindowReadError,
        match=r"w\.txt: unsupported suffix \(supported: \.jsonl, \.jsonl\.gz, \.ndjson, \.parquet, \.csv\)",
    ):
        read(tmp_path, "w.txt", '{"text": "a"}\n')


def test_missing_file_and_directory_raise(tmp_path):
    with pytest.raises(WindowReadError, match=r"nope\.jsonl: No such file or directory"):
        read_window_file(tmp_path / "nope.jsonl", "w1")
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(WindowReadError, match=r"dir\.jsonl: is a directory"):
        read_window_file(tmp_path / "dir.jsonl", "w1")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_unreadable_file_raises(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text('{"text": "a"}\n')
    path.chmod(0)
    with pytest.raises(WindowReadError, match=r"w\.jsonl: Permission denied"):
        read_window_file(path, "w1")


def test_os_errors_become_window_read_errors(tmp_path, monkeypatch):
    path = tmp_path / "w.jsonl"
    path.write_text('{"text": "a"}\n')

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(WindowReadError, match=r"w\.jsonl: Permission denied"):
        read_window_file(path, "w1")


@pytest.mark.parametrize("suffix", SUPPORTED_SUFFIXES)
def test_empty_file_gives_zero_rows_zero_rejects(tmp_path, suffix):
    parsed = read(tmp_path, "w" + suffix, b"")
    assert (parsed.rows.height, parsed.rejects.height) == (0, 0)
    assert parsed.rows.schema == pl.Schema(RAW_SCHEMA) and parsed.rejects.schema == pl.Schema(REJECT_SCHEMA)
    assert parsed.file_sha256 == hashlib.sha256(b"").hexdigest()


def test_100k_lines_parse_in_seconds(tmp_path):
    line = '{"text": "a summary of a python package number %d", "ts": "2025-01-01T00:00:00Z", "package": "p%d"}\n'
    content = "".join(line % (i, i) for i in range(100_000))
    start = time.perf_counter()
    parsed = read(tmp_path, "big.jsonl", content)
    elapsed = time.perf_counter() - start
    assert parsed.rows.height == 100_000 and parsed.rejects.height == 0
    assert elapsed < 20, f"100k lines took {elapsed:.1f} s"
