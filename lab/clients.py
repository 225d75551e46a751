"""The clients a notebook, a test, a benchmark or the demo points at a server, on loopback TCP.

    Client       one line-protocol connection: ``request``, ``recv_line``, ``wait_closed``;
                 a Client that never sends is a *silent* client, the heartbeat's prey
    Load         threads making requests on fresh connections, counting ok / failed
    Chatty       one connection sending a line every ``every`` seconds
    SlowReader   sends many lines at once, then reads the answers a little at a time

The background ones run in threads bounded by a ``duration``, count what they get, and note each
failure as an event (``Kind.LOAD_FAILED`` ...) on the server's timeline when given a sink.
"""

from __future__ import annotations

import socket
import threading
import time

from lab.errors import LabError
from lab.events import EventSink, Kind
from lab.i18n import _


class Client:
    """A line-protocol client on one TCP connection (a context manager)."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0, rcvbuf: int | None = None):
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:  # before connect, so the TCP window is small from the start
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect(address)
        except BaseException:
            self.sock.close()
            raise
        self._buffer = b""

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def recv_line(self) -> str:
        """The next answer line; LabError if the server closed the connection first."""
        while b"\n" not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                raise LabError(_("the server closed the connection"))
            self._buffer += data
        line, _sep, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    def request(self, line: str = "hi") -> str:
        self.send(line)
        return self.recv_line()

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """True once the server has closed this connection (within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except OSError:
                return True  # reset by the server
            if not data:
                return True
            self._buffer += data
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Background:
    """Client threads that count answers (``ok``) and failures, bounded by ``duration``."""

    kind = "client"
    failed_kind: str = "client.failed"

    def __init__(self, address: tuple[str, int], duration: float, notes: EventSink | None = None, threads: int = 1):
        self.address = address
        self.duration = duration
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []  # the first few failures, for the reader
        self._notes = notes
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._main, daemon=True, name=f"{self.kind}-{i}") for i in range(threads)
        ]

    def start(self) -> None:
        self._deadline = time.monotonic() + self.duration
        for t in self._threads:
            t.start()

    def _main(self) -> None:
        try:
            self.run()
        except Exception as exc:  # counted and shown, never lost in a thread
            self._fail(exc)

    def run(self) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    @property
    def going(self) -> bool:
        return not self._stopping.is_set() and time.monotonic() < self._deadline

    def _count_ok(self, n: int = 1) -> None:
        with self._lock:
            self.ok += n

    def _fail(self, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.failed += 1
            if len(self.errors) < 20:
                self.errors.append(text)
        if self._notes is not None:
            self._notes.emit(self.failed_kind, error=text)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self, timeout: float = 10.0) -> Background:
        """Stop and wait for the threads (each finishes its current request)."""
        self._stopping.set()
        self.join(timeout)
        return self

    def join(self, timeout: float | None = None) -> Background:
        """Wait until the threads end by themselves (at ``duration`` at the latest)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self

    def __repr__(self) -> str:
        state = "running" if self.running else "done"
        return f"<{type(self).__name__} {state}: {self.ok} ok, {self.failed} failed>"


class Load(Background):
    """``threads`` clients each making requests on a new connection, ``pause`` s apart.

    ``expect``: the answer each must get (another one is a failure); ``timeout``: for each
    connection and answer; ``spans`` holds the
    (start, end) monotonic times of each failed request, to set against what the server did.
    """

    kind = "load"
    failed_kind = Kind.LOAD_FAILED

    def __init__(
        self,
        address: tuple[str, int],
        threads: int,
        duration: float,
        pause: float,
        notes: EventSink | None = None,
        expect: str | None = None,
        timeout: float = 5.0,
    ):
        super().__init__(address, duration, notes, threads)
        self.pause = pause
        self.expect = expect
        self.timeout = timeout
        self.spans: list[tuple[float, float]] = []

    def run(self) -> None:
        while self.going:
            start = time.monotonic()
            try:
                with Client(self.address, timeout=self.timeout) as client:
                    answer = client.request("hi")
                if self.expect is not None and answer != self.expect:
                    raise LabError(_("answered {answer!r}, not {expect!r}").format(answer=answer, expect=self.expect))
                self._count_ok()
            except (OSError, LabError) as exc:
                with self._lock:
                    self.spans.append((start, time.monotonic()))
                self._fail(exc)
            if self.pause:
                self._stopping.wait(self.pause)


class Chatty(Background):
    """One connection sending a line every ``every`` s; ``closed_by_server`` once it was closed."""

    kind = "chatty"
    failed_kind = Kind.CHATTY_FAILED

    def __init__(self, address: tuple[str, int], every: float, duration: float, notes: EventSink | None = None):
        super().__init__(address, duration, notes)
        self.every = every
        self.closed_by_server = False

    def run(self) -> None:
        with Client(self.address, timeout=max(5.0, self.every * 2)) as client:
            while self.going:
                try:
                    client.request("hi")
                except LabError:
                    self.closed_by_server = True
                    self._fail("the server closed the connection")
                    return
                self._count_ok()
                self._stopping.wait(self.every)


class SlowReader(Background):
    """Sends ``requests`` lines at once, then reads the answers ``chunk`` bytes at a time."""

    kind = "slow_reader"
    failed_kind = Kind.SLOW_READER_FAILED

    def __init__(
        self,
        address: tuple[str, int],
        requests: int,
        chunk: int,
        pause: float,
        duration: float,
        notes: EventSink | None = None,
    ):
        super().__init__(address, duration, notes)
        self.requests, self.chunk, self.pause = requests, chunk, pause

    def run(self) -> None:
        with Client(self.address, timeout=5.0) as client:
            client.sock.sendall(b"hi\n" * self.requests)
            while self.ok < self.requests and self.going:
                data = client.sock.recv(self.chunk)
                if not data:
                    self._fail("the server closed the connection")
                    return
                self._count_ok(data.count(b"\n"))
                self._stopping.wait(self.pause)
