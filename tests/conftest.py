"""Shared fixtures: every test must leave no process of its own behind."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from server_helpers import ServerProcess, serving, write_app

# The suite reads the lab's English, its source, whatever the machine's locale; tests/test_i18n.py
# asks for Chinese where it checks it.
os.environ["LAB_LANG"] = "en"

# A suite started as a background job (`make test &`) inherits SIGINT ignored, and so would every
# program a test starts: Ctrl-C tests (the demo, the check) need it at its default, as a terminal has.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _children() -> dict[int, str]:
    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            out[p.pid] = " ".join(p.cmdline()) or p.name()
        except psutil.Error:
            continue
    return out


@pytest.fixture(autouse=True)
def no_leftover_processes(request):
    """Fails a test that leaves a child (or grandchild) process running or unreaped.

    Session-scoped fixtures (JupyterLab for the browser test) start their processes before the
    first test that uses them; those are in ``before`` of every later test, so they are not blamed.
    """
    before = set(_children())
    yield
    deadline = time.monotonic() + 5
    left: dict[int, str] = {}
    while time.monotonic() < deadline:
        left = {pid: cmd for pid, cmd in _children().items() if pid not in before}
        if not left:  # zombies count: a child that was never waited for is a leak too
            return
        time.sleep(0.05)
    for pid in left:  # clean up what we can, then fail
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    pytest.fail(f"processes left behind: {left}")


@pytest.fixture
def serve(tmp_path):
    """``serve(*args)`` starts ``python -m lab serve`` and stops it (and checks it) afterwards."""
    yield from serving(tmp_path)


@pytest.fixture(scope="module")
def hello(tmp_path_factory):
    """The example app (``lab.examples.hello``) served by one worker, shared by a module's tests."""
    server = ServerProcess(tmp_path_factory.mktemp("hello"), target="lab.examples.hello", workers=1)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def app_dir(tmp_path):
    """A folder with a versioned app (``app.py`` answering ``v1``)."""
    directory = tmp_path / "app"
    directory.mkdir()
    write_app(directory, "v1")
    return directory
