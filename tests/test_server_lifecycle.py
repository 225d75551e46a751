"""Start, stop, crash and supervision of the prefork server, with real processes and signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from server_helpers import ServerProcess, ask, run_cli, wait_until, write_app

from lab.events import Kind, read_events
from lab.heartbeat import STRATEGIES
from lab.pidfile import is_alive, read_pid

CRASHING_APP = """\
import os

TEXT = {text!r}


def on_start(server):
    server.reactor.call_later(0.2, os._exit, 3)  # dies a while after start, every time


def on_receive(server, conn, data):
    server.send(conn, (TEXT + "\\n").encode())
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop_exits_0_and_removes_the_pid_file(serve, app_dir, signum):
    server = serve(app_dir=app_dir)
    workers = server.worker_pids()
    assert read_pid(str(server.pidfile)) == server.pid
    server.signal(signum)
    assert server.proc.wait(10) == 0
    assert not server.pidfile.exists()
    assert not any(is_alive(pid) for pid in workers)
    assert server.find(Kind.SERVER_STOP)


def test_a_graceful_stop_finishes_in_flight_requests(serve, app_dir):
    server = serve(app_dir=app_dir)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:
        slow.sendall(b"slow 0.5\n")
        wait_until(lambda: server.find(Kind.CONN_OPEN), message="the slow request accepted")
        server.signal(signal.SIGTERM)
        assert slow.recv(100) == b"v1 slow\n"
    assert server.proc.wait(5) == 0
    assert not server.find(Kind.WORKER_EXIT, signal="SIGKILL")


def test_a_request_longer_than_the_graceful_timeout_is_cut(serve, app_dir):
    server = serve(app_dir=app_dir, args=("--graceful-timeout", "0.3"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:
        slow.sendall(b"slow 30\n")
        wait_until(lambda: server.find(Kind.CONN_OPEN), message="the slow request accepted")
        server.signal(signal.SIGTERM)
        assert server.proc.wait(5) == 0
        assert slow.recv(100) == b""
    assert server.find(Kind.WORKER_EXIT, signal="SIGKILL")


def test_the_stop_command_waits_until_the_server_is_gone(serve, app_dir):
    server = serve(app_dir=app_dir)
    result = run_cli("stop", "--pidfile", str(server.pidfile))
    assert result.returncode == 0, result.stderr
    assert server.proc.poll() == 0, "stop returned before the server was gone"
    assert not server.pidfile.exists()


def test_sigquit_stops_at_once(serve, app_dir):
    server = serve(app_dir=app_dir)
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with slow:
        slow.sendall(b"slow 30\n")
        wait_until(lambda: server.find(Kind.CONN_OPEN), message="the slow request accepted")
        server.signal(signal.SIGQUIT)
        server.proc.wait(5)
        try:
            assert slow.recv(100) == b""
        except ConnectionResetError:
            pass  # killed before it read the request: unread data makes the kernel send an RST
    assert not any(is_alive(pid) for pid in server.worker_pids())


def test_sigkill_of_the_master_leaves_no_worker(serve, app_dir):
    server = serve(app_dir=app_dir)
    workers = server.worker_pids()
    assert len(workers) == 2
    server.signal(signal.SIGKILL)
    server.proc.wait(5)
    wait_until(lambda: not any(is_alive(pid) for pid in workers), 5, message="workers die with the master")


def test_a_killed_worker_is_replaced(serve, app_dir):
    server = serve(app_dir=app_dir)
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_event(Kind.WORKER_EXIT, pid=victim, signal="SIGKILL")
    server.wait_event(Kind.WORKER_READY, generation=1, count=3)
    assert len(server.worker_pids()) == 2
    assert server.ask() == "v1"
    assert not server.find(Kind.WORKER_BACKOFF), "a single crash is replaced at once"


def test_a_worker_that_keeps_dying_backs_off(serve, app_dir):
    write_app(app_dir, "v1", source=CRASHING_APP)
    server = serve(app_dir=app_dir, workers=1)
    third = server.wait_event(Kind.WORKER_BACKOFF, count=3, timeout=15)
    delays = [e["delay"] for e in server.find(Kind.WORKER_BACKOFF)][:3]
    assert delays == sorted(delays) and delays[0] < delays[2], delays
    assert third["failures"] == 4
    assert server.proc.poll() is None, "the master lives on"


def test_an_exception_in_the_app_costs_one_connection_not_the_worker(serve, app_dir):
    server = serve(app_dir=app_dir, workers=1)
    pid = server.ask(b"pid")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"boom\n")
        assert s.recv(100) == b""
    error = server.wait_event(Kind.APP_ERROR)
    assert "boom on purpose" in error["traceback"] and error["callback"] == "on_receive"
    assert server.wait_event(Kind.CONN_CLOSE, reason="error")
    assert server.ask(b"pid") == pid


def test_a_stale_pid_file_is_replaced(serve, app_dir, tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pidfile = tmp_path / "server.pid"
    pidfile.write_text(gone.stdout)
    server = serve(app_dir=app_dir, pidfile=pidfile)
    assert read_pid(str(pidfile)) == server.pid


def test_a_running_server_is_not_started_twice(serve, app_dir, tmp_path):
    server = serve(app_dir=app_dir)
    second = ServerProcess(tmp_path, app_dir=app_dir, pidfile=server.pidfile)
    second.start(wait=False)
    assert second.proc.wait(10) == 2
    assert "already running" in second.stderr() and str(server.pid) in second.stderr()
    assert len(second.stderr().strip().splitlines()) == 1
    assert read_pid(str(server.pidfile)) == server.pid


@pytest.mark.parametrize(
    "args, message",
    [
        (("--bind", "127.0.0.1:99999"), "bad port"),
        (("--bind", "nowhere:80"), "bad host"),
        (("--workers", "0"), "workers must be"),
        (("--graceful-timeout", "-1"), "graceful_timeout must be"),
        (("--heartbeat-strategy", "bogus"), "unknown heartbeat strategy"),
        (("--app-dir", "/nonexistent/app"), "not a directory"),
        (("--events", "/nonexistent/events.jsonl"), "cannot open the events file"),
        (("--pidfile", "/nonexistent/s.pid"), "cannot create pid file"),
        (("--watch", "/nonexistent/app"), "/nonexistent/app"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    result = run_cli("serve", "app", "--app-dir", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_port_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "app", "--app-dir", str(tmp_path), "--bind", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert "already in use" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "source, message",
    [
        (None, "No module named 'missing'"),
        ("def on_receive(server, conn, data)\n", "SyntaxError"),
        ("TEXT = 1\n", "no on_receive"),
        ("", "'json' is taken"),
    ],
)
def test_an_app_that_cannot_start_is_a_one_line_error(tmp_path, source, message):
    target = "missing"
    if source == "":
        target = "json"  # the name of a module the server itself imported
    elif source is not None:
        (tmp_path / "broken.py").write_text(source)
        target = "broken"
    events = tmp_path / "events.jsonl"
    result = run_cli(
        "serve",
        target,
        "--app-dir",
        str(tmp_path),
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--events",
        str(events),
        "--pidfile",
        str(tmp_path / "s.pid"),
        "--quiet",
    )
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.pid").exists()
    started = [e["pid"] for e in read_events(events) if e["kind"] == Kind.WORKER_START]
    assert started and not any(is_alive(pid) for pid in started)


def test_ipv6_loopback(serve, app_dir):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = serve(app_dir=app_dir, bind="[::1]:0")
    assert ask(server.port, host="::1") == "v1"


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_the_heartbeat_closes_idle_connections_only(serve, app_dir, strategy):
    server = serve(
        app_dir=app_dir,
        workers=1,
        args=("--heartbeat-idle", "0.5", "--heartbeat-interval", "0.05", "--heartbeat-strategy", strategy),
    )
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as busy,
    ):
        for _ in range(10):  # 1 s of chatting, well past the idle time: never closed
            busy.sendall(b"hi\n")
            assert busy.recv(100) == b"v1\n"
            time.sleep(0.1)  # the pace of the client is what is tested, not a synchronisation
        closed = server.wait_event(Kind.CONN_CLOSE, reason="idle")
        assert closed["idle"] >= 0.5
        assert idle.recv(100) == b""
        assert len(server.find(Kind.CONN_CLOSE, reason="idle")) == 1
        busy.sendall(b"hi\n")
        assert busy.recv(100) == b"v1\n"


def test_a_large_answer_reaches_a_slow_reader_whole(serve, app_dir):
    server = serve(app_dir=app_dir, workers=1, args=("--heartbeat-idle", "5"))
    size = 16 << 20  # far more than the socket buffers: the server writes it in parts
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"big %d\n" % size)
        received = 0
        while received < size + 1:
            chunk = s.recv(1 << 20)
            assert chunk, f"closed after {received} bytes"
            received += len(chunk)
        assert received == size + 1
        s.sendall(b"hi\n")
        assert s.recv(100) == b"v1\n"


def test_a_module_attribute_target_and_a_class_app(serve, app_dir):
    (app_dir / "classy.py").write_text(
        "class Echo:\n"
        "    def __init__(self):\n"
        "        self.count = 0\n"
        "    def on_receive(self, server, conn, data):\n"
        "        self.count += 1\n"
        "        server.send(conn, b'%d ' % self.count + data)\n"
    )
    server = serve(app_dir=app_dir, target="classy:Echo", workers=1)
    assert server.ask(b"one") == "1 one"
    assert server.ask(b"two") == "2 two", "one instance per worker, made after the import"
