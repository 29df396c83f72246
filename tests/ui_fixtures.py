"""Servers for browser tests: a home where the loop ran, the Dagster webserver and `mlflow server` on loopback."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} not up after {timeout_s} s: {log.read_text(errors='replace')[-2000:]}")


@contextlib.contextmanager
def server(cmd: list[str], env: dict, health_url: str, log: Path, timeout_s: float = 180):
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(health_url, timeout_s, proc, log)
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def bindir() -> Path:
    return Path(sys.executable).parent


@contextlib.contextmanager
def chromium_page():
    """A headless Debian Chromium page (viewport 1600 x 1000, 60 s default timeout) driven by Playwright."""
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def screenshot_dir(tmp_path_factory) -> Path:
    """$STREAMTUNE_SCREENSHOTS (docs/screenshots/ when the README's images are refreshed) or a tmp folder."""
    d = Path(os.environ.get("STREAMTUNE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def settled_screenshot(page, path, **kw) -> None:
    """Dismiss Dagster's community dialog if it is up, let the page settle (not insisting: a busy machine may
    never go network-idle), take the screenshot."""
    from playwright import sync_api

    with contextlib.suppress(sync_api.TimeoutError):
        page.get_by_role("button", name="Skip").click(timeout=2_000)
    with contextlib.suppress(sync_api.TimeoutError):
        page.wait_for_load_state("networkidle", timeout=15_000)
    page.wait_for_timeout(1_500)
    page.screenshot(path=str(path), **kw)
