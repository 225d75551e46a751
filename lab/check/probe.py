"""The socket side of ``python -m lab check``: requests, client threads, heartbeat connections.

Everything here measures and records; what the records mean is decided in ``verdicts``. Every
thread has a deadline or a stop event, and every socket a timeout, so nothing outlives a run.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable

from lab.check.verdicts import Answer, Lifetime
from lab.errors import LabError
from lab.i18n import _

REQUEST_TIMEOUT = 5.0
LINE_REQUEST = b"hi\n"
MAX_ANSWER = 1 << 20

Address = tuple[str, int]


def parse_connect(text: str) -> Address:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> address; only loopback: the checker makes load."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LabError(_("--connect {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9501").format(text=text))
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LabError(_("--connect {text!r}: {reason}").format(text=text, reason=exc.strerror)) from None
    addresses = {str(info[4][0]) for info in infos}
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise LabError(
            _(
                "--connect {text!r}: only loopback addresses (127.0.0.1, ::1, localhost) are allowed, the "
                "check loads the server hard"
            ).format(text=text)
        )
    return host, int(port)


def http_request(host: str, keep_alive: bool) -> bytes:
    connection = "keep-alive" if keep_alive else "close"
    return f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n\r\n".encode()


def read_answer(sock: socket.socket, protocol: str, buffer: bytearray) -> str:
    """One answer from ``sock`` (a line, or an HTTP response's body); raises on EOF or timeout.

    ``buffer`` keeps bytes of the next answer on a keep-alive connection.
    """
    if protocol == "line":
        return _read_until(sock, buffer, b"\n").decode(errors="replace")
    head = _read_until(sock, buffer, b"\r\n\r\n").decode("latin-1").lower()
    fields = dict(line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
    length = fields.get("content-length", "").strip()
    if length.isdigit():
        return _read_exactly(sock, buffer, int(length)).decode(errors="replace")
    if "chunked" in fields.get("transfer-encoding", ""):
        return _read_until(sock, buffer, b"\r\n0\r\n\r\n").decode(errors="replace")
    return _read_to_eof(sock, buffer).decode(errors="replace")  # a body delimited by the close


def _recv(sock: socket.socket, buffer: bytearray) -> None:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionAbortedError("closed before a whole answer")
    buffer += chunk
    if len(buffer) > MAX_ANSWER:
        raise ConnectionError("answer larger than 1 MiB")


def _read_until(sock: socket.socket, buffer: bytearray, end: bytes) -> bytes:
    while (pos := buffer.find(end)) < 0:
        _recv(sock, buffer)
    out = bytes(buffer[: pos + len(end)])
    del buffer[: pos + len(end)]
    return out


def _read_exactly(sock: socket.socket, buffer: bytearray, size: int) -> bytes:
    while len(buffer) < size:
        _recv(sock, buffer)
    out = bytes(buffer[:size])
    del buffer[:size]
    return out


def _read_to_eof(sock: socket.socket, buffer: bytearray) -> bytes:
    try:
        while True:
            _recv(sock, buffer)
    except ConnectionAbortedError:
        pass
    out = bytes(buffer)
    buffer.clear()
    return out


def ask(address: Address, protocol: str, timeout: float = REQUEST_TIMEOUT) -> str:
    """One request on a fresh connection, its answer's text; raises ``OSError`` on any failure."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(LINE_REQUEST if protocol == "line" else http_request(address[0], False))
        return read_answer(sock, protocol, bytearray())


class Clients:
    """Threads asking without pause on fresh connections; every request is kept as an ``Answer``.

    ``identify(text)`` maps an answer's text to its token number (``None``: no known token).
    """

    def __init__(self, address: Address, protocol: str, count: int, identify: Callable[[str], int | None]):
        self.address, self.protocol, self.identify = address, protocol, identify
        self.count = count
        self.answers: list[Answer] = []
        self.first: dict[int, float] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, daemon=True, name=f"lab-check-client-{i}") for i in range(count)
        ]

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                text = ask(self.address, self.protocol)
            except OSError as exc:
                self._keep(Answer(sent, time.monotonic(), None, type(exc).__name__))
                self._stop.wait(0.01)  # a refused connection fails at once: do not spin
                continue
            token = self.identify(text)
            self._keep(Answer(sent, time.monotonic(), token, "" if token is not None else f"unknown {text[:40]!r}"))

    def _keep(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)
            if answer.token is not None:
                self.first.setdefault(answer.token, answer.received)

    def seen(self, token: int) -> bool:
        with self.lock:
            return token in self.first

    def since(self, t: float) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.sent >= t]

    def __enter__(self) -> Clients:
        self.started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def silent(address: Address, until: float, out: list[Lifetime]) -> None:
    """Connect, send nothing, note when the server closes the connection (or ``None`` by ``until``)."""
    opened = time.monotonic()
    try:
        sock = socket.create_connection(address, timeout=REQUEST_TIMEOUT)
    except OSError:  # refused: closed at once
        out.append(Lifetime(opened, opened))
        return
    with sock:
        opened = time.monotonic()
        closed = None
        while closed is None and (left := opened + until - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                if not sock.recv(65536):
                    closed = time.monotonic()
            except TimeoutError:
                break
            except OSError:
                closed = time.monotonic()
    out.append(Lifetime(opened, closed))


def chatty(address: Address, protocol: str, every: float, until: float, out: list[Lifetime]) -> None:
    """A request every ``every`` s on one connection; notes when the server closed it, if it did."""
    request = LINE_REQUEST if protocol == "line" else http_request(address[0], True)
    opened = time.monotonic()
    try:
        sock = socket.create_connection(address, timeout=REQUEST_TIMEOUT)
    except OSError:
        out.append(Lifetime(opened, opened))
        return
    with sock:
        opened = time.monotonic()
        closed, buffer = None, bytearray()
        while closed is None and time.monotonic() + every < opened + until:
            time.sleep(every)
            try:
                sock.sendall(request)
                read_answer(sock, protocol, buffer)
            except OSError:
                closed = time.monotonic()
    out.append(Lifetime(opened, closed))


def heartbeat_clients(
    address: Address, protocol: str, idle: float, until: float, silent_count: int, chatty_count: int
) -> tuple[list[Lifetime], list[Lifetime]]:
    """Silent and chatty connections side by side; returns their lifetimes once all are done."""
    silents: list[Lifetime] = []
    chatties: list[Lifetime] = []
    threads = [
        threading.Thread(target=silent, args=(address, until, silents), daemon=True) for _ in range(silent_count)
    ]
    threads += [
        threading.Thread(target=chatty, args=(address, protocol, 0.3 * idle, until, chatties), daemon=True)
        for _ in range(chatty_count)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return silents, chatties
