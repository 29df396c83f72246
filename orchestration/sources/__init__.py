"""Stream sources beyond the landing folder: Redis Streams and HTTP Server-Sent Events.

No Dagster imports here or in the source modules; ``orchestration.source_sensors`` wraps them in
sensors. Every source has the same contract: it turns records into *windows* and lands each window
in the landing folder as one JSONL file, atomically (temp file, fsync, rename) and under a name that
is a pure function of the window's content position (so a re-delivered window lands under the same
name and is not written twice). The ``landing_sensor`` then ingests each file exactly once (run key
= window key). A source only treats its position as committed after the landing is durable: Redis
acknowledges the entries (XACK) after the rename; SSE resumes from the last event id inside the newest
landed file. A crash in between re-delivers; it never loses.
"""
