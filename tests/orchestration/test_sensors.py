"""Landing sensor and fine-tune trigger, evaluated with real (temporary) Dagster instances."""

import os

import dagster as dg
import pytest
from st_helpers import tiny_home, window_records, write_window

from orchestration.definitions import build_definitions
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.resources import StreamtuneResource
from orchestration.sensors import build_landing_sensor, build_new_window_sensor
from orchestration.sources.landing import window_key_for


@pytest.fixture
def home(tmp_path):
    return tiny_home(tmp_path / "home")


def _tick(sensor, instance, home, cursor):
    ctx = dg.build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),
        cursor=cursor,
        resources={"streamtune": StreamtuneResource(home=str(home.home))},
        definitions=build_definitions(home),
    )
    result = sensor.evaluate_tick(ctx)
    # the daemon applies partition requests before launching runs; do the same here
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def test_landing_sensor_requests_one_run_per_new_file_and_moves_cursor(home):
    sensor = build_landing_sensor(1)
    with dg.instance_for_test() as instance:
        result = _tick(sensor, instance, home, None)
        assert result.run_requests == [] and result.skip_message

        landing = home.paths.landing
        for i, name in enumerate(["s-01.jsonl", "s 02.jsonl"]):
            p = write_window(landing, name, window_records(i, 3))
            os.utime(p, ns=(10**18 + i, 10**18 + i))
        result = _tick(sensor, instance, home, None)
        keys = [r.partition_key for r in result.run_requests]
        assert keys == ["s-01", window_key_for("s 02.jsonl")]
        assert [r.run_key for r in result.run_requests] == keys
        assert result.run_requests[1].tags["streamtune/landing_file"] == "s 02.jsonl"
        assert sorted(instance.get_dynamic_partitions(WINDOWS_PARTITION)) == sorted(keys)

        # same cursor again ("restart" after the tick was committed): nothing new
        cursor = result.cursor
        again = _tick(sensor, instance, home, cursor)
        assert again.run_requests == []

        # a third file lands later: only it is requested
        p = write_window(landing, "s-03.jsonl", window_records(3, 3))
        os.utime(p, ns=(10**18 + 5, 10**18 + 5))
        third = _tick(sensor, instance, home, cursor)
        assert [r.partition_key for r in third.run_requests] == ["s-03"]
        assert third.cursor != cursor


def test_landing_sensor_survives_instance_restart(home, tmp_path):
    """Partitions and the cursor live in the persistent instance directory."""
    sensor = build_landing_sensor(1)
    p = write_window(home.paths.landing, "s-01.jsonl", window_records(0, 3))
    os.utime(p, ns=(10**18, 10**18))  # landed long ago: settled at first sight (a fresh file waits a tick)
    inst_dir = tmp_path / "dagster_home"
    inst_dir.mkdir()
    with dg.instance_for_test(temp_dir=str(inst_dir)) as instance:
        first = _tick(sensor, instance, home, None)
    with dg.instance_for_test(temp_dir=str(inst_dir)) as instance:
        assert instance.get_dynamic_partitions(WINDOWS_PARTITION) == ["s-01"]
        assert _tick(sensor, instance, home, first.cursor).run_requests == []


def test_landing_sensor_ignores_files_still_being_written(home):
    sensor = build_landing_sensor(1)
    (home.paths.landing / ".s-01.jsonl.tmp").write_text("{}\n")
    (home.paths.landing / "s-01.jsonl.part").write_text("{}\n")
    with dg.instance_for_test() as instance:
        assert _tick(sensor, instance, home, None).run_requests == []


@pytest.mark.parametrize("settle_s", [60.0, 0.0])
def test_a_freshly_landed_file_waits_one_tick_unless_landing_settle_s_is_zero(tmp_path, settle_s):
    from orchestration.sources.landing import land_file

    home = tiny_home(tmp_path / "home", landing_settle_s=settle_s)
    sensor = build_landing_sensor(1)
    land_file(write_window(tmp_path / "stream", "s-01.jsonl", window_records(0, 3)), home.paths.landing)
    with dg.instance_for_test() as instance:
        first = _tick(sensor, instance, home, None)
        second = _tick(sensor, instance, home, first.cursor)
    if settle_s:  # first sight of a fresh file: settling; unchanged at the next tick: handed out
        assert first.run_requests == [] and "just landed" in first.skip_message
        assert [r.partition_key for r in second.run_requests] == ["s-01"]
    else:  # an atomic-rename producer: handed out at first sight, once
        assert [r.partition_key for r in first.run_requests] == ["s-01"]
        assert second.run_requests == []


def test_new_window_sensor_requests_a_finetune_per_approved_window(home):
    sensor = build_new_window_sensor(1)
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, cursor=None)
        assert sensor.evaluate_tick(ctx).run_requests == []
        instance.add_dynamic_partitions(WINDOWS_PARTITION, ["a", "b"])
        for key in ["a", "b"]:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="approved_window", partition=key))
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=None))
        assert len(result.run_requests) == 2
        assert {r.tags["streamtune/window"] for r in result.run_requests} == {"a", "b"}
        assert all(r.tags["streamtune/trigger"] == "new_data" for r in result.run_requests)
        again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert again.run_requests == []
