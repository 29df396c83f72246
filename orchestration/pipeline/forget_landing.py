"""Step 4 of a deletion request (``orchestration.pipeline.forget``) for the landing folder and its archive:
rewrite each affected window's file without the deleted records, atomically and with its mtime kept (the
landing sensor must not see a new file). A window's file is looked up in ``landing/`` (a re-delivery under
the same name included) and in ``archive/landing/`` (``landing_retention = "archive"``); an accepted symbolic
link (``landing_symlinks = "inside"``) is scrubbed through its target."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import polars as pl

from orchestration.config.settings import Settings
from orchestration.store.erasure import Criterion
from orchestration.store.warehouse import Warehouse


def scrub_landing(
    settings: Settings, wh: Warehouse, rows: pl.DataFrame, criteria: list[Criterion], window_keys: list[str]
) -> list[str]:
    """Rewrite each affected window's landing file, in ``landing/`` and ``archive/landing/``, without the
    deleted records (atomically, mtime kept).

    JSON Lines: each deleted record's line becomes a blank line, so a re-ingest numbers the other rows as
    before (the blank line is a ``raw.rejects`` row "blank line"). Parquet/CSV: the rows are dropped (a
    re-ingest renumbers the rows after them). Other formats are left alone.

    Args:
        rows: the deleted rows (window_key, row_number, record_id).
        window_keys: the affected windows; the files of a whole-window request (a ``window_key``
            criterion) are removed.

    Returns: ``"<file>: -N records"`` / ``"<file>: removed (whole window)"`` lines (one per copy: landing and
        archive).
    """
    if not window_keys:
        return []
    files = wh.window_files(window_keys)
    whole = {c.value for c in criteria if c.column == "window_key"}
    done = []
    for key in window_keys:
        for path in _window_paths(settings, files.get(key, "")):
            if key in whole:
                path.unlink()
                done.append(f"{path.name}: removed (whole window)")
                continue
            line = _scrub_file(settings, path, rows.filter(pl.col("window_key") == key), criteria)
            done += [line] if line else []
    return done


def _window_paths(settings: Settings, name: str) -> list[Path]:
    """The regular files holding window file ``name``: ``landing/name`` and ``archive/landing/name`` where they
    exist (an accepted symbolic link: its target, when that is inside the landing folder)."""
    if not name or name != Path(name).name:
        return []
    found = []
    for folder in (settings.paths.landing, settings.paths.landing_archive):
        path = folder / name
        if path.is_symlink():
            target = Path(os.path.realpath(path))
            if target.is_relative_to(os.path.realpath(settings.paths.landing)) and target.is_file():
                found.append(target)
        elif path.is_file():
            found.append(path)
    return found


def _scrub_file(settings: Settings, path: Path, rows: pl.DataFrame, criteria: list[Criterion]) -> str:
    """Rewrite ``path`` without the records of ``rows`` (window_key, row_number, record_id) or matching
    ``criteria``; returns ``"<file>: -N records"``, or "" when none matched (or the format is not rewritable)."""
    ids = set(rows["record_id"].to_list())
    stat = path.stat()
    tmp = settings.home / "forget" / f".{path.name}.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    matches = functools.partial(_record_matches, ids=ids, criteria=criteria, settings=settings)
    if name.endswith((".jsonl", ".ndjson", ".jsonl.gz")):
        removed = _rewrite_jsonl(path, tmp, matches)
    elif name.endswith((".parquet", ".csv")):
        removed = _rewrite_table(path, tmp, matches)
    else:
        return ""
    if not removed:
        tmp.unlink(missing_ok=True)
        return ""
    os.replace(tmp, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the landing sensor must not see a new file
    return f"{path.name}: -{removed} records"


def _rewrite_jsonl(path: Path, tmp: Path, matches: Callable[[dict], bool]) -> int:
    """Copy JSON Lines ``path`` (gzip if ``.gz``) to ``tmp`` with each matching record's line blanked;
    returns the number blanked."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    removed = 0
    with opener(path, "rb") as src, opener(tmp, "wb") as dst:
        for line in src:
            rec = None
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                rec = json.loads(line)
            if isinstance(rec, dict) and matches(rec):
                removed += 1  # a blank line keeps every other record's row_number on re-ingest
                dst.write(b"\n")
                continue
            dst.write(line)
    return removed


def _rewrite_table(path: Path, tmp: Path, matches: Callable[[dict], bool]) -> int:
    """Write Parquet/CSV ``path`` to ``tmp`` without the matching rows (CSV read as strings); returns
    the number dropped."""
    parquet = path.name.lower().endswith(".parquet")
    df = pl.read_parquet(path) if parquet else pl.read_csv(path, infer_schema=False)
    keep = [not matches(r) for r in df.iter_rows(named=True)]
    kept = df.filter(pl.Series(keep, dtype=pl.Boolean))
    kept.write_parquet(tmp) if parquet else kept.write_csv(tmp)
    return len(keep) - sum(keep)


def _record_id(rec: dict, settings: Settings) -> str | None:
    """The record id ingest gives ``rec``: its id field, else the first 32 hex digits of the SHA-256 of its text."""
    rid = rec.get(settings.id_field)
    if rid is not None and not isinstance(rid, (dict, list)):
        return str(rid)
    text = rec.get(settings.text_field)
    if isinstance(text, str):
        return hashlib.sha256(text.encode()).hexdigest()[:32]
    return None


def _record_matches(rec: dict, ids: set[str], criteria: list[Criterion], settings: Settings) -> bool:
    if _record_id(rec, settings) in ids:
        return True
    for c in criteria:
        if c.column == "window_key":
            continue
        v = rec.get(c.key if c.column != "record_id" else settings.id_field)
        if v is not None and not isinstance(v, (dict, list)) and str(v) == c.value:
            return True
    return False
