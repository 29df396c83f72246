"""Real servers for the team-profile tests: PostgreSQL from Debian's package, and ``mlflow server`` on it.

``pg_server`` (session scope) runs ``initdb`` + ``pg_ctl`` from ``/usr/lib/postgresql/*/bin`` in a temp
directory, listening on 127.0.0.1 only with password (scram-sha-256) authentication, and stops it at the
end. As root the server runs as the ``postgres`` system user (``runuser``), since PostgreSQL refuses to
run as root. Tests skip with a reason when the binaries are absent (``apt-get install postgresql``, as
``.ci/run`` does), and fail instead when ``CI`` is set.

``start_mlflow_server`` starts a real tracking server on a loopback port, backed by a Postgres database,
with a proxied artifact store (``--artifacts-destination`` + ``--serve-artifacts``).

Use: ``from team_pg_fixtures import pg_server  # noqa: F401`` in a test module.
"""

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "streamtune"


def find_pg_bindir() -> Path | None:
    """Newest ``/usr/lib/postgresql/<major>/bin`` holding initdb, pg_ctl and postgres (or $PG_BINDIR)."""
    candidates = [os.environ["PG_BINDIR"]] if os.environ.get("PG_BINDIR") else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    for c in candidates:
        if all((Path(c) / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return Path(c)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """A running PostgreSQL server on 127.0.0.1."""

    bindir: Path
    datadir: Path
    port: int
    password: str
    run_as: list[str]

    def url(self, db: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{db}"

    def connect(self, db: str = "postgres"):
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER, password=self.password, dbname=db)
        con.autocommit = True
        return con

    def create_database(self, name: str) -> str:
        """Create a fresh database (dropped first if it exists); returns its URL."""
        con = self.connect()
        try:
            with con.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
                cur.execute(f'CREATE DATABASE "{name}" OWNER {PG_USER}')
        finally:
            con.close()
        return self.url(name)

    def query(self, db: str, sql: str, params=()) -> list[tuple]:
        con = self.connect(db)
        try:
            with con.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            con.close()

    def stop(self) -> None:
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
        )


def start_pg_server(root: Path) -> PgServer:
    """initdb + pg_ctl start in ``root`` (created, and owned by ``postgres`` when running as root)."""
    bindir = find_pg_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
    run_as: list[str] = []
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
        os.chmod(root, 0o700)
    datadir = root / "data"
    password = secrets.token_hex(12)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if run_as:
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run(
        [
            *run_as,
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            PG_USER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
        check=True,
        capture_output=True,
    )
    pwfile.unlink()
    port = free_port()
    opts = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off "
        "-c max_connections=200"
    )
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(datadir),
            "-l",
            str(root / "server.log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    return PgServer(bindir=bindir, datadir=datadir, port=port, password=password, run_as=run_as)


@pytest.fixture(scope="session")
def pg_server(require_tool):
    """A real PostgreSQL server for the session (skips when Debian's postgresql package is missing; fails
    instead when ``CI`` is set: tests/conftest.py ``require_tool``)."""
    require_tool(
        "PostgreSQL server binaries (/usr/lib/postgresql/*/bin)",
        find_pg_bindir() is not None,
        "apt-get install postgresql",
    )
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        psycopg2 = None
    require_tool("psycopg2", psycopg2 is not None, "pip install -e .")
    root = Path(tempfile.mkdtemp(prefix="streamtune-pg-"))
    server = start_pg_server(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 in its own process group (context manager)."""

    def __init__(self, backend_uri: str, artifacts: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend_uri, self.artifacts, self.log_path = backend_uri, artifacts, log
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "MlflowServer":
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                self.backend_uri,
                "--artifacts-destination",
                str(self.artifacts),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                if r.status == 200:
                    return self
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"mlflow server not healthy after 180 s: {self.log_path.read_text()[-3000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # huey/uvicorn children outlive the parent for a while
            if self.proc:
                os.killpg(self.proc.pid, signal.SIGKILL)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None


def start_mlflow_server(pg: PgServer, db: str, artifacts: Path, log: Path) -> MlflowServer:
    """A tracking server on a fresh Postgres database ``db`` with artifacts proxied into ``artifacts``."""
    backend = pg.create_database(db)
    return MlflowServer(backend, artifacts, log)
