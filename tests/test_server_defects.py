"""Server defects found by hostile use: a stuck worker at reload, orphans of the app, a stalled
master, a hung import, an app that raises SystemExit, orders split across reads."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from server_helpers import ask, read_line, wait_until, write_app

from lab.config import Config
from lab.events import EventSink, Kind
from lab.pidfile import is_alive
from lab.reactor import Reactor
from lab.worker import Channel, Server, take_lines

# A versioned app whose ``block S`` request keeps the worker in app code for S seconds.
BLOCKING_APP = """\
import os
import time

TEXT = {text!r}


def on_receive(server, conn, data):
    for line in data.splitlines():
        if line == b"pid":
            server.send(conn, b"%d\\n" % os.getpid())
        elif line.startswith(b"block "):
            server.emit("test.blocking")
            time.sleep(float(line.split()[1]))
            server.send(conn, (TEXT + " woke\\n").encode())
        else:
            server.send(conn, (TEXT + "\\n").encode())
"""

EXITING_APP = """\
import os
import sys


def on_receive(server, conn, data):
    line = data.strip()
    if line == b"exit":
        sys.exit(3)
    if line == b"interrupt":
        raise KeyboardInterrupt
    server.send(conn, b"%d\\n" % os.getpid())
"""


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def ask_pid(s: socket.socket) -> int:
    s.sendall(b"pid\n")
    return int(read_line(s))


# --- the worker's orders ---------------------------------------------------------------------------


def test_take_lines_keeps_a_partial_order_for_the_next_read():
    assert take_lines(b"", b"go\ndra") == ([b"go"], b"dra")
    assert take_lines(b"dra", b"in\n") == ([b"drain"], b"")
    assert take_lines(b"", b"") == ([], b"")


def test_an_order_split_across_reads_is_carried_out():
    master_end, worker_end = socket.socketpair()
    with master_end, worker_end:
        worker_end.setblocking(False)
        channel = Channel(worker_end)
        master_end.sendall(b"go\ndra")
        assert channel.read() == [b"go"]
        master_end.sendall(b"in\n")
        assert channel.read() == [b"drain"]
        master_end.close()
        assert channel.read() is None, "the master gone"


class EchoApp:
    def on_receive(self, server, conn, data):
        server.send(conn, data)


def test_a_drain_sent_while_app_code_ran_is_seen_before_the_next_accept(tmp_path):
    """A worker back from a long callback reads its orders before it accepts."""
    reactor = Reactor()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    master_end, worker_end = socket.socketpair()
    worker_end.setblocking(False)
    server = Server(reactor, listener, EchoApp(), Config(target="x"), 1, EventSink(), None, Channel(worker_end))
    try:
        server.start_accepting()
        client = socket.create_connection(listener.getsockname(), timeout=5)
        master_end.sendall(b"drain\n")  # sent while the app was busy
        server._on_acceptable()  # what the loop calls next: the listener is readable
        assert not server.connections, "accepted after a drain order was sent"
        assert server.draining and listener.fileno() == -1
        assert b"draining" in master_end.recv(100)
        client.close()
    finally:
        reactor.close()
        listener.close()
        master_end.close()
        worker_end.close()


# --- a stuck worker at reload (issue item 2) ----------------------------------------------------------


def test_a_worker_stuck_in_app_code_does_not_hold_up_a_reload(serve, tmp_path):
    write_app(tmp_path, "v1", source=BLOCKING_APP)
    server = serve(app_dir=tmp_path, args=("--graceful-timeout", "30"))
    with connect(server.port) as stuck_client:
        stuck = ask_pid(stuck_client)
        stuck_client.sendall(b"block 6\n")
        server.wait_event("test.blocking", pid=stuck)
        write_app(tmp_path, "v2", source=BLOCKING_APP)
        server.signal(signal.SIGUSR1)
        # The new generation accepts without waiting for the stuck worker's drain ...
        unresponsive = server.wait_event(Kind.WORKER_UNRESPONSIVE, timeout=5)
        assert unresponsive["pid"] == stuck
        # ... so fresh connections are answered by the new code long before the graceful timeout.
        assert [ask(server.port, timeout=5) for _ in range(5)] == ["v2"] * 5
        # Awake again, it answers what it was doing, drains and leaves; it never accepts again.
        assert read_line(stuck_client) == "v1 woke"
        server.wait_event(Kind.WORKER_EXIT, pid=stuck, timeout=15)
    assert server.find(Kind.WORKER_EXIT, pid=stuck, code=0), "drained, not killed"
    opened_by_stuck = [e for e in server.find(Kind.CONN_OPEN) if e["pid"] == stuck]
    assert len(opened_by_stuck) == 1, "the stuck worker accepted again after its drain"
    assert server.ask() == "v2"
    server.wait_event(Kind.RELOAD_DONE, generation=2)


# --- BaseException from app callbacks (issue item 7) ---------------------------------------------------


@pytest.mark.parametrize("request_line, exc", [(b"exit", "SystemExit"), (b"interrupt", "KeyboardInterrupt")])
def test_system_exit_and_keyboard_interrupt_in_on_receive_cost_only_the_connection(serve, tmp_path, request_line, exc):
    write_app(tmp_path, "", source=EXITING_APP)
    server = serve(app_dir=tmp_path, workers=1)
    with connect(server.port) as s:
        pid = ask_pid(s)
        s.sendall(request_line + b"\n")
        assert s.recv(100) == b"", "the connection is closed"
    error = server.wait_event(Kind.APP_ERROR, callback="on_receive")
    assert exc in error["traceback"]
    with connect(server.port) as s:
        assert ask_pid(s) == pid, "the same worker serves on"
    assert not server.find(Kind.WORKER_EXIT)


def test_system_exit_in_on_start_fails_the_reload_with_its_traceback(serve, app_dir):
    server = serve(app_dir=app_dir)
    (app_dir / "app.py").write_text(
        "import sys\n\n\ndef on_start(server):\n    sys.exit(2)\n\n\ndef on_receive(server, conn, data):\n    pass\n"
    )
    server.signal(signal.SIGUSR1)
    failed = server.wait_event(Kind.RELOAD_FAILED, generation=2)
    assert "SystemExit" in failed["traceback"]
    assert server.ask() == "v1"


# --- a stalled master (issue item 5) -------------------------------------------------------------------


def test_a_stopped_master_does_not_blame_its_workers_for_its_own_silence(serve, app_dir):
    server = serve(app_dir=app_dir, args=("--worker-timeout", "1"))
    clients = [connect(server.port) for _ in range(4)]
    try:
        pids = {ask_pid(s) for s in clients}
        server.signal(signal.SIGSTOP)
        try:
            time.sleep(3)  # the stall itself: three worker timeouts long
        finally:
            server.signal(signal.SIGCONT)
        stalled = server.wait_event(Kind.SERVER_STALLED)
        assert stalled["gap"] > 2
        assert {ask_pid(s) for s in clients} == pids, "every keep-alive client is still served"
        assert not server.find(Kind.WORKER_TIMEOUT), "no healthy worker is killed"
    finally:
        for s in clients:
            s.close()


# --- a hung import (issue item 6) ------------------------------------------------------------------------

HANGING_APP = "import time\ntime.sleep(1000)\n"


def test_a_hung_import_is_reported_and_a_newer_change_supersedes_it(serve, app_dir):
    server = serve(app_dir=app_dir)
    (app_dir / "app.py").write_text(HANGING_APP)
    server.signal(signal.SIGUSR1)
    slow = server.wait_event(Kind.RELOAD_SLOW, generation=2)
    hung = slow["workers"]
    assert len(hung) == 2
    assert server.ask() == "v1", "the old code serves meanwhile"
    write_app(app_dir, "v3")
    server.signal(signal.SIGUSR1)
    server.wait_event(Kind.RELOAD_SUPERSEDED, generation=2)
    server.wait_event(Kind.RELOAD_DONE, generation=3)  # long before the 60 s of READY_TIMEOUT
    assert server.ask() == "v3"
    assert not server.find(Kind.RELOAD_FAILED)
    wait_until(lambda: not any(is_alive(pid) for pid in hung), 5, message="the hung workers killed")


# --- processes the app starts (issue item 4) --------------------------------------------------------------

# At import, two children that hold the listening socket: one stays in the worker's process group,
# one leaves it (setsid, then a second fork: the classic daemon). Each writes "pid kind" to KIDS.
FORKING_APP = """\
import os
import time

KIDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kids.txt")


def _child(kind):
    pid = os.fork()
    if pid:
        if kind == "daemon":
            os.waitpid(pid, 0)  # the intermediate, which leaves at once
        return
    try:
        if kind == "daemon":
            os.setsid()
            if os.fork():
                os._exit(0)
        with open(KIDS, "a") as f:
            f.write("%d %s\\n" % (os.getpid(), kind))
        time.sleep(1000)
    finally:
        os._exit(0)


_child("child")
_child("daemon")


def on_receive(server, conn, data):
    server.send(conn, b"ok\\n")
"""


def kids(app_dir: Path) -> list[tuple[int, str]]:
    path = app_dir / "kids.txt"
    lines = path.read_text().split() if path.exists() else []
    return [(int(pid), kind) for pid, kind in zip(lines[::2], lines[1::2])]


def test_processes_the_app_starts_die_with_their_worker_and_the_server(serve, tmp_path):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(FORKING_APP)
    server = serve(app_dir=app_dir, workers=1)
    try:
        first = wait_until(lambda: len(kids(app_dir)) == 2 and kids(app_dir), message="the app's children")
        server.reload()
        child = next(pid for pid, kind in first if kind == "child")
        wait_until(lambda: not is_alive(child), 5, message="the child of a worker that left killed")
        wait_until(lambda: len(kids(app_dir)) == 4, message="the next generation's children")
        assert server.stop() == 0
        left = [pid for pid, _ in kids(app_dir) if is_alive(pid)]
        assert not left, f"the app's processes outlived the server: {left}"
        socket.create_server(("127.0.0.1", server.port)).close()  # the port is free again
    finally:
        for pid, _ in kids(app_dir):
            try:
                os.kill(pid, signal.SIGKILL)  # (only if the test failed)
            except ProcessLookupError:
                pass


def test_a_master_callback_that_raises_is_an_event_and_the_loop_goes_on(tmp_path):
    # Reactor.run_once hands a raising callback to its on_error hook (tests/test_reactor.py); the
    # master's hook says it as a server.error event with the traceback, instead of ending.
    from lab.events import read_events
    from lab.master import Master

    master = Master(Config(target="app"), echo=None)
    master.events = EventSink(tmp_path / "events.jsonl")
    reactor = Reactor(on_error=master._on_loop_error)
    calls = []

    def broken() -> None:
        calls.append("broken")
        raise KeyError("a bug in the master")

    reactor.call_later(0, broken)
    reactor.call_later(0.01, reactor.stop)
    try:
        reactor.run()
    finally:
        reactor.close()
        master.events.close()
    [event] = [e for e in read_events(tmp_path / "events.jsonl") if e["kind"] == Kind.SERVER_ERROR]
    assert calls == ["broken"] and event["callback"].endswith("broken")
    assert "KeyError" in event["error"] and "a bug in the master" in event["traceback"]
