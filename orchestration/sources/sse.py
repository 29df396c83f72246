"""HTTP Server-Sent Events source in the Wikimedia EventStreams format, with ``Last-Event-ID`` resume.

No Dagster imports (``orchestration.source_sensors`` wraps ``SseSource.poll`` in a sensor).

The stream sends events such as::

    event: message
    id: [{"topic":"eqiad.mediawiki.recentchange","partition":0,"offset":123}]
    data: {"title": "...", "comment": "...", "meta": {"id": "...", "dt": "2026-01-01T00:00:00Z"}, ...}

Each ``message`` event's JSON data becomes one record: the value at ``text_field`` (a dotted path such
as ``title`` or ``meta.domain``) under the home's text field name, ``meta.id``/``id`` as ``id``,
``meta.dt``/``dt``/``timestamp`` as ``ts``, the scalar top-level fields as metadata, and the raw event
id as ``sse_event_id``. Events without text are skipped.

A poll connects with ``Last-Event-ID`` = the id of the last event in the newest window this source
landed (the landing itself is the commit; a Dagster cursor only mirrors it), reads events for at most
``max_tick_seconds``, closes windows after ``window_count`` events or ``window_seconds`` after a
window's first event, and lands each as ``sse-<name>-<sequence>.jsonl``. When the server drops the
connection the client reconnects with the id of the last event it received and keeps filling the
open window, so nothing is lost or repeated. Events of a window still open when the poll ends are
not landed; the next poll reads them again from the last landed id. Uses ``httpx`` + ``httpx-sse``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestration.sources.base import check_known_keys, check_window_cut, land_records

_SAFE = re.compile(r"[^A-Za-z0-9_]+")
DEFAULT_USER_AGENT = "streamtune/0.1 (continual fine-tuning; set [sources.sse] user_agent to your contact)"


@dataclass(frozen=True)
class SseConfig:
    """``[sources.sse]`` in ``streamtune.toml``."""

    url: str
    """Event stream URL, e.g. a Wikimedia EventStreams endpoint (``.../v2/stream/recentchange``)."""
    text_field: str = "text"
    """Dotted path of the text inside each event's JSON data (``title``, ``comment``, ``meta.uri``)."""
    name: str = "sse"
    """Window file prefix (``sse-<name>-<seq>.jsonl``); one name per configured stream."""
    window_count: int = 500
    """Events per window (0 = by time only)."""
    window_seconds: float = 0.0
    """Close a window this long after its first event arrived (0 = by count only)."""
    max_tick_seconds: float = 20.0
    """Longest a poll reads (keep below the Dagster sensor timeout)."""
    event_types: tuple[str, ...] = ("message",)
    """SSE ``event:`` types that carry records ("" counts as "message", as in the SSE spec)."""
    max_reconnects: int = 5
    """Reconnects allowed within one poll after the server drops or refuses the connection."""
    reconnect_delay_s: float = 0.5
    """Pause before a reconnect (a server ``retry:`` field overrides it)."""
    user_agent: str = DEFAULT_USER_AGENT
    """Wikimedia asks API clients for a descriptive User-Agent with contact details."""
    headers: dict[str, str] = field(default_factory=dict)
    """Further request headers (e.g. an Authorization token)."""
    interval_s: int = 30
    """Minimum seconds between sensor ticks."""

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("[sources.sse] needs `url`")
        check_window_cut("sources.sse", self.window_count, self.window_seconds)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SseConfig:
        check_known_keys(cls, "sources.sse", d)
        d = dict(d)
        if "event_types" in d:
            d["event_types"] = tuple(d["event_types"])
        return cls(**d)


@dataclass(frozen=True)
class Position:
    """The committed position: sequence number of the newest landed window and its last event id."""

    seq: int = 0
    last_event_id: str = ""

    def to_cursor(self) -> str:
        return json.dumps({"seq": self.seq, "last_event_id": self.last_event_id})

    @classmethod
    def from_cursor(cls, cursor: str | None) -> Position:
        if not cursor:
            return cls()
        d = json.loads(cursor)
        return cls(int(d.get("seq", 0)), str(d.get("last_event_id", "")))


@dataclass
class SsePollResult:
    landed: list[Path] = field(default_factory=list)
    position: Position = field(default_factory=Position)
    events: int = 0
    """Events received in this poll (landed or not)."""
    connections: int = 0
    """HTTP connections opened (1 + reconnects)."""
    dropped: int = 0
    """Events of the still-open window, not landed (read again next poll)."""


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


class SseSource:
    """Reads an SSE stream into landed windows (see the module docstring)."""

    def __init__(self, config: SseConfig, record_text_field: str = "text") -> None:
        self.config = config
        self.record_text_field = record_text_field
        self.prefix = f"sse-{_SAFE.sub('_', config.name).strip('_')[:24] or 'sse'}-"

    def window_name(self, seq: int) -> str:
        return f"{self.prefix}{seq:09d}.jsonl"

    def landed_position(self, landing: Path) -> Position:
        """Position of the newest window of this source in ``landing`` (its last line's event id)."""
        if not landing.is_dir():
            return Position()
        names = sorted(p.name for p in landing.glob(f"{self.prefix}*.jsonl"))
        for name in reversed(names):
            try:
                seq = int(name[len(self.prefix) : -len(".jsonl")])
            except ValueError:
                continue
            lines = (landing / name).read_text(encoding="utf-8").splitlines()
            if lines:
                return Position(seq, str(json.loads(lines[-1]).get("sse_event_id", "")))
        return Position()

    def record(self, event_id: str, data: str) -> dict[str, Any] | None:
        try:
            obj = json.loads(data)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        text = _dig(obj, self.config.text_field)
        if not isinstance(text, str) or not text.strip():
            return None
        rec: dict[str, Any] = {k: v for k, v in obj.items() if isinstance(v, (str, int, float, bool)) and v is not None}
        rec[self.record_text_field] = text
        meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
        rid = meta.get("id") or obj.get("id")
        if rid is not None:
            rec["id"] = str(rid)
        ts = meta.get("dt") or obj.get("dt") or obj.get("timestamp")
        if isinstance(ts, str):
            rec["ts"] = ts
        elif "ts" in rec and not isinstance(rec["ts"], str):
            del rec["ts"]
        rec["sse_event_id"] = event_id
        return rec

    def poll(self, landing: Path, cursor: Position | None = None, *, max_seconds: float | None = None) -> SsePollResult:
        """Read for up to ``max_seconds`` (default ``max_tick_seconds``) and land every closed window."""
        import httpx
        from httpx_sse import SSEError, connect_sse

        c = self.config
        landed = self.landed_position(landing)
        pos = landed if cursor is None or landed.seq >= cursor.seq else cursor
        result = SsePollResult(position=pos)
        deadline = time.monotonic() + (c.max_tick_seconds if max_seconds is None else max_seconds)
        last_seen = pos.last_event_id
        window: list[dict] = []
        opened_at = 0.0
        delay = c.reconnect_delay_s
        seq = pos.seq

        def close_window() -> None:
            nonlocal window, seq
            seq += 1
            path, _ = land_records(landing, self.window_name(seq), window)
            result.landed.append(path)
            result.position = Position(seq, window[-1]["sse_event_id"])
            window = []

        with httpx.Client(timeout=httpx.Timeout(10.0), follow_redirects=True) as client:
            drops = 0  # connections the server cut or refused (a quiet stream's read timeout is not one)
            while drops <= c.max_reconnects:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                headers = {"User-Agent": c.user_agent, **c.headers}
                if last_seen:
                    headers["Last-Event-ID"] = last_seen
                result.connections += 1
                try:
                    # a quiet stream times out (and reconnects) in time to close a time window
                    timeout = httpx.Timeout(10.0, read=max(0.05, min(remaining, 30.0, c.window_seconds or 30.0)))
                    with connect_sse(client, "GET", c.url, headers=headers, timeout=timeout) as source:
                        source.response.raise_for_status()
                        for ev in source.iter_sse():
                            if ev.retry is not None:
                                delay = ev.retry / 1000
                            if ev.id:
                                last_seen = ev.id
                            if (ev.event or "message") in c.event_types:
                                result.events += 1
                                rec = self.record(ev.id, ev.data)
                                if rec is not None:
                                    if not window:
                                        opened_at = time.monotonic()
                                    window.append(rec)
                            if window and (
                                (c.window_count and len(window) >= c.window_count)
                                or (c.window_seconds and time.monotonic() - opened_at >= c.window_seconds)
                            ):
                                close_window()
                            if time.monotonic() >= deadline:
                                break
                    drops += 1  # the server ended the stream
                except httpx.ReadTimeout:
                    pass  # quiet stream: reconnect from the last event received
                except httpx.HTTPStatusError as e:
                    if 400 <= e.response.status_code < 500 and e.response.status_code != 429:
                        raise  # a wrong URL, token or User-Agent: retrying does not help
                    drops += 1
                except (httpx.TransportError, SSEError):
                    drops += 1  # dropped or refused: reconnect from the last event received
                if window and c.window_seconds and time.monotonic() - opened_at >= c.window_seconds:
                    close_window()
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        result.dropped = len(window)
        return result
