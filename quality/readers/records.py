"""The record contract of the readers: ``RecordFields``, the column-wise ``_Builder`` of rows and rejects,
default record ids, timestamps and metadata JSON (see ``quality.readers``)."""

import binascii
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import polars as pl

from quality.schema import RAW_SCHEMA, REJECT_SCHEMA

_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TS_CACHE_MAX = 65536
_META_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


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


def content_hash(value: str) -> str:
    """Default record id: sha256 of the UTF-8 bytes of ``value``, first 32 hex characters."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


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

    def _add(self, row_number: int, rec: dict[str, Any], raw, unicode_checked: bool, orjson_meta: bool) -> str | None:
        """``record``'s work: the reject error, or None once the record is appended as a row."""
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
        ts = pl.Series("ts", self.ts, dtype=pl.Int64).cast(RAW_SCHEMA["ts"])
        return self._frame(
            RAW_SCHEMA, self.row_numbers, record_id=self.ids, text=self.texts, ts=ts, metadata=self.metadata
        )

    def rejects(self) -> pl.DataFrame:
        return self._frame(REJECT_SCHEMA, self.reject_numbers, raw=self.reject_raw, error=self.reject_errors)

    def _frame(self, schema: dict, row_numbers: list[int], **columns: Any) -> pl.DataFrame:
        """``window_key`` and ``row_number`` columns, then ``columns``, as a frame of ``schema``."""
        window_key = pl.repeat(self.window_key, len(row_numbers), dtype=pl.String, eager=True)
        return pl.DataFrame({"window_key": window_key, "row_number": row_numbers, **columns}, schema=schema)


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
