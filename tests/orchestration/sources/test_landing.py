import os

import pytest

from orchestration.sources.landing import (
    LandedFile,
    closed_files_after,
    is_window_file,
    land_file,
    parse_cursor,
    replay,
    resolve_window_file,
    window_key_for,
)


@pytest.mark.parametrize(
    "name, key",
    [
        ("pypi-2024-09.jsonl", "pypi-2024-09"),
        ("a.csv", "a.csv"),
        ("a.jsonl.gz", "a.jsonl.gz"),
        ("a.csv.jsonl", "a.csv.jsonl"),
        ("my file (1).jsonl", "my_file_1-14e8c920"),
    ],
)
def test_window_key_for_is_stable_and_safe(name, key):
    assert window_key_for(name) == key


def test_window_key_for_unsafe_names_never_carry_sql_metacharacters():
    names = ["x'; DROP TABLE raw.events;--.jsonl", 'quo"te.jsonl', "ümlaut.jsonl", "a b.csv", "..jsonl"]
    keys = [window_key_for(n) for n in names]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert all(c.isalnum() and c.isascii() or c in "._-" for c in key), key
        assert 0 < len(key) <= 100


def test_temp_and_hidden_files_are_not_windows():
    assert is_window_file("w.jsonl")
    assert not is_window_file(".w.jsonl.tmp")
    assert not is_window_file("w.jsonl.part")
    assert not is_window_file("notes.txt")


def test_closed_files_after_cursor_is_monotonic(tmp_path):
    for i, name in enumerate(["b.jsonl", "a.jsonl", "c.jsonl"]):
        p = tmp_path / name
        p.write_text("{}\n")
        os.utime(p, ns=(1_000 + i, 1_000 + i))
    (tmp_path / ".d.jsonl.tmp").write_text("{}\n")
    files = closed_files_after(tmp_path, None)
    assert [f.name for f in files] == ["b.jsonl", "a.jsonl", "c.jsonl"]
    cursor = parse_cursor(files[0].cursor())
    assert cursor == LandedFile(1_000, "b.jsonl")
    assert [f.name for f in closed_files_after(tmp_path, cursor)] == ["a.jsonl", "c.jsonl"]
    assert closed_files_after(tmp_path, files[-1]) == []


def test_parse_cursor_rejects_garbage():
    assert parse_cursor(None) is None
    with pytest.raises(ValueError, match="unreadable landing cursor"):
        parse_cursor("not json")


def test_land_file_is_atomic_and_fresh(tmp_path):
    src = tmp_path / "src" / "w1.jsonl"
    src.parent.mkdir()
    src.write_text('{"text": "x"}\n')
    os.utime(src, ns=(1, 1))
    dst = land_file(src, tmp_path / "landing")
    assert dst.read_text() == src.read_text()
    assert dst.stat().st_mtime_ns > 1
    assert sorted(p.name for p in (tmp_path / "landing").iterdir()) == ["w1.jsonl"]


def test_replay_lands_in_name_order_with_increasing_mtime(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ["s-2025-02.jsonl", "s-2025-01.jsonl", "README.md"]:
        (src / name).write_text("{}\n")
    landed = replay(src, tmp_path / "landing")
    assert [p.name for p in landed] == ["s-2025-01.jsonl", "s-2025-02.jsonl"]
    files = closed_files_after(tmp_path / "landing", None)
    assert [f.name for f in files] == ["s-2025-01.jsonl", "s-2025-02.jsonl"]


def test_replay_of_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        replay(tmp_path / "nope", tmp_path / "landing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no window files"):
        replay(tmp_path / "empty", tmp_path / "landing")


def test_resolve_window_file_by_key_and_by_hint(tmp_path):
    (tmp_path / "my file.jsonl").write_text("{}\n")
    key = window_key_for("my file.jsonl")
    assert resolve_window_file(tmp_path, key).name == "my file.jsonl"
    assert resolve_window_file(tmp_path, "whatever", hint="my file.jsonl").name == "my file.jsonl"
    with pytest.raises(FileNotFoundError, match="belongs to window 'missing'"):
        resolve_window_file(tmp_path, "missing")
