"""The event loop: the tutorial's ``swoole_event_add`` / ``swoole_timer_after`` / ``swoole_timer_clear``.

One ``selectors`` selector (epoll on Linux) for file descriptors, one ``TimerHeap`` for timers, and
signals turned into ordinary loop events: a signal handler only notes the signal number and the
C-level ``signal.set_wakeup_fd`` byte wakes the selector; the callback then runs in the loop, never
inside the handler (as in gunicorn's arbiter and asyncio's ``add_signal_handler``).

A callback that raises does not end the loop (gunicorn's arbiter logs and goes on): the exception
goes to ``on_error(callback, exc)``, a hook the owner sets (the default logs it with its
traceback on the ``lab.reactor`` logger), and the loop carries on with the next callback.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from lab.timers import TimerHandle, TimerHeap

_log = logging.getLogger(__name__)

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


class Repeating:
    """The handle of ``call_every``: ``cancel()`` stops it."""

    __slots__ = ("cancelled", "_timer")

    def __init__(self) -> None:
        self.cancelled = False
        self._timer: TimerHandle | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Reactor:
    """Readers, writers, timers and signals in one single-threaded loop.

    ``clock`` is the time source of the timers (``time.monotonic`` unless a test injects one).
    ``on_error(callback, exc)`` hears of every exception a callback raises (see the module doc).
    Each registered fd holds a two-slot list ``[reader, writer]`` as its selector data; removing a
    callback clears its slot in place, so an event already returned by ``select`` for a callback
    removed earlier in the same round is skipped instead of calling a stale function.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[Callable[..., Any], Exception], Any] | None = None,
    ):
        self.clock = clock
        self.on_error = on_error
        self._selector = selectors.DefaultSelector()
        self._timers = TimerHeap()
        self._running = False
        self._signal_callbacks: dict[int, Callable[[], Any]] = {}
        self._pending_signals: collections.deque[int] = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.add_reader(self._wake_r, self._on_wake)

    # --- file descriptors (swoole_event_add / swoole_event_del) ---------------------------------

    def add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
        self._add(fd, 0, partial(callback, *args) if args else callback)

    def add_writer(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
        self._add(fd, 1, partial(callback, *args) if args else callback)

    def remove_reader(self, fd: int) -> bool:
        return self._remove(fd, 0)

    def remove_writer(self, fd: int) -> bool:
        return self._remove(fd, 1)

    def remove(self, fd: int) -> None:
        """Forget both callbacks of ``fd`` (call it before closing the fd)."""
        self._remove(fd, 0)
        self._remove(fd, 1)

    def _add(self, fd: int, slot: int, callback: Callable[[], Any]) -> None:
        try:
            key = self._selector.get_key(fd)
        except KeyError:
            data: list[Callable[[], Any] | None] = [None, None]
            data[slot] = callback
            self._selector.register(fd, _READ if slot == 0 else _WRITE, data)
            return
        data = key.data
        data[slot] = callback
        mask = (_READ if data[0] else 0) | (_WRITE if data[1] else 0)
        if mask != key.events:
            self._selector.modify(fd, mask, data)

    def _remove(self, fd: int, slot: int) -> bool:
        try:
            key = self._selector.get_key(fd)
        except (KeyError, ValueError):
            return False
        data = key.data
        if data[slot] is None:
            return False
        data[slot] = None
        if data[1 - slot] is None:
            self._selector.unregister(fd)
            # A new registration of the same fd number gets a fresh list; this one stays empty.
        else:
            self._selector.modify(fd, _WRITE if slot == 0 else _READ, data)
        return True

    # --- timers (swoole_timer_after / swoole_timer_tick / swoole_timer_clear) --------------------

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        return self._timers.call_at(self.clock() + delay, callback, *args)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        return self._timers.call_at(when, callback, *args)

    def call_every(self, interval: float, callback: Callable[..., Any], *args: Any) -> Repeating:
        """Call every ``interval`` seconds at a fixed rate; ticks missed while busy are skipped."""
        if interval <= 0:
            raise ValueError("call_every needs an interval > 0")
        handle = Repeating()

        def tick(when: float) -> None:
            now = self.clock()
            following = when + interval
            if following <= now:  # the loop was busy: don't fire a burst of late ticks
                following = now + interval
            handle._timer = self._timers.call_at(following, tick, following)
            callback(*args)

        first = self.clock() + interval
        handle._timer = self._timers.call_at(first, tick, first)
        return handle

    # --- signals --------------------------------------------------------------------------------

    def add_signal_handler(self, signum: int, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` in the loop after ``signum`` arrives (main thread only)."""
        self._signal_callbacks[signum] = callback
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signum, self._note_signal)

    def remove_signal_handler(self, signum: int) -> None:
        if signum in self._signal_callbacks:
            signal.signal(signum, signal.SIG_DFL)  # may raise (not the main thread): still ours
            del self._signal_callbacks[signum]

    def _note_signal(self, signum: int, frame: object) -> None:
        # The only work done in a handler: remember which signal came. deque.append is atomic.
        self._pending_signals.append(signum)

    def _on_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        pending = self._pending_signals
        while pending:
            callback = self._signal_callbacks.get(pending.popleft())
            if callback is not None:
                try:
                    callback()
                except Exception as exc:  # the signals noted after it still get their turn
                    self._report(callback, exc)

    # --- running --------------------------------------------------------------------------------

    def run(self) -> None:
        """Run until ``stop()``."""
        self._running = True
        while self._running:
            self.run_once()

    def stop(self) -> None:
        self._running = False

    def run_once(self, timeout: float | None = None) -> None:
        """Wait for I/O at most until the next timer (or ``timeout``), then run what is due."""
        deadline = self._timers.next_deadline()
        if deadline is not None:
            wait = max(0.0, deadline - self.clock())
            timeout = wait if timeout is None else min(timeout, wait)
        for key, mask in self._selector.select(timeout):
            data = key.data
            if mask & _READ:
                reader = data[0]
                if reader is not None:
                    try:
                        reader()
                    except Exception as exc:
                        self._report(reader, exc)
            if mask & _WRITE:
                writer = data[1]
                if writer is not None:
                    try:
                        writer()
                    except Exception as exc:
                        self._report(writer, exc)
        if deadline is not None:
            for handle in self._timers.pop_due(self.clock()):
                try:
                    handle.run()
                except Exception as exc:
                    self._report(handle.callback, exc)

    def _report(self, callback: Callable[..., Any], exc: Exception) -> None:
        """A callback raised: tell ``on_error`` (or the log); the loop goes on either way."""
        if self.on_error is not None:
            try:
                self.on_error(callback, exc)
                return
            except Exception:
                _log.exception("the reactor's on_error hook raised")
        _log.error("reactor callback %r raised; the loop goes on", callback, exc_info=exc)

    @property
    def timer_count(self) -> int:
        return len(self._timers)

    def close(self) -> None:
        """Release the selector and the wake pipe; signal handlers go back to the default.

        Every step is tried and the fds are released even when one raises; then the first error
        is raised (e.g. closed from another thread, or another wakeup fd installed meanwhile).
        """
        if self._wake_r < 0:
            return
        steps = [partial(self.remove_signal_handler, s) for s in list(self._signal_callbacks)]
        errors: list[Exception] = []
        all_steps: list[Callable[[], None]] = [*steps, self._release_wakeup_fd]
        for step in all_steps:
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        self.forget()
        if errors:
            raise errors[0]

    def _release_wakeup_fd(self) -> None:
        previous = signal.set_wakeup_fd(-1)
        if previous not in (-1, self._wake_w):
            signal.set_wakeup_fd(previous)  # not ours: leave it to its owner
            raise RuntimeError("another wakeup fd was installed while this reactor ran")

    def forget(self) -> None:
        """Close this loop's fds without touching anything shared: for a child after ``fork``.

        The epoll instance is shared with the parent after a fork, so the child must not
        unregister from it (that would change the parent's registrations): it only closes its fd.
        """
        if self._wake_r < 0:
            return
        wake_r, wake_w = self._wake_r, self._wake_w
        self._wake_r = self._wake_w = -1
        try:
            self._selector.close()
        finally:
            try:
                os.close(wake_r)
            finally:
                os.close(wake_w)
