"""The model card as a person finds it: a link in the challenger's Dagster metadata, the card in MLflow.

Runs the loop on one small window into a home (the assets the daemon runs, materialized against the home's
Dagster instance), starts `dagster-webserver` and `mlflow server` on loopback and drives Debian's Chromium
through Playwright (the setup of tests/ui/test_browser_ui.py). Screenshots go to $STREAMTUNE_SCREENSHOTS
(docs/screenshots/ when refreshed) or tmp.
"""

import sys

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient
from st_helpers import tiny_home, window_records, write_window
from ui_fixtures import CHROMIUM, bindir, chromium_page, free_port, screenshot_dir, server, settled_screenshot

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.slow, pytest.mark.requires_tool("chromium", CHROMIUM is not None, "apt-get install chromium")]

KEY = "card-2025-01"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home where one window was ingested, gated and fine-tuned (so the challenger has a model card)."""
    from assets.checks import WINDOW_CHECKS
    from assets.curate import approved_window, curated_window
    from assets.ingest import raw_window
    from assets.train import TRAINING_ASSETS
    from orchestration.cli.daemon import open_instance, prepare_instance
    from orchestration.partitions import WINDOWS_PARTITION
    from orchestration.resources import build_resources

    settings = tiny_home(tmp_path_factory.mktemp("card-ui") / "home")
    write_window(settings.paths.landing, f"{KEY}.jsonl", window_records(0, 60))
    prepare_instance(settings)
    with open_instance(settings) as instance:
        instance.add_dynamic_partitions(WINDOWS_PARTITION, [KEY])
        resources = build_resources(settings)
        dg.materialize(
            [raw_window, curated_window, approved_window, *WINDOW_CHECKS],
            partition_key=KEY,
            resources=resources,
            instance=instance,
        )
        dg.materialize(TRAINING_ASSETS, resources=resources, instance=instance)
    return settings


@pytest.fixture(scope="module")
def servers(home, tmp_path_factory):
    from orchestration.cli.daemon import instance_env

    logs = tmp_path_factory.mktemp("logs")
    env = instance_env(home)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    dport, mport = free_port(), free_port()
    dagster_cmd = [str(bindir() / "dagster-webserver"), "-m", "orchestration.definitions", "-h", "127.0.0.1"]
    mlflow_cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", home.tracking_uri]
    mlflow_cmd += ["--artifacts-destination", str(home.paths.mlartifacts), "--host", "127.0.0.1", "--workers", "1"]
    with (
        server([*dagster_cmd, "-p", str(dport)], env, f"http://127.0.0.1:{dport}/server_info", logs / "dagster.log"),
        server([*mlflow_cmd, "--port", str(mport)], env, f"http://127.0.0.1:{mport}/health", logs / "mlflow.log"),
    ):
        yield {"dagster": f"http://127.0.0.1:{dport}", "mlflow": f"http://127.0.0.1:{mport}"}


@pytest.fixture(scope="module")
def page(servers):
    with chromium_page() as pg:
        yield pg


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory)


def _update_run(home):
    client = MlflowClient(home.tracking_uri)
    version = client.get_registered_model(home.model_name).aliases["challenger"]
    return client.get_model_version(home.model_name, version)


def test_challenger_metadata_links_to_the_model_card(page, servers, home, shots):
    mv = _update_run(home)
    page.goto(f"{servers['dagster']}/assets/challenger_model?view=events")
    page.get_by_text("model_card", exact=True).first.wait_for()
    link = page.locator("a[href$='/artifacts/model_card.md']").first
    link.wait_for()
    assert link.get_attribute("href").endswith(f"/runs/{mv.run_id}/artifacts/model_card.md")
    # bring the link's row into view without scrolling the key column out of it
    page.locator("tr", has=link).first.evaluate("row => row.scrollIntoView({block: 'center', inline: 'start'})")
    settled_screenshot(page, shots / "dagster-model-card-link.png")


def test_the_model_card_reads_in_mlflow(page, servers, home, shots):
    mv = _update_run(home)
    exp = MlflowClient(home.tracking_uri).get_experiment_by_name(home.experiment)
    page.goto(f"{servers['mlflow']}/#/experiments/{exp.experiment_id}/runs/{mv.run_id}/artifacts/model_card.md")
    # MLflow renders the Markdown: headings read without their "#"
    page.get_by_text(f"Model card: {home.model_name} v{mv.version}").first.wait_for()
    page.get_by_text("Promotion gate", exact=True).first.wait_for(state="attached")
    page.get_by_text("Quarantine and redaction", exact=True).first.wait_for(state="attached")
    settled_screenshot(page, shots / "mlflow-model-card.png")
