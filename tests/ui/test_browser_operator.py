"""The operator's views in the Dagster UI, the way a person sees them (headless Chromium via Playwright):
freshness policies and their state on approved_window / champion_model, and a challenger waiting for approval.

The home runs with ``[gate] require_approval = true``: two windows are ingested and gated, one fine-tune trains
and the gate passes the challenger, which then waits (``train.approvals``, check ``no_pending_approval`` WARN).
Dagster's own freshness daemon evaluates the policies once (``FreshnessDaemon.run_iteration`` over the home's
instance and code location) before ``dagster-webserver`` starts. Screenshots go to $STREAMTUNE_SCREENSHOTS
(docs/screenshots/ when refreshed) or tmp.
"""

from pathlib import Path

import dagster as dg
import pytest
from st_helpers import tiny_home, window_records, write_window
from ui_fixtures import CHROMIUM, bindir, chromium_page, free_port, screenshot_dir, server, settled_screenshot

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.slow, pytest.mark.requires_tool("chromium", CHROMIUM is not None, "apt-get install chromium")]


def _evaluate_freshness(settings, instance, tmp: Path) -> dict[str, str]:
    """One iteration of Dagster's freshness daemon over the home's code location; the recorded states."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.freshness import FreshnessDaemon

    code = tmp / "location.py"
    code.write_text(
        "from orchestration.config.settings import load_settings\n"
        "from orchestration.definitions import build_definitions\n"
        f"defs = build_definitions(load_settings({str(settings.home)!r}))\n"
    )
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=str(code), attribute="defs"))
    with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as workspace:
        list(FreshnessDaemon().run_iteration(workspace))
    keys = [dg.AssetKey("approved_window"), dg.AssetKey("champion_model")]
    return {k.to_user_string(): r.freshness_state.value for k, r in instance.get_freshness_state_records(keys).items()}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Approval mode: two windows approved, one fine-tune whose gate-passing challenger (v2) waits."""
    from assets.checks import WINDOW_CHECKS
    from assets.curate import approved_window, curated_window
    from assets.ingest import raw_window
    from assets.train import TRAINING_ASSETS, no_pending_approval
    from orchestration.cli.daemon import open_instance, prepare_instance
    from orchestration.partitions import WINDOWS_PARTITION
    from orchestration.resources import build_resources

    tmp = tmp_path_factory.mktemp("operator")
    settings = tiny_home(tmp / "home", gate={"retention_tolerance": 0.5, "require_approval": True})
    prepare_instance(settings)
    with open_instance(settings) as instance:
        for i in range(2):
            key = f"s-2025-0{i + 1}"
            write_window(settings.paths.landing, f"{key}.jsonl", window_records(i, 60))
            instance.add_dynamic_partitions(WINDOWS_PARTITION, [key])
            dg.materialize(
                [raw_window, curated_window, approved_window, *WINDOW_CHECKS],
                partition_key=key,
                resources=build_resources(settings),
                instance=instance,
            )
        result = dg.materialize(
            [*TRAINING_ASSETS, no_pending_approval],
            resources=build_resources(settings),
            instance=instance,
            tags={"streamtune/trigger": "new_data"},
        )
        assert result.success
        (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_pending_approval"]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["pending_approval"].value == "v2"
        states = _evaluate_freshness(settings, instance, tmp)
    assert states == {"approved_window": "PASS", "champion_model": "PASS"}
    return settings


@pytest.fixture(scope="module")
def dagster_url(home, tmp_path_factory):
    from orchestration.cli.daemon import instance_env

    logs = tmp_path_factory.mktemp("logs")
    port = free_port()
    cmd = [str(bindir() / "dagster-webserver"), "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)]
    with server(cmd, instance_env(home), f"http://127.0.0.1:{port}/server_info", logs / "dagster.log"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def page(dagster_url):
    with chromium_page() as pg:
        yield pg


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory)


def test_freshness_policy_and_state_show_on_the_champion(page, dagster_url, shots):
    page.goto(f"{dagster_url}/assets/champion_model")
    page.get_by_text("Fails if more than 3 days since last materialization").first.wait_for()
    page.get_by_text("Warns if more than 2 days since last materialization").first.wait_for()
    page.get_by_text("Passing").first.wait_for()  # the state the freshness daemon recorded (PASS)
    settled_screenshot(page, shots / "dagster-freshness.png")
    page.goto(f"{dagster_url}/assets/approved_window")
    page.get_by_text("Fails if more than 2 days since last materialization").first.wait_for()


def test_a_challenger_waiting_for_approval_shows_as_a_warning_check(page, dagster_url, shots):
    page.goto(f"{dagster_url}/assets/champion_model?view=checks")
    page.get_by_text("no_pending_approval", exact=True).first.wait_for()
    page.get_by_text("pending approval: v2").first.wait_for()
    settled_screenshot(page, shots / "dagster-pending-approval.png")
    page.goto(f"{dagster_url}/assets/champion_model?view=events")
    page.get_by_text("pending_approval", exact=True).first.wait_for()


def test_after_streamtune_promote_the_check_executed_again_passes(page, dagster_url, home, shots, monkeypatch):
    import sys

    from assets.train import TRAINING_ASSETS, no_pending_approval
    from orchestration.cli.app import main
    from orchestration.cli.daemon import open_instance
    from orchestration.config.profiles import open_registry
    from orchestration.resources import build_resources

    monkeypatch.setattr(
        sys, "argv", ["streamtune", "promote", "--version", "2", "--by", "ui-test", "--home", str(home.home)]
    )
    main()
    assert open_registry(home).version_for_alias("champion") == "2"
    with open_instance(home) as instance:  # what the check's Execute button in the UI runs
        result = dg.materialize(
            [*TRAINING_ASSETS, no_pending_approval],
            selection=dg.AssetSelection.checks(no_pending_approval),
            resources=build_resources(home),
            instance=instance,
        )
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    page.goto(f"{dagster_url}/assets/champion_model?view=checks")
    page.get_by_text("no challenger waits for approval").first.wait_for()
