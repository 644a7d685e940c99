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
    """Open ``url`` in JupyterLab, Run All once the kernel is connected, return the rendered panel's locator.

    ``?reset`` starts from a fresh workspace: otherwise the server restores the notebooks an earlier test opened,
    and the "| Idle" waited for below can be another notebook's kernel (seen: Run All then ran nothing)."""
    page.goto(url.replace("?", "?reset&", 1), timeout=60_000)
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


WRONG_DROPOUT = '''def dropout_forward(x, p, train, rng):
    if not train:
        return x, (None, p)
    keep = rng.random(x.shape) >= p
    return x * keep / p, (keep, p)'''

RIGHT_DROPOUT = '''def dropout_forward(x, p, train, rng):
    if not train:
        return x, (None, p)
    keep = rng.random(x.shape) >= p
    return x * keep / (1 - p), (keep, p)'''


def test_learner_writes_an_exercise_in_jupyterlab(lab, tmp_path):
    """The learner's edition in a real JupyterLab: the unwritten exercise says so and the lesson falls back to the
    reference; a wrong answer typed into the cell gets the hint that names the mistake; a right one passes."""
    import nbformat

    from lessons_lib.editions import learner_notebook

    base, token, work = lab
    nb = learner_notebook(nbformat.read(ROOT / "notebooks" / "03_dropout.ipynb", as_version=4))
    stub = next(i for i, c in enumerate(nb.cells) if "def dropout_forward" in c.source)
    assert "raise NotImplementedError" in nb.cells[stub].source
    nb.cells = nb.cells[: stub + 2]  # the lesson up to the exercise and its check (the rest is tested elsewhere)
    (work / "learner").mkdir(exist_ok=True)
    nbformat.write(nb, work / "learner" / "scratch_03.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)

    cells = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"  # the open tab's cells only

    def cell(i):
        return page.locator(cells).nth(i)

    def output(i) -> str:
        return cell(i).locator(".jp-OutputArea").inner_text()

    def write_and_check(code: str, expect: str) -> str:
        editor = cell(stub).locator(".cm-content")
        editor.click()
        page.keyboard.press("Control+A")
        page.keyboard.insert_text(code)
        page.keyboard.press("Shift+Enter")  # run the exercise cell, move to the check cell
        page.keyboard.press("Shift+Enter")  # run the check
        page.wait_for_function(
            "([q, i, s]) => document.querySelectorAll(q)[i].innerText.includes(s)",
            arg=[cells, stub + 1, expect], timeout=60_000)
        return output(stub + 1)

    with _browser(tmp_path, height=2400) as (_ctx, page):
        try:
            # ?reset: a fresh workspace, so the notebooks other tests opened are not restored beside this one
            page.goto(f"{base}/lab/tree/learner/scratch_03.ipynb?reset&token={token}", timeout=60_000)
            page.get_by_text(re.compile(r"\| Idle")).first.wait_for(timeout=90_000)
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            page.wait_for_function("([q, i]) => document.querySelectorAll(q)[i].innerText.includes('Not written yet')",
                                   arg=[cells, stub + 1], timeout=120_000)
            first = output(stub + 1)
            assert "library's reference" in first and "Correct" not in first, first
            page.screenshot(path=str(ARTIFACTS / "learner_not_written.png"), full_page=True)

            wrong = write_and_check(WRONG_DROPOUT, "Not yet")
            assert "1/p instead of 1/(1−p)" in wrong and "Correct" not in wrong, wrong
            page.screenshot(path=str(ARTIFACTS / "learner_wrong.png"), full_page=True)

            right = write_and_check(RIGHT_DROPOUT, "Correct")
            assert right.lstrip().startswith("✓ Correct") and "use your dropout_forward" in right, right
            page.screenshot(path=str(ARTIFACTS / "learner_right.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "learner_failure.png"), full_page=True)
            raise
