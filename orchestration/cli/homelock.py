"""One live loop per home: an OS file lock, a marker on every process the loop starts, and clean stops.

``streamtune run | demo | ui`` hold ``<home>/streamtune.lock`` (``fcntl.flock``, released by the kernel when
the holder dies, so there is never a stale lock to guess about) for as long as they run. Every child they
start (``dagster-daemon``, ``dagster dev``, the MLflow server, and through them the code server and the run
workers) carries ``STREAMTUNE_LOOP_HOME=<home>`` in its environment: while the lock is held, a process with
that marker was started by the holder, so a new holder can find and stop what a killed one left behind, and
a stopping one can check that nothing is left. No Dagster imports (the daemon wrapper imports this).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import sys
from pathlib import Path

import psutil

from orchestration.cli.common import BAD_INPUT, CliError

LOCK_NAME = "streamtune.lock"
OWNER_ENV = "STREAMTUNE_LOOP_HOME"
"""Environment marker of every process a loop command starts (value: the resolved home)."""

_HELD: dict[Path, list] = {}  # resolved home -> [open lock file, hold count] (re-entrant within a process)


class HomeLock:
    """Context manager: hold the home's lock, or raise ``CliError`` naming the PID that holds it.

    Re-entrant within one process (``demo`` holds it around ``Daemon``, which takes it too). On first
    acquisition it stops the processes a killed earlier holder left behind; on final release it stops every
    process of the home still running.

    Raises:
        CliError: (exit status 2) another live process holds the lock (one line, with the holder's PID).
    """

    def __init__(self, home: Path, command: str) -> None:
        self.home = Path(home).resolve()
        self.command = command

    def __enter__(self) -> HomeLock:
        held = _HELD.get(self.home)
        if held is not None:
            held[1] += 1
            return self
        self.home.mkdir(parents=True, exist_ok=True)
        handle = open(self.home / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the lifetime of the lock
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise CliError(
                f"home {self.home} is in use by another streamtune process (PID {holder})",
                hint="one daemon per home: stop that process first (Ctrl-C, or `kill` its PID), or use another --home",
                code=BAD_INPUT,
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} streamtune {self.command}\n")
        handle.flush()
        _HELD[self.home] = [handle, 1]
        stop_home_processes(self.home)  # left behind by a holder that was killed (SIGKILL, OOM, crash)
        return self

    def __exit__(self, *exc) -> None:
        held = _HELD[self.home]
        held[1] -= 1
        if held[1]:
            return
        try:
            stop_home_processes(self.home)
        finally:
            del _HELD[self.home]
            fcntl.flock(held[0].fileno(), fcntl.LOCK_UN)
            held[0].close()


def home_processes(home: Path) -> list[psutil.Process]:
    """Live processes (other than this one) whose environment carries this home's loop marker."""
    marker = str(Path(home).resolve())
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(OWNER_ENV) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def stop_home_processes(home: Path, timeout_s: float = 20.0) -> list[int]:
    """SIGTERM every process of the home, then SIGKILL those still alive after ``timeout_s``.

    Returns:
        The PIDs that were signalled (empty when nothing was left).
    """
    procs = home_processes(home)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in procs]


def loop_env(env: dict[str, str], home: Path) -> dict[str, str]:
    """``env`` plus the home's loop marker (for every process a loop command starts)."""
    return {**env, OWNER_ENV: str(Path(home).resolve())}


def die_with_parent() -> None:
    """``preexec_fn`` for children: on Linux, SIGTERM the child when the process that started it dies
    (even by SIGKILL), so a killed CLI leaves no daemon or server holding ports. No-op elsewhere."""
    if sys.platform.startswith("linux"):
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None  # loaded before any fork


class Interrupted(KeyboardInterrupt):
    """SIGTERM received: unwinds like Ctrl-C, so every context manager stops its processes."""


def stop_on_signals() -> None:
    """Make SIGTERM (and SIGHUP) raise ``Interrupted`` in the main thread, like SIGINT raises
    ``KeyboardInterrupt``, so ``with Daemon(...)`` / ``HomeLock`` stop every child on the way out."""

    def _raise(signum, _frame):
        raise Interrupted(f"received {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)
