"""Shared fixtures: offline, quiet, CPU-only environment for every test; CI honesty for external tools.

A test that needs an external tool (Debian's Chromium, redis-server, PostgreSQL) says so with
``@pytest.mark.requires_tool(name, available, hint)`` (module-level ``pytestmark`` works too) or, in a
fixture, through the ``require_tool`` fixture. Without the tool the test skips with the hint; when the
``CI`` environment variable is set (``.ci/run`` sets it) it FAILS instead, so CI cannot pass with the
browser, Redis or PostgreSQL tests silently skipped.

Parallel runs (issue 18): ``addopts`` runs the suite on pytest-xdist workers (``-n auto``, at most 4,
``--dist loadscope``: a test file runs on one worker, so its module fixtures are built once;
``--no-loadscope-reorder``: files are handed out in collection order). Two hooks here:

- ``pytest_collection_modifyitems`` puts the files that hold a ``slow`` test first: the longest work
  starts first, so both workers stay busy to the end.
- ``pytest_xdist_auto_num_workers`` starts no workers when only named tests (``path::test``) are run.
"""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def check_tool(name: str, available: bool, hint: str) -> None:
    """Nothing if ``available``; else skip the running test, or fail it when ``CI`` is set (non-empty).

    Args:
        name: the tool, as a person would look for it (``"redis-server"``).
        available: whether the caller found it.
        hint: how to install it (``"apt-get install redis-server"``).
    """
    if available:
        return
    message = f"{name} is not available ({hint})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so a missing tool fails instead of skipping", pytrace=False)
    pytest.skip(message)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "requires_tool(name, available, hint): needs an external tool; skips without it, fails when CI is set",
    )


def pytest_runtest_setup(item):
    for mark in item.iter_markers("requires_tool"):
        check_tool(*mark.args, **mark.kwargs)


def _test_file(item) -> str:
    return item.nodeid.split("::")[0]  # relative to the rootdir


def pytest_collection_modifyitems(config, items):
    """Files holding a ``slow`` test run first, each file's tests kept together and in order: the longest work
    starts first, so both workers stay busy to the end."""
    slow_files = {_test_file(item) for item in items if item.get_closest_marker("slow")}
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (_test_file(item) not in slow_files, order[id(item)]))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: no error under -p no:xdist
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: no workers (run in this process) when every argument names tests (``file::test``): starting
    workers costs more than it saves there. None: xdist's own count ($PYTEST_XDIST_AUTO_NUM_WORKERS or CPUs)."""
    args = config.args
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or not args:
        return None
    return 0 if all("::" in arg for arg in args) else None


@pytest.fixture(scope="session")
def require_tool():
    """``check_tool`` for fixtures: ``require_tool(name, available, hint)`` skips, or fails under CI."""
    return check_tool
