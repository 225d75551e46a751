"""Errors that a user can act on: each message says what went wrong and what to do."""

from typing import Any

from lab.i18n import _


class LabError(Exception):
    """A clear, one-line error for the user (bad path, watch limit, port in use, ...).

    ``english``: the same in English, for an event's payload (English, like every event's)."""

    def __init__(self, message: str = "", english: str | None = None) -> None:
        super().__init__(message)
        self.english = message if english is None else english


def translated(message: str, **fields: Any) -> LabError:
    """A LabError saying ``message`` (marked ``N_`` where it is written) in the learner's language,
    filled in with ``fields``; its English goes into events."""
    return LabError(_(message).format(**fields), message.format(**fields))


class StoppedWhileStarting(BaseException):
    """SIGTERM, SIGINT or SIGQUIT while the master was starting (preloading, say): it stops there,
    whatever it was doing (an import in progress is not a failed import)."""
