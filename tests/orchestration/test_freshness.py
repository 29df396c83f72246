"""Freshness: Dagster ``FreshnessPolicy.time_window`` on approved_window and champion_model, from ``[freshness]``.

The policies are read back from the loaded Definitions' asset specs; the state is computed by Dagster's own
freshness daemon (``FreshnessDaemon.run_iteration``, what ``dagster-daemon`` runs every 30 s) over a real
instance in a temporary home whose workspace loads the home's code location. Only the clock is moved
(``dagster._core.test_utils.freeze_time``) to see WARN and FAIL without waiting hours.
"""

import time
from datetime import timedelta

import dagster as dg
import pytest
from st_helpers import tiny_home

from orchestration.config.tables import SettingsError
from orchestration.definitions import build_definitions

H = timedelta(hours=1)


def _policy(defs: dg.Definitions, asset: str):
    return defs.resolve_asset_graph().get(dg.AssetKey(asset)).freshness_policy


def test_default_windows_come_from_the_landing_cadence_and_the_schedule(tmp_path):
    defs = build_definitions(tiny_home(tmp_path / "a"))  # cadence 24 h, finetune_cron every 6 h
    windows = _policy(defs, "approved_window")
    assert (windows.warn_window.to_timedelta(), windows.fail_window.to_timedelta()) == (36 * H, 48 * H)
    champion = _policy(defs, "champion_model")
    assert (champion.warn_window.to_timedelta(), champion.fail_window.to_timedelta()) == (54 * H, 78 * H)
    assert _policy(defs, "raw_window") is None and _policy(defs, "challenger_model") is None

    daily = build_definitions(tiny_home(tmp_path / "b", finetune_cron="0 3 * * *", freshness={"landing_cadence_h": 1}))
    champion = _policy(daily, "champion_model")  # 2 C + S, 3 C + S with S = 24 h
    assert (champion.warn_window.to_timedelta(), champion.fail_window.to_timedelta()) == (26 * H, 27 * H)


def test_explicit_windows_and_disabling(tmp_path):
    settings = tiny_home(tmp_path / "a", freshness={"windows_warn_after_h": 2, "windows_fail_after_h": 3.5})
    windows = _policy(build_definitions(settings), "approved_window")
    assert (windows.warn_window.to_timedelta(), windows.fail_window.to_timedelta()) == (2 * H, 3.5 * H)
    off = build_definitions(tiny_home(tmp_path / "b", freshness={"enabled": False}))
    assert _policy(off, "approved_window") is None and _policy(off, "champion_model") is None


def test_bad_freshness_settings_name_the_table_and_key(tmp_path):
    with pytest.raises(SettingsError, match=r"\[freshness\] `windows_warn_after_h` \(5\) must be less than"):
        tiny_home(tmp_path / "a", freshness={"windows_warn_after_h": 5, "windows_fail_after_h": 4})
    with pytest.raises(SettingsError, match=r"\[freshness\] landing_cadence_h: expected float"):
        tiny_home(tmp_path / "b", freshness={"landing_cadence_h": "daily"})
    with pytest.raises(ValueError, match="approved_window: warn window 1 day, 12:00:00 must be"):
        build_definitions(tiny_home(tmp_path / "c", freshness={"windows_fail_after_h": 10}))


def _states(instance, keys) -> dict[str, str]:
    records = instance.get_freshness_state_records([dg.AssetKey(k) for k in keys])
    return {k.to_user_string(): r.freshness_state.value for k, r in records.items()}


def test_dagsters_freshness_daemon_evaluates_the_policies_on_a_real_instance(tmp_path, monkeypatch):
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.freshness import FreshnessDaemon

    from orchestration.cli.daemon import open_instance, prepare_instance

    settings = tiny_home(tmp_path / "home", freshness={"landing_cadence_h": 1})  # windows: WARN 1.5 h, FAIL 2 h
    prepare_instance(settings)
    code = tmp_path / "location.py"
    code.write_text(
        "from orchestration.config.settings import load_settings\n"
        "from orchestration.definitions import build_definitions\n"
        f"defs = build_definitions(load_settings({str(settings.home)!r}))\n"
    )
    target = InProcessWorkspaceLoadTarget(
        InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=str(code), attribute="defs"), location_name="st")
    )
    keys = ["approved_window", "champion_model", "raw_window"]
    with open_instance(settings) as instance, create_test_daemon_workspace_context(target, instance) as workspace:
        assert instance.freshness_enabled  # the home's dagster.yaml leaves Dagster's default (on)

        def evaluate(at: float | None = None) -> dict[str, str]:
            with freeze_time(at or time.time()):
                list(FreshnessDaemon().run_iteration(workspace))
            return _states(instance, keys)

        assert evaluate() == {"approved_window": "UNKNOWN", "champion_model": "UNKNOWN", "raw_window": "NOT_APPLICABLE"}
        instance.report_runless_asset_event(dg.AssetMaterialization("approved_window", partition="w-01"))
        instance.report_runless_asset_event(dg.AssetMaterialization("champion_model"))
        now = time.time()
        assert evaluate(now)["approved_window"] == "PASS"
        assert evaluate(now + 1.75 * 3600)["approved_window"] == "WARN"  # 1.5 h < age < 2 h
        late = evaluate(now + 2.5 * 3600)
        assert late["approved_window"] == "FAIL" and late["champion_model"] == "PASS"  # champion: WARN after 8 h
        assert evaluate(now + 8.5 * 3600)["champion_model"] == "WARN"  # 2 C + S = 8 h, 3 C + S = 9 h
        assert evaluate(now + 9.5 * 3600)["champion_model"] == "FAIL"
