"""Property-based tests (Hypothesis) of the readers' contract (``quality.readers``): arbitrary bytes and
lines in, every record accounted for as a row or a reject, in file order, and no exception but the
documented ``WindowReadError``. End to end, through the curate step: rows in = curated + quarantined."""

import csv
import gzip
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quality.readers import WindowReadError, read_window_file
from quality.suite import QualityConfig, curate_window

INGESTED = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# JSON values a record field may hold (never a float NaN/inf: JSON has none)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)
)
RECORDS = st.dictionaries(
    st.sampled_from(["text", "id", "ts", "package", "extra"]) | st.text(max_size=5), VALUES, max_size=5
)
TS = st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()) | st.text(max_size=12)
GOOD = st.fixed_dictionaries(
    {"text": st.text(max_size=80)}, optional={"id": st.text(max_size=8) | st.integers(), "ts": TS}
)
# one physical line: a record (typical or odd), another JSON value, garbage text or raw bytes (never a newline)
LINE = st.one_of(
    GOOD.map(lambda r: json.dumps(r).encode()),
    RECORDS.map(lambda r: json.dumps(r, ensure_ascii=False).encode()),
    VALUES.map(lambda v: json.dumps(v).encode()),
    st.text().map(str.encode),
    st.binary(max_size=40),
).map(lambda b: b.replace(b"\n", b" "))


def account(path: Path) -> tuple[list[int], list[int]]:
    """Row numbers of the rows and of the rejects of ``path``."""
    parsed = read_window_file(path, "w", ingested_at=INGESTED)
    assert parsed.source_rows == parsed.rows.height + parsed.rejects.height
    return parsed.rows["row_number"].to_list(), parsed.rejects["row_number"].to_list()


def physical_lines(data: bytes) -> int:
    """Records of a JSON Lines file by the contract: a leading BOM is dropped; lines end at ``\\n``; the
    terminator of the last line does not start a new one (an empty file has none)."""
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    return body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)


def assert_partition(rows: list[int], rejects: list[int], n: int) -> None:
    """Rows and rejects split 1..n exactly, each in file order."""
    assert rows == sorted(rows) and rejects == sorted(rejects)
    assert sorted(rows + rejects) == list(range(1, n + 1))


def assert_read_or_refused(path):
    """Arbitrary bytes: either a WindowReadError naming the file, or every line numbered once as a row or a reject."""
    try:
        rows, rejects = account(path)
    except WindowReadError as e:
        assert str(path) in str(e)
        return
    assert sorted(rows + rejects) == list(range(1, len(rows) + len(rejects) + 1))


@FAST
@given(lines=st.lists(LINE, max_size=12), crlf=st.booleans(), final_newline=st.booleans())
def test_jsonl_every_line_is_a_row_or_a_reject(tmp_path, lines, crlf, final_newline):
    sep = b"\r\n" if crlf else b"\n"
    data = sep.join(lines) + (sep if final_newline and lines else b"")
    path = tmp_path / "w.jsonl"
    path.write_bytes(data)
    rows, rejects = account(path)
    assert_partition(rows, rejects, physical_lines(data))
    # the same lines gzipped read the same
    gz = tmp_path / "w.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    assert account(gz) == (rows, rejects)


@FAST
@given(data=st.binary(max_size=300))
def test_jsonl_arbitrary_bytes_are_accounted_for_line_by_line(tmp_path, data):
    path = tmp_path / "w.ndjson"
    path.write_bytes(data)
    rows, rejects = account(path)
    assert_partition(rows, rejects, physical_lines(data))


@FAST
@given(data=st.binary(max_size=300))
def test_gzip_of_arbitrary_bytes_is_read_or_refused_with_window_read_error(tmp_path, data):
    path = tmp_path / "w.jsonl.gz"
    path.write_bytes(data)
    assert_read_or_refused(path)


CELLS = st.text(max_size=20) | st.binary(max_size=10).map(lambda b: b.decode("utf-8", "replace"))


@FAST
@given(
    header=st.lists(st.sampled_from(["text", "id", "ts", "package", "note"]), min_size=1, max_size=4, unique=True),
    table=st.lists(st.lists(CELLS, max_size=5), max_size=10),
)
def test_csv_every_data_row_is_a_row_or_a_reject(tmp_path, header, table):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(table)
    path = tmp_path / "w.csv"
    path.write_bytes(buf.getvalue().encode())
    rows, rejects = account(path)
    assert_partition(rows, rejects, len(table))


@FAST
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_csv_arbitrary_bytes_are_read_or_refused_with_window_read_error(tmp_path, data):
    path = tmp_path / "w.csv"
    path.write_bytes(data)
    assert_read_or_refused(path)


@pytest.mark.slow  # the gate (GX + Presidio) takes seconds per window
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, min_size=1, max_size=8))
def test_through_the_curate_step_rows_in_are_curated_plus_quarantined_plus_rejected(tmp_path, lines):
    path = tmp_path / "w.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    parsed = read_window_file(path, "w", ingested_at=INGESTED)
    verdict = curate_window(parsed.rows, QualityConfig(max_chars=60), window_key="w")
    curated = verdict.curated["row_number"].to_list()
    quarantined = verdict.quarantine["row_number"].to_list()
    assert len(curated) + len(quarantined) == parsed.rows.height
    assert sorted(curated + quarantined) == parsed.rows["row_number"].to_list()
    assert parsed.rows.height + parsed.rejects.height == physical_lines(path.read_bytes())
