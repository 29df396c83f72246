"""The code location loads and wires every job, sensor, schedule and check."""

import dagster as dg
import yaml
from st_helpers import tiny_home

from orchestration.cli.daemon import run_requesting_sensors
from orchestration.definitions import build_definitions


def test_definitions_load_with_every_job_sensor_and_schedule(tmp_path):
    defs = build_definitions(tiny_home(tmp_path))
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("ingest_window").partitions_def.name == "windows"
    assert defs.resolve_job_def("finetune")
    assert {s.name for s in defs.sensors} == {
        "landing_sensor",
        "new_window_sensor",
        "profile_sensor",
        "drift_sensor",
        "run_failure_alert",
        "gate_alert_sensor",
        "run_outputs_cleanup",
    }
    # `until idle` waits for a fresh tick of the sensors that can request runs, not of the alert and clean-up
    # sensors, whose 10-30 s intervals would outlast the quiet-time fallback
    assert run_requesting_sensors(tiny_home(tmp_path)) == {
        "landing_sensor",
        "new_window_sensor",
        "profile_sensor",
        "drift_sensor",
    }
    assert defs.resolve_schedule_def("periodic_finetune").cron_schedule == "0 */6 * * *"
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "raw_window",
        "curated_window",
        "approved_window",
        "training_snapshot",
        "base_model",
        "challenger_model",
        "model_update",
        "champion_model",
        "window_profile",
        "drift_report",
    }
    checks = {k.name for k in graph.asset_check_keys}
    assert {"text_not_null", "text_length_bounds", "window_not_empty", "rows_conserved"} <= checks


def test_every_duckdb_asset_is_in_the_duckdb_pool(tmp_path):
    defs = build_definitions(tiny_home(tmp_path))
    graph = defs.resolve_asset_graph()
    for key in [
        "raw_window",
        "curated_window",
        "approved_window",
        "training_snapshot",
        "model_update",
        "champion_model",
        "window_profile",
        "drift_report",
    ]:
        node = graph.get(dg.AssetKey(key))
        assert node.pools == {"duckdb"}, key
    for key in ["base_model", "challenger_model"]:
        assert graph.get(dg.AssetKey(key)).pools == {"training"}, key


def test_blocking_checks_are_partitioned_like_their_asset(tmp_path):
    defs = build_definitions(tiny_home(tmp_path))
    for checks_def in defs.asset_checks:
        for spec in checks_def.check_specs:
            if spec.asset_key.to_user_string() in {"raw_window", "curated_window"}:
                assert spec.partitions_def is not None and spec.partitions_def.name == "windows", spec.name


def test_schedule_cron_comes_from_settings(tmp_path):
    defs = build_definitions(tiny_home(tmp_path, finetune_cron="15 3 * * *"))
    assert defs.resolve_schedule_def("periodic_finetune").cron_schedule == "15 3 * * *"


def test_instance_template_has_the_pools_and_fine_tune_limit():
    from importlib import resources

    cfg = yaml.safe_load(resources.files("orchestration").joinpath("templates/dagster.yaml").read_text())
    assert cfg["concurrency"]["pools"]["default_limit"] == 1
    assert {"key": "streamtune/pipeline", "value": "finetune", "limit": 1} in cfg["concurrency"]["runs"][
        "tag_concurrency_limits"
    ]
    # fine-tunes and drift profiles (torch on every core) never share the machine's cores
    assert {"key": "streamtune/compute", "value": "model", "limit": 1} in cfg["concurrency"]["runs"][
        "tag_concurrency_limits"
    ]
    from orchestration.jobs import finetune_job, monitor_job

    assert finetune_job.tags["streamtune/compute"] == monitor_job.tags["streamtune/compute"] == "model"


def test_the_gate_judges_the_recorded_update_right_before_the_champion(tmp_path):
    defs = build_definitions(tiny_home(tmp_path))
    graph = defs.resolve_asset_graph()
    gate = next(s for c in defs.asset_checks for s in c.check_specs if s.name == "challenger_beats_champion")
    assert gate.asset_key == dg.AssetKey("model_update") and gate.blocking
    assert graph.get(dg.AssetKey("champion_model")).parent_keys == {dg.AssetKey("model_update")}
    assert graph.get(dg.AssetKey("model_update")).parent_keys == {dg.AssetKey("challenger_model")}
    job = defs.resolve_job_def("finetune")
    assert dg.AssetKey("model_update") in job.asset_layer.selected_asset_keys
