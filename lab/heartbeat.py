"""Heartbeat detection: which connections have been silent for ``idle`` seconds (§3 of the tutorial).

Pure bookkeeping, no I/O and no clock of its own: every method takes ``now`` (seconds on one
monotonic clock; it must not go backwards). The server calls ``touch`` on activity, ``forget`` on
close, and ``expired(now)`` at ``next_check(now)``; each returned connection is closed.

The contract every strategy keeps: a connection is never reported before ``last + idle <= now``,
and, if ``expired`` is called at the times ``next_check`` asks for, at most ``interval`` after it.

Five strategies, so the notebooks and benchmarks can compare them:

* ``timer`` -- the tutorial's: each message cancels the connection's one-shot timer and starts a
  new one. Exact, but a timer created and cancelled per message.
* ``scan`` -- Swoole's ``heartbeat_check_interval``: every ``interval``, look at every connection.
  O(1) per message, O(connections) per check.
* ``lazy`` -- Netty's ``IdleStateHandler``: a message only stores a timestamp; one heap entry per
  connection comes due at its old deadline and is rescheduled from the timestamp if there was
  activity since. Work per check is proportional to what comes due.
* ``wheel`` -- a hashed timing wheel (Varghese & Lauck; Netty's ``HashedWheelTimer``) with a tick
  of ``interval``, rescheduled lazily as ``lazy``: O(1) per entry that comes due (a dict move,
  no per-connection heap), and no wake-up for an empty slot.
* ``queue`` -- the connections in touch order: with one ``idle`` for all, deadlines fall in that
  order, so a check looks at the head only and nothing is ever rescheduled. The least memory,
  but each message moves its connection to the end of an ``OrderedDict``.

``lazy``, ``wheel`` and ``queue`` round deadlines up to a multiple of ``interval``, so a server
wakes at most once per ``interval`` however many connections there are (the rounding is the
allowed lateness). The default is ``wheel``: as cheap per message as ``lazy`` (a dict store), but
rescheduling is a dict move instead of a heap push, so its checks cost about half and it holds
less memory; ``queue`` checks for free but its per-message move costs several times the wheel's
whole bookkeeping at 100,000 busy connections (``benchmarks/heartbeat.py``). Silent connections
cost neither anything between checks (``benchmarks/connections.py``).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Hashable
from typing import Protocol

from lab.errors import LabError
from lab.i18n import _
from lab.timers import TimerHandle, TimerHeap


class IdleTracker(Protocol):
    """What the server uses; every strategy below implements it."""

    idle: float
    interval: float

    def touch(self, key: Hashable, now: float) -> None:
        """Activity on ``key`` (data read, or write progress); starts tracking a new key."""

    def forget(self, key: Hashable) -> None:
        """``key`` is closed; an unknown key is fine."""

    def expired(self, now: float) -> list[tuple[Hashable, float]]:
        """``(key, last_activity)`` of the keys idle for ``idle`` seconds; they are no longer tracked."""

    def next_check(self, now: float) -> float | None:
        """When ``expired`` should next be called (absolute time), or None when nothing is tracked."""

    def __len__(self) -> int:
        """Keys tracked."""


class _Tracker:
    """Validated settings and the tick arithmetic the strategies share."""

    def __init__(self, idle: float, interval: float) -> None:
        for name, value in (("idle", idle), ("interval", interval)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise LabError(
                    _("heartbeat {name} must be a positive number of seconds, not {value!r}").format(
                        name=name, value=value
                    )
                )
        self.idle = float(idle)
        self.interval = float(interval)

    def __len__(self) -> int:
        """How many keys are tracked (each strategy counts its own structure)."""
        raise NotImplementedError

    def _tick_at_or_after(self, t: float) -> int:
        """The first tick ``k`` with ``k * interval >= t`` (exactly, despite float rounding)."""
        k = math.ceil(t / self.interval)
        while k * self.interval < t:
            k += 1
        return k

    def _tick_at_or_before(self, t: float) -> int:
        """The last tick ``k`` with ``k * interval <= t``."""
        k = math.floor(t / self.interval)
        while k * self.interval > t:
            k -= 1
        while (k + 1) * self.interval <= t:
            k += 1
        return k

    def __repr__(self) -> str:
        return f"<{type(self).__name__} idle={self.idle} interval={self.interval} tracked={len(self)}>"


class TimerTracker(_Tracker):
    """The tutorial's way: one one-shot timer per connection, replaced on every message."""

    def __init__(self, idle: float, interval: float) -> None:
        super().__init__(idle, interval)
        self._timers = TimerHeap()
        self._handles: dict[Hashable, TimerHandle] = {}
        self._fired: list[tuple[Hashable, float]] = []

    def touch(self, key: Hashable, now: float) -> None:
        handle = self._handles.get(key)
        if handle is not None:
            handle.cancel()  # swoole_timer_clear
        # swoole_timer_after: the timer fires exactly when the connection has been idle long
        # enough, so (as the tutorial notes) the callback needs no second check.
        self._handles[key] = self._timers.call_at(now + self.idle, self._fire, key, now)

    def _fire(self, key: Hashable, last: float) -> None:
        self._fired.append((key, last))

    def forget(self, key: Hashable) -> None:
        handle = self._handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def expired(self, now: float) -> list[tuple[Hashable, float]]:
        for handle in self._timers.pop_due(now):
            handle.run()
        fired, self._fired = self._fired, []
        for key, _fired_at in fired:
            del self._handles[key]
        return fired

    def next_check(self, now: float) -> float | None:
        return self._timers.next_deadline()

    def __len__(self) -> int:
        return len(self._handles)

    @property
    def entries(self) -> int:
        """Timers held, cancelled ones included (what the bookkeeping costs in memory)."""
        return self._timers.heap_size


class ScanTracker(_Tracker):
    """Swoole's way: a timestamp per connection, and every ``interval`` a look at all of them."""

    def __init__(self, idle: float, interval: float) -> None:
        super().__init__(idle, interval)
        self._last: dict[Hashable, float] = {}
        self._next_scan = 0.0

    def touch(self, key: Hashable, now: float) -> None:
        if not self._last:  # the periodic check starts with the first connection
            self._next_scan = now + self.interval
        self._last[key] = now

    def forget(self, key: Hashable) -> None:
        self._last.pop(key, None)

    def expired(self, now: float) -> list[tuple[Hashable, float]]:
        if now < self._next_scan or not self._last:
            return []
        self._next_scan = now + self.interval
        idle = self.idle
        out = [(key, last) for key, last in self._last.items() if last + idle <= now]
        for key, _last_seen in out:
            del self._last[key]
        return out

    def next_check(self, now: float) -> float | None:
        return self._next_scan if self._last else None

    def __len__(self) -> int:
        return len(self._last)

    @property
    def entries(self) -> int:
        """Timestamps held."""
        return len(self._last)


class LazyTracker(_Tracker):
    """Netty's ``IdleStateHandler``: store a timestamp per message; reschedule when a deadline is reached.

    The heap holds ``(tick, seq, key)``; ``seq`` identifies the key's live entry, so an entry left
    behind by ``forget`` (a heap cannot remove from its middle) is recognised and dropped. Such
    stale entries are compacted away once they are more than half of the heap.
    """

    def __init__(self, idle: float, interval: float) -> None:
        super().__init__(idle, interval)
        self._last: dict[Hashable, float] = {}
        self._seq_of: dict[Hashable, int] = {}
        self._heap: list[tuple[int, int, Hashable]] = []
        self._stale = 0
        self._seq = itertools.count()

    def touch(self, key: Hashable, now: float) -> None:
        if key not in self._last:
            seq = next(self._seq)
            self._seq_of[key] = seq
            heapq.heappush(self._heap, (self._tick_at_or_after(now + self.idle), seq, key))
        self._last[key] = now

    def forget(self, key: Hashable) -> None:
        if self._last.pop(key, None) is not None:
            del self._seq_of[key]
            self._stale += 1
            if self._stale > 64 and 2 * self._stale > len(self._heap):
                self._heap = [e for e in self._heap if self._seq_of.get(e[2]) == e[1]]
                heapq.heapify(self._heap)
                self._stale = 0

    def expired(self, now: float) -> list[tuple[Hashable, float]]:
        heap, last_of, seq_of, idle = self._heap, self._last, self._seq_of, self.idle
        target = self._tick_at_or_before(now)
        out = []
        while heap and heap[0][0] <= target:
            _, seq, key = heapq.heappop(heap)
            if seq_of.get(key) != seq:
                self._stale -= 1
                continue
            last = last_of[key]
            if last + idle <= now:
                out.append((key, last))
                del last_of[key], seq_of[key]
            else:  # touched since it was scheduled: due again one idle period after that touch
                heapq.heappush(heap, (self._tick_at_or_after(last + idle), seq, key))
        return out

    def next_check(self, now: float) -> float | None:
        heap = self._heap
        while heap and self._seq_of.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
            self._stale -= 1
        return heap[0][0] * self.interval if heap else None

    def __len__(self) -> int:
        return len(self._last)

    @property
    def entries(self) -> int:
        """Heap entries held, stale ones included."""
        return len(self._heap)


class QueueTracker(_Tracker):
    """One queue in touch order: with one ``idle`` for all, deadlines fall in that order too.

    A touch moves the key to the tail of an ``OrderedDict`` (O(1)), so the head is always the
    connection silent the longest. A check pops from the head while it is due and stops at the
    first that is not: a check that finds nothing due costs one look at the head, whatever the
    number of connections, and nothing is rescheduled or left behind. ``next_check`` rounds the
    head's deadline up to a multiple of ``interval``, so a server wakes at most once per interval.
    The order relies on ``now`` never going backwards (the module's contract).
    """

    def __init__(self, idle: float, interval: float) -> None:
        super().__init__(idle, interval)
        self._last: OrderedDict[Hashable, float] = OrderedDict()

    def touch(self, key: Hashable, now: float) -> None:
        self._last[key] = now
        self._last.move_to_end(key)

    def forget(self, key: Hashable) -> None:
        self._last.pop(key, None)

    def expired(self, now: float) -> list[tuple[Hashable, float]]:
        last_of, idle = self._last, self.idle
        out = []
        while last_of:
            if next(iter(last_of.values())) + idle > now:  # the head is not due: nothing behind it is
                break
            out.append(last_of.popitem(last=False))
        return out

    def next_check(self, now: float) -> float | None:
        if not self._last:
            return None
        last = next(iter(self._last.values()))
        return self._tick_at_or_after(last + self.idle) * self.interval

    def __len__(self) -> int:
        return len(self._last)

    @property
    def entries(self) -> int:
        """Queue entries held (one per tracked key)."""
        return len(self._last)


class WheelTracker(_Tracker):
    """A hashed timing wheel with a tick of ``interval``, rescheduled lazily.

    Slot ``tick % len(slots)`` maps each key due at that tick to its tick; a key due more than a
    revolution ahead waits in its slot for later rounds, as in Netty's ``HashedWheelTimer``. A key
    sits in exactly one slot, so ``forget`` removes it at once and nothing stale is left behind.

    Unlike ``HashedWheelTimer``, the wheel does not tick through empty slots: a small heap holds
    the ticks that got an entry (at most one per tick, so at most ``idle / interval + 2`` of
    them), and a check visits only those that are due. A server holding silent connections then
    sleeps until the first of them can expire.
    """

    MAX_SLOTS = 4096  # beyond this, rounds are cheaper than memory for slots

    def __init__(self, idle: float, interval: float) -> None:
        super().__init__(idle, interval)
        n = min(math.ceil(self.idle / self.interval) + 1, self.MAX_SLOTS)
        self._slots: list[dict[Hashable, int]] = [{} for _ in range(n)]
        self._last: dict[Hashable, float] = {}
        self._tick_of: dict[Hashable, int] = {}
        self._ticks: list[int] = []  # heap of the ticks that got an entry (stale after forget)
        self._marked: set[int] = set()  # the ticks in that heap

    def touch(self, key: Hashable, now: float) -> None:
        if key not in self._last:
            self._place(key, self._tick_at_or_after(now + self.idle))
        self._last[key] = now

    def _place(self, key: Hashable, tick: int) -> None:
        self._tick_of[key] = tick
        self._slots[tick % len(self._slots)][key] = tick
        if tick not in self._marked:
            self._marked.add(tick)
            heapq.heappush(self._ticks, tick)

    def forget(self, key: Hashable) -> None:
        if self._last.pop(key, None) is not None:
            tick = self._tick_of.pop(key)
            del self._slots[tick % len(self._slots)][key]

    def expired(self, now: float) -> list[tuple[Hashable, float]]:
        target = self._tick_at_or_before(now)
        slots, n, ticks = self._slots, len(self._slots), self._ticks
        last_of, tick_of, idle = self._last, self._tick_of, self.idle
        out = []
        while ticks and ticks[0] <= target:
            t = heapq.heappop(ticks)
            self._marked.discard(t)
            i = t % n
            slot = slots[i]
            if not slot:
                continue
            slots[i] = {}
            for key, tick in slot.items():
                if tick > target:  # a later round
                    slots[i][key] = tick
                    continue
                last = last_of[key]
                if last + idle <= now:
                    out.append((key, last))
                    del last_of[key], tick_of[key]
                else:  # touched since it was placed: move it to the slot of its new deadline,
                    # which is after ``target`` as ``last + idle > now``
                    self._place(key, self._tick_at_or_after(last + idle))
        return out

    def next_check(self, now: float) -> float | None:
        # A tick whose keys were all forgotten may still be marked: one wasted wake-up.
        return self._ticks[0] * self.interval if self._last else None

    def __len__(self) -> int:
        return len(self._last)

    @property
    def entries(self) -> int:
        """Slot entries held (one per tracked key), and the ticks marked."""
        return sum(len(s) for s in self._slots) + len(self._marked)


STRATEGIES: dict[str, type] = {
    "timer": TimerTracker,
    "scan": ScanTracker,
    "lazy": LazyTracker,
    "wheel": WheelTracker,
    "queue": QueueTracker,
}
DEFAULT_STRATEGY = "wheel"  # the least CPU with busy connections in benchmarks/heartbeat.py


def make_tracker(strategy: str | None, idle: float, interval: float) -> IdleTracker:
    """The tracker for ``strategy`` (None: ``DEFAULT_STRATEGY``); LabError on a bad name or number."""
    name = DEFAULT_STRATEGY if strategy is None else strategy
    cls = STRATEGIES.get(name)
    if cls is None:
        raise LabError(
            _("unknown heartbeat strategy {name!r}: choose one of {choices}").format(
                name=name, choices=", ".join(sorted(STRATEGIES))
            )
        )
    return cls(idle, interval)
