"""The worker's buffer budget in process: a real ``Server`` on a loopback listener, a round at a time."""

from __future__ import annotations

import socket
import time
import types
from collections.abc import Callable

import pytest

from lab.config import Config
from lab.events import EventSink
from lab.reactor import Reactor
from lab.worker import Server

ANSWER = b"x" * 99 + b"\n"
LINES = 100_000  # per greedy client: 300 KB of requests, 10 MB of answers (more than the kernel takes)


def on_receive(server, conn, data: bytes) -> None:
    """Answer each line; keep a partial one in ``conn.inbuf`` (what the budget counts)."""
    *lines, conn.inbuf = (conn.inbuf + data).split(b"\n")
    for _ in lines:
        server.send(conn, ANSWER)


@pytest.fixture
def server():
    reactor = Reactor()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    config = Config(target="app", buffer_budget=256 << 10)
    app = types.SimpleNamespace(on_receive=on_receive)
    server = Server(reactor, listener, app, config, 1, EventSink(), None)
    server.start_accepting()
    yield server
    for conn in list(server.connections.values()):
        conn.sock.close()
    listener.close()
    reactor.forget()


def counted(server: Server) -> int:
    return sum(len(c.out) + c.inlen for c in server.connections.values())


def spin(server: Server, condition: Callable[[], object], what: str, step: Callable[[], None] = lambda: None) -> None:
    """Run the server's loop (and ``step``, the clients' side) until ``condition``; check the count."""
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        server.reactor.run_once(0.01)
        step()
        assert server.budget.held == counted(server), "the budget counts exactly what is buffered"


def client(server: Server, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(server.listener.getsockname())
    s.setblocking(False)
    return s


def test_greedy_clients_are_held_back_then_served_in_full(server):
    greedy = [client(server, rcvbuf=4096) for _ in range(10)]
    spin(server, lambda: len(server.connections) == 10, "the greedy clients accepted")
    unsent = {s: b"hi\n" * LINES for s in greedy}

    def send_some() -> None:
        for s, rest in list(unsent.items()):
            try:
                unsent[s] = rest[s.send(rest) :]
            except BlockingIOError:
                pass
            if not unsent[s]:
                del unsent[s]

    spin(server, lambda: not unsent and server.budget.held_back, "every request sent, some client held back", send_some)
    assert server.budget.held >= server.config.buffer_budget

    fresh = client(server)
    fresh.sendall(b"hi\n")
    answer = bytearray()

    def read_fresh() -> None:
        try:
            answer.extend(fresh.recv(4096))
        except BlockingIOError:
            pass

    spin(server, lambda: answer == ANSWER, "the newcomer's answer", read_fresh)
    fresh.close()

    got = dict.fromkeys(greedy, 0)
    for s in greedy:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    def read_greedy() -> None:  # the greedy clients read at last: everything owed must come
        for s in greedy:
            try:
                got[s] += len(s.recv(1 << 20))
            except BlockingIOError:
                pass

    spin(server, lambda: all(n == LINES * len(ANSWER) for n in got.values()), "every answer", read_greedy)
    for s in greedy:
        s.close()
    spin(server, lambda: not server.connections, "every connection closed")
    assert server.budget.held == 0


def test_a_drain_reads_held_back_clients_to_see_them_leave(server):
    # Twenty unfinished 70 KB lines: more than one read each, so every connection ends over its share
    # of a 256 KiB budget and is not read: none can see its client leave. A drain holds none back.
    heads = [client(server) for _ in range(20)]
    spin(server, lambda: len(server.connections) == 20, "the clients accepted")
    unsent = {s: b"a" * 70_000 for s in heads}

    def send_some() -> None:
        for s, rest in list(unsent.items()):
            try:
                unsent[s] = rest[s.send(rest) :]
            except BlockingIOError:
                pass

    spin(server, lambda: all(c.paused for c in server.connections.values()), "every client held back", send_some)
    for s in heads:
        s.close()
    server.drain()
    spin(server, lambda: not server.connections, "every connection closed")
    assert server.budget.held == 0
