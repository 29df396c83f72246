"""Issue 17 end to end through the real Dagster daemon: under ``[schedule] policy = "drift"`` fine-tunes start
on a confirmed drift alarm (``drift_sensor``) or at the window-count staleness bound, never per window.

Each scenario is one module-scoped daemon session over a tiny home (real DuckDB, sqlite MLflow, Dagster
instance, MiniLM drift profiles); the tests only read what it left behind. The drift run is also checked in
the Dagster UI (``dagster-webserver`` on loopback, Debian's Chromium through Playwright, as in tests/ui/): it is
here, not in tests/ui/, so that it reuses the shifted stream's home (pytest-xdist runs each file on one worker).
"""

import contextlib

import dagster as dg
import duckdb
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import drift_policy_home, land_and_wait, shifted_records, stable_records, write_window
from ui_fixtures import CHROMIUM, bindir, chromium_page, free_port, screenshot_dir, server, settled_screenshot

from orchestration.cli.daemon import Daemon, open_instance

# timeout: pytest-timeout counts the module fixture's daemon session (~4 min idle, 12-15 min on 2 shared cores)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ROWS = 40
"""Rows per window: enough for the monitor to confirm a change of text source, few enough to train fast."""


def _finetune_runs(settings) -> list[dg.DagsterRun]:
    """Every ``finetune`` run of the home, oldest first."""
    with open_instance(settings) as instance:
        return list(reversed(instance.get_runs(dg.RunsFilter(job_name="finetune"))))


def _updates(settings) -> list[tuple]:
    """``(model_version, window_keys, trigger)`` of ``train.updates``, oldest first."""
    with duckdb.connect(str(settings.paths.warehouse), read_only=True) as con:
        return con.execute(
            "SELECT model_version, window_keys, trigger FROM train.updates ORDER BY created_at"
        ).fetchall()


def _trained_windows(settings) -> dict[str, list[str]]:
    """model version -> windows with ``train`` rows in ``train.ledger``."""
    with duckdb.connect(str(settings.paths.warehouse), read_only=True) as con:
        rows = con.execute(
            "SELECT model_version, list(DISTINCT window_key ORDER BY window_key) FROM train.ledger "
            "WHERE role = 'train' GROUP BY model_version"
        ).fetchall()
    return dict(rows)


@pytest.fixture(scope="module")
def shifted_home(tmp_path_factory):
    """Two stable windows, then the text source changes (s-03), through one daemon session under the adaptive
    recipe. Returns ``(settings, finetune runs that existed before s-03 landed)``."""
    root = tmp_path_factory.mktemp("shifted")
    settings = drift_policy_home(root / "home", max_windows_without_retrain=0, recipe="adaptive")
    source = root / "stream"
    write_window(source, "s-01.jsonl", stable_records(0, ROWS))
    write_window(source, "s-02.jsonl", stable_records(1, ROWS))
    write_window(source, "s-03.jsonl", shifted_records(2, ROWS))
    with Daemon(settings) as daemon:
        land_and_wait(settings, source, ["s-01.jsonl", "s-02.jsonl"], daemon)
        before = _finetune_runs(settings)
        land_and_wait(settings, source, ["s-03.jsonl"], daemon)
    return settings, before


def test_shifted_stream_starts_a_drift_fine_tune(shifted_home):
    settings, before_shift = shifted_home
    assert before_shift == []  # two stable windows profiled: no alarm, no staleness bound, no fine-tune

    runs = _finetune_runs(settings)
    assert [(r.tags["streamtune/trigger"], r.tags["streamtune/window"]) for r in runs] == [("drift", "s-03")]
    run = runs[0]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    tags = run.tags
    assert tags["streamtune/trigger_reason"].startswith("drift alarm; 3 pending window(s)"), tags
    stats = tags["streamtune/drift_stats"].split(",")
    assert stats and stats != [""]
    for stat in stats:  # each confirmed statistic with its value and p-value
        assert float(tags[f"streamtune/drift.{stat}"]) == float(tags[f"streamtune/drift.{stat}"])  # not NaN
        assert 0.0 <= float(tags[f"streamtune/drift.{stat}_p"]) < 0.05
    with duckdb.connect(str(settings.paths.warehouse), read_only=True) as con:
        profiles = con.execute("SELECT window_key, drift FROM monitor.window_profile ORDER BY window_key").fetchall()
    assert profiles == [("s-01", False), ("s-02", False), ("s-03", True)]

    # the drift fine-tune trained the pending stable windows with the shifted one and registered a version
    updates = _updates(settings)
    assert [(u[1], u[2]) for u in updates] == [(["s-01", "s-02", "s-03"], "drift")]
    version = updates[0][0]
    assert _trained_windows(settings) == {version: ["s-01", "s-02", "s-03"]}
    client = MlflowClient(settings.tracking_uri)
    registered = client.get_model_version(settings.model_name, version)
    mlflow_run = client.get_run(registered.run_id)
    assert mlflow_run.data.tags["streamtune.trigger"] == "drift"
    assert mlflow_run.data.tags["dagster.run_id"] == run.run_id
    # [train] recipe = "adaptive": the recipe chosen from the drift profile is logged with its reason
    params = mlflow_run.data.params
    assert params["recipe.kind"] == "adaptive" and params["recipe.reason"], params
    assert float(params["recipe.shift"]) > 0.0


@pytest.fixture
def dagster_url(shifted_home, tmp_path_factory):
    """``dagster-webserver`` over the shifted stream's home, on loopback (for the one UI test only)."""
    from orchestration.cli.daemon import instance_env

    settings, _ = shifted_home
    log = tmp_path_factory.mktemp("logs") / "dagster.log"
    port = free_port()
    cmd = [str(bindir() / "dagster-webserver"), "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)]
    with server(cmd, instance_env(settings), f"http://127.0.0.1:{port}/server_info", log):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.requires_tool("chromium", CHROMIUM is not None, "apt-get install chromium")
def test_drift_run_shows_its_trigger_reason_and_recipe_in_the_dagster_ui(shifted_home, dagster_url, tmp_path_factory):
    playwright_api = pytest.importorskip("playwright.sync_api")
    settings, _ = shifted_home
    (run,) = [r for r in _finetune_runs(settings) if r.tags.get("streamtune/trigger") == "drift"]
    shots = screenshot_dir(tmp_path_factory)
    with chromium_page() as page:
        page.goto(f"{dagster_url}/runs/{run.run_id}")
        view_tags = page.get_by_text("View tags and config").first
        view_tags.wait_for()
        # Dagster's community dialog comes up over a fresh browser's first page (later on a loaded machine)
        with contextlib.suppress(playwright_api.TimeoutError):
            page.get_by_role("button", name="Skip").click(timeout=20_000)
        view_tags.click()
        # Dagster 1.13 lists a run's tags in that dialog, each as "key: value" (ui-core RunTag.tsx)
        dialog = page.get_by_role("dialog").filter(has_text="Run configuration")
        dialog.get_by_text("streamtune/trigger: drift", exact=True).wait_for()
        reason = run.tags["streamtune/trigger_reason"]
        dialog.get_by_text(f"streamtune/trigger_reason: {reason}", exact=True).wait_for()
        stats = run.tags["streamtune/drift_stats"]
        dialog.get_by_text(f"streamtune/drift_stats: {stats}", exact=True).wait_for()
        for stat in stats.split(","):
            p_value = run.tags[f"streamtune/drift.{stat}_p"]
            dialog.get_by_text(f"streamtune/drift.{stat}_p: {p_value}", exact=True).wait_for()
        settled_screenshot(page, shots / "drift_run.png")

        # the challenger of that run: the recipe.* metadata of the adaptive recipe
        page.goto(f"{dagster_url}/assets/challenger_model?view=events")
        for key in ("recipe.kind", "recipe.reason", "recipe.peak_lr", "recipe.shift"):
            page.get_by_text(key, exact=True).first.wait_for()
        page.get_by_text("adaptive", exact=True).first.wait_for()
        settled_screenshot(page, shots / "drift_challenger_recipe.png")


@pytest.fixture(scope="module")
def stable_home(tmp_path_factory):
    """Three stable windows under the window-count staleness bound K = 2: s-01 and s-02 land together, s-03
    after the loop went idle (so the staleness fine-tune at s-02 runs before s-03 is approved, and s-03 is
    profiled against a champion: the monitor's ``lm_bpb`` is in play and must not raise an alarm either)."""
    root = tmp_path_factory.mktemp("stable")
    settings = drift_policy_home(root / "home", max_windows_without_retrain=2)
    source = root / "stream"
    for i in range(3):
        write_window(source, f"s-0{i + 1}.jsonl", stable_records(i, ROWS))
    with Daemon(settings) as daemon:
        land_and_wait(settings, source, ["s-01.jsonl", "s-02.jsonl"], daemon)
        land_and_wait(settings, source, ["s-03.jsonl"], daemon)
    return settings


def test_unshifted_stream_under_drift_policy_starts_only_staleness_fine_tunes(stable_home):
    settings = stable_home
    runs = _finetune_runs(settings)
    got = [(r.tags["streamtune/trigger"], r.tags["streamtune/window"], r.status) for r in runs]
    # one fine-tune per K = 2 windows, at the 2nd; s-03 alone is below the bound and waits
    assert got == [("staleness", "s-02", dg.DagsterRunStatus.SUCCESS)], got
    tags = runs[0].tags
    assert tags["streamtune/trigger_reason"].startswith(
        "2 window(s) without a fine-tune >= max_windows_without_retrain 2"
    ), tags
    assert tags["streamtune/windows_since_retrain"] == "2"
    with duckdb.connect(str(settings.paths.warehouse), read_only=True) as con:
        profiles = con.execute(
            "SELECT window_key, drift, lm_bpb IS NOT NULL FROM monitor.window_profile ORDER BY window_key"
        ).fetchall()
    assert profiles == [("s-01", False, False), ("s-02", False, False), ("s-03", False, True)], profiles

    updates = _updates(settings)
    assert [(u[1], u[2]) for u in updates] == [(["s-01", "s-02"], "staleness")]
    assert _trained_windows(settings) == {updates[0][0]: ["s-01", "s-02"]}  # s-03 is still pending
    client = MlflowClient(settings.tracking_uri)
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    assert len(versions) == 2  # the base model + the staleness update
