"""The master (the arbiter): binds, forks generations of workers, and carries out what the
supervisor decides.

Read it top to bottom like gunicorn's ``arbiter.py``. Every decision about workers (when to fork,
drain, tell ``go``, kill, back off; see the reload step by step in ``lab/supervisor.py``) is made by
``Supervisor``, a pure state machine; this module is its I/O: fork, the workers' channels, reaping,
signals, timers, the pid file and the watcher. Each event is fed to the supervisor and the actions
it returns are carried out by ``_do``. The master never imports the app: each worker does, after
the fork, so a new generation runs the code as it is on disk now. It may import heavy, unchanging
modules first (``--preload``, ``preload``), which every generation then inherits; a reload cannot
pick up a change to those, so such a change (or SIGUSR2, ``python -m lab upgrade``) starts a new
master instead (``Upgrade`` in lab/upgrade.py), which takes over the listening socket and the pid
file. The watcher's glue is ``Watching`` (lab/watching.py); the imports, ``preload`` (lab/preload.py).

All signal handling goes through the reactor: a handler only notes the signal; the work is done in
the loop. Each worker has a process group of its own, killed when the worker leaves, and the master
is a child subreaper: whatever the app starts dies with its worker, or at the latest with the server.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import random
import resource
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

from lab import worker
from lab.actions import Action, CallLater, Emit, Exit, Kill, KillSuccessor, Send, Spawn, StartUpgrade, Tell
from lab.config import Config, format_bind
from lab.errors import LabError
from lab.events import EventSink, Kind
from lab.gate import AcceptGate
from lab.pidfile import PidFile
from lab.preload import Preloaded, preload
from lab.reactor import Reactor
from lab.standby import Standbys
from lab.supervisor import Supervisor, summarize_traceback
from lab.upgrade import Predecessor, Upgrade, inherit_listener
from lab.watching import Watching

HANDLED_SIGNALS = (
    signal.SIGCHLD,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
)
# Old workers that have not confirmed their drain by then are unresponsive (stuck in app code): the
# new generation accepts without them. The accept gate (lab/gate.py), passed before ``go``, keeps
# their accepts before the new generation's whatever this wait: it only bounds the wait for a word.
DRAIN_CONFIRM_WAIT = 0.075
GATE_RETRY = 0.001  # a worker is inside the accept gate: try to pass it again this much later
_PR_SET_CHILD_SUBREAPER = 36
ORPHAN_ROUNDS = 10  # at stop: orphans killed, then the orphans they leave, this many times at most


@dataclass(eq=False)
class WorkerProcess:
    """The master's side of a worker: its pid and its channel (the supervisor keeps the rest)."""

    pid: int
    channel: socket.socket  # the master's end of the socketpair
    inbox: bytes = b""  # a partial line read from the channel


def bind_listener(config: Config) -> socket.socket:
    """The listening socket, bound before any fork so that every generation shares it."""
    family, host, port = config.address
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(config.backlog)
    except OSError as exc:
        sock.close()
        where = format_bind(host, port)
        if exc.errno == errno.EADDRINUSE:
            raise LabError(f"{where} is already in use: stop what listens there or choose another --bind") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise LabError(
                f"cannot bind {where}: that address is not on this machine; use 127.0.0.1 or [::1]"
            ) from None
        if exc.errno == errno.EACCES:
            raise LabError(f"cannot bind {where}: ports below 1024 need privileges; choose a port >= 1024") from None
        raise LabError(f"cannot bind {where}: {exc.strerror}") from None
    sock.setblocking(False)  # shared by the workers: one accept never blocks a worker
    return sock


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (workers inherit it): one fd per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # e.g. an unlimited hard limit the kernel caps lower: keep what we have


def _collect_garbage() -> None:
    """A collection before forking, so that no child starts with the master's garbage. Cheap
    (about 2 ms) because the heap as it was at the start, preloaded modules included, is frozen
    (``_freeze_start_heap``): a collection skips it, where a full one takes 60-120 ms with
    matplotlib and numpy preloaded."""
    gc.collect()


def _freeze_start_heap() -> None:
    """Move every object alive at the start (imports, preloaded modules, config) to the permanent
    generation, for good: no collection traverses it again, in the master or in a worker (which
    inherits the freeze), so a worker's collector never touches, and copies, those pages.

    Collected first, so that no garbage is frozen with it; what is frozen lives as long as the
    master, or is freed by its reference count (only cyclic garbage among it would stay).
    """
    gc.collect()
    gc.freeze()


def _kill_group(pid: int) -> None:
    """SIGKILL a worker and every process its app started in the worker's process group."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # no group (yet): the worker alone
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _children() -> list[int]:
    """This single-threaded process's children (Linux's /proc/PID/task/TID/children)."""
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: the groups must do
        return []


def _kill_orphans(keep: int | None) -> None:
    """At the end: the app's processes that left their worker's group (``setsid``) are this
    master's children by now; kill them (all but ``keep``), and the orphans they leave in turn."""
    for _ in range(ORPHAN_ROUNDS):
        orphans = [pid for pid in _children() if pid != keep]
        if not orphans:
            return
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in orphans:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


_T = TypeVar("_T")


def _made_at_start(value: _T | None) -> _T:
    """What the master creates when it starts (``_run``); needed earlier, that is a bug."""
    if value is None:
        raise RuntimeError("the master has not started")
    return value


def _describe_exit(status: int) -> dict[str, Any]:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return {"signal": signal.Signals(-code).name}
    return {"code": code}


class Master:
    """``Master(config).run()`` serves until SIGTERM/SIGINT (returns 0) or SIGQUIT."""

    def __init__(self, config: Config, echo: TextIO | None = sys.stderr, predecessor: Predecessor | None = None):
        if not config.target:
            raise LabError("no app given: python -m lab serve TARGET (module or module:attr)")
        self.config = config
        self.echo = echo
        self._reactor: Reactor | None = None
        self.events = EventSink()  # nowhere until ``_open_files`` opens the events file
        self._listener: socket.socket | None = None
        self.pidfile: PidFile | None = None
        self.watching: Watching | None = None
        self.supervisor = Supervisor(
            config.workers,
            config.graceful_timeout,
            config.worker_timeout,
            DRAIN_CONFIRM_WAIT,
            clock=time.monotonic,  # the loop's clock too
            random=random.random,
            first_generation=predecessor.generation if predecessor else 1,
            successor=predecessor is not None,
        )
        self.workers: dict[int, WorkerProcess] = {}  # by pid, until reaped
        self._gate: AcceptGate | None = None
        self._standbys: Standbys | None = None  # forked ahead of the next reload (lab/standby.py)
        self._gate_due = False  # a drain was sent: pass the gate before the next ``go``
        self._behind_gate: list[Action] = []  # ``go`` (or "drained") waiting for the gate, in order
        self._own_files: set[str] = set()
        self.preloaded = Preloaded()
        self._started = False
        self.upgrade = Upgrade(config, quiet=echo is None, predecessor=predecessor)

    @property
    def reactor(self) -> Reactor:
        return _made_at_start(self._reactor)

    @property
    def listener(self) -> socket.socket:
        return _made_at_start(self._listener)

    @property
    def gate(self) -> AcceptGate:
        return _made_at_start(self._gate)

    @property
    def standbys(self) -> Standbys:
        return _made_at_start(self._standbys)

    # --- start and stop ----------------------------------------------------------------------------

    def run(self) -> int:
        self.upgrade.open()
        try:
            return self._run()
        except LabError as exc:  # a new master that cannot start: the old one says why, and serves on
            self.upgrade.tell_predecessor(failed=f"{exc}\n")
            raise

    def _run(self) -> int:
        config = self.config
        if not os.path.isdir(config.app_dir):
            raise LabError(f"app dir {config.app_dir} is not a directory: give --app-dir the folder of the app")
        raise_fd_limit()
        # Processes the app starts and leaves behind become this master's children, not init's:
        # it can find and kill them, so none keeps the port (or anything else) after a stop.
        worker.prctl(_PR_SET_CHILD_SUBREAPER, 1)
        self._listener = self._listen()
        try:
            self._gate = AcceptGate.create()
            self._open_files()
            self._preload()
            self._reactor = Reactor(clock=self.supervisor.clock, on_error=self._on_loop_error)
            for signum, handler in (
                (signal.SIGCHLD, self._reap),
                (signal.SIGUSR1, lambda: self._trigger("SIGUSR1")),
                (signal.SIGUSR2, lambda: self._ask_upgrade("SIGUSR2")),
                (signal.SIGHUP, lambda: self._trigger("SIGHUP")),
                (signal.SIGTERM, lambda: self._stop(graceful=True)),
                (signal.SIGINT, lambda: self._stop(graceful=True)),
                (signal.SIGQUIT, lambda: self._stop(graceful=False)),
            ):
                self.reactor.add_signal_handler(signum, handler)
            predecessor = self.upgrade.predecessor
            self._standbys = Standbys(config.workers, self.reactor, self._fork_standbys, self.supervisor.quiet)
            self.upgrade.attach(self.reactor, self.events, self.supervisor, self._do, self.listener, self.pidfile)
            if config.watch:
                self.watching = Watching(
                    config,
                    self.reactor,
                    self.events,
                    self._own_files,
                    self.preloaded.files,
                    reload=lambda seen: self._trigger("watch", seen),
                    upgrade=lambda: self._ask_upgrade("preload"),
                )
            host, port = self.listener.getsockname()[:2]
            self.events.emit(
                Kind.SERVER_START,
                bind=format_bind(host, port),
                workers=config.workers,
                target=config.target,
                watch=config.watch,
                **({"upgrade_from": predecessor.pid} if predecessor else {}),
            )
            self._started = True
            _freeze_start_heap()
            self._trigger("upgrade" if predecessor else "start")
            self.standbys.fill()  # while the first generation imports: ready with it
            self.reactor.run()
        finally:
            self._cleanup()
        if self._fatal():
            raise LabError(self._fatal())
        return 0

    def _listen(self) -> socket.socket:
        """The listening socket: bound here, or the old master's, inherited by an upgrade."""
        if self.upgrade.predecessor is None:
            return bind_listener(self.config)
        return inherit_listener(self.upgrade.predecessor)

    def _open_files(self) -> None:
        """The pid file and the events file (both the lab's own: never a reason to reload)."""
        config = self.config
        if config.pidfile:
            self.pidfile = PidFile(config.pidfile)
            if self.upgrade.predecessor is None:  # a new master takes the old one's over once it serves
                self.pidfile.create()
            self._own_files.add(self.pidfile.path)
        try:
            self.events = EventSink(config.events, echo=self.echo)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW: never write through a planted link
                raise LabError(
                    f"the events file {config.events} is a symlink: refusing it; remove it or choose another path"
                ) from None
            raise LabError(f"cannot open the events file {config.events}: {exc.strerror}") from None
        if config.events:
            self._own_files.add(os.path.abspath(config.events))

    def _preload(self) -> None:
        """``--preload``: imported once here, so that no generation pays for these imports."""
        self.preloaded = preload(self.config)
        if self.preloaded.modules:
            self.events.emit(
                Kind.PRELOAD_DONE,
                modules=list(self.preloaded.modules),
                seconds=round(self.preloaded.seconds, 6),
                files=len(self.preloaded.files),
            )
        for text in self.preloaded.warnings:
            self.events.emit(Kind.PRELOAD_WARNING, modules=list(self.preloaded.modules), warning=text)

    def _fatal(self) -> str | None:
        """Why the server ended on its own: the first generation could not load the app."""
        if self.supervisor.failed_start is None:
            return None
        return f"the app {self.config.target!r} failed to start: {self.supervisor.failed_start}"

    def _cleanup(self) -> None:
        standbys = self._standbys.idle if self._standbys is not None else []
        children = [*self.workers.values(), *standbys]
        for w in children:
            _kill_group(w.pid)
        for w in children:
            try:
                os.waitpid(w.pid, 0)
            except ChildProcessError:
                pass
            w.channel.close()
        self.workers.clear()
        standbys.clear()
        _kill_orphans(keep=self.upgrade.successor)
        if self.watching is not None:
            self.watching.close()
        if self._reactor is not None:
            self._reactor.close()
        if self.pidfile is not None and not self.upgrade.handed_over:  # else the new master's
            self.pidfile.remove()
        self.listener.close()
        if self._gate is not None:
            self._gate.close()
        if self._standbys is not None:
            self._standbys.latch.close()
        if self._started:  # a start-up error says its one line, without a log of a stop
            upgraded = {"upgraded_to": self.upgrade.successor} if self.upgrade.handed_over else {}
            self.events.emit(Kind.SERVER_STOP, fatal=self._fatal(), **upgraded)
        self.events.close()

    def _trigger(self, name: str, seen: float | None = None) -> None:
        """A reload asked for: by a signal, the CLI (SIGUSR1), the watcher or the start."""
        self._do(self.supervisor.trigger(name, self.reactor.clock() if seen is None else seen))

    def _ask_upgrade(self, name: str) -> None:
        """SIGUSR2 (``python -m lab upgrade``) or a watched change of a preloaded module."""
        self._do(self.supervisor.upgrade(name))

    def _stop(self, graceful: bool) -> None:
        """SIGTERM/SIGINT (a second one: at once) or SIGQUIT (at once)."""
        self._do(self.supervisor.stop(graceful))

    # --- carrying out the supervisor's decisions --------------------------------------------------

    def _do(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                # What lets a new generation accept waits for the gate; so does an exit behind it.
                case Send(_, "go") | Tell("drained") if self._behind_gate or not self._gate_passed():
                    self._hold(action)
                case Exit() if self._behind_gate:
                    self._hold(action)
                case Emit(kind, fields):
                    self.events.emit(kind, **fields)
                case Send(pid, order):
                    self._gate_due |= order == "drain"
                    w = self.workers.get(pid)
                    if w is not None:
                        try:
                            w.channel.send(f"{order}\n".encode())
                        except OSError:
                            pass  # it died: SIGCHLD tells
                case Kill(pid):
                    if pid in self.workers:  # never a reaped pid: the number may be reused
                        _kill_group(pid)
                case Spawn(generation, indexes):
                    self._spawn(generation, indexes)
                case CallLater(delay):
                    self.reactor.call_later(delay, self._tick)
                case Exit():
                    self.reactor.stop()
                case StartUpgrade(generation):
                    self.upgrade.start_successor(generation)
                case KillSuccessor():
                    if self.upgrade.successor is not None:  # never a reaped pid
                        os.kill(self.upgrade.successor, signal.SIGKILL)
                case Tell("ready"):
                    self.upgrade.tell_predecessor(ready=True)
                case Tell("drained"):
                    self.upgrade.hand_over()

    def _gate_passed(self) -> bool:
        """No old worker can accept any more: the accept gate was passed after the last drain sent
        (lab/gate.py), now or before. Never blocks: False while a worker is inside."""
        if self._gate_due and not self.gate.try_pass():
            return False
        self._gate_due = False
        return True

    def _hold(self, action: Action) -> None:
        """A ``go`` (or what must follow one) waits, in order, and the gate is tried again soon."""
        if not self._behind_gate:
            self.reactor.call_later(GATE_RETRY, self._retry_gate)
        self._behind_gate.append(action)

    def _retry_gate(self) -> None:
        if not self._gate_passed():
            self.reactor.call_later(GATE_RETRY, self._retry_gate)
            return
        waiting, self._behind_gate = self._behind_gate, []
        self._do(waiting)

    def _tick(self) -> None:
        # What the workers said while this loop was not running (a stall) counts before any
        # deadline does: a drain confirmation, or a sign of life.
        for w in list(self.workers.values()):
            self._on_channel(w)
        self._do(self.supervisor.tick())

    # --- workers -------------------------------------------------------------------------------------

    def _spawn(self, generation: int, indexes: tuple[int, ...]) -> None:
        """Workers for these slots: standbys told to start (all at once), the rest forked now."""
        started = self.standbys.start(generation, indexes)
        for index, w in started.items():
            self._spawned(w, generation, index)
        missing = [index for index in indexes if index not in started]
        if missing:
            _collect_garbage()
        for index in missing:
            try:
                w = self._fork(generation, index)
            except OSError as exc:
                self._do(self.supervisor.fork_failed(generation, index, str(exc)))
                return
            self._spawned(w, generation, index)
        self.standbys.refill_later()

    def _spawned(self, w: WorkerProcess, generation: int, index: int) -> None:
        self.workers[w.pid] = w
        self.reactor.add_reader(w.channel.fileno(), self._on_channel, w)
        self._do(self.supervisor.spawned(w.pid, generation, index))

    def _fork_standbys(self, count: int) -> list[WorkerProcess]:
        """``count`` standbys (fewer if a fork fails: a ``Spawn`` forks then, and says why)."""
        _collect_garbage()
        forked = []
        for _ in range(count):
            try:
                forked.append(self._fork(worker.STANDBY, 0))
            except OSError:
                break
        return forked

    def _fork(self, generation: int, index: int) -> WorkerProcess:
        """A worker of that generation, or a standby (``worker.STANDBY``)."""
        parent_end, child_end = socket.socketpair()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would print the parent's buffered text again
        # Signals stay blocked across the fork, so none reaches the child while it still has the
        # master's handlers (which would wake the master's loop with the child's signal).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            parent_end.close()
            child_end.close()
            raise
        if pid == 0:
            code = 1
            try:
                parent_end.close()
                self._become_worker()
                code = worker.run(
                    worker.WorkerSpec(
                        self.config,
                        generation,
                        index,
                        self.listener,
                        child_end,
                        self.gate,
                        os.getppid(),
                        mask,
                        self.echo,
                        self.standbys.latch,
                    )
                )
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        try:
            os.setpgid(pid, pid)  # the worker does it too: its group exists whoever runs first
        except OSError:
            pass  # it has already exited (SIGCHLD tells)
        child_end.close()
        parent_end.setblocking(False)
        return WorkerProcess(pid, parent_end)

    def _become_worker(self) -> None:
        """In the child: drop the master's handlers, loop, watcher and channels (never unregister)."""
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        self.reactor.forget()
        if self.watching is not None:
            self.watching.close()
            self.watching = None
        for w in [*self.workers.values(), *self.standbys.idle]:
            w.channel.close()
        self.events.close()

    def _on_channel(self, w: WorkerProcess) -> None:
        while True:
            try:
                data = w.channel.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.reactor.remove_reader(w.channel.fileno())  # the worker is gone; SIGCHLD follows
                return
            self._do(self.supervisor.heard(w.pid))
            lines, w.inbox = worker.take_lines(w.inbox, data)
            for line in lines:
                message = json.loads(line)
                if "ready" in message:
                    self._do(self.supervisor.ready(w.pid))
                elif "failed" in message:
                    self._do(self.supervisor.failed(w.pid, message["failed"]))
                elif "draining" in message:
                    self._do(self.supervisor.draining(w.pid))

    def _on_loop_error(self, callback: Any, exc: Exception) -> None:
        """A bug in a callback costs that callback, not the server (gunicorn's arbiter logs it and
        goes on): said as an event with its traceback."""
        text = "".join(traceback.format_exception(exc))
        self.events.emit(
            Kind.SERVER_ERROR,
            callback=getattr(callback, "__qualname__", repr(callback)),
            error=summarize_traceback(text),
            traceback=text,
        )

    def _reap(self) -> None:
        """Reap exited children: workers (and what their app left in their process group), and
        orphans of the app adopted by this master (a subreaper)."""
        while True:
            try:  # WNOWAIT: a worker's pid, so its group id, stays taken until the group is killed
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            if info.si_pid in self.workers or info.si_pid in self.standbys.pids():
                _kill_group(info.si_pid)
            try:
                pid, status = os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                continue
            if self.upgrade.reaped(pid, _describe_exit(status)) or self.standbys.reaped(pid):
                continue
            w = self.workers.pop(pid, None)  # first: its pid is free for reuse, never to be killed
            if w is not None:
                self._on_channel(w)  # its last words (a traceback) may still be in the channel
                self.reactor.remove_reader(w.channel.fileno())
                w.channel.close()
                self._do(self.supervisor.exited(pid, _describe_exit(status)))
