"""Duplicate detection: exact (normalized-text hash, DuckDB) and near (MinHash LSH, datasketch).

Exact: ``NORM_HASH_SQL`` = md5 of the NFC-normalized, lower-cased, trimmed text with whitespace
runs collapsed to one space. Within a window the first row (lowest ``row_number``) is kept; a row
whose hash already occurs in a recent window's curated rows is a duplicate of that (earliest) row.

Near: datasketch ``MinHash`` over character 5-gram shingles of the normalized text (``num_perm``
permutations), ``MinHashLSH`` at ``threshold`` (estimated Jaccard). Rows are visited in
``row_number`` order; a row whose LSH candidates include a kept row with estimated Jaccard
``>= threshold`` is a near duplicate of the first such kept row, else it is kept and indexed.
Near-duplicates are looked for within the window only.

Both link the dropped row to the kept one (``duplicate_of_window``, ``duplicate_of_row``).
"""

from __future__ import annotations

import duckdb
import polars as pl

NORM_HASH_SQL = r"md5(trim(regexp_replace(lower(nfc_normalize(text)), '\s+', ' ', 'g')))"
"""DuckDB expression over a ``text`` column: the normalized-text hash (32 hex chars)."""

DUP_SCHEMA = {
    "row_number": pl.Int64(),
    "rule": pl.String(),
    "reason": pl.String(),
    "duplicate_of_window": pl.String(),
    "duplicate_of_row": pl.Int64(),
}


def norm_hashes(rows: pl.DataFrame) -> pl.DataFrame:
    """(row_number Int64, norm_hash String) for a frame with ``row_number`` and ``text``; null text
    gives a null hash. Runs ``NORM_HASH_SQL`` in an in-memory DuckDB."""
    con = duckdb.connect()
    try:
        con.register("t", rows.select("row_number", "text").to_arrow())
        out = con.sql(f"SELECT row_number, {NORM_HASH_SQL} AS norm_hash FROM t ORDER BY row_number").pl()
    finally:
        con.close()
    return out.cast({"row_number": pl.Int64, "norm_hash": pl.String})


def find_duplicates(
    rows: pl.DataFrame,
    window_key: str,
    prior: pl.DataFrame | None = None,
    *,
    exact: bool = True,
    near_threshold: float | None = 0.9,
    num_perm: int = 64,
) -> pl.DataFrame:
    """Duplicate rows of one window (``DUP_SCHEMA``), in ``row_number`` order.

    Args:
        rows: ``row_number`` (Int64, unique) and ``text`` (String, non-null), e.g. redacted curated rows.
        window_key: this window (for links to kept rows of the same window).
        prior: ``window_key``, ``row_number``, ``norm_hash`` of recent windows' curated rows
            (cross-window exact duplicates); None or empty = within the window only.
        exact: look for exact duplicates at all.
        near_threshold: estimated Jaccard in (0, 1] for near duplicates; None disables.
        num_perm: MinHash permutations (more = more accurate, slower).

    Returns: rule ``duplicate_exact`` (reason ``"duplicate_exact: same normalized text as row N
    of window W"``) or ``duplicate_near`` (``"duplicate_near: estimated Jaccard 0.93 >= 0.9 with
    row N of window W"``).
    """
    empty = pl.DataFrame(schema=DUP_SCHEMA)
    if rows.height == 0 or (not exact and near_threshold is None):
        return empty
    hashed = norm_hashes(rows).join(rows.select("row_number", "text"), on="row_number").sort("row_number")
    out: list[dict] = []
    dropped: set[int] = set()
    if exact:
        first = hashed.group_by("norm_hash").agg(kept=pl.col("row_number").min())
        prev = None
        if prior is not None and prior.height:
            prev = (prior.sort("window_key", "row_number").group_by("norm_hash", maintain_order=True)
                    .agg(pw=pl.col("window_key").first(), pr=pl.col("row_number").first()))
        j = hashed.join(first, on="norm_hash", how="left")
        if prev is not None:
            j = j.join(prev, on="norm_hash", how="left")
        else:
            j = j.with_columns(pw=pl.lit(None, pl.String), pr=pl.lit(None, pl.Int64))
        j = j.filter(pl.col("pw").is_not_null() | (pl.col("kept") != pl.col("row_number")))
        for rn, kept, pw, pr in j.select("row_number", "kept", "pw", "pr").iter_rows():
            if pw is not None:
                out.append(_dup(rn, "duplicate_exact", f"same normalized text as row {pr} of window {pw}", pw, pr))
            elif kept != rn:
                out.append(_dup(rn, "duplicate_exact", f"same normalized text as row {kept} of window {window_key}",
                                window_key, kept))
            else:
                continue
            dropped.add(rn)
    if near_threshold is not None:
        out += _near(hashed.filter(~pl.col("row_number").is_in(list(dropped))), window_key, near_threshold, num_perm)
    if not out:
        return empty
    return pl.DataFrame(out, schema=DUP_SCHEMA).sort("row_number")


def _dup(rn: int, rule: str, why: str, window: str, row: int) -> dict:
    return {"row_number": rn, "rule": rule, "reason": f"{rule}: {why}", "duplicate_of_window": window,
            "duplicate_of_row": row}


def _shingles(text: str, k: int = 5) -> set[bytes]:
    t = " ".join(text.lower().split())
    if len(t) <= k:
        return {t.encode("utf-8", "surrogatepass")}
    return {t[i : i + k].encode("utf-8", "surrogatepass") for i in range(len(t) - k + 1)}


def _near(rows: pl.DataFrame, window_key: str, threshold: float, num_perm: int) -> list[dict]:
    if not 0 < threshold <= 1:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
    from datasketch import MinHash, MinHashLSH

    numbers = rows.get_column("row_number").to_list()
    texts = rows.get_column("text").to_list()
    sigs = MinHash.bulk([_shingles(t or "") for t in texts], num_perm=num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    out = []
    kept: dict[int, MinHash] = {}
    for rn, sig in zip(numbers, sigs):
        best = None
        for cand in sorted(lsh.query(sig)):
            score = sig.jaccard(kept[cand])
            if score >= threshold:
                best = (cand, score)
                break
        if best is None:
            lsh.insert(rn, sig)
            kept[rn] = sig
        else:
            out.append(_dup(rn, "duplicate_near",
                            f"estimated Jaccard {best[1]:.2f} >= {threshold} with row {best[0]} of window {window_key}",
                            window_key, best[0]))
    return out
