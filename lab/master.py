"""The master (the arbiter): binds, forks generations of workers, reloads them, supervises them.

Read it top to bottom like gunicorn's ``arbiter.py``. The master never imports the app: each
worker does, after the fork, so a new generation runs the code as it is on disk now.

Reload, step by step (``_start_reload`` -> ``_on_ready`` -> ``_commit`` -> ``_progress``):

1. a trigger (a watched change, SIGUSR1, SIGHUP, ``python -m lab reload``) forks generation N+1;
2. each new worker imports the app and reports ``ready`` or its traceback;
3. all ready: generation N is told to drain and stops accepting at once; when every old worker
   has said so (or is gone), generation N+1 is told ``go`` and starts accepting. The listening
   socket, bound here before any fork, stays open throughout, so clients queue in its backlog
   for that instant and none is refused; once new code accepts, old code never accepts again
   (unlike gunicorn, whose old and new workers both accept for up to a second). An old worker
   stuck in app code does not hold this up for longer than ``DRAIN_CONFIRM_WAIT``
   (``worker.unresponsive``): it reads its drain order before it can accept again;
4. old workers finish what is in flight and exit (SIGKILL after ``graceful_timeout``).

A failed import removes generation N+1 and generation N keeps serving (``reload.failed``). A
trigger during a reload queues exactly one more reload; once generation N+1 has imported for
``SUPERSEDE_AFTER`` s, that trigger replaces it at once (``reload.superseded``). All signal
handling goes through the reactor: a handler only notes the signal; the work is done in the loop.

Each worker has a process group of its own, killed when the worker leaves, and the master is a
child subreaper: whatever the app starts dies with its worker, or at the latest with the server.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import random
import re
import resource
import signal
import socket
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, TextIO

from lab import worker
from lab.config import Config, format_bind
from lab.errors import LabError
from lab.events import EventSink
from lab.pidfile import PidFile
from lab.reactor import Reactor

HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT,
                   signal.SIGQUIT)
READY_TIMEOUT = 60.0  # a new generation that is not ready by then (an import that hangs) fails
SLOW_IMPORT = 2.0  # a new generation not ready by then is reported (reload.slow)
# A trigger that comes while a generation has been importing this long supersedes it at once
# (the code on disk is newer than what it imports); before that the trigger waits in the queue,
# so that a burst of triggers cannot keep every generation from becoming ready.
SUPERSEDE_AFTER = 0.5
# Old workers that have not confirmed their drain by then are unresponsive (stuck in app code): the
# new generation accepts without them. Longer than worker.ORDERS_FRESH, so such a worker's accepts
# still come before the new generation's (it reads its orders again before each accept).
DRAIN_CONFIRM_WAIT = 15 * worker.ORDERS_FRESH  # 75 ms
STABLE_AFTER = 5.0  # a worker that lived this long had no crash streak
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
DEGRADED_AFTER = 3  # quick deaths in a row of one worker slot that make the server "degraded"
WATCH_EVENT_PATHS = 20
_PR_SET_CHILD_SUBREAPER = 36
ORPHAN_ROUNDS = 10  # at stop: orphans killed, then the orphans they leave, this many times at most
REWATCH_EVERY = 0.5  # a deleted watched root: look for it again this often


@dataclass(eq=False)
class WorkerProcess:
    pid: int
    generation: int
    index: int
    channel: socket.socket  # the master's end of the socketpair
    started: float
    state: str = "starting"  # starting -> ready -> serving -> draining; or killed
    inbox: bytes = b""
    kill_timer: Any = None
    stopped_accepting: bool = False  # it said "draining": its listening fd is closed
    heard: float = 0.0  # when its last message came (the liveness signal of --worker-timeout)


@dataclass(eq=False)
class Reload:
    generation: int
    trigger: str
    phases: dict[str, float]
    old: set[int] = field(default_factory=set)  # pids of the previous generation still running
    not_stopped: set[int] = field(default_factory=set)  # old pids that may still accept
    went: bool = False
    timers: list[Any] = field(default_factory=list)  # while it imports: slow, supersede, fail
    give_up: Any = None  # the timer that stops waiting for unresponsive old workers


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


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (workers inherit it): one fd per connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # e.g. an unlimited hard limit the kernel caps lower: keep what we have


def _collect_garbage() -> None:
    """A full collection before forking (about 2 ms here), as ``_spawn`` freezes the heap.

    ``gc.freeze()`` moves cyclic garbage not yet collected to the permanent generation, and
    ``gc.unfreeze()`` into the oldest, which is only collected once it grows by a quarter: without
    this, a few KiB per reload would pile up in the master (found by benchmarks/soak.py).
    """
    gc.collect()


def summarize_traceback(text: str) -> str:
    """The last line of a traceback, with the file and line it points at."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "no traceback"
    last = lines[-1].strip()
    places = [p for p in re.findall(r'File "([^"]+)", line (\d+)', text) if not p[0].startswith("<")]
    return f"{last} ({os.path.basename(places[-1][0])}:{places[-1][1]})" if places else last


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

    def __init__(self, config: Config, echo: TextIO | None = sys.stderr):
        if not config.target:
            raise LabError("no app given: python -m lab serve TARGET (module or module:attr)")
        self.config = config
        self.echo = echo
        self.reactor: Reactor | None = None
        self.events: EventSink | None = None
        self.listener: socket.socket | None = None
        self.pidfile: PidFile | None = None
        self.watcher = None
        self.workers: dict[int, WorkerProcess] = {}
        self.generation = 0  # the generation serving now (0: none yet)
        self._last_generation = 0
        self.pending: Reload | None = None  # a generation starting up
        self.queued: str | None = None  # the one trigger that came during ``pending``
        self.finishing: list[Reload] = []  # committed reloads waiting for old workers to leave
        self.crashes: dict[int, int] = {}  # worker index -> quick deaths in a row
        self.degraded = False  # a worker slot is in a crash loop (until the next good reload)
        self.stopping = False
        self.fatal: str | None = None
        self._watch_timer = None
        self._rewatch_timer = None
        self._watch_limited = False
        self._own_files: set[str] = set()
        self._started = False
        self._alive_checked = 0.0  # when _check_alive last ran: a gap means the master was stalled

    # --- start and stop ----------------------------------------------------------------------------

    def run(self) -> int:
        config = self.config
        if not os.path.isdir(config.app_dir):
            raise LabError(f"app dir {config.app_dir} is not a directory: give --app-dir the folder of the app")
        raise_fd_limit()
        # Processes the app starts and leaves behind become this master's children, not init's:
        # it can find and kill them, so none keeps the port (or anything else) after a stop.
        worker.prctl(_PR_SET_CHILD_SUBREAPER, 1)
        self.listener = bind_listener(config)
        try:
            if config.pidfile:
                self.pidfile = PidFile(config.pidfile)
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
            self.reactor = Reactor()
            for signum, handler in ((signal.SIGCHLD, self._reap), (signal.SIGUSR1, lambda: self._on_reload_signal("SIGUSR1")),
                                    (signal.SIGHUP, lambda: self._on_reload_signal("SIGHUP")),
                                    (signal.SIGTERM, self._on_stop_signal),
                                    (signal.SIGINT, self._on_stop_signal),
                                    (signal.SIGQUIT, lambda: self._stop(graceful=False))):
                self.reactor.add_signal_handler(signum, handler)
            if config.watch:
                self._start_watcher()
            if config.worker_timeout is not None:
                self._alive_checked = self.reactor.clock()
                self.reactor.call_every(config.worker_timeout / 4, self._check_alive)
            host, port = self.listener.getsockname()[:2]
            self.events.emit("server.start", bind=format_bind(host, port), workers=config.workers,
                             target=config.target, watch=config.watch)
            self._started = True
            self._start_reload("start", self.reactor.clock())
            self.reactor.run()
        finally:
            self._cleanup()
        if self.fatal:
            raise LabError(self.fatal)
        return 0

    def _cleanup(self) -> None:
        for w in list(self.workers.values()):
            self._kill(w)
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
                self.events.emit("server.stop", fatal=self.fatal)
            self.events.close()

    def _on_stop_signal(self) -> None:
        # A second Ctrl-C / SIGTERM while draining means: now.
        self._stop(graceful=not self.stopping)

    def _stop(self, graceful: bool) -> None:
        if not self.stopping:
            self.events.emit("server.stopping", graceful=graceful)
        self.stopping = True
        self.queued = None
        for w in list(self.workers.values()):
            if graceful and w.state in ("ready", "serving"):
                self._drain(w)
            elif not graceful or w.state == "starting":
                self._kill(w)
        if not self.workers:
            self.reactor.stop()

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
        self.request_reload("watch", self.reactor.clock())  # what changed while unwatched

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
            self.request_reload("watch", now)
        wait = self.watcher.timeout(now)
        if wait is not None:
            self._watch_timer = self.reactor.call_later(wait, self._poll_watcher)

    # --- reload --------------------------------------------------------------------------------------

    def _on_reload_signal(self, name: str) -> None:
        self.request_reload(name, self.reactor.clock())

    def request_reload(self, trigger: str, seen: float) -> None:
        if self.stopping:
            return
        if self.pending is not None:
            self.queued = self.queued or trigger  # exactly one more, however many triggers come
            if self.reactor.clock() - self.pending.phases["forked"] >= SUPERSEDE_AFTER:
                self._supersede(self.pending)
            return
        self._start_reload(trigger, seen)

    def _start_reload(self, trigger: str, seen: float) -> None:
        self._last_generation += 1
        reload = Reload(self._last_generation, trigger, {"seen": seen})
        self.pending = reload
        self.events.emit("reload.start", generation=reload.generation, trigger=trigger)
        _collect_garbage()
        try:
            for index in range(self.config.workers):
                self._spawn(reload.generation, index)
        except OSError as exc:
            self._reload_failed(reload, f"fork failed: {exc}\n")
            return
        reload.phases["forked"] = self.reactor.clock()
        reload.timers = [
            self.reactor.call_later(SLOW_IMPORT, self._report_slow, reload),
            self.reactor.call_later(SUPERSEDE_AFTER, self._supersede, reload),
            self.reactor.call_later(READY_TIMEOUT, self._reload_failed, reload,
                                    f"not ready after {READY_TIMEOUT:g} s (an import that hangs?)\n")]

    def _report_slow(self, reload: Reload) -> None:
        """Said as it happens: a generation still importing after SLOW_IMPORT s, and who."""
        waiting = sorted((w.index, w.pid) for w in self.workers.values()
                         if w.generation == reload.generation and w.state == "starting")
        self.events.emit("reload.slow", generation=reload.generation, trigger=reload.trigger,
                         waited=SLOW_IMPORT, workers=[pid for _, pid in waiting])

    def _supersede(self, reload: Reload) -> None:
        """A trigger queued behind a generation importing for SUPERSEDE_AFTER s replaces it now."""
        if self.pending is not reload or self.queued is None:
            return
        self._remove_pending(reload)
        self.events.emit("reload.superseded", generation=reload.generation, trigger=reload.trigger,
                         importing=round(self.reactor.clock() - reload.phases["forked"], 3))
        self._start_queued()

    def _remove_pending(self, reload: Reload) -> None:
        """Generation N+1 is given up: its timers cancelled, its workers killed."""
        self.pending = None
        for timer in reload.timers:
            timer.cancel()
        for w in list(self.workers.values()):
            if w.generation == reload.generation:
                self._kill(w)

    def _start_queued(self) -> None:
        """The one trigger that came during the reload that just ended, if any."""
        if self.queued is not None:
            trigger, self.queued = self.queued, None
            self._start_reload(trigger, self.reactor.clock())

    def _on_ready(self, w: WorkerProcess) -> None:
        w.state = "ready"
        reload = self.pending
        if reload is None or w.generation != reload.generation:
            if w.generation == self.generation and not self.stopping:
                self._send(w, b"go\n")  # a replacement for a worker that died
                w.state = "serving"
            return
        new = [x for x in self.workers.values() if x.generation == reload.generation]
        if len(new) == self.config.workers and all(x.state == "ready" for x in new):
            self._commit(reload, new)

    def _commit(self, reload: Reload, new: list[WorkerProcess]) -> None:
        for timer in reload.timers:
            timer.cancel()
        reload.phases["ready"] = self.reactor.clock()
        self.pending = None
        self.generation = reload.generation
        for w in list(self.workers.values()):
            if w.generation == reload.generation:
                continue
            if w.state == "starting":  # a replacement still importing: not needed any more
                self._kill(w)
            elif w.state in ("ready", "serving"):
                self._drain(w)
            reload.old.add(w.pid)
            if w.state == "draining" and not w.stopped_accepting:
                reload.not_stopped.add(w.pid)
        for w in new:
            w.state = "serving"
        self.finishing.append(reload)
        if reload.not_stopped:
            reload.give_up = self.reactor.call_later(DRAIN_CONFIRM_WAIT, self._stop_waiting, reload)
        self._progress(reload)
        self._start_queued()

    def _stop_waiting(self, reload: Reload) -> None:
        """Old workers that did not confirm their drain in time are stuck: go without them."""
        for pid in sorted(reload.not_stopped):
            if pid in self.workers:  # a confirmation that came while this loop was not running
                self._on_channel(self.workers[pid])
        if reload.went:
            return
        for pid in sorted(reload.not_stopped):
            w = self.workers.get(pid)
            if w is not None:
                self.events.emit("worker.unresponsive", pid=pid, generation=w.generation, index=w.index,
                                 waited=DRAIN_CONFIRM_WAIT)
        reload.not_stopped.clear()
        self._progress(reload)

    def _progress(self, reload: Reload) -> None:
        """``go`` once no old worker can accept; ``reload.done`` once they are all gone."""
        if not reload.went and not reload.not_stopped:
            reload.went = True
            if reload.give_up is not None:
                reload.give_up.cancel()
            reload.phases["serving"] = self.reactor.clock()
            for w in self.workers.values():
                if w.generation == reload.generation and w.state == "serving":
                    self._send(w, b"go\n")
        if reload.went and not reload.old:
            reload.phases["old_gone"] = self.reactor.clock()
            self.finishing.remove(reload)
            self.crashes.clear()
            if self.degraded:
                self.degraded = False
                self.events.emit("server.recovered", generation=reload.generation)
            self.events.emit("reload.done", generation=reload.generation, trigger=reload.trigger,
                             duration=round(reload.phases["old_gone"] - reload.phases["seen"], 6),
                             phases=reload.phases)

    def _reload_failed(self, reload: Reload, text: str) -> None:
        if self.pending is not reload:
            return
        self._remove_pending(reload)
        self.events.emit("reload.failed", generation=reload.generation, trigger=reload.trigger,
                         error=summarize_traceback(text), traceback=text)
        if self.generation == 0:  # the first generation: nothing to keep serving
            self.fatal = f"the app {self.config.target!r} failed to start: {summarize_traceback(text)}"
            self._stop(graceful=False)
            return
        for index in range(self.config.workers):  # serving workers that died meanwhile
            self._respawn(self.generation, index)
        self._start_queued()

    # --- workers -------------------------------------------------------------------------------------

    def _spawn(self, generation: int, index: int) -> WorkerProcess:
        parent_end, child_end = socket.socketpair()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would print the parent's buffered text again
        # Signals stay blocked across the fork, so none reaches the child while it still has the
        # master's handlers (which would wake the master's loop with the child's signal).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        # The child's garbage collector leaves the master's objects alone: it does not touch (and
        # so copy) their pages, and a new worker starts faster. The master unfreezes its own.
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            gc.unfreeze()
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
        gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        try:
            os.setpgid(pid, pid)  # the worker does it too: its group exists whoever runs first
        except OSError:
            pass  # it has already exited (SIGCHLD tells)
        child_end.close()
        parent_end.setblocking(False)
        now = self.reactor.clock()
        w = WorkerProcess(pid, generation, index, parent_end, now, heard=now)
        self.workers[pid] = w
        self.reactor.add_reader(parent_end.fileno(), self._on_channel, w)
        return w

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
            w.heard = self.reactor.clock()
            lines, w.inbox = worker.take_lines(w.inbox, data)
            for line in lines:
                self._on_message(w, json.loads(line))

    def _on_message(self, w: WorkerProcess, message: dict[str, Any]) -> None:
        if w.state == "killed":
            return
        if "ready" in message:
            self._on_ready(w)
        elif "failed" in message:
            self._on_failed(w, message["failed"])
        elif "draining" in message:
            w.stopped_accepting = True
            for reload in list(self.finishing):
                reload.not_stopped.discard(w.pid)
                self._progress(reload)

    def _on_failed(self, w: WorkerProcess, text: str) -> None:
        if self.pending is not None and w.generation == self.pending.generation:
            self._reload_failed(self.pending, text)
        else:  # a replacement that cannot load the app (broken on disk since): back off
            self.events.emit("worker.failed", generation=w.generation, index=w.index,
                             error=summarize_traceback(text), traceback=text)
            self._kill(w)

    def _check_alive(self) -> None:
        """Kill a serving worker that has been silent for ``worker_timeout`` (gunicorn's --timeout).

        It runs every timeout/4; a longer gap since its last run means the master itself was not
        running (SIGSTOP, a swapped-out or starved process) and did not listen meanwhile: it cannot
        tell who was silent, so every worker's silence is counted again from now.
        """
        now = self.reactor.clock()
        gap, self._alive_checked = now - self._alive_checked, now
        if gap > self.config.worker_timeout / 2:
            self.events.emit("server.stalled", gap=round(gap, 3))
            for w in self.workers.values():
                w.heard = max(w.heard, now)
            return
        for w in list(self.workers.values()):
            silent = now - w.heard
            if w.state in ("ready", "serving", "draining") and silent > self.config.worker_timeout:
                self.events.emit("worker.timeout", pid=w.pid, generation=w.generation, index=w.index,
                                 silent=round(silent, 3))
                self._kill(w)  # SIGCHLD follows; _on_exit replaces it like any dead worker

    def _send(self, w: WorkerProcess, message: bytes) -> None:
        try:
            w.channel.send(message)
        except OSError:
            pass  # it died: SIGCHLD tells

    def _drain(self, w: WorkerProcess) -> None:
        w.state = "draining"
        self._send(w, b"drain\n")
        w.kill_timer = self.reactor.call_later(self.config.graceful_timeout, self._kill, w)

    def _kill(self, w: WorkerProcess) -> None:
        if w.kill_timer is not None:
            w.kill_timer.cancel()
            w.kill_timer = None
        if w.pid in self.workers:
            w.state = "killed"
            _kill_group(w.pid)

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
            w = self.workers.pop(pid, None)
            if w is not None:
                self._on_exit(w, status)

    def _kill_orphans(self) -> None:
        """At the end: the app's processes that left their worker's group (``setsid``) are
        this master's children by now; kill them, and the orphans they leave in turn."""
        for _ in range(ORPHAN_ROUNDS):
            orphans = [pid for pid in _children() if pid not in self.workers]
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

    def _on_exit(self, w: WorkerProcess, status: int) -> None:
        self._on_channel(w)  # its last words (a traceback) may still be in the channel
        self.reactor.remove_reader(w.channel.fileno())
        w.channel.close()
        if w.kill_timer is not None:
            w.kill_timer.cancel()
        state, w.state = w.state, "gone"
        self.events.emit("worker.exit", pid=w.pid, generation=w.generation, index=w.index, **_describe_exit(status))
        for reload in list(self.finishing):
            reload.old.discard(w.pid)
            reload.not_stopped.discard(w.pid)
            self._progress(reload)
        if self.stopping:
            if not self.workers:
                self.reactor.stop()
            return
        if self.pending is not None and w.generation == self.pending.generation:
            self._reload_failed(self.pending, f"worker {w.index} of generation {w.generation} exited "
                                              f"before its generation was ready ({_describe_exit(status)})\n")
        elif w.generation == self.generation and state != "draining" and self.pending is None:
            # (During a reload the new generation takes its place; if that reload fails,
            # _reload_failed tops the serving generation up again.)
            self._replace(w)

    def _replace(self, w: WorkerProcess) -> None:
        """A worker of the serving generation died: fork another, backing off if they keep dying."""
        if self.reactor.clock() - w.started >= STABLE_AFTER:
            self.crashes[w.index] = 0
        failures = self.crashes[w.index] = self.crashes.get(w.index, 0) + 1
        if failures == 1:
            self._respawn(w.generation, w.index)
            return
        # Exponential, with jitter so that workers crashing together do not restart together;
        # the jitter only adds, so each delay is longer than the one before.
        delay = min(BACKOFF_FIRST * 2 ** (failures - 2), BACKOFF_MAX) * (1 + 0.25 * random.random())
        self.events.emit("worker.backoff", generation=w.generation, index=w.index, failures=failures,
                         delay=round(delay, 4))
        if failures >= DEGRADED_AFTER and not self.degraded:
            self.degraded = True  # said once; a good reload clears it (server.recovered)
            self.events.emit("server.degraded", reason="crash loop", generation=w.generation,
                             index=w.index, failures=failures)
        self.reactor.call_later(delay, self._respawn, w.generation, w.index)

    def _respawn(self, generation: int, index: int) -> None:
        if self.stopping or generation != self.generation or self.pending is not None:
            return  # a newer generation is (or will be) serving instead
        if any(x.generation == generation and x.index == index for x in self.workers.values()):
            return
        _collect_garbage()
        try:
            self._spawn(generation, index)
        except OSError as exc:
            self.events.emit("worker.backoff", generation=generation, index=index, failures=-1,
                             delay=1.0, error=str(exc))
            self.reactor.call_later(1.0, self._respawn, generation, index)
