"""JSON Lines: orjson fast path for the common record, the standard library decoder for exact reject reasons."""

import json
from typing import Any

import orjson

from quality.readers.records import _BOM, _Builder, _metadata_json, content_hash

_BIG_FLOAT = 9.2e18  # orjson reads integers beyond 64 bits as floats of at least this size: use json there
_FLOAT_OR_CONTAINER = frozenset((float, dict, list))
_JSON_TYPE = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


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
