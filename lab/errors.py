"""Errors that a user can act on: each message says what went wrong and what to do."""


class LabError(Exception):
    """A clear, one-line error for the user (bad path, watch limit, port in use, ...)."""


class StoppedWhileStarting(BaseException):
    """SIGTERM, SIGINT or SIGQUIT while the master was starting (preloading, say): it stops there,
    whatever it was doing (an import in progress is not a failed import)."""
