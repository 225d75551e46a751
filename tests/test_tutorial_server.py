"""The tutorial's server (lab/tutorial/server.py) run for real: its reload and heartbeat fail as taught."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from lab.playground import wait_until
from lab.tutorial.play import APP, TutorialServer


@pytest.fixture
def server(request):
    with TutorialServer(**getattr(request, "param", {})) as s:
        yield s


def test_an_edit_reloads_by_killing_every_worker(server):
    before = set(server.workers())
    kept = server.connect()
    assert kept.request() == "hello world client"
    server.edit(APP.replace("hello world client", "edited"))
    wait_until(lambda: len(set(server.workers()) - before) == 2, timeout=10, what="two new workers")
    assert server.request() == "edited"
    assert kept.wait_closed(timeout=10)  # an open connection is cut, not drained
    kept.close()
    assert "worker reloaded by inotify :file: : hello.py" in server.log()  # the switch found no name


def test_a_syntax_error_takes_the_server_down(server):
    server.edit(APP.replace('"hello world client"', '"oops'))
    wait_until(lambda: "reload: killing every worker" in server.log(), timeout=10, what="the reload")
    for _ in range(10):  # each worker dies when a request makes it load the app (bounded)
        if not server.running:
            break
        try:
            with server.connect() as client:
                client.send("hi")
                assert client.wait_closed(timeout=10)
        except ConnectionRefusedError:
            break  # the master is gone already
    wait_until(lambda: not server.running, timeout=10, what="the master exiting")
    assert "SyntaxError" in server.log() and "the server is down" in server.log()
    assert not server.pidfile.exists()


@pytest.mark.parametrize("server", [{"heartbeat": 1.0, "watch": False}], indirect=True)
def test_a_silent_client_is_never_closed_but_one_that_talked_is(server):
    silent, talked = server.connect(), server.connect()
    talked.request()
    assert talked.wait_closed(timeout=15)  # one interval after its message
    assert not silent.wait_closed(timeout=2.5)  # more than twice the interval: still open
    silent.close()
    talked.close()


def test_sigusr1_reloads_and_sigterm_stops(server):
    before = set(server.workers())
    server.reload()
    wait_until(lambda: len(set(server.workers()) - before) == 2, timeout=10, what="two new workers")
    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: not server.running, timeout=10, what="the stop")
    assert not server.pidfile.exists()


def test_bad_arguments_are_one_line(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "lab.tutorial.server", str(tmp_path / "none.py"), "--pidfile", str(tmp_path / "pid")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "no app file at" in out.stderr


@pytest.mark.parametrize(
    "args, said",
    [
        (["--heartbeat", "nan"], "--heartbeat: heartbeat_interval must be a number of seconds"),
        (["--heartbeat", "-1"], "--heartbeat: heartbeat_interval must be a number of seconds"),
        (["--workers", "100000"], "--workers must be from 1 to 256"),
    ],
)
def test_absurd_options_are_one_line_before_anything_starts(tmp_path, args, said):
    app = tmp_path / "hello.py"
    app.write_text(APP)
    pidfile = tmp_path / "tutorial.pid"
    done = subprocess.run(
        [sys.executable, "-m", "lab.tutorial.server", str(app), "--pidfile", str(pidfile), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and said in done.stderr.strip().splitlines()[-1], done.stderr
    assert not pidfile.exists()
