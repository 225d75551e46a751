"""Hostile processes: workers that die, hang, ignore the drain or crash in a loop.

(A burst of SIGUSR1 and SIGKILL of the master are in test_server_reload.py and
test_server_lifecycle.py.)
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
from server_helpers import ask, wait_until, write_app

from lab.events import Kind
from lab.pidfile import is_alive

APPS = Path(__file__).parent / "apps"
MIB = 1 << 20

CRASHING_APP = """\
import os


def on_start(server):
    server.reactor.call_later(0.05, os._exit, 3)  # dies soon after start, every time


def on_receive(server, conn, data):
    server.send(conn, b"broken\\n")
"""

GOOD_APP = """\
def on_receive(server, conn, data):
    server.send(conn, b"fixed\\n")
"""


def hostile(serve, *args: str, workers: int = 2):
    return serve(target="hostile_app", app_dir=APPS, workers=workers, args=args)


def spin(port: int) -> tuple[socket.socket, int]:
    """A client whose request sends a worker into an endless loop; returns it with that worker's pid."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"pid\n")
    pid = int(s.makefile("rb").readline())
    s.sendall(b"spin\n")
    return s, pid


def test_a_worker_killed_mid_request_is_replaced(serve):
    server = hostile(serve)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"pid\n")
        victim = int(s.makefile("rb").readline())
        s.sendall(b"big %d\n" % (32 * MIB))
        assert s.recv(65536)  # the answer is on its way
        os.kill(victim, signal.SIGKILL)
        try:
            while s.recv(MIB):
                pass
        except ConnectionResetError:
            pass  # the client learns that its request failed
    server.wait_event(Kind.WORKER_EXIT, pid=victim, signal="SIGKILL")
    server.wait_event(Kind.WORKER_READY, generation=1, count=3)
    assert server.ask() == "ok"
    assert len(server.worker_pids()) == 2


def test_a_worker_stuck_in_app_code_is_killed_and_replaced(serve):
    server = hostile(serve, "--worker-timeout", "1")
    s, stuck = spin(server.port)
    with s:
        assert server.ask() == "ok", "the other worker serves meanwhile"
        event = server.wait_event(Kind.WORKER_TIMEOUT, pid=stuck, timeout=5)
        assert 1 < event["silent"] < 2
        server.wait_event(Kind.WORKER_EXIT, pid=stuck, signal="SIGKILL")
        assert s.recv(10) == b""
    server.wait_event(Kind.WORKER_READY, generation=1, count=3)
    assert not is_alive(stuck)
    assert server.ask() == "ok"
    assert len(server.worker_pids()) == 2
    assert len(server.find(Kind.WORKER_TIMEOUT)) == 1, "healthy workers are never timed out"


def test_a_worker_that_ignores_the_drain_is_killed_after_the_graceful_timeout(serve):
    server = hostile(serve, "--graceful-timeout", "0.5")
    s, stuck = spin(server.port)
    with s:
        done = server.reload()
        assert done["generation"] == 2
        assert server.find(Kind.WORKER_EXIT, pid=stuck, signal="SIGKILL")
    assert server.ask() == "ok"
    assert stuck not in server.worker_pids()


def test_a_crash_loop_is_a_visible_degraded_state_and_a_good_reload_recovers(serve, tmp_path):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    write_app(app_dir, "", source=GOOD_APP)
    server = serve(app_dir=app_dir, workers=1)
    write_app(app_dir, "", source=CRASHING_APP)  # what a replacement will import
    os.kill(server.worker_pids()[0], signal.SIGKILL)
    degraded = server.wait_event(Kind.SERVER_DEGRADED, timeout=15)
    assert degraded["reason"] == "crash loop" and degraded["failures"] >= 3
    assert server.proc.poll() is None, "the master lives on"
    write_app(app_dir, "", source=GOOD_APP)
    server.reload()
    server.wait_event(Kind.SERVER_RECOVERED)
    assert server.ask() == "fixed"
    assert len(server.find(Kind.SERVER_DEGRADED)) == 1, "said once"


def test_sigkill_of_the_master_with_a_stuck_worker_leaves_nothing(serve):
    server = hostile(serve)
    s, stuck = spin(server.port)
    with s:
        server.signal(signal.SIGKILL)
        server.proc.wait(5)
        wait_until(lambda: not is_alive(stuck), 5, message="the stuck worker dies with the master")
    # PDEATHSIG is delivered asynchronously: the other worker dies soon, not at once.
    wait_until(
        lambda: not any(is_alive(pid) for pid in server.worker_pids()), 5, message="every worker dies with the master"
    )
    with pytest.raises(OSError):
        ask(server.port, timeout=1)
