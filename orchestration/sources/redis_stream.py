"""Redis Streams source: a consumer group's entries become windows by count or by time.

No Dagster imports (``orchestration.source_sensors`` wraps ``RedisStreamSource.poll`` in a sensor).

One ``poll``:

1. ``XGROUP CREATE ... MKSTREAM`` once (``start_id``: "0" = the whole stream, "$" = only new entries).
2. ``XAUTOCLAIM`` entries another consumer of the group read but never acknowledged for
   ``claim_idle_ms`` (a crashed worker): they become this consumer's.
3. Read this consumer's pending entries (``XREADGROUP ... 0``: delivered before, not yet acknowledged;
   after a crash these are exactly the uncommitted ones), then new entries (``XREADGROUP ... >``).
4. Cut the entries, in id order, into windows: a window closes after ``window_count`` entries, or when
   it spans ``window_seconds`` of entry-id time (an entry beyond it exists, or the Redis server clock,
   read before the new entries, has passed its end). The open tail stays pending for the next poll.
5. Land each closed window as ``redis-<stream>-<first id>-<last id>.jsonl`` (``sources.base.land_records``:
   atomic, never overwritten), then ``XACK`` its entries.

A crash anywhere before the XACK leaves the entries pending, so the next poll re-reads them. If the
crash came after the landing, a landed file of this stream covers the first pending entry: its entries
are acknowledged without landing anything (even if some were deleted from the stream meanwhile);
otherwise the same entries are cut into the same window from the same first id. Either way the window
reaches the landing folder, and through the ``landing_sensor`` (run key = window key) DuckDB, exactly once.

Record shape: the entry's fields (decoded as UTF-8) are the record, or, with ``payload_field`` set,
the JSON object in that field; ``stream_id`` (the entry id) is added unless present.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestration.sources.base import check_known_keys, check_window_cut, land_records

_SAFE = re.compile(r"[^A-Za-z0-9_]+")


def parse_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id ``"<ms>-<seq>"`` as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def max_id(a: str | None, b: str | None) -> str | None:
    """The later of two entry ids (None counts as earliest): a cursor built with it only moves forward."""
    if not a:
        return b
    if not b:
        return a
    return a if parse_id(a) >= parse_id(b) else b


@dataclass(frozen=True)
class RedisStreamConfig:
    """``[sources.redis]`` in ``streamtune.toml``."""

    url: str
    """``redis://host:port/db`` (``rediss://`` for TLS); credentials may come from the URL."""
    stream: str
    """Stream key."""
    group: str = "streamtune"
    """Consumer group (created on first use)."""
    consumer: str = "streamtune"
    """This consumer's name in the group (one sensor = one consumer)."""
    window_count: int = 1000
    """Entries per window (0 = by time only)."""
    window_seconds: float = 0.0
    """Window span in entry-id time (0 = by count only); with both set, whichever closes first."""
    payload_field: str = ""
    """"" = the entry's fields are the record; else the field holding the record as a JSON object."""
    start_id: str = "0"
    """Where a newly created group starts: "0" = every entry in the stream, "$" = only new ones."""
    claim_idle_ms: int = 60_000
    """Pending entries of other consumers idle this long are claimed (their reader crashed)."""
    max_entries: int = 10_000
    """Most new entries read per poll."""
    interval_s: int = 5
    """Minimum seconds between sensor ticks."""

    def __post_init__(self) -> None:
        if not self.url or not self.stream:
            raise ValueError("[sources.redis] needs `url` and `stream`")
        check_window_cut("sources.redis", self.window_count, self.window_seconds)
        if self.max_entries < 1:
            raise ValueError("[sources.redis] max_entries must be >= 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RedisStreamConfig:
        check_known_keys(cls, "sources.redis", d)
        return cls(**d)


@dataclass(frozen=True)
class Entry:
    id: str
    fields: dict[str, str]

    @property
    def ms(self) -> int:
        return parse_id(self.id)[0]


@dataclass
class PollResult:
    """What one poll did."""

    landed: list[Path] = field(default_factory=list)
    """Window files landed by this poll (new files only)."""
    windows: list[str] = field(default_factory=list)
    """Names of every window committed (acknowledged) by this poll, re-delivered ones included."""
    acked: int = 0
    """Entries acknowledged."""
    last_acked_id: str | None = None
    """Id of the last entry acknowledged (None if none)."""
    open_entries: int = 0
    """Entries read but waiting in the open (not yet closed) window."""


def cut_windows(
    entries: list[Entry], window_count: int, window_seconds: float, now_ms: int | None, complete: bool = True
) -> tuple[list[list[Entry]], list[Entry]]:
    """Cut entries (id order) into closed windows and the open tail.

    A window starts at its first entry's id time ``s`` and holds entries with id time < ``s + window_seconds``
    (if set) and at most ``window_count`` entries (if set). The tail closes by time only if ``complete``
    (every entry up to ``now_ms`` was read) and ``now_ms`` (server clock) >= ``s + window_seconds``.
    """
    span = int(window_seconds * 1000)
    windows: list[list[Entry]] = []
    cur: list[Entry] = []
    for e in entries:
        if cur and span and e.ms >= cur[0].ms + span:
            windows.append(cur)
            cur = []
        cur.append(e)
        if window_count and len(cur) >= window_count:
            windows.append(cur)
            cur = []
    if cur and span and complete and now_ms is not None and now_ms >= cur[0].ms + span:
        windows.append(cur)
        cur = []
    return windows, cur


class RedisStreamSource:
    """Reads one stream through a consumer group and lands windows (see the module docstring)."""

    def __init__(self, config: RedisStreamConfig, client=None) -> None:
        import redis

        self.config = config
        self.client = client or redis.Redis.from_url(config.url, decode_responses=True)

    @property
    def prefix(self) -> str:
        return f"redis-{_SAFE.sub('_', self.config.stream).strip('_')[:24] or 'stream'}-"

    def window_name(self, window: list[Entry]) -> str:
        return f"{self.prefix}{window[0].id}-{window[-1].id}.jsonl"

    def landed_window_covering(self, landing: Path, entry_id: str) -> tuple[str, str] | None:
        """``(file name, last entry id)`` of an already landed window whose id range holds ``entry_id``."""
        if not landing.is_dir():
            return None
        pattern = re.compile(re.escape(self.prefix) + r"(\d+-\d+)-(\d+-\d+)\.jsonl")
        key = parse_id(entry_id)
        for path in landing.glob(f"{self.prefix}*.jsonl"):
            m = pattern.fullmatch(path.name)
            if m and parse_id(m.group(1)) <= key <= parse_id(m.group(2)):
                return path.name, m.group(2)
        return None

    def record(self, entry: Entry) -> dict[str, Any]:
        if self.config.payload_field:
            raw = entry.fields.get(self.config.payload_field)
            try:
                rec = json.loads(raw) if raw is not None else None
            except ValueError:
                rec = None
            if not isinstance(rec, dict):  # kept, so the ingest step rejects it visibly (raw.rejects)
                rec = {"_unparseable": raw}
        else:
            rec = dict(entry.fields)
        rec.setdefault("stream_id", entry.id)
        return rec

    def _ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.config.stream, self.config.group, id=self.config.start_id, mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def _claim_stale(self) -> None:
        c = self.config
        start = "0-0"
        while True:
            # not JUSTID: redis-py then drops the reply's next-start id, which paging needs
            reply = self.client.xautoclaim(c.stream, c.group, c.consumer, c.claim_idle_ms, start_id=start, count=1000)
            start = reply[0]
            if start in ("0-0", b"0-0"):
                return

    def _read(self, start: str, count: int) -> list[tuple[str, dict | None]]:
        reply = self.client.xreadgroup(
            self.config.group, self.config.consumer, {self.config.stream: start}, count=count
        )
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3
            return list(next(iter(reply.values()))[0])
        return list(reply[0][1])

    def read_entries(self) -> tuple[list[Entry], int, bool]:
        """Pending (unacknowledged) then new entries of this consumer; ``(entries, server ms, complete)``.

        Entries whose data was deleted from the stream (XDEL/trim while pending) are acknowledged and
        dropped. ``complete`` is False when the new-entry read hit ``max_entries``.
        """
        c = self.config
        self._ensure_group()
        self._claim_stale()
        sec, usec = self.client.time()  # before reading: every entry with an earlier id time is visible now
        now_ms = int(sec) * 1000 + int(usec) // 1000
        entries: list[Entry] = []
        deleted: list[str] = []
        after = "0"
        while True:
            batch = self._read(after, 1000)
            if not batch:
                break
            for eid, data in batch:
                if data:
                    entries.append(Entry(eid, dict(data)))
                else:
                    deleted.append(eid)
            after = batch[-1][0]
        if deleted:
            self.client.xack(c.stream, c.group, *deleted)
        new = self._read(">", c.max_entries)
        entries.extend(Entry(eid, dict(data)) for eid, data in new if data)
        entries.sort(key=lambda e: parse_id(e.id))
        return entries, now_ms, len(new) < c.max_entries

    def poll(self, landing: Path, *, on_stage: Callable[[str], None] | None = None) -> PollResult:
        """Read, cut, land and acknowledge (see the module docstring).

        Args:
            landing: the landing folder.
            on_stage: called with ``"read"`` after reading and ``"landed"`` after each window's file is
                durable and before its XACK (crash tests kill the process there).
        """
        c = self.config
        entries, now_ms, complete = self.read_entries()
        if on_stage is not None:
            on_stage("read")
        result = PollResult()
        # a window landed before a crash (not acknowledged) holds the first pending entry: it is committed, so
        # acknowledge its entries as landed, even if some were deleted from the stream meanwhile (XDEL/trim
        # would otherwise shift the re-cut window's boundaries and land its rows twice)
        while entries and (landed := self.landed_window_covering(landing, entries[0].id)) is not None:
            name, last = landed
            done = [e.id for e in entries if parse_id(e.id) <= parse_id(last)]
            entries = entries[len(done) :]
            self._ack(done)
            result.windows.append(name)
            result.acked += len(done)
            result.last_acked_id = max_id(result.last_acked_id, done[-1])
        windows, tail = cut_windows(entries, c.window_count, c.window_seconds, now_ms, complete)
        result.open_entries = len(tail)
        for window in windows:
            path, created = land_records(landing, self.window_name(window), [self.record(e) for e in window])
            if created:
                result.landed.append(path)
            if on_stage is not None:
                on_stage("landed")
            ids = [e.id for e in window]
            self._ack(ids)
            result.windows.append(path.name)
            result.acked += len(ids)
            result.last_acked_id = max_id(result.last_acked_id, ids[-1])
        return result

    def _ack(self, ids: list[str]) -> None:
        for i in range(0, len(ids), 1000):
            self.client.xack(self.config.stream, self.config.group, *ids[i : i + 1000])

    def pending_count(self) -> int:
        """Entries of the group delivered but not acknowledged (all consumers)."""
        return int(self.client.xpending(self.config.stream, self.config.group)["pending"])
