r"""The tutorial's demo app: ``hello world client`` to each line, and the same over HTTP/1.1.

    python -m lab serve lab.examples.hello --watch lab/examples
    printf 'hi\n' | nc -q1 127.0.0.1 9000      # hello world client
    curl http://127.0.0.1:9000/                 # hello world client

To see hot reload, copy this file somewhere, serve it from there with ``--watch``, edit
``Greeting.text`` below and save: the next answer has the new text, no restart, no lost request.

HTTP framing is strict, as RFC 9112 asks of a server: a request whose length is ambiguous (two
different ``Content-Length`` values, ``Content-Length`` with ``Transfer-Encoding``), a field with
whitespace before its colon, a folded field line (obs-fold) or a bare CR gets ``400`` and the
connection is closed. Anything looser lets a proxy in front and this server disagree on where a
request ends: the body of one becomes a second, smuggled request. Lines may end in CRLF or LF.

A request must arrive whole within ``server.config.header_timeout`` seconds of its first byte
(``--header-timeout``; nginx's ``client_header_timeout``), or it gets ``408`` and is closed: a
client sending a byte a second is active for the heartbeat, but never finishes a request.
"""

from __future__ import annotations

import functools
import re


class Greeting:
    """The class the tutorial edits while the server runs (its ``Test::index``): change me."""

    text = "hello world client"


MAX_REQUEST = 64 * 1024  # a request head that grows past this is refused, never buffered forever

_HTTP_LINE = re.compile(rb"[A-Z]+ \S+ HTTP/1\.([01])\r?$")
_HEAD_END = re.compile(rb"\n\r?\n")  # the empty line after the fields (CRLF or a bare LF)
# The field lines: a token, a colon right after it, a value without control characters (so no
# bare CR), CRLF or LF. A line starting with a space (obs-fold) or "Name :" does not match.
_FIELD_LINES = re.compile(rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r?\n)*")
_FIELDS = re.compile(rb"\n(content-length|transfer-encoding|connection):[ \t]*([^\r\n]*)")


def on_receive(server, conn, data: bytes) -> None:
    # conn.inbuf: what arrived but is not a whole request yet (the server counts it in its budget);
    # conn.data: the timer of that request's deadline (None when nothing is pending)
    pending = conn.inbuf + data if conn.inbuf else data
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
        end = _HEAD_END.search(pending, eol)
        if end is None:
            break  # the head is not complete yet
        head = pending[pos : end.start() + 1].lower()
        framing = _framing(head, eol + 1 - pos)
        if type(framing) is bytes:  # refused: the connection cannot be trusted to continue
            server.send(conn, framing)
            server.close(conn)
            return
        length, token = framing
        request_end = end.end() + length
        if request_end > len(pending):
            break  # the body is not complete yet
        pos = request_end
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
    conn.inbuf = rest
    if conn.data is not None and (pos or not rest):
        _cancel_deadline(conn)  # a request was answered, or none is pending: its deadline is over
    if rest and conn.data is None:
        conn.data = server.reactor.call_later(server.config.header_timeout, _too_slow, server, conn)


def on_close(server, conn) -> None:
    _cancel_deadline(conn)


def _cancel_deadline(conn) -> None:
    if conn.data is not None:
        conn.data.cancel()
        conn.data = None


def _too_slow(server, conn) -> None:
    """The request's deadline passed and it is still not whole (slowloris): 408 and close."""
    conn.data = None
    server.send(conn, _response(b"408 Request Timeout", "request not complete in time", False))
    server.close(conn)


def _framing(head: bytes, fields: int) -> tuple[int, bytes] | bytes:
    """(body length, Connection token) of a lower-cased head whose fields start at ``fields``,
    or the response that refuses it (RFC 9112 sections 5 and 6.3)."""
    if _FIELD_LINES.fullmatch(head, fields) is None:
        return _response(b"400 Bad Request", "malformed field line", False)
    lengths: set[bytes] = set()
    chunked, token = False, b""
    for name, value in _FIELDS.findall(head):
        if name == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif name == b"transfer-encoding":
            chunked = True
        else:
            token = value.strip()
    if chunked:
        if lengths:
            return _response(b"400 Bad Request", "both Transfer-Encoding and Content-Length", False)
        return _response(b"501 Not Implemented", "send a body with a Content-Length", False)
    if not lengths:
        return 0, token
    length = lengths.pop()
    if lengths or not length.isdigit():
        return _response(b"400 Bad Request", "ambiguous or invalid Content-Length", False)
    return int(length), token


@functools.lru_cache(maxsize=32)
def _response(status: bytes, text: str, keep_alive: bool, head_only: bool = False) -> bytes:
    """A whole HTTP/1.1 response; cached, as the same few are sent again and again."""
    body = f"{text}\n".encode()
    headers = [b"HTTP/1.1 " + status, b"Content-Type: text/plain; charset=utf-8", b"Content-Length: %d" % len(body)]
    if not keep_alive:
        headers.append(b"Connection: close")
    return b"\r\n".join(headers) + b"\r\n\r\n" + (b"" if head_only else body)
