"""The accept gate: no worker of an old generation accepts once the next one is told ``go``.

An unnamed temporary file (never in the file system's names) that the master and its workers lock
with ``flock``. A worker holds it shared only around "read my orders, then accept a batch" (a few
non-blocking syscalls, never app code). Before the master tells ``go``, it takes it exclusive once,
without blocking (retried from its loop: ``BehindGate``), after the ``drain`` orders are written:
an old worker's accept either ended before that moment, or follows a read of its orders that sees
the drain. A worker stuck in app code holds nothing, so it never holds up a reload; one descheduled
inside its section holds it up only until the scheduler runs it again.

``flock`` locks belong to an open file description, so each worker opens its own (``reopen``): one
inherited through the fork would be the master's own lock.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable

from lab.actions import Action, Exit, Send, Tell
from lab.reactor import Reactor

GATE_RETRY = 0.001  # a worker is inside the accept gate: try to pass it again this much later


class AcceptGate:
    """One side's handle on the gate: the master's (``create``) or a worker's (``reopen``)."""

    def __init__(self, fd: int):
        self.fd = fd

    @classmethod
    def create(cls) -> AcceptGate:
        """A new gate (O_TMPFILE or unlinked at once: nothing is left behind, whatever happens)."""
        with tempfile.TemporaryFile(prefix="lab-gate-") as f:
            return cls(os.dup(f.fileno()))

    def reopen(self) -> AcceptGate:
        """The same file through an open file description of this process's own (after a fork)."""
        return AcceptGate(os.open(f"/proc/self/fd/{self.fd}", os.O_RDWR | os.O_CLOEXEC))

    def enter(self) -> None:
        """(Worker) before reading orders and accepting: waits only while the master passes."""
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def leave(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def try_pass(self) -> bool:
        """(Master) True once no worker is inside (it held the gate for an instant); never blocks."""
        if not self.hold():
            return False
        self.leave()
        return True

    def hold(self) -> bool:
        """(Master) take it exclusive and keep it until ``leave``; never blocks: False while a
        worker is inside. (A standby's latch, lab/standby.py, is held this way.)"""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BehindGate:
    """The master's ``go`` orders (and what must follow one) held until the gate is passed after
    the last ``drain`` sent, then carried out in order by ``do``; the gate is tried from the loop."""

    def __init__(self, gate: AcceptGate, reactor: Reactor, do: Callable[[list[Action]], None]):
        self.gate = gate
        self.reactor = reactor
        self.do = do
        self._due = False  # a drain was sent: pass the gate before the next ``go``
        self._waiting: list[Action] = []  # ``go`` (or "drained") waiting for the gate, in order

    def holds(self, action: Action) -> bool:
        """True if ``action`` must wait for the gate (it is kept, and done once the gate is passed)."""
        match action:
            # What lets a new generation accept waits for the gate; so does an exit behind it.
            case Send(_, "go") | Tell("drained"):
                wait = bool(self._waiting) or not self._passed()
            case Exit():
                wait = bool(self._waiting)
            case Send(_, "drain"):
                self._due = True
                return False
            case _:
                return False
        if not wait:
            return False
        if not self._waiting:
            self.reactor.call_later(GATE_RETRY, self._retry)
        self._waiting.append(action)
        return True

    def _passed(self) -> bool:
        """No old worker can accept any more: the accept gate was passed after the last drain sent,
        now or before. Never blocks: False while a worker is inside."""
        if self._due and not self.gate.try_pass():
            return False
        self._due = False
        return True

    def _retry(self) -> None:
        if not self._passed():
            self.reactor.call_later(GATE_RETRY, self._retry)
            return
        waiting, self._waiting = self._waiting, []
        self.do(waiting)
