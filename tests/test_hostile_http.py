"""Hostile HTTP clients against the example app: ambiguous framing (request smuggling), slowloris."""

from __future__ import annotations

import re
import socket
import time

import pytest
from server_helpers import ServerProcess, wait_until

SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"


def exchange(port: int, data: bytes) -> list[bytes]:
    """Send ``data`` and half-close; the status codes of every response until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # refused with unread input left: the close is an RST, after the answer
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", received)


@pytest.mark.parametrize(
    "head",
    [
        # RFC 9112 6.3: two different lengths. Taking the last (0) serves the body as a second request.
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Length: 0\r\n\r\n" % len(SMUGGLED),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d, 0\r\n\r\n" % len(SMUGGLED),
        # 5.1: whitespace between a field name and its colon must be refused (a proxy may trim it).
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
        # 5.2: a folded line (obs-fold), which a proxy may read as a field of its own.
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Note: a\r\n Transfer-Encoding: chunked\r\n\r\n",
        # 6.3: both framings at once.
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED),
        # 2.2: a bare CR inside a field line.
        b"POST / HTTP/1.1\r\nHost: x\rTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    ],
    ids=["two-lengths", "length-list", "space-before-colon", "obs-fold", "te-and-length", "bare-cr", "negative-length"],
)
def test_ambiguous_framing_is_refused_and_nothing_is_smuggled(hello, head):
    assert exchange(hello.port, head + SMUGGLED) == [b"400"]


def test_transfer_encoding_alone_is_not_implemented(hello):
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    assert exchange(hello.port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body) == [b"501"]


def test_a_repeated_equal_length_and_bare_lf_heads_are_served(hello):
    same = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    assert exchange(hello.port, same + b"GET / HTTP/1.1\r\n\r\n") == [b"200", b"200"]
    # RFC 9112 2.2: a recipient may take a bare LF for a line end: the head must end at "\n\n".
    lf_only = b"GET / HTTP/1.1\nHost: x\n\nPOST / HTTP/1.1\nContent-Length: 3\n\nabcGET / HTTP/1.0\n\n"
    assert exchange(hello.port, lf_only) == [b"200", b"200", b"200"]


def close_of(server: ServerProcess, port: int) -> dict | None:
    """The ``conn.close`` event of the client whose local port is ``port`` (None while open)."""
    opened = [e for e in server.poll_events() if e["kind"] == "conn.open" and e["peer"].endswith(f":{port}")]
    closed = [e for e in server.events if e["kind"] == "conn.close" and opened and e["conn"] == opened[-1]["conn"]]
    return closed[-1] if closed else None


def test_slowloris_gets_408_from_the_header_timeout_while_the_heartbeat_sees_activity(serve, tmp_path):
    # The heartbeat alone would close a silent client after 2 s; this one sends a byte every 0.1 s.
    server = serve(
        target="lab.examples.hello",
        app_dir=tmp_path,
        workers=1,
        args=("--heartbeat-idle", "2", "--heartbeat-interval", "0.25", "--header-timeout", "4"),
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        port = s.getsockname()[1]
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000  # never finished
        deadline = time.monotonic() + 15
        sent = 0
        while close_of(server, port) is None and time.monotonic() < deadline:
            try:
                s.sendall(head[sent : sent + 1])  # one byte at a time, faster than the heartbeat's idle time
            except OSError:
                break
            sent += 1
            time.sleep(0.1)  # the client's pace, not a wait for the server
        event = wait_until(lambda: close_of(server, port), 5, message="the slow client closed")
        assert event["reason"] == "server", event  # the app's deadline, not the heartbeat ("idle")
        received = b""
        try:
            while chunk := s.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
        assert received.startswith(b"HTTP/1.1 408 "), received
    # A request sent in pieces within the deadline is served.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        wait_until(
            lambda: server.find("conn.open", peer=f"127.0.0.1:{s.getsockname()[1]}"),
            5,
            message="the worker took the connection",
        )
        s.sendall(b"Host: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
