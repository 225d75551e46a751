"""The old master's side of an upgrade, a pure sub-machine of the supervisor.

Started by ``Supervisor.upgrade`` (which asks for a ``StartUpgrade``), it waits for the new master's
``ready``, drains every worker of its own like a graceful stop and, once none can accept any more
(or the ones that did not confirm are given up on, as in a reload), tells the new master
``drained``. A new master not ready after ``timeout`` is killed; what a failure means for the old
master's own workers is the supervisor's call (``Supervisor._successor_failed``).
"""

from __future__ import annotations

from collections.abc import Iterator

from lab.actions import KillSuccessor, Outbox, Tell
from lab.pool import Pool, WorkerState
from lab.vocabulary import Kind


def refusal(stopping: bool, upgrading: bool, serving: bool) -> str | None:
    """Why an upgrade cannot start now (said in ``upgrade.refused``), or None if it can."""
    if stopping:
        return "stopping"
    if upgrading:
        return "an upgrade is under way"
    if not serving:
        return "not serving yet"
    return None


class Handover:
    """One upgrade under way, from ``upgrade`` until the new master serves or fails."""

    def __init__(
        self, trigger: str, started: float, timeout: float, drain_confirm_wait: float, pool: Pool, out: Outbox
    ):
        self.trigger = trigger
        self.started = started
        self.timeout = timeout  # the new master must be ready by ``started + timeout``
        self.drain_confirm_wait = drain_confirm_wait
        self.pool = pool
        self.out = out
        self.ready: float | None = None  # when the new master said ready (its generation waits for ``go``)
        self.not_stopped: set[int] = set()  # old workers that may still accept
        self.give_up_at: float | None = None  # stop waiting for unresponsive old workers then
        self.told = False  # "drained" sent: the new master accepts from now on
        self.stop_asked = False  # a stop came during the handover

    def successor_ready(self, now: float) -> None:
        """Drain every worker of ours (kill those still importing), then tell the new master."""
        self.ready = now
        self.out.emit(Kind.UPGRADE_READY, trigger=self.trigger, waited=round(now - self.started, 6))
        self.pool.stop(graceful=True)
        self.not_stopped = {
            w.pid for w in self.pool.workers.values() if w.state is WorkerState.DRAINING and not w.stopped_accepting
        }
        if self.not_stopped:
            self.give_up_at = now + self.drain_confirm_wait
        self._progress(now)

    def stopped_accepting(self, pid: int, now: float) -> None:
        """The worker said ``draining``, or is gone."""
        self.not_stopped.discard(pid)
        self._progress(now)

    def tick(self, now: float) -> str | None:
        """Act on a passed deadline; the new master's failure (its text) if it timed out."""
        if self.ready is None and now >= self.started + self.timeout:
            self.out.add(KillSuccessor())
            return f"the new master was not ready after {self.timeout:g} s\n"
        if self.give_up_at is not None and now >= self.give_up_at and not self.told:
            self.pool.unresponsive(self.not_stopped, self.drain_confirm_wait)
            self._progress(now)
        return None

    def deadlines(self) -> Iterator[float]:
        if self.ready is None:
            yield self.started + self.timeout
        if self.give_up_at is not None and not self.told:
            yield self.give_up_at

    def _progress(self, now: float) -> None:
        """Once no old worker can accept, the new master is told to start accepting."""
        if self.ready is None or self.told or self.not_stopped:
            return
        self.told = True
        self.give_up_at = None
        self.out.add(Tell("drained"))
        self.out.emit(Kind.UPGRADE_HANDED_OVER, trigger=self.trigger, duration=round(now - self.started, 6))
