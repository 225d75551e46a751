"""Timers in a heap with lazy cancellation: the pure core of ``call_later`` (no clock of its own).

As in asyncio's ``base_events`` and trio's ``_core``: a cancelled timer stays in the heap, marked,
and is skipped when it comes to the top. So that cancelled timers cannot pile up (aiohttp #8608),
the heap is rebuilt without them once they are more than half of it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class TimerHandle:
    """One scheduled call; ``cancel()`` is O(1)."""

    __slots__ = ("when", "callback", "args", "cancelled", "_seq", "_heap")

    def __init__(self, when: float, seq: int, callback: Callable[..., Any], args: tuple, heap: TimerHeap):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False
        self._seq = seq
        self._heap: TimerHeap | None = heap

    def __lt__(self, other: TimerHandle) -> bool:
        return (self.when, self._seq) < (other.when, other._seq)

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            if self._heap is not None:
                self._heap._cancelled_one()
                self._heap = None

    def run(self) -> None:
        self.callback(*self.args)

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"<TimerHandle when={self.when:.3f} {getattr(self.callback, '__name__', self.callback)}{state}>"


class TimerHeap:
    """Timers ordered by deadline (ties in scheduling order). Times are whatever clock you use."""

    def __init__(self) -> None:
        self._heap: list[TimerHandle] = []
        self._seq = itertools.count()
        self._cancelled = 0

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        handle = TimerHandle(when, next(self._seq), callback, args, self)
        heapq.heappush(self._heap, handle)
        return handle

    def next_deadline(self) -> float | None:
        """When the earliest live timer is due, or None when there is none."""
        self._drop_cancelled_top()
        return self._heap[0].when if self._heap else None

    def pop_due(self, now: float) -> list[TimerHandle]:
        """Removes and returns the live timers due at ``now``, earliest first."""
        due = []
        heap = self._heap
        while heap and heap[0].when <= now:
            handle = heapq.heappop(heap)
            if handle.cancelled:
                self._cancelled -= 1
                continue
            handle._heap = None  # popped: a late cancel() must not count against this heap
            due.append(handle)
        return due

    def __len__(self) -> int:
        """Live (not cancelled) timers."""
        return len(self._heap) - self._cancelled

    @property
    def heap_size(self) -> int:
        """Entries held, cancelled ones included: what memory the heap costs."""
        return len(self._heap)

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
            self._heap = [h for h in self._heap if not h.cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _drop_cancelled_top(self) -> None:
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
