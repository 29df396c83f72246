"""Redis Streams source against a real redis-server (Debian package) on a loopback port."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from st_helpers import tiny_home, window_records

from orchestration.definitions import build_definitions
from orchestration.resources import StreamtuneResource, build_resources
from orchestration.sensors import build_landing_sensor
from orchestration.source_sensors import redis_cursor
from orchestration.sources.landing import closed_files_after, window_key_for
from orchestration.sources.redis_stream import Entry, RedisStreamConfig, RedisStreamSource, cut_windows

ROOT = Path(__file__).resolve().parents[3]
REDIS_SERVER = shutil.which("redis-server")
# skips without redis-server, fails instead when CI is set (tests/conftest.py)
pytestmark = pytest.mark.requires_tool("redis-server", REDIS_SERVER is not None, "apt-get install redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    """A throwaway redis-server on 127.0.0.1 with its data dir in tmp_path; stopped after the test."""
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            if client.ping():
                break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _produce(url: str, stream: str, records: list[dict]) -> list[str]:
    import redis

    r = redis.Redis.from_url(url, decode_responses=True)
    return [r.xadd(stream, {k: str(v) for k, v in rec.items()}) for rec in records]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_windows_by_count_land_atomically_and_are_acked(tmp_path, redis_url):
    landing = tmp_path / "landing"
    ids = _produce(redis_url, "events", window_records(0, 25))
    source = RedisStreamSource(RedisStreamConfig(url=redis_url, stream="events", window_count=10))
    first = source.poll(landing)
    # 25 entries: two closed windows of 10, five wait (pending, unacknowledged) in the open window
    assert [p.name for p in first.landed] == [
        f"redis-events-{ids[0]}-{ids[9]}.jsonl",
        f"redis-events-{ids[10]}-{ids[19]}.jsonl",
    ]
    assert first.acked == 20 and first.open_entries == 5 and first.last_acked_id == ids[19]
    assert source.pending_count() == 5
    rows = _lines(first.landed[0])
    assert [r["id"] for r in rows] == [f"w0-{i}" for i in range(10)]
    assert rows[0]["stream_id"] == ids[0] and rows[0]["text"] == window_records(0, 25)[0]["text"]
    assert not [p for p in landing.iterdir() if p.name.startswith(".")]  # no temp files left

    ids += _produce(redis_url, "events", window_records(1, 5))
    second = source.poll(landing)
    assert [p.name for p in second.landed] == [f"redis-events-{ids[20]}-{ids[29]}.jsonl"]
    assert source.pending_count() == 0
    assert len(list(landing.glob("redis-*.jsonl"))) == 3
    # the sensor cursor only moves forward
    c1 = redis_cursor(None, first.last_acked_id)
    c2 = redis_cursor(c1, second.last_acked_id)
    assert json.loads(c2)["last_acked_id"] == ids[29]
    assert redis_cursor(c2, ids[3]) == c2 and redis_cursor(c2, None) == c2


def test_windows_by_time_close_on_entry_time_and_server_clock(tmp_path, redis_url):
    import redis

    landing = tmp_path / "landing"
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    base = int(time.time() * 1000) - 10_000  # explicit ids: entry time 10 s in the past, 400 ms apart
    ids = [r.xadd("ticks", {"text": f"tick number {i} of the clock"}, id=f"{base + 400 * i}-0") for i in range(6)]
    source = RedisStreamSource(RedisStreamConfig(url=redis_url, stream="ticks", window_count=0, window_seconds=1.0))
    result = source.poll(landing)
    # windows start at their first entry: [0, 400, 800] | [1200, 1600, 2000]; the first closes because
    # the entry at 1200 lies beyond it, the last because the server clock is past its end (3200)
    assert [p.name for p in result.landed] == [
        f"redis-ticks-{ids[0]}-{ids[2]}.jsonl",
        f"redis-ticks-{ids[3]}-{ids[5]}.jsonl",
    ]
    assert source.pending_count() == 0

    # a window whose span has not passed yet stays open (pending) until the server clock passes its end
    live = RedisStreamSource(RedisStreamConfig(url=redis_url, stream="live", window_count=0, window_seconds=1.5))
    _produce(redis_url, "live", window_records(2, 3))
    assert live.poll(landing).landed == [] and live.pending_count() == 3
    time.sleep(1.6)
    late = live.poll(landing)
    assert len(late.landed) == 1 and len(_lines(late.landed[0])) == 3 and live.pending_count() == 0


def test_cut_windows_keeps_an_incomplete_read_open():
    entries = [Entry(f"{1000 + i}-0", {}) for i in range(3)]
    closed, tail = cut_windows(entries, 0, 1.0, now_ms=10_000, complete=False)
    assert closed == [] and len(tail) == 3  # more entries may exist beyond the read limit: do not close
    closed, tail = cut_windows(entries, 2, 0, now_ms=None)
    assert [len(w) for w in closed] == [2] and len(tail) == 1


CRASHER = """
import os, signal, sys
from pathlib import Path
from orchestration.sources.redis_stream import RedisStreamConfig, RedisStreamSource
stage = sys.argv[3]
src = RedisStreamSource(RedisStreamConfig(url=sys.argv[1], stream="events", window_count=10))
def on_stage(s):
    if s == stage:
        os.kill(os.getpid(), signal.SIGKILL)  # a real crash: no cleanup, no ack
src.poll(Path(sys.argv[2]), on_stage=on_stage)
"""


@pytest.mark.parametrize("stage", ["read", "landed"])
def test_crash_before_ack_redelivers_and_ingests_the_window_exactly_once(tmp_path, redis_url, stage):
    home = tiny_home(tmp_path / "home")
    landing = home.paths.landing
    ids = _produce(redis_url, "events", window_records(0, 10))
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, redis_url, str(landing), stage],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    source = RedisStreamSource(RedisStreamConfig(url=redis_url, stream="events", window_count=10))
    assert source.pending_count() == 10  # read (delivered) but never acknowledged
    name = f"redis-events-{ids[0]}-{ids[9]}.jsonl"
    assert (landing / name).exists() == (stage == "landed")
    if stage == "landed":
        os.utime(landing / name, ns=(10**18, 10**18))  # fix its mtime so a rewrite would be visible
        # entries deleted while pending (XDEL, trimming) must not shift the committed window's boundary
        import redis

        assert redis.Redis.from_url(redis_url).xdel("events", ids[0], ids[4]) == 2

    # restart: the pending entries are delivered again; a landed window is acknowledged, not rewritten
    again = source.poll(landing)
    assert again.windows == [name] and source.pending_count() == 0
    assert again.acked == (8 if stage == "landed" else 10)
    assert [p.name for p in again.landed] == ([] if stage == "landed" else [name])
    assert [f.name for f in closed_files_after(landing, None)] == [name]
    if stage == "landed":
        assert (landing / name).stat().st_mtime_ns == 10**18
    assert [r["stream_id"] for r in _lines(landing / name)] == ids
    assert source.poll(landing).windows == []  # nothing left to deliver

    # the landing sensor turns the window into one ingest run; DuckDB holds each record once
    key = window_key_for(name)
    with dg.instance_for_test() as instance:

        def context(cursor):
            return dg.build_sensor_context(
                instance=instance,
                instance_ref=instance.get_ref(),
                cursor=cursor,
                definitions=build_definitions(home),
                resources={"streamtune": StreamtuneResource(home=str(home.home))},
            )

        sensor = build_landing_sensor(1)
        tick = sensor.evaluate_tick(context(None))
        if not tick.run_requests:  # a file landed just now settles for one tick (size and mtime stable)
            tick = sensor.evaluate_tick(context(tick.cursor))
        assert [r.run_key for r in tick.run_requests] == [key]
        for req in tick.dynamic_partitions_requests:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        from assets.ingest import raw_window

        ran = dg.materialize(
            [raw_window],
            partition_key=key,
            resources=build_resources(home),
            instance=instance,
            tags=tick.run_requests[0].tags,
        )
        assert ran.success
    from orchestration.store.warehouse import Warehouse

    counts = Warehouse(home.paths.warehouse).window_counts(key)
    assert counts.source_rows == 10 and counts.parsed_rows == 10


def test_redis_sensor_lands_and_moves_its_cursor(tmp_path, redis_url):
    from orchestration.source_sensors import build_source_sensors

    home = tiny_home(tmp_path / "home", sources={"redis": {"url": redis_url, "stream": "events", "window_count": 4}})
    sensors = {s.name: s for s in build_source_sensors(home)}
    assert set(sensors) == {"redis_stream_sensor"}
    defs = build_definitions(home)
    assert "redis_stream_sensor" in {s.name for s in defs.sensors}
    ids = _produce(redis_url, "events", window_records(0, 9))
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(
            instance=instance,
            cursor=None,
            definitions=defs,
            resources={"streamtune": StreamtuneResource(home=str(home.home))},
        )
        tick = sensors["redis_stream_sensor"].evaluate_tick(ctx)
    assert tick.run_requests == [] and json.loads(tick.cursor) == {"last_acked_id": ids[7]}
    assert len(list(home.paths.landing.glob("redis-events-*.jsonl"))) == 2
