r"""The tutorial's heartbeat (§3), line by line: a one-shot timer per connection, re-armed after a read.

The PHP (its ``sendClient`` read callback and ``heartbeatCheck``)::

    if (!empty($this->timeIds[(int) $socket])) {
        swoole_timer_clear($this->timeIds[(int) $socket]);
    }
    $buffer = fread($socket, 1024);
    if (empty($buffer)) { if (feof($socket) ...) { swoole_event_del($socket); fclose($socket); return; } }
    if (!empty($buffer) && is_callable($this->onReceive)) { ($this->onReceive)($this, $socket, $buffer); }
    $this->heartbeatCheck($socket);

    protected function heartbeatCheck($socket) {
        $time = $this->config['heartbeat_check_interval'];
        if (!empty($time)) {
            $this->clients[(int) $socket] = time();
            $timeId = swoole_timer_after($time * 1000, function() use ($time, $socket) {
                if ((time() - ($this->clients[(int)$socket])) >= $time) {
                    swoole_event_del($socket); fclose($socket); unset($this->clients[(int)$socket]);
                }
            });
            $this->timeIds[(int) $socket] = $timeId;
        }
    }

Weak spots, kept: the timer is armed only after a *read*, so a client that connects and never
sends is never closed; ``time()`` is whole seconds, so with an interval under a second the check
inside the timer can be false, and then no timer is left: that connection is never closed either.
Swoole's ``swoole_timer_clear`` removes a timer from its heap at once (``SwooleTimers`` does too):
the cost is a heap push and a heap removal per message, not a pile of cancelled timers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from typing import Any


class SwooleTimers:
    """``swoole_timer_after`` / ``swoole_timer_clear`` on a given clock: an indexed binary heap,
    so a clear removes its entry at once in O(log n), as Swoole's ``swHeap_remove`` does."""

    def __init__(self) -> None:
        self._heap: list[list] = []  # [when, id, callback]; position of each id in _pos
        self._pos: dict[int, int] = {}
        self._ids = itertools.count(1)
        self.created = self.cleared = 0

    def after(self, now: float, ms: float, callback: Callable[[], Any]) -> int:
        timer_id = next(self._ids)
        self._heap.append([now + ms / 1000, timer_id, callback])
        self._pos[timer_id] = len(self._heap) - 1
        self._up(len(self._heap) - 1)
        self.created += 1
        return timer_id

    def clear(self, timer_id: int) -> bool:
        at = self._pos.pop(timer_id, None)
        if at is None:
            return False
        last = self._heap.pop()
        if at < len(self._heap):
            self._heap[at] = last
            self._pos[last[1]] = at
            self._down(self._up(at))
        self.cleared += 1
        return True

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run(self, now: float) -> int:
        """Run every timer due at ``now``, earliest first; how many ran."""
        ran = 0
        while self._heap and self._heap[0][0] <= now:
            _, timer_id, callback = self._heap[0]
            self.clear(timer_id)
            self.cleared -= 1  # fired, not cleared
            callback()
            ran += 1
        return ran

    def __len__(self) -> int:
        return len(self._heap)

    def _swap(self, i: int, j: int) -> None:
        heap = self._heap
        heap[i], heap[j] = heap[j], heap[i]
        self._pos[heap[i][1]], self._pos[heap[j][1]] = i, j

    def _up(self, i: int) -> int:
        while i and self._heap[i][:2] < self._heap[(i - 1) // 2][:2]:
            self._swap(i, (i - 1) // 2)
            i = (i - 1) // 2
        return i

    def _down(self, i: int) -> None:
        n = len(self._heap)
        while True:
            small = min((c for c in (2 * i + 1, 2 * i + 2) if c < n), key=lambda c: self._heap[c][:2], default=i)
            if self._heap[small][:2] >= self._heap[i][:2]:
                return
            self._swap(i, small)
            i = small


class TutorialHeartbeat:
    """``heartbeatCheck`` for one worker: call ``on_read`` after each read that got data.

    ``now()`` is the timers' clock (seconds, float); ``time()`` is PHP's: whole seconds.
    ``close(conn)`` is ``swoole_event_del`` + ``fclose``.
    """

    def __init__(
        self,
        interval: float,
        close: Callable[[Any], Any],  # called with a key given to connect(), e.g. an fd
        timers: SwooleTimers,
        now: Callable[[], float],
        time: Callable[[], int],
    ):
        self.interval, self.close, self.timers, self.now, self.time = interval, close, timers, now, time
        self.clients: dict[Hashable, int] = {}
        self.time_ids: dict[Hashable, int] = {}

    def before_read(self, conn: Hashable) -> None:
        """The top of the read callback: clear this connection's timer."""
        if self.time_ids.get(conn):
            self.timers.clear(self.time_ids[conn])

    def on_read(self, conn: Hashable) -> None:
        """``heartbeatCheck($socket)``, after a read that got data."""
        if not self.interval:
            return
        self.clients[conn] = self.time()
        self.time_ids[conn] = self.timers.after(self.now(), self.interval * 1000, lambda: self._check(conn))

    def _check(self, conn: Hashable) -> None:
        if conn in self.clients and self.time() - self.clients[conn] >= self.interval:
            self.close(conn)
            del self.clients[conn]
