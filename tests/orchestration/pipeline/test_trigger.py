"""The trigger policy: one decision function, and ``[schedule]`` / ``[train] recipe`` validated at load."""

import math

import pytest

from orchestration.config.settings import ScheduleConfig, SettingsError, load_settings
from orchestration.pipeline.trigger import POLICIES, new_window_sensor_enabled, should_finetune

INF = math.inf


def decide(policy, pending=("w1",), *, alarm=False, hours=1.0, bound_h=0.0, fired=False, **kw):
    return should_finetune(policy, pending, alarm, hours, bound_h, fired, **kw)


def test_every_window_is_the_loop_as_before():
    d = decide("every_window", new_window=True)
    assert (d.run, d.trigger, d.tag, d.windows) == (True, "window", "new_data", ("w1",))
    assert decide("every_window", (), alarm=True).run  # as before: drift requests, the run skips if nothing pending
    assert decide("every_window", fired=True).tag == "schedule"
    assert decide("every_window", ("a", "b"), staleness_bound_windows=2).trigger == "staleness"
    # the hour bound belongs to the drift policy only
    assert not decide("every_window", hours=100.0, bound_h=1.0).run


def test_cadence_only_runs_when_the_schedule_fires_and_something_is_pending():
    assert not decide("cadence", alarm=True, new_window=True, staleness_bound_windows=1).run
    d = decide("cadence", ("w1", "w2"), fired=True)
    assert (d.run, d.trigger, d.windows) == (True, "cadence", ("w1", "w2"))
    idle = decide("cadence", (), fired=True)
    assert not idle.run and "no window is pending" in idle.reason


def test_drift_policy_drift_then_staleness_then_schedule():
    assert not decide("drift", new_window=True).run  # new windows only accumulate
    d = decide("drift", ("w1", "w2"), alarm=True, fired=True, hours=99.0, bound_h=1.0)
    assert (d.trigger, d.tag, d.windows, d.refresh) == ("drift", "drift", ("w1", "w2"), False)
    stale = decide("drift", hours=25.0, bound_h=24.0, fired=True)
    assert stale.trigger == "staleness" and "25.0 h" in stale.reason
    assert decide("drift", hours=INF, bound_h=24.0).reason.startswith("never fine-tuned")
    assert decide("drift", hours=23.0, bound_h=24.0, fired=True).trigger == "cadence"
    assert not decide("drift", hours=23.0, bound_h=24.0).run
    assert not decide("drift", (), hours=99.0, bound_h=1.0).run  # stale but nothing new to train on


def test_a_drift_fine_tune_always_trains_on_something():
    refresh = decide("drift", (), alarm=True, drifted_windows=["w7"])
    assert (refresh.run, refresh.refresh, refresh.windows) == (True, True, ("w7",))
    assert "refresh" in refresh.reason
    assert not decide("drift", (), alarm=True).run  # neither pending nor drifted windows


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="policy must be one of"):
        decide("sometimes")
    with pytest.raises(ValueError, match=">= 0"):
        decide("drift", bound_h=-1.0)
    with pytest.raises(ValueError, match="policy"):
        new_window_sensor_enabled("weekly")


def test_only_every_window_keeps_the_new_window_sensor():
    assert [new_window_sensor_enabled(p) for p in POLICIES] == [True, False, False]
    assert not new_window_sensor_enabled("every_window", retrain_on="drift")


def test_schedule_settings_default_and_validation(tmp_path):
    assert load_settings(tmp_path).schedule == ScheduleConfig(policy="every_window", staleness_bound_h=0.0)
    toml = tmp_path / "streamtune.toml"
    toml.write_text('[schedule]\npolicy = "drift"\nstaleness_bound_h = 48\n')
    assert load_settings(tmp_path).schedule == ScheduleConfig("drift", 48)
    toml.write_text('[schedule]\npolicy = "hourly"\n')
    with pytest.raises(SettingsError, match=r"streamtune.toml: \[schedule\] policy: expected one of"):
        load_settings(tmp_path)
    toml.write_text("[schedule]\nstaleness_bound_h = -1\n")
    with pytest.raises(SettingsError, match=r"streamtune.toml: \[schedule\] staleness_bound_h must be >= 0"):
        load_settings(tmp_path)
    toml.write_text("[schedule]\nevery = 3\n")
    with pytest.raises(SettingsError, match=r"\[schedule\] unknown key"):
        load_settings(tmp_path)


def test_train_recipe_settings(tmp_path):
    s = load_settings(tmp_path)
    assert (s.train.recipe, s.train.reptile_init) == ("fixed", False)
    (tmp_path / "streamtune.toml").write_text('[train]\nrecipe = "meta"\nreptile_init = true\n')
    s = load_settings(tmp_path)
    assert (s.train.recipe, s.train.reptile_init) == ("meta", True)
    (tmp_path / "streamtune.toml").write_text('[train]\nrecipe = "clever"\n')
    with pytest.raises(SettingsError, match=r"streamtune.toml: \[train\].*`recipe` must be"):
        load_settings(tmp_path)


def _profile_event(instance, key, drift):
    """A ``window_profile`` materialization in a real instance, with the metadata the asset writes."""
    import dagster as dg

    md = {"drift": drift, "confirmed": dg.MetadataValue.json(["emerging_z"] if drift else []), "emerging_z": 7.5}
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="window_profile", partition=key, metadata=md))


def test_drift_sensor_follows_the_policy_through_evaluate_tick(tmp_path):
    """Under ``drift``: never fine-tuned -> staleness at once (hour bound), then only the drift alarm; under
    ``cadence``: nothing from the drift sensor, only the report redraw."""
    import dagster as dg
    from st_helpers import tiny_home

    from orchestration.definitions import build_definitions
    from orchestration.partitions import WINDOWS_PARTITION
    from orchestration.sensors import build_drift_sensor

    settings = tiny_home(tmp_path / "home")
    keys = ["w-01", "w-02", "w-03"]

    def finetunes(schedule):
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(WINDOWS_PARTITION, keys)
            for k in keys:
                _profile_event(instance, k, k == "w-03")
            ctx = dg.build_sensor_context(instance=instance, cursor=None, definitions=build_definitions(settings))
            res = build_drift_sensor(1, 3600.0, 0, schedule).evaluate_tick(ctx)
            assert [r.job_name for r in res.run_requests].count("redraw_drift_report") == 1
            return [(r.tags["streamtune/trigger"], r.tags["streamtune/window"]) for r in res.run_requests
                    if r.job_name == "finetune"]  # fmt: skip

    # a home never fine-tuned: the 24 h bound counts from the first profile (w-01), so it is not stale yet
    assert finetunes(ScheduleConfig("drift", staleness_bound_h=24.0)) == [("drift", "w-03")]
    assert finetunes(ScheduleConfig("drift")) == [("drift", "w-03")]
    assert finetunes(ScheduleConfig("cadence", staleness_bound_h=24.0)) == []
    assert finetunes(None) == [("drift", "w-03")]  # every_window: as before
