"""The checkers of the notebooks' exercises: each case named by what it tests, each failure by its
likely cause. Every loop is bounded and the learner's exceptions are reported, so a wrong answer
fails with a hint, never hangs the kernel. ``report`` prints the verdict the notebooks show.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from lab.events import RELOAD_PHASES, Kind
from lab.i18n import _

Failure = tuple[str, str]  # (case, what went wrong and why it probably did)

WANTED_CASES = [  # (name, expected, why)
    ("server.py", True, "Python code"),
    ("app.test.py", True, "Python: the type is after the LAST dot (the tutorial's strchr takes the first)"),
    ("__init__.py", True, "Python code"),
    ("v1.2.3.py", True, "Python: the type is after the LAST dot"),
    (".#server.py", False, "Emacs' lock file (a symlink), not code, though it ends in .py"),
    ("server.py~", False, "an editor's backup"),
    (".server.py.swp", False, "vim's swap file"),
    ("4913", False, "vim's probe file (no dot: PHP's strchr gives false)"),
    ("notes.txt", False, "another type"),
    ("server.pyc", False, "compiled, not source"),
    ("server.py.orig", False, "a merge tool's leftover"),
]

DUE_CASES = [  # ((first, last, quiet, max_wait), due, why)
    ((0.0, 0.0, 0.05, 0.5), 0.05, "one record: due after the quiet time"),
    ((0.0, 0.03, 0.05, 0.5), 0.08, "a later record restarts the quiet time: last + quiet"),
    ((0.0, 0.48, 0.05, 0.5), 0.5, "a stream that never pauses: max_wait after the first caps the delay"),
    ((0.0, 9.0, 0.05, 0.5), 0.5, "max_wait caps the delay, however late the last record"),
    ((10.0, 10.0, 0.2, 1.0), 10.2, "times are absolute: add to first/last, not to 0"),
]

STEPS = tuple(phase.step for phase in RELOAD_PHASES[1:])  # fork, import, switch, drain
SYNTHETIC_RELOAD = {
    "kind": Kind.RELOAD_DONE,
    "duration": 0.1,
    "phases": dict(zip([phase.key for phase in RELOAD_PHASES], (10.0, 10.004, 10.05, 10.0502, 10.1))),
}
SYNTHETIC_WANT = dict(zip(STEPS, (4.0, 46.0, 0.2, 49.8)))


def _call(f: Callable[..., Any], *args: Any) -> tuple[Any, str | None]:
    try:
        return f(*args), None
    except Exception as exc:  # the learner's bug, shown as a failure
        return None, f"raised {type(exc).__name__}: {exc}"


def check_wanted(wanted: Callable[[str], bool]) -> tuple[list[Failure], int]:
    failures = []
    for name, expected, why in WANTED_CASES:
        got, error = _call(wanted, name)
        if error or got != expected:
            failures.append((f"wanted({name!r})", f"{error or f'gave {got!r}'}, should be {expected}: {why}"))
    return failures, len(WANTED_CASES)


def check_due(due_at: Callable[[float, float, float, float], float]) -> tuple[list[Failure], int]:
    failures = []
    for args, want, why in DUE_CASES:
        got, error = _call(due_at, *args)
        if error is None and not isinstance(got, (int, float)):
            error = f"returned {got!r}, not a number of seconds"
        if error or abs(got - want) > 1e-9:
            failures.append((f"due_at{args}", f"{error or f'= {got:g}'}, should be {want:g}: {why}"))
    return failures, len(DUE_CASES)


def check_phases(phase_durations: Callable[[dict], dict], reloads: Sequence[dict] = ()) -> tuple[list[Failure], int]:
    """Against a made-up reload (exact values) and real ones (the steps add up to the total)."""
    cases = [("a made-up reload", SYNTHETIC_RELOAD, SYNTHETIC_WANT)]
    for e in reloads:
        p = e["phases"]
        total = (p[RELOAD_PHASES[-1].key] - p[RELOAD_PHASES[0].key]) * 1000
        cases.append((f"generation {e['generation']}", e, {"total": total}))
    failures = [(name, why) for name, event, want in cases if (why := _phases_wrong(phase_durations, event, want))]
    return failures, len(cases)


def _phases_wrong(phase_durations: Callable[[dict], dict], event: dict, want: dict) -> str | None:
    got, error = _call(phase_durations, event)
    if error:
        return error
    if not isinstance(got, dict) or set(got) != set(STEPS):
        return f"gave {got!r}: want a dict with exactly the keys {', '.join(STEPS)}"
    if min(got.values()) < 0:
        return f"gave {got}: a negative step (the end minus the start, in phase order?)"
    total = want.get("total", sum(want.values()))
    if abs(sum(got.values()) * 1000 - total) < 1e-6 * 1000:
        return f"gave {got}: in seconds? The steps are wanted in milliseconds"
    if "total" in want:
        return (
            None
            if abs(sum(got.values()) - total) <= 1e-6
            else f"gave {got}: the steps add up to {sum(got.values()):.3f} ms, not {total:.3f}"
        )
    off = [k for k in STEPS if abs(got[k] - want[k]) > 1e-6]
    return f"gave {got}, want {want}: check {', '.join(off)}" if off else None


def check_send_reload(
    send_reload: Callable[[str], int], server: Any, timeout: float = 15.0
) -> tuple[list[Failure], int]:
    """``send_reload(pidfile)`` against a running ``lab.Lab``: it must signal that master, and
    raise (never signal anything) on a missing or malformed pid file."""
    failures = []
    seen = len(server.read_events())
    pid, error = _call(send_reload, str(server.pidfile))
    if error or pid != server.pid:
        hint = (
            " (the file holds 'PID STARTTIME': take the first field, as pidGet(...)[0] does)"
            if error and "ValueError" in error
            else ""
        )
        failures.append(("reads the master's pid", f"{error or f'returned {pid!r}'}, want {server.pid}{hint}"))
        failures.append(("the master reloads", "not tried: read the pid first"))
    else:
        try:
            server.wait_for(Kind.RELOAD_DONE, timeout=timeout, after=seen)
        except Exception as exc:
            failures.append(("the master reloads", f"no reload followed ({exc}): send SIGUSR1 to that pid"))
    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, "bad.pid")
        with open(bad, "w") as f:
            f.write("not a pid\n")
        for case, path in (
            ("a missing pid file raises", os.path.join(tmp, "missing.pid")),
            ("a pid file that holds no pid raises", bad),
        ):
            got, error = _call(send_reload, path)
            if error is None:
                failures.append(
                    (
                        case,
                        f"returned {got!r}: raise (FileNotFoundError, ValueError): "
                        f"a reload of nothing must not look like success",
                    )
                )
    return failures, 4


def report(failures: list[Failure], total: int, solution: str) -> None:
    """Print each failure, then the verdict: '✓ all N cases pass' or 'K of N cases fail'."""
    for case, why in failures:
        print(f"✗ {case}: {why}")
    if not failures:
        print(_("✓ all {total} cases pass").format(total=total))
    else:
        verdict = _("{failed} of {total} cases fail: keep going (a solution is in {solution})")
        print(verdict.format(failed=len(failures), total=total, solution=solution))


# --- heartbeat trackers ----------------------------------------------------------------------

MAX_CHECKS = 20_000  # checks one scenario may ask for: a next_check that does not advance stops here
EPS = 1e-9


class Spin(Exception):
    """The tracker made the server spin: next_check asked for a time not after the last check, and
    nothing expired then."""


def _pairs(out: Any) -> list[tuple]:
    if not isinstance(out, list) or not all(isinstance(p, tuple) and len(p) == 2 for p in out):
        raise TypeError(f"expired(now) returned {out!r}: it must return a list of (key, last) pairs")
    return out


def _follow(hb: Any, now: float, until: float) -> list[tuple]:
    """Call expired at the times next_check asks, up to ``until``: (key, last, when) reported."""
    out: list[tuple] = []
    for _check in range(MAX_CHECKS):
        nxt = hb.next_check(now)
        if nxt is None or nxt > until:
            return out
        got = _pairs(hb.expired(nxt))
        if nxt <= now and not got:
            raise Spin(f"next_check({now:g}) = {nxt:g}, and expired({nxt:g}) returned nothing")
        now = max(now, nxt)
        out += [(key, last, now) for key, last in got]
    raise Spin(f"more than {MAX_CHECKS:,} checks before t = {until:g}")


def _late(report_: list[tuple], idle: float, interval: float) -> str | None:
    for key, last, when in report_:
        if when < last + idle - EPS:
            return f"{key!r} closed at {when:g}, before last + idle = {last + idle:g}"
        if when > last + idle + interval + EPS:
            return f"{key!r} closed at {when:g}, more than one interval after last + idle = {last + idle:g}"
    return None


def _returns_pairs(make: Callable[[float, float], Any]) -> str | None:
    hb = make(1.0, 0.25)
    hb.touch("a", 0.0)
    got = _pairs(hb.expired(1.0))
    return None if got == [("a", 0.0)] else f"expired(1.0) gave {got}, want [('a', 0.0)]"


def _boundary(make: Callable[[float, float], Any]) -> str | None:
    early, exact = make(1.0, 0.25), make(1.0, 0.25)
    early.touch("a", 0.0)
    exact.touch("a", 0.0)
    if _pairs(early.expired(0.999)):
        return "expired(0.999) closed 'a', idle only 0.999 s of 1"
    if not _pairs(exact.expired(1.0)):
        return "expired(1.0) kept 'a', idle exactly 1 s: expired means last + idle <= now (not <)"
    return None


def _drops_what_it_returns(make: Callable[[float, float], Any]) -> str | None:
    hb = make(1.0, 0.25)
    hb.touch("a", 0.0)
    if not _pairs(hb.expired(1.5)):
        return "expired(1.5) reported nothing for 'a', idle 1.5 s of 1"
    again = _pairs(hb.expired(3.0))
    if again or len(hb):
        return f"after 'a' was reported, len = {len(hb)} and expired(3.0) gave {again}: stop tracking what you return"
    return None


def _touch_resets(make: Callable[[float, float], Any]) -> str | None:
    hb = make(1.0, 0.25)
    hb.touch("a", 0.0)
    hb.touch("a", 0.6)
    got = _follow(hb, 0.0, 5.0)
    if [k for k, *_ in got] != ["a"] or got[0][1] != 0.6:
        return f"reported {got}: want 'a' once, with its last touch 0.6"
    return _late(got, 1.0, 0.25)


def _forget_and_reuse(make: Callable[[float, float], Any]) -> str | None:
    hb = make(1.0, 0.1)
    for key in (7, 8, 9):
        hb.touch(key, 0.0)
    hb.forget(7)
    hb.forget(9)
    hb.touch(7, 0.5)
    steps = [(1.0, [(8, 0.0)]), (1.4, []), (1.5, [(7, 0.5)])]
    for now, want in steps:
        if (got := _pairs(hb.expired(now))) != want:
            return (
                f"expired({now}) gave {got}, want {want} (7 and 9 were touched at 0, then "
                f"forgotten; 7 was touched again at 0.5)"
            )
    return None


def _empty_next_check(make: Callable[[float, float], Any]) -> str | None:
    hb = make(1.0, 0.25)
    return None if hb.next_check(0.0) is None else "next_check(now) must be None when nothing is tracked"


def _many_on_time(make: Callable[[float, float], Any]) -> str | None:
    hb = make(5.0, 0.5)
    for k in range(2000):
        hb.touch(k, k * 0.005)
    got = _follow(hb, 0.0, 100.0)
    if sorted(k for k, *_ in got) != list(range(2000)):
        return f"{len(got)} of 2,000 keys reported once each"
    return _late(got, 5.0, 0.5)


def _steady_traffic(make: Callable[[float, float], Any]) -> str | None:
    # one silent key among a busy one; the server re-arms its check after each message
    hb = make(1.0, 0.1)
    hb.touch("silent", 0.0)
    check = hb.next_check(0.0)
    for k in range(1, 41):  # a message every 0.05 s for 2 s
        t = k * 0.05
        if check is not None and check <= t:
            if "silent" in [key for key, _ in _pairs(hb.expired(check))]:
                return None if check <= 1.1 + EPS else f"'silent' closed at {check:g}, more than one interval late"
        hb.touch("busy", t)
        check = hb.next_check(t)
    if check is not None and check <= 2.0:
        return f"next_check asked for {check:g}, but expired({check:g}) kept 'silent' (idle since 0, idle = 1)"
    return (
        f"'silent' still open at 2 s: next_check(2.0) = {check}. A deadline of now + interval "
        f"moves with every touch; ask for when the oldest key comes due"
    )


def _random_mix(make: Callable[[float, float], Any]) -> str | None:
    model: dict[Any, float] = {}
    rng, hb, now, checks = random.Random(1), make(1.0, 0.1), 0.0, 0
    for step in range(3000):
        target = now + rng.expovariate(20)
        while True:
            checks += 1
            if checks > 10 * MAX_CHECKS:  # the lab's strategies need a few thousand
                raise Spin(f"more than {10 * MAX_CHECKS:,} checks by step {step} (t = {now:g})")
            nxt = hb.next_check(now)
            if nxt is None or nxt > target:
                break
            out = _pairs(hb.expired(nxt))
            if nxt <= now and not out:
                raise Spin(f"next_check({now:g}) = {nxt:g}, and expired({nxt:g}) returned nothing")
            now = max(now, nxt)
            for k, last in out:
                if model.pop(k, None) != last or not last + 1.0 - EPS <= now <= last + 1.1 + EPS:
                    return (
                        f"step {step}: expired({now:g}) reported ({k!r}, {last:g}), which the model does not agree with"
                    )
            if overdue := [k for k, last in model.items() if last + 1.1 < now - EPS]:
                return f"step {step}: at {now:g}, {overdue[:3]} idle more than idle + interval are still open"
        now, key = target, rng.randrange(30)
        if rng.random() < 0.8:
            hb.touch(key, now)
            model[key] = now
        else:
            hb.forget(key)
            model.pop(key, None)
        if len(hb) != len(model):
            return f"step {step}: len = {len(hb)}, but {len(model)} keys are tracked (forgotten keys do not count)"
    return None


TRACKER_CASES = [  # (name, scenario): each returns None or what went wrong
    ("expired returns (key, last) pairs", _returns_pairs),
    ("idle exactly `idle` seconds is expired", _boundary),
    ("a reported key is no longer tracked", _drops_what_it_returns),
    ("a touch resets the idle time", _touch_resets),
    ("forget, and a reused key", _forget_and_reuse),
    ("next_check is None when nothing is tracked", _empty_next_check),
    ("2,000 keys, each on time", _many_on_time),
    ("a silent key among busy ones", _steady_traffic),
    ("random touches, forgets and checks", _random_mix),
]


def check_tracker(make: Callable[[float, float], Any]) -> tuple[list[Failure], int]:
    """``make(idle, interval)`` builds a tracker; each scenario fails alone, with its cause."""
    failures = []
    for name, case in TRACKER_CASES:
        try:
            why = case(make)
        except Spin as exc:
            why = (
                f"the server would spin: {exc}. Does expired(now) return every key with "
                f"last + idle <= now, and next_check ask for a time when one is due?"
            )
        except Exception as exc:
            why = f"raised {type(exc).__name__}: {exc}"
        if why:
            failures.append((name, why))
    return failures, len(TRACKER_CASES)


__all__ = ["check_due", "check_phases", "check_send_reload", "check_tracker", "check_wanted", "report"]
