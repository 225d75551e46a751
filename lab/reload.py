"""One reload, a pure sub-machine of the supervisor: ``Reload`` from its trigger until the
generation before it is gone, and ``Finishing``, the committed ones that wait for their old workers.

``Supervisor`` (lab/supervisor.py) starts a reload, supersedes or fails it while its generation
imports, and commits it once that generation is ready; from then on ``Finishing`` tells the new
generation ``go`` once no old worker can accept (in a new master, not before the old master's
workers cannot either: ``predecessor_drained``), gives up on old workers that do not confirm their
drain, and says ``reload.done`` once they are all gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lab.actions import Outbox, Send, Tell
from lab.pool import Pool, WorkerState
from lab.vocabulary import Kind

READY_TIMEOUT = 60.0  # a new generation that is not ready by then (an import that hangs) fails
SLOW_IMPORT = 2.0  # a new generation not ready by then is reported (reload.slow)
# A trigger that comes while a generation has been importing this long supersedes it at once
# (the code on disk is newer than what it imports); before that the trigger waits in the queue,
# so that a burst of triggers cannot keep every generation from becoming ready.
SUPERSEDE_AFTER = 0.5


@dataclass(eq=False)
class Reload:
    """One generation's reload, from its trigger until the generation before it is gone."""

    generation: int
    trigger: str
    phases: dict[str, float]
    spawned: int = 0  # "forked" is set when every worker of the generation is
    slow_said: bool = False
    old: set[int] = field(default_factory=set)  # pids of the previous generation still running
    not_stopped: set[int] = field(default_factory=set)  # old pids that may still accept
    went: bool = False
    give_up_at: float | None = None  # when to stop waiting for unresponsive old workers

    def count_spawned(self, size: int, now: float) -> None:
        """One more of its ``size`` workers forked ("forked" is when the last one is)."""
        self.spawned += 1
        if self.spawned == size:
            self.phases["forked"] = now

    def all_ready(self, pool: Pool, size: int) -> bool:
        new = pool.of_generation(self.generation)
        return len(new) == size and all(w.state is WorkerState.READY for w in new)

    def deadlines(self, queued: bool) -> Iterator[float]:
        """While it imports: when it is slow, superseded (if a trigger is queued) and failed."""
        forked = self.phases.get("forked")
        if forked is not None:
            yield forked + READY_TIMEOUT
            if not self.slow_said:
                yield forked + SLOW_IMPORT
            if queued:
                yield forked + SUPERSEDE_AFTER

    def say_slow(self, pool: Pool, out: Outbox) -> None:
        """Said as it happens, and who is still importing."""
        self.slow_said = True
        waiting = sorted(
            (w.index, w.pid) for w in pool.of_generation(self.generation) if w.state is WorkerState.STARTING
        )
        out.emit(
            Kind.RELOAD_SLOW,
            generation=self.generation,
            trigger=self.trigger,
            waited=SLOW_IMPORT,
            workers=[pid for _, pid in waiting],
        )

    def commit(self, pool: Pool, now: float, drain_confirm_wait: float) -> None:
        """Every new worker is ready: every older one is drained (killed if still importing)."""
        self.phases["ready"] = now
        for w in list(pool.workers.values()):
            if w.generation == self.generation:
                continue
            if w.state is WorkerState.STARTING:  # a replacement still importing: not needed any more
                pool.kill(w)
            elif w.state in (WorkerState.READY, WorkerState.SERVING):
                pool.drain(w)
            self.old.add(w.pid)
            if w.state is WorkerState.DRAINING and not w.stopped_accepting:
                self.not_stopped.add(w.pid)
        for w in pool.of_generation(self.generation):
            w.state = WorkerState.SERVING
        if self.not_stopped:
            self.give_up_at = now + drain_confirm_wait

    def progress(self, pool: Pool, out: Outbox, now: float) -> bool:
        """``go`` once no old worker can accept; True once they are all gone."""
        if not self.went and not self.not_stopped:
            self.went = True
            self.give_up_at = None
            self.phases["serving"] = now
            for w in pool.of_generation(self.generation):
                if w.state is WorkerState.SERVING:
                    out.add(Send(w.pid, "go"))
        if self.went and not self.old:
            self.phases["old_gone"] = now
            return True
        return False


class Finishing:
    """The committed reloads, each until the generation before it is gone."""

    def __init__(
        self, pool: Pool, out: Outbox, clock: Callable[[], float], drain_confirm_wait: float, predecessor: bool
    ):
        self.pool = pool
        self.out = out
        self.clock = clock
        self.drain_confirm_wait = drain_confirm_wait
        self.predecessor = predecessor  # a new master: its first ``go`` waits for the old one's drain
        self._told_ready = False
        self.reloads: list[Reload] = []

    def went(self) -> bool:
        """Every committed generation has been told ``go``."""
        return all(r.went for r in self.reloads)

    def commit(self, reload: Reload) -> None:
        """Its generation is ready: the older ones drain, and it goes once they cannot accept."""
        reload.commit(self.pool, self.clock(), self.drain_confirm_wait)
        self.reloads.append(reload)
        self._progress(reload)

    def predecessor_drained(self) -> None:
        """(New master) the old master's workers accept no more: what waited for them goes on."""
        self.predecessor = False
        for reload in list(self.reloads):
            self._progress(reload)

    def exited(self, pid: int) -> None:
        """The worker is gone: no reload waits for it to leave any more."""
        for reload in self.reloads:
            reload.old.discard(pid)

    def cannot_accept(self, pid: int) -> None:
        """The worker can accept no more (it said ``draining``, or is gone)."""
        for reload in list(self.reloads):
            reload.not_stopped.discard(pid)
            self._progress(reload)

    def tick(self, now: float) -> None:
        """Past a reload's ``give_up_at``: its old workers that did not confirm are given up on."""
        for reload in list(self.reloads):
            if reload.give_up_at is not None and now >= reload.give_up_at:
                # Old workers that did not confirm their drain in time are stuck: go without them.
                self.pool.unresponsive(reload.not_stopped, self.drain_confirm_wait)
                self._progress(reload)

    def deadlines(self) -> Iterator[float]:
        """When to give up on old workers that did not confirm their drain."""
        return (r.give_up_at for r in self.reloads if r.give_up_at is not None)

    def _progress(self, reload: Reload) -> None:
        """``go`` once no old worker can accept; ``reload.done`` once they are all gone."""
        if self.predecessor:  # a new master: the old master's workers may still accept
            if not self._told_ready:
                self._told_ready = True
                self.out.add(Tell("ready"))
            return
        now = self.clock()
        if reload.progress(self.pool, self.out, now):
            self.reloads.remove(reload)
            self.pool.recovered(reload.generation)
            self.out.emit(
                Kind.RELOAD_DONE,
                generation=reload.generation,
                trigger=reload.trigger,
                duration=round(now - reload.phases["seen"], 6),
                phases=reload.phases,
            )
