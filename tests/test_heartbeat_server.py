"""The heartbeat with real sockets: ``python -m lab serve`` closes idle connections, keeps busy ones.

Timing bounds here are generous (a shared, noisy 2-core machine); the precise targets are measured
in ``benchmarks/heartbeat_server.py``.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lab.clients import Client
from lab.events import Kind
from lab.heartbeat import STRATEGIES
from lab.process import ServerProcess, serve_argv

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
SLACK = 1.0  # seconds allowed beyond idle + interval for a busy machine
BIG = 32 << 20  # a 32 MiB answer: far more than the kernel's socket buffers hold


class Served(ServerProcess):
    """The server, with the ``conn.close`` events of the clients a test owns."""

    def closes(self, ports: set[int]) -> dict[int, dict[str, Any]]:
        """The ``conn.close`` event of each client port in ``ports`` seen so far."""
        events = self.read()
        opened = {e["conn"]: int(e["peer"].rsplit(":", 1)[1]) for e in events if e["kind"] == Kind.CONN_OPEN}
        return {opened[e["conn"]]: e for e in events if e["kind"] == Kind.CONN_CLOSE and opened.get(e["conn"]) in ports}


@contextmanager
def serve(tmp_path: Path, idle: float, interval: float, strategy: str | None = None) -> Iterator[Served]:
    """``python -m lab serve`` of tests/apps/heartbeat_big.py on a free loopback port, one worker."""
    events = tmp_path / "events.jsonl"
    argv = serve_argv(
        "heartbeat_big",
        events,
        app_dir=APPS,
        bind="127.0.0.1:0",
        workers=1,
        quiet=True,
        heartbeat_idle=idle,
        heartbeat_interval=interval,
        heartbeat_strategy=strategy,
    )
    server = Served(argv, events, cwd=ROOT, output=tmp_path / "stderr.txt")
    try:
        yield server.start(timeout=30)
    finally:
        server.stop(15)


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    """The socket of a ``lab.clients.Client`` (blocking, 10 s timeout): the tests drive it byte by byte."""
    return Client(("127.0.0.1", port), timeout=10, rcvbuf=rcvbuf).sock


def echo(sock: socket.socket, line: bytes = b"ping") -> None:
    sock.sendall(line + b"\n")
    got = b""
    while not got.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, "closed by the server"
        got += chunk
    assert got == line + b"\n"


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_silent_connections_are_closed_on_time_and_chatty_ones_kept(tmp_path, strategy):
    idle, interval = 0.8, 0.2
    with serve(tmp_path, idle, interval, strategy) as server:
        silent, chatty = [connect(server.port) for _ in range(10)], [connect(server.port) for _ in range(3)]
        last_sent = {}
        for sock in silent:
            last_sent[sock] = time.monotonic()  # the server hears it later: a lower bound for "last"
            echo(sock, b"hello")
            sock.setblocking(False)
        closed_at: dict[socket.socket, float] = {}
        with selectors.DefaultSelector() as sel:
            for sock in silent:
                sel.register(sock, selectors.EVENT_READ)
            started = time.monotonic()
            next_chat = started
            while time.monotonic() < started + 3 * idle or len(closed_at) < len(silent):
                assert time.monotonic() < started + idle + interval + SLACK + 3 * idle, (
                    f"silent connections still open: {len(silent) - len(closed_at)}"
                )
                if time.monotonic() >= next_chat:  # chatty clients talk 8 times per idle period
                    for sock in chatty:
                        echo(sock)
                    next_chat += idle / 8
                for key, _ in sel.select(timeout=0.02):
                    if key.fileobj.recv(4096) == b"":
                        closed_at[key.fileobj] = time.monotonic()
                        sel.unregister(key.fileobj)
        for sock in silent:
            assert idle <= closed_at[sock] - last_sent[sock] <= idle + interval + SLACK
        for sock in chatty:
            echo(sock)  # still served, well after several idle periods
        ports = {s.getsockname()[1]: s for s in silent + chatty}
        closes = server.closes(set(ports))
        assert {p for p, e in closes.items() if e["reason"] == "idle"} == {s.getsockname()[1] for s in silent}
        for event in closes.values():
            assert idle <= event["idle"] <= idle + interval + SLACK
        for sock in silent + chatty:
            sock.close()


def test_a_slow_reader_of_a_large_answer_is_kept(tmp_path):
    idle, interval = 1.0, 0.2
    rate = 10 << 20  # bytes per second: 32 MiB take 3.2 s, three idle periods without a byte sent
    with serve(tmp_path, idle, interval) as server:
        sock = connect(server.port, rcvbuf=64 << 10)
        sock.sendall(b"big %d\n" % BIG)
        started, got = time.monotonic(), 0
        while got < BIG:
            chunk = sock.recv(min(256 << 10, BIG - got))
            assert chunk, f"closed after {got} of {BIG} bytes, {time.monotonic() - started:.2f} s"
            got += len(chunk)
            ahead = got / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)  # pacing the reader, not waiting for the server
        assert time.monotonic() - started > 3 * idle  # it really was silent that long
        echo(sock)
        assert server.closes({sock.getsockname()[1]}) == {}
        sock.close()


def test_a_client_that_never_reads_a_large_answer_is_closed(tmp_path):
    idle, interval = 0.5, 0.1
    with serve(tmp_path, idle, interval) as server:
        sock = connect(server.port, rcvbuf=64 << 10)
        port = sock.getsockname()[1]
        sent = time.monotonic()
        sock.sendall(b"big %d\n" % BIG)
        server.wait_events(lambda evs: server.closes({port}), idle + interval + SLACK + 5, "idle close")
        event = server.closes({port})[port]
        assert event["reason"] == "idle" and event["idle"] >= idle
        assert event["t"] - sent >= idle
        got = 0
        try:
            while chunk := sock.recv(1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
        assert got < BIG  # the rest was never sent: the server gave up on it
        sock.close()
