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

import hashlib
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from quality.readers.jsonl import _parse_jsonl
from quality.readers.records import RecordFields, WindowReadError, _Builder, content_hash
from quality.readers.tabular import _parse_csv, _parse_parquet

__all__ = ["SUPPORTED_SUFFIXES", "ParsedWindow", "RecordFields", "WindowReadError", "content_hash", "read_window_file"]

SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".parquet", ".csv")
_GZIP_CHUNK = 1 << 16
DEFAULT_FIELDS = RecordFields()
"""The contract's field names (``text``, ``id``, ``ts``); frozen, so one shared instance."""


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
    fields: RecordFields = DEFAULT_FIELDS,
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

        Rejected records (``error`` text): JSON Lines: ``"blank line"``, ``"invalid UTF-8 at byte N"`` (0-based
        offset in the line; only when the line does not parse as a record once the bad bytes are replaced by
        U+FFFD, else it is a row for the ``valid_utf8`` rule), ``"invalid JSON: <msg> at column N"``, ``"JSON
        value is an array, expected an object"``; CSV: ``"blank row"``, ``"row has 3 fields, header has 2"``;
        Parquet: ``"column 'text' has type Int64, expected string"``; all formats: ``"field 'text' has type int,
        expected string"``, ``"field 'id' has type float, expected string or integer"``, ``"field 'ts' is not an
        ISO-8601 timestamp: '...'"``, ``"field 'ts' is out of range in UTC: '...'"``, ``"field 'text' is not
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
