"""A new master takes over from the old one (nginx's binary upgrade): the I/O of a handover.

The supervisor decides (``Handover`` in lab/handover.py); ``Upgrade`` carries it out for the
master: it spawns the successor with the listening socket and one end of a socketpair, reads the
successor's word (``ready``, ``failed``) and tells it ``drained``; in the new master it inherits
the socket, tells the predecessor ``ready`` (or why it failed) and, once drained, takes over the
pid file. Its own texts (a new master that could not start or exited, a word it did not expect)
are events' payloads: English, like every event's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.actions import Action
from lab.config import Config
from lab.errors import LabError
from lab.events import EventSink, Kind
from lab.pidfile import PidFile
from lab.reactor import Reactor
from lab.supervisor import Supervisor
from lab.worker import take_lines

UPGRADE_ENV = "LAB_UPGRADE"  # a new master's inheritance from the old one (JSON; see ``Predecessor``)


@dataclass(frozen=True)
class Predecessor:
    """What a new master started by an upgrade inherits from the old one (in ``UPGRADE_ENV``)."""

    pid: int  # the old master
    listen_fd: int  # the listening socket, inherited: never closed, so no client is refused
    channel_fd: int  # a socketpair end to the old master: "ready" goes out, "drained" comes in
    generation: int  # the new master's first generation (numbered on from the old master's)


def upgrade_env(config: Config, quiet: bool, predecessor: Predecessor) -> str:
    return json.dumps(
        {"config": dataclasses.asdict(config), "quiet": quiet, "predecessor": dataclasses.asdict(predecessor)}
    )


def take_upgrade_env() -> tuple[Config, bool, Predecessor] | None:
    """In a new master: what the old one handed over (removed from the environment, so that no
    process the app starts mistakes itself for a new master); None in a master started by hand."""
    text = os.environ.pop(UPGRADE_ENV, None)
    if text is None:
        return None
    handed = json.loads(text)
    return Config(**handed["config"]), handed["quiet"], Predecessor(**handed["predecessor"])


def inherit_listener(predecessor: Predecessor) -> socket.socket:
    """The old master's listening socket, never closed: no client is refused meanwhile."""
    listener = socket.socket(fileno=predecessor.listen_fd)
    listener.set_inheritable(False)
    listener.setblocking(False)
    return listener


@dataclass(frozen=True)
class _Master:
    """What ``Upgrade.attach`` is given once the master's loop exists."""

    reactor: Reactor
    events: EventSink
    supervisor: Supervisor  # fed what the other master says
    do: Callable[[list[Action]], None]  # carries out the supervisor's actions
    listener: socket.socket  # handed to a successor
    pidfile: PidFile | None  # taken over from a predecessor


class Upgrade:
    """The master's side of both ends of a handover: toward its successor (an upgrade it starts)
    and toward its predecessor (if an upgrade started it). ``attach`` once the loop runs."""

    def __init__(self, config: Config, quiet: bool, predecessor: Predecessor | None):
        self.config = config
        self.quiet = quiet
        self.predecessor = predecessor  # this master was started by an upgrade of that one
        self.successor: int | None = None  # the new master of an upgrade under way (its pid)
        self.handed_over = False  # "drained" told: the successor serves, and owns the pid file
        self._predecessor_channel: socket.socket | None = None
        self._successor_channel: socket.socket | None = None
        self._successor_inbox = b""
        self._master: _Master | None = None

    def open(self) -> None:
        """First thing in a new master: the channel to the old one, to say why if the start fails."""
        if self.predecessor is not None:
            self._predecessor_channel = socket.socket(fileno=self.predecessor.channel_fd)

    def attach(
        self,
        reactor: Reactor,
        events: EventSink,
        supervisor: Supervisor,
        do: Callable[[list[Action]], None],
        listener: socket.socket,
        pidfile: PidFile | None,
    ) -> None:
        """Once the master's loop exists: the master's side (``_Master``); a new master starts
        listening to its predecessor."""
        self._master = _Master(reactor, events, supervisor, do, listener, pidfile)
        channel, predecessor = self._predecessor_channel, self.predecessor
        if channel is not None and predecessor is not None:  # ``open`` made it: this is a new master
            channel.setblocking(False)
            reactor.add_reader(channel.fileno(), self._on_predecessor, channel, predecessor.pid)

    @property
    def _attached(self) -> _Master:
        """The master's side: every use but ``open`` and ``tell_predecessor`` comes after ``attach``."""
        if self._master is None:
            raise RuntimeError("Upgrade.attach() has not been called")
        return self._master

    # --- toward the successor (this is the old master) -----------------------------------------------

    def start_successor(self, generation: int) -> None:
        """Exec a new master with the listening socket and one end of a socketpair; ``posix_spawn``
        leaves the other fds closed, and this large process uncopied."""
        master = self._attached
        ends: list[socket.socket] = []
        inherited: list[int] = []  # inheritable copies, only for the child: closed right after
        try:
            ends.extend(socket.socketpair())
            for fd in (master.listener.fileno(), ends[1].fileno()):
                inherited.append(os.dup(fd))
                os.set_inheritable(inherited[-1], True)
            listen_fd, channel_fd = inherited
            handed = upgrade_env(self.config, self.quiet, Predecessor(os.getpid(), listen_fd, channel_fd, generation))
            argv = [sys.executable, "-m", "lab", "serve", self.config.target]
            self.successor = os.posix_spawn(
                sys.executable, argv, {**os.environ, UPGRADE_ENV: handed}, setsigmask=()
            )  # whatever this master blocks, it does not
        except OSError as exc:
            for end in ends:
                end.close()
            master.do(master.supervisor.successor_failed(f"cannot start a new master: {exc}\n"))
            return
        finally:
            for fd in inherited:
                os.close(fd)
        parent_end, child_end = ends
        child_end.close()
        parent_end.setblocking(False)
        self._successor_channel, self._successor_inbox = parent_end, b""
        master.reactor.add_reader(parent_end.fileno(), self._on_successor)

    def _on_successor(self) -> None:
        """The new master's word: ``ready``, or ``failed`` (its error); its end closed: it is gone."""
        master, channel = self._attached, self._successor_channel
        assert channel is not None  # its reader is removed when it is closed
        try:
            data = channel.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            master.reactor.remove_reader(channel.fileno())
            channel.close()
            self._successor_channel = None
            master.do(master.supervisor.successor_failed("the new master exited before it was ready\n"))
            return
        lines, self._successor_inbox = take_lines(self._successor_inbox, data)
        for line in lines:
            message = json.loads(line)
            if "ready" in message:
                master.do(master.supervisor.successor_ready())
            elif "failed" in message:
                master.do(master.supervisor.successor_failed(message["failed"]))

    def reaped(self, pid: int, how: dict[str, Any]) -> bool:
        """Whether ``pid`` was the successor (which exited before it was ready)."""
        if pid != self.successor:
            return False
        self.successor = None
        master = self._attached
        master.do(master.supervisor.successor_failed(f"the new master exited ({how}) before it was ready\n"))
        return True

    def hand_over(self) -> None:
        """No worker of this (old) master accepts any more: the new master accepts from now on,
        and owns the pid file (this one never removes it)."""
        self.handed_over = True
        if self._successor_channel is None:
            return  # it died after it said ready: nothing serves once these workers are gone
        try:
            self._successor_channel.send(b'{"drained": true}\n')
        except OSError:
            pass  # the same, found now

    # --- toward the predecessor (this is the new master) -------------------------------------------

    def tell_predecessor(self, **message: Any) -> None:
        if self._predecessor_channel is not None:
            try:
                self._predecessor_channel.send(json.dumps(message).encode() + b"\n")
            except OSError:
                pass  # the old master is gone: nobody waits for this word

    def _on_predecessor(self, channel: socket.socket, old_pid: int) -> None:
        """The old master said ``drained`` (or is gone): this master's workers start accepting,
        and the pid file names this master."""
        master = self._attached
        try:
            data = channel.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        master.reactor.remove_reader(channel.fileno())
        channel.close()
        self._predecessor_channel = None
        if data and b"drained" not in data:
            master.events.emit(Kind.UPGRADE_ERROR, error=f"unexpected word from the old master: {data[:80]!r}")
        master.do(master.supervisor.predecessor_drained())
        if master.pidfile is not None:
            try:
                master.pidfile.take_over(old_pid)
            except LabError as exc:
                master.events.emit(Kind.PIDFILE_ERROR, error=str(exc))
