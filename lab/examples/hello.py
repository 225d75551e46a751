r"""The tutorial's demo app: ``hello world client`` to each line, and the same over HTTP/1.1.

    python -m lab serve lab.examples.hello --watch lab/examples
    printf 'hi\n' | nc -q1 127.0.0.1 9000      # hello world client
    curl http://127.0.0.1:9000/                 # hello world client

To see hot reload, copy this file somewhere, serve it from there with ``--watch``, edit
``Greeting.text`` below and save: the next answer has the new text, no restart, no lost request.
"""

from __future__ import annotations

import functools
import re


class Greeting:
    """The class the tutorial edits while the server runs (its ``Test::index``): change me."""

    text = "hello world client"


MAX_REQUEST = 64 * 1024  # a request head that grows past this is refused, never buffered forever

_HTTP_LINE = re.compile(rb"[A-Z]+ \S+ HTTP/1\.([01])\r?$")
_FIELDS = re.compile(rb"\n(content-length|transfer-encoding|connection):[ \t]*([^\r\n]*)")


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
        fields = dict(_FIELDS.findall(head))
        length = fields.get(b"content-length", b"0").strip()
        if b"transfer-encoding" in fields or not length.isdigit():
            server.send(conn, _response(b"501 Not Implemented", "send a body with a Content-Length", False))
            server.close(conn)
            return
        request_end = end + 4 + int(length)
        if request_end > len(pending):
            break  # the body is not complete yet
        pos = request_end
        token = fields.get(b"connection", b"").strip()
        keep_alive = token != b"close" if http.group(1) == b"1" else token == b"keep-alive"
        server.send(conn, _response(b"200 OK", Greeting.text, keep_alive, head.startswith(b"head ")))
        if not keep_alive:
            server.close(conn)
            return
    rest = pending[pos:]
    if len(rest) > MAX_REQUEST:
        server.send(conn, _response(b"431 Request Header Fields Too Large", "request too large", False))
        server.close(conn)
        return
    conn.data = rest


@functools.lru_cache(maxsize=32)
def _response(status: bytes, text: str, keep_alive: bool, head_only: bool = False) -> bytes:
    """A whole HTTP/1.1 response; cached, as the same few are sent again and again."""
    body = f"{text}\n".encode()
    headers = [b"HTTP/1.1 " + status, b"Content-Type: text/plain; charset=utf-8",
               b"Content-Length: %d" % len(body)]
    if not keep_alive:
        headers.append(b"Connection: close")
    return b"\r\n".join(headers) + b"\r\n\r\n" + (b"" if head_only else body)
