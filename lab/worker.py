"""The worker: imports the app after the fork and serves it on the shared listening socket.

Life of a worker (the master forks it; see ``master.py``):

1. ``PR_SET_PDEATHSIG``: if the master dies, even by SIGKILL, the kernel kills this worker.
2. Import the app TARGET, compiled from source (never from a possibly stale ``.pyc``), and report
   ``ready`` -- or the traceback -- to the master over the worker's channel (a socketpair).
3. Wait for ``go``: the master sends it once the old generation has stopped accepting (and it
   passed the accept gate), so old and new code never answer side by side.
4. Serve: accept, read, call the app, write what it queued (partial writes, a high-water mark).
   Each batch of accepts reads the orders from the master first, both inside the accept gate
   (lab/gate.py): a worker that was stuck in app code, or descheduled, sees its ``drain`` before it
   can accept again, and the master tells the next generation ``go`` only once it passed the gate.
   One budget (``Budget``) bounds the bytes buffered for all connections (queued output and the
   input an app keeps in ``conn.inbuf``): while it is spent, a connection holding more than its
   share (budget / connections) is not read, so greedy clients wait and newcomers still get in;
   new connections are read as soon as they are accepted, and looked for between the reads of
   bulk senders, so a round of huge pipelines does not delay them.
5. ``drain`` (from the channel or SIGTERM): stop accepting at once, let in-flight requests finish,
   close idle keep-alive connections, exit when none is left.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import json
import math
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO, cast

from lab import fresh_imports
from lab.config import Config
from lab.errors import LabError, translated
from lab.events import EventSink, Kind
from lab.fresh_imports import use_fresh_imports
from lab.gate import AcceptGate
from lab.heartbeat import IdleTracker, make_tracker
from lab.i18n import N_
from lab.reactor import Reactor
from lab.timers import TimerHandle

_libc = ctypes.CDLL(None, use_errno=True)  # loaded in the master, so a fork does not pay for it
_PR_SET_PDEATHSIG = 1
_ACCEPT_BATCH = 4  # small: the first worker awake must not take the whole queue (balance)
_ACCEPT_PAUSE = 0.1  # out of fds: wait this long before accepting again, instead of spinning
FRESH_GRACE = 2.0  # while draining: a client that connected but sent nothing gets this long
_READ_SIZE = 65536
_FIRST_READ = 4096  # on accept: enough for a request head; a bulk sender's rest waits for its turn
_NEW_FIRST_EVERY = 0.01  # between full reads of bulk senders, look for new connections this often
_HELD_BACK_CHECK = 0.25  # held-back connections are looked at this often, even if nothing frees
STANDBY = 0  # the generation of a standby (lab/standby.py) until it is told its own (from 1 on)


def take_lines(pending: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of ``pending + data``, and the partial line to keep for the next read."""
    *lines, rest = (pending + data).split(b"\n")
    return lines, rest


class Channel:
    """The worker's end of its socketpair with the master: orders in (lines), reports out (JSON)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._pending = b""  # an order not complete yet

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[bytes] | None:
        """The complete orders that arrived (non-blocking); None once the master is gone."""
        orders: list[bytes] = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return orders
            except OSError:
                data = b""
            if not data:
                return None
            lines, self._pending = take_lines(self._pending, data)
            orders += lines

    def tell(self, **message: Any) -> None:
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            pass  # the master is gone (PDEATHSIG ends this process) or not reading for now


@dataclass
class WorkerSpec:
    """What the master hands a freshly forked worker."""

    config: Config
    generation: int  # STANDBY: told its generation and index when a reload needs it
    index: int
    listener: socket.socket
    channel: socket.socket  # this worker's end of its socketpair with the master
    gate: AcceptGate  # the master's handle, inherited (the worker opens its own)
    master_pid: int
    sigmask: set[int]  # the signal mask to restore once handlers are in place
    echo: TextIO | None  # where readable log lines go (the master's choice)
    latch: AcceptGate  # the standbys' latch (lab/standby.py), the master's handle, inherited


class Connection:
    """One client. ``data`` is free for the app (e.g. a parser's state)."""

    __slots__ = (
        "id",
        "sock",
        "fd",
        "peer",
        "out",
        "closing",
        "closed",
        "fresh",
        "awaiting",
        "paused",
        "inbuf",
        "inlen",
        "data",
    )

    def __init__(self, conn_id: int, sock: socket.socket, peer: Any):
        self.id = conn_id
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.out = bytearray()  # queued output not yet taken by the kernel
        self.closing: str | None = None  # close (for this reason) once ``out`` is flushed
        self.closed = False
        self.fresh = True  # nothing received yet: a client that just connected
        self.awaiting = False  # received data not yet answered with a send
        self.paused = False  # not read: ``out`` above the high-water mark, or held back by the budget
        self.inbuf = b""  # the app's: input kept until it is a whole request (counted in the budget)
        self.inlen = 0  # len(inbuf) as last counted in the worker's budget
        self.data: Any = None

    def __repr__(self) -> str:
        return f"<Connection {self.id} fd={self.fd} peer={self.peer}>"


class Heartbeat:
    """Idle connections for ``on_idle(fd, seconds idle)``: the tracker, and one reactor timer for
    all connections, at the tracker's next check."""

    def __init__(self, tracker: IdleTracker, reactor: Reactor, on_idle: Callable[[int, float], None]):
        self.tracker = tracker
        self.reactor = reactor
        self._on_idle = on_idle
        self._timer: TimerHandle | None = None

    def touch(self, fd: int) -> None:
        self.tracker.touch(fd, self.reactor.clock())
        if self._timer is None:
            self._arm()

    def forget(self, fd: int) -> None:
        self.tracker.forget(fd)

    def _arm(self) -> None:
        # Activity only moves deadlines later, so a timer already armed is never too late.
        when = self.tracker.next_check(self.reactor.clock())
        self._timer = None if when is None else self.reactor.call_at(when, self._check)

    def _check(self) -> None:
        now = self.reactor.clock()
        for fd, last in self.tracker.expired(now):
            self._on_idle(cast(int, fd), now - last)  # the keys are the fds it was given
        self._arm()


def make_heartbeat(config: Config, reactor: Reactor, on_idle: Callable[[int, float], None]) -> Heartbeat | None:
    """The configured heartbeat (``heartbeat_idle`` and ``heartbeat_interval``, both or neither)."""
    if config.heartbeat_idle is None or config.heartbeat_interval is None:
        return None
    tracker = make_tracker(config.heartbeat_strategy, config.heartbeat_idle, config.heartbeat_interval)
    return Heartbeat(tracker, reactor, on_idle)


class Budget:
    """The one budget for the bytes a worker buffers for all its connections (``out``, and the
    input an app keeps in ``conn.inbuf``): while it is spent, a connection holding more than its
    share (budget / connections) is held back (not read) until enough is free again."""

    def __init__(self, server: Server, read: Callable[[Connection], None]):
        self.server = server
        self._read = read  # the server's reader of a connection, registered again on release
        self.size = server.config.buffer_budget
        self._resume_at = self.size * 3 // 4  # below this, held-back connections read again
        self._max_buffer = server.config.max_buffer  # above it a connection stays paused (backpressure)
        self.held = 0  # bytes in every connection's ``out`` and ``inbuf``
        self.held_back = False  # some connection is not read because of the budget
        self._timer: TimerHandle | None = None

    def share(self, conn: Connection, size: int) -> int:
        """How much ``conn`` may read now: ``size``, or less (<= 0: nothing) while the budget is
        spent. A drain reads whatever the budget: no newcomer needs the room."""
        if self.held < self.size or self.server.draining:
            return size
        return min(size, self.size // len(self.server.connections) - len(conn.out) - conn.inlen)

    def added(self, count: int) -> None:
        self.held += count

    def freed(self, count: int) -> None:
        self.held -= count
        self.release_if_room()

    def count_input(self, conn: Connection) -> None:
        """Count what the app keeps in ``conn.inbuf`` in the budget."""
        self.held += len(conn.inbuf) - conn.inlen
        conn.inlen = len(conn.inbuf)
        self.release_if_room()

    def hold_back(self, conn: Connection) -> None:
        conn.paused = True
        self.server.reactor.remove_reader(conn.fd)
        self.held_back = True
        if self._timer is None:
            self._timer = self.server.reactor.call_later(_HELD_BACK_CHECK, self._check)

    def _check(self) -> None:
        """Now and then, not only when memory frees: while draining, held-back connections are
        read whatever the budget (no newcomer needs the room; they must finish or be seen gone)."""
        self._timer = None
        self.release_if_room()
        if self.held_back:
            self._timer = self.server.reactor.call_later(_HELD_BACK_CHECK, self._check)

    def release_if_room(self) -> None:
        """Once enough of the budget is free again, read the held-back connections again."""
        server = self.server
        if not self.held_back or (self.held > self._resume_at and not server.draining):
            return
        self.held_back = False
        for conn in server.connections.values():
            if conn.paused and not conn.closed and not conn.closing and len(conn.out) <= self._max_buffer:
                conn.paused = False
                server.reactor.add_reader(conn.fd, self._read, conn)


class Server:
    """What the app's callbacks get as ``server``: ``send``, ``close``, the reactor, connections."""

    def __init__(
        self,
        reactor: Reactor,
        listener: socket.socket,
        app: Any,
        config: Config,
        generation: int,
        events: EventSink,
        conn_events: EventSink | None,
        channel: Channel | None = None,
        gate: AcceptGate | None = None,
    ):
        self.reactor = reactor
        self.channel = channel
        self.gate = gate  # with a channel: accepts only inside it, after reading the orders
        self.listener = listener
        self.app = app
        self.config = config
        self.generation = generation
        self.events = events
        self.connections: dict[int, Connection] = {}
        self.draining = False
        self.accepting = False
        self._conn_events = conn_events
        self._next_id = 0
        self._max_buffer = config.max_buffer
        self._max_output = config.max_output
        self.budget = Budget(self, self._on_readable)
        self._new_first_at = 0.0  # when to look for new connections next, between bulk reads
        self._on_receive = app.on_receive
        self._on_connect = getattr(app, "on_connect", None)
        self._on_close = getattr(app, "on_close", None)
        self._heartbeat = make_heartbeat(config, reactor, self._close_idle)

    # --- the app's API ---------------------------------------------------------------------------

    def send(self, conn: Connection, data: bytes) -> bool:
        """Queue ``data`` for ``conn``; False if the connection is closed or closing."""
        if conn.closed or conn.closing:
            return False
        if len(conn.out) + len(data) > self._max_output:
            # The app queues faster than this client takes (backpressure only stops reading it):
            # give up on the client rather than let one connection take the worker's memory.
            self._close(conn, "error", error=f"unsent output over max_output={self._max_output} bytes")
            return False
        conn.awaiting = False
        if conn.out:
            conn.out += data
            self.budget.added(len(data))
        else:
            try:
                sent = conn.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(conn, "peer")
                return False
            if sent == len(data):
                if self.draining:  # answered: judge it once the current callback is done
                    self.reactor.call_later(0, self._close_if_done, conn)
                return True
            conn.out += memoryview(data)[sent:]
            self.budget.added(len(data) - sent)
            self.reactor.add_writer(conn.fd, self._on_writable, conn)
        if len(conn.out) > self._max_buffer and not conn.paused:
            # Backpressure: stop reading a client that does not read its answers.
            conn.paused = True
            self.reactor.remove_reader(conn.fd)
        return True

    def close(self, conn: Connection) -> None:
        """Close ``conn`` once what is queued for it is flushed."""
        if conn.closed:
            return
        if conn.out:
            conn.closing = "server"
        else:
            self._close(conn, "server")

    def emit(self, kind: str, **fields: Any) -> None:
        """An app's own event into the event stream."""
        self.events.emit(kind, generation=self.generation, **fields)

    # --- accepting ---------------------------------------------------------------------------------

    def start_accepting(self) -> None:
        if not self.accepting and not self.draining and self.listener.fileno() >= 0:
            self.accepting = True
            self.reactor.add_reader(self.listener.fileno(), self._accept_new)

    def stop_accepting(self) -> None:
        """Stop at once: only this process's copy of the listening fd is closed; the queue stays."""
        if self.listener.fileno() >= 0:
            self.reactor.remove_reader(self.listener.fileno())
            self.listener.close()
        self.accepting = False

    def take_orders(self, channel: Channel) -> None:
        """Carry out the master's orders: ``go`` accepts, ``drain`` drains (so does its absence)."""
        self._carry_out(channel.read())

    def _carry_out(self, orders: list[bytes] | None) -> None:
        if orders is None:  # the master is gone
            self.drain()
            return
        for order in orders:
            if order == b"go":
                self.start_accepting()
            elif order == b"drain":
                self.drain()

    def _on_acceptable(self) -> None:
        """A batch of accepts, inside the gate and after the orders are read there (a drain sent
        while app code ran comes first); the orders, the new connections' ``on_connect`` and any
        error are seen to outside it, so the gate is never held while app code runs."""
        orders: list[bytes] | None = []
        accepted: list[tuple[socket.socket, Any]] = []
        error: OSError | None = None
        if self.gate is not None:
            self.gate.enter()
        try:
            if self.channel is not None:
                orders = self.channel.read()
            if orders is not None and b"drain" not in orders:
                error = self._accept_batch(accepted)
        finally:
            if self.gate is not None:
                self.gate.leave()
        self._carry_out(orders)
        if error is not None:
            # EMFILE and friends: the connection stays queued (the listener stays readable), so
            # pause, or the loop would spin; another worker, or this one later, takes it.
            self.events.emit(Kind.WORKER_ACCEPT_ERROR, error=error.strerror or str(error), pause=_ACCEPT_PAUSE)
            self.reactor.remove_reader(self.listener.fileno())
            self.accepting = False
            self.reactor.call_later(_ACCEPT_PAUSE, self.start_accepting)
        for sock, peer in accepted:
            self._open(sock, peer)

    def _accept_batch(self, accepted: list[tuple[socket.socket, Any]]) -> OSError | None:
        """Up to ``_ACCEPT_BATCH`` accepts into ``accepted`` (non-blocking); the error that ended them."""
        for _ in range(_ACCEPT_BATCH):
            try:
                accepted.append(self.listener.accept())
            except BlockingIOError:
                return None  # another worker took it
            except OSError as exc:
                return exc
        return None

    def _open(self, sock: socket.socket, peer: Any) -> None:
        """A connection just accepted: registered, then the app's ``on_connect``."""
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._next_id += 1
        conn = Connection(self._next_id, sock, peer)
        self.connections[conn.fd] = conn
        self.reactor.add_reader(conn.fd, self._on_readable, conn)
        if self._conn_events is not None:
            self._conn_events.emit(
                Kind.CONN_OPEN, conn=conn.id, peer=f"{peer[0]}:{peer[1]}", generation=self.generation
            )
        if self._heartbeat is not None:
            self._heartbeat.touch(conn.fd)
        if self._on_connect is not None:
            try:
                self._on_connect(self, conn)
            except BaseException as exc:  # sys.exit() or KeyboardInterrupt too: never the worker
                self._app_error(conn, "on_connect", exc)

    def _accept_new(self) -> None:
        """Accept, then read the new connections at once: their first request is usually there,
        and waiting for the next round would put them behind every busy connection."""
        newest = self._next_id
        self._on_acceptable()
        fresh = []
        for conn in reversed(self.connections.values()):  # insertion order: the new ones are last
            if conn.id <= newest:
                break
            fresh.append(conn)
        for conn in reversed(fresh):
            if not conn.closed and not conn.paused:
                self._on_readable(conn, _FIRST_READ)

    # --- reading and writing ------------------------------------------------------------------------

    def _on_readable(self, conn: Connection, size: int = _READ_SIZE) -> None:
        size = self.budget.share(conn, size)
        if size <= 0:  # over its share while the budget is spent: the others come first
            self.budget.hold_back(conn)
            return
        try:
            data = conn.sock.recv(size)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn, "peer")
            return
        if not data:
            if conn.out:  # a half-close (SHUT_WR): the peer still reads what was asked for
                conn.closing = "peer"
                self.reactor.remove_reader(conn.fd)  # EOF stays readable: stop looking at it
            else:
                self._close(conn, "peer")
            return
        conn.fresh = False
        conn.awaiting = True
        if self._heartbeat is not None:
            self._heartbeat.touch(conn.fd)
        try:
            self._on_receive(self, conn, data)
        except BaseException as exc:  # sys.exit() or KeyboardInterrupt too: never the worker
            self._app_error(conn, "on_receive", exc)
            return
        if self.draining and not conn.closed:
            self._close_if_done(conn)
        if not conn.closed and len(conn.inbuf) != conn.inlen:
            self.budget.count_input(conn)
        if len(data) == _READ_SIZE and self.accepting:
            self._new_first()

    def _new_first(self) -> None:
        """A full read: a bulk sender, whose requests can keep this round busy for long; new
        connections waiting in the listen queue are taken and served first (now and then)."""
        if self.reactor.clock() >= self._new_first_at:
            self._new_first_at = math.inf  # not again from within: the new ones' reads are full too
            self._accept_new()
            self._new_first_at = self.reactor.clock() + _NEW_FIRST_EVERY

    def _on_writable(self, conn: Connection) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn, "peer")
            return
        del conn.out[:sent]
        self.budget.freed(sent)
        if self._heartbeat is not None and sent:
            self._heartbeat.touch(conn.fd)  # a client still taking a large answer is not idle
        if conn.out:
            return
        self.reactor.remove_writer(conn.fd)
        if conn.closing:
            self._close(conn, conn.closing)
            return
        if conn.paused:
            conn.paused = False
            self.reactor.add_reader(conn.fd, self._on_readable, conn)
        if self.draining:
            self._close_if_done(conn)

    def _close_if_done(self, conn: Connection) -> None:
        """While draining: an answered, flushed connection is closed; a fresh one gets its answer first."""
        if not conn.closed and not conn.out and not conn.awaiting and not conn.fresh:
            self._close(conn, "drain")

    def _close(self, conn: Connection, reason: str, **fields: Any) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.budget.freed(len(conn.out) + conn.inlen)
        self.reactor.remove(conn.fd)
        if self._heartbeat is not None:
            self._heartbeat.forget(conn.fd)
        del self.connections[conn.fd]
        conn.sock.close()
        if self._conn_events is not None:
            self._conn_events.emit(Kind.CONN_CLOSE, conn=conn.id, reason=reason, generation=self.generation, **fields)
        if self._on_close is not None:
            try:
                self._on_close(self, conn)
            except BaseException as exc:
                self._report_app_error(conn, "on_close", exc)
        if self.draining and not self.connections:
            self.reactor.stop()

    def _app_error(self, conn: Connection, callback: str, exc: BaseException) -> None:
        """A failing callback costs its connection, never the worker."""
        self._report_app_error(conn, callback, exc)
        self._close(conn, "error")

    def _report_app_error(self, conn: Connection, callback: str, exc: BaseException) -> None:
        self.events.emit(
            Kind.APP_ERROR, conn=conn.id, callback=callback, generation=self.generation, traceback=app_traceback(exc)
        )

    # --- heartbeat -----------------------------------------------------------------------------------

    def _close_idle(self, fd: int, idle: float) -> None:
        conn = self.connections.get(fd)
        if conn is not None:
            self._close(conn, "idle", idle=round(idle, 6))

    # --- draining -------------------------------------------------------------------------------------

    def drain(self) -> None:
        """Stop accepting at once (and tell the master); finish in-flight work; close idle
        connections; stop when none is left."""
        if self.draining:
            return
        self.draining = True
        self.stop_accepting()
        for conn in list(self.connections.values()):
            # Take in a request that already arrived before judging the connection idle.
            if not conn.closed and not conn.paused:
                self._on_readable(conn)
            if not conn.closed:
                self._close_if_done(conn)
        if self.channel is not None:
            self.channel.tell(draining=True)  # once what had arrived is answered: then new code
        if self.connections:
            self.reactor.call_later(FRESH_GRACE, self._close_fresh)
        else:
            self.reactor.stop()

    def _close_fresh(self) -> None:
        """A connection that still has not sent anything (a browser's preconnect) is idle too."""
        for conn in list(self.connections.values()):
            if conn.fresh and not conn.out:
                self._close(conn, "drain")


# --- importing the app ------------------------------------------------------------------------------


def app_traceback(exc: BaseException) -> str:
    """``exc`` with only the app's frames: not the lab's loading, not importlib's."""
    report = traceback.TracebackException.from_exception(exc)
    report.stack = traceback.StackSummary.from_list(
        [
            f
            for f in report.stack
            if f.filename not in (__file__, fresh_imports.__file__, importlib.__file__)
            and not f.filename.startswith("<frozen importlib")
        ]
    )
    return "".join(report.format())


def load_app(target: str, app_dir: str) -> Any:
    """Import TARGET (``module`` or ``module:attr``; a class is instantiated) from ``app_dir`` first."""
    sys.path.insert(0, os.path.abspath(app_dir))
    use_fresh_imports()
    module_name, _, attr = target.partition(":")
    taken = sys.modules.get(module_name)
    if taken is not None:  # imported before the fork, so not the app's code: a name clash
        raise translated(
            N_("the name {module!r} is taken by {owner}; rename the app's module"),
            module=module_name,
            owner=getattr(taken, "__file__", None) or "a built-in",
        )
    app: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        try:
            app = getattr(app, part)
        except AttributeError:
            raise translated(N_("module {module!r} has no attribute {attr!r}"), module=module_name, attr=attr) from None
    if isinstance(app, type):
        app = app()
    if not callable(getattr(app, "on_receive", None)):
        raise translated(N_("app {target!r} has no on_receive(server, conn, data)"), target=target)
    return app


# --- the worker's main ----------------------------------------------------------------------------------


def prctl(option: int, arg: int) -> None:
    """``prctl(2)`` with one argument (OSError on failure)."""
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _die_with_master(master_pid: int) -> None:
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != master_pid:  # the master died before prctl took effect
        os._exit(1)


def run(spec: WorkerSpec) -> int:
    """The worker's main; returns its exit code (the caller ends the process with ``os._exit``).
    A standby (generation STANDBY) waits for its ``start`` before it imports the app."""
    _die_with_master(spec.master_pid)
    # A process group of its own (the master sets it too, whichever runs first): what the app
    # forks is in it, and the master kills the group when this worker leaves.
    os.setpgid(0, 0)
    config = spec.config
    events = EventSink(config.events, echo=spec.echo)
    conn_events = EventSink(config.events) if config.events else None
    reactor = Reactor()
    channel = Channel(spec.channel)
    gate = spec.gate.reopen()  # a description of its own: one shared with the master is its lock
    spec.gate.close()
    server: Server | None = None

    def drain() -> None:
        if server is not None:
            server.drain()
        else:
            reactor.stop()

    reactor.add_signal_handler(signal.SIGTERM, drain)
    reactor.add_signal_handler(signal.SIGQUIT, lambda: os._exit(0))
    # Ctrl-C and reload signals sent to a process group: the master decides. A worker is not in the
    # terminal's foreground group: its writes there must not stop it (a terminal with ``tostop``).
    for ignored in (signal.SIGINT, signal.SIGUSR1, signal.SIGHUP, signal.SIGTTOU, signal.SIGTTIN):
        signal.signal(ignored, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, spec.sigmask)
    if spec.generation == STANDBY and not _await_start(spec, reactor, channel, events):
        return 0
    spec.latch.close()
    events.emit(Kind.WORKER_START, generation=spec.generation, index=spec.index)
    server = _start_app(spec, reactor, channel, events, conn_events, gate)
    if server is None:
        return 1
    reactor.add_reader(channel.fileno(), server.take_orders, channel)
    if config.worker_timeout is not None:
        # The liveness signal is sent from the loop: a loop stuck in app code falls silent.
        reactor.call_every(config.worker_timeout / 4, lambda: channel.tell(alive=True))
    events.emit(Kind.WORKER_READY, generation=spec.generation, index=spec.index)
    channel.tell(ready=True)
    reactor.run()
    return 0


def _await_start(spec: WorkerSpec, reactor: Reactor, channel: Channel, events: EventSink) -> bool:
    """A standby (lab/standby.py), set up ahead of a reload, waits for ``start GENERATION INDEX``
    (then in ``spec``) before it imports anything of the app; False if stopped first (SIGTERM, or
    the master gone)."""
    events.emit(Kind.WORKER_STANDBY)
    use_fresh_imports()  # the app's loader, as ``load_app`` would install it: no import of the app
    _warm_compiler()
    latch = spec.latch.reopen()
    latch.enter()  # blocks while the master holds it: it lets every standby go at once
    latch.close()
    spec.channel.setblocking(False)

    def take_order() -> None:
        orders = channel.read()
        for order in orders or ():
            word, _, numbers = order.partition(b" ")
            if word == b"start":
                spec.generation, spec.index = (int(n) for n in numbers.split())
        if orders is None or spec.generation != STANDBY:
            reactor.stop()

    reactor.add_reader(channel.fileno(), take_order)
    reactor.run()
    reactor.remove_reader(channel.fileno())
    spec.channel.setblocking(True)  # as in a fresh worker: a long traceback waits for room
    return spec.generation != STANDBY


def _warm_compiler() -> None:
    """Compile (never run) this module's source once, as the app's import will (lab/fresh_imports.py),
    so that the memory the compiler works in is this process's own before the app's import needs
    it: not pages still shared with the master, each copied on its first write. The app's import is
    then about 1 ms shorter."""
    try:
        fresh_imports.FreshSourceLoader(__name__, __file__).get_code(__name__)
    except OSError:
        pass  # no source to compile (a frozen lab): the import only takes that much longer


def _start_app(
    spec: WorkerSpec,
    reactor: Reactor,
    channel: Channel,
    events: EventSink,
    conn_events: EventSink | None,
    gate: AcceptGate,
) -> Server | None:
    """Import the app and run its ``on_start``; None once the failure is told to the master."""
    config = spec.config
    try:
        app = load_app(config.target, config.app_dir)
    except BaseException as exc:
        if isinstance(exc, LabError):  # the event's English, and what the master says at start-up
            channel.tell(failed=f"LabError: {exc.english}\n", said=f"LabError: {exc}")
        else:
            channel.tell(failed=app_traceback(exc))
        return None

    spec.channel.setblocking(False)
    server = Server(reactor, spec.listener, app, config, spec.generation, events, conn_events, channel, gate)
    on_start = getattr(app, "on_start", None)
    if on_start is not None:
        try:
            on_start(server)
        except BaseException as exc:  # sys.exit() too: reported as the generation's failure
            channel.tell(failed=app_traceback(exc))
            return None
    return server
