"""The loop's long-lived code server: one ``dagster api grpc`` process per ``Daemon``, for its whole life.

``dagster-daemon run -m orchestration.definitions`` would manage its own code server and replace it every 60 s
(``dagster._daemon.controller.RELOAD_WORKSPACE_INTERVAL``: the daemon clears its gRPC endpoints and starts a
new server). Each new server imports the code location again and, with ``run_workers = "forkserver"``, starts a
new fork server that imports torch, transformers, MLflow and GX again: about 16 CPU-seconds a minute, an eighth
of the 2-core machine, spent while the loop trains. Dagster's deployment guide runs user code as its own
long-lived gRPC server instead (``dagster api grpc``, referenced by a ``grpc_server`` entry in
``workspace.yaml``): the daemon's 60 s refresh then only re-reads the server's snapshot, and the fork server
(``orchestration.run_workers``) stays warm for every run of the loop.

The server is started first and awaited (the daemon would otherwise record the location as unreachable until
its next refresh, a minute later); the daemon then joins the server's process group, so one ``killpg`` stops
the daemon, the server, its fork server and every run worker, as before. The location keeps the name that
``dagster dev -m orchestration.definitions`` (``streamtune ui``) gives it, so runs of the loop can be
re-executed from the UI.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from orchestration.cli.homelock import die_with_parent

MODULE = "orchestration.definitions"
LOCATION_NAME = MODULE
"""The code location's name: the one ``dagster dev -m orchestration.definitions`` gives it."""
HOST = "127.0.0.1"


class CodeServerError(RuntimeError):
    """The code server exited, or did not answer within its start timeout."""


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it; another process could take it
    before the server binds it, which ``CodeServer.start`` reports as an exit)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def workspace_yaml(port: int) -> str:
    """``workspace.yaml`` text that loads the code location from the server on ``127.0.0.1:port``."""
    return (
        "# Written by streamtune (orchestration.cli.code_server): the loop's long-lived code server.\n"
        "load_from:\n"
        "  - grpc_server:\n"
        f"      host: {HOST}\n"
        f"      port: {port}\n"
        f"      location_name: {LOCATION_NAME}\n"
    )


class CodeServer:
    """``dagster api grpc -m orchestration.definitions`` on a loopback port, leader of a new process group
    (in the caller's session, so that the daemon can join it).

    Args:
        dagster_exe: path of the ``dagster`` console script.
        env: the process environment (``orchestration.cli.daemon.instance_env``).
        cwd: working directory (the home).
        log: binary file for the server's stdout and stderr.
    """

    def __init__(self, dagster_exe: str, env: dict[str, str], cwd: Path, log: IO[bytes]) -> None:
        self.dagster_exe, self.env, self.cwd, self.log = dagster_exe, env, cwd, log
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180.0) -> None:
        """Start the server and return once it answers a gRPC ping.

        Raises:
            CodeServerError: the server exited first (a bad code location: see the log), or ``timeout_s``
                seconds passed.
        """
        self.port = free_loopback_port()
        cmd = [self.dagster_exe, "api", "grpc", "-m", MODULE, "--host", HOST, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*cmd, "--location-name", LOCATION_NAME],
            env=self.env,
            cwd=str(self.cwd),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            process_group=0,  # a group of its own (the daemon joins it), outside the terminal's Ctrl-C
            preexec_fn=die_with_parent,  # a SIGKILLed CLI leaves no server behind
        )
        self._await_ping(timeout_s)

    def _await_ping(self, timeout_s: float) -> None:
        from dagster._core.errors import DagsterUserCodeUnreachableError  # lazy: dagster
        from dagster._grpc.client import DagsterGrpcClient

        client = DagsterGrpcClient(port=self.port, host=HOST)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise CodeServerError(f"the code server exited with code {self.proc.returncode} while starting")
            try:
                client.ping("")
                return
            except DagsterUserCodeUnreachableError as exc:
                if time.monotonic() > deadline:
                    raise CodeServerError(f"the code server did not answer within {timeout_s:.0f} s") from exc
            time.sleep(0.2)

    @property
    def pgid(self) -> int:
        """The process group of the server (its pid), which the daemon joins."""
        if self.proc is None:
            raise CodeServerError("the code server is not started")
        return self.proc.pid
