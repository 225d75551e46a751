"""The reload as a pure state machine: fed what happened, it answers what to do (h11's shape).

``Supervisor`` decides every reload, replacement and stop of the master; ``Master`` (master.py) is
the I/O around it: it forks, reads the workers' channels, reaps, signals and keeps the clock's
timers, and carries out the actions returned here. Nothing in this module touches a process, a
socket or a signal, so every promise below has a unit test with a fake clock (tests/test_supervisor.py).

Workers, their replacement and its backoff are ``Pool`` (lab/pool.py); a reload's own bookkeeping,
``Reload`` and ``Finishing`` (lab/reload.py); the actions, lab/actions.py.

Events: ``trigger``, ``spawned``/``fork_failed`` (the answer to a ``Spawn``), ``heard``, ``ready``,
``failed``, ``draining``, ``exited``, ``stop`` and ``tick`` (a ``CallLater`` came due). Each returns
a list of actions: ``Spawn``, ``Send`` (``go`` or ``drain``), ``Kill``, ``Emit`` (an event line),
``CallLater`` (call ``tick`` then) and ``Exit`` (every worker is gone after a stop).

Reload, step by step (``_start_reload`` -> ``ready`` -> ``_commit`` -> ``Finishing``):

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
``Handover`` in lab/handover.py). Old master: ``upgrade`` -> ``StartUpgrade`` (it execs the new one,
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

import re
from collections.abc import Callable, Iterator
from typing import Any

from lab.actions import Action, Exit, KillSuccessor, Outbox, Send, Spawn, StartUpgrade
from lab.handover import Handover, refusal
from lab.pool import Pool, WorkerState
from lab.reload import READY_TIMEOUT, SLOW_IMPORT, SUPERSEDE_AFTER, Finishing, Reload
from lab.vocabulary import Kind

UPGRADE_TIMEOUT = READY_TIMEOUT + 30.0  # a new master not ready by then (it preloads too) is killed


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


class Supervisor:
    """Every decision of the master about its workers; see the module doc.

    ``clock`` is the master's monotonic clock and ``random`` the source of the backoff jitter
    (both injected, so that tests need neither time nor luck).
    """

    def __init__(
        self,
        workers: int,
        graceful_timeout: float,
        worker_timeout: float | None,
        drain_confirm_wait: float,
        clock: Callable[[], float],
        random: Callable[[], float],
        first_generation: int = 1,
        successor: bool = False,
    ):
        self.size = workers
        self.drain_confirm_wait = drain_confirm_wait
        self.clock = clock
        self.out = Outbox(clock)
        self.pool = Pool(graceful_timeout, worker_timeout, self.out, clock, random)
        self.generation = 0  # the generation serving now (0: none yet)
        self._last_generation = first_generation - 1  # a new master goes on from the old one's
        self.handover: Handover | None = None  # an upgrade under way (this is the old master)
        self.pending: Reload | None = None  # a generation starting up
        self.queued: str | None = None  # the one trigger that came during ``pending``
        # Committed reloads waiting for old workers to leave (a new master's, for the old one's too).
        self.finishing = Finishing(self.pool, self.out, clock, drain_confirm_wait, predecessor=successor)
        self.stopping = False
        self.failed_start: str | None = None  # why the first generation failed (the server ends)

    def quiet(self) -> bool:
        """Serving, with no reload before its ``go``, no upgrade and no stop under way: a moment
        for the master's own chores (forking standbys) that takes nothing from a reload."""
        busy = self.stopping or self.handover is not None or self.pending is not None
        return self.generation != 0 and not busy and self.finishing.went()

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
        self.pool.add(pid, generation, index)
        reload = self.pending
        if reload is not None and generation == reload.generation:
            reload.count_spawned(self.size, self.clock())
        return self._flush()

    def fork_failed(self, generation: int, index: int, error: str) -> list[Action]:
        if self.pending is not None and generation == self.pending.generation:
            self._reload_failed(self.pending, f"fork failed: {error}\n")
        else:
            self.pool.fork_failed(generation, index, error)
        return self._flush()

    def heard(self, pid: int) -> list[Action]:
        """Something came from the worker: it is alive."""
        w = self.pool.workers.get(pid)
        if w is not None:
            w.heard = self.clock()
        return []

    def ready(self, pid: int) -> list[Action]:
        w = self.pool.live(pid)
        if w is None:
            return []
        w.state = WorkerState.READY
        reload = self.pending
        if reload is not None and w.generation == reload.generation:
            if reload.all_ready(self.pool, self.size):
                self._commit(reload)
        elif w.generation == self.generation and not self.stopping:
            self.out.add(Send(w.pid, "go"))  # a replacement for a worker that died
            w.state = WorkerState.SERVING
        return self._flush()

    def failed(self, pid: int, text: str) -> list[Action]:
        """The worker could not load the app (``text``: the traceback)."""
        w = self.pool.live(pid)
        if w is None:
            return []
        if self.pending is not None and w.generation == self.pending.generation:
            self._reload_failed(self.pending, text)
        else:  # a replacement that cannot load the app (broken on disk since): back off
            self.out.emit(
                Kind.WORKER_FAILED,
                generation=w.generation,
                index=w.index,
                error=summarize_traceback(text),
                traceback=text,
            )
            self.pool.kill(w)
        return self._flush()

    def draining(self, pid: int) -> list[Action]:
        """The worker has stopped accepting (its answer to ``drain``)."""
        w = self.pool.live(pid)
        if w is None:
            return []
        w.stopped_accepting = True
        self._cannot_accept(pid)
        return self._flush()

    def exited(self, pid: int, how: dict[str, Any]) -> list[Action]:
        """The worker was reaped; ``how`` is ``{"code": n}`` or ``{"signal": name}``."""
        w = self.pool.workers.pop(pid, None)
        if w is None:
            return []
        self.out.emit(Kind.WORKER_EXIT, pid=pid, generation=w.generation, index=w.index, **how)
        self.finishing.exited(pid)
        self._cannot_accept(pid)  # "drained" is told before the ``Exit`` below
        if self.stopping:
            if not self.pool.workers:
                self.out.add(Exit())
        elif self.pending is not None and w.generation == self.pending.generation:
            self._reload_failed(
                self.pending,
                f"worker {w.index} of generation {w.generation} exited before its generation was ready ({how})\n",
            )
        elif w.generation == self.generation and w.state is not WorkerState.DRAINING and self.pending is None:
            # (During a reload the new generation takes its place; if that reload fails,
            # _reload_failed tops the serving generation up again.)
            if self.pool.backoff(w):
                self._respawn(w.generation, w.index)
        return self._flush()

    def stop(self, graceful: bool) -> list[Action]:
        """SIGTERM/SIGINT (graceful; a second one means now) or SIGQUIT. A reload under way is dropped."""
        self._stop(graceful)
        return self._flush()

    def upgrade(self, name: str) -> list[Action]:
        """A new master asked for (SIGUSR2, ``python -m lab upgrade``, a preloaded module changed)."""
        why = refusal(self.stopping, self.handover is not None, serving=self.generation != 0)
        if why is not None:
            self.out.emit(Kind.UPGRADE_REFUSED, trigger=name, reason=why)
            return self._flush()
        self.handover = Handover(name, self.clock(), UPGRADE_TIMEOUT, self.drain_confirm_wait, self.pool, self.out)
        self.out.emit(Kind.UPGRADE_START, trigger=name, generation=self._last_generation + 1)
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
        # Like a graceful stop, but said as a handover; a reload under way here is dropped (the
        # new master imported the app later).
        self.stopping = True
        self.pending = self.queued = None
        h.successor_ready(self.clock())
        if not self.pool.workers:
            self.out.add(Exit())
        return self._flush()

    def predecessor_drained(self) -> list[Action]:
        """(New master) the old master's workers accept no more (or it is gone): ``go``."""
        if not self.finishing.predecessor:
            return []
        self.out.emit(Kind.UPGRADE_SERVING, generation=self.generation)
        self.finishing.predecessor_drained()
        return self._flush()

    def tick(self) -> list[Action]:
        """A ``CallLater`` came due: act on every deadline that has passed."""
        now = self.clock()
        self.out.ticked()
        if self.handover is not None:
            timed_out = self.handover.tick(now)
            if timed_out is not None:
                self._successor_failed(timed_out)
        if self.pending is not None:
            self._pending_deadlines(self.pending, now)
        self.finishing.tick(now)
        self.pool.kill_overdue(now)
        for generation, index in self.pool.due(now):
            self._respawn(generation, index)
        self.pool.check_alive(now)
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
            self.out.emit(Kind.SERVER_STOPPING, graceful=graceful)
        self.stopping = True
        self.pending = self.queued = None
        self.pool.stop(graceful)
        if not self.pool.workers:
            self.out.add(Exit())

    # --- reload --------------------------------------------------------------------------------------

    def _start_reload(self, trigger: str, seen: float) -> None:
        self._last_generation += 1
        reload = Reload(self._last_generation, trigger, {"seen": seen})
        self.pending = reload
        self.out.emit(Kind.RELOAD_START, generation=reload.generation, trigger=trigger)
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
            reload.say_slow(self.pool, self.out)
        if now - forked >= READY_TIMEOUT:
            self._reload_failed(reload, f"not ready after {READY_TIMEOUT:g} s (an import that hangs?)\n")

    def _supersede(self, reload: Reload) -> None:
        """A trigger queued behind a generation importing for SUPERSEDE_AFTER s replaces it now."""
        self._remove_pending(reload)
        self.out.emit(
            Kind.RELOAD_SUPERSEDED,
            generation=reload.generation,
            trigger=reload.trigger,
            importing=round(self.clock() - reload.phases["forked"], 3),
        )
        self._start_queued()

    def _remove_pending(self, reload: Reload) -> None:
        """Generation N+1 is given up: its workers killed."""
        self.pending = None
        for w in self.pool.of_generation(reload.generation):
            self.pool.kill(w)

    def _start_queued(self) -> None:
        """The one trigger that came during the reload (or failed upgrade) that just ended, if any;
        none while a new master starts (its first generation is numbered after ours)."""
        if self.queued is not None and self.handover is None:
            trigger, self.queued = self.queued, None
            self._start_reload(trigger, self.clock())

    def _commit(self, reload: Reload) -> None:
        self.pending = None
        self.generation = reload.generation
        self.finishing.commit(reload)
        self._start_queued()

    def _reload_failed(self, reload: Reload, text: str) -> None:
        self._remove_pending(reload)
        self.out.emit(
            Kind.RELOAD_FAILED,
            generation=reload.generation,
            trigger=reload.trigger,
            error=summarize_traceback(text),
            traceback=text,
        )
        if self.generation == 0:  # the first generation: nothing to keep serving
            self.failed_start = summarize_traceback(text)
            self._stop(graceful=False)
            return
        for index in range(self.size):  # serving workers that died meanwhile
            self._respawn(self.generation, index)
        self._start_queued()

    # --- upgrade and workers ---------------------------------------------------------------------------

    def _successor_failed(self, text: str) -> None:
        h = self.handover
        if h is None or h.told:
            return  # told "drained", it serves: what becomes of it is its own business
        self.handover = None
        self.out.emit(Kind.UPGRADE_FAILED, trigger=h.trigger, error=summarize_traceback(text), detail=text)
        if h.ready is not None and not h.stop_asked:
            # It died after it said ready: our workers drain already, so a generation of our own
            # takes their place (it goes once they stopped accepting, as in any reload).
            self.stopping = False
            self._start_reload("upgrade.failed", self.clock())
        elif self.pending is None and not self.stopping:
            self._start_queued()

    def _cannot_accept(self, pid: int) -> None:
        """The worker can accept no more (it said ``draining``, or is gone): what waited for it goes on."""
        self.finishing.cannot_accept(pid)
        if self.handover is not None:
            self.handover.stopped_accepting(pid, self.clock())

    def _respawn(self, generation: int, index: int) -> None:
        if self.stopping or generation != self.generation or self.pending is not None:
            return  # a newer generation is (or will be) serving instead
        self.pool.respawn(generation, index)

    def _deadlines(self) -> Iterator[float]:
        if self.pending is not None:
            yield from self.pending.deadlines(queued=self.queued is not None)
        yield from self.finishing.deadlines()
        if self.handover is not None:
            yield from self.handover.deadlines()
        yield from self.pool.deadlines()

    def _flush(self) -> list[Action]:
        return self.out.take(min(self._deadlines(), default=None))
