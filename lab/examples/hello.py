"""The tutorial's demo app: ``hello world client`` to each line, and the same over HTTP/1.1.

    python -m lab serve lab.examples.hello --watch lab/examples
    printf 'hi\n' | nc -q1 127.0.0.1 9000      # hello world client
    curl http://127.0.0.1:9000/                 # hello world client

To see hot reload, copy this file somewhere, serve it from there with ``--watch``, edit
``Greeting.text`` below and save: the next answer has the new text, no restart, no lost request.
"""

from __future__ import annotations

import re


class Greeting:
    """The class the tutorial edits while the server runs (its ``Test::index``): change me."""

    text = "hello world client"


MAX_REQUEST = 64 * 1024  # a request head that grows past this is refused, never buffered forever

_HTTP_LINE = re.compile(rb"[A-Z]+ \S+ HTTP/1\.([01])\r?$")
_CONNECTION = re.compile(rb"\nconnection:[ \t]*([a-z-]+)")
_CONTENT_LENGTH = re.compile(rb"\ncontent-length:[ \t]*(\d+)")
_CHUNKED = re.compile(rb"\ntransfer-encoding:")


def on_connect(server, conn) -> None:
    conn.data = b""  # what arrived but is not a whole request yet


def on_receive(server, conn, data: bytes) -> None:
    pending = conn.data + data if conn.data else data
    pos = 0
    while pos < len(pending):
        eol = pending.find(b"\n", pos)
        if eol < 0:
            break
        http = _HTTP_LINE.match(pending, pos, eol)
        if http is None:  # the tutorial's line protocol
            pos = eol + 1
            server.send(conn, f"{Greeting.text}\n".encode())
            continue
        end = pending.find(b"\r\n\r\n", eol - 1)
        if end < 0:
            break  # the head is not complete yet
        head = pending[pos:end].lower()
        body_length = _CONTENT_LENGTH.search(head)
        request_end = end + 4 + (int(body_length.group(1)) if body_length else 0)
        if _CHUNKED.search(head):
            _answer(server, conn, b"501 Not Implemented", b"chunked request bodies are not supported\n", False)
            return
        if request_end > len(pending):
            break  # the body is not complete yet
        pos = request_end
        connection = _CONNECTION.search(head)
        token = connection.group(1) if connection else b""
        keep_alive = token != b"close" if http.group(1) == b"1" else token == b"keep-alive"
        body = b"" if head.startswith(b"head ") else f"{Greeting.text}\n".encode()
        _answer(server, conn, b"200 OK", body, keep_alive, len(f"{Greeting.text}\n".encode()))
        if not keep_alive:
            return
    rest = pending[pos:]
    if len(rest) > MAX_REQUEST:
        _answer(server, conn, b"431 Request Header Fields Too Large", b"request too large\n", False)
        return
    conn.data = rest


def _answer(server, conn, status: bytes, body: bytes, keep_alive: bool, length: int | None = None) -> None:
    headers = [b"HTTP/1.1 " + status, b"Content-Type: text/plain; charset=utf-8",
               b"Content-Length: %d" % (len(body) if length is None else length)]
    if not keep_alive:
        headers.append(b"Connection: close")
    server.send(conn, b"\r\n".join(headers) + b"\r\n\r\n" + body)
    if not keep_alive:
        server.close(conn)
