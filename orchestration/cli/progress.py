"""Progress display of ``streamtune run --until-idle`` and ``streamtune demo`` (rich).

On a terminal: live bars for windows ingested (gated and approved) of those landed, fine-tunes done,
and the running fine-tune's phase (champion evaluation, optimizer steps, challenger evaluation). In a
pipe or a CI log: one plain line whenever the state changes, so logs stay readable.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

PHASE_LABELS = {"eval_before": "evaluate champion", "train": "train steps", "eval_after": "evaluate challenger"}


class LoopProgress:
    """Context manager; pass ``update`` as ``Daemon.wait_until_idle(progress=...)``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._last_line = ""
        self._progress: Progress | None = None
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> LoopProgress:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description:<22}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._tasks["ingest"] = self._progress.add_task("windows ingested", total=None, note="")
            self._tasks["updates"] = self._progress.add_task("fine-tunes", total=None, note="")
            self._tasks["phase"] = self._progress.add_task("current fine-tune", total=None, note="idle", visible=True)
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, state) -> None:
        """Show a ``orchestration.cli.daemon.LoopState``."""
        training = state.training
        phase = (
            f"{PHASE_LABELS.get(training['phase'], training['phase'])} {training['done']}/{training['total']}"
            if training
            else ""
        )
        if self._progress is None:
            line = f"{state.message}; {state.ingested}/{state.landed} window(s) ingested, {state.updates} fine-tune(s)"
            if training:  # only phase changes, not every step, in logs
                line += f"; {PHASE_LABELS.get(training['phase'], training['phase'])}"
            if line != self._last_line:
                self.console.print(f"  {line}")
                self._last_line = line
            return
        p = self._progress
        p.update(
            self._tasks["ingest"],
            total=max(state.landed, 1),
            completed=state.ingested,
            note=f"{state.active_runs} run(s) active",
        )
        p.update(self._tasks["updates"], total=max(state.landed, state.updates, 1), completed=state.updates, note="")
        if training:
            p.update(self._tasks["phase"], total=max(training["total"], 1), completed=training["done"], note=phase)
        else:
            p.update(self._tasks["phase"], total=1, completed=0, note="idle")
