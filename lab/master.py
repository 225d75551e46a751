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
master instead (``_start_successor``), which takes over the listening socket and the pid file.

All signal handling goes through the reactor: a handler only notes the signal; the work is done in
the loop. Each worker has a process group of its own, killed when the worker leaves, and the master
is a child subreaper: whatever the app starts dies with its worker, or at the latest with the server.
"""

from __future__ import annotations

import errno
import dataclasses
import gc
import importlib
import json
import os
import random
import resource
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, TextIO

from lab import worker
from lab.config import Config, format_bind
from lab.errors import LabError
from lab.events import EventSink
from lab.pidfile import PidFile
from lab.reactor import Reactor
from lab.supervisor import (Action, CallLater, Emit, Exit, Kill, KillSuccessor, Send, Spawn, StartUpgrade, Supervisor,
                            Tell, summarize_traceback)

HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGTERM, signal.SIGINT,
                   signal.SIGQUIT)
UPGRADE_ENV = "LAB_UPGRADE"  # a new master's inheritance from the old one (JSON; see ``Predecessor``)
# Old workers that have not confirmed their drain by then are unresponsive (stuck in app code): the
# new generation accepts without them. Longer than worker.ORDERS_FRESH, so such a worker's accepts
# still come before the new generation's (it reads its orders again before each accept).
DRAIN_CONFIRM_WAIT = 15 * worker.ORDERS_FRESH  # 75 ms
WATCH_EVENT_PATHS = 20
_PR_SET_CHILD_SUBREAPER = 36
ORPHAN_ROUNDS = 10  # at stop: orphans killed, then the orphans they leave, this many times at most
REWATCH_EVERY = 0.5  # a deleted watched root: look for it again this often


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
            raise LabError(f"cannot bind {where}: that address is not on this machine; use 127.0.0.1 or [::1]") from None
        if exc.errno == errno.EACCES:
            raise LabError(f"cannot bind {where}: ports below 1024 need privileges; choose a port >= 1024") from None
        raise LabError(f"cannot bind {where}: {exc.strerror}") from None
    sock.setblocking(False)  # shared by the workers: one accept never blocks a worker
    return sock


@dataclass
class Preloaded:
    """What ``--preload`` imported into the master, to be inherited by every generation."""

    modules: tuple[str, ...] = ()
    files: set[str] = field(default_factory=set)  # the source files of every module it brought in
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # threads or fds the imports left behind


def _fd_targets() -> dict[int, str]:
    """This process's open fds and what each points at (a path, ``socket:[N]``, ``pipe:[N]``)."""
    targets = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            targets[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the fd of the listing itself, closed by now
    return targets


def preload(config: Config) -> Preloaded:
    """Import ``config.preload`` in the master, before any fork (gunicorn's ``--preload``).

    Every worker inherits these modules: a generation imports only the app. LabError (one line)
    if one fails to import, starts a Python thread (a forked worker has none of the master's
    threads, and a lock one of them held stays locked in the child for good) or imports the app
    itself; native threads and fds it leaves open are warnings (every worker shares the fds).
    """
    if not config.preload:
        return Preloaded()
    app_dir = os.path.abspath(config.app_dir)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)  # a helper module next to the app may be preloaded too
    before, fds, tasks = set(sys.modules), _fd_targets(), len(os.listdir("/proc/self/task"))
    started = time.perf_counter()
    for name in config.preload:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt at import too: refused
            raise LabError(f"cannot preload {name!r}: {summarize_traceback(_import_traceback(exc))}") from None
    report = Preloaded(config.preload, seconds=time.perf_counter() - started)
    _check_preloaded(config, report, tasks, fds)
    for name in set(sys.modules) - before:
        path = getattr(sys.modules[name], "__file__", None)
        if path:
            report.files.add(os.path.realpath(path))
    return report


def _import_traceback(exc: BaseException) -> str:
    """The traceback of a failed import without importlib's frames or this module's."""
    report = traceback.TracebackException.from_exception(exc)
    report.stack = traceback.StackSummary.from_list(
        [f for f in report.stack if f.filename not in (__file__, importlib.__file__)
         and not f.filename.startswith("<frozen importlib")])
    return "".join(report.format())


def _check_preloaded(config: Config, report: Preloaded, tasks: int, fds: dict[int, str]) -> None:
    """Refuse Python threads and the app imported by a preload; note native threads and fds."""
    names = ", ".join(config.preload)
    python_threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if python_threads:
        raise LabError(f"preloading {names} started Python thread(s) {', '.join(python_threads)}: a forked "
                       "worker would have none of them (and any lock they hold stays locked); "
                       "start threads in the app (on_start), not at import")
    app_module = config.target.partition(":")[0]
    if app_module in sys.modules:
        raise LabError(f"preloading {names} imported the app {app_module!r} itself: the master never imports "
                       "the app (it could never be reloaded); preload only what the app imports")
    native = len(os.listdir("/proc/self/task")) - tasks
    if native > 0:
        report.warnings.append(f"{native} native thread(s) started at import (e.g. a BLAS pool that "
                               "restarts itself after fork): the workers do not inherit them")
    opened = {fd: target for fd, target in _fd_targets().items() if fds.get(fd) != target}
    if opened:
        shown = ", ".join(f"{fd} -> {target}" for fd, target in sorted(opened.items())[:5])
        report.warnings.append(f"{len(opened)} fd(s) left open at import ({shown}): every worker shares "
                               "them (one file offset, one socket); open them in the app instead")


@dataclass(frozen=True)
class Predecessor:
    """What a new master started by an upgrade inherits from the old one (in ``UPGRADE_ENV``)."""

    pid: int  # the old master
    listen_fd: int  # the listening socket, inherited: never closed, so no client is refused
    channel_fd: int  # a socketpair end to the old master: "ready" goes out, "drained" comes in
    generation: int  # the new master's first generation (numbered on from the old master's)


def upgrade_env(config: Config, quiet: bool, predecessor: Predecessor) -> str:
    return json.dumps({"config": dataclasses.asdict(config), "quiet": quiet,
                       "predecessor": dataclasses.asdict(predecessor)})


def take_upgrade_env() -> tuple[Config, bool, Predecessor] | None:
    """In a new master: what the old one handed over (removed from the environment, so that no
    process the app starts mistakes itself for a new master); None in a master started by hand."""
    text = os.environ.pop(UPGRADE_ENV, None)
    if text is None:
        return None
    handed = json.loads(text)
    return Config(**handed["config"]), handed["quiet"], Predecessor(**handed["predecessor"])


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
        self.reactor: Reactor | None = None
        self.events: EventSink | None = None
        self.listener: socket.socket | None = None
        self.pidfile: PidFile | None = None
        self.watcher = None
        self.supervisor: Supervisor | None = None
        self.workers: dict[int, WorkerProcess] = {}  # by pid, until reaped
        self._watch_timer = None
        self._rewatch_timer = None
        self._watch_limited = False
        self._own_files: set[str] = set()
        self.preloaded = Preloaded()
        self._started = False
        self.predecessor = predecessor  # this master was started by an upgrade of that one
        self._predecessor_channel: socket.socket | None = None
        self.successor: int | None = None  # the new master of an upgrade under way (its pid)
        self._successor_channel: socket.socket | None = None
        self._successor_inbox = b""
        self._handed_over = False

    # --- start and stop ----------------------------------------------------------------------------

    def run(self) -> int:
        if self.predecessor is not None:
            self._predecessor_channel = socket.socket(fileno=self.predecessor.channel_fd)
        try:
            return self._run()
        except LabError as exc:  # a new master that cannot start: the old one says why, and serves on
            self._tell_predecessor(failed=f"{exc}\n")
            raise

    def _run(self) -> int:
        config = self.config
        if not os.path.isdir(config.app_dir):
            raise LabError(f"app dir {config.app_dir} is not a directory: give --app-dir the folder of the app")
        raise_fd_limit()
        # Processes the app starts and leaves behind become this master's children, not init's:
        # it can find and kill them, so none keeps the port (or anything else) after a stop.
        worker.prctl(_PR_SET_CHILD_SUBREAPER, 1)
        self.listener = self._listen()
        try:
            self._open_files()
            self._preload()
            self.reactor = Reactor()
            for signum, handler in ((signal.SIGCHLD, self._reap),
                                    (signal.SIGUSR1, lambda: self._trigger("SIGUSR1")),
                                    (signal.SIGUSR2, lambda: self._upgrade("SIGUSR2")),
                                    (signal.SIGHUP, lambda: self._trigger("SIGHUP")),
                                    (signal.SIGTERM, lambda: self._stop(graceful=True)),
                                    (signal.SIGINT, lambda: self._stop(graceful=True)),
                                    (signal.SIGQUIT, lambda: self._stop(graceful=False))):
                self.reactor.add_signal_handler(signum, handler)
            predecessor = self.predecessor
            self.supervisor = Supervisor(config.workers, config.graceful_timeout, config.worker_timeout,
                                         DRAIN_CONFIRM_WAIT, clock=self.reactor.clock, random=random.random,
                                         first_generation=predecessor.generation if predecessor else 1,
                                         successor=predecessor is not None)
            if predecessor is not None:
                self._predecessor_channel.setblocking(False)
                self.reactor.add_reader(self._predecessor_channel.fileno(), self._on_predecessor)
            if config.watch:
                self._start_watcher()
            host, port = self.listener.getsockname()[:2]
            self.events.emit("server.start", bind=format_bind(host, port), workers=config.workers,
                             target=config.target, watch=config.watch,
                             **({"upgrade_from": predecessor.pid} if predecessor else {}))
            self._started = True
            _freeze_start_heap()
            self._trigger("upgrade" if predecessor else "start")
            self.reactor.run()
        finally:
            self._cleanup()
        if self._fatal():
            raise LabError(self._fatal())
        return 0

    def _listen(self) -> socket.socket:
        """The listening socket: bound here, or the old master's, inherited by an upgrade."""
        if self.predecessor is None:
            return bind_listener(self.config)
        listener = socket.socket(fileno=self.predecessor.listen_fd)
        listener.set_inheritable(False)
        listener.setblocking(False)
        return listener

    def _open_files(self) -> None:
        """The pid file and the events file (both the lab's own: never a reason to reload)."""
        config = self.config
        if config.pidfile:
            self.pidfile = PidFile(config.pidfile)
            if self.predecessor is None:  # a new master takes the old one's over once it serves
                self.pidfile.create()
            self._own_files.add(self.pidfile.path)
        try:
            self.events = EventSink(config.events, echo=self.echo)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW: never write through a planted link
                raise LabError(f"the events file {config.events} is a symlink: refusing it; "
                               "remove it or choose another path") from None
            raise LabError(f"cannot open the events file {config.events}: {exc.strerror}") from None
        if config.events:
            self._own_files.add(os.path.abspath(config.events))

    def _preload(self) -> None:
        """``--preload``: imported once here, so that no generation pays for these imports."""
        self.preloaded = preload(self.config)
        if self.preloaded.modules:
            self.events.emit("preload.done", modules=list(self.preloaded.modules),
                             seconds=round(self.preloaded.seconds, 6), files=len(self.preloaded.files))
        for text in self.preloaded.warnings:
            self.events.emit("preload.warning", modules=list(self.preloaded.modules), warning=text)

    def _fatal(self) -> str | None:
        """Why the server ended on its own: the first generation could not load the app."""
        if self.supervisor is None or self.supervisor.failed_start is None:
            return None
        return f"the app {self.config.target!r} failed to start: {self.supervisor.failed_start}"

    def _cleanup(self) -> None:
        for w in list(self.workers.values()):
            _kill_group(w.pid)
        for w in list(self.workers.values()):
            try:
                os.waitpid(w.pid, 0)
            except ChildProcessError:
                pass
            w.channel.close()
        self.workers.clear()
        self._kill_orphans()
        if self.watcher is not None:
            self.watcher.close()
        if self.reactor is not None:
            self.reactor.close()
        if self.pidfile is not None:
            self.pidfile.remove()
        self.listener.close()
        if self.events is not None:
            if self._started:  # a start-up error says its one line, without a log of a stop
                upgraded = {"upgraded_to": self.successor} if self._handed_over else {}
                self.events.emit("server.stop", fatal=self._fatal(), **upgraded)
            self.events.close()

    def _trigger(self, name: str, seen: float | None = None) -> None:
        """A reload asked for: by a signal, the CLI (SIGUSR1), the watcher or the start."""
        self._do(self.supervisor.trigger(name, self.reactor.clock() if seen is None else seen))

    def _stop(self, graceful: bool) -> None:
        """SIGTERM/SIGINT (a second one: at once) or SIGQUIT (at once)."""
        self._do(self.supervisor.stop(graceful))

    # --- the watcher (the tutorial's watchEvent) ---------------------------------------------------

    def _start_watcher(self) -> None:
        from lab.watcher import Watcher  # only a watching master needs inotify

        self.watcher = Watcher(self.config.watch, types=self.config.types, debounce=self.config.debounce)
        self.reactor.add_reader(self.watcher.fileno(), self._poll_watcher)
        self._report_watch_problems()  # e.g. an unreadable directory found by the first scan

    def _report_watch_problems(self) -> None:
        """Never silence: what the watcher could not watch is said, and a lost root looked for."""
        while self.watcher.problems:
            problem, text = self.watcher.problems.popleft()
            self.events.emit("watch.error", error=text, problem=problem)
            if problem == "watch-limit" and not self._watch_limited:
                self._watch_limited = True  # said once: every later directory would say it again
                self.events.emit("server.degraded", reason="inotify watch limit", error=text)
        lost = self.watcher.lost_roots
        if lost and self._rewatch_timer is None:
            self.events.emit("server.degraded", reason="watched root gone", paths=lost)
            self._rewatch_timer = self.reactor.call_later(REWATCH_EVERY, self._rewatch)

    def _rewatch(self) -> None:
        """A watched root was deleted: once every path is back, watch anew and reload."""
        from lab.watcher import Watcher

        self._rewatch_timer = None
        try:
            watcher = Watcher(self.config.watch, types=self.config.types, debounce=self.config.debounce)
        except LabError:  # not back yet (or still not watchable): look again later
            self._rewatch_timer = self.reactor.call_later(REWATCH_EVERY, self._rewatch)
            return
        if self._watch_timer is not None:
            self._watch_timer.cancel()
            self._watch_timer = None
        self.reactor.remove_reader(self.watcher.fileno())
        self.watcher.close()
        self.watcher = watcher
        self.reactor.add_reader(watcher.fileno(), self._poll_watcher)
        self.events.emit("watch.restored", paths=self.config.watch)
        self._trigger("watch", self.reactor.clock())  # what changed while unwatched

    def _poll_watcher(self) -> None:
        if self._watch_timer is not None:
            self._watch_timer.cancel()
            self._watch_timer = None
        now = self.reactor.clock()
        try:
            changes = [c for c in self.watcher.poll(now) if c.path not in self._own_files]
        except LabError as exc:  # e.g. out of inotify watches: say so, keep serving
            self.events.emit("watch.error", error=str(exc))
            changes = []
        self._report_watch_problems()
        if changes:
            shown = changes[:WATCH_EVENT_PATHS]  # one event line must fit in PIPE_BUF
            self.events.emit("watch.change", paths=[c.path for c in shown], kinds=[c.kind for c in shown],
                             count=len(changes))
            if any(os.path.realpath(c.path) in self.preloaded.files for c in changes):
                # Every forked worker inherits the master's copy of a preloaded module: only a
                # new master loads the changed file (and the app's changes with it).
                self._upgrade("preload")
            else:
                self._trigger("watch", now)
        wait = self.watcher.timeout(now)
        if wait is not None:
            self._watch_timer = self.reactor.call_later(wait, self._poll_watcher)

    # --- carrying out the supervisor's decisions --------------------------------------------------

    def _do(self, actions: list[Action]) -> None:
        for action in actions:
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
                        _kill_group(pid)
                case Spawn(generation, indexes):
                    self._spawn(generation, indexes)
                case CallLater(delay):
                    self.reactor.call_later(delay, self._tick)
                case Exit():
                    self.reactor.stop()
                case StartUpgrade(generation):
                    self._start_successor(generation)
                case KillSuccessor():
                    if self.successor is not None:  # never a reaped pid
                        os.kill(self.successor, signal.SIGKILL)
                case Tell("ready"):
                    self._tell_predecessor(ready=True)
                case Tell("drained"):
                    self._hand_over()

    def _tick(self) -> None:
        # What the workers said while this loop was not running (a stall) counts before any
        # deadline does: a drain confirmation, or a sign of life.
        for w in list(self.workers.values()):
            self._on_channel(w)
        self._do(self.supervisor.tick())

    # --- upgrade: a new master takes over ------------------------------------------------------------

    def _upgrade(self, name: str) -> None:
        """SIGUSR2 (``python -m lab upgrade``) or a watched change of a preloaded module."""
        self._do(self.supervisor.upgrade(name))

    def _start_successor(self, generation: int) -> None:
        """Exec a new master (nginx's binary upgrade) with the listening socket and one end of a
        socketpair; ``posix_spawn`` leaves the other fds closed, and this large process uncopied."""
        ends: list[socket.socket] = []
        inherited: list[int] = []  # inheritable copies, only for the child: closed right after
        try:
            ends.extend(socket.socketpair())
            for fd in (self.listener.fileno(), ends[1].fileno()):
                inherited.append(os.dup(fd))
                os.set_inheritable(inherited[-1], True)
            handed = upgrade_env(self.config, self.echo is None, Predecessor(os.getpid(), *inherited, generation))
            argv = [sys.executable, "-m", "lab", "serve", self.config.target]
            self.successor = os.posix_spawn(sys.executable, argv, {**os.environ, UPGRADE_ENV: handed},
                                            setsigmask=())  # whatever this master blocks, it does not
        except OSError as exc:
            for end in ends:
                end.close()
            self._do(self.supervisor.successor_failed(f"cannot start a new master: {exc}\n"))
            return
        finally:
            for fd in inherited:
                os.close(fd)
        parent_end, child_end = ends
        child_end.close()
        parent_end.setblocking(False)
        self._successor_channel, self._successor_inbox = parent_end, b""
        self.reactor.add_reader(parent_end.fileno(), self._on_successor)

    def _on_successor(self) -> None:
        """The new master's word: ``ready``, or ``failed`` (its error); its end closed: it is gone."""
        channel = self._successor_channel
        try:
            data = channel.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.reactor.remove_reader(channel.fileno())
            channel.close()
            self._successor_channel = None
            self._do(self.supervisor.successor_failed("the new master exited before it was ready\n"))
            return
        lines, self._successor_inbox = worker.take_lines(self._successor_inbox, data)
        for line in lines:
            message = json.loads(line)
            if "ready" in message:
                self._do(self.supervisor.successor_ready())
            elif "failed" in message:
                self._do(self.supervisor.successor_failed(message["failed"]))

    def _hand_over(self) -> None:
        """No worker of this (old) master accepts any more: the new master accepts from now on,
        and owns the pid file (this one never removes it)."""
        self._handed_over = True
        self.pidfile = None
        if self._successor_channel is None:
            return  # it died after it said ready: nothing serves once these workers are gone
        try:
            self._successor_channel.send(b'{"drained": true}\n')
        except OSError:
            pass  # the same, found now

    def _tell_predecessor(self, **message: Any) -> None:
        if self._predecessor_channel is not None:
            try:
                self._predecessor_channel.send(json.dumps(message).encode() + b"\n")
            except OSError:
                pass  # the old master is gone: nobody waits for this word

    def _on_predecessor(self) -> None:
        """The old master said ``drained`` (or is gone): this master's workers start accepting,
        and the pid file names this master."""
        try:
            data = self._predecessor_channel.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.reactor.remove_reader(self._predecessor_channel.fileno())
        self._predecessor_channel.close()
        self._predecessor_channel = None
        if data and b"drained" not in data:
            self.events.emit("upgrade.error", error=f"unexpected word from the old master: {data[:80]!r}")
        self._do(self.supervisor.predecessor_drained())
        if self.pidfile is not None:
            try:
                self.pidfile.take_over(self.predecessor.pid)
            except LabError as exc:
                self.events.emit("pidfile.error", error=str(exc))

    # --- workers -------------------------------------------------------------------------------------

    def _spawn(self, generation: int, indexes: tuple[int, ...]) -> None:
        _collect_garbage()
        for index in indexes:
            try:
                pid = self._fork(generation, index)
            except OSError as exc:
                self._do(self.supervisor.fork_failed(generation, index, str(exc)))
                return
            self._do(self.supervisor.spawned(pid, generation, index))

    def _fork(self, generation: int, index: int) -> int:
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
                code = worker.run(worker.WorkerSpec(self.config, generation, index, self.listener, child_end,
                                                    os.getppid(), mask, self.echo))
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
        w = WorkerProcess(pid, parent_end)
        self.workers[pid] = w
        self.reactor.add_reader(parent_end.fileno(), self._on_channel, w)
        return pid

    def _become_worker(self) -> None:
        """In the child: drop the master's handlers, loop, watcher and channels (never unregister)."""
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        self.reactor.forget()
        if self.watcher is not None:
            # Closing the child's copy of the inotify fd leaves the master's watches alone, and
            # the object is marked closed, so its collection never closes a reused fd number.
            self.watcher.close()
            self.watcher = None
        for w in self.workers.values():
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
            if info.si_pid in self.workers:
                _kill_group(info.si_pid)
            try:
                pid, status = os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                continue
            if pid == self.successor:
                self.successor = None
                self._do(self.supervisor.successor_failed(
                    f"the new master exited ({_describe_exit(status)}) before it was ready\n"))
                continue
            w = self.workers.pop(pid, None)  # first: its pid is free for reuse, never to be killed
            if w is not None:
                self._on_channel(w)  # its last words (a traceback) may still be in the channel
                self.reactor.remove_reader(w.channel.fileno())
                w.channel.close()
                self._do(self.supervisor.exited(pid, _describe_exit(status)))

    def _kill_orphans(self) -> None:
        """At the end: the app's processes that left their worker's group (``setsid``) are
        this master's children by now; kill them, and the orphans they leave in turn."""
        for _ in range(ORPHAN_ROUNDS):
            orphans = [pid for pid in _children() if pid not in self.workers and pid != self.successor]
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
