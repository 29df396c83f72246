"""The user's view, tested the way a person sees it: headless Chromium on the Dagster UI and MLflow UI.

Runs the loop on two small windows into a home (the same assets the daemon runs, materialized
against the home's own Dagster instance), starts `dagster-webserver` and `mlflow server` on
loopback over that home, and drives Debian's Chromium through Playwright (no browser download).
Screenshots go to $STREAMTUNE_SCREENSHOTS (the README's docs/screenshots/ when refreshed) or tmp.
"""

import contextlib
import sys

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window
from ui_fixtures import CHROMIUM, bindir, chromium_page, free_port, screenshot_dir, server

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.slow, pytest.mark.requires_tool("chromium", CHROMIUM is not None, "apt-get install chromium")]

LOOP_ASSETS = [
    "raw_window",
    "curated_window",
    "approved_window",
    "training_snapshot",
    "base_model",
    "challenger_model",
    "champion_model",
]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home where two windows were ingested, gated and fine-tuned."""
    from assets.checks import WINDOW_CHECKS
    from assets.curate import approved_window, curated_window
    from assets.ingest import raw_window
    from assets.train import TRAINING_ASSETS
    from orchestration.cli.daemon import open_instance, prepare_instance
    from orchestration.partitions import WINDOWS_PARTITION
    from orchestration.resources import build_resources

    settings = tiny_home(tmp_path_factory.mktemp("ui") / "home")
    prepare_instance(settings)
    with open_instance(settings) as instance:
        for i in range(2):
            key = f"s-2025-0{i + 1}"
            write_window(settings.paths.landing, f"{key}.jsonl", window_records(i, 80))
            instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
            dg.materialize(
                [raw_window, curated_window, approved_window, *WINDOW_CHECKS],
                partition_key=key,
                resources=build_resources(settings),
                instance=instance,
            )
            dg.materialize(
                TRAINING_ASSETS,
                resources=build_resources(settings),
                instance=instance,
                tags={"streamtune/trigger": "new_data"},
            )
    return settings


@pytest.fixture(scope="module")
def servers(home, tmp_path_factory):
    from orchestration.cli.daemon import instance_env

    logs = tmp_path_factory.mktemp("logs")
    env = instance_env(home)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    dport, mport = free_port(), free_port()
    dagster_cmd = [
        str(bindir() / "dagster-webserver"),
        "-m",
        "orchestration.definitions",
        "-h",
        "127.0.0.1",
        "-p",
        str(dport),
    ]
    mlflow_cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        home.tracking_uri,
        "--artifacts-destination",
        str(home.paths.mlartifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(mport),
        "--workers",
        "1",
    ]
    with (
        server(dagster_cmd, env, f"http://127.0.0.1:{dport}/server_info", logs / "dagster.log"),
        server(mlflow_cmd, env, f"http://127.0.0.1:{mport}/health", logs / "mlflow.log"),
    ):
        yield {"dagster": f"http://127.0.0.1:{dport}", "mlflow": f"http://127.0.0.1:{mport}"}


@pytest.fixture(scope="module")
def page(servers):
    with chromium_page() as pg:
        yield pg


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory)


def _dismiss_community_modal(page, timeout_ms: int = 5_000):
    """Dagster's "Join the community" dialog covers the page (again after a reload); a person clicks Skip."""
    skip = page.get_by_role("button", name="Skip")
    with contextlib.suppress(playwright_api.TimeoutError):
        skip.click(timeout=timeout_ms)


def _shot(page, path, **kw):
    """Screenshot what a person sees: the community dialog dismissed first if it is up."""
    if "127.0.0.1" in page.url and "#/" not in page.url:  # Dagster pages (MLflow's use hash routes)
        _dismiss_community_modal(page, timeout_ms=2_000)
    # let charts finish loading; a busy machine may never go fully idle, so do not insist
    with contextlib.suppress(playwright_api.TimeoutError):
        page.wait_for_load_state("networkidle", timeout=15_000)
    page.wait_for_timeout(1_500)
    page.screenshot(path=str(path), **kw)


def test_asset_graph_shows_every_asset_of_the_loop(page, servers, shots):
    # the lineage of the last asset, all the way upstream: the whole loop, groups expanded
    page.goto(f"{servers['dagster']}/assets/champion_model?view=lineage&lineageScope=upstream&lineageDepth=8")
    _dismiss_community_modal(page)
    for name in LOOP_ASSETS:
        page.get_by_text(name, exact=True).first.wait_for()
    _shot(page, shots / "dagster-lineage.png")


def test_a_windows_checks_and_metadata_are_visible(page, servers, shots):
    page.goto(f"{servers['dagster']}/assets/curated_window?view=checks")
    for check in ["text_not_null", "text_length_bounds", "window_not_empty", "rows_conserved"]:
        page.get_by_text(check, exact=True).first.wait_for()
    _shot(page, shots / "dagster-window-checks.png")
    page.goto(f"{servers['dagster']}/assets/curated_window?view=partitions&partition=s-2025-02")
    page.get_by_text("quarantined_by_rule").first.wait_for()
    page.get_by_text("dagster/row_count").first.wait_for()
    _shot(page, shots / "dagster-window-metadata.png")


def test_mlflow_compare_view_shows_two_runs_with_their_metrics(page, servers, home, shots):
    client = MlflowClient(home.tracking_uri)
    exp = client.get_experiment_by_name(home.experiment)
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name.startswith("update")]
    assert len(runs) == 2
    ids = ",".join(f'"{r.info.run_id}"' for r in runs)
    page.goto(f'{servers["mlflow"]}/#/compare-runs?runs=[{ids}]&experiments=["{exp.experiment_id}"]')
    for r in runs:
        page.get_by_text(r.info.run_name).first.wait_for()
    page.get_by_text("challenger_new_bpb").first.wait_for()
    page.get_by_text("champion_new_bpb").first.wait_for()
    _shot(page, shots / "mlflow-compare.png", full_page=True)


def test_registered_model_shows_the_champion_alias(page, servers, home, shots):
    page.goto(f"{servers['mlflow']}/#/models/{home.model_name}")
    page.get_by_text("champion").first.wait_for()
    page.get_by_text("challenger").first.wait_for()
    _shot(page, shots / "mlflow-registry.png")


def test_challenger_metadata_shows_samples_and_links_to_mlflow(page, servers, shots):
    page.goto(f"{servers['dagster']}/assets/challenger_model?view=events")
    for key in ["sample_generations", "mlflow_run", "mlflow_model_version", "eval_matrix"]:
        page.get_by_text(key, exact=True).first.wait_for()
    _shot(page, shots / "dagster-challenger-metadata.png", full_page=True)


def test_mlflow_run_lists_its_datasets_and_system_metrics(page, servers, home, shots):
    client = MlflowClient(home.tracking_uri)
    exp = client.get_experiment_by_name(home.experiment)
    run = next(r for r in client.search_runs([exp.experiment_id]) if r.info.run_name.startswith("update"))
    assert {d.dataset.name for d in run.inputs.dataset_inputs} >= {"train", "new_eval", "retention_eval"}
    page.goto(f"{servers['mlflow']}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}")
    page.get_by_text("retention_eval").first.wait_for()
    page.goto(f"{servers['mlflow']}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}/system-metrics")
    page.get_by_text("cpu_utilization_percentage").first.wait_for()
    _shot(page, shots / "mlflow-run-system-metrics.png")
