"""Progress of the running fine-tune, shared between the Dagster run worker and the CLI.

The fine-tune runs in a process the daemon launches; ``streamtune run/demo`` draw their progress bars
from a small JSON file the run rewrites atomically (``<home>/logs/progress.json``). It holds counts
only: phase, done, total, the Dagster run id, and a timestamp; never data.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

PROGRESS_FILE = "progress.json"
PHASES = ("eval_before", "train", "eval_after")
"""Phases in order: score the champion, optimizer steps, score the challenger."""


class ProgressFile:
    """Writer side: ``update(phase, done, total)`` at most every ``min_interval_s`` (and always at the end
    of a phase), ``clear()`` when the update ends. Write errors are ignored: progress is best effort."""

    def __init__(self, path: Path, run_id: str, min_interval_s: float = 0.5) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.min_interval_s = min_interval_s
        self._last = 0.0

    def update(self, phase: str, done: int, total: int) -> None:
        """Write ``{run_id, phase, done, total, at}`` atomically (tmp file + rename); ``phase`` is one of
        ``PHASES``, ``done`` and ``total`` are counts (optimizer steps or evaluation sets)."""
        now = time.time()
        if done < total and now - self._last < self.min_interval_s:
            return
        self._last = now
        payload = {"run_id": self.run_id, "phase": phase, "done": int(done), "total": int(total), "at": now}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(payload))
            os.replace(tmp, self.path)
        except OSError:
            pass

    def clear(self) -> None:
        """Remove the file (the update ended); errors are ignored."""
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def read_progress(path: Path, max_age_s: float = 600.0) -> dict | None:
    """The last progress written (dict with run_id, phase, done, total, at), or None when there is none,
    it is unreadable, or older than ``max_age_s`` (a crashed run leaves a stale file)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or time.time() - float(data.get("at", 0)) > max_age_s:
        return None
    return data
