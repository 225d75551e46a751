"""A small standalone server for ``python -m lab check``'s tests, with at most one defect.

    python server.py --port P --app FILE [--idle S --interval S] [--defect NAME]

It answers ``TEXT`` (read by running FILE) to each line, and to ``GET`` as HTTP/1.1; it polls FILE's
mtime and reloads TEXT when it changes (keeping the old one if FILE does not compile); with
``--idle`` it closes connections idle that long (checked at every turn of its loop, so at most
10 ms late: the checker's bound, idle + ``--interval`` + 250 ms, leaves room for a loaded machine). Plain ``socket`` and
``selectors``, no lab code: it stands for a learner's own server. ``--defect``:

    kill-early     a reload stops listening before the new code is ready: requests are refused
    never-reload   changes are ignored
    side-by-side   for a second after a reload, old and new code answer in turn
    die-on-syntax  a syntax error in FILE kills the server
    never-close    no heartbeat at all
    close-early    idle connections closed at two thirds of the idle time (chatty ones ask every 0.3 of it)
    close-late     ... 0.75 s after idle + interval (late, and well before "never closed")
    close-busy     idle time counted from the connection's start, not from its last request
    leave-behind   a forked worker ignores SIGTERM and outlives the server
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import time

DEFECTS = (
    "none",
    "kill-early",
    "never-reload",
    "side-by-side",
    "die-on-syntax",
    "never-close",
    "close-early",
    "close-late",
    "close-busy",
    "leave-behind",
)


def load(path: str) -> str:
    """TEXT from the app file; SyntaxError if it does not compile, KeyError if half-written."""
    with open(path) as f:
        source = f.read()
    namespace: dict = {}
    exec(compile(source, path, "exec"), namespace)
    return namespace["TEXT"]


def stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


class Conn:
    def __init__(self, sock: socket.socket, now: float):
        self.sock, self.opened, self.last, self.buffer = sock, now, now, b""


class Server:
    def __init__(self, args: argparse.Namespace):
        self.args, self.defect = args, args.defect
        self.selector = selectors.DefaultSelector()
        self.conns: dict[socket.socket, Conn] = {}
        self.text, self.old, self.mixed_until, self.turn = load(args.app), "", 0.0, 0
        self.seen = stat(args.app)
        self.stopping = False
        self.listen()

    def listen(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.args.port))
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)

    def poll_app(self, now: float) -> None:
        try:
            seen = stat(self.args.app)
            if seen == self.seen:
                return
            try:
                text, broken = load(self.args.app), False
            except SyntaxError:
                text, broken = "", True
            if stat(self.args.app) != seen:
                return  # it changed while being read: read it again, whole, at the next poll
        except (OSError, KeyError):
            return  # caught mid-write (empty): read it again at the next poll
        self.seen = seen
        if broken:
            if self.defect == "die-on-syntax":
                raise SystemExit(1)
            return
        if self.defect == "never-reload":
            return
        if self.defect == "kill-early":  # the old code is gone before the new one is ready
            self.selector.unregister(self.listener)
            self.listener.close()
            time.sleep(0.3)
            self.listen()
        if self.defect == "side-by-side":
            self.old, self.mixed_until = self.text, now + 1.0
        self.text = text

    def answer(self, now: float) -> str:
        if now < self.mixed_until:
            self.turn ^= 1
            if self.turn:
                return self.old
        return self.text

    def receive(self, conn: Conn, now: float) -> None:
        try:
            data = conn.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            return self.close(conn)
        conn.buffer += data
        conn.last = now
        while True:
            if conn.buffer.startswith(b"GET "):
                end = conn.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, conn.buffer = conn.buffer[:end].lower(), conn.buffer[end + 4 :]
                body = (self.answer(now) + "\n").encode()
                conn.sock.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                if b"connection: close" in head:
                    return self.close(conn)
                continue
            eol = conn.buffer.find(b"\n")
            if eol < 0:
                return
            conn.buffer = conn.buffer[eol + 1 :]
            conn.sock.send((self.answer(now) + "\n").encode())

    def close(self, conn: Conn) -> None:
        self.selector.unregister(conn.sock)
        del self.conns[conn.sock]
        conn.sock.close()

    def heartbeat(self, now: float) -> None:
        idle, interval = self.args.idle, self.args.interval
        if idle is None or self.defect == "never-close":
            return
        limit = {"close-early": idle * 2 / 3, "close-late": idle + interval + 0.75}.get(self.defect, idle)
        for conn in list(self.conns.values()):
            since = conn.opened if self.defect == "close-busy" else conn.last
            if now - since >= limit:
                self.close(conn)

    def run(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(0.01):
                now = time.monotonic()
                if key.fileobj is self.listener:
                    try:
                        sock, _ = self.listener.accept()
                    except OSError:
                        continue
                    sock.setblocking(False)
                    self.conns[sock] = Conn(sock, now)
                    self.selector.register(sock, selectors.EVENT_READ)
                elif isinstance(key.fileobj, socket.socket) and (conn := self.conns.get(key.fileobj)) is not None:
                    try:
                        self.receive(conn, now)
                    except OSError:  # reset, or a client that reads nothing: drop it
                        if conn.sock in self.conns:
                            self.close(conn)
            now = time.monotonic()
            self.poll_app(now)
            self.heartbeat(now)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--idle", type=float)
    parser.add_argument("--interval", type=float)
    parser.add_argument("--defect", choices=DEFECTS, default="none")
    args = parser.parse_args()
    if args.idle is not None and args.interval is None:
        args.interval = args.idle / 2
    if args.defect == "leave-behind" and os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)  # bounded: gone after a minute even if nobody kills it
        os._exit(0)
    server = Server(args)
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "stopping", True))
    server.run()


if __name__ == "__main__":
    main()
