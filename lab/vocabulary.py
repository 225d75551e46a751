"""The one vocabulary of the event stream: every kind of event and the phases of a reload.

Pure (no I/O): the supervisor, the server, the live views, the figures, the demo and the notebooks
all name events from here, and ``lab.events`` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """Every kind of event in the stream, defined once; the value is what is written on disk."""

    SERVER_START = "server.start"
    SERVER_STOPPING = "server.stopping"
    SERVER_STOP = "server.stop"
    SERVER_DEGRADED = "server.degraded"
    SERVER_RECOVERED = "server.recovered"
    SERVER_STALLED = "server.stalled"
    WATCH_CHANGE = "watch.change"
    WATCH_ERROR = "watch.error"
    WATCH_RESTORED = "watch.restored"
    RELOAD_START = "reload.start"
    RELOAD_DONE = "reload.done"
    RELOAD_FAILED = "reload.failed"
    RELOAD_SLOW = "reload.slow"
    RELOAD_SUPERSEDED = "reload.superseded"
    WORKER_STANDBY = "worker.standby"
    WORKER_START = "worker.start"
    WORKER_READY = "worker.ready"
    WORKER_EXIT = "worker.exit"
    WORKER_FAILED = "worker.failed"
    WORKER_TIMEOUT = "worker.timeout"
    WORKER_UNRESPONSIVE = "worker.unresponsive"
    WORKER_BACKOFF = "worker.backoff"
    WORKER_ACCEPT_ERROR = "worker.accept_error"
    UPGRADE_START = "upgrade.start"
    UPGRADE_READY = "upgrade.ready"
    UPGRADE_HANDED_OVER = "upgrade.handed_over"
    UPGRADE_SERVING = "upgrade.serving"
    UPGRADE_FAILED = "upgrade.failed"
    UPGRADE_REFUSED = "upgrade.refused"
    UPGRADE_ERROR = "upgrade.error"
    PRELOAD_DONE = "preload.done"
    PRELOAD_WARNING = "preload.warning"
    PIDFILE_ERROR = "pidfile.error"
    SERVER_ERROR = "server.error"
    CONN_OPEN = "conn.open"
    CONN_CLOSE = "conn.close"
    APP_ERROR = "app.error"
    # The playground's own actions and its clients' failures, on the server's timeline.
    LAB_EDIT = "lab.edit"
    LAB_SIGNAL = "lab.signal"
    LAB_KILL_WORKER = "lab.kill_worker"
    LOAD_FAILED = "load.failed"
    CHATTY_FAILED = "chatty.failed"
    SLOW_READER_FAILED = "slow_reader.failed"
    FIGURE_END = "figure.end"


@dataclass(frozen=True)
class Phase:
    """One phase of a reload: ``key`` in ``reload.done``'s ``phases`` (a monotonic time), ``step``
    the word for the step that ends at it, ``what`` what happens in that step."""

    key: str
    step: str
    what: str


# A reload's phases in order, as ``reload.done`` carries them. One definition for every view of a
# reload: the live views, the figures, the demo and the notebooks.
RELOAD_PHASES: tuple[Phase, ...] = (
    Phase("seen", "save->seen", "the change is seen (inotify + debounce)"),
    Phase("forked", "fork", "fork new workers"),
    Phase("ready", "import", "new workers import the app"),
    Phase("serving", "switch", "old workers stop accepting"),
    Phase("old_gone", "drain", "old workers drain and exit"),
)
PHASE_BY_KEY: dict[str, Phase] = {p.key: p for p in RELOAD_PHASES}
