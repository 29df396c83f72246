"""Exact (normalized hash, DuckDB) and near (MinHash LSH) duplicates, and their place in the gate."""

from datetime import UTC, datetime

import polars as pl

from quality.dedup import find_duplicates, norm_hashes
from quality.schema import RAW_SCHEMA
from quality.suite import QualityConfig, curate_window


def rows(*texts, key="w1"):
    n = len(texts)
    return pl.DataFrame(
        {
            "window_key": [key] * n,
            "row_number": list(range(1, n + 1)),
            "record_id": [f"r{i}" for i in range(n)],
            "text": list(texts),
            "ts": [datetime(2025, 1, 1, tzinfo=UTC)] * n,
            "metadata": ["{}"] * n,
        },
        schema=RAW_SCHEMA,
    )


def test_normalized_hash_ignores_case_and_whitespace():
    h = norm_hashes(rows("Hello  World", " hello world\n", "hello there")).get_column("norm_hash").to_list()
    assert h[0] == h[1] != h[2]


def test_exact_within_window_keeps_first_and_links_copies():
    d = find_duplicates(rows("a b c", "x", "A  B C", "a b c"), "w1", near_threshold=None)
    assert d.select("row_number", "rule", "duplicate_of_window", "duplicate_of_row").rows() == [
        (3, "duplicate_exact", "w1", 1),
        (4, "duplicate_exact", "w1", 1),
    ]
    assert d["reason"][0] == "duplicate_exact: same normalized text as row 1 of window w1"


def test_exact_against_recent_windows():
    prior = norm_hashes(rows("seen before", "other")).with_columns(window_key=pl.lit("w0"))
    d = find_duplicates(
        rows("Seen  before", "new"), "w1", prior.select("window_key", "row_number", "norm_hash"), near_threshold=None
    )
    assert d.select("row_number", "duplicate_of_window", "duplicate_of_row").rows() == [(1, "w0", 1)]


def test_near_duplicates_by_minhash_lsh():
    base = "Command line tool to manage kubernetes deployments across many clusters with ease"
    d = find_duplicates(
        rows(base, base + "!", "Completely different text about audio processing in python"),
        "w1",
        exact=False,
        near_threshold=0.8,
        num_perm=128,
    )
    assert d.select("row_number", "rule", "duplicate_of_row").rows() == [(2, "duplicate_near", 1)]
    assert "estimated Jaccard" in d["reason"][0]


def test_gate_quarantines_duplicates_with_links_and_rate():
    cfg = QualityConfig(dedup_exact=True, near_dup_threshold=0.8, near_dup_num_perm=128)
    text = "Utilities for testing postgres applications in continuous integration pipelines"
    v = curate_window(rows(text, text.upper(), text + ".", "unrelated words about graph databases"), cfg)
    assert v.curated["row_number"].to_list() == [1, 4]
    q = v.quarantine.select("row_number", "rule", "duplicate_of_window", "duplicate_of_row").rows()
    assert q == [(2, "duplicate_exact", "w1", 1), (3, "duplicate_near", "w1", 1)]
    assert v.duplicate_rate == 0.25
    assert v.rule_counts == {"duplicate_exact": 1, "duplicate_near": 1}


def test_duplicate_rate_bound_is_a_window_expectation():
    v = curate_window(rows("same", "same", "same", "other"), QualityConfig(max_duplicate_rate=0.25))
    res = {r["rule"]: r["success"] for r in v.window_results}
    assert res["duplicate_rate"] is False and res["schema_columns"] and res["window_row_count"]
    ok = curate_window(rows("a", "b"), QualityConfig(max_duplicate_rate=0.25))
    assert all(r["success"] for r in ok.window_results)


def test_near_duplicates_against_recent_windows_link_the_kept_copy():
    base = "Async client library for the kafka API with retries, batching and schema registry support"
    prior = norm_hashes(rows("unrelated text about image codecs", base, key="w0")).with_columns(
        window_key=pl.lit("w0"), text=pl.Series(["unrelated text about image codecs", base])
    )
    cur = rows("Brand new text about audio synthesis", base + " (fork)", base.replace("kafka", "Kafka  "))
    d = find_duplicates(
        cur,
        "w1",
        prior.select("window_key", "row_number", "norm_hash", "text"),
        exact=True,
        near_threshold=0.8,
        num_perm=128,
    )
    # row 3 is an exact duplicate (normalized), row 2 a near duplicate: both link to w0 row 2
    assert d.select("row_number", "rule", "duplicate_of_window", "duplicate_of_row").rows() == [
        (2, "duplicate_near", "w0", 2),
        (3, "duplicate_exact", "w0", 2),
    ]
    assert d["reason"][0].startswith("duplicate_near: estimated Jaccard ") and d["reason"][0].endswith(
        "with row 2 of window w0"
    )
    # without prior texts only exact duplicates cross windows
    d2 = find_duplicates(
        cur, "w1", prior.select("window_key", "row_number", "norm_hash"), near_threshold=0.8, num_perm=128
    )
    assert d2.select("row_number", "rule").rows() == [(3, "duplicate_exact")]


def test_gate_near_dedups_against_prior_texts_and_defaults_dedup_exact_on():
    assert QualityConfig().dedup_exact is True
    base = "Command line tool to manage postgres deployments across many clusters with ease"
    prior = norm_hashes(rows(base, key="w0")).with_columns(window_key=pl.lit("w0"), text=pl.lit(base))
    v = curate_window(
        rows(base + "!!", "something else entirely, about graph layouts", key="w1"),
        QualityConfig(near_dup_threshold=0.8, near_dup_num_perm=128),
        prior_hashes=prior,
    )
    assert v.quarantine.select("row_number", "rule", "duplicate_of_window", "duplicate_of_row").rows() == [
        (1, "duplicate_near", "w0", 1)
    ]
    assert v.curated["row_number"].to_list() == [2]
