"""Hostile clients: whatever one client does, the worker lives and everyone else is served."""

from __future__ import annotations

import fcntl
import os
import random
import re
import select
import socket
import struct
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest
from server_helpers import ServerProcess, read_line, serving, wait_until

from lab.events import Kind

APPS = Path(__file__).parent / "apps"
MIB = 1 << 20


@pytest.fixture
def serve(tmp_path):
    yield from serving(tmp_path)


def hostile(serve, *args: str):
    """One worker serving tests/apps/hostile_app.py, so every attack hits the worker we check."""
    return serve(target="hostile_app", app_dir=APPS, workers=1, args=args)


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # set before connect, so the window is small from the start
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def reset(s: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER with a zero timeout)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def close_event(server, port: int, timeout: float = 10.0) -> dict:
    """The ``conn.close`` event of the connection from the client port ``port``."""

    def found():
        opened = [e for e in server.poll_events() if e["kind"] == Kind.CONN_OPEN and e["peer"].endswith(f":{port}")]
        if not opened:
            return None
        conn, pid = opened[-1]["conn"], opened[-1]["pid"]
        closed = [e for e in server.events if e["kind"] == Kind.CONN_CLOSE and e["conn"] == conn and e["pid"] == pid]
        return closed[-1] if closed else None

    return wait_until(found, timeout, message=f"conn.close of client port {port}")


def assert_serves_on(server, workers: list[int], answer: str = "ok") -> None:
    """No worker died or was replaced, and a well-behaved client still gets its answer."""
    for _ in range(3):
        assert server.ask() == answer
    assert server.worker_pids() == workers
    assert not server.find(Kind.WORKER_EXIT)


def fd_count(pid: int) -> int:
    return psutil.Process(pid).num_fds()


def test_random_bytes(serve, tmp_path):
    server = serve(target="lab.examples.hello", app_dir=tmp_path, workers=1)
    workers = server.worker_pids()
    rng = random.Random(7)
    for size in (1, 100, 4096, MIB):
        with connect(server.port) as s:
            try:
                s.sendall(rng.randbytes(size))
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
            except ConnectionResetError:
                pass  # the app refused it and closed with unread data: an RST
    assert_serves_on(server, workers, "hello world client")


def test_a_16_mib_message_is_refused_with_an_error(serve, tmp_path):
    server = serve(target="lab.examples.hello", app_dir=tmp_path, workers=1)
    workers = server.worker_pids()
    rss = psutil.Process(workers[0]).memory_info().rss
    with connect(server.port) as s:
        port = s.getsockname()[1]
        try:
            s.sendall(b"GET / HTTP/1.1\r\nX-Junk: " + b"a" * (16 * MIB))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before we finished sending
        try:
            answer = s.recv(200)
        except ConnectionResetError:
            answer = b""
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer
    assert close_event(server, port)["reason"] in ("server", "peer")
    assert psutil.Process(workers[0]).memory_info().rss - rss < 8 * MIB, "the request buffer is bounded"
    assert_serves_on(server, workers, "hello world client")


def test_a_byte_a_second_is_closed_by_the_heartbeat(serve):
    server = hostile(serve, "--heartbeat-idle", "0.5", "--heartbeat-interval", "0.1")
    workers = server.worker_pids()
    with connect(server.port) as s:
        port = s.getsockname()[1]
        s.sendall(b"p")  # a request that never completes
        event = close_event(server, port, timeout=5)
        assert event["reason"] == "idle"
        assert s.recv(10) == b""
    assert_serves_on(server, workers)


def _unread(s: socket.socket) -> int:
    """Bytes waiting in ``s``'s receive buffer, without reading them (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(s, termios.FIONREAD, b"\0\0\0\0"))[0]


def test_a_client_that_never_reads_a_slow_stream_of_answers(serve):
    # Each request asks for 1 MiB or more; the client never reads. Past the high-water mark the
    # server stops reading it, so its queue stops growing; the heartbeat then closes it.
    server = hostile(serve, "--heartbeat-idle", "1", "--heartbeat-interval", "0.1")
    workers = server.worker_pids()
    rss = psutil.Process(workers[0]).memory_info().rss
    with connect(server.port, rcvbuf=4096) as s:
        port = s.getsockname()[1]
        # A first answer larger than what the kernel's buffers take (a few MiB) leaves more than
        # max_buffer queued in the worker, so it stops reading us at once. Our receive buffer
        # filling (unread) says it got that far; without this wait, a worker slow to accept would
        # read all our requests in one go (max_output's case, the test below).
        s.sendall(b"big %d\n" % (8 * MIB))
        wait_until(lambda: _unread(s) > 0, message="the first answer")
        s.setblocking(False)
        for _ in range(199):
            try:
                s.send(b"big %d\n" % MIB)
            except BlockingIOError:
                break
            if server.find(Kind.CONN_CLOSE):
                break
        event = close_event(server, port)
        assert event["reason"] == "idle", event
    assert psutil.Process(workers[0]).memory_info().rss - rss < 24 * MIB  # not 200 MiB
    assert_serves_on(server, workers)


def test_an_app_that_queues_more_than_max_output_loses_that_client_only(serve):
    # One recv holds thousands of requests of 1 MiB each: backpressure cannot stop what the app
    # queues within one on_receive; max_output does.
    server = hostile(serve, "--max-output", str(8 * MIB))
    workers = server.worker_pids()
    rss = psutil.Process(workers[0]).memory_info().rss
    with connect(server.port, rcvbuf=4096) as s:
        port = s.getsockname()[1]
        s.sendall(b"flood 1000\n")
        event = close_event(server, port)
        assert event["reason"] == "error" and "max_output" in event["error"], event
    with connect(server.port, rcvbuf=4096) as s:
        port = s.getsockname()[1]
        s.sendall(b"big 1048576\n" * 2000)
        assert close_event(server, port)["reason"] == "error"
    assert psutil.Process(workers[0]).memory_info().rss - rss < 32 * MIB
    assert_serves_on(server, workers)


def test_connect_and_reset_storm(serve):
    server = hostile(serve)
    workers = server.worker_pids()
    fds = fd_count(workers[0])
    for i in range(300):
        s = connect(server.port)
        if i % 2:
            s.sendall(b"hi\n")
        reset(s)
    wait_until(lambda: len(server.find(Kind.CONN_CLOSE)) >= 300, 10, message="every reset connection closed")
    wait_until(lambda: fd_count(workers[0]) <= fds, 5, message="the worker's fds back to where they were")
    assert_serves_on(server, workers)


def test_a_reset_in_the_middle_of_a_write(serve):
    server = hostile(serve)
    workers = server.worker_pids()
    status = Path(f"/proc/{workers[0]}/status").read_text()
    ignored = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    assert ignored & (1 << (13 - 1)), "the worker ignores SIGPIPE: a write to a reset peer is an error, not death"
    for _ in range(5):
        s = connect(server.port, rcvbuf=4096)
        port = s.getsockname()[1]
        s.sendall(b"big %d\n" % (32 * MIB))
        assert len(s.recv(65536)) > 0  # the answer is being written
        reset(s)
        assert close_event(server, port)["reason"] == "peer"
    assert_serves_on(server, workers)


def test_a_half_closing_client_gets_what_it_asked_for(serve):
    server = hostile(serve)
    workers = server.worker_pids()
    with connect(server.port) as s:
        port = s.getsockname()[1]
        s.sendall(b"hi\nhi\n")
        s.shutdown(socket.SHUT_WR)
        assert s.makefile("rb").read() == b"ok\nok\n"
    with connect(server.port, rcvbuf=4096) as s:
        port = s.getsockname()[1]
        s.sendall(b"big %d\n" % (32 * MIB))
        s.shutdown(socket.SHUT_WR)
        got = 0
        while chunk := s.recv(MIB):
            got += len(chunk)
        assert got == 32 * MIB + 1, "a large answer is flushed whole before the close"
    assert close_event(server, port)["reason"] == "peer"
    assert_serves_on(server, workers)


LIMITED_FDS = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))
os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
"""


def test_connections_up_to_the_fd_limit(tmp_path):
    # Soft 32, hard 96: the server raises its soft limit to 96 at start; past that, accept fails
    # with EMFILE and the worker pauses (no busy loop) until fds are free again.
    server = ServerProcess(tmp_path, target="hostile_app", app_dir=APPS, workers=1)
    server.argv = [sys.executable, "-c", LIMITED_FDS, "32", "96", *server.argv[1:]]
    clients: list[socket.socket] = []
    try:
        server.start()
        limits = Path(f"/proc/{server.pid}/limits").read_text()
        assert re.search(r"Max open files\s+96\s+96", limits), limits
        for _ in range(120):  # more than fit: the rest wait in the listen backlog
            clients.append(connect(server.port))
        first = server.wait_event(Kind.WORKER_ACCEPT_ERROR)
        assert "Too many open files" in first["error"]
        third = server.wait_event(Kind.WORKER_ACCEPT_ERROR, count=3)
        assert third["t"] - first["t"] >= 2 * first["pause"] * 0.9, "paced retries, not a busy loop"
        for s in clients[:60]:
            s.close()
        for s in clients[60:]:  # served once fds are free: none of the queued clients is lost
            s.sendall(b"hi\n")
            assert read_line(s) == "ok"
        assert server.ask() == "ok"
        assert not server.find(Kind.WORKER_EXIT)
    finally:
        for s in clients:
            s.close()
        server.stop()


def vm_rss(pid: int) -> int:
    """The process's resident memory in bytes (VmRSS of /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used: the work it did, whatever the machine's load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def push(socks: list[socket.socket], payload: bytes, timeout: float = 10.0) -> None:
    """Send ``payload`` on every socket without reading anything back (as much as the kernel takes)."""
    for s in socks:
        s.setblocking(False)
    sent = dict.fromkeys(socks, 0)
    deadline = time.monotonic() + timeout
    while sent and time.monotonic() < deadline:
        _, writable, _ = select.select([], list(sent), [], 0.5)
        for s in writable:
            try:
                sent[s] += s.send(payload[sent[s] : sent[s] + 262144])
            except BlockingIOError:
                continue
            if sent[s] == len(payload):
                del sent[s]


def ask_http(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(4096)


def test_greedy_pipelines_do_not_delay_a_new_client(serve, tmp_path):
    # 50 clients pipeline 900 KB of requests each and never read. The worker answers them as fast as
    # the kernel takes the answers: seconds of work. A new client must not wait behind all of it.
    server = serve(target="lab.examples.hello", app_dir=tmp_path, workers=1, args=("--buffer-budget", str(4 * MIB)))
    worker = server.worker_pids()[0]
    greedy = [connect(server.port, rcvbuf=4096) for _ in range(50)]
    try:
        wait_until(lambda: len(server.find(Kind.CONN_OPEN)) == 50, 10, message="the greedy clients accepted")
        push(greedy, b"GET / HTTP/1.1\r\n\r\n" * 50_000)
        before = cpu_seconds(worker)
        assert ask_http(server.port).startswith(b"HTTP/1.1 200 OK")
        # The worker's work (CPU seconds, not wall time) before it served the newcomer: before the
        # fix it first chewed through the greedy pipelines for seconds.
        assert cpu_seconds(worker) - before < 0.5
    finally:
        for s in greedy:
            reset(s)
    assert_serves_on(server, [worker], "hello world client")


def test_unfinished_heads_are_held_to_the_buffer_budget(serve, tmp_path):
    # 500 clients each send 40 KB of a request head that never ends: without a budget the worker
    # keeps all 20 MB. With a 2 MiB budget, those over their share are no longer read.
    server = serve(target="lab.examples.hello", app_dir=tmp_path, workers=1, args=("--buffer-budget", str(2 * MIB)))
    worker = server.worker_pids()[0]
    rss = vm_rss(worker)
    heads = [connect(server.port) for _ in range(500)]
    try:
        push(heads, b"GET / HTTP/1.1\r\nX-Junk: " + b"a" * 40_000)
        for _ in range(2):  # accepted after all the heads: each was read, or held back, before
            assert ask_http(server.port).startswith(b"HTTP/1.1 200 OK")
        assert vm_rss(worker) - rss < 8 * MIB
    finally:
        for s in heads:
            s.close()
    assert_serves_on(server, [worker], "hello world client")
