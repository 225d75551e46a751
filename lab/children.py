"""The master's children: forking a worker (or a standby) with its channel, hearing it, reaping.

``Master`` (lab/master.py) decides nothing here: it calls ``fork_worker`` for each worker it spawns,
reads each ``WorkerProcess``'s channel, and reaps with ``reap``; every process group it kills goes
through ``kill_group``, and at its stop ``kill_all`` and ``kill_orphans`` leave nothing behind.

Each worker has a process group of its own, killed when the worker leaves, and the master is a
child subreaper (``become_subreaper``): whatever the app starts dies with its worker, or at the
latest with the server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lab import worker

HANDLED_SIGNALS = (
    signal.SIGCHLD,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
)
_PR_SET_CHILD_SUBREAPER = 36
ORPHAN_ROUNDS = 10  # at stop: orphans killed, then the orphans they leave, this many times at most
MakeSpec = Callable[[socket.socket, set[int]], worker.WorkerSpec]  # (its channel, mask) -> its spec


@dataclass(eq=False)
class WorkerProcess:
    """The master's side of a worker: its pid and its channel (the supervisor keeps the rest)."""

    pid: int
    channel: socket.socket  # the master's end of the socketpair
    inbox: bytes = b""  # a partial line read from the channel
    closed: bool = False  # the worker's end is closed: it is gone (SIGCHLD follows)

    def receive(self) -> tuple[list[dict[str, Any]], bool]:
        """What the worker said since the last call (non-blocking): its messages in order, and
        whether anything came at all (a sign of life). Once its end is closed, ``closed`` is set;
        what it said before (a traceback, say) is still returned."""
        messages: list[dict[str, Any]] = []
        heard = False
        while True:
            try:
                data = self.channel.recv(65536)
            except BlockingIOError:
                return messages, heard
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return messages, heard
            heard = True
            lines, self.inbox = worker.take_lines(self.inbox, data)
            messages += [json.loads(line) for line in lines]


def become_subreaper() -> None:
    """Processes the app starts and leaves behind become this master's children, not init's: it
    can find and kill them, so none keeps the port (or anything else) after a stop."""
    worker.prctl(_PR_SET_CHILD_SUBREAPER, 1)


def fork_worker(
    spec: Callable[[socket.socket, set[int]], worker.WorkerSpec], in_child: Callable[[], None]
) -> WorkerProcess:
    """Fork a worker: in the child, ``in_child`` drops what is the master's, then the worker runs
    ``spec(its channel, the signal mask to restore)`` and exits; in the master, its side."""
    parent_end, child_end = socket.socketpair()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would print the parent's buffered text again
    # Signals stay blocked across the fork, so none reaches the child while it still has the
    # master's handlers (which would wake the master's loop with the child's signal).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        parent_end.close()
        child_end.close()
        raise
    if pid == 0:
        code = 1
        try:
            parent_end.close()
            for signum in HANDLED_SIGNALS:  # the master's handlers (never unregistered: its loop's)
                signal.signal(signum, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            in_child()
            code = worker.run(spec(child_end, mask))
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        os.setpgid(pid, pid)  # the worker does it too: its group exists whoever runs first
    except OSError:
        pass  # it has already exited (SIGCHLD tells)
    child_end.close()
    parent_end.setblocking(False)
    return WorkerProcess(pid, parent_end)


def kill_group(pid: int) -> None:
    """SIGKILL a worker and every process its app started in the worker's process group."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # no group (yet): the worker alone
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_all(children: list[WorkerProcess]) -> None:
    """At the end: every worker (or standby) killed with its group, reaped, its channel closed."""
    for w in children:
        kill_group(w.pid)
    for w in children:
        try:
            os.waitpid(w.pid, 0)
        except ChildProcessError:
            pass
        w.channel.close()


def _children() -> list[int]:
    """This single-threaded process's children (Linux's /proc/PID/task/TID/children)."""
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: the groups must do
        return []


def kill_orphans(keep: int | None) -> None:
    """At the end: the app's processes that left their worker's group (``setsid``) are this
    master's children by now; kill them (all but ``keep``), and the orphans they leave in turn."""
    for _ in range(ORPHAN_ROUNDS):
        orphans = [pid for pid in _children() if pid != keep]
        if not orphans:
            return
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in orphans:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def describe_exit(status: int) -> dict[str, Any]:
    """How a child ended, as an event says it: ``{"code": n}`` or ``{"signal": name}``."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return {"signal": signal.Signals(-code).name}
    return {"code": code}


def reap(has_group: Callable[[int], bool]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every child that exited, reaped, with how it ended: workers (with what their app left in
    their process group: ``has_group``) and orphans of the app adopted by this subreaper."""
    while True:
        try:  # WNOWAIT: a worker's pid, so its group id, stays taken until the group is killed
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None:
            return
        if has_group(info.si_pid):
            kill_group(info.si_pid)
        try:
            pid, status = os.waitpid(info.si_pid, 0)
        except ChildProcessError:
            continue
        yield pid, describe_exit(status)
