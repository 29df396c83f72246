"""Progress file written by the fine-tune and drawn by the CLI (terminal bars and plain log lines)."""

import io
import json
import time

from rich.console import Console

from orchestration.cli.daemon import LoopState
from orchestration.cli.progress import LoopProgress
from orchestration.pipeline.progress import ProgressFile, read_progress


def test_progress_file_round_trip_throttles_and_clears(tmp_path):
    path = tmp_path / "logs" / "progress.json"
    writer = ProgressFile(path, run_id="r1", min_interval_s=60)
    writer.update("train", 1, 10)
    assert read_progress(path) | {"at": 0} == {"run_id": "r1", "phase": "train", "done": 1, "total": 10, "at": 0}
    writer.update("train", 2, 10)  # inside the interval: skipped
    assert read_progress(path)["done"] == 1
    writer.update("train", 10, 10)  # the end of a phase is always written
    assert read_progress(path)["done"] == 10
    assert list(path.parent.iterdir()) == [path]  # no temporary files left behind
    writer.clear()
    assert read_progress(path) is None


def test_stale_or_torn_progress_reads_as_none(tmp_path):
    path = tmp_path / "progress.json"
    path.write_text(json.dumps({"run_id": "r", "phase": "train", "done": 1, "total": 2, "at": time.time() - 3600}))
    assert read_progress(path, max_age_s=600) is None
    path.write_text("{not json")
    assert read_progress(path) is None


def _state(**kw):
    base = dict(
        message="1 run(s) active, 0 landed file(s) not yet seen, 2 window(s) known",
        active_runs=1,
        landed=2,
        ingested=1,
        updates=0,
        training=None,
    )
    return LoopState(**(base | kw))


def test_plain_output_prints_one_line_per_state_change():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    with LoopProgress(console) as bars:
        bars.update(_state())
        bars.update(_state())  # unchanged: no new line
        bars.update(_state(training={"phase": "train", "done": 3, "total": 40}))
        bars.update(_state(training={"phase": "train", "done": 4, "total": 40}))  # same phase: no line
        bars.update(_state(ingested=2, updates=1))
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 3
    assert "1/2 window(s) ingested, 0 fine-tune(s)" in lines[0]
    assert lines[1].endswith("train steps")
    assert "2/2 window(s) ingested, 1 fine-tune(s)" in lines[2]


def test_terminal_output_draws_bars_with_counts():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160)
    with LoopProgress(console) as bars:
        bars.update(_state(training={"phase": "eval_after", "done": 2, "total": 5}))
    out = buf.getvalue()
    assert "windows ingested" in out and "1/2" in out
    assert "evaluate challenger 2/5" in out
