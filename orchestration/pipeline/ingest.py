"""The ingest step: one landed window file parsed into ``raw.events`` / ``raw.rejects``. No Dagster imports.

``raw_window`` (pool ``duckdb``) calls ``ingest_window`` and turns its ``IngestResult`` into metadata. The file is
looked up in the landing folder, then in the archive (``landing_retention``); a refused entry (a symbolic link,
a FIFO: ``orchestration.sources.landing.check_entry``) is never read. ``retire_landing_file`` applies
``landing_retention`` once the window's curation has committed (``orchestration.pipeline.curate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from orchestration.config.settings import Settings
from orchestration.sources.landing import RefusedEntry, resolve_window_file, retire_landed_file
from orchestration.store.warehouse import Warehouse
from quality.pii import redact_values
from quality.readers import RecordFields, WindowReadError, read_window_file


class UnreadableWindow(Exception):
    """The window file cannot be read at all (``quality.readers.WindowReadError``): retrying will not help."""

    def __init__(self, message: str, file: str) -> None:
        super().__init__(message)
        self.file = file
        """The landing file's name."""


@dataclass(frozen=True)
class IngestResult:
    """What ``ingest_window`` stored (counts of rows, never row values)."""

    rows: int
    """Parsed rows written to ``raw.events``."""
    source_rows: int
    """Lines/rows in the file (parsed + rejected)."""
    rejected_rows: int
    """Unparseable lines written to ``raw.rejects`` (PII-redacted)."""
    rejects_by_error: dict[str, int]
    """Rejects per error kind (the error text before its first ``:``)."""
    file: str
    """The landing file's name."""
    file_sha256: str
    same_file_as: list[str]
    """Other windows loaded from a byte-identical file (a re-delivery: its rows dedup against them)."""


def ingest_window(
    settings: Settings, warehouse: Warehouse, key: str, *, file_hint: str | None, dagster_run_id: str
) -> IngestResult:
    """Parse window ``key``'s landing file and replace its rows in ``raw.events`` and ``raw.rejects``.

    Records without ``ts`` get the file's landing time (mtime), so reruns give identical rows. Rejected lines
    are kept verbatim except that detected PII/secrets are replaced by ``<ENTITY>`` (``quality.pii``).

    Args:
        file_hint: the landing file name the sensor recorded in the run tags, if any.

    Raises:
        UnreadableWindow: the file cannot be read at all, or is a refused entry (a symbolic link outside
            ``landing_symlinks``, a FIFO); its name and the cause in the message.
        FileNotFoundError: no file in the landing folder or its archive maps to ``key``.
    """
    paths = settings.paths
    try:
        path = resolve_window_file(
            paths.landing, key, hint=file_hint, archive=paths.landing_archive, symlinks=settings.landing_symlinks
        )
    except RefusedEntry as e:
        raise UnreadableWindow(str(e), file=file_hint or key) from e
    fields = RecordFields(text=settings.text_field, id=settings.id_field, ts=settings.ts_field)
    mtime_ns = path.lstat().st_mtime_ns  # the entry's own landing time, as the sensor ordered it
    try:
        landed_at = datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC)
        parsed = read_window_file(path, key, fields=fields, ingested_at=landed_at)
    except WindowReadError as e:
        raise UnreadableWindow(str(e), file=path.name) from e
    rejects = parsed.rejects.with_columns(
        raw=pl.Series(redact_values(parsed.rejects["raw"].to_list()), dtype=pl.String)
    )
    same_file_as = warehouse.windows_with_file(parsed.file_sha256, exclude=key)
    warehouse.replace_raw_window(
        key,
        parsed.rows,
        rejects,
        file_name=path.name,
        file_sha256=parsed.file_sha256,
        file_mtime_ns=mtime_ns,
        dagster_run_id=dagster_run_id,
    )
    errors: dict[str, int] = {}
    for err in parsed.rejects["error"].to_list():
        kind = err.split(":", 1)[0]
        errors[kind] = errors.get(kind, 0) + 1
    return IngestResult(
        rows=parsed.rows.height,
        source_rows=parsed.source_rows,
        rejected_rows=parsed.rejects.height,
        rejects_by_error=errors,
        file=path.name,
        file_sha256=parsed.file_sha256,
        same_file_as=list(same_file_as),
    )


def retire_landing_file(settings: Settings, warehouse: Warehouse, key: str) -> str:
    """Apply ``settings.landing_retention`` to window ``key``'s landing file (call after its curation
    committed): moved to ``<home>/archive/landing/`` (default), deleted, or kept.

    Returns: one line saying what happened ("" when ``key`` was never ingested).
    """
    name = warehouse.window_files([key]).get(key)
    if not name:
        return ""
    paths = settings.paths
    return retire_landed_file(paths.landing, paths.landing_archive, name, settings.landing_retention)
