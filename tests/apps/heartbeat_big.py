"""Test app for the heartbeat: ``big N`` answers N bytes; any other line is echoed back.

A large answer is what makes write progress matter: a client that reads it slowly is busy, one
that never reads it is idle, though neither sends a byte.
"""

from __future__ import annotations


def on_connect(server, conn) -> None:
    conn.data = b""  # a line not complete yet


def on_receive(server, conn, data: bytes) -> None:
    *lines, conn.data = (conn.data + data).split(b"\n")
    for line in lines:
        word, _, size = line.partition(b" ")
        if word == b"big" and size.isdigit():
            server.send(conn, bytes(int(size)))
        else:
            server.send(conn, line + b"\n")
