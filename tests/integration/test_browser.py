"""The quickstart in a real browser: JupyterLab on loopback, driven in headless Chromium.

A JupyterLab server runs the notebooks from a temporary copy; Playwright drives the Debian
``chromium`` (no browser download) to open the quickstart, run every cell from the Run menu,
and check that the traffic slider widget rendered (its slider and its plot image) and that no
cell failed. The screenshot lands in test-artifacts/quickstart.png. Whatever happens, the
server is stopped and every endpoint the notebook started is deleted: the kernel's temporary
directories are created under this test's own TMPDIR, so they can be found and cleaned.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import mlshift
from mlshift.local import Local

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.serial]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
}
ALL_CELLS_DONE = """() => {
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lab:
    """A JupyterLab server on loopback with its own config, data, runtime and temp dirs."""

    def __init__(self, root: Path, scratch: Path) -> None:
        self.root, self.scratch = root, scratch
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.tmp = scratch / "tmp"
        env = dict(os.environ)
        for var, sub in [
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_DATA_DIR", "data"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("JUPYTERLAB_SETTINGS_DIR", "settings"),
            ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
            ("IPYTHONDIR", "ipython"),
            ("TMPDIR", "tmp"),
            ("MLSHIFT_HOME", "mlshift-home"),
        ]:
            (scratch / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(scratch / sub)
        # Start the notebook's kernel without asking, and do not ask about Jupyter news.
        for plugin, settings in LAB_SETTINGS.items():
            path = scratch / "settings" / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(settings))
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        self.log = open(scratch / "jupyter.log", "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                f"--IdentityProvider.token={self.token}",
                f"--port={self.port}",
                "--ServerApp.port_retries=0",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.root_dir={root}",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                *(["--allow-root"] if os.geteuid() == 0 else []),
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_up(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited: {self.logs()}")
            try:
                r = httpx.get(f"{self.url}/api/status", params={"token": self.token}, timeout=2)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"jupyter lab did not answer in {timeout:.0f} s: {self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        return (self.scratch / "jupyter.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # the server shuts its kernels down on SIGTERM
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        # A notebook that failed half-way never reached ep.delete(): clean up after it.
        for state in self.tmp.glob("mlshift-demo-*/endpoints/*/state.json"):
            home = state.parents[2]
            mlshift.Endpoint(state.parent.name, Local(state_dir=home)).delete()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing; install it with: apt-get install -y chromium")
    root = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    server = Lab(root, tmp_path)
    try:
        server.wait_up()
        yield server
    finally:
        server.stop()


def test_quickstart_runs_in_jupyterlab_and_renders_the_slider(lab: Lab, tmp_path: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.goto(f"{lab.url}/lab/tree/01-quickstart.ipynb?token={lab.token}")
            expect(page.locator(".jp-Notebook .jp-CodeCell").first).to_be_visible(timeout=60_000)
            # Wait for the kernel before running; accept the kernel dialog if one is shown.
            dialog = page.locator(".jp-Dialog .jp-mod-accept")
            with contextlib.suppress(PlaywrightTimeout):
                dialog.click(timeout=3_000)
            expect(
                page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
            ).to_have_count(1, timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            widget = page.locator(".jp-OutputArea-output .widget-slider")
            expect(widget.first).to_be_visible(timeout=150_000)
            page.wait_for_function(ALL_CELLS_DONE, timeout=150_000)
            errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
            assert errors.count() == 0, errors.all_inner_texts()

            box = (
                page.locator(".jp-OutputArea-output .widget-vbox")
                .filter(has=page.locator(".widget-slider"))
                .first
            )
            expect(box.locator("img").first).to_be_visible(timeout=30_000)  # the live plot
            assert "v1" in box.inner_text() and "applied" in box.inner_text()
            # Put the widget's top (title, slider, status, buttons) at the top of the view.
            box.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)  # let the plot image paint before the screenshot
            page.screenshot(path=str(artifacts / "quickstart.png"))
        finally:
            browser.close()
    assert (artifacts / "quickstart.png").stat().st_size > 10_000
