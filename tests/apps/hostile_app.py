"""Test app for the hostile tests: a line protocol with commands that misbehave on purpose.

    pid        -> this worker's pid
    big N      -> N bytes and a newline
    flood N    -> N MiB queued within this one call (an app that outruns its client)
    spin       -> an endless loop (app code that never returns to the reactor)
    anything   -> ok

A line longer than ``MAX_LINE`` is refused with an error and the connection closed: the request
buffer is bounded.
"""

from __future__ import annotations

import os

MAX_LINE = 64 * 1024
MIB = bytes(1 << 20)


def on_connect(server, conn) -> None:
    conn.data = b""  # a line not complete yet


def on_receive(server, conn, data: bytes) -> None:
    *lines, rest = (conn.data + data).split(b"\n")
    if len(rest) > MAX_LINE:
        server.send(conn, b"error: line longer than %d bytes\n" % MAX_LINE)
        server.close(conn)
        return
    conn.data = rest
    for line in lines:
        word, _, arg = line.strip().partition(b" ")
        if word == b"pid":
            server.send(conn, b"%d\n" % os.getpid())
        elif word == b"big" and arg.isdigit():
            server.send(conn, bytes(int(arg)) + b"\n")
        elif word == b"flood" and arg.isdigit():
            for _ in range(int(arg)):
                if not server.send(conn, MIB):
                    return  # the server gave up on this client
        elif word == b"spin":
            while True:
                pass
        else:
            server.send(conn, b"ok\n")
