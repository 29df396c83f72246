"""Short-lived connections to the warehouse file: connect (retrying on DuckDB's file lock), attach with
the warehouse's row-group size, and hand frames over as row-group-sized Arrow batches.

DuckDB allows one read-write process and no readers beside it, so every connection is opened per call
and closed on exit, and opening retries for a while when another process holds the lock. Inside Dagster
all callers sit in the ``duckdb`` pool (limit 1), so retries only matter for the CLI reading while runs
are active.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked")

ROW_GROUP_SIZE = 32_768
"""Rows per DuckDB row group of the warehouse (an ``ATTACH`` option; DuckDB's default is 122,880).
DuckDB writes an insert's full row groups straight to the database file ("optimistic writes") and
the rest through the WAL, which the checkpoint at close copies again. A 100k-row window fits in no
default row group, so it went through the WAL whole; with 32,768 its raw and curated writes take
~30% less time and the file grows ~10% (``bench/ingest.py``; 16,384: +38% file)."""


def load_sql(name: str) -> str:
    """The text of ``orchestration/store/<name>`` (a packaged ``.sql`` file, read with importlib.resources).

    Raises:
        FileNotFoundError: no such file in the package.
    """
    return resources.files("orchestration.store").joinpath(name).read_text(encoding="utf-8")


def row_group_batches(frame: pl.DataFrame) -> pa.Table:
    """``frame`` as an Arrow table of ``ROW_GROUP_SIZE``-row record batches, to register for an
    ``INSERT ... SELECT``. DuckDB scans an Arrow table one record batch per thread, and polars
    hands over one batch: the insert (mostly compressing text into row groups) then ran on one
    thread. Batches of one row group each run in parallel, and the insertion order and row groups
    are kept: a 100k-row window's raw write took 0.21 -> 0.15 s and its curated write 0.32 ->
    0.26 s (alternating runs on real PyPI summaries)."""
    table = frame.to_arrow()
    return pa.Table.from_batches(table.to_batches(max_chunksize=ROW_GROUP_SIZE), schema=table.schema)


class Connector:
    """Short-lived connections to one DuckDB file (the base of every per-schema part of ``Warehouse``).

    Args:
        path: the ``warehouse.duckdb`` file; its parent directory is created.
        lock_timeout_s: how long ``connect`` retries while another process
            holds DuckDB's file lock, in seconds.

    Raises:
        duckdb.IOException: if the lock is still held after ``lock_timeout_s``.
    """

    def __init__(self, path: str | Path, lock_timeout_s: float = 120.0) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open a connection, retrying on lock conflicts; commit/close on exit.

        The file is attached to an in-memory connection as ``warehouse`` (with ``ROW_GROUP_SIZE``, and
        ``READ_ONLY`` when asked and the file exists) and made the default catalog; the session time
        zone is UTC, so ``TIMESTAMPTZ`` reads back as polars ``Datetime(tz="UTC")``.

        Raises:
            duckdb.IOException: the lock is still held after ``lock_timeout_s``, or another I/O error.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.1
        options = f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}" + (", READ_ONLY" if read_only and self.path.exists() else "")
        path = str(self.path).replace("'", "''")
        while True:
            con = duckdb.connect()  # in-memory; the warehouse file is attached with its storage options
            try:
                con.execute(f"ATTACH '{path}' AS warehouse ({options})")
                con.execute("USE warehouse")
                break
            except duckdb.IOException as exc:  # another process holds the file
                con.close()
                if not any(m in str(exc) for m in _LOCK_MARKERS) or time.monotonic() > deadline:
                    raise
            except BaseException:
                con.close()
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        try:
            con.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ reads back as polars Datetime(tz="UTC")
            yield con
        finally:
            con.close()
