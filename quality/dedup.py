"""Duplicate detection: exact (normalized-text hash, DuckDB) and near (MinHash LSH, rensa).

Exact: ``NORM_HASH_SQL`` = md5 of the NFC-normalized, lower-cased, trimmed text with whitespace
runs collapsed to one space. Within a window the first row (lowest ``row_number``) is kept; a row
whose hash already occurs in a recent window's curated rows is a duplicate of that (earliest) row.

Near: rensa ``RMinHash`` (Rust MinHash, ``num_perm`` permutations, fixed seed) over character
5-gram shingles of the normalized text, ``RMinHashLSH`` with the band count that minimizes the
equally weighted false-positive and false-negative probability at ``threshold`` (datasketch's
rule). The curated rows of recent windows (when given) are indexed first, in window then
row order; then this window's rows are visited in ``row_number`` order: a row whose LSH candidates
include an indexed row with estimated Jaccard ``>= threshold`` is a near duplicate of the earliest
such row (a recent window's row before this window's), else it is kept and indexed.

Both link the dropped row to the kept one (``duplicate_of_window``, ``duplicate_of_row``).
"""

from __future__ import annotations

import os
import threading

import duckdb
import polars as pl

_NORM = "lower(nfc_normalize(text))"
NORM_HASH_SQL = (
    f"md5(trim(CASE WHEN contains({_NORM}, '  ') OR contains({_NORM}, chr(9)) OR contains({_NORM}, chr(10)) "
    f"OR contains({_NORM}, chr(12)) OR contains({_NORM}, chr(13)) "
    f"THEN regexp_replace({_NORM}, '\\s+', ' ', 'g') ELSE {_NORM} END))"
)
"""DuckDB expression over a ``text`` column: the normalized-text hash (32 hex chars), i.e.
``md5(trim(regexp_replace(lower(nfc_normalize(text)), '\\s+', ' ', 'g')))``. RE2's ``\\s`` is
``[\\t\\n\\f\\r ]``, so a text without a double space or one of those four characters is left
as is by the replace: the CASE skips the regex there (most texts; the regex is most of the cost)."""

DUP_SCHEMA = {
    "row_number": pl.Int64(),
    "rule": pl.String(),
    "reason": pl.String(),
    "duplicate_of_window": pl.String(),
    "duplicate_of_row": pl.Int64(),
}


def norm_hashes(rows: pl.DataFrame) -> pl.DataFrame:
    """(row_number Int64, norm_hash String) for a frame with ``row_number`` and ``text``; null text
    gives a null hash. Runs ``NORM_HASH_SQL`` on a cursor of this process's in-memory DuckDB
    (``_cursor``), on one thread: it runs beside Presidio and GX (``quality.suite.curate_window``),
    and a second DuckDB thread only contended with them for the cores (same time alone, ~0.13 s
    per 100k PyPI summaries). Thread-safe (one cursor per call)."""
    con = _cursor()
    try:
        con.register("t", rows.select("row_number", "text").to_arrow())
        out = con.sql(f"SELECT row_number, {NORM_HASH_SQL} AS norm_hash FROM t ORDER BY row_number").pl()
    finally:
        con.close()
    return out.cast({"row_number": pl.Int64, "norm_hash": pl.String})


_DB: tuple[int, duckdb.DuckDBPyConnection] | None = None
_DB_LOCK = threading.Lock()


def _cursor() -> duckdb.DuckDBPyConnection:
    """A new cursor (its own connection, so its registered views) on one in-memory DuckDB per
    process, created on first use with one thread. Opening a database costs ~25 ms, a cursor
    microseconds: the gate hashes twice per window (all texts, then the redacted ones). A forked
    child opens its own database."""
    global _DB
    with _DB_LOCK:
        if _DB is None or _DB[0] != os.getpid():
            _DB = (os.getpid(), duckdb.connect(config={"threads": 1}))
        return _DB[1].cursor()


def find_duplicates(
    rows: pl.DataFrame,
    window_key: str,
    prior: pl.DataFrame | None = None,
    *,
    exact: bool = True,
    near_threshold: float | None = 0.9,
    num_perm: int = 64,
    hashes: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Duplicate rows of one window (``DUP_SCHEMA``), in ``row_number`` order.

    Args:
        rows: ``row_number`` (Int64, unique) and ``text`` (String, non-null), e.g. redacted curated rows.
        window_key: this window (for links to kept rows of the same window).
        prior: ``window_key``, ``row_number``, ``norm_hash`` of recent windows' curated rows
            (cross-window exact duplicates) and, for cross-window near duplicates, ``text``;
            None or empty = within the window only.
        exact: look for exact duplicates at all.
        near_threshold: estimated Jaccard in (0, 1] for near duplicates; None disables.
        num_perm: MinHash permutations (more = more accurate, slower).
        hashes: ``row_number, norm_hash`` of ``rows`` if already computed (``norm_hashes``).

    Returns: rule ``duplicate_exact`` (reason ``"duplicate_exact: same normalized text as row N
    of window W"``) or ``duplicate_near`` (``"duplicate_near: estimated Jaccard 0.93 >= 0.9 with
    row N of window W"``).
    """
    empty = pl.DataFrame(schema=DUP_SCHEMA)
    if rows.height == 0 or (not exact and near_threshold is None):
        return empty
    if hashes is None:
        hashes = norm_hashes(rows)
    hashed = (
        hashes.select("row_number", "norm_hash")
        .join(rows.select("row_number", "text"), on="row_number")
        .sort("row_number")
    )
    parts = [empty]
    dropped = pl.Series("row_number", [], dtype=pl.Int64)
    if exact:
        j = hashed.select("row_number", "norm_hash").with_columns(kept=pl.col("row_number").min().over("norm_hash"))
        if prior is not None and prior.height:
            prev = (
                prior.sort("window_key", "row_number")
                .group_by("norm_hash", maintain_order=True)
                .agg(pw=pl.col("window_key").first(), pr=pl.col("row_number").first())
            )
            j = j.join(prev, on="norm_hash", how="left")
        else:
            j = j.with_columns(pw=pl.lit(None, pl.String), pr=pl.lit(None, pl.Int64))
        j = j.filter(pl.col("pw").is_not_null() | (pl.col("kept") != pl.col("row_number")))
        in_prior = pl.col("pw").is_not_null()
        exact_dups = j.select(
            "row_number",
            rule=pl.lit("duplicate_exact"),
            reason=pl.format(
                "duplicate_exact: same normalized text as row {} of window {}",
                pl.when(in_prior).then(pl.col("pr")).otherwise(pl.col("kept")),
                pl.when(in_prior).then(pl.col("pw")).otherwise(pl.lit(window_key)),
            ),
            duplicate_of_window=pl.when(in_prior).then(pl.col("pw")).otherwise(pl.lit(window_key)),
            duplicate_of_row=pl.when(in_prior).then(pl.col("pr")).otherwise(pl.col("kept")),
        )
        parts.append(exact_dups)
        dropped = exact_dups.get_column("row_number")
    if near_threshold is not None:
        near_prior = prior if prior is not None and prior.height and "text" in prior.columns else None
        out = _near(
            hashed.filter(~pl.col("row_number").is_in(dropped)), window_key, near_threshold, num_perm, near_prior
        )
        if out:
            parts.append(pl.DataFrame(out, schema=DUP_SCHEMA, orient="row"))
    return pl.concat([p.cast(DUP_SCHEMA) for p in parts]).sort("row_number")


def _dup(rn: int, rule: str, why: str, window: str, row: int) -> tuple:
    return (rn, rule, f"{rule}: {why}", window, row)


_SEED = 1729
_SHINGLE = 5


def _shingle_lists(texts: pl.Series, k: int = _SHINGLE) -> list[list[str]]:
    """Character k-gram shingles of each text after lower-casing and collapsing whitespace runs
    (Python's ``str.split`` whitespace) to one space; a text of at most k chars is one shingle."""
    norm = texts.fill_null("").str.to_lowercase().str.replace_all(r"[\s\x1c-\x1f]+", " ").str.strip_chars(" ").to_list()
    longest = max((len(t) for t in norm), default=0)
    slices = [slice(i, i + k) for i in range(max(longest - k + 1, 0))]
    return [list(map(t.__getitem__, slices[: len(t) - k + 1])) if len(t) > k else [t] for t in norm]


def lsh_bands(threshold: float, num_perm: int) -> int:
    """Band count b (rows per band r = num_perm // b, b * r <= num_perm) minimizing the false
    positive plus false negative probability mass around ``threshold``, as datasketch does."""
    import numpy as np

    xs = np.linspace(0.0, 1.0, 1001)
    best, best_err = 1, float("inf")
    for b in range(1, num_perm + 1):
        if num_perm % b:
            continue  # rensa needs num_perm divisible by the band count
        r = num_perm // b
        p = 1 - (1 - xs**r) ** b
        fp = np.trapezoid(np.where(xs < threshold, p, 0.0), xs)
        fn = np.trapezoid(np.where(xs >= threshold, 1 - p, 0.0), xs)
        if fp + fn < best_err:
            best, best_err = b, fp + fn
    return best


def _near(
    rows: pl.DataFrame, window_key: str, threshold: float, num_perm: int, prior: pl.DataFrame | None = None
) -> list[tuple]:
    if not 0 < threshold <= 1:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    from rensa import RMinHash, RMinHashLSH

    def signatures(texts: pl.Series) -> list:
        out = []
        for sh in _shingle_lists(texts):
            m = RMinHash(num_perm=num_perm, seed=_SEED)
            m.update(sh)
            out.append(m)
        return out

    lsh = RMinHashLSH(threshold=threshold, num_perm=num_perm, num_bands=lsh_bands(threshold, num_perm))
    kept: list = []  # index -> signature; keys into the LSH
    where: list[tuple[str, int]] = []  # index -> (window_key, row_number)
    if prior is not None:
        prior = prior.filter(pl.col("text").is_not_null()).sort("window_key", "row_number")
        for wk, rn, sig in zip(
            prior.get_column("window_key").to_list(),
            prior.get_column("row_number").to_list(),
            signatures(prior.get_column("text")),
        ):
            lsh.insert(len(kept), sig)
            kept.append(sig)
            where.append((wk, rn))
    out = []
    for rn, sig in zip(rows.get_column("row_number").to_list(), signatures(rows.get_column("text"))):
        best = None
        for cand in sorted(lsh.query(sig)):
            score = sig.jaccard(kept[cand])
            if score >= threshold:
                best = (cand, score)
                break
        if best is None:
            lsh.insert(len(kept), sig)
            kept.append(sig)
            where.append((window_key, rn))
        else:
            kw, kr = where[best[0]]
            out.append(
                _dup(
                    rn,
                    "duplicate_near",
                    f"estimated Jaccard {best[1]:.2f} >= {threshold} with row {kr} of window {kw}",
                    kw,
                    kr,
                )
            )
    return out
