"""Parse one landed window file into rows (RAW_SCHEMA) and rejects (REJECT_SCHEMA).

Record contract (docs/architecture.md): one JSON object per line (``.jsonl``, ``.ndjson``,
``.jsonl.gz``), or one Parquet/CSV row, with

- ``text``: string, required; a missing or null text is *kept* (text null) so the quality gate
  quarantines it with a reason;
- ``id``: optional string or integer, else a content hash (sha256 of the text, hex[:32]; sha256
  of the raw record when the text is missing too);
- ``ts``: optional ISO-8601 timestamp (an offset-less one is read as UTC), else the ingestion time;
- any other field: kept, as a JSON object, in ``metadata``.

Nothing is dropped silently: every record of the file becomes a row or a reject, so
``ParsedWindow.source_rows`` equals the number of records (physical lines for JSON Lines, data rows
for CSV and Parquet). Only a file that cannot be read at all raises ``WindowReadError``.

Invalid UTF-8: a line (CSV: a field) with bytes that are not UTF-8 is decoded with U+FFFD in place
of each bad byte sequence. If the line still parses as a record it becomes a *row*, and the quality
gate quarantines it (rule ``valid_utf8``: any U+FFFD in ``record_id``, ``text`` or ``metadata``,
reason with the byte offset); the bad bytes themselves are never stored anywhere, so a row can only
re-enter the curated data through ``quarantine release`` after the rule is relaxed. If the bad
bytes break the JSON structure the line is a reject (``"invalid UTF-8 at byte N"``, ``raw`` with
U+FFFD replacement).

Speed: JSON Lines records are decoded with orjson (Rust) when it accepts the line and the record
holds no float of magnitude >= 9.2e18 (orjson reads integers beyond 64 bits as floats); anything
else goes through the standard library decoder, whose error messages are the documented reject
reasons. Metadata without floats is serialized by orjson, with floats by the stdlib encoder (float
formatting differs; string escaping is identical). The common JSON Lines record (string text,
string/integer/no id, valid ISO-8601 or no ts) is appended without the general per-record checks.
The result does not depend on the path.
"""

import binascii
import csv
import hashlib
import io
import json
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from quality.schema import RAW_SCHEMA, REJECT_SCHEMA

SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".parquet", ".csv")

_BOM = b"\xef\xbb\xbf"
_GZIP_CHUNK = 1 << 16
_CSV_FIELD_LIMIT = 1 << 28  # characters
_SURROGATE = re.compile("[\ud800-\udfff]")
_BIG_FLOAT = 9.2e18  # orjson reads integers beyond 64 bits as floats of at least this size: use json there
_FLOAT_OR_CONTAINER = frozenset((float, dict, list))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TS_CACHE_MAX = 65536
_META_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_JSON_TYPE = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class WindowReadError(Exception):
    """The window file cannot be read at all (missing, unreadable, unknown format, corrupt container).

    The message names the file and the cause. Bad *records* never raise: they become rejects.
    """


@dataclass(frozen=True)
class RecordFields:
    """Names of the contract fields in the source records."""

    text: str = "text"
    id: str = "id"
    ts: str = "ts"

    def __post_init__(self) -> None:
        names = (self.text, self.id, self.ts)
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != 3:
            raise ValueError(f"RecordFields needs three distinct non-empty names, got {names}")


@dataclass(frozen=True)
class ParsedWindow:
    """One parsed window file."""

    rows: pl.DataFrame
    """RAW_SCHEMA, file order (row_number ascending)."""
    rejects: pl.DataFrame
    """REJECT_SCHEMA, file order; ``raw`` is the record verbatim, ``error`` says why it was rejected."""
    file_sha256: str
    """sha256 hex digest of the file bytes as stored (compressed bytes for ``.jsonl.gz``)."""

    @property
    def source_rows(self) -> int:
        """Number of records in the file: ``rows.height + rejects.height``."""
        return self.rows.height + self.rejects.height


def read_window_file(
    path: Path,
    window_key: str,
    *,
    fields: RecordFields = RecordFields(),
    ingested_at: datetime | None = None,
) -> ParsedWindow:
    """Read one window file into rows and rejects.

    Args:
        path: a ``.jsonl``, ``.ndjson``, ``.jsonl.gz``, ``.csv`` or ``.parquet`` file (suffix is
            matched case-insensitively).
        window_key: stored in the ``window_key`` column of every row and reject.
        fields: names of the text / id / ts fields in the records.
        ingested_at: timezone-aware time used as ``ts`` for records without one; defaults to
            the current UTC time. Stored at microsecond precision, in UTC.

    Returns:
        ``ParsedWindow`` with ``rows`` (RAW_SCHEMA) and ``rejects`` (REJECT_SCHEMA), both in file
        order. ``row_number`` is 1-based: the physical line number for JSON Lines (a final line
        terminator does not start a new line), the data-row number (header excluded) for CSV, the
        row index + 1 for Parquet. An empty file gives zero rows and zero rejects.

        Rejected records (``error`` text): JSON Lines: ``"blank line"``, ``"invalid UTF-8 at byte
        N"`` (0-based offset in the line; only when the line does not parse as a record once the bad
        bytes are replaced by U+FFFD, else it is a row for the ``valid_utf8`` rule), ``"invalid JSON: <msg> at column N"``, ``"JSON value is
        an array, expected an object"``; CSV: ``"blank row"``, ``"row has 3 fields, header has
        2"``; Parquet: ``"column 'text' has type Int64, expected
        string"``; all formats: ``"field 'text' has type int, expected string"``, ``"field 'id'
        has type float, expected string or integer"``, ``"field 'ts' is not an ISO-8601
        timestamp: '...'"``, ``"field 'ts' is out of range in UTC: '...'"``, ``"field 'text' is not
        valid Unicode (unpaired surrogate)"``.

    Raises:
        WindowReadError: unknown suffix, missing file, directory, permission problem, corrupt or
            truncated gzip stream, unreadable Parquet, CSV without a usable header or with a
            record the csv module cannot tokenize. The message names the file and the cause.
        ValueError: ``ingested_at`` is naive.
    """
    path = Path(path)
    fmt = _format_of(path)
    if ingested_at is None:
        ingested_at = datetime.now(UTC)
    elif ingested_at.tzinfo is None or ingested_at.utcoffset() is None:
        raise ValueError(f"ingested_at must be timezone-aware, got {ingested_at!r}")
    builder = _Builder(window_key, fields, ingested_at.astimezone(UTC))

    data = _read_bytes(path)
    if data:
        if fmt == "jsonl.gz":
            _parse_jsonl(_gunzip(data, path), builder)
        elif fmt == "jsonl":
            _parse_jsonl(data, builder)
        elif fmt == "csv":
            _parse_csv(data, builder, path)
        else:
            _parse_parquet(data, builder, path)
    return ParsedWindow(builder.rows(), builder.rejects(), hashlib.sha256(data).hexdigest())


def content_hash(value: str) -> str:
    """Default record id: sha256 of the UTF-8 bytes of ``value``, first 32 hex characters."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# file level


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".jsonl.gz"):
        return "jsonl.gz"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    raise WindowReadError(
        f"cannot read window file {path}: unsupported suffix (supported: {', '.join(SUPPORTED_SUFFIXES)})"
    )


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise WindowReadError(f"cannot read window file {path}: is a directory")
    try:
        return path.read_bytes()
    except OSError as e:
        raise WindowReadError(f"cannot read window file {path}: {e.strerror or e}") from e


def _gunzip(data: bytes, path: Path) -> bytes:
    """Decompress every gzip member (header, CRC and length are checked). A truncated or corrupt
    stream fails the whole file: we cannot know how many records were lost, and keeping a prefix
    would silently drop the rest. The error says how many lines decompressed before the fault."""
    out = bytearray()
    pos, d = 0, None
    while pos < len(data):
        if d is None:
            d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip container
        chunk = data[pos : pos + _GZIP_CHUNK]
        saved = d.copy()
        try:
            out += d.decompress(chunk)
        except zlib.error as e:
            # zlib drops the output of the failing call: replay it byte by byte to count lines.
            try:
                for i in range(len(chunk)):
                    out += saved.decompress(chunk[i : i + 1])
            except zlib.error:
                pass
            lines = out.count(b"\n")
            raise WindowReadError(
                f"cannot read window file {path}: corrupt gzip stream after {lines} lines ({e})"
            ) from e
        if d.eof:  # member complete; another may follow
            pos += len(chunk) - len(d.unused_data)
            d = None
        else:
            pos += len(chunk)
    if d is not None:
        lines = out.count(b"\n")
        raise WindowReadError(f"cannot read window file {path}: truncated gzip stream after {lines} lines")
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# record level


class _Builder:
    """Collects rows and rejects column-wise; ``record`` applies the record contract
    (``_parse_jsonl`` appends the common JSON Lines record itself, with the same result)."""

    def __init__(self, window_key: str, fields: RecordFields, ingested_at: datetime) -> None:
        self.window_key, self.fields, self.ingested_at = window_key, fields, ingested_at
        self.row_numbers: list[int] = []
        self.ids: list[str] = []
        self.texts: list[str | None] = []
        self.ts: list[int] = []  # microseconds since the epoch (UTC)
        self.ts_cache: dict[str, int | str] = {}  # ISO string -> microseconds since the epoch, or the error
        self.default_ts_us = (ingested_at - _EPOCH) // _MICROSECOND
        self.metadata: list[str] = []
        self.reject_numbers: list[int] = []
        self.reject_raw: list[str] = []
        self.reject_errors: list[str] = []

    def reject(self, row_number: int, raw: str, error: str) -> None:
        self.reject_numbers.append(row_number)
        self.reject_raw.append(raw)
        self.reject_errors.append(error)

    def record(
        self,
        row_number: int,
        rec: dict[str, Any],
        raw: str | Callable[[], str],
        unicode_checked: bool = False,
        orjson_meta: bool = False,
    ) -> None:
        """Validate one parsed record; append it as a row or a reject.

        ``raw`` is the record verbatim, or a function building it (only called when needed).
        ``unicode_checked``: the decoder already guarantees no unpaired surrogates (orjson).
        ``orjson_meta``: the record holds no float, so orjson may serialize its metadata."""
        error = self._add(row_number, rec, raw, unicode_checked, orjson_meta)
        if error is not None:
            self.reject(row_number, raw if isinstance(raw, str) else raw(), error)

    def _add(
        self,
        row_number: int,
        rec: dict[str, Any],
        raw: str | Callable[[], str],
        unicode_checked: bool = False,
        orjson_meta: bool = False,
    ) -> str | None:
        f = self.fields
        text = rec.get(f.text)
        if text is not None:
            if not isinstance(text, str):
                return f"field {f.text!r} has type {type(text).__name__}, expected string"
            if not unicode_checked and _SURROGATE.search(text):
                return f"field {f.text!r} is not valid Unicode (unpaired surrogate)"

        rid = rec.get(f.id)
        if rid is None:
            rid = content_hash(text if text is not None else raw if isinstance(raw, str) else raw())
        elif isinstance(rid, str):
            if not unicode_checked and _SURROGATE.search(rid):
                return f"field {f.id!r} is not valid Unicode (unpaired surrogate)"
        elif isinstance(rid, int) and not isinstance(rid, bool):
            rid = str(rid)
        else:
            return f"field {f.id!r} has type {type(rid).__name__}, expected string or integer"

        ts = rec.get(f.ts)
        if ts is None:
            ts_us = self.default_ts_us
        elif isinstance(ts, str):
            ts_us = self.ts_cache.get(ts)
            if ts_us is None:
                ts_us = self.ts_micros(ts)
            if isinstance(ts_us, str):
                return ts_us
        elif isinstance(ts, datetime):
            try:
                ts_us = (_as_utc(ts) - _EPOCH) // _MICROSECOND
            except OverflowError:
                return f"field {f.ts!r} is out of range in UTC: {_short_repr(ts.isoformat())}"
        elif isinstance(ts, date):
            ts_us = (datetime(ts.year, ts.month, ts.day, tzinfo=UTC) - _EPOCH) // _MICROSECOND
        else:
            return f"field {f.ts!r} has type {type(ts).__name__}, expected an ISO-8601 string"

        extra = {k: v for k, v in rec.items() if k != f.text and k != f.id and k != f.ts}
        if not extra:
            meta = "{}"
        elif orjson_meta:
            meta = orjson.dumps(extra).decode()
        else:
            meta = _metadata_json(extra, unicode_checked)
        self.row_numbers.append(row_number)
        self.ids.append(rid)
        self.texts.append(text)
        self.ts.append(ts_us)
        self.metadata.append(meta)
        return None

    def ts_micros(self, ts: str) -> int | str:
        """Microseconds since the epoch (UTC) of an ISO-8601 string, or the reject reason; cached."""
        try:
            value = (_as_utc(datetime.fromisoformat(ts)) - _EPOCH) // _MICROSECOND
        except ValueError:
            value = f"field {self.fields.ts!r} is not an ISO-8601 timestamp: {_short_repr(ts)}"
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            value = f"field {self.fields.ts!r} is out of range in UTC: {_short_repr(ts)}"
        if len(self.ts_cache) >= _TS_CACHE_MAX:
            self.ts_cache.clear()
        self.ts_cache[ts] = value
        return value

    def rows(self) -> pl.DataFrame:
        n = len(self.row_numbers)
        return pl.DataFrame(
            {
                "window_key": pl.repeat(self.window_key, n, dtype=pl.String, eager=True),
                "row_number": self.row_numbers,
                "record_id": self.ids,
                "text": self.texts,
                "ts": pl.Series("ts", self.ts, dtype=pl.Int64).cast(RAW_SCHEMA["ts"]),
                "metadata": self.metadata,
            },
            schema=RAW_SCHEMA,
        )

    def rejects(self) -> pl.DataFrame:
        n = len(self.reject_numbers)
        return pl.DataFrame(
            {
                "window_key": pl.repeat(self.window_key, n, dtype=pl.String, eager=True),
                "row_number": self.reject_numbers,
                "raw": self.reject_raw,
                "error": self.reject_errors,
            },
            schema=REJECT_SCHEMA,
        )


def _as_utc(ts: datetime) -> datetime:
    # An offset-less timestamp is read as UTC (documented in the record contract).
    if ts.tzinfo is None or ts.utcoffset() is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def _short_repr(value: str, limit: int = 64) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _json_safe(value: Any) -> Any:
    # NaN/Infinity are not JSON; bytes and temporal values become strings.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return "base64:" + binascii.b2a_base64(bytes(value), newline=False).decode("ascii")
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _metadata_json(extra: dict[str, Any], unicode_checked: bool = False) -> str:
    if not extra:
        return "{}"
    try:
        out = _META_ENCODER.encode(extra)
    except (TypeError, ValueError):
        out = json.dumps(_json_safe(extra), ensure_ascii=False, separators=(",", ":"), default=str)
    if not unicode_checked and _SURROGATE.search(out):  # an unpaired "\udXXX" escape in the source: keep it escaped
        out = json.dumps(_json_safe(extra), ensure_ascii=True, separators=(",", ":"), default=str)
    return out


# ---------------------------------------------------------------------------------------------
# formats


class _InvalidConstant(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise _InvalidConstant(f"{name} is not valid JSON")


def _parse_jsonl(data: bytes, b: _Builder) -> None:
    """One physical line (``\\n`` or ``\\r\\n`` terminated) = one record.

    orjson decodes each line first. The common record (an object whose text is a string, id a
    string, an integer or null/absent, ts a valid ISO-8601 string or null/absent, and whose
    ``_float_kind`` is below 2) becomes a row right here, the same row ``_Builder.record`` gives.
    Any other object goes through ``_record_orjson``; a line orjson rejects, or a JSON value that
    is not an object, through ``_parse_json_line`` (standard library decoder, reject reasons).
    """
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data:
        return
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the terminator of the last line does not start a new line
        lines.pop()
    text_key, id_key, ts_key = b.fields.text, b.fields.id, b.fields.ts
    ts_cache, ts_micros, default_ts_us = b.ts_cache, b.ts_micros, b.default_ts_us
    add_number, add_id, add_text = b.row_numbers.append, b.ids.append, b.texts.append
    add_ts, add_metadata = b.ts.append, b.metadata.append
    loads, dumps, decode_error = orjson.loads, orjson.dumps, orjson.JSONDecodeError
    for n, bline in enumerate(lines, start=1):
        # orjson accepts valid UTF-8, valid JSON, no NaN, no lone surrogate. The "\r" of a "\r\n"
        # terminator is JSON whitespace: a line decodes to the same value with or without it.
        try:
            rec = loads(bline)
        except decode_error:
            rec = None
        if type(rec) is not dict:
            _parse_json_line(n, _without_cr(bline), b)
            continue
        # The common record becomes a row right here, checked in _Builder.record's order (text, id,
        # ts). Take the contract fields out: the rest is the metadata.
        text, rid, ts = rec.pop(text_key, None), rec.pop(id_key, None), rec.pop(ts_key, None)
        if type(text) is str:
            if rid is None:
                rid = content_hash(text)
            elif type(rid) is int:
                rid = str(rid)
            if type(rid) is str:
                if ts is None:
                    ts_us = default_ts_us
                elif type(ts) is str:
                    ts_us = ts_cache.get(ts)
                    if ts_us is None:
                        ts_us = ts_micros(ts)  # microseconds, or the reject reason
                else:
                    ts_us = None
                if type(ts_us) is int:
                    floats = 0  # _float_kind(rec), without the call for the usual flat string values
                    for v in rec.values():
                        if type(v) in _FLOAT_OR_CONTAINER:
                            floats = _float_kind(rec)
                            break
                    if floats < 2:
                        add_number(n)
                        add_id(rid)
                        add_text(text)
                        add_ts(ts_us)
                        add_metadata(
                            "{}" if not rec else dumps(rec).decode() if floats == 0 else _metadata_json(rec, True)
                        )
                        continue
        # Anything else (a reject, null text, a big integer...): the general path, on the line
        # decoded again since rec has lost its contract fields.
        _record_orjson(n, _without_cr(bline), loads(bline), b)


def _without_cr(bline: bytes) -> bytes:
    """The line without the ``\\r`` of a ``\\r\\n`` terminator."""
    return bline[:-1] if bline.endswith(b"\r") else bline


def _record_orjson(n: int, bline: bytes, rec: dict[str, Any], b: _Builder) -> None:
    """One line orjson decoded to the object ``rec``: ``_Builder.record``, or the standard library
    decoder when orjson may have turned an integer beyond 64 bits into a float."""
    floats = _float_kind(rec)
    if floats < 2:
        b.record(n, rec, lambda: bline.decode("utf-8"), unicode_checked=True, orjson_meta=floats == 0)
    else:
        _parse_json_line(n, bline, b)


def _float_kind(obj: Any, depth: int = 0) -> int:
    """0: no float in ``obj``; 1: floats; 2: a float orjson may have made from a >64-bit integer."""
    kind = 0
    for v in obj.values() if type(obj) is dict else obj:
        t = type(v)
        if t is float:
            if not -_BIG_FLOAT < v < _BIG_FLOAT:
                return 2
            kind = 1
        elif t is dict or t is list:
            if depth > 200:
                return 2
            k = _float_kind(v, depth + 1)
            if k == 2:
                return 2
            kind |= k
    return kind


def _parse_json_line(n: int, bline: bytes, b: _Builder) -> None:
    """The standard-library path for one line: exact reject reasons, invalid UTF-8 handling."""
    bad_utf8 = None
    try:
        line = bline.decode("utf-8")
    except UnicodeDecodeError as e:
        bad_utf8 = e.start
        line = bline.decode("utf-8", "replace")  # never store the bad bytes themselves
    if not line.strip(" \t\r\f\v"):
        b.reject(n, line, "blank line")
        return
    error = None
    try:
        obj = json.loads(line, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        at = "" if e.msg.endswith(" at") else " at"  # "Unterminated string starting at"
        error = f"invalid JSON: {e.msg}{at} column {e.colno}"
    except _InvalidConstant as e:
        error = f"invalid JSON: {e}"
    except RecursionError:
        error = "invalid JSON: nested too deeply"
    else:
        if not isinstance(obj, dict):
            error = f"JSON value is {_JSON_TYPE.get(type(obj), type(obj).__name__)}, expected an object"
    if error is not None:
        if bad_utf8 is not None:  # the bad bytes are the first cause
            error = f"invalid UTF-8 at byte {bad_utf8} ({error} after U+FFFD replacement)"
        b.reject(n, line, error)
        return
    # A record with replaced bytes becomes a row: the gate's valid_utf8 rule quarantines it.
    b.record(n, obj, line)


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
