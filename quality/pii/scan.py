"""Prefilter and scheduling of Presidio: candidate values per entity (vectorised), inline or forked scans with
work stealing (``start_scan``, ``PendingScan``)."""

from __future__ import annotations

import itertools
import logging
import os
import re
from typing import Any

import polars as pl

from quality.pii.engine import _engine, _kept
from quality.pii.policy import ENTITY_TRIGGERS, PREFILTER_REGEX, PiiPolicy, placeholder

DEFAULT_POLICY = PiiPolicy()
"""The default policy (private keys quarantine the row, everything else is redacted)."""

_Item = tuple  # (row_number, text, text entities | None, metadata, metadata entities | None)
_Scanned = tuple  # (redacted text, redacted metadata, entities found, entity of each redaction)


def _marker_pattern(policy: PiiPolicy) -> str | None:
    qents = policy.quarantine_entities
    return "|".join(re.escape(placeholder(e)) for e in qents) if qents else None


def _candidate_items(rows: pl.DataFrame, policy: PiiPolicy) -> list[_Item]:
    """Prefilter: the rows with at least one candidate value, with the entities to analyze per value
    (None = not a candidate)."""
    texts, metas = rows.get_column("text"), rows.get_column("metadata")
    marker = _marker_pattern(policy)
    pattern = PREFILTER_REGEX + ("|" + marker if marker else "")
    routes = {"text": _routes(texts, pattern), "metadata": _routes(metas, pattern)}
    numbers = rows.get_column("row_number")
    items = []
    for i in sorted(set(routes["text"]) | set(routes["metadata"])):
        items.append((numbers[i], texts[i], routes["text"].get(i), metas[i], routes["metadata"].get(i)))
    return items


def _scan_items(items: list[_Item], marker: str | None) -> dict[int, _Scanned]:
    """Presidio on candidate values: row_number -> (redacted text, redacted metadata, entities found
    (including quarantine placeholders already present), entity type of each kept redaction).
    Runs in the caller's process or in a ``start_scan`` worker (arguments and results pickle)."""
    engine = _engine()
    rx = re.compile(marker) if marker else None
    out: dict[int, _Scanned] = {}
    for n, text, text_ents, meta, meta_ents in items:
        values = {"text": text, "metadata": meta}
        found = {}
        for col, ents in (("text", text_ents), ("metadata", meta_ents)):
            if ents is not None and values[col]:
                found[col] = engine.analyze(values[col], ents) if ents else []
        entities = {r.entity_type for res in found.values() for r in res}
        if rx is not None:
            for value in values.values():
                if value:
                    entities |= {m.group(0)[1:-1] for m in rx.finditer(value)}
        kept: list[str] = []
        for col, res in found.items():
            if res:
                values[col] = engine.anonymize(values[col], res)
                kept += [r.entity_type for r in _kept(res)]
        out[n] = (values["text"], values["metadata"], tuple(sorted(entities)), tuple(kept))
    return out


class PendingScan:
    """Findings of ``start_scan``: computed in worker processes, or in this process at the first
    ``result()`` call (an inline scan: the caller decides when, e.g. while a DuckDB query runs in a
    thread). ``result()`` maps row_number -> scanned row.

    Forked scans are split into chunks that the workers take in order; ``result()`` first takes
    back, from the end, every chunk no worker has started and analyzes it in this process (work
    stealing: the caller has finished its own stages by then, so both cores stay busy until the
    last chunk), then waits for the rest and shuts the workers down. A chunk whose worker failed
    (killed, out of memory) is left out with a warning; ``redact_rows`` then analyzes those rows
    inline, so a lost worker costs time, never a verdict."""

    def __init__(
        self,
        executor: Any,
        futures: list | None,
        items: list[_Item],
        prefiltered: pl.Series,
        marker: str | None = None,
        chunks: list[list[_Item]] | None = None,
    ) -> None:
        self._executor, self._marker, self._result = executor, marker, None
        self.items = items
        """The candidate values (``_candidate_items`` of the prefiltered rows)."""
        self.prefiltered = prefiltered
        """row_number (Int64) of every row the prefilter saw (all rows but those over ``max_chars``)."""
        self.stolen = 0
        """Chunks of a forked scan analyzed in this process (``steal`` or ``result``)."""
        # (future, the chunk it analyzes) still to collect; without ``chunks`` none can be taken back
        self._pending = list(itertools.zip_longest(futures or [], chunks or []))
        self._stolen: dict[int, _Scanned] = {}

    @property
    def forked(self) -> bool:
        return self._executor is not None

    def steal(self) -> bool:
        """Analyze in this process the last chunk no worker has started; False when there is none
        (every chunk is taken, the scan is inline or its result is in). ``result()`` calls it until
        it returns False. (Stealing while the caller's DuckDB hash thread ran instead was measured
        slower: the hash then waited for a core, and GX for the hash.)"""
        if self._result is not None or not self._pending:
            return False
        future, chunk = self._pending[-1]
        # A chunk can be cancelled only while no worker has taken it; workers take from the front.
        if chunk is None or not future.cancel():
            return False
        self._pending.pop()
        self._stolen.update(_scan_items(chunk, self._marker))
        self.stolen += 1
        return True

    def result(self) -> dict[int, _Scanned]:
        if self._result is not None:
            return self._result
        if not self.forked:
            self._result = _scan_items(self.items, self._marker)
            return self._result
        try:
            while self.steal():
                pass
            merged = self._stolen
            for f, _ in self._pending:
                try:
                    merged.update(f.result())
                except Exception as exc:  # BrokenProcessPool, a pickling error, ...
                    logging.getLogger(__name__).warning(
                        "a Presidio worker failed (%s: %s); its rows are analyzed inline", type(exc).__name__, exc
                    )
            self._result = merged
        finally:
            self._executor.shutdown(wait=True)
        return self._result

    def close(self) -> None:
        """Cancel what has not started and stop the workers (the caller failed before ``result``)."""
        if self.forked:
            self._executor.shutdown(wait=True, cancel_futures=True)


def default_workers() -> int:
    """Worker processes for ``start_scan``: one per core beside the caller's, at most 4 (0 on one
    core). The caller hashes the texts (DuckDB), runs GX and renders Data Docs meanwhile; a worker on
    every core made three busy processes on two cores, and the hash stage ran 2.4x slower
    (``bench/ingest.py``)."""
    cores = os.cpu_count() or 1
    return min(4, cores - 1)


def start_scan(
    rows: pl.DataFrame,
    policy: PiiPolicy = DEFAULT_POLICY,
    *,
    workers: int | None = None,
    min_candidates: int = 1500,
    max_chars: int | None = None,
    chunk_items: int = 50,
) -> PendingScan | None:
    """Prefilter ``rows`` and start Presidio on the candidates in ``workers`` forked processes,
    returning at once so the caller can run other gates meanwhile; pass the handle to ``redact_rows``.

    Presidio is pure Python (it holds the GIL), so threads would not overlap it with GX; forked
    workers inherit the already-built engine (no re-import). The workers run Presidio only (no
    polars/DuckDB calls after the fork). When ``workers`` is 0, fewer than ``min_candidates`` values
    are candidates (a fork costs more than a small scan) or the platform cannot fork, the scan is
    inline: nothing runs until ``result()``. Returns None when PII is disabled.

    Args:
        rows: as for ``redact_rows``.
        workers: processes (None = ``default_workers()``).
        min_candidates: below this many candidate rows, scan inline.
        max_chars: rows whose text is longer are left out (the caller quarantines them first).
        chunk_items: candidate rows per chunk (at least; at most 64 chunks per worker). The
            workers take chunks in order, and ``PendingScan.result`` analyzes in the caller the
            chunks no worker has started yet (about 15 ms of Presidio per 50 real candidates).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if not policy.enabled:
        return None
    workers = default_workers() if workers is None else workers
    if max_chars is not None:  # the gate quarantines longer texts before PII
        rows = rows.filter(pl.col("text").is_null() | (pl.col("text").str.len_chars() <= max_chars))
    items, seen = _candidate_items(rows, policy), rows.get_column("row_number")
    marker = _marker_pattern(policy)
    if workers < 1 or len(items) < max(1, min_candidates) or "fork" not in multiprocessing.get_all_start_methods():
        return PendingScan(None, None, items, seen, marker)
    _engine()  # built before the fork: the workers inherit it
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    size = max(chunk_items, -(-len(items) // (workers * 64)))
    chunks = [items[k : k + size] for k in range(0, len(items), size)]
    futures = [executor.submit(_scan_items, chunk, marker) for chunk in chunks]
    return PendingScan(executor, futures, items, seen, marker, chunks)


def _routes(values: pl.Series, pattern: str) -> dict[int, list[str]]:
    """Candidate positions of ``values`` (``pattern`` matches) -> entities whose trigger matches
    there (possibly none: a value that only holds a quarantine placeholder). Vectorized."""
    frame = pl.DataFrame({"v": values.fill_null("")}).with_row_index("i")
    frame = frame.filter(pl.col("v").str.contains(pattern))
    if frame.height == 0:
        return {}
    flags = frame.select("i", *[pl.col("v").str.contains(rx).alias(e) for e, rx in ENTITY_TRIGGERS.items()])
    out = {}
    for row in flags.iter_rows():
        out[row[0]] = [e for e, hit in zip(ENTITY_TRIGGERS, row[1:]) if hit]
    return out
