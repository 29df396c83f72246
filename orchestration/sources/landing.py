"""The landing zone: a folder where closed window files appear.

No Dagster imports. A producer writes a window under a temporary name and
renames it when complete (``streamtune replay`` does exactly that), so a file
with a supported suffix (``quality.readers.SUPPORTED_SUFFIXES``: the formats the
reader parses) and no temporary marker is *closed*: one closed file is one window.

Only regular files are windows. A symbolic link is refused (reported, never read) unless the
``landing_symlinks = "inside"`` setting is on and its target resolves to a regular file inside the
landing folder; FIFOs, sockets and directories are refused too. Every entry is ordered by its own
``lstat`` (``(mtime_ns, name)``), never by a link's target.

A closed file is handed out only once it has settled (``LandingScanner``): its size and mtime were
the same at two sensor ticks, or it was last modified at least ``settle_s`` seconds ago, so a file
written in place is not read half-written. The landing sensor's cursor is the last pair it handed out
plus the files still settling, so it only ever moves forward. A file that appears with an older
mtime than the cursor (e.g. copied with ``cp -p``) and whose window is new is handed out too, with a
warning (it sorts before windows landed earlier). A file whose window was already handed out and that
changes again (rewritten, grown or shrunk in place, re-landed under the same name) is reported, not
re-ingested.

After a window is curated its file leaves the landing folder (``retire_landed_file``: moved to the
archive, deleted or kept, by ``landing_retention``); ``resolve_window_file`` looks in the archive
too, so a retry or re-materialization still finds it, for ``landing_archive_days`` after it was archived
(``prune_archive`` deletes older ones at each landing-sensor tick).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from quality.readers import SUPPORTED_SUFFIXES

_TEMP_MARKERS = (".tmp", ".part", ".partial", ".inprogress")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

SymlinkPolicy = Literal["refuse", "inside"]
"""``landing_symlinks``: "refuse" every symbolic link, or accept one whose target is a regular file inside
the landing folder ("inside")."""
RetentionPolicy = Literal["archive", "delete", "keep"]
"""``landing_retention``: what happens to a window's landing file once the window is curated."""
SETTLE_S = 60.0
"""A file last modified at least this many seconds ago is settled at first sight (see ``LandingScanner``)."""


class RefusedEntry(ValueError):
    """A landing entry that is not read: a symbolic link (outside the setting), FIFO, socket or directory."""


@dataclass(frozen=True, order=True)
class LandedFile:
    """A closed window file, ordered by (mtime_ns, name) of the entry itself (``lstat``)."""

    mtime_ns: int
    name: str
    stamp: tuple[int, int] = field(default=(0, 0), compare=False)
    """(size, mtime_ns) of the bytes a reader gets (a link's target): it must hold still before ingest."""

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
        if data.get("name") is None:
            return None  # a LandingScanner cursor before the first file was handed out
        return LandedFile(int(data["mtime_ns"]), str(data["name"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
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


def check_entry(path: Path, symlinks: SymlinkPolicy = "refuse") -> os.stat_result:
    """The ``stat`` of the bytes a reader of landing entry ``path`` would get, if it may be read.

    Args:
        symlinks: "refuse" every symbolic link; "inside": accept one whose target resolves to a regular file
            inside ``path``'s folder (the landing folder, subfolders included).

    Raises:
        RefusedEntry: a symbolic link (outside the setting), FIFO, socket, device or directory; one line
            naming the entry and what to do.
        FileNotFoundError: ``path`` does not exist.
    """
    st = path.lstat()
    if stat.S_ISREG(st.st_mode):
        return st
    if not stat.S_ISLNK(st.st_mode):
        raise RefusedEntry(f"landing entry {path.name!r} is not a regular file: refused (land a plain file)")
    target = Path(os.path.realpath(path))
    if symlinks != "inside":
        raise RefusedEntry(
            f"landing entry {path.name!r} is a symbolic link (to {target}): refused; land the file itself "
            '(write, then rename), or set landing_symlinks = "inside" for links that stay in the landing folder'
        )
    root = Path(os.path.realpath(path.parent))
    if not target.is_relative_to(root) or not target.is_file():
        raise RefusedEntry(
            f"landing entry {path.name!r} is a symbolic link to {target}, which is not a regular file inside "
            f'{root}: refused (landing_symlinks = "inside" accepts only those)'
        )
    return target.stat()


def scan_landing(landing: Path, symlinks: SymlinkPolicy = "refuse") -> tuple[list[LandedFile], dict[str, str]]:
    """Every closed window file in ``landing`` (oldest first) and the refused entries with window-file names.

    Returns:
        ``(files, refused)``: ``refused`` maps an entry name to the one-line reason (``RefusedEntry``).
    """
    if not landing.is_dir():
        return [], {}
    found: list[LandedFile] = []
    refused: dict[str, str] = {}
    with os.scandir(landing) as it:
        for entry in it:
            if not is_window_file(entry.name):
                continue
            try:
                own = entry.stat(follow_symlinks=False)
                content = check_entry(Path(entry.path), symlinks)
            except RefusedEntry as exc:
                refused[entry.name] = str(exc)
                continue
            except FileNotFoundError:
                continue  # renamed or removed while listing
            found.append(LandedFile(own.st_mtime_ns, entry.name, (content.st_size, content.st_mtime_ns)))
    return sorted(found), refused


def closed_files_after(
    landing: Path, cursor: LandedFile | None, symlinks: SymlinkPolicy = "refuse"
) -> list[LandedFile]:
    """Closed window files in ``landing`` strictly after ``cursor``, oldest first (refused entries left out;
    ``scan_landing``)."""
    files, _ = scan_landing(landing, symlinks)
    return [f for f in files if cursor is None or f > cursor]


def resolve_window_file(
    landing: Path,
    window_key: str,
    hint: str | None = None,
    *,
    archive: Path | None = None,
    symlinks: SymlinkPolicy = "refuse",
) -> Path:
    """Find the file of a window key: in ``landing`` first (a re-delivery), then in ``archive``.

    Args:
        hint: the file name recorded by the sensor in the run tags, if any.
        archive: where ``retire_landed_file`` moves curated windows' files (None: landing only).

    Raises:
        FileNotFoundError: no file in ``landing`` (or ``archive``) maps to the key.
        RefusedEntry: the window's entry may not be read (``check_entry``).
    """
    folders = [landing] + ([archive] if archive is not None else [])
    for folder in folders:
        names = [hint] if hint and hint == Path(hint).name and hint not in (".", "..") else []
        if folder.is_dir():
            with os.scandir(folder) as it:
                names += sorted(e.name for e in it if is_window_file(e.name) and window_key == window_key_for(e.name))
        for name in names:
            path = folder / name
            if os.path.lexists(path):
                check_entry(path, symlinks)
                return path
    where = " or ".join(str(f) for f in folders)
    raise FileNotFoundError(f"no file in {where} belongs to window {window_key!r}")


@dataclass
class LandingTick:
    """What one landing-sensor tick found (``LandingScanner.tick``)."""

    ready: list[LandedFile]
    """Settled closed files to hand out (one ingest run each), oldest first."""
    settling: list[str]
    """Closed files still changing (or seen once, freshly modified): handed out once they hold still."""
    reports: list[str]
    """One line per entry newly refused, changed after its window was handed out, or landed too old."""
    cursor: str
    """The sensor's next cursor (JSON)."""


@dataclass
class LandingScanner:
    """The landing sensor's state between ticks, kept in its cursor (JSON).

    ``last``: the last file handed out (``LandedFile.cursor`` keys ``mtime_ns`` / ``name``); ``settling``:
    name -> ``[size, mtime_ns]`` of closed files seen but not yet settled; ``reported``: name -> what was
    reported about it (each problem is reported once, again only when the entry changes).
    """

    last: LandedFile | None = None
    settling: dict[str, list[int]] = field(default_factory=dict)
    reported: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, cursor: str | None) -> LandingScanner:
        """The state in ``cursor`` (None: a fresh sensor; a pre-settling cursor keeps its position).

        Raises:
            ValueError: the cursor is not one this module wrote.
        """
        last = parse_cursor(cursor)
        data = json.loads(cursor) if cursor else {}
        settling = {str(k): [int(x) for x in v] for k, v in dict(data.get("settling", {})).items()}
        return cls(last, settling, {str(k): str(v) for k, v in dict(data.get("reported", {})).items()})

    def dump(self) -> str:
        last = {"mtime_ns": self.last.mtime_ns, "name": self.last.name} if self.last else {"mtime_ns": None}
        return json.dumps({**last, "settling": self.settling, "reported": self.reported})

    def tick(
        self,
        landing: Path,
        known_keys: set[str],
        symlinks: SymlinkPolicy = "refuse",
        settle_s: float = SETTLE_S,
        now_ns: int | None = None,
    ) -> LandingTick:
        """Scan ``landing`` once and update the state in place.

        A closed file whose window key is not in ``known_keys`` (or that is after the cursor) is *settled* when
        its ``(size, mtime_ns)`` equals the one recorded at the previous tick, or it was last modified at least
        ``settle_s`` seconds before ``now_ns``; else it is recorded and waits a tick. A settled file is handed
        out (``ready``) unless its key is already a partition: then it changed after its window was handed
        out, and is reported instead, never handed out again. One before the cursor is handed out with a
        report (landed with an old mtime).

        Args:
            known_keys: window keys that already have a partition.
            now_ns: the clock (``time.time_ns()`` when None).
        """
        now_ns = time.time_ns() if now_ns is None else now_ns
        files, refused = scan_landing(landing, symlinks)
        reports: list[str] = [msg for name, msg in refused.items() if self._report_once(name, msg)]
        ready: list[LandedFile] = []
        settling: dict[str, list[int]] = {}
        for f in files:
            key, seen = window_key_for(f.name), self.settling.get(f.name)
            late = self.last is not None and f <= self.last
            if late and seen is None and key in known_keys:
                continue  # handed out before (or rewritten by `forget`, mtime kept)
            if seen != list(f.stamp) and now_ns - f.stamp[1] < settle_s * 1e9:
                settling[f.name] = list(f.stamp)  # first sight of a fresh file, or it moved since the last tick
                continue
            msg = ""
            if key in known_keys:
                msg = (
                    f"landing file {f.name!r} changed after window {key!r} was handed out (size {f.stamp[0]} "
                    "bytes): not re-ingested; land new data under a new name, or re-materialize the partition"
                )
            elif late:
                msg = (
                    f"landing file {f.name!r} has an mtime older than the last file handed out ({self.last.name!r}, "
                    "e.g. copied with `cp -p`): ingested anyway, but it sorts before the windows landed earlier"
                )
            if msg and self._report_once(f.name, msg):
                reports.append(msg)
            self.last = max(self.last, f) if self.last else f
            if key not in known_keys:
                ready.append(f)
        present = {f.name for f in files} | set(refused)
        self.settling = settling
        self.reported = {k: v for k, v in self.reported.items() if k in present}
        return LandingTick(ready, sorted(settling), reports, self.dump())

    def _report_once(self, name: str, message: str) -> bool:
        """True when ``message`` about ``name`` was not reported yet (and records it)."""
        if self.reported.get(name) == message:
            return False
        self.reported[name] = message
        return True


def retire_landed_file(landing: Path, archive: Path, name: str, retention: RetentionPolicy) -> str:
    """Apply ``retention`` to a curated window's landing file ``landing/name``; returns one line saying what
    happened.

    "archive": moved to ``archive/name`` atomically, mtime kept (a re-ingest gives identical rows; an
    accepted symbolic link is replaced by a copy of its target, which stays where it is); "delete": removed
    (a link: the link only); "keep": left in place. A file already gone is left alone.
    """
    src = landing / name
    if retention == "keep":
        return f"kept in {landing}"
    if not os.path.lexists(src):
        return f"{name} not in {landing} (already archived or removed)"
    if retention == "delete":
        src.unlink()
        return f"deleted {name} from {landing}"
    archive.mkdir(parents=True, exist_ok=True)
    dst = archive / name
    if src.is_symlink() or not _rename(src, dst):
        tmp = archive / f".{name}.tmp"
        shutil.copyfile(src, tmp)  # follows an accepted link: the archive holds the bytes that were ingested
        mtime = src.lstat().st_mtime_ns
        os.utime(tmp, ns=(mtime, mtime))
        os.replace(tmp, dst)
        src.unlink()
    return f"archived {name} to {archive}"


def prune_archive(archive: Path, max_age_days: float, now: float | None = None) -> list[str]:
    """Delete the archived landing files (``archive/landing/``) that were archived more than ``max_age_days``
    days before ``now``.

    The archive time is the file's ``st_ctime`` (set when ``retire_landed_file`` moved or copied it there; a
    user cannot set it back), or its mtime, the landing time it keeps, when that is later. So a file landed
    with an old mtime (``cp -p``) still stays ``max_age_days`` in the archive. Only regular files with
    window-file names are looked at (a symbolic link or anything else is left alone). Afterwards a
    re-materialization of such a window no longer finds its file; its rows stay in the warehouse.

    Args:
        max_age_days: ``landing_archive_days``; 0 = no age limit (nothing deleted).
        now: the clock in epoch seconds (``time.time()`` when None).

    Returns:
        The names deleted, sorted.

    Raises:
        ValueError: ``max_age_days`` is negative.
    """
    if max_age_days < 0:
        raise ValueError(f"landing_archive_days must be >= 0 (0 = no age limit), got {max_age_days}")
    if max_age_days == 0 or not archive.is_dir():
        return []
    cutoff_ns = int(((time.time() if now is None else now) - max_age_days * 86400.0) * 1e9)
    removed = []
    with os.scandir(archive) as it:
        for entry in it:
            if not is_window_file(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            if max(st.st_ctime_ns, st.st_mtime_ns) < cutoff_ns:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return sorted(removed)


def _rename(src: Path, dst: Path) -> bool:
    """``os.replace``; False when ``src`` and ``dst`` are on different file systems."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        return False
    return True


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
