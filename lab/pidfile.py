"""The master's pid file: how ``python -m lab reload`` and ``stop`` find a running server.

Created with ``O_EXCL | O_NOFOLLOW`` (two servers racing for one file: one wins; a symlink planted
at the path is refused), mode 0o644. A file naming a live lab server refuses a second start; a
stale one (dead pid, or a pid reused by another program) is replaced.
"""

from __future__ import annotations

import os
import signal
import time

from lab.errors import LabError


def read_pid(path: str) -> int:
    """The pid written in ``path``; LabError when there is no usable pid file."""
    try:
        with open(path, "rb") as f:
            text = f.read(64).decode("ascii", "replace").strip()
    except FileNotFoundError:
        raise LabError(f"no pid file at {path}: is the server running (serve --pidfile {path})?") from None
    except OSError as exc:
        raise LabError(f"cannot read pid file {path}: {exc.strerror}") from None
    if not text.isdigit() or int(text) <= 0:
        raise LabError(f"pid file {path} holds {text[:20]!r}, not a pid: remove it if no server runs")
    return int(text)


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the command name in parentheses, which may itself hold ") ".
    return stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def is_lab_server(pid: int) -> bool:
    """True when ``pid`` is alive and is a ``python -m lab serve`` master (not a reused pid)."""
    if not is_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"serve" in argv and any(a == b"lab" or a.endswith(b"reactor-lab") or a.endswith(b"lab/__main__.py")
                                    for a in argv)


class PidFile:
    """``create()`` at start, ``remove()`` at exit (only if it still names this process)."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.pid: int | None = None

    def create(self, pid: int | None = None) -> None:
        pid = os.getpid() if pid is None else pid
        for _attempt in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o644)
            except FileExistsError:
                self._clear_stale()
                continue
            except OSError as exc:
                raise LabError(f"cannot create pid file {self.path}: {exc.strerror}") from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{pid}\n")
            self.pid = pid
            return
        raise LabError(f"pid file {self.path} keeps coming back: another server is starting; try again")

    def _clear_stale(self) -> None:
        if os.path.islink(self.path):
            raise LabError(f"pid file {self.path} is a symlink: refusing it; remove it or choose another path")
        try:
            other = read_pid(self.path)
        except LabError:
            other = None
        if other is not None and other != os.getpid() and is_lab_server(other):
            raise LabError(f"a server is already running with pid {other} (pid file {self.path}); "
                           f"stop it with: python -m lab stop --pidfile {self.path}")
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def remove(self) -> None:
        if self.pid is None:
            return
        try:
            if read_pid(self.path) == self.pid:
                os.unlink(self.path)
        except (LabError, OSError):
            pass
        self.pid = None


def signal_server(path: str, signum: int) -> int:
    """Send ``signum`` to the lab server named in pid file ``path``; returns its pid."""
    pid = read_pid(path)
    if not is_lab_server(pid):
        raise LabError(f"pid {pid} in {path} is not a running lab server (stale pid file?)")
    os.kill(pid, signum)
    return pid


def stop_server(path: str, timeout: float) -> int:
    """SIGTERM the server of ``path`` and wait until it is gone; returns its pid."""
    pid = signal_server(path, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() > deadline:
            raise LabError(f"server {pid} still runs {timeout:g} s after SIGTERM; "
                           f"send SIGQUIT for an immediate stop: kill -QUIT {pid}")
        time.sleep(0.02)
    return pid
