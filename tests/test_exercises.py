"""Every exercise checker (lab/exercises.py) against the notebook's starter (fails, never hangs), the
solution (passes) and plausible wrong answers (fail, each with a message that names the cause)."""

from __future__ import annotations

import nbformat
import nbutil
import pytest

from lab import exercises as ex
from lab.events import RELOAD_PHASES
from lab.heartbeat import STRATEGIES, make_tracker


def starter(notebook: str, tag: str, name: str):
    """The function or class ``name`` defined by the notebook cell tagged ``tag``."""
    nb = nbformat.read(nbutil.NOTEBOOKS / f"{notebook}.ipynb", as_version=4)
    source = next(c.source for c in nb.cells if tag in c.metadata.get("tags", []))
    return define(source, name)


def solved(notebook: str, tag: str, name: str):
    return define(nbutil.solution(notebook)[tag], name)


def define(source: str, name: str):
    namespace: dict = {}
    exec(source, namespace)
    return namespace[name]


def failing(result) -> dict[str, str]:
    failures, _ = result
    return dict(failures)


# --- 01: wanted ---------------------------------------------------------------------------------


def test_wanted_starter_fails_solution_passes():
    wrong = failing(ex.check_wanted(starter("01_inotify", "exercise-wanted", "wanted")))
    assert "LAST dot" in wrong["wanted('app.test.py')"]
    assert failing(ex.check_wanted(solved("01_inotify", "exercise-wanted", "wanted"))) == {}


@pytest.mark.parametrize("case", [name for name, *_ in ex.WANTED_CASES])
def test_every_wanted_case_catches_a_plausible_wrong_answer(case):
    answers = [
        lambda n: n.endswith(".py"),
        lambda n: n.split(".")[-1] == "py" and not n.startswith(".#"),
        lambda n: not n.endswith(".py"),
        lambda n: 1 / 0,
    ]
    messages = [failing(ex.check_wanted(a)).get(f"wanted({case!r})") for a in answers]
    assert any(messages), case
    assert all(": " in m for m in messages if m)  # each says why the case expects what it does


def test_a_raising_answer_is_reported():
    wrong = failing(ex.check_wanted(lambda n: 1 / 0))
    assert "raised ZeroDivisionError" in wrong["wanted('server.py')"]


# --- 01: due_at ---------------------------------------------------------------------------------


def test_due_starter_fails_solution_passes():
    assert failing(ex.check_due(starter("01_inotify", "exercise-due", "due_at")))
    assert failing(ex.check_due(solved("01_inotify", "exercise-due", "due_at"))) == {}


@pytest.mark.parametrize("args, due, why", ex.DUE_CASES)
def test_every_due_case_catches_a_plausible_wrong_answer(args, due, why):
    answers = [
        lambda first, last, quiet, max_wait: last + quiet,
        lambda first, last, quiet, max_wait: first + max_wait,
        lambda first, last, quiet, max_wait: min(last, first + max_wait) + quiet,
        lambda first, last, quiet, max_wait: min(last - first + quiet, max_wait),
    ]
    messages = [failing(ex.check_due(a)).get(f"due_at{args}") for a in answers]
    assert any(m and why in m for m in messages)


def test_due_says_when_the_answer_is_not_a_number():
    assert "not a number" in failing(ex.check_due(lambda *a: None))["due_at(0.0, 0.0, 0.05, 0.5)"]


# --- 02: phase_durations ------------------------------------------------------------------------

REAL = [
    {
        "generation": 2,
        "duration": 0.02,
        "phases": {"seen": 1.0, "forked": 1.002, "ready": 1.012, "serving": 1.013, "old_gone": 1.02},
    }
]


def test_phases_starter_fails_solution_passes():
    stub = failing(ex.check_phases(starter("02_hot_reload", "exercise-phases", "phase_durations"), REAL))
    assert "exactly the keys" in stub["a made-up reload"] and "generation 2" in stub
    assert failing(ex.check_phases(solved("02_hot_reload", "exercise-phases", "phase_durations"), REAL)) == {}


ORDER = tuple(phase.key for phase in RELOAD_PHASES)  # seen, forked, ready, serving, old_gone


@pytest.mark.parametrize(
    "answer, hint",
    [
        (lambda d: {s: d["phases"][b] - d["phases"][a] for s, a, b in zip(ex.STEPS, ORDER, ORDER[1:])}, "in seconds?"),
        (
            lambda d: {s: (d["phases"][a] - d["phases"][b]) * 1000 for s, a, b in zip(ex.STEPS, ORDER, ORDER[1:])},
            "negative step",
        ),
        (
            lambda d: {s: (d["phases"][b] - d["phases"]["seen"]) * 1000 for s, b in zip(ex.STEPS, ORDER[1:])},
            "check import",
        ),
        (lambda d: {"fork": 1.0}, "exactly the keys"),
    ],
)
def test_phases_wrong_answers_get_their_hint(answer, hint):
    wrong = failing(ex.check_phases(answer, REAL))
    assert hint in wrong["a made-up reload"]


def test_real_reloads_must_add_up():
    def off_by_one(d):
        p = d["phases"]
        out = {s: (p[b] - p[a]) * 1000 for s, a, b in zip(ex.STEPS, ORDER, ORDER[1:])}
        if d.get("generation"):
            out["drain"] += 1
        return out

    assert "add up to" in failing(ex.check_phases(off_by_one, REAL))["generation 2"]


# --- 03: the heartbeat tracker ------------------------------------------------------------------

Starter = starter("03_heartbeat", "exercise-tracker", "MyTracker")
CASES = [name for name, _ in ex.TRACKER_CASES]


def variant(expired=None, next_check=None, forget=None):
    """The starter with some methods replaced: how a learner's answer differs."""
    methods = {k: v for k, v in (("expired", expired), ("next_check", next_check), ("forget", forget)) if v}
    return type("Variant", (Starter,), methods)


def correct_expired(self, now):
    out = [(k, t) for k, t in self.last.items() if t + self.idle <= now]
    for k, _ in out:
        del self.last[k]
    return out


WRONG = {  # a plausible wrong answer -> a piece of the message it must get
    "strict > with oldest + idle": (
        variant(
            expired=lambda self, now: [(k, self.last.pop(k)) for k, t in list(self.last.items()) if t + self.idle < now]
        ),
        "idle exactly 1 s",
    ),
    "the starter's old now + interval": (
        variant(correct_expired, next_check=lambda self, now: now + self.interval if self.last else None),
        "moves with every touch",
    ),
    "reports but keeps tracking": (
        variant(expired=lambda self, now: [(k, t) for k, t in self.last.items() if t + self.idle <= now]),
        "stop tracking",
    ),
    "keys, not pairs": (
        variant(expired=lambda self, now: [k for k, _ in correct_expired(self, now)]),
        "list of (key, last) pairs",
    ),
    "forget does nothing": (variant(correct_expired, forget=lambda self, key: None), "forgotten"),
    "a check always asked for": (
        variant(
            correct_expired,
            next_check=lambda self, now: min(self.last.values()) + self.idle if self.last else now + self.interval,
        ),
        "None when nothing",
    ),
    "a check one interval too late": (
        variant(
            correct_expired,
            next_check=lambda self, now: min(self.last.values()) + self.idle + 2 * self.interval if self.last else None,
        ),
        "more than one interval",
    ),
}


def test_the_labs_strategies_and_the_solution_pass_every_case():
    for name in STRATEGIES:
        assert failing(ex.check_tracker(lambda i, n, name=name: make_tracker(name, i, n))) == {}, name
    assert failing(ex.check_tracker(solved("03_heartbeat", "exercise-tracker", "MyTracker"))) == {}
    assert failing(ex.check_tracker(variant(correct_expired))) == {}  # the starter's other parts are correct


@pytest.mark.timeout(60)
def test_the_starter_fails_without_hanging():
    wrong = failing(ex.check_tracker(Starter))
    assert set(wrong) == set(CASES) - {"next_check is None when nothing is tracked"}
    assert "would spin" in wrong["a touch resets the idle time"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("answer", WRONG, ids=list(WRONG))
def test_a_plausible_wrong_tracker_fails_with_its_cause(answer):
    make, hint = WRONG[answer]
    wrong = failing(ex.check_tracker(make))
    assert wrong and any(hint in why for why in wrong.values()), wrong


def test_every_tracker_case_is_failed_by_some_wrong_answer():
    failed = set()
    for make, _ in WRONG.values():
        failed |= set(failing(ex.check_tracker(make)))
    assert failed == set(CASES)


def test_report_prints_each_failure_and_the_verdict(capsys):
    ex.report([("case", "why")], 3, "solutions/x.py")
    ex.report([], 3, "solutions/x.py")
    out = capsys.readouterr().out
    assert "✗ case: why\n1 of 3 cases fail: keep going (a solution is in solutions/x.py)" in out
    assert "✓ all 3 cases pass" in out


# --- 02: send_reload, against a real server -----------------------------------------------------


@pytest.fixture
def lab_server():  # one per test: a reload forks new workers, which belong to that test
    from lab.playground import Lab

    with Lab(workers=1, watch=False) as server:
        yield server


def naive_int(pidfile):
    import os
    import signal

    pid = int(open(pidfile).read())  # the file holds "PID STARTTIME"
    os.kill(pid, signal.SIGUSR1)
    return pid


def probe_only(pidfile):
    import os

    pid = int(open(pidfile).read().split()[0])
    os.kill(pid, 0)  # checks the process exists, sends nothing
    return pid


def swallow(pidfile):
    try:
        return solved("02_hot_reload", "exercise-signal", "send_reload")(pidfile)
    except Exception:
        return None  # "nothing to reload": looks like success


def test_send_reload_starter_fails_and_solution_passes(lab_server):
    stub = failing(ex.check_send_reload(starter("02_hot_reload", "exercise-signal", "send_reload"), lab_server, 3))
    assert "returned 0" in stub["reads the master's pid"] and "not tried" in stub["the master reloads"]
    assert failing(ex.check_send_reload(solved("02_hot_reload", "exercise-signal", "send_reload"), lab_server)) == {}


@pytest.mark.parametrize(
    "answer, case, hint",
    [
        (naive_int, "reads the master's pid", "take the first field"),
        (probe_only, "the master reloads", "send SIGUSR1"),
        (swallow, "a missing pid file raises", "must not look like success"),
        (swallow, "a pid file that holds no pid raises", "must not look like success"),
    ],
)
def test_send_reload_wrong_answers_get_their_hint(lab_server, answer, case, hint):
    assert hint in failing(ex.check_send_reload(answer, lab_server, 3))[case]
