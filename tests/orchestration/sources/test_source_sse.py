"""SSE source (Wikimedia EventStreams format) against a real HTTP server thread on loopback."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
from st_helpers import tiny_home

from orchestration.definitions import build_definitions
from orchestration.resources import StreamtuneResource
from orchestration.source_sensors import build_source_sensors
from orchestration.sources.landing import closed_files_after
from orchestration.sources.sse import Position, SseConfig, SseSource

TOPIC = "eqiad.mediawiki.recentchange"


def event_id(offset: int) -> str:
    return json.dumps([{"topic": TOPIC, "partition": 0, "offset": offset}])


def event_data(offset: int) -> dict:
    return {
        "$schema": "/mediawiki/recentchange/1.0.0",
        "type": "edit",
        "title": f"Page number {offset} about streams",
        "comment": "" if offset % 7 == 3 else f"edit comment {offset}",
        "wiki": "enwiki",
        "bot": False,
        "meta": {
            "id": f"uuid-{offset}",
            "dt": f"2026-11-29T20:{offset // 60:02d}:{offset % 60:02d}Z",
            "domain": "en.wikipedia.org",
        },
    }


class EventStreamServer:
    """A text/event-stream endpoint: events 0..n-1, resumes after ``Last-Event-ID``; the first ``drops``
    connections are cut after ``drop_after`` events (a proxy timeout mid-stream)."""

    def __init__(self, n: int, drop_after: int = 0, drops: int = 0, hold_open_s: float = 0.0):
        self.n, self.drop_after, self.drops, self.hold_open_s = n, drop_after, drops, hold_open_s
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                last = self.headers.get("Last-Event-ID")
                outer.requests.append(
                    {"path": self.path, "last_event_id": last, "user_agent": self.headers.get("User-Agent")}
                )
                start = json.loads(last)[0]["offset"] + 1 if last else 0
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                drop = len(outer.requests) <= outer.drops
                self.wfile.write(b":ok\n\nretry: 50\n\n")
                for sent, offset in enumerate(range(start, outer.n)):
                    if drop and sent == outer.drop_after:
                        self.wfile.flush()
                        self.close_connection = True
                        return  # connection cut mid-stream
                    if offset % 5 == 4:  # other event types of the same stream are ignored
                        self.wfile.write(b"event: heartbeat\ndata: {}\n\n")
                    msg = f"event: message\nid: {event_id(offset)}\ndata: {json.dumps(event_data(offset))}\n\n"
                    self.wfile.write(msg.encode())
                    self.wfile.flush()
                time.sleep(outer.hold_open_s)  # a live stream stays open with nothing new

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v2/stream/recentchange"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _records(landing, prefix="sse-wiki-"):
    rows = []
    for f in closed_files_after(landing, None):
        if f.name.startswith(prefix):
            rows += [json.loads(x) for x in (landing / f.name).read_text().splitlines()]
    return rows


def test_reconnects_with_last_event_id_without_loss_or_duplicates(tmp_path):
    landing = tmp_path / "landing"
    with EventStreamServer(n=40, drop_after=7, drops=3) as server:
        cfg = SseConfig(
            url=server.url,
            text_field="comment",
            name="wiki",
            window_count=10,
            max_tick_seconds=10,
            reconnect_delay_s=0.05,
        )
        result = SseSource(cfg).poll(landing, max_seconds=10)
    # the server cut three connections; the client resumed each time after the last event it had
    assert result.connections >= 4
    assert [r["last_event_id"] for r in server.requests[:4]] == [None, event_id(6), event_id(13), event_id(20)]
    assert all(r["user_agent"].startswith("streamtune/") for r in server.requests)
    rows = _records(landing)
    kept = [o for o in range(40) if o % 7 != 3]  # events with an empty comment have no text
    assert [r["id"] for r in rows] == [f"uuid-{o}" for o in kept[:30]]  # 3 full windows, no loss, no duplicate
    assert result.dropped == len(kept) - 30  # the open 4th window is not landed...
    assert rows[0]["text"] == "edit comment 0" and rows[0]["ts"] == "2026-11-29T20:00:00Z"
    assert rows[0]["wiki"] == "enwiki" and rows[0]["sse_event_id"] == event_id(0) and "meta" not in rows[0]
    assert result.position == Position(3, event_id(kept[29]))


def test_next_poll_resumes_from_the_last_landed_event(tmp_path):
    landing = tmp_path / "landing"
    with EventStreamServer(n=40) as server:
        cfg = SseConfig(url=server.url, text_field="title", name="wiki", window_count=15, max_tick_seconds=5)
        first = SseSource(cfg).poll(landing)
        assert [p.name for p in first.landed] == ["sse-wiki-000000001.jsonl", "sse-wiki-000000002.jsonl"]
        # ...a crash before the sensor stored its cursor: the landed files themselves are the commit
        before = len(server.requests)
        second = SseSource(cfg).poll(landing, cursor=None)
        assert server.requests[before]["last_event_id"] == event_id(29)
        assert second.landed == [] and second.dropped == 10
    with EventStreamServer(n=45) as server:  # five more events arrive: the third window closes
        third = SseSource(
            SseConfig(url=server.url, text_field="title", name="wiki", window_count=15, max_tick_seconds=5)
        ).poll(landing, cursor=first.position)
        assert server.requests[0]["last_event_id"] == event_id(29)
    assert [p.name for p in third.landed] == ["sse-wiki-000000003.jsonl"]
    assert [r["title"] for r in _records(landing)] == [f"Page number {o} about streams" for o in range(45)]


def test_windows_by_time_close_while_the_stream_is_quiet(tmp_path):
    landing = tmp_path / "landing"
    with EventStreamServer(n=4, hold_open_s=3.0) as server:
        cfg = SseConfig(
            url=server.url, text_field="title", name="wiki", window_count=0, window_seconds=0.5, max_tick_seconds=2.5
        )
        result = SseSource(cfg).poll(landing)
    assert len(result.landed) == 1 and len(_records(landing)) == 4


def test_sse_sensor_is_configured_from_settings_and_keeps_a_monotonic_cursor(tmp_path):
    with EventStreamServer(n=12) as server:
        home = tiny_home(
            tmp_path / "home",
            sources={
                "sse": {
                    "url": server.url,
                    "text_field": "title",
                    "name": "wiki",
                    "window_count": 5,
                    "max_tick_seconds": 3,
                }
            },
        )
        defs = build_definitions(home)
        names = {s.name for s in defs.sensors}
        assert "sse_wiki_sensor" in names and "redis_stream_sensor" not in names
        sensor = next(s for s in build_source_sensors(home) if s.name == "sse_wiki_sensor")
        with dg.instance_for_test() as instance:

            def tick(cursor):
                ctx = dg.build_sensor_context(
                    instance=instance,
                    cursor=cursor,
                    definitions=defs,
                    resources={"streamtune": StreamtuneResource(home=str(home.home))},
                )
                return sensor.evaluate_tick(ctx)

            first = tick(None)
            assert json.loads(first.cursor) == {"seq": 2, "last_event_id": event_id(9)}
            assert first.run_requests == []
            # a stale cursor (a tick whose cursor update was lost) never moves the position back
            again = tick(Position(1, event_id(4)).to_cursor())
            assert json.loads(again.cursor)["seq"] == 2
    assert len(_records(home.paths.landing)) == 10


def test_default_settings_add_no_source_sensor(tmp_path):
    home = tiny_home(tmp_path / "home")
    assert build_source_sensors(home) == []
    with pytest.raises(ValueError, match="unknown keys"):
        SseConfig.from_dict({"url": "http://127.0.0.1:1/", "txt_field": "x"})


def test_a_refused_request_fails_the_poll_instead_of_retrying(tmp_path):
    import httpx

    class Forbidden(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        cfg = SseConfig(url=f"http://127.0.0.1:{httpd.server_address[1]}/stream", name="wiki", max_tick_seconds=5)
        with pytest.raises(httpx.HTTPStatusError, match="403"):
            SseSource(cfg).poll(tmp_path / "landing")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not (tmp_path / "landing").exists() or not list((tmp_path / "landing").iterdir())
