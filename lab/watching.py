"""The master's watcher in its loop (the tutorial's ``watchEvent``): start, poll, report, rewatch.

A change reloads the workers, or upgrades the master if it touches a preloaded module. What the
watcher could not watch is said; a deleted root is looked for until it is back, then watched anew.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from lab.config import Config
from lab.errors import LabError
from lab.events import EventSink, Kind
from lab.reactor import Reactor
from lab.timers import TimerHandle

WATCH_EVENT_PATHS = 20
REWATCH_EVERY = 0.5  # a deleted watched root: look for it again this often


class Watching:
    """One watcher fed by the master's loop; ``reload(seen)`` or ``upgrade()`` on a change."""

    def __init__(
        self,
        config: Config,
        reactor: Reactor,
        events: EventSink,
        ignored: set[str],
        preloaded: set[str],
        reload: Callable[[float], None],
        upgrade: Callable[[], None],
    ):
        from lab.watcher import Watcher  # only a watching master needs inotify

        self.config = config
        self.reactor = reactor
        self.events = events
        self.ignored = ignored  # the lab's own files: never a reason to reload
        self.preloaded = preloaded  # the source files of the preloaded modules
        self.reload = reload
        self.upgrade = upgrade
        self._timer: TimerHandle | None = None
        self._rewatch_timer: TimerHandle | None = None
        self._limited = False
        self.watcher = Watcher(config.watch, types=config.types, debounce=config.debounce)
        reactor.add_reader(self.watcher.fileno(), self._poll)
        self._report_problems()  # e.g. an unreadable directory found by the first scan
        self._timer = reactor.call_later(0, self._poll)  # lists set-up's quiet leaves at once

    def close(self) -> None:
        """Also in a forked worker: closing its copy of the inotify fd leaves the master's watches
        alone, and the watcher is marked closed, so its collection never closes a reused fd number."""
        self.watcher.close()

    def _report_problems(self) -> None:
        """Never silence: what the watcher could not watch is said, and a lost root looked for."""
        while self.watcher.problems:
            problem, text = self.watcher.problems.popleft()
            self.events.emit(Kind.WATCH_ERROR, error=text, problem=problem)
            if problem == "watch-limit" and not self._limited:
                self._limited = True  # said once: every later directory would say it again
                self.events.emit(Kind.SERVER_DEGRADED, reason="inotify watch limit", error=text)
        lost = self.watcher.lost_roots
        if lost and self._rewatch_timer is None:
            self.events.emit(Kind.SERVER_DEGRADED, reason="watched root gone", paths=lost)
            self._rewatch_timer = self.reactor.call_later(REWATCH_EVERY, self._rewatch)

    def _rewatch(self) -> None:
        """A watched root was deleted: once every path is back, watch anew and reload."""
        from lab.watcher import Watcher

        self._rewatch_timer = None
        try:
            watcher = Watcher(self.config.watch, types=self.config.types, debounce=self.config.debounce)
        except LabError:  # not back yet (or still not watchable): look again later
            self._rewatch_timer = self.reactor.call_later(REWATCH_EVERY, self._rewatch)
            return
        self._cancel_timer()
        self.reactor.remove_reader(self.watcher.fileno())
        self.watcher.close()
        self.watcher = watcher
        self.reactor.add_reader(watcher.fileno(), self._poll)
        self._timer = self.reactor.call_later(0, self._poll)
        self.events.emit(Kind.WATCH_RESTORED, paths=self.config.watch)
        self.reload(self.reactor.clock())  # what changed while unwatched

    def _poll(self) -> None:
        self._cancel_timer()
        now = self.reactor.clock()
        try:
            changes = [c for c in self.watcher.poll(now) if c.path not in self.ignored]
        except LabError as exc:  # e.g. out of inotify watches: say so, keep serving
            self.events.emit(Kind.WATCH_ERROR, error=str(exc))
            changes = []
        self._report_problems()
        if changes:
            shown = changes[:WATCH_EVENT_PATHS]  # one event line must fit in PIPE_BUF
            self.events.emit(
                Kind.WATCH_CHANGE, paths=[c.path for c in shown], kinds=[c.kind for c in shown], count=len(changes)
            )
            if any(os.path.realpath(c.path) in self.preloaded for c in changes):
                # Every forked worker inherits the master's copy of a preloaded module: only a
                # new master loads the changed file (and the app's changes with it).
                self.upgrade()
            else:
                self.reload(now)
        wait = self.watcher.timeout(now)
        if wait is not None:
            self._timer = self.reactor.call_later(wait, self._poll)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
