"""The landing zone: a folder where closed window files appear.

No Dagster imports. A producer writes a window under a temporary name and
renames it when complete (``streamtune replay`` does exactly that), so a file
with a supported suffix (``quality.readers.SUPPORTED_SUFFIXES``: the formats the
reader parses) and no temporary marker is *closed*: one closed file is one window.

Files are ordered by ``(mtime_ns, name)``; the landing sensor's cursor is the
last pair it handed out, so it only ever moves forward. A file that appears
with an older mtime than the cursor (e.g. copied with ``cp -p``) is not picked
up: touch it, or land it through ``streamtune replay``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from quality.readers import SUPPORTED_SUFFIXES

_TEMP_MARKERS = (".tmp", ".part", ".partial", ".inprogress")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, order=True)
class LandedFile:
    """A closed window file, ordered by (mtime_ns, name)."""

    mtime_ns: int
    name: str

    def cursor(self) -> str:
        return json.dumps({"mtime_ns": self.mtime_ns, "name": self.name})


def parse_cursor(cursor: str | None) -> LandedFile | None:
    """Read a landing-sensor cursor; None when there is none yet.

    Raises:
        ValueError: the cursor is not one this module wrote.
    """
    if not cursor:
        return None
    try:
        data = json.loads(cursor)
        return LandedFile(int(data["mtime_ns"]), str(data["name"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable landing cursor {cursor!r}") from exc


def is_window_file(name: str) -> bool:
    """True for a closed window file name (supported suffix, not hidden, no temp marker)."""
    lower = name.lower()
    if name.startswith(".") or any(lower.endswith(m) for m in _TEMP_MARKERS):
        return False
    return lower.endswith(SUPPORTED_SUFFIXES)


def window_key_for(name: str) -> str:
    """Stable, SQL- and URL-safe partition key for a window file name (injective).

    ``<stem>.jsonl`` names made only of ``[A-Za-z0-9._-]`` keep their stem
    (``pypi-2024-09.jsonl`` -> ``pypi-2024-09``); other safe names keep their full
    name (``a.csv`` -> ``a.csv``), so ``a.jsonl`` and ``a.csv`` stay distinct. Any
    other name is sanitized and gets 8 hex digits of the name's SHA-1, so
    different unsafe names do not collide. Keys are at most 100 characters.
    """
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else name
    if stem != name and stem.lower().endswith(SUPPORTED_SUFFIXES):
        stem = name  # "a.csv.jsonl" must not become "a.csv"
    safe = _SAFE.sub("_", stem).strip("._-")[:80]
    if safe == stem and safe and len(stem) <= 80:
        return safe
    digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{safe or 'window'}-{digest}"


def closed_files_after(landing: Path, cursor: LandedFile | None) -> list[LandedFile]:
    """Closed window files in ``landing`` strictly after ``cursor``, oldest first."""
    if not landing.is_dir():
        return []
    found: list[LandedFile] = []
    with os.scandir(landing) as it:
        for entry in it:
            if not entry.is_file() or not is_window_file(entry.name):
                continue
            f = LandedFile(entry.stat().st_mtime_ns, entry.name)
            if cursor is None or f > cursor:
                found.append(f)
    return sorted(found)


def resolve_window_file(landing: Path, window_key: str, hint: str | None = None) -> Path:
    """Find the landing file of a window key.

    Args:
        hint: the file name recorded by the sensor in the run tags, if any.

    Raises:
        FileNotFoundError: no file in ``landing`` maps to the key.
    """
    if hint:
        path = landing / hint
        if path.is_file():
            return path
    for f in closed_files_after(landing, None):
        if window_key == window_key_for(f.name):
            return landing / f.name
    raise FileNotFoundError(f"no file in {landing} belongs to window {window_key!r}")


def land_file(src: Path, landing: Path) -> Path:
    """Copy ``src`` into ``landing`` atomically: write ``.<name>.tmp``, fsync, rename.

    The file gets a fresh mtime before it becomes visible, so it sorts after
    everything landed before and is never seen with two different mtimes.
    """
    landing.mkdir(parents=True, exist_ok=True)
    tmp = landing / f".{src.name}.tmp"
    dst = landing / src.name
    shutil.copyfile(src, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    now = time.time_ns()
    os.utime(tmp, ns=(now, now))  # before the rename: a visible file's mtime never changes
    os.replace(tmp, dst)
    return dst


def window_files_in_order(source: Path) -> list[Path]:
    """Window files of a source directory in time order (sorted by name, which for
    ``<stream>-YYYY-MM`` style names is time order)."""
    return sorted((p for p in source.iterdir() if p.is_file() and is_window_file(p.name)), key=lambda p: p.name)


def replay(source: Path, landing: Path, interval_s: float = 0.0, names: Iterable[str] | None = None) -> list[Path]:
    """Land every window file of ``source`` in order, ``interval_s`` seconds apart.

    Raises:
        FileNotFoundError: ``source`` is not a directory or holds no window files.
    """
    if not source.is_dir():
        raise FileNotFoundError(f"replay source {source} is not a directory")
    files = window_files_in_order(source)
    if names is not None:
        wanted = set(names)
        files = [f for f in files if f.name in wanted]
    if not files:
        raise FileNotFoundError(f"no window files ({', '.join(SUPPORTED_SUFFIXES)}) in {source}")
    landed = []
    for i, f in enumerate(files):
        if i and interval_s > 0:
            time.sleep(interval_s)
        landed.append(land_file(f, landing))
    return landed
