"""[train] recipe through a real DuckDB warehouse: profiles in, recipe out; meta-learner state survives reopening."""

import json

import pytest

from orchestration.config.settings import load_settings
from orchestration.pipeline.recipe_step import choose_recipe, record_meta_reward
from orchestration.store.meta import MetaTables
from orchestration.store.warehouse import Warehouse
from training.meta import GRID, ThompsonRecipeLearner


def profile_row(key, drift, p, bpb_window=None, bpb_reference=None):
    info = {} if bpb_window is None else {"lm_bpb_window": bpb_window, "lm_bpb_reference": bpb_reference}
    return {
        "window_key": key,
        "reference_keys": [],
        "rows": 10,
        "sample_rows": 10,
        "token_js_p": p,
        "alpha": 0.05,
        "exceeded": [],
        "drift": drift,
        "confirmed": [],
        "reason": "test",
        "info": json.dumps(info),
    }


@pytest.fixture
def warehouse(tmp_path):
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    wh.init_schema()
    wh.record_window_profile(profile_row("2025-01", False, 0.6, 2.00, 2.00))
    wh.record_window_profile(profile_row("2025-02", True, 1e-4, 2.30, 2.00))
    return wh


def settings_with(tmp_path, recipe):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "streamtune.toml").write_text(f'[train]\nrecipe = "{recipe}"\nmax_steps = 20\n')
    return load_settings(home)


def test_fixed_reads_nothing_and_adaptive_follows_the_profiles(tmp_path, warehouse):
    assert choose_recipe(settings_with(tmp_path, "fixed"), tmp_path / "absent.duckdb", ["2025-02"], "s") is None
    settings = settings_with(tmp_path, "adaptive")
    calm = choose_recipe(settings, warehouse.path, ["2025-01"], "s1")
    shock = choose_recipe(settings, warehouse.path, ["2025-02"], "s2")
    assert not calm.update and calm.replay_fraction < shock.replay_fraction == pytest.approx(0.25)
    assert shock.max_steps == 30 and shock.peak_lr == pytest.approx(1.5e-3) and "+0.150" in shock.reason
    unprofiled = choose_recipe(settings, warehouse.path, ["2030-01"], "s3")
    assert unprofiled.reason.startswith("no drift profile") and unprofiled.max_steps == 10


def test_meta_state_survives_reopening_and_drives_the_choice(tmp_path, warehouse):
    settings = settings_with(tmp_path, "meta")
    first = choose_recipe(settings, warehouse.path, ["2025-02"], "snap-1")
    assert first.kind == "meta" and first.arm in {a.name for a in GRID}
    assert choose_recipe(settings, warehouse.path, ["2025-02"], "snap-1") == first  # a retried run: same arm
    best = GRID[3].name
    for i in range(30):
        MetaTables(warehouse.path).add_reward("high", best, 2.0 + 0.01 * i, f"v{i}")
        MetaTables(warehouse.path).add_reward("high", GRID[0].name, -1.0, f"w{i}")
    got = record_meta_reward(warehouse.path, first.params(), 2.3, 2.1, 200_000, "v99")
    assert got == pytest.approx(1.0)
    stats = MetaTables(warehouse.path).arm_stats()  # a fresh connection on the same file = a restart
    assert stats[("high", best)].n == 30 and stats[("high", best)].mean == pytest.approx(2.145)
    learner = ThompsonRecipeLearner(stats)
    reopened = ThompsonRecipeLearner(MetaTables(warehouse.path).arm_stats())
    assert learner.stats == reopened.stats and reopened.best("high").name == best
    picks = [choose_recipe(settings, warehouse.path, ["2025-02"], f"snap-{i}").arm for i in range(20)]
    # 10 arms never tried still get explored (their prior draws are wide); the rewarded arm is picked most
    assert max(set(picks), key=picks.count) == best and GRID[0].name not in picks, picks
    assert record_meta_reward(warehouse.path, {"recipe.kind": "adaptive"}, 2.0, 1.0, 10, "v") is None
    with pytest.raises(ValueError, match="finite"):
        MetaTables(warehouse.path).add_reward("high", best, float("nan"))


def test_arm_stats_on_a_warehouse_without_the_table(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    duckdb.connect(str(path)).execute("CREATE SCHEMA train").close()
    assert MetaTables(path).arm_stats() == {}


def test_adaptive_recipe_through_the_finetune_assets(tmp_path):
    """Real Dagster + DuckDB + sqlite MLflow: the window's profile (written by the monitor's store writer) sets the
    update's steps and lr; recipe.* land in the MLflow params and the challenger_model metadata."""
    import dagster as dg
    from mlflow.tracking import MlflowClient
    from st_helpers import TINY_SETTINGS, tiny_home, window_records, write_window

    from assets.checks import WINDOW_CHECKS
    from assets.curate import approved_window, curated_window
    from assets.ingest import raw_window
    from assets.train import TRAINING_ASSETS, challenger_beats_champion
    from orchestration.partitions import WINDOWS_PARTITION
    from orchestration.resources import build_resources

    train = {**TINY_SETTINGS["train"], "recipe": "adaptive", "max_steps": 4}
    settings = tiny_home(tmp_path / "home", train=train)
    with dg.instance_for_test() as instance:
        write_window(settings.paths.landing, "r-01.jsonl", window_records(0, 40))
        instance.add_dynamic_partitions(WINDOWS_PARTITION, ["r-01"])
        ingest = [raw_window, curated_window, approved_window, *WINDOW_CHECKS]
        resources = build_resources(settings)
        assert dg.materialize(ingest, partition_key="r-01", resources=resources, instance=instance).success
        Warehouse(settings.paths.warehouse).record_window_profile(profile_row("r-01", True, 1e-4, 2.3, 2.0))
        result = dg.materialize(
            [*TRAINING_ASSETS, challenger_beats_champion],
            resources=resources,
            instance=instance,
            selection=TRAINING_ASSETS,
            raise_on_error=False,
        )
        md = result.asset_materializations_for_node("challenger_model")[0].metadata
    assert md["recipe.kind"].value == "adaptive" and md["recipe.max_steps"].value == 6
    assert "shift s=1.00" in md["recipe.reason"].value
    params = MlflowClient(settings.tracking_uri).get_run(md["mlflow_run_id"].value).data.params
    assert params["recipe.kind"] == "adaptive" and params["train.max_steps"] == "6"
    assert float(params["train.peak_lr"]) == pytest.approx(4.5e-3) and params["recipe.replay_fraction"] == "0.25"
