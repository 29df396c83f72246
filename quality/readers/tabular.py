"""CSV (Python ``csv``, excel dialect) and Parquet (polars) window files."""

import csv
import io
import json
from pathlib import Path
from typing import Any

import polars as pl

from quality.readers.records import _BOM, _SURROGATE, WindowReadError, _Builder, _json_safe

_CSV_FIELD_LIMIT = 1 << 28  # characters


def _parse_csv(data: bytes, b: _Builder, path: Path) -> None:
    """Python ``csv`` (excel dialect: quoted fields may hold commas, quotes and newlines)."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    # surrogateescape keeps undecodable bytes detectable per row (then U+FFFD) instead of failing the file.
    reader = csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline=""))
    limit = csv.field_size_limit(_CSV_FIELD_LIMIT)  # default 128 KiB would fail the whole file
    try:
        header = next(reader, None)
        if header is None:
            return
        if not header or _SURROGATE.search("".join(header)):
            raise WindowReadError(f"cannot read window file {path}: CSV header is blank or not valid UTF-8")
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise WindowReadError(f"cannot read window file {path}: duplicate CSV header names {duplicated}")
        optional = (b.fields.id, b.fields.ts)
        for n, row in enumerate(reader, start=1):
            if not row:
                b.reject(n, "", "blank row")
                continue
            if len(row) != len(header):
                b.reject(n, _csv_raw(row), f"row has {len(row)} fields, header has {len(header)}")
                continue
            if any(_SURROGATE.search(v) for v in row):
                # invalid UTF-8 bytes (surrogate-escaped): U+FFFD, quarantined by the gate (valid_utf8)
                row = [v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for v in row]
            # CSV cannot say null: an empty id or ts means "absent"; an empty text stays "".
            rec = {h: (None if v == "" and h in optional else v) for h, v in zip(header, row)}
            b.record(n, rec, lambda row=row: _csv_raw(row))
    except csv.Error as e:
        raise WindowReadError(f"cannot read window file {path}: CSV error at line {reader.line_num}: {e}") from e
    finally:
        csv.field_size_limit(limit)


def _csv_raw(row: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(row)
    return buf.getvalue().encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _parse_parquet(data: bytes, b: _Builder, path: Path) -> None:
    try:
        df = pl.read_parquet(io.BytesIO(data))
    except Exception as e:  # polars/pyarrow raise several unrelated types for a bad file
        raise WindowReadError(f"cannot read window file {path}: unreadable Parquet ({type(e).__name__}: {e})") from e
    f = b.fields
    column_error = None
    casts = []
    for name, expected in ((f.text, "string"), (f.id, "string or integer"), (f.ts, "timestamp or ISO-8601 string")):
        if name not in df.columns:
            continue
        dtype = df.schema[name]
        if dtype == pl.String or isinstance(dtype, (pl.Datetime, pl.Date)) and name == f.ts:
            continue
        if isinstance(dtype, (pl.Categorical, pl.Enum, pl.Null)) or (dtype.is_integer() and name == f.id):
            casts.append(pl.col(name).cast(pl.String))
        elif column_error is None:
            column_error = f"column {name!r} has type {dtype}, expected {expected}"
    if casts and column_error is None:
        df = df.with_columns(casts)
    for n, rec in enumerate(df.iter_rows(named=True), start=1):
        if column_error is not None:
            b.reject(n, _parquet_raw(rec), column_error)
        else:
            b.record(n, rec, lambda rec=rec: _parquet_raw(rec))


def _parquet_raw(rec: dict[str, Any]) -> str:
    return json.dumps(_json_safe(rec), ensure_ascii=False, default=str)
