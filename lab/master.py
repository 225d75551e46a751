"""The master (the arbiter): binds, forks generations of workers, and carries out what the
supervisor decides.

Read it top to bottom like gunicorn's ``arbiter.py``. Every decision about workers (when to fork,
drain, tell ``go``, kill, back off; see the reload step by step in ``lab/supervisor.py``) is made by
``Supervisor``, a pure state machine; this module is its I/O: fork, the workers' channels, reaping
(their mechanics in lab/children.py), signals, timers, the pid file and the watcher. Each event is
fed to the supervisor and the actions it returns are carried out by ``_do`` (a ``go`` waits until
the accept gate is passed: ``BehindGate`` in lab/gate.py). The master never imports the app: each
worker does, after the fork, so a new generation runs the code as it is on disk now. It may import
heavy, unchanging modules first (``--preload``, ``preload``), which every generation then inherits;
a reload cannot pick up a change to those, so such a change (or SIGUSR2, ``python -m lab upgrade``)
starts a new master instead (``Upgrade`` in lab/upgrade.py), which takes over the listening socket
and the pid file. The watcher's glue is ``Watching`` (lab/watching.py); the imports, ``preload``
(lab/preload.py).

All signal handling goes through the reactor: a handler only notes the signal; the work is done in
the loop. Each worker has a process group of its own, killed when the worker leaves, and the master
is a child subreaper: whatever the app starts dies with its worker, or at the latest with the server
(lab/children.py).
"""

from __future__ import annotations

import errno
import gc
import os
import random
import resource
import signal
import socket
import sys
import time
import traceback
from typing import Any, TextIO, TypeVar

from lab import worker
from lab.actions import Action, CallLater, Emit, Exit, Kill, KillSuccessor, Send, Spawn, StartUpgrade, Tell
from lab.children import (
    WorkerProcess,
    become_subreaper,
    fork_worker,
    kill_all,
    kill_group,
    kill_orphans,
    reap,
)
from lab.config import Config, format_bind
from lab.errors import LabError, StoppedWhileStarting, translated
from lab.events import EventSink, Kind
from lab.gate import AcceptGate, BehindGate
from lab.i18n import N_, _
from lab.pidfile import PidFile
from lab.preload import Preloaded, preload
from lab.reactor import Reactor
from lab.standby import Standbys
from lab.supervisor import Supervisor, summarize_traceback
from lab.upgrade import Predecessor, Upgrade, inherit_listener
from lab.watching import Watching

# Old workers that have not confirmed their drain by then are unresponsive (stuck in app code): the
# new generation accepts without them. The accept gate (lab/gate.py), passed before ``go``, keeps
# their accepts before the new generation's whatever this wait: it only bounds the wait for a word.
DRAIN_CONFIRM_WAIT = 0.075
FAILED_TO_START = N_("the app {target!r} failed to start: {why}")


def _check_app_dir(app_dir: str) -> None:
    if not os.path.isdir(app_dir):
        raise translated(
            N_("app dir {app_dir} is not a directory: give --app-dir the folder of the app"), app_dir=app_dir
        )


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
            raise translated(
                N_("{where} is already in use: stop what listens there or choose another --bind"), where=where
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise translated(
                N_("cannot bind {where}: that address is not on this machine; use 127.0.0.1 or [::1]"), where=where
            ) from None
        if exc.errno == errno.EACCES:
            raise translated(
                N_("cannot bind {where}: ports below 1024 need privileges; choose a port >= 1024"), where=where
            ) from None
        raise translated(N_("cannot bind {where}: {reason}"), where=where, reason=exc.strerror) from None
    sock.setblocking(False)  # shared by the workers: one accept never blocks a worker
    return sock


def listen(config: Config, predecessor: Predecessor | None) -> socket.socket:
    """The listening socket: bound here, or the old master's, inherited by an upgrade."""
    if predecessor is None:
        return bind_listener(config)
    return inherit_listener(predecessor)


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


def _say_preloaded(preloaded: Preloaded, events: EventSink) -> None:
    """What ``--preload`` imported, and how long it took; its warnings (threads or fds left behind)."""
    if preloaded.modules:
        events.emit(
            Kind.PRELOAD_DONE,
            modules=list(preloaded.modules),
            seconds=round(preloaded.seconds, 6),
            files=len(preloaded.files),
        )
    for text in preloaded.warnings:
        events.emit(Kind.PRELOAD_WARNING, modules=list(preloaded.modules), warning=text)


_T = TypeVar("_T")


def _made_at_start(value: _T | None) -> _T:
    """What the master creates when it starts (``_run``); needed earlier, that is a bug."""
    if value is None:
        raise RuntimeError("the master has not started")
    return value


def _guard_start_signals() -> None:
    """Until the loop takes them over, the master's signals must not end it by their default action
    (a ``lab reload`` once the pid file is out would kill it, leaving a stale pid file): a stop
    ends the start (``StoppedWhileStarting``, the clean-up then runs); a reload or an upgrade is
    moot, since the generation about to start imports the code as it is. Handlers, not SIG_IGN: a
    child exec'd meanwhile (``--preload auto``'s) gets the defaults back."""

    def stop(signum: int, frame: object) -> None:
        raise StoppedWhileStarting(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, stop)
    for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: None)


class Master:
    """``Master(config).run()`` serves until SIGTERM/SIGINT (returns 0) or SIGQUIT."""

    def __init__(self, config: Config, echo: TextIO | None = sys.stderr, predecessor: Predecessor | None = None):
        if not config.target:
            raise translated(N_("no app given: python -m lab serve TARGET (module or module:attr)"))
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
        self._behind_gate: BehindGate | None = None  # ``go`` orders held until the gate is passed
        self._own_files: set[str] = set()
        self.preloaded = Preloaded()
        self._started = False
        self._failure_said: str | None = None  # a worker's LabError, in the learner's language
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
            self.upgrade.tell_predecessor(failed=f"{exc.english}\n")
            raise

    def _run(self) -> int:
        config = self.config
        _check_app_dir(config.app_dir)
        raise_fd_limit()
        become_subreaper()
        self._listener = listen(config, self.upgrade.predecessor)
        try:
            _guard_start_signals()  # the pid file is out before the loop handles signals
            self._gate = AcceptGate.create()
            self._open_files()
            self._preload()
            self._reactor = Reactor(clock=self.supervisor.clock, on_error=self._on_loop_error)
            self._behind_gate = BehindGate(self.gate, self.reactor, self._do)
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
        except StoppedWhileStarting:
            pass  # stopped before it served: nothing to say, nothing left behind
        finally:
            self._cleanup()
        fatal = self._fatal(english=False)
        if fatal:
            raise LabError(fatal)
        return 0

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
                raise translated(
                    N_("the events file {path} is a symlink: refusing it; remove it or choose another path"),
                    path=config.events,
                ) from None
            raise translated(
                N_("cannot open the events file {path}: {reason}"), path=config.events, reason=exc.strerror
            ) from None
        if config.events:
            self._own_files.add(os.path.abspath(config.events))

    def _preload(self) -> None:
        """``--preload``: imported once here, so that no generation pays for these imports."""
        self.preloaded = preload(self.config)
        _say_preloaded(self.preloaded, self.events)

    def _fatal(self, english: bool = True) -> str | None:
        """Why the server ended on its own: the first generation could not load the app. In English
        for the ``server.stop`` event, else in the learner's language (the workers' word for it)."""
        if self.supervisor.failed_start is None:
            return None
        if english:
            return FAILED_TO_START.format(target=self.config.target, why=self.supervisor.failed_start)
        why = self._failure_said or self.supervisor.failed_start
        return _(FAILED_TO_START).format(target=self.config.target, why=why)

    def _cleanup(self) -> None:
        standbys = self._standbys.idle if self._standbys is not None else []
        kill_all([*self.workers.values(), *standbys])
        self.workers.clear()
        standbys.clear()
        kill_orphans(keep=self.upgrade.successor)
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
        behind_gate = _made_at_start(self._behind_gate)
        for action in actions:
            if behind_gate.holds(action):
                continue
            match action:
                case Emit(kind, fields):
                    self.events.emit(kind, **fields)
                case Send(pid, order):
                    w = self.workers.get(pid)
                    if w is not None:
                        try:
                            w.channel.send(f"{order}\n".encode())
                        except OSError:
                            pass  # it died: SIGCHLD tells
                case Kill(pid):
                    if pid in self.workers:  # never a reaped pid: the number may be reused
                        kill_group(pid)
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
        for _standby in range(count):
            try:
                forked.append(self._fork(worker.STANDBY, 0))
            except OSError:
                break
        return forked

    def _fork(self, generation: int, index: int) -> WorkerProcess:
        """A worker of that generation, or a standby (``worker.STANDBY``)."""
        return fork_worker(
            lambda channel, mask: worker.WorkerSpec(
                self.config,
                generation,
                index,
                self.listener,
                channel,
                self.gate,
                os.getppid(),
                mask,
                self.echo,
                self.standbys.latch,
            ),
            self._become_worker,
        )

    def _become_worker(self) -> None:
        """In the child: drop the master's loop, watcher and channels (never unregister)."""
        self.reactor.forget()
        if self.watching is not None:
            self.watching.close()
            self.watching = None
        for w in [*self.workers.values(), *self.standbys.idle]:
            w.channel.close()
        self.events.close()

    def _on_channel(self, w: WorkerProcess) -> None:
        messages, heard = w.receive()
        if heard:
            self._do(self.supervisor.heard(w.pid))
        for message in messages:
            if "ready" in message:
                self._do(self.supervisor.ready(w.pid))
            elif "failed" in message:
                self._failure_said = message.get("said")
                self._do(self.supervisor.failed(w.pid, message["failed"]))
            elif "draining" in message:
                self._do(self.supervisor.draining(w.pid))
        if w.closed:
            self.reactor.remove_reader(w.channel.fileno())  # the worker is gone; SIGCHLD follows

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
        """Reap exited children: workers, standbys, a new master, and orphans of the app."""
        for pid, how in reap(lambda pid: pid in self.workers or pid in self.standbys.pids()):
            if self.upgrade.reaped(pid, how) or self.standbys.reaped(pid):
                continue
            w = self.workers.pop(pid, None)  # first: its pid is free for reuse, never to be killed
            if w is not None:
                self._on_channel(w)  # its last words (a traceback) may still be in the channel
                self.reactor.remove_reader(w.channel.fileno())
                w.channel.close()
                self._do(self.supervisor.exited(pid, how))
