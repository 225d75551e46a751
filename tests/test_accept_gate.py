"""The accept gate (lab/gate.py): no old worker accepts once the new generation answers, even one
held between reading its orders and accepting (ptrace holds it there, at ``accept4``'s entry)."""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
import signal
import socket

import pytest
from server_helpers import wait_until, write_app

from lab.events import Kind
from lab.gate import AcceptGate

# An app whose answers say which code sent them, and when (CLOCK_MONOTONIC: one clock for all);
# ``hold`` keeps a worker of the new code (v2) in app code for a while after its answer.
TIMED_APP = """\
import os
import time

TEXT = {text!r}


def on_receive(server, conn, data):
    if data.strip() == b"pid":
        server.send(conn, b"%d\\n" % os.getpid())
        return
    server.send(conn, ("%s %r\\n" % (TEXT, time.monotonic())).encode())
    if data.strip() == b"hold" and TEXT == "v2":
        time.sleep(3)
"""

_ACCEPT4 = {"x86_64": 288, "aarch64": 242}.get(platform.machine())
_PTRACE_SYSCALL, _PTRACE_DETACH, _PTRACE_SEIZE, _PTRACE_INTERRUPT = 24, 17, 0x4206, 0x4207
_PTRACE_GET_SYSCALL_INFO, _PTRACE_O_TRACESYSGOOD, _WALL = 0x420E, 1, 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def _ptrace(request: int, pid: int, addr: int = 0, data: int | ctypes.Array = 0) -> int:
    result = _libc.ptrace(request, pid, addr, data)
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _hold_at_accept(pid: int, connect) -> None:
    """Stop ``pid`` (traced) at the entry of its next ``accept4``: ``connect()`` makes one come."""
    try:
        _ptrace(_PTRACE_SEIZE, pid, 0, _PTRACE_O_TRACESYSGOOD)
    except PermissionError as exc:  # a seccomp profile or Yama's ptrace_scope 3
        pytest.skip(f"ptrace is refused here: {exc}")
    _ptrace(_PTRACE_INTERRUPT, pid)
    os.waitpid(pid, _WALL)
    connect()
    info = ctypes.create_string_buffer(88)  # struct ptrace_syscall_info
    deliver = 0
    for _ in range(100_000):
        _ptrace(_PTRACE_SYSCALL, pid, 0, deliver)
        _, status = os.waitpid(pid, _WALL)
        assert os.WIFSTOPPED(status), f"the worker ended: {status:#x}"
        stop, deliver = os.WSTOPSIG(status), 0
        if stop == signal.SIGTRAP | 0x80:
            _ptrace(_PTRACE_GET_SYSCALL_INFO, pid, len(info), info)
            if info.raw[0] == 1 and int.from_bytes(info.raw[24:32], "little") == _ACCEPT4:
                return  # in its syscall-entry stop: the orders were read, the accept not done
        elif status >> 16 == 0:  # a signal for it (not a ptrace event): passed on
            deliver = stop
    raise AssertionError("the worker never called accept4")


def _answer(s: socket.socket) -> tuple[str, float]:
    text, when = s.makefile("rb").readline().decode().split()
    return text, float(when)


def test_the_master_passes_the_gate_only_when_no_worker_is_inside():
    gate = AcceptGate.create()
    inside = gate.reopen()  # a worker's own description (a shared one would be the same lock)
    try:
        inside.enter()
        assert not gate.try_pass(), "passed while a worker was inside"
        inside.leave()
        assert gate.try_pass()
        inside.enter()  # the master holds it only for an instant: the worker gets in again
        inside.leave()
    finally:
        inside.close()
        gate.close()


def test_a_held_gate_keeps_every_worker_out_until_it_is_left():
    """Held (the standbys' latch, lab/standby.py): nobody enters; left: everybody does."""
    gate = AcceptGate.create()
    waiting = [gate.reopen() for _ in range(2)]
    try:
        assert gate.hold()
        for other in waiting:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        gate.leave()
        for other in waiting:
            other.enter()
        assert not gate.hold(), "held while workers are inside"
        for other in waiting:
            other.leave()
        assert gate.hold()
    finally:
        for other in waiting:
            other.close()
        gate.close()


@pytest.mark.skipif(_ACCEPT4 is None, reason="accept4's syscall number is known for x86_64 and aarch64")
def test_an_old_worker_held_before_its_accept_never_answers_after_the_new_code(serve, tmp_path):
    write_app(tmp_path, "v1", source=TIMED_APP)
    server = serve(app_dir=tmp_path, workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"pid\n")
        old = int(s.makefile("rb").readline())
    clients: list[socket.socket] = []

    def connect(line: bytes = b"hi") -> None:
        clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        clients[-1].sendall(line + b"\n")

    try:
        _hold_at_accept(old, connect)  # the first client makes it accept
        try:
            write_app(tmp_path, "v2", source=TIMED_APP)
            server.signal(signal.SIGUSR1)
            server.wait_event(Kind.WORKER_UNRESPONSIVE, timeout=30, pid=old)
            # The new generation may answer only once the old worker cannot accept; if it does,
            # it then stays in app code, so the next client is left to the old worker, if it can.
            connect(b"hold")
            clients[1].settimeout(2)
            try:
                early = [_answer(clients[1])]
            except TimeoutError:
                early = []  # not answered while the old worker is held: the gate holds up ``go``
            connect()
        finally:
            _ptrace(_PTRACE_DETACH, old)
        clients[1].settimeout(10)
        answers = early + [_answer(s) for s in clients if s is not clients[1] or not early]
        old_times = [when for text, when in answers if text == "v1"]
        new_times = [when for text, when in answers if text == "v2"]
        assert not old_times or not new_times or max(old_times) < min(new_times), (
            f"old code answered after the new code did: {answers}"
        )
        wait_until(lambda: server.ask().startswith("v2"), 20, message="the new code answers")
    finally:
        for s in clients:
            s.close()
