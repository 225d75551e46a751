"""Running ``python -m lab serve`` for real in tests: start, wait on its events, talk, clean up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lab.events import EventTail
from lab.pidfile import is_alive
from lab.playground import terminate

# An app whose answers carry a version text, so a test sees which code answered.
VERSIONED_APP = '''\
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
'''


def write_app(app_dir: Path, text: str, name: str = "app.py", source: str = VERSIONED_APP) -> Path:
    path = app_dir / name
    path.write_text(source.format(text=text))
    return path


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01,
               message: str = "condition") -> Any:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def ask(port: int, line: bytes = b"hi", host: str = "127.0.0.1", timeout: float = 5.0) -> str:
    """One fresh connection, one line out, one line back."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.sendall(line + b"\n")
        return read_line(s)


def read_line(s: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data.decode().strip()


class ServerProcess:
    """A ``python -m lab serve`` subprocess on a free loopback port, with its event stream."""

    def __init__(self, tmp: Path, target: str = "app", app_dir: Path | None = None, workers: int = 2,
                 args: tuple[str, ...] = (), pidfile: Path | None = None, bind: str = "127.0.0.1:0"):
        self.tmp = tmp
        self.events_path = tmp / "events.jsonl"
        self.pidfile = pidfile or tmp / "server.pid"
        self.stderr_path = tmp / f"stderr-{time.monotonic_ns()}.txt"
        self.argv = [sys.executable, "-m", "lab", "serve", target, "--app-dir", str(app_dir or tmp),
                     "--bind", bind, "--workers", str(workers), "--events", str(self.events_path),
                     "--pidfile", str(self.pidfile), "--graceful-timeout", "5", *args]
        self.tail = EventTail(self.events_path)
        self.events: list[dict[str, Any]] = []
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, wait: bool = True) -> ServerProcess:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, cwd=self.tmp)
        if wait:
            start = self.wait_event("server.start")
            self.port = int(start["bind"].rsplit(":", 1)[1])
            self.wait_event("reload.done", generation=1)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def poll_events(self) -> list[dict[str, Any]]:
        self.events.extend(self.tail.read())
        return self.events

    def find(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.poll_events()
                if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]

    def wait_event(self, kind: str, timeout: float = 10.0, count: int = 1, **match: Any) -> dict[str, Any]:
        """The ``count``-th event of ``kind`` matching ``match`` (waits for it)."""
        def found():
            if self.proc.poll() is not None and len(self.find(kind, **match)) < count:
                raise AssertionError(f"server exited ({self.proc.returncode}) while waiting for {kind}: "
                                     f"{self.stderr()[-2000:]}")
            hits = self.find(kind, **match)
            return hits[count - 1] if len(hits) >= count else None
        return wait_until(found, timeout, message=f"{kind} {match} x{count}")

    def worker_pids(self, generation: int | None = None) -> list[int]:
        started = [e["pid"] for e in self.find("worker.start")
                   if generation is None or e["generation"] == generation]
        exited = {e["pid"] for e in self.find("worker.exit")}
        return [pid for pid in started if pid not in exited]

    def ask(self, line: bytes = b"hi") -> str:
        return ask(self.port, line)

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def reload(self, timeout: float = 10.0) -> dict[str, Any]:
        """SIGUSR1, then the next generation's ``reload.done``."""
        generation = max(e["generation"] for e in self.find("reload.start")) + 1
        self.signal(signal.SIGUSR1)
        return self.wait_event("reload.done", timeout=timeout, generation=generation)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait (SIGKILL if it hangs); then make sure no worker of it is left."""
        if self.proc is None:
            return 0
        terminate(self.proc, timeout)
        pids = [e["pid"] for e in self.find("worker.start")]
        wait_until(lambda: not any(is_alive(p) for p in pids), 5, message="workers gone")
        return self.proc.returncode


def run_cli(*args: str, timeout: float = 30, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


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
