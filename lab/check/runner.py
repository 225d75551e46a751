"""The scenarios of ``python -m lab check``, run in order against one server.

Each scenario drives the server (edits, clients, connections) and hands its observations to the
pure ``verdicts``; this module only sequences them and cleans up: the app file is restored and the
server it started is stopped whatever happens, Ctrl-C included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.check import probe, verdicts
from lab.check.process import AppFile, Server
from lab.check.report import Report
from lab.config import check_duration
from lab.errors import LabError
from lab.i18n import _

SCENARIOS = ("reload", "broken", "heartbeat", "stop")
# A client is a thread asking without pause and an edit waits to be served: far more of either
# starves a 2-core machine (or passes the system's thread limit) and measures nothing more.
MAX_CLIENTS, MAX_EDITS = 256, 1000
PY_BROKEN = 'lab_check_broken = "an unclosed string'
# progress(line, **fields): a line for people; fields (scenario=, edit=, latency_ms=) for live views
Progress = Callable[..., None]


@dataclass
class Options:
    """What to check and how hard; the CLI's flags, plus the pacing that tests shorten."""

    connect: str
    app: str
    marker: str
    cmd: str | None = None
    protocol: str = "line"
    edits: int = 10
    clients: int = 6
    broken: str | None = None
    idle: float | None = None
    interval: float | None = None
    scenarios: tuple[str, ...] = SCENARIOS
    seen_timeout: float = 10.0  # an edit not served within this is missed
    broken_s: float = 3.0  # how long the broken app is asked
    settle_s: float = 0.3  # clients keep asking this long after an edit is first served
    stop_timeout: float = 5.0  # SIGTERM -> exit within this is graceful
    start_timeout: float = 30.0  # --cmd must answer within this
    silent: int = 4
    chatty: int = 2

    def validate(self) -> None:
        unknown = set(self.scenarios) - set(SCENARIOS)
        if unknown:
            raise LabError(
                _("--scenarios: unknown {unknown} (known: {known})").format(
                    unknown=", ".join(sorted(unknown)), known=", ".join(SCENARIOS)
                )
            )
        if self.protocol not in ("line", "http"):
            raise LabError(_("--protocol {protocol!r}: line or http").format(protocol=self.protocol))
        for option, value, most in (("--edits", self.edits, MAX_EDITS), ("--clients", self.clients, MAX_CLIENTS)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
                raise LabError(
                    _("{option} must be an integer from 1 to {most}, not {value!r}").format(
                        option=option, most=most, value=value
                    )
                )
        for name in ("idle", "interval"):
            if getattr(self, name) is not None:
                check_duration(name, getattr(self, name))


@dataclass
class Run:
    """One run's state: where to talk, the app, the server if started, what was seen."""

    options: Options
    address: probe.Address
    app: AppFile
    progress: Progress
    server: Server | None = None
    sections: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def clients(self) -> probe.Clients:
        return probe.Clients(self.address, self.options.protocol, self.options.clients, self.app.identify)

    def wait_seen(self, clients: probe.Clients, token: int, since: float) -> bool:
        deadline = since + self.options.seen_timeout
        while not clients.seen(token):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True


def run(options: Options, progress: Progress = lambda line, **fields: None) -> Report:
    """Check one server; the app file is restored and a started server stopped, whatever happens."""
    options.validate()
    address = probe.parse_connect(options.connect)
    app = AppFile(options.app, options.marker)
    state = Run(options, address, app, progress)
    started = time.monotonic()
    try:
        if options.cmd:
            progress(_("starting {cmd}").format(cmd=options.cmd), scenario="start")
            state.server = Server(options.cmd)
        _wait_ready(state)
        for name in ("reload", "broken", "heartbeat"):
            if name in options.scenarios:
                SCENARIO_RUNS[name](state)
        if "stop" in options.scenarios:
            _restore_served(state)
            _stop(state)
    finally:
        app.restore()
        if state.server is not None:
            state.server.kill()
    state.raw["duration_s"] = round(time.monotonic() - started, 2)
    return Report.build(state.sections, state.raw, state.notes)


def _wait_ready(state: Run) -> None:
    """Until the server answers with the marker; a clear error if it never does or dies first."""
    opts, server = state.options, state.server
    deadline = time.monotonic() + (opts.start_timeout if server else probe.REQUEST_TIMEOUT)
    last = "no answer"
    while time.monotonic() < deadline:
        if server is not None and server.proc.poll() is not None:
            raise LabError(
                _("--cmd exited with status {status} before answering ({output})").format(
                    status=server.proc.returncode, output=server.output_tail() or _("no output")
                )
            )
        try:
            text = probe.ask(state.address, opts.protocol)
            if state.app.identify(text) is not None:
                return
            last = _("answer {text!r} has no {marker!r}").format(text=text[:60], marker=opts.marker)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise LabError(
        _("no answer containing {marker!r} at {connect} ({last})").format(
            marker=opts.marker, connect=opts.connect, last=last
        )
    )


def _restore_served(state: Run) -> None:
    """Put the original app back and let it be served (bounded), so SIGTERM never meets a reload."""
    state.app.restore()
    deadline = time.monotonic() + state.options.seen_timeout
    while time.monotonic() < deadline and state.server is not None and state.server.proc.poll() is None:
        try:
            if state.app.identify(probe.ask(state.address, state.options.protocol)) == 0:
                return
        except OSError:
            pass
        time.sleep(0.02)


def _reload(state: Run) -> None:
    opts = state.options
    state.progress(
        _("reload: {clients} clients, {edits} edits").format(clients=opts.clients, edits=opts.edits), scenario="reload"
    )
    edits = []
    with state.clients() as clients:
        _wait_answers(clients)
        for n in range(opts.edits):
            edit = state.app.edit()
            edits.append(edit)
            seen = state.wait_seen(clients, edit.token, edit.written)
            ms = (clients.first[edit.token] - edit.written) * 1000 if seen else None
            outcome = (
                _("served after {ms:.0f} ms").format(ms=ms)
                if seen
                else _("not served within {s:g} s").format(s=opts.seen_timeout)
            )
            state.progress(
                _("reload: edit {n}/{edits} {outcome}").format(n=n + 1, edits=opts.edits, outcome=outcome),
                scenario="reload",
                edit=n + 1,
                latency_ms=ms,
            )
            time.sleep(opts.settle_s)
    state.sections["reload"] = verdicts.reload_summary(edits, clients.answers, opts.seen_timeout)
    state.raw["reload"] = {"edits": edits, "answers": clients.answers}


def _wait_answers(clients: probe.Clients, timeout: float = 5.0) -> None:
    """Let the clients warm up: each has had a turn (bounded)."""
    deadline = time.monotonic() + timeout
    while len(clients.answers) < clients.count and time.monotonic() < deadline:
        time.sleep(0.01)


def _settled(clients: probe.Clients, timeout: float, quiet: float = 0.5) -> int | None:
    """The one token every answer of the last ``quiet`` s carried (bounded wait; None: never one)."""
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(quiet / 5)
        now = time.monotonic()
        recent = {a.token for a in clients.since(now - quiet)}
        if len(recent) == 1 and None not in recent and now - clients.started > quiet:
            return recent.pop()
        if now > deadline:
            return None


def _broken(state: Run) -> None:
    opts = state.options
    broken = opts.broken if opts.broken is not None else PY_BROKEN if Path(opts.app).suffix == ".py" else None
    if broken is None:
        state.notes.append(_("broken: skipped, give --broken TEXT (a syntax error in your app's language)"))
        return
    state.progress(_("broken: writing a syntax error, asking for {s:g} s").format(s=opts.broken_s), scenario="broken")
    with state.clients() as clients:
        good = _settled(clients, opts.seen_timeout)
        written = state.app.write_broken(broken)
        time.sleep(opts.broken_s)
        ended = time.monotonic()
        during = [a for a in clients.since(written) if a.received <= ended]
        edit = state.app.edit()
        recovered = state.wait_seen(clients, edit.token, edit.written)
    state.progress(
        _("broken: recovered after a good edit") if recovered else _("broken: did not recover after a good edit"),
        scenario="broken",
    )
    state.sections["broken"] = verdicts.broken_summary(during, good, recovered)
    state.raw["broken"] = {"good": good, "answers": during}


def _heartbeat(state: Run) -> None:
    opts = state.options
    if opts.idle is None:
        state.notes.append(_("heartbeat: skipped, give --idle S (the idle time your server claims)"))
        return
    interval = opts.interval if opts.interval is not None else opts.idle / 2
    until = verdicts.observe_until(opts.idle, interval)
    state.progress(
        _("heartbeat: {silent} silent, {chatty} chatty connections for {s:g} s").format(
            silent=opts.silent, chatty=opts.chatty, s=until
        ),
        scenario="heartbeat",
    )
    silent, chatty = probe.heartbeat_clients(state.address, opts.protocol, opts.idle, until, opts.silent, opts.chatty)
    state.sections["heartbeat"] = verdicts.heartbeat_summary(silent, chatty, opts.idle, interval)
    state.raw["heartbeat"] = {"silent": silent, "chatty": chatty, "idle": opts.idle, "interval": interval}


def _stop(state: Run) -> None:
    if state.server is None:
        state.notes.append(_("stop: skipped, the checker did not start the server (no --cmd)"))
        return
    state.progress("stop: SIGTERM", scenario="stop")
    state.sections["stop"] = state.server.stop(state.options.stop_timeout)


SCENARIO_RUNS: dict[str, Callable[[Run], None]] = {"reload": _reload, "broken": _broken, "heartbeat": _heartbeat}
