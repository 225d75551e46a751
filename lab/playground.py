"""What a notebook holds to drive a real server: start it, edit its app, script clients, stop it.

    lab = Lab()                                   # copies the example app, starts the server
    lab.request("hi")                             # 'hello world client'
    lab.replace("hello.py", "hello world client", "hello, reloaded")
    lab.wait_for("reload.done")                   # blocks; ``await lab.until(...)`` lets views redraw
    load = lab.load(threads=4, duration=5)        # background clients counting ok / failed
    lab.stop()                                    # everything it started is gone

The kernel never forks: the server runs as ``python -m lab serve`` in a subprocess, in its own
session (an interrupted cell's SIGINT cannot reach it) and with ``PR_SET_PDEATHSIG`` set before
the exec, so the kernel dying -- even by SIGKILL -- stops it (its workers follow their master the
same way). A ``Lab`` that is garbage-collected, or still running when the interpreter exits, is
stopped by ``weakref.finalize``.

Caveat of ``PR_SET_PDEATHSIG``: it fires when the *thread* that started the process ends, so
create a ``Lab`` from the main thread (as a notebook cell does).

A kernel killed outright runs no finalizer, so its scratch directory stays: each scratch
directory holds an owner file (the pid and start time of the process that made it, in the pid
file format), and a new ``Lab`` removes those whose owner and server are both gone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.config import Config
from lab.debounce import DEFAULT_DEBOUNCE
from lab.errors import LabError
from lab.events import EventSink, EventTail
from lab.pidfile import PidFile, inspect, runs

Event = dict[str, Any]

EXAMPLE_APP = Path(__file__).resolve().parent / "examples" / "hello.py"
SCRATCH_PREFIX = "reactor-lab-"
OWNER_FILE = "owner.pid"  # in a scratch directory: who made it (and that the lab made it)
SERVER_PIDFILE = "server.pid"

# Run in the new process before it becomes the server: die with the parent, then exec.
_DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("the notebook that started this server is gone")
os.execv(sys.argv[2], sys.argv[2:])
"""


class Lab:
    """A server subprocess serving a scratch copy of an app, with its events, edits and clients.

    ``app``: a ``.py`` file or a package directory to copy (default: ``lab/examples/hello.py``),
    served as its module name. Server options mirror ``python -m lab serve``. ``start=False``
    only prepares the scratch directory; call ``start()``.
    """

    def __init__(self, app: str | os.PathLike[str] = EXAMPLE_APP, *, workers: int = 2, watch: bool = True,
                 heartbeat_idle: float | None = None, heartbeat_interval: float | None = None,
                 heartbeat_strategy: str | None = None, graceful_timeout: float = 5.0,
                 debounce: float = DEFAULT_DEBOUNCE, extra_args: tuple[str, ...] = (), start: bool = True,
                 ready_timeout: float = 20.0):
        source = Path(app)
        if not source.exists() or not (source.is_dir() or source.suffix == ".py"):
            raise LabError(f"no app at {source}: give a .py file or a package directory")
        # The server's own checks, here: a bad value is one line now, not a server that exits.
        Config(workers=workers, heartbeat_idle=heartbeat_idle, heartbeat_interval=heartbeat_interval,
               heartbeat_strategy=heartbeat_strategy, graceful_timeout=graceful_timeout, debounce=debounce)
        sweep_scratch()
        self.root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
        PidFile(str(self.root / OWNER_FILE)).create()
        self.app_dir = self.root / "app"
        self.app_dir.mkdir()
        if source.is_dir():
            shutil.copytree(source, self.app_dir / source.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, self.app_dir / source.name)
        self.target = source.stem
        self.events_path = self.root / "events.jsonl"
        self.pidfile = self.root / SERVER_PIDFILE
        self.log_path = self.root / "server.log"
        options = {"--workers": workers, "--graceful-timeout": graceful_timeout, "--debounce": debounce,
                   "--heartbeat-idle": heartbeat_idle, "--heartbeat-interval": heartbeat_interval,
                   "--heartbeat-strategy": heartbeat_strategy}
        self.args = ["serve", self.target, "--app-dir", str(self.app_dir), "--bind", "127.0.0.1:0",
                     "--events", str(self.events_path), "--pidfile", str(self.pidfile),
                     *(["--watch", str(self.app_dir)] if watch else []),
                     *[str(a) for k, v in options.items() if v is not None for a in (k, v)], *extra_args]
        self.ready_timeout = ready_timeout
        self.history: list[Event] = []
        self.address: tuple[str, int] | None = None
        self._tail = EventTail(self.events_path)
        self._mark = 0  # wait_for looks at events after this index: those after the last action
        self._notes = EventSink(self.events_path)  # the lab's own actions, on the same timeline
        self._res = _Resources(self.root, self._notes)
        self._finalizer = weakref.finalize(self, self._res.close)
        if start:
            self.start()

    # --- the server process ------------------------------------------------------------------

    def start(self) -> Lab:
        """Start the server and wait until its first generation serves (LabError if it cannot)."""
        if self.running:
            return self
        if not self._finalizer.alive:
            raise LabError("this Lab is closed (its scratch directory is removed): create a new Lab()")
        self._mark = len(self.read_events())
        log = open(self.log_path, "ab")
        try:
            cmd = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), sys.executable, "-m", "lab", *self.args]
            self._res.proc = subprocess.Popen(cmd, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        try:
            started = self.wait_for("server.start", timeout=self.ready_timeout)
            host, _, port = started["bind"].rpartition(":")
            self.address = (host.strip("[]"), int(port))
            self.wait_for("reload.done", timeout=self.ready_timeout, generation=1)
        except LabError:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int | None:
        """The master's pid (None before ``start``)."""
        return self._res.proc.pid if self._res.proc is not None else None

    @property
    def running(self) -> bool:
        return self._res.proc is not None and self._res.proc.poll() is None

    @property
    def port(self) -> int:
        if self.address is None:
            raise LabError("the server is not started: call lab.start()")
        return self.address[1]

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the clients, then the server (SIGTERM: a graceful stop; SIGKILL after ``timeout``).

        Returns the server's exit code. The scratch directory stays for reading; ``close()``
        removes it.
        """
        code = self._res.stop(timeout)
        self.read_events()
        return code

    def close(self) -> None:
        """Stop everything and remove the scratch directory."""
        self._finalizer()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self) -> str:
        """What the server printed (its stderr and stdout)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        state = f"serving on {self.address[0]}:{self.address[1]}" if self.running and self.address else "stopped"
        return f"<Lab {self.target} pid={self.pid} {state}>"

    # --- events ------------------------------------------------------------------------------

    def read_events(self) -> list[Event]:
        """Every event so far (the server's, its workers' and the lab's own)."""
        self.history.extend(self._tail.read())
        return self.history

    def of(self, *kinds: str) -> list[Event]:
        return [e for e in self.read_events() if e["kind"] in kinds]

    def _find(self, kind: str, after: int, match: dict[str, Any]) -> Event | None:
        for e in self.read_events()[after:]:
            if e["kind"] == kind and all(e.get(k) == v for k, v in match.items()):
                return e
        return None

    def _failure(self, kind: str) -> str | None:
        """Why waiting for ``kind`` is pointless: the server exited, or (for a reload) it failed."""
        if self._res.proc is not None and self._res.proc.poll() is not None and not kind.startswith("server.stop"):
            tail = "\n".join(self.log().strip().splitlines()[-5:])
            return f"the server exited with code {self._res.proc.returncode}:\n{tail}"
        if kind == "reload.done":
            failed = self._find("reload.failed", self._mark, {})
            if failed is not None:
                return f"the reload failed (the old workers keep serving): {failed.get('error', '')}"
        return None

    def wait_for(self, kind: str, timeout: float = 10.0, after: int | None = None, **match: Any) -> Event:
        """Block until an event of ``kind`` (with fields equal to ``match``) arrives, and return it.

        Only events after ``after`` (an index into ``history``) count; by default those after the
        lab's last action (start, edit, signal), so ``edit(); wait_for("reload.done")`` never
        returns an older reload. Raises LabError on timeout, or early when the server exits.
        """
        after = self._mark if after is None else after
        deadline = time.monotonic() + timeout
        while True:
            found = self._find(kind, after, match)
            if found is not None:
                return found
            failure = self._failure(kind)
            if failure is not None:
                raise LabError(f"waiting for {kind}: {failure}")
            if time.monotonic() > deadline:
                raise LabError(f"no {kind} event within {timeout:g} s; see lab.log() and lab.history")
            time.sleep(0.01)

    async def until(self, kind: str, timeout: float = 10.0, after: int | None = None, **match: Any) -> Event:
        """``wait_for`` for a notebook cell: ``await lab.until("reload.done")`` lets views redraw."""
        after = self._mark if after is None else after
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.wait_for(kind, timeout=0, after=after, **match)
            except LabError:
                if self._failure(kind) is not None or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.02)

    def note(self, kind: str, **fields: Any) -> Event:
        """Write an event of the lab's own (an action) to the events file."""
        return self._notes.emit(kind, **fields)

    def _act(self, kind: str, **fields: Any) -> Event:
        self._mark = len(self.read_events())
        return self.note(kind, **fields)

    # --- editing the app ---------------------------------------------------------------------

    def path(self, relpath: str) -> Path:
        path = (self.app_dir / relpath).resolve()
        if not path.is_relative_to(self.app_dir.resolve()):
            raise LabError(f"{relpath!r} is outside the app directory {self.app_dir}")
        return path

    def read(self, relpath: str) -> str:
        try:
            return self.path(relpath).read_text()
        except FileNotFoundError:
            raise LabError(f"no file {relpath!r} in {self.app_dir}: "
                           f"it holds {sorted(p.name for p in self.app_dir.iterdir())}") from None

    def edit(self, relpath: str, text: str) -> None:
        """Save ``text`` as the app file ``relpath``, atomically, as many editors do.

        Written to a ``*.tmp`` file beside it (ignored by the watcher), then renamed over it: a
        reload can never import a half-written file, even when this process is descheduled
        between truncating and writing (an in-place write can be seen truncated).
        """
        path = self.path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._act("lab.edit", path=str(path))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, path.stat().st_mode & 0o777 if path.exists() else 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    def replace(self, relpath: str, old: str, new: str) -> None:
        """Replace the first ``old`` with ``new`` in an app file; LabError when ``old`` is not there."""
        text = self.read(relpath)
        if old not in text:
            raise LabError(f"{old!r} is not in {relpath}: lab.read({relpath!r}) shows what is")
        self.edit(relpath, text.replace(old, new, 1))

    # --- signals -----------------------------------------------------------------------------

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the master (SIGUSR1/SIGHUP: reload; SIGTERM: stop; SIGQUIT: now)."""
        if not self.running:
            raise LabError("the server is not running: lab.start() it first")
        self._act("lab.signal", signal=signal.Signals(signum).name)
        os.kill(self.pid, signum)

    def reload(self) -> None:
        """Ask for a reload, as ``python -m lab reload`` does (SIGUSR1)."""
        self.send_signal(signal.SIGUSR1)

    def workers(self) -> list[int]:
        """Pids of the workers of the serving generation that have not exited."""
        events = self.read_events()
        done = [e["generation"] for e in events if e["kind"] == "reload.done"]
        if not done:
            return []
        exited = {e.get("pid") for e in events if e["kind"] == "worker.exit"}
        return [e["pid"] for e in events if e["kind"] == "worker.ready"
                and e.get("generation") == done[-1] and e["pid"] not in exited]

    def kill_worker(self, signum: int = signal.SIGKILL) -> int:
        """Kill one worker of the serving generation (the master replaces it); returns its pid."""
        pids = self.workers()
        if not pids:
            raise LabError("no serving worker to kill: is the server started?")
        self._act("lab.kill_worker", worker=pids[0], signal=signal.Signals(signum).name)
        os.kill(pids[0], signum)
        return pids[0]

    # --- clients -----------------------------------------------------------------------------

    def connect(self, timeout: float = 5.0) -> Client:
        """A client connection (closed by ``stop()`` if still open)."""
        client = Client(self._server_address(), timeout)
        self._res.clients.append(client)
        return client

    def request(self, line: str = "hi", timeout: float = 5.0) -> str:
        """Connect, send one line, return the answer line (without its newline)."""
        with Client(self._server_address(), timeout) as client:
            return client.request(line)

    def silent(self) -> Client:
        """A connection that never sends: the heartbeat's prey."""
        return self.connect()

    def chatty(self, every: float = 1.0, duration: float = 60.0) -> Chatty:
        """One connection sending a line every ``every`` s, for at most ``duration`` s."""
        return self._background(Chatty(self._server_address(), every, duration, self._notes))

    def slow_reader(self, requests: int = 2000, chunk: int = 256, pause: float = 0.005,
                    duration: float = 30.0) -> SlowReader:
        """Sends ``requests`` lines at once, then reads the answers ``chunk`` bytes at a time."""
        return self._background(SlowReader(self._server_address(), requests, chunk, pause, duration, self._notes))

    def load(self, threads: int = 4, duration: float = 10.0, pause: float = 0.01) -> Load:
        """``threads`` clients each making requests (a new connection each) for ``duration`` s.

        ``pause`` between requests keeps the event stream (two events a request) drawable; 0
        makes as many requests as the threads can.
        """
        return self._background(Load(self._server_address(), threads, duration, pause, self._notes))

    def _background(self, job: Background) -> Any:
        self._res.jobs.append(job)
        job.start()
        return job

    def _server_address(self) -> tuple[str, int]:
        if not self.running or self.address is None:
            raise LabError("the server is not running: lab.start() it first")
        return self.address


class _Resources:
    """What a Lab must release, held apart from it so ``weakref.finalize`` can release it."""

    def __init__(self, root: Path, notes: EventSink):
        self.root = root
        self.notes = notes
        self.proc: subprocess.Popen | None = None
        self.clients: list[Client] = []
        self.jobs: list[Background] = []

    def stop(self, timeout: float) -> int | None:
        for job in self.jobs:
            job.stop()
        self.jobs.clear()
        for client in self.clients:
            client.close()
        self.clients.clear()
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # The session we created: workers still in it (a master killed mid-fork) go too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return proc.wait()

    def close(self) -> None:
        self.stop(timeout=10.0)
        self.notes.close()
        shutil.rmtree(self.root, ignore_errors=True)


class Client:
    """A line-protocol client on one TCP connection (a context manager)."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0):
        self.sock = socket.create_connection(address, timeout=timeout)
        self._buffer = b""

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def recv_line(self) -> str:
        """The next answer line; LabError if the server closed the connection first."""
        while b"\n" not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                raise LabError("the server closed the connection")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
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

    def __init__(self, address: tuple[str, int], duration: float, notes: EventSink, threads: int = 1):
        self.address = address
        self.duration = duration
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []  # the first few failures, for the reader
        self._notes = notes
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._main, daemon=True, name=f"{self.kind}-{i}")
                         for i in range(threads)]

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
        self._notes.emit(f"{self.kind}.failed", error=text)

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
    kind = "load"

    def __init__(self, address: tuple[str, int], threads: int, duration: float, pause: float, notes: EventSink):
        super().__init__(address, duration, notes, threads)
        self.pause = pause

    def run(self) -> None:
        while self.going:
            try:
                with Client(self.address, timeout=5.0) as client:
                    client.request("hi")
                self._count_ok()
            except (OSError, LabError) as exc:
                self._fail(exc)
            if self.pause:
                self._stopping.wait(self.pause)


class Chatty(Background):
    kind = "chatty"

    def __init__(self, address: tuple[str, int], every: float, duration: float, notes: EventSink):
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
    kind = "slow_reader"

    def __init__(self, address: tuple[str, int], requests: int, chunk: int, pause: float, duration: float,
                 notes: EventSink):
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


def sweep_scratch(tmp: str | None = None) -> list[Path]:
    """Remove the scratch directories of Labs whose process was killed (no finalizer ran):
    only this user's, made by a Lab (an owner file), whose owner and server are both gone."""
    tmp = tempfile.gettempdir() if tmp is None else tmp
    try:
        entries = [e for e in os.scandir(tmp) if e.name.startswith(SCRATCH_PREFIX)]
    except OSError:
        return []
    removed = []
    for entry in entries:
        try:
            mine = entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == os.getuid()
        except OSError:
            continue
        if mine and _abandoned(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def _abandoned(directory: str) -> bool:
    """True when a Lab made ``directory`` and neither that Lab's process nor its server runs."""
    server = os.path.join(directory, SERVER_PIDFILE)
    try:
        if runs(inspect(os.path.join(directory, OWNER_FILE))):
            return False
        return not (os.path.lexists(server) and runs(inspect(server)))
    except LabError:  # no owner file (not made by a Lab), or a pid file that is not one
        return False


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "the condition") -> Any:
    """Poll ``condition`` until it returns something true; LabError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise LabError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.01)
    return value


def terminate(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM (a server's graceful stop), SIGKILL if it is not gone within ``timeout``; reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
