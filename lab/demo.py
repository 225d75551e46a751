"""``python -m lab demo``: the tutorial's story in a terminal, on a real server.

    reload     start the server, ask it (as the tutorial's curl), edit the app K times and show
               each answer change with the reload's phases in ms; a syntax error is refused
               while the old code keeps answering, then fixed; clients run throughout and
               none of their requests fails.
    heartbeat  silent and chatty clients against a short heartbeat: the silent ones are closed
               after their idle time, the chatty ones stay.

Built on ``lab.playground.Lab``, so the notebooks and the terminal tell one story. Everything
started here is stopped on the way out, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from lab.errors import LabError
from lab.events import RELOAD_PHASES, Event, Kind
from lab.i18n import _, set_language
from lab.playground import EXAMPLE_APP, Lab, wait_until

SCENARIOS = ("reload", "heartbeat")
# Greeting.text's line in hello.py, whatever it says: the served copy comes from the tracked
# lab/examples/hello.py, which a reader may have edited.
GREETING_LINE = re.compile(r"^(?P<indent>[ \t]+)text[ \t]*=.*$", re.MULTILINE)
HEARTBEAT_IDLE, HEARTBEAT_INTERVAL = 1.0, 0.25

_COLOURS = {"title": "1;36", "ok": "32", "bad": "31", "dim": "2", "value": "1"}


class Say:
    """Readable progress lines; ANSI colour only when the stream is a terminal."""

    def __init__(self, out: TextIO, pace: float = 0.0):
        self.out = out
        self.colour = out.isatty()
        self.pace = pace
        self.t0 = time.monotonic()

    def beat(self) -> None:
        """A pause between steps, so a class can read along (none when ``pace`` is 0)."""
        if self.pace:
            time.sleep(self.pace)

    def paint(self, text: str, style: str) -> str:
        return f"\033[{_COLOURS[style]}m{text}\033[0m" if self.colour else text

    def __call__(self, text: str = "", style: str | None = None) -> None:
        stamp = self.paint(f"[{time.monotonic() - self.t0:5.1f}s]", "dim")
        print(f"{stamp} {self.paint(text, style) if style else text}", file=self.out, flush=True)

    def title(self, text: str) -> None:
        print(file=self.out)
        self(f"== {text} ==", "title")


def run(
    scenario: str = "all",
    *,
    workers: int = 2,
    edits: int = 3,
    port: int | None = None,
    pace: float | None = None,
    out: TextIO = sys.stdout,
    lang: str | None = None,
) -> int:
    """Play ``scenario`` (``reload``, ``heartbeat`` or ``all``); returns an exit code.

    ``pace``: seconds of pause between steps (default: 0.8 on a terminal, 0 otherwise); ``lang``:
    ``en`` or ``zh`` (default: the one ``lab.i18n`` detects).
    """
    if lang is not None:
        set_language(lang)
    if scenario not in (*SCENARIOS, "all"):
        raise LabError(
            _("no demo {scenario!r}: choose one of {names} or all").format(
                scenario=scenario, names=", ".join(SCENARIOS)
            )
        )
    if not (1 <= workers <= 32 and 1 <= edits <= 50):
        raise LabError(
            _("--workers {workers} --edits {edits}: give 1-32 workers and 1-50 edits for a demo").format(
                workers=workers, edits=edits
            )
        )
    if port is not None and not 0 <= port <= 65535:
        raise LabError(_("--port {port} is not a TCP port: give 1-65535 (or 0 for any free port)").format(port=port))
    if pace is not None and not 0 <= pace <= 10:
        raise LabError(_("--pace {pace:g} is out of range: give 0-10 seconds").format(pace=pace))
    say = Say(out, pace if pace is not None else (0.8 if out.isatty() else 0.0))
    try:
        with _sigterm_as_interrupt():
            if scenario in ("reload", "all"):
                reload_story(say, workers=workers, edits=edits, port=port)
            if scenario in ("heartbeat", "all"):
                heartbeat_story(say, workers=workers, port=port)
    except KeyboardInterrupt:
        # The ``with Lab`` blocks have stopped their servers while this unwound.
        say.title(_("interrupted: every server and client started by the demo is stopped"))
        return 130
    say.title(_("done: every server and client started by the demo is stopped"))
    return 0


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the ``with Lab`` blocks stop their servers either way."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _lab(say: Say, port: int | None, **options: Any) -> Lab:
    # The last --bind wins in the server's argparse: a fixed port replaces the playground's :0.
    extra = ("--bind", f"127.0.0.1:{port}") if port else ()
    lab = Lab(extra_args=extra, **options)
    say(
        _(
            "server pid {pid} serving {target}.py on 127.0.0.1:{port} with {workers} workers (scratch dir {root})"
        ).format(pid=lab.pid, target=lab.target, port=lab.port, workers=options.get("workers", 2), root=lab.root)
    )
    return lab


def http_get(address: tuple[str, int]) -> str:
    """What ``curl http://HOST:PORT/`` prints: the body of one HTTP/1.1 GET."""
    with socket.create_connection(address, timeout=5.0) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _sep, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise LabError(
            _("the server answered {status!r} to GET /").format(status=head.splitlines()[0] if head else b"nothing")
        )
    return body.decode(errors="replace").strip()


def phase_line(done: dict[str, Any], saved: float) -> str:
    """``save->seen 21 | fork 2 | import 38 | switch 0 | drain 4 | total 65 ms`` for a reload.done:
    each step of ``RELOAD_PHASES``, the first from the save."""
    phases = done.get("phases") or {}
    parts = []
    previous: Any = saved
    for phase in RELOAD_PHASES:
        value = phases.get(phase.key)
        if isinstance(value, (int, float)) and isinstance(previous, (int, float)):
            parts.append(f"{_(phase.step)} {(value - previous) * 1000:.0f}")
            previous = value
        elif phase is RELOAD_PHASES[0]:
            previous = None  # not seen: the later steps have no start
    if isinstance(previous, (int, float)):
        parts.append(_("total {ms:.0f} ms").format(ms=(previous - saved) * 1000))
    return " | ".join(parts)


def set_greeting(lab: Lab, value: str) -> None:
    """Make the served app's ``Greeting.text`` line ``text = value`` (``value`` is Python source)."""
    name = f"{lab.target}.py"
    source = lab.read(name)
    line = GREETING_LINE.search(source)
    if line is None:
        raise LabError(
            _(
                "no 'text = ...' line in {name}, the copy of {app} the demo edits: "
                "put Greeting.text back (git checkout {app})"
            ).format(name=name, app=EXAMPLE_APP)
        )
    lab.edit(name, f"{source[: line.start()]}{line['indent']}text = {value}{source[line.end() :]}")


def reload_story(say: Say, *, workers: int, edits: int, port: int | None) -> None:
    say.title(_("hot reload: edit the app while it serves"))
    with _lab(say, port, workers=workers, watch=True) as lab:
        say(f"$ curl http://127.0.0.1:{lab.port}/")
        say(f"  {http_get(('127.0.0.1', lab.port))}", "value")
        say(f"$ printf 'hi\\n' | nc 127.0.0.1 {lab.port}")
        say(f"  {lab.request('hi')}", "value")
        load = lab.load(threads=2, duration=120, pause=0.01)
        say(_("2 background clients now send requests on fresh connections, all through the edits"))
        say(_("reload phases in ms: ") + "; ".join(f"{_(p.step)}: {_(p.what)}" for p in RELOAD_PHASES), "dim")
        for k in range(1, edits + 1):
            new = f"hello, edit {k}"
            say.beat()
            say(_("edit {k}: Greeting.text = {new!r} in {target}.py (saved)").format(k=k, new=new, target=lab.target))
            set_greeting(lab, f'"{new}"')
            done = lab.wait_for(Kind.RELOAD_DONE, timeout=15)
            say(
                "  "
                + _("generation {n} serving: {phases}").format(
                    n=done["generation"], phases=phase_line(done, _edit_time(lab))
                )
            )
            say("  " + _("answer: {text}").format(text=lab.request("hi")), "value")
        say.beat()
        say(_("edit: a syntax error (an unclosed string)"), "bad")
        set_greeting(lab, '"oops')
        failed = lab.wait_for(Kind.RELOAD_FAILED, timeout=15)
        say(
            "  "
            + _("generation {n} refused and removed: {error}").format(
                n=failed["generation"], error=failed.get("error", "?")
            ),
            "bad",
        )
        say("  " + _("the old workers keep answering: {text}").format(text=lab.request("hi")), "value")
        say.beat()
        fixed = "hello, fixed"
        set_greeting(lab, f'"{fixed}"')
        done = lab.wait_for(Kind.RELOAD_DONE, timeout=15)
        say(
            _("fixed: generation {n} serving: {phases}").format(
                n=done["generation"], phases=phase_line(done, _edit_time(lab))
            )
        )
        say("  " + _("answer: {text}").format(text=lab.request("hi")), "value")
        say.beat()
        load.stop()
        verdict = "ok" if load.failed == 0 else "bad"
        say(
            _("background clients: {ok} answers, {failed} failed during {edits} edits").format(
                ok=load.ok, failed=load.failed, edits=edits + 2
            ),
            verdict,
        )
        for error in load.errors[:3]:
            say(f"  {error}", "bad")
        lab.stop()
        say(_("server stopped (SIGTERM: a graceful stop)"))


def _edit_time(lab: Lab) -> float:
    """When the last edit was saved (the lab notes each edit on the server's clock)."""
    return lab.of(Kind.LAB_EDIT)[-1]["t"]


def _tell_close(say: Say, close: Event, peer: str, silent: bool, start: float) -> bool:
    """Says that a connection closed, why and after how long (good news for a silent one); returns ``silent``."""
    who = _("silent") if silent else _("chatty")
    idle_for = _("idle {s:.2f} s").format(s=close["idle"]) if "idle" in close else _("no idle time")
    told = _("closed {who} client {peer} after {s:.2f} s: reason {reason}, {idle_for}").format(
        who=who, peer=peer, s=close["t"] - start, reason=close.get("reason"), idle_for=idle_for
    )
    say("  " + told, "ok" if silent else "bad")
    return silent


def heartbeat_story(
    say: Say,
    *,
    workers: int,
    port: int | None,
    silent: int = 3,
    chatty: int = 2,
    idle: float = HEARTBEAT_IDLE,
    interval: float = HEARTBEAT_INTERVAL,
) -> None:
    say.title(_("heartbeat: idle {idle:g} s, checked every {interval:g} s").format(idle=idle, interval=interval))
    with _lab(say, port, workers=workers, watch=False, heartbeat_idle=idle, heartbeat_interval=interval) as lab:
        start = time.monotonic()
        quiet = [lab.silent() for _ in range(silent)]
        silent_peers = {"{}:{}".format(*c.sock.getsockname()[:2]) for c in quiet}
        talkers = [lab.chatty(every=idle / 4, duration=60) for _ in range(chatty)]
        say(
            _("opened {silent} silent clients (never send) and {chatty} chatty ones (a line every {every:g} s)").format(
                silent=silent, chatty=chatty, every=idle / 4
            )
        )
        wait_until(lambda: len(lab.of(Kind.CONN_OPEN)) >= silent + chatty, timeout=10, what="all connections open")
        first = len(lab.history)
        opened = {_key(e): e for e in lab.of(Kind.CONN_OPEN)}
        closed = 0
        # Watch until the silent ones are closed and the chatty ones have outlived the idle time
        # twice over (so staying open means something); give up well past the lateness bound.
        settled, deadline = start + 2 * idle, start + 3 * idle + 4 * interval
        while (closed < silent or time.monotonic() < settled) and time.monotonic() < deadline:
            for e in lab.read_events()[first:]:
                if e["kind"] == Kind.CONN_CLOSE:
                    peer = opened.get(_key(e), {}).get("peer", "?")
                    closed += _tell_close(say, e, peer, peer in silent_peers, start)
            first = len(lab.history)
            time.sleep(0.02)
        if closed < silent:
            raise LabError(
                _("only {closed} of {silent} silent clients were closed within {s:.1f} s: see {log}").format(
                    closed=closed, silent=silent, s=deadline - start, log=lab.log_path
                )
            )
        for c in quiet:
            if not c.wait_closed(timeout=2):
                raise LabError(_("a silent client's socket is still open after the server closed it"))
        alive = sum(not t.closed_by_server for t in talkers)
        answers = sum(t.ok for t in talkers)
        say(
            _("after {s:.2f} s: {alive} of {chatty} chatty clients still open ({answers} answers so far)").format(
                s=time.monotonic() - start, alive=alive, chatty=chatty, answers=answers
            ),
            "ok" if alive == chatty else "bad",
        )
        lab.stop()
        say(_("server stopped"))


def _key(e: dict[str, Any]) -> tuple[int, int]:
    """Connection ids are per worker: a connection is (worker pid, id)."""
    return e["pid"], e["conn"]
