"""The master's pid file: how ``python -m lab reload`` and ``stop`` find a running server.

It holds ``PID STARTTIME``: the master's pid and its start time (clock ticks since boot, field 22
of ``/proc/PID/stat``). A pid is reused by other programs once its server is gone; the pair is
not, so ``reload`` and ``stop`` signal only the very process that wrote the file (through a
pidfd, so it cannot be swapped between the check and the signal). A pid file of an older lab
(only a pid) still works where that is safe: its pid must be a ``lab serve`` process that was
already running when the file was written.

Created with ``O_EXCL | O_NOFOLLOW`` (two servers racing for one file: one wins; a symlink planted
at the path is refused), mode 0o644. A file naming a live server refuses a second start; a stale
one (dead pid, or a pid reused by another program) is replaced. Anything that is not a pid file
of ours -- a user's file, a FIFO, a directory, an empty file -- is refused and never removed.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import stat
import time
from dataclasses import dataclass

from lab.config import check_duration
from lab.errors import LabError
from lab.i18n import _

MAX_SIZE = 64  # bytes: a pid file of ours is far smaller
_CONTENT = re.compile(rb"\A([0-9]{1,10})(?: ([0-9]{1,20}))?\n?\Z")  # ASCII digits only
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HANDOVER_GRACE = 5.0  # s: an old master gone, its successor still has this long to take the pid file


@dataclass(frozen=True)
class PidRecord:
    """What a pid file says, and which file said it."""

    pid: int
    start: int | None  # None: an older lab's file (only a pid)
    written: float  # the file's mtime (time.time())
    inode: tuple[int, int]  # (st_dev, st_ino): remove only the file that was read


class NotAPidFile(LabError):
    """The path holds something that is not a pid file of ours (the reason is the message)."""


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name, in parentheses, may itself hold ") ".
    return data[data.rfind(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot); None when it is gone or a zombie."""
    fields = _stat_fields(pid)
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])  # field 22 of the man page; fields[0] is field 3


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    return start_time(pid) is not None


def is_lab_server(pid: int) -> bool:
    """True when ``pid`` is alive and its command line is a ``lab serve``: a hint only (any
    program may have such arguments), used for an older lab's pid file alone."""
    if not is_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"serve" in argv and any(
        a == b"lab" or a.endswith(b"reactor-lab") or a.endswith(b"lab/__main__.py") for a in argv
    )


def inspect(path: str) -> PidRecord:
    """The record in pid file ``path``; NotAPidFile when it is something else, LabError when
    it cannot be read. Opened without following a link and without blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LabError(
            _("no pid file at {path}: is the server running (serve --pidfile {path})?").format(path=path)
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotAPidFile(_("pid file {path} is a symlink").format(path=path)) from None
        raise LabError(_("cannot read pid file {path}: {reason}").format(path=path, reason=exc.strerror)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = (
                _("a directory")
                if stat.S_ISDIR(st.st_mode)
                else _("a FIFO")
                if stat.S_ISFIFO(st.st_mode)
                else _("not a regular file")
            )
            raise NotAPidFile(_("pid file {path} is {what}").format(path=path, what=what))
        data = os.read(fd, MAX_SIZE + 1)
    finally:
        os.close(fd)
    if not data:
        raise NotAPidFile(_("pid file {path} is empty (a server may be starting)").format(path=path))
    found = _CONTENT.match(data)
    if found is None or int(found[1]) == 0:
        raise NotAPidFile(
            _("{path} is not a pid file of the lab (it holds {size}{more} bytes that are not a pid)").format(
                path=path, size=len(data), more="+" if len(data) > MAX_SIZE else ""
            )
        )
    return PidRecord(int(found[1]), None if found[2] is None else int(found[2]), st.st_mtime, (st.st_dev, st.st_ino))


def read_record(path: str) -> PidRecord:
    """The record in pid file ``path``; LabError (saying what to do) when there is none."""
    try:
        return inspect(path)
    except NotAPidFile as exc:
        raise LabError(_("{exc}; check --pidfile").format(exc=exc)) from None


def read_pid(path: str) -> int:
    """The pid written in ``path``; LabError when there is no usable pid file."""
    return read_record(path).pid


def runs(record: PidRecord) -> bool:
    """True while the process that wrote ``record`` runs (not merely a process with its pid)."""
    start = start_time(record.pid)
    if start is None:
        return False
    if record.start is not None:
        return start == record.start
    # An older lab's file: its process started before the file was written (not a later
    # process given the same pid; 1 s of slack for the clocks' granularity), and is a ``lab serve``.
    started = time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - start / _CLOCK_TICKS)
    return started <= record.written + 1.0 and is_lab_server(record.pid)


def _unlink_if_same(path: str, inode: tuple[int, int]) -> None:
    """Remove ``path`` only if it is still the file that was read (not one put there since)."""
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass


class PidFile:
    """``create()`` at start, ``remove()`` at exit (only if it still names this process)."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.pid: int | None = None
        self.start: int | None = None

    def create(self, pid: int | None = None) -> None:
        pid = os.getpid() if pid is None else pid
        start = start_time(pid)
        if start is None:
            raise LabError(
                _("cannot write pid file {path}: process {pid} does not run").format(path=self.path, pid=pid)
            )
        for _attempt in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                self._clear_stale()
                continue
            except OSError as exc:
                raise LabError(
                    _("cannot create pid file {path}: {reason}").format(path=self.path, reason=exc.strerror)
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{pid} {start}\n")
            self.pid, self.start = pid, start
            return
        raise LabError(
            _("pid file {path} keeps coming back: another server is starting; try again").format(path=self.path)
        )

    def _clear_stale(self) -> None:
        try:
            record = inspect(self.path)
        except NotAPidFile as exc:
            raise LabError(_("{exc}: refusing it; remove it or choose another path").format(exc=exc)) from None
        except LabError:
            if not os.path.lexists(self.path):
                return  # removed meanwhile (its server stopped): try again
            raise
        if record.pid != os.getpid() and runs(record):
            raise LabError(
                _(
                    "a server is already running with pid {pid} (pid file {path}); stop it with: python -m "
                    "lab stop --pidfile {path}"
                ).format(pid=record.pid, path=self.path)
            )
        _unlink_if_same(self.path, record.inode)

    def take_over(self, predecessor: int) -> None:
        """Name this process in the pid file of the master it replaces (an upgrade), atomically:
        written to a temporary file beside it and renamed over it, so that a reader always finds
        one whole pid file, the old master's or this one's. A file naming anyone else is left alone.
        Its errors are a ``pidfile.error`` event's payload: English, like every event's."""
        pid = os.getpid()
        start = start_time(pid)
        try:
            record = inspect(self.path)
        except NotAPidFile as exc:
            raise LabError(f"{exc}: not taking it over") from None
        except LabError:
            if os.path.lexists(self.path):
                raise
        else:
            if record.pid != predecessor:
                raise LabError(f"pid file {self.path} names {record.pid}, not the old master {predecessor}: left alone")
        directory, name = os.path.split(self.path)
        temporary = os.path.join(directory, f".{name}.{pid}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise LabError(f"cannot take over pid file {self.path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"{pid} {start}\n")
            os.rename(temporary, self.path)
        except OSError as exc:
            os.unlink(temporary)  # ours: created just now
            raise LabError(f"cannot take over pid file {self.path}: {exc.strerror}") from None
        self.pid, self.start = pid, start

    def remove(self) -> None:
        if self.pid is None:
            return
        try:
            record = inspect(self.path)
            if (record.pid, record.start) == (self.pid, self.start):
                _unlink_if_same(self.path, record.inode)
        except (LabError, OSError):
            pass
        self.pid = self.start = None


def _open_server(path: str) -> tuple[int, int]:
    """(pid, pidfd) of the running server that wrote pid file ``path``; LabError otherwise."""
    record = read_record(path)
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        pidfd = -1
    # Checked after the pidfd is open: from here on the pid cannot go to another process.
    if pidfd < 0 or not runs(record):
        if pidfd >= 0:
            os.close(pidfd)
        raise LabError(
            _("pid {pid} in {path} is not a running lab server (stale pid file?)").format(pid=record.pid, path=path)
        )
    return record.pid, pidfd


def signal_server(path: str, signum: int) -> int:
    """Send ``signum`` to the lab server named in pid file ``path``; returns its pid."""
    pid, pidfd = _open_server(path)
    try:
        signal.pidfd_send_signal(pidfd, signum)
    finally:
        os.close(pidfd)
    return pid


def upgrade_server(path: str, timeout: float, interval: float = 0.02) -> tuple[int, int]:
    """SIGUSR2 the server of ``path`` and wait until the pid file names its new master, running;
    returns (old pid, new pid). LabError if the old master is gone without one, or on timeout."""
    check_duration("timeout", timeout)  # before the signal: an upgrade must not start unwatched
    old, pidfd = _open_server(path)
    gone_at: float | None = None
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while (now := time.monotonic()) < deadline:
            try:
                record = inspect(path)
            except LabError:
                record = None  # not there: never during an upgrade (the new file is renamed over)
            if record is not None and record.pid != old and runs(record):
                return old, record.pid
            # The old master may exit just before its successor renames the pid file: a moment's grace.
            if gone_at is not None and now - gone_at > HANDOVER_GRACE:
                raise LabError(_("server {old} stopped and no new master took over (see its events)").format(old=old))
            if select.select([pidfd], [], [], interval)[0]:  # readable: the old master has exited
                gone_at = gone_at or now
                time.sleep(interval)
    finally:
        os.close(pidfd)
    raise LabError(
        _(
            "no new master after {timeout:g} s: server {old} keeps serving "
            "(a new master that failed is an upgrade.failed event)"
        ).format(timeout=timeout, old=old)
    )


def stop_server(path: str, timeout: float) -> int:
    """SIGTERM the server of ``path`` and wait until it is gone; returns its pid."""
    check_duration("timeout", timeout)  # before the signal; its ceiling also fits poll's int ms
    pid, pidfd = _open_server(path)
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)  # readable once the process has exited
        if not poller.poll(timeout * 1000):
            raise LabError(
                _(
                    "server {pid} still runs {timeout:g} s after SIGTERM; send SIGQUIT for an immediate "
                    "stop: kill -QUIT {pid}"
                ).format(pid=pid, timeout=timeout)
            )
    finally:
        os.close(pidfd)
    return pid
