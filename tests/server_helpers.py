"""Running ``python -m lab serve`` for real in tests (through ``lab.process``): start, wait, talk, clean up."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lab import process
from lab.clients import Client
from lab.errors import LabError
from lab.events import Kind
from lab.pidfile import is_alive

# An app whose answers carry a version text, so a test sees which code answered.
VERSIONED_APP = """\
import os

TEXT = {text!r}


def on_receive(server, conn, data):
    for line in data.splitlines():
        if line == b"pid":
            server.send(conn, b"%d\\n" % os.getpid())
        elif line.startswith(b"big "):
            server.send(conn, b"x" * int(line.split()[1]) + b"\\n")
        elif line == b"boom":
            raise RuntimeError("boom on purpose")
        elif line.startswith(b"slow "):
            delay = float(line.split()[1])
            server.reactor.call_later(delay, server.send, conn, (TEXT + " slow\\n").encode())
        else:
            server.send(conn, (TEXT + "\\n").encode())
"""


def write_app(app_dir: Path, text: str, name: str = "app.py", source: str = VERSIONED_APP) -> Path:
    path = app_dir / name
    path.write_text(source.format(text=text))
    return path


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, message: str = "condition") -> Any:
    """``lab.process.wait_until``, failing the test (AssertionError) after ``timeout`` seconds."""
    try:
        return process.wait_until(condition, timeout, what=message)
    except LabError as exc:
        raise AssertionError(str(exc)) from None


def ask(port: int, line: bytes = b"hi", host: str = "127.0.0.1", timeout: float = 5.0) -> str:
    """One fresh connection (a ``lab.clients.Client``), one line out, one line back."""
    with Client((host, port), timeout) as client:
        client.sock.sendall(line + b"\n")
        return client.recv_line().strip()


def read_line(s: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data.decode().strip()


class ServerProcess(process.ServerProcess):
    """``python -m lab serve`` on a free loopback port in ``tmp``, its stderr in a file of its own."""

    def __init__(
        self,
        tmp: Path,
        target: str = "app",
        app_dir: Path | None = None,
        workers: int = 2,
        args: tuple[str, ...] = (),
        pidfile: Path | None = None,
        bind: str = "127.0.0.1:0",
    ):
        self.tmp = tmp
        self.pidfile = pidfile or tmp / "server.pid"
        events = tmp / "events.jsonl"
        argv = process.serve_argv(
            target, events, app_dir=app_dir or tmp, bind=bind, workers=workers, pidfile=self.pidfile, graceful_timeout=5
        )
        super().__init__([*argv, *args], events, cwd=tmp, output=tmp / f"stderr-{time.monotonic_ns()}.txt")

    @property
    def stderr_path(self) -> Path:
        assert self.output_path is not None  # always given by __init__
        return self.output_path

    @stderr_path.setter
    def stderr_path(self, path: Path) -> None:
        self.output_path = path

    @property
    def port(self) -> int:
        return self.address[1] if self.address is not None else 0

    @port.setter
    def port(self, port: int) -> None:
        self.address = ("127.0.0.1", port)

    def stderr(self) -> str:
        return self.output()

    def poll_events(self) -> list[dict[str, Any]]:
        return self.read()

    def wait_event(self, kind: str, timeout: float = 10.0, count: int = 1, **match: Any) -> dict[str, Any]:
        """The ``count``-th event of ``kind`` matching ``match`` (waits for it)."""
        return self.wait_for(kind, timeout, count=count, **match)

    def ask(self, line: bytes = b"hi") -> str:
        return ask(self.port, line)

    def signal(self, signum: int) -> None:
        self.send_signal(signum)

    def reload(self, timeout: float = 10.0) -> dict[str, Any]:
        """SIGUSR1, then the next generation's ``reload.done``."""
        generation = max(e["generation"] for e in self.find(Kind.RELOAD_START)) + 1
        self.signal(signal.SIGUSR1)
        return self.wait_event(Kind.RELOAD_DONE, timeout=timeout, generation=generation)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait (SIGKILL if it hangs); then make sure no worker of it is left."""
        code = super().stop(timeout)
        pids = [e["pid"] for e in self.find(Kind.WORKER_START)]
        wait_until(lambda: not any(is_alive(p) for p in pids), 5, message="workers gone")
        return 0 if code is None else code


def run_cli(*args: str, timeout: float = 30, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def serving(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """The body of a ``serve`` fixture: ``serve(wait=True, **ServerProcess kwargs)`` starts a
    server; every server started is stopped at the end."""
    started: list[ServerProcess] = []

    def start(wait: bool = True, **kwargs: Any) -> ServerProcess:
        server = ServerProcess(tmp_path, **kwargs)
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        server.stop()
