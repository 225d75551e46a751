"""The reload as a pure state machine: fed what happened, it answers what to do (h11's shape).

``Supervisor`` decides every reload, replacement and stop of the master; ``Master`` (master.py) is
the I/O around it: it forks, reads the workers' channels, reaps, signals and keeps the clock's
timers, and carries out the actions returned here. Nothing in this module touches a process, a
socket or a signal, so every promise below has a unit test with a fake clock (tests/test_supervisor.py).

Events: ``trigger``, ``spawned``/``fork_failed`` (the answer to a ``Spawn``), ``heard``, ``ready``,
``failed``, ``draining``, ``exited``, ``stop`` and ``tick`` (a ``CallLater`` came due). Each returns
a list of actions: ``Spawn``, ``Send`` (``go`` or ``drain``), ``Kill``, ``Emit`` (an event line),
``CallLater`` (call ``tick`` then) and ``Exit`` (every worker is gone after a stop).

Reload, step by step (``_start_reload`` -> ``ready`` -> ``_commit`` -> ``_progress``):

1. a trigger (a watched change, SIGUSR1, SIGHUP, ``python -m lab reload``) forks generation N+1;
2. each new worker imports the app and reports ``ready`` or its traceback;
3. all ready: generation N is told to drain and stops accepting at once; when every old worker
   has said so (or is gone), generation N+1 is told ``go`` and starts accepting. The listening
   socket, bound before any fork, stays open throughout, so clients queue in its backlog for that
   instant and none is refused; once new code accepts, old code never accepts again. An old
   worker stuck in app code does not hold this up for longer than ``drain_confirm_wait``
   (``worker.unresponsive``): it reads its drain order before it can accept again;
4. old workers finish what is in flight and exit (killed after ``graceful_timeout``).

Upgrade (a new master, for code a reload cannot pick up: the lab itself, a preloaded module; see
``Handover`` and ``Successor``). Old master: ``upgrade`` -> ``StartUpgrade`` (it execs the new one,
handing over the listening socket) -> ``successor_ready`` -> every old worker drains -> once none
can accept, ``Tell("drained")`` -> old workers gone -> ``Exit``. New master: its first generation
imports the app and, ready, ``Tell("ready")``; it is told ``go`` only after ``predecessor_drained``,
so old and new code never accept side by side. A new master that fails (``successor_failed``, or
not ready after ``UPGRADE_TIMEOUT``) is reported (``upgrade.failed``); the old one keeps serving.
While a new master starts, a reload already under way finishes but a trigger waits: it is dropped
once the new master is ready (that one imported the app later), carried out if it fails.

A failed import removes generation N+1 and generation N keeps serving (``reload.failed``). A
trigger during a reload queues exactly one more reload; once generation N+1 has imported for
``SUPERSEDE_AFTER`` s, that trigger replaces it at once (``reload.superseded``). A stop drops a
reload under way: its new workers are killed (or drained, if ready) like the rest.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

READY_TIMEOUT = 60.0  # a new generation that is not ready by then (an import that hangs) fails
SLOW_IMPORT = 2.0  # a new generation not ready by then is reported (reload.slow)
# A trigger that comes while a generation has been importing this long supersedes it at once
# (the code on disk is newer than what it imports); before that the trigger waits in the queue,
# so that a burst of triggers cannot keep every generation from becoming ready.
SUPERSEDE_AFTER = 0.5
STABLE_AFTER = 5.0  # a worker that lived this long had no crash streak
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
DEGRADED_AFTER = 3  # quick deaths in a row of one worker slot that make the server "degraded"
FORK_RETRY = 1.0  # a replacement whose fork failed is tried again after this long
UPGRADE_TIMEOUT = READY_TIMEOUT + 30.0  # a new master not ready by then (it preloads too) is killed


class WorkerState(enum.Enum):
    STARTING = "starting"  # importing the app
    READY = "ready"  # imported, waiting for ``go``
    SERVING = "serving"  # told ``go`` (or about to be, once no old worker can accept)
    DRAINING = "draining"  # told to drain: finishes what it has, then exits
    KILLED = "killed"  # SIGKILLed: its exit follows


@dataclass(frozen=True)
class Spawn:
    """Fork these workers of ``generation`` in order; answer ``spawned`` or ``fork_failed`` for each
    (after a failure, fork no more of them)."""

    generation: int
    indexes: tuple[int, ...]


@dataclass(frozen=True)
class Send:
    pid: int
    order: str  # "go" or "drain"


@dataclass(frozen=True)
class Kill:
    pid: int  # SIGKILL the worker's process group


@dataclass(frozen=True)
class Emit:
    kind: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class CallLater:
    delay: float  # call ``tick`` after this many seconds


@dataclass(frozen=True)
class Exit:
    """A stop is complete: every worker is gone."""


@dataclass(frozen=True)
class StartUpgrade:
    """Start a new master (it inherits the listening socket); its first generation is ``generation``.
    Answer ``successor_ready`` or ``successor_failed``."""

    generation: int


@dataclass(frozen=True)
class KillSuccessor:
    """SIGKILL the new master that did not become ready in time (its exit follows)."""


@dataclass(frozen=True)
class Tell:
    """A message to the other master of an upgrade: ``ready`` (new to old), ``drained`` (old to new)."""

    message: str


Action = Spawn | Send | Kill | Emit | CallLater | Exit | StartUpgrade | KillSuccessor | Tell


@dataclass(eq=False)
class Worker:
    pid: int
    generation: int
    index: int
    started: float
    heard: float  # when its last message came (the liveness signal of worker_timeout)
    state: WorkerState = WorkerState.STARTING
    stopped_accepting: bool = False  # it said "draining": its listening fd is closed
    kill_at: float | None = None  # a draining worker still there then is killed


@dataclass(eq=False)
class Reload:
    generation: int
    trigger: str
    phases: dict[str, float]
    spawned: int = 0  # "forked" is set when every worker of the generation is
    slow_said: bool = False
    old: set[int] = field(default_factory=set)  # pids of the previous generation still running
    not_stopped: set[int] = field(default_factory=set)  # old pids that may still accept
    went: bool = False
    give_up_at: float | None = None  # when to stop waiting for unresponsive old workers

    def deadlines(self, queued: bool) -> Iterator[float]:
        """While it imports: when it is slow, superseded (if a trigger is queued) and failed."""
        forked = self.phases.get("forked")
        if forked is not None:
            yield forked + READY_TIMEOUT
            if not self.slow_said:
                yield forked + SLOW_IMPORT
            if queued:
                yield forked + SUPERSEDE_AFTER


@dataclass(eq=False)
class Handover:
    """The old master's side of an upgrade."""

    trigger: str
    started: float
    ready: float | None = None  # when the new master said ready (its generation waits for ``go``)
    not_stopped: set[int] = field(default_factory=set)  # old workers that may still accept
    give_up_at: float | None = None  # stop waiting for unresponsive old workers then
    told: bool = False  # "drained" sent: the new master accepts from now on
    stop_asked: bool = False  # a stop came during the handover


def summarize_traceback(text: str) -> str:
    """The last line of a traceback, with the file and line it points at."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "no traceback"
    last = lines[-1].strip()
    places = [p for p in re.findall(r'File "([^"]+)", line (\d+)', text) if not p[0].startswith("<")]
    if not places:
        return last
    path, line = places[-1]
    return f"{last} ({path.rpartition('/')[2]}:{line})"


class CrashStreaks:
    """Quick deaths in a row of each worker slot, and the backoff they earn."""

    def __init__(self, random: Callable[[], float]):
        self.random = random
        self.failures: dict[int, int] = {}  # worker index -> quick deaths in a row

    def died(self, index: int, lived: float) -> tuple[int, float]:
        """The slot's deaths in a row, this one included, and the wait before its next worker."""
        if lived >= STABLE_AFTER:
            self.failures[index] = 0
        failures = self.failures[index] = self.failures.get(index, 0) + 1
        if failures == 1:
            return failures, 0.0
        # Exponential, with jitter so that workers crashing together do not restart together;
        # the jitter only adds, so each delay is longer than the one before.
        return failures, min(BACKOFF_FIRST * 2 ** (failures - 2), BACKOFF_MAX) * (1 + 0.25 * self.random())


class Liveness:
    """``worker_timeout`` (gunicorn's --timeout): who has been silent too long.

    It checks every timeout/4; a longer gap since the last check means the master itself was not
    running (SIGSTOP, a swapped-out or starved process) and did not listen meanwhile: it cannot
    tell who was silent, so every worker's silence is counted again from now.
    """

    def __init__(self, timeout: float, now: float):
        self.timeout = timeout
        self.checked = now
        self.due = now + timeout / 4

    def check(self, now: float, workers: list[Worker]) -> tuple[float | None, list[Worker]]:
        """The stall (its length) if there was one, else the workers silent for too long."""
        gap, self.checked, self.due = now - self.checked, now, now + self.timeout / 4
        if gap > self.timeout / 2:
            for w in workers:
                w.heard = max(w.heard, now)
            return gap, []
        answering = (WorkerState.READY, WorkerState.SERVING, WorkerState.DRAINING)
        return None, [w for w in workers if w.state in answering and now - w.heard > self.timeout]


class Outbox:
    """The actions decided while handling one event, and the ticks that the deadlines need."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.actions: list[Action] = []
        self._wake_at: float | None = None  # the earliest tick asked for and not yet come

    def add(self, action: Action) -> None:
        self.actions.append(action)

    def emit(self, kind: str, **fields: Any) -> None:
        self.actions.append(Emit(kind, fields))

    def ticked(self) -> None:
        self._wake_at = None  # timers come in order: the earliest one asked for has come

    def take(self, deadline: float | None) -> list[Action]:
        """The actions, and a ``CallLater`` if ``deadline`` comes before the next tick asked for."""
        if deadline is not None and (self._wake_at is None or deadline < self._wake_at):
            self._wake_at = deadline
            self.actions.append(CallLater(max(0.0, deadline - self.clock())))
        actions, self.actions = self.actions, []
        return actions


class Supervisor:
    """Every decision of the master about its workers; see the module doc.

    ``clock`` is the master's monotonic clock and ``random`` the source of the backoff jitter
    (both injected, so that tests need neither time nor luck).
    """

    def __init__(self, workers: int, graceful_timeout: float, worker_timeout: float | None,
                 drain_confirm_wait: float, clock: Callable[[], float], random: Callable[[], float],
                 first_generation: int = 1, successor: bool = False):
        self.size = workers
        self.graceful_timeout = graceful_timeout
        self.drain_confirm_wait = drain_confirm_wait
        self.clock = clock
        self.workers: dict[int, Worker] = {}
        self.generation = 0  # the generation serving now (0: none yet)
        self._last_generation = first_generation - 1  # a new master goes on from the old one's
        self.first_generation = first_generation
        self.handover: Handover | None = None  # an upgrade under way (this is the old master)
        self.predecessor = successor  # this new master's first ``go`` waits for the old one's drain
        self._told_ready = False
        self.pending: Reload | None = None  # a generation starting up
        self.queued: str | None = None  # the one trigger that came during ``pending``
        self.finishing: list[Reload] = []  # committed reloads waiting for old workers to leave
        self.crashes = CrashStreaks(random)
        self.degraded = False  # a worker slot is in a crash loop (until the next good reload)
        self.stopping = False
        self.failed_start: str | None = None  # why the first generation failed (the server ends)
        self._respawns: list[tuple[float, int, int]] = []  # (when, generation, index)
        self.liveness = None if worker_timeout is None else Liveness(worker_timeout, clock())
        self.out = Outbox(clock)

    # --- events --------------------------------------------------------------------------------------

    def trigger(self, name: str, seen: float) -> list[Action]:
        """A reload asked for (``seen``: when its cause was noticed)."""
        if self.stopping:
            return []
        if self.pending is None and self.handover is None:
            self._start_reload(name, seen)
        elif self.pending is None:  # a new master starts: it imports the app after this trigger anyway
            self.queued = self.queued or name
        else:
            self.queued = self.queued or name  # exactly one more, however many triggers come
            forked = self.pending.phases.get("forked")
            if forked is not None and self.clock() - forked >= SUPERSEDE_AFTER:
                self._supersede(self.pending)
        return self._flush()

    def spawned(self, pid: int, generation: int, index: int) -> list[Action]:
        now = self.clock()
        self.workers[pid] = Worker(pid, generation, index, now, heard=now)
        reload = self.pending
        if reload is not None and generation == reload.generation:
            reload.spawned += 1
            if reload.spawned == self.size:
                reload.phases["forked"] = now
        return self._flush()

    def fork_failed(self, generation: int, index: int, error: str) -> list[Action]:
        if self.pending is not None and generation == self.pending.generation:
            self._reload_failed(self.pending, f"fork failed: {error}\n")
        else:
            self.out.emit("worker.backoff", generation=generation, index=index, failures=-1,
                           delay=FORK_RETRY, error=error)
            self._respawns.append((self.clock() + FORK_RETRY, generation, index))
        return self._flush()

    def heard(self, pid: int) -> list[Action]:
        """Something came from the worker: it is alive."""
        w = self.workers.get(pid)
        if w is not None:
            w.heard = self.clock()
        return []

    def ready(self, pid: int) -> list[Action]:
        w = self._live(pid)
        if w is None:
            return []
        w.state = WorkerState.READY
        reload = self.pending
        if reload is not None and w.generation == reload.generation:
            new = self._of_generation(reload.generation)
            if len(new) == self.size and all(x.state is WorkerState.READY for x in new):
                self._commit(reload, new)
        elif w.generation == self.generation and not self.stopping:
            self.out.add(Send(w.pid, "go"))  # a replacement for a worker that died
            w.state = WorkerState.SERVING
        return self._flush()

    def failed(self, pid: int, text: str) -> list[Action]:
        """The worker could not load the app (``text``: the traceback)."""
        w = self._live(pid)
        if w is None:
            return []
        if self.pending is not None and w.generation == self.pending.generation:
            self._reload_failed(self.pending, text)
        else:  # a replacement that cannot load the app (broken on disk since): back off
            self.out.emit("worker.failed", generation=w.generation, index=w.index,
                           error=summarize_traceback(text), traceback=text)
            self._kill(w)
        return self._flush()

    def draining(self, pid: int) -> list[Action]:
        """The worker has stopped accepting (its answer to ``drain``)."""
        w = self._live(pid)
        if w is None:
            return []
        w.stopped_accepting = True
        for reload in list(self.finishing):
            reload.not_stopped.discard(pid)
            self._progress(reload)
        if self.handover is not None:
            self.handover.not_stopped.discard(pid)
            self._handover_progress()
        return self._flush()

    def exited(self, pid: int, how: dict[str, Any]) -> list[Action]:
        """The worker was reaped; ``how`` is ``{"code": n}`` or ``{"signal": name}``."""
        w = self.workers.pop(pid, None)
        if w is None:
            return []
        self.out.emit("worker.exit", pid=pid, generation=w.generation, index=w.index, **how)
        for reload in list(self.finishing):
            reload.old.discard(pid)
            reload.not_stopped.discard(pid)
            self._progress(reload)
        if self.handover is not None:
            self.handover.not_stopped.discard(pid)
            self._handover_progress()  # "drained" is told before the ``Exit`` below
        if self.stopping:
            if not self.workers:
                self.out.add(Exit())
        elif self.pending is not None and w.generation == self.pending.generation:
            self._reload_failed(self.pending, f"worker {w.index} of generation {w.generation} exited "
                                              f"before its generation was ready ({how})\n")
        elif w.generation == self.generation and w.state is not WorkerState.DRAINING and self.pending is None:
            # (During a reload the new generation takes its place; if that reload fails,
            # _reload_failed tops the serving generation up again.)
            self._replace(w)
        return self._flush()

    def stop(self, graceful: bool) -> list[Action]:
        """SIGTERM/SIGINT (graceful; a second one means now) or SIGQUIT. A reload under way is dropped."""
        self._stop(graceful)
        return self._flush()

    def upgrade(self, name: str) -> list[Action]:
        """A new master asked for (SIGUSR2, ``python -m lab upgrade``, a preloaded module changed)."""
        if self.stopping or self.handover is not None or self.generation == 0:
            why = ("stopping" if self.stopping else "an upgrade is under way" if self.handover is not None
                   else "not serving yet")
            self.out.emit("upgrade.refused", trigger=name, reason=why)
            return self._flush()
        self.handover = Handover(name, self.clock())
        self.out.emit("upgrade.start", trigger=name, generation=self._last_generation + 1)
        # Its generations are numbered on from ours (a reload under way here included).
        self.out.add(StartUpgrade(self._last_generation + 1))
        return self._flush()

    def successor_failed(self, text: str) -> list[Action]:
        """The new master exited, or closed its end, before it was told ``drained``: keep serving
        (after its ``ready``, with a new generation of our own in place of the draining one)."""
        self._successor_failed(text)
        return self._flush()

    def successor_ready(self) -> list[Action]:
        """The new master's first generation is ready: drain every worker of ours, then tell it."""
        h = self.handover
        if h is None or h.ready is not None:
            return []
        h.ready = self.clock()
        self.out.emit("upgrade.ready", trigger=h.trigger, waited=round(h.ready - h.started, 6))
        # Like a graceful stop, but said as a handover; a reload under way here is dropped (the
        # new master imported the app later).
        self.stopping = True
        self.pending = self.queued = None
        for w in list(self.workers.values()):
            if w.state in (WorkerState.READY, WorkerState.SERVING):
                self._drain(w)
            elif w.state is WorkerState.STARTING:
                self._kill(w)
        h.not_stopped = {w.pid for w in self.workers.values()
                         if w.state is WorkerState.DRAINING and not w.stopped_accepting}
        if h.not_stopped:
            h.give_up_at = h.ready + self.drain_confirm_wait
        self._handover_progress()
        if not self.workers:
            self.out.add(Exit())
        return self._flush()

    def predecessor_drained(self) -> list[Action]:
        """(New master) the old master's workers accept no more (or it is gone): ``go``."""
        if not self.predecessor:
            return []
        self.predecessor = False
        self.out.emit("upgrade.serving", generation=self.generation)
        for reload in list(self.finishing):
            self._progress(reload)
        return self._flush()

    def tick(self) -> list[Action]:
        """A ``CallLater`` came due: act on every deadline that has passed."""
        now = self.clock()
        self.out.ticked()
        self._handover_deadlines(now)
        if self.pending is not None:
            self._pending_deadlines(self.pending, now)
        for reload in list(self.finishing):
            if reload.give_up_at is not None and now >= reload.give_up_at:
                self._stop_waiting(reload)
        for w in list(self.workers.values()):
            if w.kill_at is not None and now >= w.kill_at:
                self._kill(w)  # it ignored its drain for graceful_timeout
        due = [r for r in self._respawns if r[0] <= now]
        self._respawns = [r for r in self._respawns if r[0] > now]
        for _, generation, index in due:
            self._respawn(generation, index)
        if self.liveness is not None and now >= self.liveness.due:
            self._check_alive(now)
        return self._flush()

    def _stop(self, graceful: bool) -> None:
        graceful = graceful and not self.stopping
        h = self.handover
        if h is not None and h.ready is None:  # a stop while the new master starts: it goes too
            self.out.add(KillSuccessor())
            self._successor_failed("the server is stopping")
        elif h is not None:
            h.stop_asked = True  # a handover under way goes on; a new master lost then is not replaced
        if not self.stopping:
            self.out.emit("server.stopping", graceful=graceful)
        self.stopping = True
        self.pending = self.queued = None
        for w in list(self.workers.values()):
            if graceful and w.state in (WorkerState.READY, WorkerState.SERVING):
                self._drain(w)
            elif not graceful or w.state is WorkerState.STARTING:
                self._kill(w)
        if not self.workers:
            self.out.add(Exit())

    # --- reload --------------------------------------------------------------------------------------

    def _start_reload(self, trigger: str, seen: float) -> None:
        self._last_generation += 1
        reload = Reload(self._last_generation, trigger, {"seen": seen})
        self.pending = reload
        self.out.emit("reload.start", generation=reload.generation, trigger=trigger)
        self.out.add(Spawn(reload.generation, tuple(range(self.size))))

    def _pending_deadlines(self, reload: Reload, now: float) -> None:
        """Generation N+1 still imports: superseded by a queued trigger, reported slow, or failed."""
        forked = reload.phases.get("forked")
        if forked is None:
            return
        if self.queued is not None and now - forked >= SUPERSEDE_AFTER:
            self._supersede(reload)
            return
        if not reload.slow_said and now - forked >= SLOW_IMPORT:
            reload.slow_said = True  # said as it happens, and who
            waiting = sorted((w.index, w.pid) for w in self._of_generation(reload.generation)
                             if w.state is WorkerState.STARTING)
            self.out.emit("reload.slow", generation=reload.generation, trigger=reload.trigger,
                           waited=SLOW_IMPORT, workers=[pid for _, pid in waiting])
        if now - forked >= READY_TIMEOUT:
            self._reload_failed(reload, f"not ready after {READY_TIMEOUT:g} s (an import that hangs?)\n")

    def _supersede(self, reload: Reload) -> None:
        """A trigger queued behind a generation importing for SUPERSEDE_AFTER s replaces it now."""
        self._remove_pending(reload)
        self.out.emit("reload.superseded", generation=reload.generation, trigger=reload.trigger,
                       importing=round(self.clock() - reload.phases["forked"], 3))
        self._start_queued()

    def _remove_pending(self, reload: Reload) -> None:
        """Generation N+1 is given up: its workers killed."""
        self.pending = None
        for w in self._of_generation(reload.generation):
            self._kill(w)

    def _start_queued(self) -> None:
        """The one trigger that came during the reload (or failed upgrade) that just ended, if any;
        none while a new master starts (its first generation is numbered after ours)."""
        if self.queued is not None and self.handover is None:
            trigger, self.queued = self.queued, None
            self._start_reload(trigger, self.clock())

    def _commit(self, reload: Reload, new: list[Worker]) -> None:
        now = self.clock()
        reload.phases["ready"] = now
        self.pending = None
        self.generation = reload.generation
        for w in list(self.workers.values()):
            if w.generation == reload.generation:
                continue
            if w.state is WorkerState.STARTING:  # a replacement still importing: not needed any more
                self._kill(w)
            elif w.state in (WorkerState.READY, WorkerState.SERVING):
                self._drain(w)
            reload.old.add(w.pid)
            if w.state is WorkerState.DRAINING and not w.stopped_accepting:
                reload.not_stopped.add(w.pid)
        for w in new:
            w.state = WorkerState.SERVING
        self.finishing.append(reload)
        if reload.not_stopped:
            reload.give_up_at = now + self.drain_confirm_wait
        self._progress(reload)
        self._start_queued()

    def _stop_waiting(self, reload: Reload) -> None:
        """Old workers that did not confirm their drain in time are stuck: go without them."""
        for pid in sorted(reload.not_stopped):
            w = self.workers[pid]
            self.out.emit("worker.unresponsive", pid=pid, generation=w.generation, index=w.index,
                           waited=self.drain_confirm_wait)
        reload.not_stopped.clear()
        self._progress(reload)

    def _progress(self, reload: Reload) -> None:
        """``go`` once no old worker can accept; ``reload.done`` once they are all gone."""
        now = self.clock()
        if self.predecessor:  # a new master: the old master's workers may still accept
            if not self._told_ready:
                self._told_ready = True
                self.out.add(Tell("ready"))
            return
        if not reload.went and not reload.not_stopped:
            reload.went = True
            reload.give_up_at = None
            reload.phases["serving"] = now
            for w in self._of_generation(reload.generation):
                if w.state is WorkerState.SERVING:
                    self.out.add(Send(w.pid, "go"))
        if reload.went and not reload.old:
            reload.phases["old_gone"] = now
            self.finishing.remove(reload)
            self.crashes.failures.clear()
            if self.degraded:
                self.degraded = False
                self.out.emit("server.recovered", generation=reload.generation)
            self.out.emit("reload.done", generation=reload.generation, trigger=reload.trigger,
                           duration=round(now - reload.phases["seen"], 6), phases=reload.phases)

    def _reload_failed(self, reload: Reload, text: str) -> None:
        self._remove_pending(reload)
        self.out.emit("reload.failed", generation=reload.generation, trigger=reload.trigger,
                       error=summarize_traceback(text), traceback=text)
        if self.generation == 0:  # the first generation: nothing to keep serving
            self.failed_start = summarize_traceback(text)
            self._stop(graceful=False)
            return
        for index in range(self.size):  # serving workers that died meanwhile
            self._respawn(self.generation, index)
        self._start_queued()

    # --- upgrade (the old master's side) ----------------------------------------------------------------

    def _successor_failed(self, text: str) -> None:
        h = self.handover
        if h is None or h.told:
            return  # told "drained", it serves: what becomes of it is its own business
        self.handover = None
        self.out.emit("upgrade.failed", trigger=h.trigger, error=summarize_traceback(text), detail=text)
        if h.ready is not None and not h.stop_asked:
            # It died after it said ready: our workers drain already, so a generation of our own
            # takes their place (it goes once they stopped accepting, as in any reload).
            self.stopping = False
            self._start_reload("upgrade.failed", self.clock())
        elif self.pending is None and not self.stopping:
            self._start_queued()

    def _handover_deadlines(self, now: float) -> None:
        """The new master not ready in time is killed; old workers silent about their drain are
        given up on (``worker.unresponsive``), as in a reload."""
        h = self.handover
        if h is None:
            return
        if h.ready is None and now >= h.started + UPGRADE_TIMEOUT:
            self.out.add(KillSuccessor())
            self._successor_failed(f"the new master was not ready after {UPGRADE_TIMEOUT:g} s\n")
        elif h.give_up_at is not None and now >= h.give_up_at and not h.told:
            for pid in sorted(h.not_stopped):
                w = self.workers[pid]
                self.out.emit("worker.unresponsive", pid=pid, generation=w.generation, index=w.index,
                               waited=self.drain_confirm_wait)
            h.not_stopped.clear()
            self._handover_progress()

    def _handover_progress(self) -> None:
        """Once no old worker can accept, the new master is told to start accepting."""
        h = self.handover
        if h is None or h.ready is None or h.told or h.not_stopped:
            return
        h.told = True
        h.give_up_at = None
        self.out.add(Tell("drained"))
        self.out.emit("upgrade.handed_over", trigger=h.trigger,
                       duration=round(self.clock() - h.started, 6))

    # --- workers -------------------------------------------------------------------------------------

    def _replace(self, w: Worker) -> None:
        """A worker of the serving generation died: another, backing off if they keep dying."""
        now = self.clock()
        failures, delay = self.crashes.died(w.index, now - w.started)
        if failures == 1:
            self._respawn(w.generation, w.index)
            return
        self.out.emit("worker.backoff", generation=w.generation, index=w.index, failures=failures,
                       delay=round(delay, 4))
        if failures >= DEGRADED_AFTER and not self.degraded:
            self.degraded = True  # said once; a good reload clears it (server.recovered)
            self.out.emit("server.degraded", reason="crash loop", generation=w.generation,
                           index=w.index, failures=failures)
        self._respawns.append((now + delay, w.generation, w.index))

    def _respawn(self, generation: int, index: int) -> None:
        if self.stopping or generation != self.generation or self.pending is not None:
            return  # a newer generation is (or will be) serving instead
        if any(x.generation == generation and x.index == index for x in self.workers.values()):
            return
        if any(isinstance(a, Spawn) and a.generation == generation and index in a.indexes
               for a in self.out.actions):
            return  # already asked for in this answer (a tick with two respawns of one slot)
        self.out.add(Spawn(generation, (index,)))

    def _check_alive(self, now: float) -> None:
        stall, silent = self.liveness.check(now, list(self.workers.values()))
        if stall is not None:
            self.out.emit("server.stalled", gap=round(stall, 3))
        for w in silent:
            self.out.emit("worker.timeout", pid=w.pid, generation=w.generation, index=w.index,
                           silent=round(now - w.heard, 3))
            self._kill(w)  # its exit follows; ``exited`` replaces it like any dead worker

    def _drain(self, w: Worker) -> None:
        w.state = WorkerState.DRAINING
        w.kill_at = self.clock() + self.graceful_timeout
        self.out.add(Send(w.pid, "drain"))

    def _kill(self, w: Worker) -> None:
        if w.state is WorkerState.KILLED:
            return  # once is enough: its exit follows
        w.state = WorkerState.KILLED
        w.kill_at = None
        self.out.add(Kill(w.pid))

    # --- helpers -------------------------------------------------------------------------------------

    def _live(self, pid: int) -> Worker | None:
        """The worker, unless it is gone or killed (what it still says does not count)."""
        w = self.workers.get(pid)
        return None if w is None or w.state is WorkerState.KILLED else w

    def _of_generation(self, generation: int) -> list[Worker]:
        return [w for w in self.workers.values() if w.generation == generation]

    def _deadlines(self) -> Iterator[float]:
        if self.pending is not None:
            yield from self.pending.deadlines(queued=self.queued is not None)
        yield from (r.give_up_at for r in self.finishing if r.give_up_at is not None)
        h = self.handover
        if h is not None and h.ready is None:
            yield h.started + UPGRADE_TIMEOUT
        if h is not None and h.give_up_at is not None and not h.told:
            yield h.give_up_at
        yield from (w.kill_at for w in self.workers.values() if w.kill_at is not None)
        yield from (when for when, _, _ in self._respawns)
        if self.liveness is not None:
            yield self.liveness.due

    def _flush(self) -> list[Action]:
        return self.out.take(min(self._deadlines(), default=None))
