"""Drift monitor through Dagster for real: DuckDB file, sqlite MLflow, Dagster instance, MiniLM, tiny champion."""

import json

import dagster as dg
import duckdb
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import NEW_TOPIC, SMALL_DRIFT, stable_records, tiny_home, write_window

from assets.checks import WINDOW_CHECKS
from assets.curate import approved_window, curated_window
from assets.ingest import raw_window
from assets.monitor import drift_report, window_profile
from assets.train import TRAINING_ASSETS
from orchestration.definitions import build_definitions
from orchestration.partitions import WINDOWS_PARTITION
from orchestration.resources import build_resources
from orchestration.sensors import build_drift_sensor, build_new_window_sensor, build_profile_sensor

INGEST = [raw_window, curated_window, approved_window, *WINDOW_CHECKS]
DRIFT = SMALL_DRIFT


def ingest(settings, instance, name, records):
    write_window(settings.paths.landing, name, records)
    key = name.rsplit(".jsonl", 1)[0]
    instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
    assert dg.materialize(INGEST, partition_key=key, resources=build_resources(settings), instance=instance).success
    return key


def profile(settings, instance, key):
    result = dg.materialize([window_profile], partition_key=key, resources=build_resources(settings), instance=instance)
    assert result.success
    return result.asset_materializations_for_node("window_profile")[0].metadata


def tick(sensor, instance, settings, cursor=None):
    ctx = dg.build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), cursor=cursor, definitions=build_definitions(settings)
    )
    return sensor.evaluate_tick(ctx)


@pytest.fixture
def home(tmp_path):
    return tiny_home(tmp_path / "home", drift=DRIFT)


def test_window_profile_report_and_drift_sensor(home):
    moved = [{"id": f"q{i}", "text": NEW_TOPIC[i % 2].format(x=f"lab{i % 7}") + f" rev {i % 3}"} for i in range(60)]
    with dg.instance_for_test() as instance:
        keys = [ingest(home, instance, f"s-0{i + 1}.jsonl", stable_records(i, 60)) for i in range(3)]
        # profile requests follow approvals
        req = tick(build_profile_sensor(1), instance, home)
        assert [r.partition_key for r in req.run_requests] == keys
        first = profile(home, instance, keys[0])  # no reference, no champion: nothing tested, no alarm
        assert first["drift"].value is False and "token_js" not in first
        assert dg.materialize(TRAINING_ASSETS, resources=build_resources(home), instance=instance).success
        for k in keys[1:]:
            md = profile(home, instance, k)
            assert md["drift"].value is False, md["reason"].value
            assert md["champion_version"].value == "1"  # v2 trained on it: the champion before v2 is scored
        keys.append(ingest(home, instance, "s-04.jsonl", moved))
        md = profile(home, instance, keys[3])
        assert md["drift"].value is True, md["reason"].value
        confirmed = md["confirmed"].value
        assert confirmed and {"token_js", "embedding_mmd2", "lm_bpb"} <= set(md.keys())
        assert md["embedding_mmd2_p"].value < md["alpha"].value
        assert md["champion_version"].value == "2"  # base v1, first update v2

        sensor = build_drift_sensor(1, cooldown_s=3600.0)
        result = tick(sensor, instance, home)
        by_job = {}
        for r in result.run_requests:
            by_job.setdefault(r.job_name, []).append(r)
        assert len(by_job["finetune"]) == 1 and len(by_job["redraw_drift_report"]) == 1
        tags = by_job["finetune"][0].tags
        assert tags["streamtune/trigger"] == "drift" and tags["streamtune/window"] == keys[3]
        assert tags["streamtune/drift_stats"] == ",".join(confirmed)
        assert all(f"streamtune/drift.{s}" in tags for s in confirmed)
        cursor = result.cursor
        # the same profiles under a staleness bound of 2 windows: s-02 is the 2nd window without a retrain,
        # s-04's drift resets the count
        stale = tick(build_drift_sensor(1, cooldown_s=3600.0, max_windows_without_retrain=2), instance, home)
        fts = [
            (r.tags["streamtune/trigger"], r.tags["streamtune/window"])
            for r in stale.run_requests
            if r.job_name == "finetune"
        ]
        assert fts == [("staleness", keys[1]), ("drift", keys[3])]
        assert json.loads(stale.cursor)["since_retrain"] == []
        # emerging terms reach the metadata (redacted) and the report table
        assert "| term | z |" in md["emerging_terms"].value and md["emerging_terms_over_threshold"].value >= 0
        assert md["calibration"].value["emerging_z"] == "permutation"
        assert tick(sensor, instance, home, cursor).run_requests == []
        # the same drift again inside the cooldown: a report, no second fine-tune
        profile(home, instance, keys[3])
        again = tick(sensor, instance, home, cursor)
        assert [r.job_name for r in again.run_requests] == ["redraw_drift_report"]
        assert json.loads(again.cursor)["last_request_ts"] == json.loads(cursor)["last_request_ts"]

        report = dg.materialize(
            [window_profile, drift_report], selection=[drift_report], resources=build_resources(home), instance=instance
        )
        rmd = report.asset_materializations_for_node("drift_report")[0].metadata
        assert "data:image/png;base64," in rmd["report"].value and rmd["windows"].value == 4
        assert rmd["drift_windows"].value == [keys[3]]
        assert (home.paths.root / "monitor" / "drift_report.png").stat().st_size > 1000

    with duckdb.connect(str(home.paths.warehouse), read_only=True) as con:
        rows = con.execute(
            "SELECT window_key, drift, reference_keys, lm_bpb IS NOT NULL FROM monitor.window_profile "
            "ORDER BY window_key"
        ).fetchall()
    assert rows == [
        ("s-01", False, [], False),
        ("s-02", False, ["s-01"], True),
        ("s-03", False, ["s-01", "s-02"], True),
        ("s-04", True, ["s-01", "s-02", "s-03"], True),
    ]
    client = MlflowClient(home.tracking_uri)
    exp = client.get_experiment_by_name(f"{home.experiment}-drift")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 5  # one per profile materialization
    latest = max(runs, key=lambda r: r.info.start_time)
    assert latest.data.tags["streamtune.drift"] == "true" and "embedding_mmd2" in latest.data.metrics


def test_a_window_scores_the_same_champion_whether_its_fine_tune_ran_first_or_not(home):
    """The profile and the fine-tune of a window are separate runs in either order; the profile scores the
    champion that had not seen the window both ways (prequential), so its statistics do not depend on the order."""
    with dg.instance_for_test() as instance:
        for i in range(2):
            ingest(home, instance, f"s-0{i + 1}.jsonl", stable_records(i, 60))
        assert dg.materialize(TRAINING_ASSETS, resources=build_resources(home), instance=instance).success  # v2
        key = ingest(home, instance, "s-03.jsonl", stable_records(2, 60))
        first = profile(home, instance, key)  # the profile ran first: v2 is the champion
        assert dg.materialize(TRAINING_ASSETS, resources=build_resources(home), instance=instance).success  # v3
        then = profile(home, instance, key)  # the fine-tune ran first: v3 (trained on s-03) is the champion
    with duckdb.connect(str(home.paths.warehouse), read_only=True) as con:
        moved = con.execute("SELECT model_version, parent_version, promoted FROM train.updates ORDER BY created_at")
        assert moved.fetchall()[-1] == ("3", "2", True)
    assert first["champion_version"].value == then["champion_version"].value == "2"
    assert (
        first["lm_bpb"].value == then["lm_bpb"].value
        and first["bytes_per_token"].value == then["bytes_per_token"].value
    )
    assert "no update has trained" in first["champion_scored"].value
    assert "the champion before the first update" in then["champion_scored"].value


def test_retrain_on_drift_silences_the_new_window_sensor(tmp_path):
    home = tiny_home(tmp_path / "home", drift={**DRIFT, "retrain_on": "drift"})
    with dg.instance_for_test() as instance:
        ingest(home, instance, "s-01.jsonl", stable_records(0, 20))
        quiet = tick(build_new_window_sensor(1, enabled=False), instance, home)
        loud = tick(build_new_window_sensor(1), instance, home)
    assert quiet.run_requests == [] and quiet.cursor == loud.cursor and len(loud.run_requests) == 1
    defs = build_definitions(home)
    assert {s.name for s in defs.sensors} >= {"drift_sensor", "profile_sensor", "new_window_sensor"}
    defs.get_repository_def().load_all_definitions()  # what the daemon's code server does (unique op/job names)


def report_profile(instance, key, drift):
    """A ``window_profile`` materialization event in the real instance, with the metadata the asset writes."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="window_profile",
            partition=key,
            metadata={
                "drift": drift,
                "confirmed": dg.MetadataValue.json(["emerging_z"] if drift else []),
                "emerging_z": 7.5 if drift else 2.0,
                "emerging_z_p": 0.001 if drift else 0.5,
            },
        )
    )


def test_staleness_bound_and_cooldown_through_evaluate_tick(home):
    """K = 3: a fine-tune after 3 windows without one; drift resets the count.

    Cooldown-suppressed drift still counts.
    """
    keys = [f"w-{i:02d}" for i in range(1, 11)]
    drift = {"w-04": True, "w-05": True}  # w-05 falls in w-04's cooldown
    sensor = build_drift_sensor(1, cooldown_s=3600.0, max_windows_without_retrain=3)
    got, cursor = [], None
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(WINDOWS_PARTITION, keys)
        for batch in (keys[:2], keys[2:5], keys[5:]):  # the cursor carries the count across ticks
            for k in batch:
                report_profile(instance, k, drift.get(k, False))
            res = tick(sensor, instance, home, cursor)
            cursor = res.cursor
            got += [
                (r.tags["streamtune/trigger"], r.tags["streamtune/window"], r.tags["streamtune/windows_since_retrain"])
                for r in res.run_requests
                if r.job_name == "finetune"
            ]
            assert [r.job_name for r in res.run_requests].count("redraw_drift_report") == 1
        # w-03: 3rd window; w-04: drift (count 1, resets); w-05: drift inside the cooldown, suppressed but
        # counted; w-07 completes 3 windows since w-04's retrain; w-10 the next 3
        assert got == [
            ("staleness", "w-03", "3"),
            ("drift", "w-04", "1"),
            ("staleness", "w-07", "3"),
            ("staleness", "w-10", "3"),
        ], got
        # without the bound only the drift request remains
        plain = tick(build_drift_sensor(1, cooldown_s=3600.0), instance, home)
        assert [r.tags["streamtune/trigger"] for r in plain.run_requests if r.job_name == "finetune"] == ["drift"]


def test_a_fine_tune_from_elsewhere_resets_the_staleness_count(home):
    """K = 3: a scheduled fine-tune after w-02 covers w-01..w-02, so the staleness request waits for w-05;
    the sensor's own requests (trigger drift/staleness) do not count as 'elsewhere'."""
    keys = [f"w-{i:02d}" for i in range(1, 9)]
    sensor = build_drift_sensor(1, cooldown_s=3600.0, max_windows_without_retrain=3)
    got, cursor = [], None
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(WINDOWS_PARTITION, keys)
        for i, batch in enumerate((keys[:2], keys[2:5], keys[5:])):
            for k in batch:
                report_profile(instance, k, False)
            res = tick(sensor, instance, home, cursor)
            cursor = res.cursor
            got += [
                (r.tags["streamtune/trigger"], r.tags["streamtune/window"])
                for r in res.run_requests
                if r.job_name == "finetune"
            ]
            for r in res.run_requests:  # what the daemon does with the sensor's own requests: they become runs
                if r.job_name == "finetune":
                    instance.add_run(dg.DagsterRun(job_name="finetune", tags=r.tags))
            if i == 0:
                instance.add_run(dg.DagsterRun(job_name="finetune", tags={"streamtune/trigger": "schedule"}))
        assert "finetune_ts" in json.loads(cursor)
    # without the scheduled run: staleness at w-03 and w-06; with it (after w-01..w-02): w-05 and w-08
    assert got == [("staleness", "w-05"), ("staleness", "w-08")], got


def test_staleness_hours_count_from_the_first_profile_before_any_fine_tune(home):
    """``policy = "drift"``, ``staleness_bound_h = 1``: a home never fine-tuned is not stale at its first
    window (the hours count from the first profile the sensor saw); once the bound has passed, the next
    profiled window requests a ``staleness`` fine-tune."""
    from orchestration.config.settings import ScheduleConfig

    sensor = build_drift_sensor(1, cooldown_s=3600.0, schedule=ScheduleConfig(policy="drift", staleness_bound_h=1.0))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(WINDOWS_PARTITION, ["w-01", "w-02"])
        report_profile(instance, "w-01", False)
        first = tick(sensor, instance, home)
        assert [r for r in first.run_requests if r.job_name == "finetune"] == []
        state = json.loads(first.cursor)
        assert state["since_retrain"] == ["w-01"] and "origin_ts" in state
        state["origin_ts"] -= 2 * 3600  # two hours pass before the next window is profiled
        report_profile(instance, "w-02", False)
        second = tick(sensor, instance, home, json.dumps(state))
    finetunes = [r for r in second.run_requests if r.job_name == "finetune"]
    assert [r.tags["streamtune/trigger"] for r in finetunes] == ["staleness"]
    assert "staleness_bound_h 1" in finetunes[0].tags["streamtune/trigger_reason"]
    assert finetunes[0].tags["streamtune/windows_since_retrain"] == "2"
