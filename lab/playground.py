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
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

from lab.clients import Background, Chatty, Client, Load, SlowReader
from lab.config import Config
from lab.debounce import DEFAULT_DEBOUNCE
from lab.errors import LabError
from lab.events import Event, EventSink, Kind
from lab.i18n import _
from lab.pidfile import PidFile, inspect, runs
from lab.process import ServerProcess, serve_argv, terminate, wait_until

# Clients and process helpers are imported from here by notebooks and tests.
__all__ = [
    "Lab",
    "Client",
    "Background",
    "Chatty",
    "Load",
    "SlowReader",
    "sweep_scratch",
    "terminate",
    "wait_until",
    "EXAMPLE_APP",
]


EXAMPLE_APP = Path(__file__).resolve().parent / "examples" / "hello.py"
SCRATCH_PREFIX = "reactor-lab-"
OWNER_FILE = "owner.pid"  # in a scratch directory: who made it (and that the lab made it)
SERVER_PIDFILE = "server.pid"


def _scratch_with_app(source: Path) -> tuple[Path, Path]:
    """A new scratch folder, marked as this process's, holding a copy of the app: (root, app folder)."""
    sweep_scratch()
    root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
    PidFile(str(root / OWNER_FILE)).create()
    app_dir = root / "app"
    app_dir.mkdir()
    if source.is_dir():
        shutil.copytree(source, app_dir / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy(source, app_dir / source.name)
    return root, app_dir


class Lab:
    """A server subprocess serving a scratch copy of an app, with its events, edits and clients.

    ``app``: a ``.py`` file or a package directory to copy (default: ``lab/examples/hello.py``),
    served as its module name. Server options mirror ``python -m lab serve``. ``start=False``
    only prepares the scratch directory; call ``start()``.
    """

    def __init__(
        self,
        app: str | os.PathLike[str] = EXAMPLE_APP,
        *,
        workers: int = 2,
        watch: bool = True,
        heartbeat_idle: float | None = None,
        heartbeat_interval: float | None = None,
        heartbeat_strategy: str | None = None,
        graceful_timeout: float = 5.0,
        debounce: float = DEFAULT_DEBOUNCE,
        extra_args: tuple[str, ...] = (),
        start: bool = True,
        ready_timeout: float = 20.0,
    ):
        source = Path(app)
        if not source.exists() or not (source.is_dir() or source.suffix == ".py"):
            raise LabError(_("no app at {source}: give a .py file or a package directory").format(source=source))
        options: dict[str, Any] = dict(
            workers=workers,
            graceful_timeout=graceful_timeout,
            debounce=debounce,
            heartbeat_idle=heartbeat_idle,
            heartbeat_interval=heartbeat_interval,
            heartbeat_strategy=heartbeat_strategy,
        )
        Config(**options)  # the server's own checks, here: a bad value is one line now, not a server that exits
        self.root, self.app_dir = _scratch_with_app(source)
        self.target = source.stem
        self.events_path = self.root / "events.jsonl"
        self.pidfile = self.root / SERVER_PIDFILE
        self.log_path = self.root / "server.log"
        argv = serve_argv(
            self.target,
            self.events_path,
            app_dir=self.app_dir,
            bind="127.0.0.1:0",
            pidfile=self.pidfile,
            watch=self.app_dir if watch else None,
            **options,
        )
        self._server = ServerProcess(
            [*argv, *extra_args],
            self.events_path,
            cwd=self.root,
            output=self.log_path,
            merge_stdout=True,
            own_session=True,
            die_with_parent=True,
        )
        self.args = self._server.argv[3:]  # after ``python -m lab``
        self.ready_timeout = ready_timeout
        self.history: list[Event] = self._server.events  # one list, grown as events are read
        self._mark = 0  # wait_for looks at events after this index: those after the last action
        self._notes = EventSink(self.events_path)  # the lab's own actions, on the same timeline
        self._res = _Resources(self.root, self._notes, self._server)
        self._finalizer = weakref.finalize(self, self._res.close)
        if start:
            self.start()

    # --- the server process ------------------------------------------------------------------

    def start(self) -> Lab:
        """Start the server and wait until its first generation serves (LabError if it cannot)."""
        if self.running:
            return self
        if not self._finalizer.alive:
            raise LabError(_("this Lab is closed (its scratch directory is removed): create a new Lab()"))
        self._mark = len(self.read_events())
        try:
            self._server.start(timeout=self.ready_timeout)
        except LabError:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int | None:
        """The master's pid (None before ``start``)."""
        return self._server.pid

    @property
    def running(self) -> bool:
        return self._server.running

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) the server listens on (None before ``start``)."""
        return self._server.address

    @property
    def port(self) -> int:
        if self.address is None:
            raise LabError(_("the server is not started: call lab.start()"))
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
        return self._server.output()

    def __repr__(self) -> str:
        state = f"serving on {self.address[0]}:{self.address[1]}" if self.running and self.address else "stopped"
        return f"<Lab {self.target} pid={self.pid} {state}>"

    # --- events ------------------------------------------------------------------------------

    def read_events(self) -> list[Event]:
        """Every event so far (the server's, its workers' and the lab's own)."""
        return self._server.read()

    def of(self, *kinds: str) -> list[Event]:
        return [e for e in self.read_events() if e["kind"] in kinds]

    def _give_up(self, kind: str) -> str | None:
        """Why waiting for ``kind`` is pointless besides the server exiting: the reload failed."""
        if kind == Kind.RELOAD_DONE:
            failed = self._server.find(Kind.RELOAD_FAILED, self._mark)
            if failed:
                return _("the reload failed (the old workers keep serving): {error}").format(
                    error=failed[0].get("error", "")
                )
        return None

    def wait_for(self, kind: str, timeout: float = 10.0, after: int | None = None, **match: Any) -> Event:
        """Block until an event of ``kind`` (with fields equal to ``match``) arrives, and return it.

        Only events after ``after`` (an index into ``history``) count; by default those after the
        lab's last action (start, edit, signal), so ``edit(); wait_for("reload.done")`` never
        returns an older reload. Raises LabError on timeout, or early when the server exits.
        """
        after = self._mark if after is None else after
        try:
            return self._server.wait_for(kind, timeout, after, give_up=lambda: self._give_up(kind), **match)
        except LabError as exc:
            raise LabError(_("{exc}; see lab.log() and lab.history").format(exc=exc)) from None

    async def until(self, kind: str, timeout: float = 10.0, after: int | None = None, **match: Any) -> Event:
        """``wait_for`` for a notebook cell: ``await lab.until("reload.done")`` lets views redraw."""
        after = self._mark if after is None else after
        deadline = time.monotonic() + timeout
        while (found := self._server.check(kind, after, 1, match, lambda: self._give_up(kind))) is None:
            if time.monotonic() > deadline:
                raise LabError(
                    _("no {kind} event within {timeout:g} s; see lab.log() and lab.history").format(
                        kind=kind, timeout=timeout
                    )
                )
            await asyncio.sleep(0.02)
        return found

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
            raise LabError(
                _("{relpath!r} is outside the app directory {app_dir}").format(relpath=relpath, app_dir=self.app_dir)
            )
        return path

    def read(self, relpath: str) -> str:
        try:
            return self.path(relpath).read_text()
        except FileNotFoundError:
            raise LabError(
                _("no file {relpath!r} in {app_dir}: it holds {files}").format(
                    relpath=relpath, app_dir=self.app_dir, files=sorted(p.name for p in self.app_dir.iterdir())
                )
            ) from None

    def edit(self, relpath: str, text: str) -> None:
        """Save ``text`` as the app file ``relpath``, atomically, as many editors do.

        Written to a ``*.tmp`` file beside it (ignored by the watcher), then renamed over it: a
        reload can never import a half-written file, even when this process is descheduled
        between truncating and writing (an in-place write can be seen truncated).
        """
        path = self.path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._act(Kind.LAB_EDIT, path=str(path))
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
            raise LabError(
                _("{old!r} is not in {relpath}: lab.read({relpath!r}) shows what is").format(old=old, relpath=relpath)
            )
        self.edit(relpath, text.replace(old, new, 1))

    # --- signals -----------------------------------------------------------------------------

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the master (SIGUSR1/SIGHUP: reload; SIGTERM: stop; SIGQUIT: now)."""
        pid = self.pid
        if not self.running or pid is None:
            raise LabError(_("the server is not running: lab.start() it first"))
        self._act(Kind.LAB_SIGNAL, signal=signal.Signals(signum).name)
        os.kill(pid, signum)

    def reload(self) -> None:
        """Ask for a reload, as ``python -m lab reload`` does (SIGUSR1)."""
        self.send_signal(signal.SIGUSR1)

    def workers(self) -> list[int]:
        """Pids of the workers of the serving generation that have not exited."""
        return self._server.serving_pids()

    def kill_worker(self, signum: int = signal.SIGKILL) -> int:
        """Kill one worker of the serving generation (the master replaces it); returns its pid."""
        pids = self.workers()
        if not pids:
            raise LabError(_("no serving worker to kill: is the server started?"))
        self._act(Kind.LAB_KILL_WORKER, worker=pids[0], signal=signal.Signals(signum).name)
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

    def slow_reader(
        self, requests: int = 2000, chunk: int = 256, pause: float = 0.005, duration: float = 30.0
    ) -> SlowReader:
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
            raise LabError(_("the server is not running: lab.start() it first"))
        return self.address


class _Resources:
    """What a Lab must release, held apart from it so ``weakref.finalize`` can release it."""

    def __init__(self, root: Path, notes: EventSink, server: ServerProcess):
        self.root = root
        self.notes = notes
        self.server = server
        self.clients: list[Client] = []
        self.jobs: list[Background] = []

    def stop(self, timeout: float) -> int | None:
        for job in self.jobs:
            job.stop()
        self.jobs.clear()
        for client in self.clients:
            client.close()
        self.clients.clear()
        return self.server.stop(timeout)

    def close(self) -> None:
        self.stop(timeout=10.0)
        self.notes.close()
        shutil.rmtree(self.root, ignore_errors=True)


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
