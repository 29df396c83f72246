"""Hostile landing folders (issue 20, problems 3, 4 and landing retention of 9), with real files, a real
Dagster instance and the real ingest/curate/forget steps on a real DuckDB warehouse."""

import json
import os
import time

import dagster as dg
import pytest
from st_helpers import tiny_home, window_records, write_window

from assets.ingest import raw_window
from orchestration.definitions import build_definitions
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.pipeline.curate import curate
from orchestration.pipeline.forget import forget
from orchestration.pipeline.ingest import UnreadableWindow, ingest_window
from orchestration.resources import StreamtuneResource, build_resources
from orchestration.sensors import build_landing_sensor
from orchestration.sources.landing import (
    LandingScanner,
    closed_files_after,
    prune_archive,
    resolve_window_file,
    retire_landed_file,
    window_key_for,
)
from orchestration.store.warehouse import Warehouse

OLD_NS = 10**18  # 2001: settled at first sight


def _tick(instance, home, cursor):
    """One real landing-sensor tick; partition requests applied as the daemon does."""
    ctx = dg.build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),
        cursor=cursor,
        resources={"streamtune": StreamtuneResource(home=str(home.home))},
        definitions=build_definitions(home),
    )
    result = build_landing_sensor(1).evaluate_tick(ctx)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def _warehouse(home) -> Warehouse:
    wh = Warehouse(home.paths.warehouse)
    wh.init_schema()
    return wh


def _raw_counts(home) -> dict[str, int]:
    wh = _warehouse(home)
    with wh.connect(read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("raw.events", "raw.rejects")}


def _old(path):
    os.utime(path, ns=(OLD_NS, OLD_NS), follow_symlinks=False)
    return path


def test_symlinks_out_of_the_landing_folder_are_refused_and_never_read(tmp_path):
    home = tiny_home(tmp_path / "home")
    landing = home.paths.landing
    outside = write_window(tmp_path / "elsewhere", "secret.jsonl", window_records(0, 5))
    (landing / "passwd.jsonl").symlink_to("/etc/passwd")
    (landing / "outside.jsonl").symlink_to(outside)
    with dg.instance_for_test() as instance:
        first = _tick(instance, home, None)
        assert first.run_requests == [] and instance.get_dynamic_partitions(WINDOWS_PARTITION) == []
        assert "'passwd.jsonl' is a symbolic link (to /etc/passwd): refused" in first.skip_message
        assert f"'outside.jsonl' is a symbolic link (to {outside}): refused" in first.skip_message
        assert closed_files_after(landing, None) == []  # `run --until-idle` does not wait for them
        # a regular file landed next to them is ingested; the refusals are not repeated every tick
        _old(write_window(landing, "w-01.jsonl", window_records(1, 5)))
        second = _tick(instance, home, first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["w-01"]
        assert "symbolic link" not in (second.skip_message or "")
    # a run asked for by hand (UI re-materialization with the link's name) is refused too: nothing read
    for name in ("passwd.jsonl", "outside.jsonl"):
        with pytest.raises(UnreadableWindow, match="is a symbolic link"):
            ingest_window(
                home, Warehouse(home.paths.warehouse), window_key_for(name), file_hint=name, dagster_run_id="r"
            )
    assert _raw_counts(home) == {"raw.events": 0, "raw.rejects": 0}


def test_symlink_inside_the_landing_folder_is_accepted_by_setting(tmp_path):
    home = tiny_home(tmp_path / "home", landing_symlinks="inside")
    landing = home.paths.landing
    target = _old(write_window(landing / "store", "w-01.jsonl", window_records(0, 5)))
    (landing / "w-01.jsonl").symlink_to(target)
    (landing / "w-02.jsonl").symlink_to(write_window(tmp_path / "elsewhere", "x.jsonl", window_records(1, 5)))
    assert [f.name for f in closed_files_after(landing, None, symlinks="inside")] == ["w-01.jsonl"]
    wh = _warehouse(home)
    out = ingest_window(home, wh, "w-01", file_hint="w-01.jsonl", dagster_run_id="r")
    assert out.rows == 5
    with pytest.raises(UnreadableWindow, match="not a regular file inside"):
        ingest_window(home, wh, "w-02", file_hint="w-02.jsonl", dagster_run_id="r")


def test_a_symlink_is_ordered_by_itself_and_never_stalls_the_loop(tmp_path):
    """A link whose target is older than the cursor used to sort by the target's mtime: never handed out, and
    `run --until-idle` waited for it forever (it counts closed files without a partition)."""
    for symlinks in ("refuse", "inside"):
        home = tiny_home(tmp_path / symlinks, landing_symlinks=symlinks)
        landing = home.paths.landing
        with dg.instance_for_test() as instance:
            cursor = _tick(instance, home, None).cursor
            _old(write_window(landing, "w-01.jsonl", window_records(0, 5)))
            cursor = _tick(instance, home, cursor).cursor
            os.utime(landing / "w-01.jsonl", ns=(OLD_NS + 10, OLD_NS + 10))  # the cursor is past the old target
            old = _old(write_window(landing / "old", "w-00.jsonl", window_records(1, 5)))
            (landing / "w-00.jsonl").symlink_to(old)
            _old(write_window(landing, "w-02.jsonl", window_records(2, 5)))
            os.utime(landing / "w-02.jsonl", ns=(OLD_NS + 20, OLD_NS + 20))
            ticks = [_tick(instance, home, cursor)]
            ticks.append(_tick(instance, home, ticks[-1].cursor))  # a fresh link settles at the next tick
            handed = [r.partition_key for t in ticks for r in t.run_requests]
            assert handed == (["w-02"] if symlinks == "refuse" else ["w-02", "w-00"])
            # the until-idle predicate: every closed file in landing/ has a partition
            known = set(instance.get_dynamic_partitions(WINDOWS_PARTITION))
            landed = {window_key_for(f.name) for f in closed_files_after(landing, None, symlinks=symlinks)}
            assert landed <= known


def test_a_file_written_in_place_is_ingested_whole_once_it_holds_still(tmp_path):
    home = tiny_home(tmp_path / "home", landing_settle_s=60.0)  # the default: a fresh file must hold still a tick
    landing = home.paths.landing
    records = window_records(0, 200)
    path = landing / "w-01.jsonl"
    with dg.instance_for_test() as instance:
        with path.open("w") as fh:  # in place, no temporary name
            fh.writelines(json.dumps(r) + "\n" for r in records[:101])
            fh.flush()
            first = _tick(instance, home, None)
            assert first.run_requests == [] and "still changing or just landed" in first.skip_message
            time.sleep(0.01)
            fh.writelines(json.dumps(r) + "\n" for r in records[101:])
        second = _tick(instance, home, first.cursor)
        assert second.run_requests == []  # it grew since the last tick
        third = _tick(instance, home, second.cursor)
        assert [r.partition_key for r in third.run_requests] == ["w-01"]
        ran = dg.materialize(
            [raw_window],
            partition_key="w-01",
            resources=build_resources(home),
            instance=instance,
            tags=third.run_requests[0].tags,
        )
        assert ran.success
        assert ran.asset_materializations_for_node("raw_window")[0].metadata["source_rows"].value == 200
    assert _raw_counts(home) == {"raw.events": 200, "raw.rejects": 0}


def test_changed_and_late_files_are_reported_once_never_silently_ignored(tmp_path):
    home = tiny_home(tmp_path / "home")
    landing = home.paths.landing
    with dg.instance_for_test() as instance:
        _old(write_window(landing, "w-01.jsonl", window_records(0, 20)))
        first = _tick(instance, home, None)
        assert [r.partition_key for r in first.run_requests] == ["w-01"]
        # rewritten in place, shorter, after its window was handed out
        write_window(landing, "w-01.jsonl", window_records(0, 3))
        os.utime(landing / "w-01.jsonl", ns=(OLD_NS + 5, OLD_NS + 5))
        # and a file copied with its old mtime (cp -p) after the cursor moved on
        _old(write_window(landing, "w-00.jsonl", window_records(1, 3)))
        os.utime(landing / "w-00.jsonl", ns=(OLD_NS - 5, OLD_NS - 5))
        second = _tick(instance, home, first.cursor)
        # the late file's window is new: ingested anyway (else `run --until-idle` would wait for it forever)
        assert [r.partition_key for r in second.run_requests] == ["w-00"]
        logged = LandingScanner.parse(second.cursor).reported
        assert "changed after window 'w-01' was handed out (size" in logged["w-01.jsonl"]
        assert "has an mtime older than the last file handed out ('w-01.jsonl'" in logged["w-00.jsonl"]
        third = _tick(instance, home, second.cursor)
        assert third.run_requests == [] and "w-01.jsonl" not in third.skip_message  # reported once
        landed = {window_key_for(f.name) for f in closed_files_after(landing, None)}
        assert landed <= set(instance.get_dynamic_partitions(WINDOWS_PARTITION))


def test_scanner_cursor_from_before_settling_keeps_its_position(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    _old(tmp_path / "a.jsonl")
    legacy = json.dumps({"mtime_ns": OLD_NS, "name": "a.jsonl"})
    tick = LandingScanner.parse(legacy).tick(tmp_path, known_keys={"a"})
    assert tick.ready == [] and tick.reports == []
    assert LandingScanner.parse(tick.cursor).last.name == "a.jsonl"


def _ingest_and_curate(home, name="w-01.jsonl", n=20):
    path = _old(write_window(home.paths.landing, name, window_records(0, n)))
    wh = _warehouse(home)
    key = window_key_for(name)
    ingest_window(home, wh, key, file_hint=name, dagster_run_id="r1")
    return wh, key, path, curate(home, wh, key)


def test_curated_windows_leave_the_landing_folder_by_the_retention_setting(tmp_path):
    home = tiny_home(tmp_path / "archive")  # default: archive
    wh, key, path, out = _ingest_and_curate(home)
    archived = home.paths.landing_archive / path.name
    assert not path.exists() and archived.stat().st_mtime_ns == OLD_NS
    assert archived == home.home / "archive" / "landing" / "w-01.jsonl"
    assert "archived w-01.jsonl" in out.metadata["landing_file"]
    before = wh.read_raw_window(key)
    # a retry / re-materialization of the same window finds the file in the archive: identical rows
    again = ingest_window(home, wh, key, file_hint=path.name, dagster_run_id="r2")
    assert again.rows == 20 and resolve_window_file(home.paths.landing, key, archive=archived.parent) == archived
    assert (
        wh.read_raw_window(key).drop("dagster_run_id", strict=False).equals(before.drop("dagster_run_id", strict=False))
    )

    home = tiny_home(tmp_path / "delete", landing_retention="delete")
    _, _, path, out = _ingest_and_curate(home)
    assert not path.exists() and not home.paths.landing_archive.exists() and "deleted" in out.metadata["landing_file"]

    home = tiny_home(tmp_path / "keep", landing_retention="keep")
    _, _, path, _ = _ingest_and_curate(home)
    assert path.exists() and not home.paths.landing_archive.exists()


def test_landing_retention_is_validated_at_load(tmp_path, monkeypatch):
    from orchestration.config.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="landing_retention: expected one of"):
        tiny_home(tmp_path / "bad", landing_retention="archiv")
    with pytest.raises(SettingsError, match="streamtune.toml: landing_archive_days must be >= 0"):
        tiny_home(tmp_path / "bad_days", landing_archive_days=-1)
    monkeypatch.setenv("STREAMTUNE_LANDING_SYMLINKS", "follow")
    with pytest.raises(SettingsError, match="STREAMTUNE_LANDING_SYMLINKS: expected one of"):
        load_settings(tmp_path / "env")
    monkeypatch.setenv("STREAMTUNE_LANDING_SYMLINKS", "inside")
    assert load_settings(tmp_path / "env").landing_symlinks == "inside"


def test_forget_scrubs_the_archived_landing_file(tmp_path):
    home = tiny_home(tmp_path / "home")
    _, _, path, _ = _ingest_and_curate(home)
    archived = home.paths.landing_archive / path.name
    assert '"w0-3"' in archived.read_text()
    report = forget(home, ids=["w0-3"], reason="test")
    assert report.files["landing"] == ["w-01.jsonl: -1 records"]
    assert '"w0-3"' not in archived.read_text() and '"w0-4"' in archived.read_text()
    assert archived.stat().st_mtime_ns == OLD_NS
    # a whole-window request removes the archived copy
    forget(home, wheres=["window_key = w-01"], reason="test")
    assert not archived.exists()


def test_archived_landing_files_are_deleted_by_the_sensor_after_landing_archive_days(tmp_path):
    home = tiny_home(tmp_path / "home", landing_archive_days=1e-5)  # 0.864 s
    _, _, path, _ = _ingest_and_curate(home)  # landed in 2001 (OLD_NS), archived just now
    archive = home.paths.landing_archive
    archived, notes = archive / path.name, archive / "x.txt"
    notes.write_text("not a window file")
    assert prune_archive(archive, 30) == []  # an old landing mtime does not shorten its stay in the archive
    time.sleep(1.0)
    with dg.instance_for_test() as instance:
        _tick(instance, home, None)  # a landing-sensor tick after landing_archive_days
    assert not archived.exists() and notes.exists()

    fresh = write_window(archive, "w-02.jsonl", window_records(1, 3))
    _old(fresh)  # landing mtime in 2001; archived (ctime) now
    day = 86400.0
    assert prune_archive(archive, 30, now=time.time() + 29 * day) == []
    assert prune_archive(archive, 0, now=time.time() + 3650 * day) == []  # 0 = no age limit
    assert prune_archive(archive, 30, now=time.time() + 31 * day) == ["w-02.jsonl"] and not fresh.exists()
    with pytest.raises(ValueError, match="landing_archive_days must be >= 0"):
        prune_archive(archive, -1)


def test_retire_landed_file_when_already_gone_or_kept(tmp_path):
    landing, archive = tmp_path / "landing", tmp_path / "archive"
    landing.mkdir()
    assert "not in" in retire_landed_file(landing, archive, "w.jsonl", "archive")
    (landing / "w.jsonl").write_text("{}\n")
    assert retire_landed_file(landing, archive, "w.jsonl", "keep").startswith("kept")
    assert (landing / "w.jsonl").exists() and not archive.exists()
