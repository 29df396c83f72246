"""Landing a window of records: one JSONL file, written atomically, never overwritten."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path


def check_window_cut(section: str, window_count: int, window_seconds: float) -> None:
    """``ValueError`` unless a source section cuts windows by count and/or by seconds (both >= 0, one > 0)."""
    if window_count < 0 or window_seconds < 0 or (window_count == 0 and window_seconds == 0):
        raise ValueError(f"[{section}] needs window_count > 0 and/or window_seconds > 0")


def check_known_keys(cls: type, section: str, d: dict) -> None:
    """``ValueError`` naming the keys of a ``[section]`` table that are no fields of the dataclass ``cls``."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"[{section}]: unknown keys {unknown}; known: {sorted(names)}")


def land_records(landing: Path, name: str, records: Sequence[dict]) -> tuple[Path, bool]:
    """Write ``records`` as ``landing/name`` (JSON lines) atomically; ``(path, created)``.

    The file is written as ``.<name>.tmp``, fsynced, given a fresh mtime (so the landing sensor, which
    orders by mtime, sees it after everything landed before) and hard-linked to its name (atomic, no
    overwrite); the folder is fsynced so the link survives a power cut. If ``name`` already exists (a
    re-delivered window) it is left as it is and ``created`` is False: window names are deterministic,
    so the content is the same.
    """
    landing.mkdir(parents=True, exist_ok=True)
    dst = landing / name
    if dst.exists():
        return dst, False
    tmp = landing / f".{name}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    now = time.time_ns()
    os.utime(tmp, ns=(now, now))
    try:
        os.link(tmp, dst)  # atomic and never overwrites: a concurrent twin of this window loses the race
    except FileExistsError:
        return dst, False
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(landing, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return dst, True
