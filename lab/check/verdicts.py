"""Pure verdicts of ``python -m lab check``: timestamped observations in, figures and checks out.

No I/O and no clock: every time is a number the I/O layer measured (``time.monotonic()``), so
each rule here is tested exactly with hand-made observations.

Tokens are numbered by version: 0 is the marker the app had, 1.. the fresh tokens written by the
edits in order. An answer's ``token`` is the version it carried, or ``None`` when the request
failed (refused, reset, timed out, or an answer with no known token).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lab.i18n import N_, _

EARLY_SLACK = 0.05  # a silent connection closed this much before ``idle`` is closed early
LATE_SLACK = 0.25  # ... this much after ``idle + interval`` is closed late
NEVER_AFTER = 2.0  # ... still open this much after ``idle + interval`` is never closed


@dataclass(frozen=True)
class Answer:
    """One request on a fresh connection: when it was sent, when its answer came, which token."""

    sent: float
    received: float
    token: int | None
    error: str = ""


@dataclass(frozen=True)
class Edit:
    """An edit wrote token ``token`` into the app at ``written``."""

    token: int
    written: float


@dataclass(frozen=True)
class Lifetime:
    """A heartbeat connection: opened, closed by the server (``None``: still open at the end)."""

    opened: float
    closed: float | None


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    value: Any
    bound: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def first_received(answers: Iterable[Answer]) -> dict[int, float]:
    """Token -> when any client first received it."""
    first: dict[int, float] = {}
    for a in answers:
        if a.token is not None and a.received < first.get(a.token, float("inf")):
            first[a.token] = a.received
    return first


def stale(answers: Sequence[Answer]) -> list[Answer]:
    """Answers with an older token to requests sent strictly after a newer token was received.

    Defined on send and receive times only, so the count does not depend on how the client
    threads were scheduled: a server that never lets old code answer once new code has answered
    has none, however slow the clients are.
    """
    first = sorted(first_received(answers).items(), key=lambda item: item[1])
    stale_list = []
    for a in answers:
        if a.token is None:
            continue
        newest = max((token for token, t in first if t < a.sent), default=None)
        if newest is not None and a.token < newest:
            stale_list.append(a)
    return stale_list


def latencies(edits: Sequence[Edit], answers: Sequence[Answer], seen_timeout: float) -> list[float | None]:
    """Per edit, seconds from its write to the first answer with its token; ``None``: missed."""
    first = first_received(answers)
    out: list[float | None] = []
    for edit in edits:
        seen = first.get(edit.token)
        ok = seen is not None and edit.written <= seen <= edit.written + seen_timeout
        out.append(seen - edit.written if ok and seen is not None else None)
    return out


def reload_summary(edits: Sequence[Edit], answers: Sequence[Answer], seen_timeout: float) -> dict[str, Any]:
    """The ``reload`` section of the report."""
    lat = latencies(edits, answers, seen_timeout)
    seen_ms = [round(x * 1000, 1) for x in lat if x is not None]
    failed = sum(1 for a in answers if a.token is None)
    return {
        "edits": len(edits),
        "missed": sum(1 for x in lat if x is None),
        "failed_requests": failed,
        "ok_requests": len(answers) - failed,
        "stale_answers": len(stale(answers)),
        "latency_ms": [None if x is None else round(x * 1000, 1) for x in lat],
        "p50_ms": round(statistics.median(seen_ms), 1) if seen_ms else None,
    }


def broken_summary(answers: Sequence[Answer], good: int | None, recovered: bool) -> dict[str, Any]:
    """The ``broken`` section: ``answers`` are those sent while the broken app was in place.

    Kept serving: every answer carried the last good token ``good`` and the last request was
    answered (a server that dies on the syntax error fails it, however many it answered before).
    """
    served = [a for a in answers if a.token is not None]
    last = max(answers, key=lambda a: a.sent, default=None)
    return {
        "kept_serving": last is not None and last.token is not None and all(a.token == good for a in served),
        "failed_requests": sum(1 for a in answers if a.token is None),
        "ok_requests": len(served),
        "recovered": recovered,
    }


def classify(life: Lifetime, idle: float, interval: float) -> str:
    """A silent connection's verdict: ``ok``, ``early``, ``late`` or ``never`` (closed)."""
    if life.closed is None:
        return "never"
    lived = life.closed - life.opened
    if lived < idle - EARLY_SLACK:
        return "early"
    if lived > idle + interval + LATE_SLACK:
        return "late"
    return "ok"


def observe_until(idle: float, interval: float) -> float:
    """How long after opening a connection is watched: past this it counts as never closed."""
    return idle + interval + NEVER_AFTER


def heartbeat_summary(
    silent: Sequence[Lifetime], chatty: Sequence[Lifetime], idle: float, interval: float
) -> dict[str, Any]:
    """The ``heartbeat`` section of the report."""
    kinds = [classify(life, idle, interval) for life in silent]
    return {
        "idle_s": idle,
        "interval_s": interval,
        "silent": len(silent),
        "closed_early": kinds.count("early"),
        "closed_late": kinds.count("late"),
        "never_closed": kinds.count("never"),
        "chatty": len(chatty),
        "chatty_closed": sum(1 for life in chatty if life.closed is not None),
        "lateness_ms": [
            round((life.closed - life.opened - idle) * 1000, 1) for life in silent if life.closed is not None
        ],
    }


# name -> what a failure means and where the lab's notebooks explain it (one line each)
EXPLAIN = {
    "reload.failed_requests": N_(
        "requests refused, reset or unanswered during reloads: old workers stop "
        "before new ones are ready (notebooks/02_hot_reload.ipynb, 'Reload under load')"
    ),
    "reload.missed_edits": N_(
        "an edit never reached the answers: the file is not watched or the server does "
        "not reload (notebooks/02_hot_reload.ipynb, 'Why a resident process keeps old code')"
    ),
    "reload.stale_answers": N_(
        "old code answered after new code had: old and new workers serve side by side "
        "(notebooks/02_hot_reload.ipynb, 'The phases of a reload')"
    ),
    "broken.kept_serving": N_(
        "a syntax error took the old code down instead of being refused "
        "(notebooks/02_hot_reload.ipynb, 'A syntax error is refused')"
    ),
    "broken.failed_requests": N_(
        "requests failed while the app had a syntax error (notebooks/02_hot_reload.ipynb, 'A syntax error is refused')"
    ),
    "broken.recovered": N_(
        "a good edit after a syntax error was not served (notebooks/02_hot_reload.ipynb, 'A syntax error is refused')"
    ),
    "heartbeat.closed_early": N_(
        "silent connections closed before the idle time: the idle clock starts too soon "
        "or the check is too eager (notebooks/03_heartbeat.ipynb, 'Five strategies, one interface')"
    ),
    "heartbeat.closed_late": N_(
        "silent connections closed later than idle + interval: the check runs late "
        "(notebooks/03_heartbeat.ipynb, 'Lateness on the real server')"
    ),
    "heartbeat.never_closed": N_(
        "silent connections never closed: no heartbeat, or it never fires "
        "(notebooks/03_heartbeat.ipynb, 'A real server with a heartbeat')"
    ),
    "heartbeat.chatty_closed": N_(
        "busy connections closed: activity does not reset the idle clock "
        "(notebooks/03_heartbeat.ipynb, 'The tutorial's way: a timer per message')"
    ),
    "stop.graceful": N_(
        "SIGTERM did not stop the server within the grace time "
        "(notebooks/02_hot_reload.ipynb, 'Reload by signal, and by command')"
    ),
    "stop.left_behind": N_(
        "processes of the server's session outlived it: workers are not stopped with "
        "their master (notebooks/02_hot_reload.ipynb, 'Reload by signal, and by command')"
    ),
}


def _count(name: str, value: int, what: str) -> Check:
    return Check(name, value == 0, value, "= 0", "" if value == 0 else _(EXPLAIN[name]) + f" [{what}]")


def _flag(name: str, value: bool, what: str) -> Check:
    # the bound is "yes" in the JSON, translated in the table
    return Check(name, bool(value), value, N_("yes"), "" if value else _(EXPLAIN[name]) + f" [{what}]")


def checks(sections: dict[str, dict[str, Any] | None]) -> list[Check]:
    """Every check of the scenarios that ran (a section is ``None`` when its scenario did not)."""
    out: list[Check] = []
    if r := sections.get("reload"):
        out += [
            _count("reload.failed_requests", r["failed_requests"], _("{n} answered").format(n=r["ok_requests"])),
            _count("reload.missed_edits", r["missed"], _("of {n} edits").format(n=r["edits"])),
            _count("reload.stale_answers", r["stale_answers"], _("of {n} answers").format(n=r["ok_requests"])),
        ]
    if b := sections.get("broken"):
        out += [
            _flag("broken.kept_serving", b["kept_serving"], _("{n} answered").format(n=b["ok_requests"])),
            _count("broken.failed_requests", b["failed_requests"], _("{n} answered").format(n=b["ok_requests"])),
            _flag("broken.recovered", b["recovered"], _("a good edit after the broken one")),
        ]
    if h := sections.get("heartbeat"):
        idle, due = h["idle_s"], h["idle_s"] + h["interval_s"]
        silent = _("of {n} silent").format(n=h["silent"])
        out += [
            _count(
                "heartbeat.closed_early",
                h["closed_early"],
                _("{silent} closed before {s:.2f} s").format(silent=silent, s=idle - EARLY_SLACK),
            ),
            _count(
                "heartbeat.closed_late",
                h["closed_late"],
                _("{silent} closed after {s:.2f} s").format(silent=silent, s=due + LATE_SLACK),
            ),
            _count(
                "heartbeat.never_closed",
                h["never_closed"],
                _("{silent} still open at {s:.2f} s").format(silent=silent, s=due + NEVER_AFTER),
            ),
            _count("heartbeat.chatty_closed", h["chatty_closed"], _("of {n} chatty").format(n=h["chatty"])),
        ]
    if s := sections.get("stop"):
        out += [
            _flag("stop.graceful", s["graceful"], _("exit after {s} s").format(s=s["exit_s"])),
            _count("stop.left_behind", len(s["left_behind"]), _("pids {pids}").format(pids=s["left_behind"])),
        ]
    return out
