"""One loop per home, and clean stops (issue 20, problem 7): real CLI processes, real signals.

A process "of the home" is any process whose environment names the home (``DAGSTER_HOME`` or
``STREAMTUNE_HOME``), whoever started it: the daemon, the code server, run workers, ``dagster dev``, the
MLflow server.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from st_helpers import tiny_home

CLI = [sys.executable, "-m", "orchestration.cli.app"]


def _home_procs(home: Path) -> list[psutil.Process]:
    home = home.resolve()
    names = {str(home), str(home / "dagster")}
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            env = proc.environ()
            if proc.status() != psutil.STATUS_ZOMBIE and (
                env.get("DAGSTER_HOME") in names or env.get("STREAMTUNE_HOME") in names
            ):
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _start(args: list[str], home: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("STREAMTUNE_HOME", "DAGSTER_HOME")}
    return subprocess.Popen(
        [*CLI, *args, "--home", str(home)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children_up(cli: subprocess.Popen, home: Path, n: int):
    assert cli.poll() is None, cli.stdout.read().decode(errors="replace")
    procs = [p for p in _home_procs(home) if p.pid != cli.pid]
    return procs if len(procs) >= n else None


def test_second_loop_on_a_home_refuses_naming_the_holder_pid(tmp_path):
    home = tiny_home(tmp_path / "home").home
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from orchestration.cli.homelock import HomeLock\n"
            f"with HomeLock({str(home)!r}, 'run'):\n    print('locked', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for command in (["run", "--until-idle", "--timeout", "20"], ["demo", "--keep", "--timeout", "20"], ["ui"]):
            out = subprocess.run([*CLI, *command, "--home", str(home)], capture_output=True, text=True, timeout=120)
            assert out.returncode == 2, (command, out.stdout, out.stderr)
            assert f"PID {holder.pid}" in out.stderr
            assert "Traceback" not in out.stderr
        assert (home / "streamtune.toml").exists()  # `demo` did not clear the home under the holder
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_run_stops_every_process_of_the_home(tmp_path, sig):
    home = tiny_home(tmp_path / "home").home
    cli = _start(["run"], home)
    try:
        _wait(lambda: _children_up(cli, home, 2), 180, "dagster-daemon and its code server")
        second = subprocess.run([*CLI, "run", "--home", str(home)], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and f"PID {cli.pid}" in second.stderr, second.stderr
        cli.send_signal(sig)
        cli.wait(timeout=90)
        _wait(lambda: not _home_procs(home), 30, "every process of the home to exit")
    finally:
        if cli.poll() is None:
            cli.kill()
        for proc in _home_procs(home):
            proc.kill()


@pytest.mark.slow
def test_sigkill_of_the_cli_alone_leaves_no_daemon_and_a_restart_works(tmp_path):
    home = tiny_home(tmp_path / "home").home
    cli = _start(["run"], home)
    try:
        _wait(lambda: _children_up(cli, home, 2), 180, "dagster-daemon and its code server")
        cli.kill()
        cli.wait()
        _wait(lambda: not _home_procs(home), 60, "the orphaned daemon to exit")
        again = subprocess.run(
            [*CLI, "run", "--until-idle", "--timeout", "120", "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert not _home_procs(home)
    finally:
        for proc in _home_procs(home):
            proc.kill()


@pytest.mark.slow
def test_sigterm_to_ui_stops_dagster_dev_and_mlflow_and_frees_the_ports(tmp_path):
    home = tiny_home(tmp_path / "home").home
    ports = [_free_port(), _free_port()]
    cli = _start(["ui", "--dagster-port", str(ports[0]), "--mlflow-port", str(ports[1])], home)
    try:
        _wait(lambda: _children_up(cli, home, 3), 240, "dagster dev, its daemon and the MLflow server")
        cli.send_signal(signal.SIGTERM)
        cli.wait(timeout=90)
        _wait(lambda: not _home_procs(home), 30, "every process of the home to exit")
        for port in ports:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))  # nothing listens there any more
    finally:
        if cli.poll() is None:
            cli.kill()
        for proc in _home_procs(home):
            proc.kill()
