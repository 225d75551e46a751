"""The notebooks in a real JupyterLab, driven by headless Chromium: they run, plot, and update live.

JupyterLab serves a temporary copy of notebooks/ with its editions (notebooks/zh/; so no output is
ever written to the repo) on a free loopback port with a token; Debian's Chromium runs through
Playwright. Each notebook of each edition runs; a Chinese one must show Chinese, in glyphs.
Screenshots go to test-artifacts/screenshots/ (``zh-02_hot_reload-done.png`` for an edition's).
"""

from __future__ import annotations

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
import urllib.error
import urllib.request
from pathlib import Path

import nbutil
import psutil
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = nbutil.ROOT / "test-artifacts" / "screenshots"
RUN_TIMEOUT = 150  # seconds for one notebook's Run All
JUPYTER = Path(sys.executable).with_name("jupyter")

# Counts src changes of every widget image: a live view that redraws swaps its image's blob URL.
WATCH_IMAGES = """() => {
  window.__imageChanges = new Map();
  new MutationObserver(records => {
    for (const r of records) {
      if (r.target.classList && r.target.classList.contains('widget-image')) {
        window.__imageChanges.set(r.target, (window.__imageChanges.get(r.target) || 0) + 1);
      }
    }
  }).observe(document.body, {attributes: true, attributeFilter: ['src'], subtree: true});
}"""

# Prompts of the notebook's code cells: "[*]:" while queued or running, "[3]:" when done.
PROMPTS = """() => Array.from(document.querySelectorAll(
  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')).map(p => p.textContent.trim())"""

# The notebook's kernel is connected and idle (Run All before that runs nothing).
KERNEL_READY = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
                 && panel.sessionContext.session.kernel;
  return Boolean(panel && panel.sessionContext.isReady && kernel && kernel.name === 'python3'
                 && kernel.connectionStatus === 'connected' && kernel.status === 'idle');
}"""

# Draws two different Chinese strings in the font of the rendered markdown: without a CJK font
# Chromium draws each character as the same empty box, so the two pictures come out identical.
CJK_GLYPHS = """([a, b]) => {
  const font = getComputedStyle(document.querySelector('.jp-RenderedMarkdown') || document.body).fontFamily;
  const draw = text => {
    const ctx = Object.assign(document.createElement('canvas'), {width: 160, height: 48}).getContext('2d');
    ctx.font = `32px ${font}`;
    ctx.fillText(text, 4, 38);
    return ctx.getImageData(0, 0, 160, 48).data;
  };
  const [x, y] = [draw(a), draw(b)];
  return {font, inked: x.some(v => v > 0), same: x.every((v, i) => v === y[i])};
}"""
CJK = re.compile(r"[\u3400-\u9fff]")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on a copy of notebooks/; yields (base url, token). Stops it and its kernels."""
    root = tmp_path / "notebooks"
    shutil.copytree(nbutil.NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # Render every cell (no virtual scrolling), so the test can see all outputs; start the
    # notebook's kernel without asking (a "Select Kernel" dialog appears when the kernel specs
    # load late).
    (settings / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none", "autoStartDefaultKernel": True})
    )
    # No "get notified about Jupyter news?" toast over the screenshots (and no network).
    apputils = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    (apputils / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    log = open(tmp_path / "jupyter.log", "wb")
    proc = subprocess.Popen(
        [
            str(JUPYTER),
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _api(base, token, "/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not start:\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}"
                    ) from None
                time.sleep(0.2)
        yield base, token
    finally:
        descendants = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        try:
            for session in _api(base, token, "/api/sessions") or []:
                _api(base, token, f"/api/sessions/{session['id']}", method="DELETE")
        except (urllib.error.URLError, ConnectionError):
            pass
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for child in descendants:  # kernels run in sessions of their own: end them by pid
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        log.close()


@pytest.fixture
def page():
    """A Chromium page (Debian's Chromium; never `playwright install`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            yield context.new_page()
            context.close()
        finally:
            browser.close()


def _run_all(page, name: str) -> tuple[list[str], dict[int, bytes]]:
    """Run All and wait until every cell ran; returns the prompts and an early picture of each
    live view, taken as soon as the view appeared (while the cells after it still run)."""
    # not awaited: the command's promise resolves only when every cell has run
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    views = page.locator("img.widget-image")
    early: dict[int, bytes] = {}
    started = time.monotonic()
    deadline = started + RUN_TIMEOUT
    while True:
        for i in range(len(early), views.count()):
            early[i] = views.nth(i).screenshot(path=str(SCREENSHOTS / f"{name}-view{i}-early.png"))
        prompts = page.evaluate(PROMPTS)
        if prompts and all(p not in ("[*]:", "[ ]:", "[]:") for p in prompts):
            return prompts, early
        if all(p in ("[ ]:", "[]:") for p in prompts) and time.monotonic() > started + 20:
            _screenshot(page, f"{name}-stuck")
            raise AssertionError("Run All started no cell within 20 s (a dialog? the kernel not connected?)")
        if time.monotonic() > deadline:
            _screenshot(page, f"{name}-stuck")
            outputs = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
            raise AssertionError(f"Run All did not finish in {RUN_TIMEOUT} s: prompts {prompts}\n{outputs[-2000:]}")
        time.sleep(0.2)


def _screenshot(page, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def _speaks_chinese(page) -> None:
    """The notebook's markdown is rendered in Chinese, with glyphs (not boxes) for it."""
    page.wait_for_selector(".jp-RenderedMarkdown :is(h1, h2)", timeout=60_000)
    headings = page.locator(".jp-RenderedMarkdown :is(h1, h2)").all_inner_texts()
    assert any(CJK.search(h) for h in headings), headings
    drawn = page.evaluate(CJK_GLYPHS, ["热加载", "心跳检"])
    assert drawn["inked"] and not drawn["same"], f"Chromium has no CJK font for {drawn['font']} (fonts-wqy-zenhei)"


@pytest.mark.timeout(RUN_TIMEOUT + 90)
@pytest.mark.parametrize("lang, path", nbutil.editions(), ids=[nbutil.edition_id(*e) for e in nbutil.editions()])
def test_notebook_runs_in_jupyterlab_with_live_views(jupyterlab, page, lang, path):
    assert path.exists(), f"{path.relative_to(nbutil.ROOT)} is missing"
    base, token = jupyterlab
    name = nbutil.edition_id(lang, path)  # the screenshots' names
    page.goto(f"{base}/lab/tree/{path.relative_to(nbutil.NOTEBOOKS)}?token={token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=60_000)
    if lang == "zh":
        _speaks_chinese(page)
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    page.evaluate(WATCH_IMAGES)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    prompts, early = _run_all(page, name)
    # Run All stops at a cell error, leaving the cells after it unrun ("[ ]:")
    assert all(p.startswith("[") and p[1:-2].isdigit() for p in prompts), prompts
    # JupyterLab shows an error output as stderr text with the traceback
    texts = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    assert "Traceback" not in texts and "Error displaying widget" not in texts, texts[-2000:]

    # widgets rendered, with a real picture; static figures rendered too
    widget_sizes = page.evaluate(
        "() => Array.from(document.querySelectorAll('img.widget-image')).map(i => i.naturalWidth)"
    )
    assert widget_sizes and all(w > 100 for w in widget_sizes), widget_sizes
    assert page.locator(".jp-RenderedImage img").count() >= 1
    # a live view redrew itself while the notebook ran (a view backs off to 4x its render time,
    # so a loaded machine redraws less often: twice is the least that shows it is live)
    changes = page.evaluate("() => Math.max(0, ...window.__imageChanges.values())")
    assert changes >= 2, f"the live views redrew only {changes} times"

    # the kernel speaks the edition's language: a live view's status line (lab/live.py)
    status = nbutil.shown("{n} events", lang)
    assert any(status in t for t in page.locator(".widget-html").all_inner_texts()), f"no live view says {status!r}"

    views = page.locator("img.widget-image")
    late = {i: views.nth(i).screenshot(path=str(SCREENSHOTS / f"{name}-view{i}-end.png")) for i in early}
    assert any(early[i] != late[i] for i in early), "no live view looks different at the end than when it appeared"
    views.last.scroll_into_view_if_needed()
    _screenshot(page, f"{name}-done")
