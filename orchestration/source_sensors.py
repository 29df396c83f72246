"""Sensors of the stream sources: each tick lands closed windows; the ``landing_sensor`` ingests them.

A source sensor requests no runs itself: it lands each window as one file in the landing folder
(atomic, deterministic name) and the ``landing_sensor`` turns every closed file into one partition and
one ingest run (run key = window key), so DuckDB sees each window exactly once however it arrived.
The sensors exist only when ``[sources.redis]`` / ``[sources.sse]`` is configured.

Cursors only move forward: the Redis sensor keeps the last acknowledged entry id (``max_id``), the SSE
sensor ``{"seq", "last_event_id"}`` of the newest landed window (sequence numbers never decrease).
"""

import json

import dagster as dg

from orchestration.config.settings import Settings
from orchestration.resources import StreamtuneResource
from orchestration.sources.redis_stream import RedisStreamConfig, RedisStreamSource, max_id
from orchestration.sources.sse import Position, SseConfig, SseSource


def redis_cursor(previous: str | None, last_acked: str | None) -> str | None:
    """The Redis sensor's next cursor: the later of the previous one and the last acknowledged id."""
    state = json.loads(previous) if previous else {}
    last = max_id(state.get("last_acked_id"), last_acked)
    return json.dumps({"last_acked_id": last}) if last else previous


def build_redis_stream_sensor(config: RedisStreamConfig) -> dg.SensorDefinition:
    @dg.sensor(
        name="redis_stream_sensor",
        minimum_interval_seconds=config.interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Reads Redis stream {config.stream!r} as consumer group {config.group!r}, lands windows "
        "of entries in the landing folder and acknowledges them once landed; the landing_sensor ingests them.",
    )
    def redis_stream_sensor(context: dg.SensorEvaluationContext, streamtune: StreamtuneResource) -> dg.SensorResult:
        source = RedisStreamSource(config)
        result = source.poll(streamtune.settings().paths.landing)
        cursor = redis_cursor(context.cursor, result.last_acked_id)
        if result.landed:
            context.log.info(f"landed {len(result.landed)} window(s): {[p.name for p in result.landed]}")
        message = (
            (
                f"committed {len(result.windows)} window(s) ({result.acked} entries), {result.open_entries} "
                "entries wait in the open window"
            )
            if result.windows
            else f"no closed window yet ({result.open_entries} entries in the open window)"
        )
        return dg.SensorResult(skip_reason=message, cursor=cursor)

    return redis_stream_sensor


def build_sse_sensor(config: SseConfig, text_field: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"sse_{SseSource(config).prefix[4:-1]}_sensor",
        minimum_interval_seconds=config.interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Reads the Server-Sent Events stream {config.url} (resuming with Last-Event-ID) and lands "
        "windows of events in the landing folder; the landing_sensor ingests them.",
    )
    def sse_sensor(context: dg.SensorEvaluationContext, streamtune: StreamtuneResource) -> dg.SensorResult:
        source = SseSource(config, record_text_field=text_field)
        previous = Position.from_cursor(context.cursor)
        result = source.poll(streamtune.settings().paths.landing, previous)
        position = result.position if result.position.seq >= previous.seq else previous
        message = (
            f"landed {len(result.landed)} window(s) from {result.events} events over "
            f"{result.connections} connection(s); {result.dropped} events of the open window are read again "
            "next tick"
        )
        return dg.SensorResult(skip_reason=message, cursor=position.to_cursor())

    return sse_sensor


def build_source_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    """The sensors of every configured source (none by default)."""
    sensors = []
    if settings.sources.redis is not None:
        sensors.append(build_redis_stream_sensor(settings.sources.redis))
    if settings.sources.sse is not None:
        sensors.append(build_sse_sensor(settings.sources.sse, settings.text_field))
    return sensors
