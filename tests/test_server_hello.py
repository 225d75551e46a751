"""The tutorial's demo app over real sockets: the line protocol and HTTP/1.1 (keep-alive, pipelining)."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from server_helpers import ServerProcess, read_line


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def read_http(s: socket.socket, count: int = 1) -> list[bytes]:
    """``count`` whole responses (head + Content-Length body) from ``s``."""
    data = b""
    responses: list[bytes] = []
    while len(responses) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            length = int(data[:end].lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(data) >= end + 4 + length:
                responses.append(data[: end + 4 + length])
                data = data[end + 4 + length :]
                continue
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(responses)} responses")
        data += chunk
    return responses


def test_a_line_gets_the_greeting(hello):
    with connect(hello) as s:
        s.sendall(b"hi\nthere\n")
        lines = s.makefile("rb")
        assert lines.readline() == b"hello world client\n"
        assert lines.readline() == b"hello world client\n"


def test_http_with_urllib(hello):
    with urllib.request.urlopen(f"http://127.0.0.1:{hello.port}/", timeout=5) as response:
        assert response.status == 200
        assert response.read() == b"hello world client\n"
        assert response.headers["Content-Length"] == "19"


def test_keep_alive_pipelined_and_split_requests(hello):
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(hello) as s:
        s.sendall(request * 3)  # pipelined: three answers, in order
        assert len(read_http(s, 3)) == 3
        for i in range(0, len(request), 5):  # one request in pieces
            s.sendall(request[i : i + 5])
        (response,) = read_http(s)
        assert response.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" not in response
        s.sendall(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
        s.sendall(b"cde")  # the body comes later: still one request
        assert len(read_http(s)) == 1


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ],
)
def test_the_server_closes_when_asked_to_or_for_http_1_0(hello, request_bytes):
    with connect(hello) as s:
        s.sendall(request_bytes)
        (response,) = read_http(s)
        assert b"Connection: close" in response
        assert s.recv(100) == b""


def test_an_endless_request_head_is_refused_not_buffered(hello):
    with connect(hello) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        try:
            for _ in range(20):
                s.sendall(b"X-Junk: " + b"a" * 8000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may have answered and closed already
        try:
            data = s.recv(200)
        except ConnectionResetError:
            data = b""
        assert data == b"" or data.startswith(b"HTTP/1.1 431")
    with connect(hello) as s:
        s.sendall(b"hi\n")
        assert read_line(s) == "hello world client", "the worker serves on"
