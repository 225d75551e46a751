"""What the supervisor answers the master: actions, gathered per event in an ``Outbox``.

Pure: the master (lab/master.py, lab/upgrade.py) carries them out; tests/test_supervisor.py plays
the master with a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
