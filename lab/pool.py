"""The supervisor's workers (pure): their states, and the replacement of those that die.

``Pool`` keeps what the supervisor knows of each worker and the primitives it decides with
(``drain``, ``kill``); when the serving generation loses a worker it backs off a crash streak, says
a crash loop once (``server.degraded``), retries a failed fork and kills a worker silent for
``worker_timeout``. Which worker to replace, and when not to, stays the supervisor's call.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lab.actions import Kill, Outbox, Send, Spawn
from lab.vocabulary import Kind

STABLE_AFTER = 5.0  # a worker that lived this long had no crash streak
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
DEGRADED_AFTER = 3  # quick deaths in a row of one worker slot that make the server "degraded"
FORK_RETRY = 1.0  # a replacement whose fork failed is tried again after this long


class WorkerState(enum.Enum):
    STARTING = "starting"  # importing the app
    READY = "ready"  # imported, waiting for ``go``
    SERVING = "serving"  # told ``go`` (or about to be, once no old worker can accept)
    DRAINING = "draining"  # told to drain: finishes what it has, then exits
    KILLED = "killed"  # SIGKILLed: its exit follows


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


class Pool:
    """Every worker until it is reaped, by pid; see the module doc."""

    def __init__(
        self,
        graceful_timeout: float,
        worker_timeout: float | None,
        out: Outbox,
        clock: Callable[[], float],
        random: Callable[[], float],
    ):
        self.graceful_timeout = graceful_timeout
        self.out = out
        self.clock = clock
        self.workers: dict[int, Worker] = {}
        self.crashes = CrashStreaks(random)
        self.degraded = False  # a worker slot is in a crash loop (until the next good reload)
        self._respawns: list[tuple[float, int, int]] = []  # (when, generation, index)
        self.liveness = None if worker_timeout is None else Liveness(worker_timeout, clock())

    def add(self, pid: int, generation: int, index: int) -> None:
        now = self.clock()
        self.workers[pid] = Worker(pid, generation, index, now, heard=now)

    def live(self, pid: int) -> Worker | None:
        """The worker, unless it is gone or killed (what it still says does not count)."""
        w = self.workers.get(pid)
        return None if w is None or w.state is WorkerState.KILLED else w

    def of_generation(self, generation: int) -> list[Worker]:
        return [w for w in self.workers.values() if w.generation == generation]

    def drain(self, w: Worker) -> None:
        w.state = WorkerState.DRAINING
        w.kill_at = self.clock() + self.graceful_timeout
        self.out.add(Send(w.pid, "drain"))

    def kill(self, w: Worker) -> None:
        if w.state is WorkerState.KILLED:
            return  # once is enough: its exit follows
        w.state = WorkerState.KILLED
        w.kill_at = None
        self.out.add(Kill(w.pid))

    def stop(self, graceful: bool) -> None:
        """Every worker told to drain (killed if still importing), or, not ``graceful``, killed."""
        for w in list(self.workers.values()):
            if graceful and w.state in (WorkerState.READY, WorkerState.SERVING):
                self.drain(w)
            elif not graceful or w.state is WorkerState.STARTING:
                self.kill(w)

    def unresponsive(self, pids: set[int], waited: float) -> None:
        """Old workers that did not confirm their drain in time: said, and no longer waited for."""
        for pid in sorted(pids):
            w = self.workers[pid]
            self.out.emit(Kind.WORKER_UNRESPONSIVE, pid=pid, generation=w.generation, index=w.index, waited=waited)
        pids.clear()

    # --- replacing the dead --------------------------------------------------------------------------

    def backoff(self, w: Worker) -> bool:
        """A worker of the serving generation died: True to replace it at once, else it is
        replaced after a backoff (``due``) because its slot keeps dying."""
        now = self.clock()
        failures, delay = self.crashes.died(w.index, now - w.started)
        if failures == 1:
            return True
        self.out.emit(
            Kind.WORKER_BACKOFF, generation=w.generation, index=w.index, failures=failures, delay=round(delay, 4)
        )
        if failures >= DEGRADED_AFTER and not self.degraded:
            self.degraded = True  # said once; a good reload clears it (server.recovered)
            self.out.emit(
                Kind.SERVER_DEGRADED, reason="crash loop", generation=w.generation, index=w.index, failures=failures
            )
        self._respawns.append((now + delay, w.generation, w.index))
        return False

    def fork_failed(self, generation: int, index: int, error: str) -> None:
        """A replacement's fork failed: it is tried again after FORK_RETRY s (``due``)."""
        self.out.emit(
            Kind.WORKER_BACKOFF, generation=generation, index=index, failures=-1, delay=FORK_RETRY, error=error
        )
        self._respawns.append((self.clock() + FORK_RETRY, generation, index))

    def due(self, now: float) -> list[tuple[int, int]]:
        """The (generation, index) of each replacement whose wait is over."""
        due = [(generation, index) for when, generation, index in self._respawns if when <= now]
        self._respawns = [r for r in self._respawns if r[0] > now]
        return due

    def respawn(self, generation: int, index: int) -> None:
        """A worker in that slot, unless there is one (or one is asked for in this answer already:
        a tick with two respawns of one slot)."""
        if any(x.generation == generation and x.index == index for x in self.workers.values()):
            return
        if any(isinstance(a, Spawn) and a.generation == generation and index in a.indexes for a in self.out.actions):
            return
        self.out.add(Spawn(generation, (index,)))

    def recovered(self, generation: int) -> None:
        """A reload is done: crash streaks start over, and a crash loop is over."""
        self.crashes.failures.clear()
        if self.degraded:
            self.degraded = False
            self.out.emit(Kind.SERVER_RECOVERED, generation=generation)

    # --- deadlines -----------------------------------------------------------------------------------

    def kill_overdue(self, now: float) -> None:
        """Draining workers that ignored their drain for graceful_timeout."""
        for w in list(self.workers.values()):
            if w.kill_at is not None and now >= w.kill_at:
                self.kill(w)

    def check_alive(self, now: float) -> None:
        """``worker_timeout``, when its check is due: a silent worker is killed (its exit follows and
        ``exited`` replaces it like any dead worker)."""
        if self.liveness is None or now < self.liveness.due:
            return
        stall, silent = self.liveness.check(now, list(self.workers.values()))
        if stall is not None:
            self.out.emit(Kind.SERVER_STALLED, gap=round(stall, 3))
        for w in silent:
            self.out.emit(
                Kind.WORKER_TIMEOUT, pid=w.pid, generation=w.generation, index=w.index, silent=round(now - w.heard, 3)
            )
            self.kill(w)

    def deadlines(self) -> Iterator[float]:
        yield from (w.kill_at for w in self.workers.values() if w.kill_at is not None)
        yield from (when for when, _, _ in self._respawns)
        if self.liveness is not None:
            yield self.liveness.due
