"""Window-balanced reservoir: balance, bound, determinism, uniformity inside a window, held-out exclusion."""

import polars as pl
import pytest

from training.replay import replay_count, sample_replay, update_buffer


def rows(window: str, n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "window_key": [window] * n,
            "row_number": list(range(n)),
            "record_id": [f"{window}-{i}" for i in range(n)],
            "text": [f"{window} text {i}" for i in range(n)],
        }
    )


def test_buffer_stays_bounded_and_balanced_across_windows():
    buf = update_buffer(pl.DataFrame(), rows("w1", 100), 30)
    assert buf.height == 30 and set(buf["window_key"]) == {"w1"}
    buf = update_buffer(buf, rows("w2", 100), 30)
    buf = update_buffer(buf, rows("w3", 5), 30)  # a small window keeps all it has
    counts = dict(buf.group_by("window_key").len().iter_rows())
    assert counts == {"w1": 10, "w2": 10, "w3": 5}
    buf = update_buffer(buf, rows("w4", 100), 31)
    counts = dict(buf.group_by("window_key").len().iter_rows())
    assert counts["w1"] == 8 and counts["w2"] == 8 and counts["w4"] == 7 and buf.height <= 31


def test_shrinking_keeps_a_subset_of_the_previous_sample():
    """Reservoir property: rows dropped from a window are never re-admitted; kept rows are a subset."""
    b1 = update_buffer(pl.DataFrame(), rows("w1", 200), 40)
    b2 = update_buffer(b1, rows("w2", 200), 40)
    kept = set(b2.filter(pl.col("window_key") == "w1")["record_id"])
    assert kept <= set(b1["record_id"]) and len(kept) == 20


def test_reservoir_is_roughly_uniform_inside_a_window():
    hits = [0, 0]  # first half vs second half of the window
    for seed in range(200):
        buf = update_buffer(pl.DataFrame(), rows("w", 20), 4, seed=seed)
        for r in buf["row_number"]:
            hits[r >= 10] += 1
    assert abs(hits[0] - hits[1]) < 0.15 * sum(hits)


def test_deterministic_and_held_out_rows_never_enter():
    a = update_buffer(pl.DataFrame(), rows("w1", 50), 20, seed=3, exclude_record_ids=["w1-1", "w1-2"])
    b = update_buffer(pl.DataFrame(), rows("w1", 50), 20, seed=3, exclude_record_ids=["w1-1", "w1-2"])
    assert a.equals(b)
    assert not {"w1-1", "w1-2"} & set(a["record_id"])


def test_replay_count_and_sampling():
    assert replay_count(300, 0.25) == 100 and replay_count(300, 0.0) == 0
    with pytest.raises(ValueError):
        replay_count(10, 1.0)
    assert sample_replay([], 5) == []
    drawn = sample_replay(["a", "b", "c"], 7, seed=1)
    assert len(drawn) == 7 and set(drawn[:3]) == {"a", "b", "c"}
