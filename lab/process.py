"""One driver of a ``python -m lab serve`` subprocess, for the playground, the tests, the benchmarks
and the demo: build its command line, start it, tail its events, wait for an event with a
deadline, tell its serving workers, stop it.

    server = ServerProcess(serve_argv("hello", events, workers=2, bind="127.0.0.1:0"), events)
    server.start()                                  # waits for server.start, then generation 1
    server.wait_for(Kind.RELOAD_DONE, generation=2)
    server.stop()

Waiting ends early, with a LabError that quotes the server's last output, when the server exits
before the event comes: a test or a notebook cell never waits out its whole deadline for a
process that is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from lab.errors import LabError
from lab.events import Event, EventTail, Kind, matches
from lab.i18n import _, language

# Run in the new process before it becomes the server: die with the parent, then exec.
_DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("the notebook that started this server is gone")
os.execv(sys.argv[2], sys.argv[2:])
"""


def serve_argv(target: str, events: str | os.PathLike[str], **options: Any) -> list[str]:
    """``python -m lab serve TARGET --events EVENTS`` and ``options`` in order: ``app_dir="x"``
    is ``--app-dir x``, True a bare flag (``quiet=True``: ``--quiet``), None or False left out."""
    argv = [sys.executable, "-m", "lab", "serve", target, "--events", os.fspath(events)]
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "the condition") -> Any:
    """Poll ``condition`` until it returns something true; LabError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise LabError(_("{what} did not happen within {timeout:g} s").format(what=what, timeout=timeout))
        time.sleep(0.01)
    return value


def terminate(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM (a server's graceful stop), SIGKILL if it is not gone within ``timeout``; reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class ServerProcess:
    """A server subprocess (``argv``) and the events it appends to ``events_path``.

    ``output``: a file that gets the server's stderr (and its stdout with ``merge_stdout``; else
    stdout is dropped). ``own_session``: the server leads a session of its own (an interrupted
    notebook cell's SIGINT cannot reach it), and ``stop`` clears that session. ``die_with_parent``:
    ``PR_SET_PDEATHSIG`` is set before the exec, so this process dying stops the server (it fires
    when the *thread* that started it ends: start from the main thread).
    """

    def __init__(
        self,
        argv: Sequence[str],
        events_path: str | os.PathLike[str],
        *,
        cwd: str | os.PathLike[str],
        output: str | os.PathLike[str] | None = None,
        merge_stdout: bool = False,
        own_session: bool = False,
        die_with_parent: bool = False,
    ):
        self.argv = list(argv)
        self.events_path = Path(events_path)
        self.cwd = cwd
        self.output_path = None if output is None else Path(output)
        self.merge_stdout = merge_stdout
        self.own_session = own_session
        self.die_with_parent = die_with_parent
        self.tail = EventTail(self.events_path)
        self.events: list[Event] = []  # every event read so far, in order
        self.proc: subprocess.Popen | None = None
        self.address: tuple[str, int] | None = None

    # --- the process -----------------------------------------------------------------------------

    def start(self, wait: bool = True, timeout: float = 30.0, **popen: Any) -> Self:
        """Start the server (``popen``: more ``subprocess.Popen`` arguments, e.g. ``user``, ``env``);
        with ``wait``, until its first generation serves (LabError if it cannot, the server stopped)."""
        after = len(self.read())
        self.spawn(**popen)
        if wait:
            try:
                self.wait_ready(timeout, after)
            except LabError:
                self.stop()
                raise
        return self

    def spawn(self, **popen: Any) -> subprocess.Popen:
        """Start the process; it speaks the language of this one (``LAB_LANG``), unless ``env`` says."""
        argv = self.argv
        popen.setdefault("env", {**os.environ, "LAB_LANG": language()})
        if self.die_with_parent:
            argv = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
        out = open(self.output_path, "ab") if self.output_path is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out if self.merge_stdout else subprocess.DEVNULL,
                stderr=out,
                start_new_session=self.own_session,
                **popen,
            )
        finally:
            if not isinstance(out, int):  # subprocess.DEVNULL is an int
                out.close()
        return self.proc

    def wait_ready(self, timeout: float = 30.0, after: int = 0) -> tuple[str, int]:
        """Wait for ``server.start`` (its address) and generation 1 serving; the address."""
        started = self.wait_for(Kind.SERVER_START, timeout, after=after)
        host, _, port = started["bind"].rpartition(":")
        self.address = (host.strip("[]"), int(port))
        self.wait_for(Kind.RELOAD_DONE, timeout, after=after, generation=1)
        return self.address

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def port(self) -> int:
        if self.address is None:
            raise LabError(_("the server is not started"))
        return self.address[1]

    def send_signal(self, signum: int) -> None:
        if self.proc is None:
            raise LabError(_("the server is not started"))
        os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a graceful stop), SIGKILL after ``timeout``; reaped. In its own session, what is
        left of that session (workers of a master killed mid-fork) is killed too. The exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.own_session:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        elif proc.poll() is None:
            proc.kill()
        code = proc.wait()
        self.read()
        return code

    def output(self, lines: int | None = None) -> str:
        """What the server printed to ``output`` (its last ``lines`` lines)."""
        try:
            text = self.output_path.read_text(errors="replace") if self.output_path is not None else ""
        except FileNotFoundError:
            return ""
        return text if lines is None else "\n".join(text.strip().splitlines()[-lines:])

    # --- its events ------------------------------------------------------------------------------

    def read(self) -> list[Event]:
        """Every event so far (the list grows in place)."""
        self.events.extend(self.tail.read())
        return self.events

    def find(self, kind: str, after: int = 0, **match: Any) -> list[Event]:
        """The events of ``kind`` with fields equal to ``match``, after index ``after`` of ``events``."""
        return [e for e in self.read()[after:] if matches(e, kind, match)]

    def check(
        self,
        kind: str,
        after: int = 0,
        count: int = 1,
        match: dict[str, Any] | None = None,
        give_up: Callable[[], str | None] | None = None,
    ) -> Event | None:
        """The ``count``-th matching event if it came; None if it may still come; LabError if it
        cannot: the server exited, or ``give_up`` says why (e.g. the reload failed)."""
        hits = self.find(kind, after, **(match or {}))
        if len(hits) >= count:
            return hits[count - 1]
        why = give_up() if give_up is not None else None
        if why is None and self.proc is not None and self.proc.poll() is not None:
            hits = self.find(kind, after, **(match or {}))  # written just before it exited?
            if len(hits) >= count:
                return hits[count - 1]
            why = _("the server exited with code {code}:\n{output}").format(
                code=self.proc.returncode, output=self.output(5)
            )
        if why is not None:
            raise LabError(_("waiting for {kind}: {why}").format(kind=kind, why=why))
        return None

    def wait_for(
        self,
        kind: str,
        timeout: float = 10.0,
        after: int = 0,
        count: int = 1,
        give_up: Callable[[], str | None] | None = None,
        **match: Any,
    ) -> Event:
        """Block until the ``count``-th event of ``kind`` with fields equal to ``match`` (after index
        ``after``) arrives, and return it; LabError at ``timeout``, or as soon as it cannot come."""
        deadline = time.monotonic() + timeout
        while (found := self.check(kind, after, count, match, give_up)) is None:
            if time.monotonic() > deadline:
                with_match = _(" with {match}").format(match=match) if match else ""
                raise LabError(
                    _("no {kind} event{with_match} within {timeout:g} s; last events: {last}").format(
                        kind=kind, with_match=with_match, timeout=timeout, last=[e["kind"] for e in self.events[-10:]]
                    )
                )
            time.sleep(0.01)
        return found

    def wait_events(
        self, predicate: Callable[[list[Event]], Any], timeout: float = 10.0, what: str = "the condition"
    ) -> Any:
        """Block until ``predicate(events)`` is true, and return its value; LabError at ``timeout``,
        or when the server exits first."""
        deadline = time.monotonic() + timeout
        while not (value := predicate(self.read())):
            if self.proc is not None and self.proc.poll() is not None:
                if value := predicate(self.read()):  # written just before it exited?
                    return value
                raise LabError(
                    _("waiting for {what}: the server exited with code {code}:\n{output}").format(
                        what=what, code=self.proc.returncode, output=self.output(5)
                    )
                )
            if time.monotonic() > deadline:
                raise LabError(
                    _("{what} did not happen within {timeout:g} s; last events: {last}").format(
                        what=what, timeout=timeout, last=[e["kind"] for e in self.events[-10:]]
                    )
                )
            time.sleep(0.01)
        return value

    def worker_pids(self, generation: int | None = None) -> list[int]:
        """Workers started (of ``generation``, or of any) that have not exited."""
        exited = {e["pid"] for e in self.find(Kind.WORKER_EXIT)}
        return [
            e["pid"]
            for e in self.find(Kind.WORKER_START)
            if (generation is None or e.get("generation") == generation) and e["pid"] not in exited
        ]

    def serving_pids(self) -> list[int]:
        """Pids of the ready workers of the serving generation (the last one done) that have not exited."""
        done = self.find(Kind.RELOAD_DONE)
        if not done:
            return []
        exited = {e["pid"] for e in self.find(Kind.WORKER_EXIT)}
        return [
            e["pid"] for e in self.find(Kind.WORKER_READY, generation=done[-1]["generation"]) if e["pid"] not in exited
        ]
