"""Standbys: workers forked ahead of the next reload, so that a reload does not wait for forks.

Between a trigger and the import of the app, a reload used to fork each new worker and let it set
itself up (its death signal, process group, event sinks, loop, accept gate, signal handlers): a few
milliseconds each on an idle machine, and many more on a busy one, one worker after another. A
standby is such a worker made in advance, while nothing else is under way: set up, it waits on its
channel and has imported nothing of the app. A ``Spawn`` takes a standby (``start GENERATION
INDEX``) before it forks: the standby imports the app then, so it loads the code on disk at that
moment, as a worker forked then would.

Every standby of a generation starts at once: each waits first for a shared lock on a latch (an
unnamed file, like the accept gate of lab/gate.py) that the master holds exclusive while they are
idle. The master writes every ``start`` order, then releases the latch, which wakes them all in one
system call. Woken one by one through their channels, the first would often run (its whole import)
before the master, preempted on a busy machine, had told the second.

The master forks one standby per worker slot as it starts (with its first generation), and again
``STANDBY_AFTER`` s after it took some, once no reload waits for its ``go`` (``Supervisor.quiet``):
those forks never compete with a reload for the CPU. A standby that dies is forgotten (a ``Spawn``
then forks, as before); the master kills the rest when it stops (and a standby dies with its
master, like any worker). A standby also compiles a module of the lab once (``_warm_compiler`` in
lab/worker.py), so that its import of the app does not first copy the master's pages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lab.gate import AcceptGate
from lab.reactor import Reactor
from lab.timers import TimerHandle

if TYPE_CHECKING:
    from lab.children import WorkerProcess

STANDBY_AFTER = 0.1  # s after standbys were taken: make new ones (the reload is past its ``go`` by then)


class Standbys:
    """The master's standbys; ``fork(count)`` forks that many (fewer if a fork fails)."""

    def __init__(
        self,
        size: int,
        reactor: Reactor,
        fork: Callable[[int], list[WorkerProcess]],
        quiet: Callable[[], bool],
    ):
        self.size = size
        self.reactor = reactor
        self.fork = fork
        self.quiet = quiet  # no reload, upgrade or stop under way: forks take nothing from them
        self.idle: list[WorkerProcess] = []
        self.latch = AcceptGate.create()  # held by the master while standbys wait: see the module doc
        self._spent = False  # the latch was let go: standbys told then may not all have passed it
        self._timer: TimerHandle | None = None

    def start(self, generation: int, indexes: tuple[int, ...]) -> dict[int, WorkerProcess]:
        """Standbys told to start as these workers of ``generation``, by index (as many as there
        are), then let go all at once."""
        started: dict[int, WorkerProcess] = {}
        for index in indexes:
            while self.idle and index not in started:
                w = self.idle.pop(0)
                try:
                    w.channel.send(f"start {generation} {index}\n".encode())
                except OSError:  # it died (its exit is reaped like any child's): the next one
                    w.channel.close()
                    continue
                started[index] = w
        if started:
            self.latch.leave()  # those not told wait on their channel instead
            self._spent = True
        return started

    def refill_later(self) -> None:
        """Make up for those taken, STANDBY_AFTER s from now (or later, once things are quiet)."""
        if self._timer is None:
            self._timer = self.reactor.call_later(STANDBY_AFTER, self._refill)

    def _refill(self) -> None:
        self._timer = None
        if not self.quiet():
            self.refill_later()
            return
        self.fill()

    def fill(self) -> None:
        """A standby for every slot that has none, now (at the start: the server is ready with them)."""
        if len(self.idle) >= self.size:
            return
        if self._spent:
            # A latch is let go once: a standby told to start may not have been scheduled since
            # (a busy machine), and must never find it held again. New standbys get a new one.
            self.latch.close()
            self.latch = AcceptGate.create()
            self._spent = False
        if not self.latch.hold():  # never held yet, and no standby has it: cannot fail
            self.refill_later()
            return
        self.idle += self.fork(self.size - len(self.idle))

    def reaped(self, pid: int) -> bool:
        """True if ``pid`` was a standby (now forgotten)."""
        for w in self.idle:
            if w.pid == pid:
                self.idle.remove(w)
                w.channel.close()
                return True
        return False

    def pids(self) -> list[int]:
        return [w.pid for w in self.idle]
