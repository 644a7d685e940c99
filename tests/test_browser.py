"""The live panel in a real browser: JupyterLab + Debian's chromium, driven by Playwright.

Opens lesson 00 in JupyterLab, runs all cells, waits for the panel to render (it fails when the widget
never renders, e.g. a missing lab extension), switches device and a knob, presses Run and checks that the
curves redraw, the time readout changes and the runs table gains a row; then starts a long run and
presses Stop mid-run. Screenshots go to ``test-artifacts/``.

Needs /usr/bin/chromium (``apt-get install chromium``). Skipped with one line when it is missing, except
in CI (CI=true), where it must run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NOTEBOOK = "00_tour.ipynb"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if CHROMIUM is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI=true but chromium is missing: .ci/run installs it (apt-get install chromium)")
    pytest.skip("browser test skipped: no chromium (enable: `sudo apt-get install chromium`)", allow_module_level=True)

playwright = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a copy of the notebooks (so autosave never touches the repo)."""
    work = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", work / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = work / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    no_news = {"fetchNews": "false", "checkForUpdates": False}
    (settings / "notification.jupyterlab-settings").write_text(json.dumps(no_news))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"), "LESSONS_SEED": os.environ.get("LESSONS_SEED", "0")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--ServerApp.port_retries=0",
           "--LabApp.news_url=", "--allow-root"]
    log = open(work / "server.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {(work / 'server.log').read_text()[-2000:]}") from None
            time.sleep(0.5)
    else:
        raise RuntimeError("jupyter lab did not answer within 60 s")
    yield base, token, work
    os.killpg(proc.pid, signal.SIGTERM)  # the server and its kernels
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@contextlib.contextmanager
def _browser(tmp_path, height: int):
    """Debian's chromium with a fresh profile (launch() refuses a user-data dir); yields (context, page)."""
    with playwright.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1400, "height": height})
        try:
            yield ctx, (ctx.pages[0] if ctx.pages else ctx.new_page())
        finally:
            ctx.close()


def _run_all(page, url: str):
    """Open ``url`` in JupyterLab, Run All once the kernel is connected, return the rendered panel's locator."""
    page.goto(url, timeout=60_000)
    # the kernel must be connected before Run All does anything
    page.get_by_text(re.compile(r"\| Idle")).first.wait_for(timeout=90_000)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    panel = page.locator(".lessons-live-panel")
    panel.wait_for(state="visible", timeout=120_000)  # fails when the widget never renders
    return panel


def _panel_text(page, selector: str) -> str:
    return page.locator(f".lessons-live-panel {selector}").first.inner_html()


def test_live_panel_in_jupyterlab(lab, tmp_path):
    base, token, work = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with _browser(tmp_path, height=2400) as (_ctx, page):
        try:
            panel = _run_all(page, f"{base}/lab/tree/notebooks/{NOTEBOOK}?token={token}")
            # the notebook's own panel.run() leaves one row once the cell has finished
            page.wait_for_function(
                "() => (document.querySelector('.lessons-live-panel table.lessons-runs')?.rows.length || 0) >= 2",
                timeout=120_000)
            panel.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "panel_after_run_all.png"), full_page=True)
            loss_before = _panel_text(page, ".lessons-loss-chart svg")
            readout_before = panel.locator(".lessons-readout").inner_text()

            # switch device (CPU is always there; a GPU button is disabled with its reason when absent)
            panel.get_by_role("button", name="CPU").click()
            gpu = panel.get_by_role("button", name=re.compile("GPU"))
            if gpu.count() and "GPU unavailable" in panel.inner_text():
                assert gpu.first.is_disabled()
            # turn a knob: optimizer adam -> sgd
            panel.get_by_role("button", name="sgd").click()
            panel.get_by_role("button", name="Run").click()
            page.wait_for_function(
                "() => document.querySelector('.lessons-live-panel table.lessons-runs').rows.length >= 3",
                timeout=120_000)
            table = _panel_text(page, "table.lessons-runs")
            assert "optimizer=sgd" in table, table
            assert _panel_text(page, ".lessons-loss-chart svg") != loss_before, "curves did not redraw"
            readout_after = panel.locator(".lessons-readout").inner_text()
            assert readout_after != readout_before and "ms/step" in readout_after and "run 2 done" in readout_after
            page.screenshot(path=str(ARTIFACTS / "panel_after_second_run.png"), full_page=True)

            # a long run (smallest batch, most epochs, via the sliders' keyboard keys), stopped mid-run
            for label, key in (("batch size", "Home"), ("epochs", "End")):
                slider = panel.locator(".widget-slider", has=page.get_by_text(label, exact=True))
                slider.locator(".noUi-handle").click()
                page.keyboard.press(key)
            panel.get_by_role("button", name="Run").click()
            stop = panel.get_by_role("button", name="Stop")
            page.wait_for_function(
                "() => document.querySelector('.lessons-live-panel').innerText.includes('running')", timeout=60_000)
            assert panel.get_by_role("button", name="Run").is_disabled() and stop.is_enabled()
            stop.click()
            page.wait_for_function(
                "() => document.querySelector('.lessons-live-panel table.lessons-runs').rows.length >= 4",
                timeout=60_000)
            table = _panel_text(page, "table.lessons-runs")
            assert "stopped by user" in table, table
            assert "batch_size=16" in table and "epochs=100" in table, table
            assert not panel.get_by_role("button", name="Run").is_disabled()
            assert stop.is_disabled()
            page.screenshot(path=str(ARTIFACTS / "panel_after_stop.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "panel_failure.png"), full_page=True)
            raise


def test_parallel_panel_starts_processes_from_jupyterlab(lab, tmp_path):
    """Lesson 10's panel: a click in the browser makes the kernel start training processes (forkserver, gloo on
    127.0.0.1) and the results come back into the widget."""
    import nbformat

    base, token, work = lab
    nb = nbformat.v4.new_notebook()
    code = "from lessons_lib.parallel import lab as par\npanel = par.make_panel()\npanel"
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, work / "notebooks" / "scratch_parallel.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)
    with _browser(tmp_path, height=1600) as (_ctx, page):
        try:
            panel = _run_all(page, f"{base}/lab/tree/notebooks/scratch_parallel.ipynb?token={token}")
            panel.get_by_role("button", name="async (Hogwild)").click()
            panel.get_by_role("button", name="sparse (LSH 5%)").click()
            panel.get_by_role("button", name="Run").click()
            page.wait_for_function(
                "() => (document.querySelector('.lessons-live-panel table.lessons-runs')?.rows.length || 0) >= 2",
                timeout=120_000)
            table = _panel_text(page, "table.lessons-runs")
            assert "mode=hogwild" in table and "update=sparse" in table and "processes=" in table, table
            readout = panel.locator(".lessons-readout").inner_text()
            assert "run 1 done" in readout and "ms/step" in readout, readout
            assert 'class="series"' in _panel_text(page, ".lessons-acc-chart svg")  # curves were drawn
            page.screenshot(path=str(ARTIFACTS / "parallel_panel_after_run.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "parallel_panel_failure.png"), full_page=True)
            raise
