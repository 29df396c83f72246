"""Window-balanced reservoir replay: which old training rows to keep, and how many to mix into an update.

Reservoir sampling (Vitter 1985, "Random sampling with a reservoir", Algorithm R) keeps each of n items
with probability M/n in O(M) memory. The equivalent random-key form (keep the M items with the smallest
uniform key; Efraimidis & Spirakis 2006 with equal weights, Avalanche's ``ReservoirSamplingBuffer``) is
used here because it is order-free and deterministic: a row's key is a hash of (seed, record_id).

Balance across windows (Avalanche ``ExperienceBalancedBuffer``; the "class" of CBRS/GDumb is the time
window here): with W windows and capacity M every window keeps its ``M // W`` smallest-key rows (the
first ``M % W`` windows in time order keep one more). When a window arrives, the older windows shrink by
dropping their largest keys, which is again a uniform sample of each window.

The mixing rule of Ibrahim et al. 2024 (arXiv 2403.08763, sec. 5): a fixed fraction of each update's
training rows comes from the buffer. No torch, no Dagster, no DuckDB: frames in, frames out.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence

import polars as pl

__all__ = ["BUFFER_COLUMNS", "reservoir_key", "replay_count", "sample_replay", "update_buffer"]

BUFFER_COLUMNS = ("window_key", "row_number", "record_id", "text", "reservoir_key")
"""Columns of a buffer frame (``train.replay_buffer``): str, int64, str, str, float64 in [0, 1)."""


def reservoir_key(record_id: str, seed: int) -> float:
    """Uniform pseudo-random key in [0, 1) from ``sha256(f"{seed}:{record_id}")`` (first 8 bytes / 2**64)."""
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _empty() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "window_key": pl.String,
            "row_number": pl.Int64,
            "record_id": pl.String,
            "text": pl.String,
            "reservoir_key": pl.Float64,
        }
    )


def update_buffer(
    buffer: pl.DataFrame,
    new_rows: pl.DataFrame,
    capacity: int,
    *,
    seed: int = 0,
    window_order: Sequence[str] | None = None,
    exclude_record_ids: Sequence[str] = (),
) -> pl.DataFrame:
    """Add the training rows of new windows to a window-balanced reservoir and shrink it to ``capacity``.

    Args:
        buffer: current buffer (``BUFFER_COLUMNS``), possibly empty.
        new_rows: training rows of the new window(s): window_key, row_number, record_id, text. Rows of a
            window already in the buffer replace that window's rows (re-training a window is idempotent).
        capacity: most rows kept in total (>= 0).
        seed: seeds the reservoir keys.
        window_order: windows oldest first (decides who keeps the remainder rows); default = the
            buffer's windows in their current order, then the new ones in order of appearance.
        exclude_record_ids: ids that must never enter the buffer (held-out evaluation rows).

    Returns:
        The new buffer, ``BUFFER_COLUMNS``, sorted by window (in ``window_order``) then key.

    Raises:
        ValueError: if ``capacity`` < 0 or a required column is missing.
    """
    if capacity < 0:
        raise ValueError(f"`capacity` must be >= 0, got {capacity}")
    missing = {"window_key", "row_number", "record_id", "text"} - set(new_rows.columns)
    if missing:
        raise ValueError(f"`new_rows` lacks column(s) {sorted(missing)}")
    excluded = set(exclude_record_ids)
    fresh = new_rows.select("window_key", "row_number", "record_id", "text").filter(
        ~pl.col("record_id").is_in(list(excluded))
    )
    fresh = fresh.with_columns(
        reservoir_key=pl.Series([reservoir_key(r, seed) for r in fresh["record_id"].to_list()], dtype=pl.Float64)
    )
    old = buffer.select(BUFFER_COLUMNS) if buffer.height else _empty()
    old = old.filter(~pl.col("window_key").is_in(fresh["window_key"].unique().to_list()))
    if excluded:
        old = old.filter(~pl.col("record_id").is_in(list(excluded)))
    merged = pl.concat([old, fresh.select(BUFFER_COLUMNS)])
    if window_order is None:
        order: list[str] = []
        for key in old["window_key"].to_list() + fresh["window_key"].to_list():
            if key not in order:
                order.append(key)
    else:
        order = [k for k in window_order if k in set(merged["window_key"].to_list())]
        order += [k for k in merged["window_key"].unique(maintain_order=True).to_list() if k not in order]
    if not order or capacity == 0:
        return _empty()
    base, extra = divmod(capacity, len(order))
    parts = []
    for i, key in enumerate(order):
        quota = base + (1 if i < extra else 0)
        if quota:
            parts.append(merged.filter(pl.col("window_key") == key).sort("reservoir_key").head(quota))
    return pl.concat(parts) if parts else _empty()


def replay_count(new_rows: int, fraction: float) -> int:
    """Replay rows to mix with ``new_rows`` so that they make ``fraction`` of the update:
    ``round(fraction / (1 - fraction) * new_rows)``; 0 when ``fraction`` is 0.

    Raises:
        ValueError: if ``fraction`` is not in [0, 1) or ``new_rows`` < 0.
    """
    if not 0 <= fraction < 1 or new_rows < 0:
        raise ValueError(f"need 0 <= fraction < 1 and new_rows >= 0, got {fraction}, {new_rows}")
    return int(round(fraction / (1 - fraction) * new_rows))


def sample_replay(buffer_texts: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """Draw ``n`` texts from the buffer: without replacement while it lasts, then whole reshuffled passes.

    Returns ``[]`` if ``n`` is 0 or the buffer is empty.
    """
    if n <= 0 or not buffer_texts:
        return []
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(math.ceil(n / len(buffer_texts))):
        idx = list(range(len(buffer_texts)))
        rng.shuffle(idx)
        out.extend(buffer_texts[i] for i in idx)
    return out[:n]
