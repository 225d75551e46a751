"""The reload's promises, unit-tested on the pure state machine: a fake clock, no process.

``Harness`` plays the master: it answers each ``Spawn`` with made-up pids, records what is sent,
killed and emitted, and calls ``tick`` only when a ``CallLater`` asked for it (as the reactor
does), so a deadline the supervisor forgets to ask for shows up as a failing test.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from lab import actions, handover, pool, reload
from lab import supervisor as sv
from lab.actions import CallLater, Emit, Exit, Kill, KillSuccessor, Send, Spawn, StartUpgrade, Tell
from lab.pool import WorkerState
from lab.supervisor import Supervisor, summarize_traceback

DRAIN_CONFIRM_WAIT = 0.075
TRACEBACK = (
    'Traceback (most recent call last):\n  File "/srv/app/app.py", line 3, in <module>\n'
    "    import nothing\nModuleNotFoundError: No module named 'nothing'\n"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(
        self, workers: int = 2, graceful_timeout: float = 30.0, worker_timeout: float | None = None, **upgrade: Any
    ):
        self.clock = FakeClock()
        self.sup = Supervisor(
            workers,
            graceful_timeout,
            worker_timeout,
            DRAIN_CONFIRM_WAIT,
            clock=self.clock,
            random=lambda: 0.5,
            **upgrade,
        )
        self.next_pid = 100
        self.fork_errors = 0  # the next this many forks fail
        self.live: dict[int, tuple[int, int]] = {}  # pid -> (generation, index)
        self.sent: list[tuple[int, str]] = []
        self.killed: list[int] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.wakes: list[float] = []
        self.exits = 0  # Exit actions
        self.upgrades: list[int] = []  # StartUpgrade: the new master's first generation
        self.told: list[str] = []  # Tell: messages to the other master of an upgrade
        self.successor_kills = 0

    def do(self, actions: list) -> None:
        for action in actions:
            match action:
                case Spawn(generation, indexes):
                    self._spawn(generation, indexes)
                case Send(pid, order):
                    self.sent.append((pid, order))
                case Kill(pid):
                    self.killed.append(pid)
                case Emit(kind, fields):
                    self.events.append((kind, fields))
                case CallLater(delay):
                    assert delay >= 0
                    self.wakes.append(self.clock.now + delay)
                case Exit():
                    self.exits += 1
                case StartUpgrade(generation):
                    self.upgrades.append(generation)
                case KillSuccessor():
                    self.successor_kills += 1
                case Tell(message):
                    self.told.append(message)

    def _spawn(self, generation: int, indexes: tuple[int, ...]) -> None:
        for index in indexes:
            if self.fork_errors:
                self.fork_errors -= 1
                self.do(self.sup.fork_failed(generation, index, "[Errno 11] Resource temporarily unavailable"))
                return
            self.next_pid += 1
            self.live[self.next_pid] = (generation, index)
            self.do(self.sup.spawned(self.next_pid, generation, index))

    # --- what happens ------------------------------------------------------------------------------

    def advance(self, seconds: float, stalled: bool = False) -> None:
        """Time passes; each tick asked for comes on time (or, ``stalled``, all at the end)."""
        end = self.clock.now + seconds
        if stalled:
            self.clock.now = end
        while due := [w for w in self.wakes if w <= end]:
            self.wakes.remove(min(due))
            self.clock.now = max(self.clock.now, min(due))
            self.do(self.sup.tick())
        self.clock.now = end

    def trigger(self, name: str = "SIGUSR1") -> None:
        self.do(self.sup.trigger(name, self.clock.now))

    def ready(self, *pids: int) -> None:
        for pid in pids:
            self.do(self.sup.heard(pid))
            self.do(self.sup.ready(pid))

    def draining(self, *pids: int) -> None:
        for pid in pids:
            self.do(self.sup.draining(pid))

    def exit(self, *pids: int, **how: Any) -> None:
        for pid in pids:
            del self.live[pid]
            self.do(self.sup.exited(pid, how or {"code": 0}))

    def reap_killed(self) -> None:
        self.exit(*[pid for pid in self.killed if pid in self.live], signal="SIGKILL")

    def start(self) -> list[int]:
        """Generation 1 started and serving: its pids."""
        self.trigger("start")
        self.ready(*self.of(1))
        return self.of(1)

    def reload(self) -> list[int]:
        """A whole reload: new generation ready, old ones drain and exit; the new pids."""
        old = [pid for pid in self.live if self.sup.pool.workers[pid].state is WorkerState.SERVING]
        self.trigger()
        new = self.of(max(g for g, _ in self.live.values()))
        self.ready(*new)
        self.draining(*old)
        self.exit(*old)
        return new

    # --- what it did -------------------------------------------------------------------------------

    def of(self, generation: int) -> list[int]:
        return [pid for pid, (g, _) in sorted(self.live.items()) if g == generation]

    def kinds(self, prefix: str = "") -> list[str]:
        return [kind for kind, _ in self.events if kind.startswith(prefix)]

    def find(self, kind: str) -> list[dict[str, Any]]:
        return [fields for k, fields in self.events if k == kind]

    def orders(self, order: str) -> list[int]:
        return [pid for pid, o in self.sent if o == order]


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_the_first_generation_starts_serving(h):
    pids = h.start()
    assert len(pids) == 2 and h.orders("go") == pids and h.orders("drain") == []
    done = h.find("reload.done")
    assert done == [
        {
            "generation": 1,
            "trigger": "start",
            "duration": 0.0,
            "phases": {"seen": 1000.0, "forked": 1000.0, "ready": 1000.0, "serving": 1000.0, "old_gone": 1000.0},
        }
    ]


def test_a_burst_of_triggers_queues_exactly_one_more_reload(h):
    h.start()
    for _ in range(100):
        h.trigger()
    assert h.find("reload.start")[1:] == [{"generation": 2, "trigger": "SIGUSR1"}]
    h.ready(*h.of(2))
    assert h.find("reload.start")[2:] == [{"generation": 3, "trigger": "SIGUSR1"}], "one, right after"
    h.ready(*h.of(3))
    h.draining(*h.of(1), *h.of(2))
    h.exit(*h.of(1), *h.of(2))
    assert [e["generation"] for e in h.find("reload.done")] == [1, 2, 3]
    assert h.sup.pending is None and h.sup.queued is None


def test_no_go_before_every_old_worker_stopped_accepting(h):
    old = h.start()
    h.trigger()
    new = h.of(2)
    h.ready(new[0])
    assert h.orders("drain") == [], "not before the whole new generation is ready"
    h.ready(new[1])
    assert h.orders("drain") == old
    assert h.orders("go") == old, "the new generation waits"
    h.draining(old[0])
    assert h.orders("go") == old
    h.draining(old[1])
    assert h.orders("go") == old + new
    assert h.find("reload.done")[1:] == []
    h.exit(*old)
    done = h.find("reload.done")[1]
    assert done["generation"] == 2 and list(done["phases"]) == ["seen", "forked", "ready", "serving", "old_gone"]


def test_quiet_only_while_serving_with_nothing_under_way(h):
    """The master forks its standbys only then: never while a reload waits for ``go``."""
    assert not h.sup.quiet(), "not serving yet"
    old = h.start()
    assert h.sup.quiet()
    h.trigger()
    assert not h.sup.quiet(), "a generation imports"
    h.ready(*h.of(2))
    assert not h.sup.quiet(), "old workers have not confirmed their drain"
    h.draining(*old)
    assert h.sup.quiet(), "told go: old workers finishing their requests hold nothing up"
    h.trigger()
    h.do(h.sup.failed(h.of(3)[0], TRACEBACK))
    assert h.sup.quiet(), "a failed reload is over"
    h.do(h.sup.upgrade("SIGUSR2"))
    assert not h.sup.quiet(), "a new master starts"
    h.do(h.sup.successor_failed(TRACEBACK))
    assert h.sup.quiet()
    h.do(h.sup.stop(graceful=True))
    assert not h.sup.quiet()


def test_an_old_worker_that_exits_without_confirming_cannot_accept_either(h):
    old = h.start()
    h.trigger()
    h.ready(*h.of(2))
    h.draining(old[0])
    h.exit(old[1], signal="SIGKILL")
    assert h.orders("go") == old + h.of(2)
    assert h.find("worker.exit")[-1] == {"pid": old[1], "generation": 1, "index": 1, "signal": "SIGKILL"}


def test_a_worker_stuck_in_app_code_holds_up_go_only_for_the_drain_confirm_wait(h):
    old = h.start()
    h.trigger()
    h.ready(*h.of(2))
    h.draining(old[0])
    h.advance(DRAIN_CONFIRM_WAIT * 0.9)
    assert h.orders("go") == old and h.kinds("worker.unresponsive") == []
    h.advance(DRAIN_CONFIRM_WAIT * 0.2)
    assert h.orders("go") == old + h.of(2)
    assert h.find("worker.unresponsive") == [{"pid": old[1], "generation": 1, "index": 1, "waited": DRAIN_CONFIRM_WAIT}]
    h.draining(old[1])  # late: changes nothing
    h.exit(*old)
    assert h.find("reload.done")[-1]["generation"] == 2


def test_a_failed_import_keeps_the_old_generation_and_the_next_trigger_retries(h):
    old = h.start()
    h.trigger()
    new = h.of(2)
    h.ready(new[0])
    h.do(h.sup.failed(new[1], TRACEBACK))
    assert h.find("reload.failed") == [
        {
            "generation": 2,
            "trigger": "SIGUSR1",
            "traceback": TRACEBACK,
            "error": "ModuleNotFoundError: No module named 'nothing' (app.py:3)",
        }
    ]
    assert sorted(h.killed) == new and h.orders("drain") == [], "the old generation keeps serving"
    h.reap_killed()
    assert h.of(1) == old and h.of(2) == [], "no replacement for the failed generation"
    h.trigger()
    assert h.find("reload.start")[-1] == {"generation": 3, "trigger": "SIGUSR1"}
    h.ready(*h.of(3))
    assert h.orders("drain") == old


def test_a_trigger_during_a_failed_reload_is_retried_after_it(h):
    h.start()
    h.trigger()
    h.trigger("watch")
    h.do(h.sup.failed(h.of(2)[0], TRACEBACK))
    assert h.kinds("reload.") == ["reload.start", "reload.done", "reload.start", "reload.failed", "reload.start"]
    assert h.find("reload.start")[-1] == {"generation": 3, "trigger": "watch"}


def test_a_worker_that_dies_before_its_generation_is_ready_fails_the_reload(h):
    h.start()
    h.trigger()
    h.exit(h.of(2)[0], code=3)
    failed = h.find("reload.failed")[0]
    assert failed["traceback"] == "worker 0 of generation 2 exited before its generation was ready ({'code': 3})\n"


def test_a_first_generation_that_fails_stops_the_server(h):
    h.trigger("start")
    h.do(h.sup.failed(h.of(1)[0], TRACEBACK))
    assert h.sup.failed_start == "ModuleNotFoundError: No module named 'nothing' (app.py:3)"
    assert h.find("server.stopping") == [{"graceful": False}]
    assert sorted(h.killed) == h.of(1)
    h.reap_killed()
    assert h.exits == 1


def test_a_worker_that_dies_is_replaced_at_once_then_with_backoff_and_degraded(h):
    pids = h.start()
    h.exit(pids[0], signal="SIGSEGV")
    first = h.of(1)[-1]
    assert first not in pids and h.live[first] == (1, 0), "the first death: replaced at once"
    h.ready(first)
    assert h.orders("go")[-1] == first
    h.exit(first, signal="SIGSEGV")
    assert h.find("worker.backoff") == [{"generation": 1, "index": 0, "failures": 2, "delay": 0.1125}]
    assert len(h.of(1)) == 1
    h.advance(0.11)
    assert len(h.of(1)) == 1
    h.advance(0.01)
    second = h.of(1)[-1]
    h.exit(second, signal="SIGSEGV")
    h.advance(0.3)
    h.exit(h.of(1)[-1], signal="SIGSEGV")
    assert [e["failures"] for e in h.find("worker.backoff")] == [2, 3, 4]
    assert [e["delay"] for e in h.find("worker.backoff")] == [0.1125, 0.225, 0.45]
    assert h.find("server.degraded") == [{"reason": "crash loop", "generation": 1, "index": 0, "failures": 3}]
    h.advance(0.5)
    h.ready(h.of(1)[-1])
    h.reload()
    assert h.kinds("server.") == ["server.degraded", "server.recovered"]
    assert h.find("server.recovered") == [{"generation": 2}]
    assert h.sup.pool.crashes.failures == {}


def test_a_replacement_that_cannot_load_the_app_is_killed_and_backs_off(h):
    pids = h.start()
    h.exit(pids[0], signal="SIGSEGV")
    replacement = h.of(1)[-1]
    h.do(h.sup.failed(replacement, TRACEBACK))
    assert h.find("worker.failed") == [
        {
            "generation": 1,
            "index": 0,
            "traceback": TRACEBACK,
            "error": "ModuleNotFoundError: No module named 'nothing' (app.py:3)",
        }
    ]
    assert h.killed == [replacement]
    h.reap_killed()
    assert [e["failures"] for e in h.find("worker.backoff")] == [2]


def test_a_worker_that_lived_long_starts_a_new_streak(h):
    pids = h.start()
    h.exit(pids[0], signal="SIGSEGV")
    h.advance(pool.STABLE_AFTER)
    h.exit(h.of(1)[-1], signal="SIGSEGV")
    assert h.find("worker.backoff") == [] and len(h.of(1)) == 2


def test_a_replacement_during_a_reload_is_the_new_generation(h):
    old = h.start()
    h.trigger()
    h.exit(old[0], signal="SIGKILL")
    assert h.of(1) == [old[1]], "the new generation takes its place"
    h.ready(*h.of(2))
    assert h.orders("drain") == [old[1]]
    h.draining(old[1])
    h.exit(old[1])
    assert h.find("reload.done")[-1]["generation"] == 2


def test_a_reload_that_fails_tops_up_the_serving_generation(h):
    old = h.start()
    h.trigger()
    h.exit(old[0], signal="SIGKILL")
    h.do(h.sup.failed(h.of(2)[0], TRACEBACK))
    assert [h.live[pid] for pid in h.of(1)] == [(1, 1), (1, 0)]


def test_a_replacement_still_importing_at_a_commit_is_killed(h):
    old = h.start()
    h.exit(old[0], signal="SIGKILL")
    replacement = h.of(1)[-1]
    h.trigger()
    h.ready(*h.of(2))
    assert replacement in h.killed and h.orders("drain") == [old[1]]
    h.draining(old[1])
    assert h.orders("go")[-2:] == h.of(2)


def test_a_slow_import_is_reported_once_with_who_is_still_importing(h):
    h.start()
    h.trigger()
    new = h.of(2)
    h.ready(new[1])
    h.advance(sv.SLOW_IMPORT * 0.9)
    assert h.kinds("reload.slow") == []
    h.advance(sv.SLOW_IMPORT)
    assert h.find("reload.slow") == [
        {"generation": 2, "trigger": "SIGUSR1", "waited": sv.SLOW_IMPORT, "workers": [new[0]]}
    ]


def test_an_import_that_hangs_fails_after_the_ready_timeout(h):
    old = h.start()
    h.trigger()
    h.advance(sv.READY_TIMEOUT - 0.01)
    assert h.kinds("reload.failed") == []
    h.advance(0.02)
    assert h.find("reload.failed")[0]["error"] == "not ready after 60 s (an import that hangs?)"
    assert sorted(h.killed) == h.of(2) and h.of(1) == old


def test_a_trigger_supersedes_a_generation_importing_for_supersede_after(h):
    h.start()
    h.trigger()
    h.advance(sv.SUPERSEDE_AFTER * 0.5)
    h.trigger("watch")
    assert h.kinds("reload.superseded") == [], "a young generation is waited for"
    h.advance(sv.SUPERSEDE_AFTER * 0.6)
    assert h.find("reload.superseded") == [{"generation": 2, "trigger": "SIGUSR1", "importing": 0.5}]
    assert sorted(h.killed) == h.of(2)
    assert h.find("reload.start")[-1] == {"generation": 3, "trigger": "watch"}
    h.advance(sv.SUPERSEDE_AFTER * 2)
    h.trigger("watch")
    assert h.find("reload.superseded")[-1] == {"generation": 3, "trigger": "watch", "importing": 1.05}, "at once"
    assert h.find("reload.start")[-1]["generation"] == 4


def test_a_lone_trigger_never_supersedes(h):
    h.start()
    h.trigger()
    h.advance(sv.SUPERSEDE_AFTER * 3)
    assert h.kinds("reload.superseded") == [] and h.sup.pending.generation == 2


def test_a_draining_worker_is_killed_after_the_graceful_timeout():
    h = Harness(graceful_timeout=5.0)
    old = h.start()
    h.trigger()
    h.ready(*h.of(2))
    h.draining(*old)
    h.exit(old[0])
    h.advance(4.9)
    assert h.killed == []
    h.advance(0.2)
    assert h.killed == [old[1]]


def test_a_silent_worker_is_killed_after_the_worker_timeout():
    h = Harness(worker_timeout=4.0)
    talker, mute = h.start()
    for _ in range(6):
        h.advance(1.0)
        h.do(h.sup.heard(talker))
    assert h.find("worker.timeout") == [{"pid": mute, "generation": 1, "index": 1, "silent": 5.0}]
    assert h.killed == [mute]
    h.reap_killed()
    assert h.live[h.of(1)[-1]] == (1, 1), "replaced like any dead worker"


def test_a_stalled_master_does_not_blame_its_workers():
    h = Harness(worker_timeout=4.0)
    h.start()
    h.advance(1.0)
    h.advance(10.0, stalled=True)
    assert h.find("server.stalled") == [{"gap": 10.0}]
    h.advance(3.0)
    assert h.kinds("worker.timeout") == [], "silence counts from the end of the stall"
    h.advance(2.0)
    assert len(h.find("worker.timeout")) == 2


def test_a_stop_during_a_reload_drains_the_ready_and_drops_the_rest():
    h = Harness(graceful_timeout=1000.0)
    old = h.start()
    h.trigger()
    h.trigger()  # queued
    new = h.of(2)
    h.ready(new[0])
    h.do(h.sup.stop(graceful=True))
    assert h.find("server.stopping") == [{"graceful": True}]
    assert h.orders("drain") == old + [new[0]] and h.killed == [new[1]]
    h.trigger()
    h.advance(sv.READY_TIMEOUT * 2)
    assert h.kinds("reload.") == ["reload.start", "reload.done", "reload.start"], "nothing more of reloads"
    h.reap_killed()
    h.exit(*old, new[0])
    assert h.exits == 1 and h.orders("go") == old


def test_a_second_stop_means_now(h):
    old = h.start()
    h.do(h.sup.stop(graceful=True))
    assert h.orders("drain") == old and h.killed == []
    h.do(h.sup.stop(graceful=True))
    assert h.killed == old and h.find("server.stopping") == [{"graceful": True}]
    h.reap_killed()
    assert h.exits == 1


def test_a_fork_that_fails_fails_the_reload(h):
    old = h.start()
    h.fork_errors = 1
    h.trigger()
    assert h.find("reload.failed")[0]["traceback"] == "fork failed: [Errno 11] Resource temporarily unavailable\n"
    assert h.of(2) == [] and h.of(1) == old


def test_a_replacement_whose_fork_fails_is_tried_again_a_second_later(h):
    old = h.start()
    h.fork_errors = 1
    h.exit(old[0], signal="SIGKILL")
    assert h.find("worker.backoff") == [
        {
            "generation": 1,
            "index": 0,
            "failures": -1,
            "delay": 1.0,
            "error": "[Errno 11] Resource temporarily unavailable",
        }
    ]
    h.advance(0.9)
    assert h.of(1) == [old[1]]
    h.advance(0.2)
    assert h.live[h.of(1)[-1]] == (1, 0)


PURE = (sv, actions, handover, pool, reload)  # the state machine and its sub-machines


@pytest.mark.parametrize("module", PURE, ids=lambda m: m.__name__)
def test_the_state_machine_imports_no_io(module):
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module if node.module.startswith("lab.") else node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    allowed = {"__future__", "collections", "dataclasses", "enum", "re", "typing", "lab.vocabulary"}
    assert imported <= allowed | {m.__name__ for m in PURE}, imported


def test_summarize_traceback():
    assert summarize_traceback(TRACEBACK) == "ModuleNotFoundError: No module named 'nothing' (app.py:3)"
    assert summarize_traceback("") == "no traceback"
    assert summarize_traceback("fork failed: boom\n") == "fork failed: boom"


# --- upgrade: a new master takes over the listening socket -------------------------------------------


def test_an_upgrade_starts_a_new_master_numbered_on_and_keeps_serving_meanwhile(h):
    old = h.start()
    h.do(h.sup.upgrade("SIGUSR2"))
    assert h.upgrades == [2] and h.find("upgrade.start") == [{"trigger": "SIGUSR2", "generation": 2}]
    assert h.orders("drain") == [] and h.told == [], "nothing changes until the new master is ready"
    h.exit(old[0], signal="SIGKILL")
    assert h.of(1) == [old[1], h.next_pid], "a worker that dies meanwhile is replaced"


def test_a_trigger_during_an_upgrade_waits_for_its_outcome(h):
    h.start()
    h.do(h.sup.upgrade("SIGUSR2"))
    h.trigger("watch")
    assert h.find("reload.start")[1:] == [], "no generation numbered like the new master's"
    h.do(h.sup.successor_failed(TRACEBACK))
    assert h.find("reload.start")[1:] == [{"generation": 2, "trigger": "watch"}], "carried out now"


def test_a_trigger_during_an_upgrade_is_dropped_once_the_new_master_is_ready(h):
    old = h.start()
    h.do(h.sup.upgrade("SIGUSR2"))
    h.trigger("watch")
    h.do(h.sup.successor_ready())
    h.draining(*old)
    h.exit(*old)
    assert h.find("reload.start")[1:] == [] and h.exits == 1


def test_a_reload_under_way_when_an_upgrade_starts_is_numbered_before_the_new_master(h):
    h.start()
    h.trigger()
    h.do(h.sup.upgrade("SIGUSR2"))
    assert h.upgrades == [3]
    h.ready(*h.of(2))
    assert h.find("reload.start")[2:] == []


def test_old_workers_drain_once_the_new_master_is_ready_and_it_is_told_when_none_accepts(h):
    old = h.start()
    h.do(h.sup.upgrade("SIGUSR2"))
    h.do(h.sup.successor_ready())
    assert h.orders("drain") == old and h.told == []
    h.draining(old[0])
    assert h.told == [], "one old worker may still accept"
    h.draining(old[1])
    assert h.told == ["drained"] and h.kinds("upgrade.") == ["upgrade.start", "upgrade.ready", "upgrade.handed_over"]
    assert h.exits == 0
    h.exit(*old)
    assert h.exits == 1 and h.told == ["drained"], "the old master exits once its workers are gone"


def test_a_reload_under_way_at_the_handover_is_dropped(h):
    old = h.start()
    h.trigger()
    starting = h.of(2)
    h.do(h.sup.upgrade("SIGUSR2"))
    h.do(h.sup.successor_ready())
    assert len(starting) == 2 and sorted(h.killed) == starting and h.orders("drain") == old
    h.exit(old[0])
    h.draining(old[1])
    assert h.told == ["drained"]


def test_an_old_worker_stuck_in_app_code_holds_the_handover_only_for_the_drain_confirm_wait(h):
    old = h.start()
    h.do(h.sup.upgrade("watch"))
    h.do(h.sup.successor_ready())
    h.draining(old[0])
    h.advance(DRAIN_CONFIRM_WAIT * 0.9)
    assert h.told == []
    h.advance(DRAIN_CONFIRM_WAIT * 0.2)
    assert h.told == ["drained"] and [e["pid"] for e in h.find("worker.unresponsive")] == [old[1]]


def test_a_new_master_that_fails_leaves_the_old_one_serving(h):
    old = h.start()
    h.do(h.sup.upgrade("SIGUSR2"))
    h.do(h.sup.successor_failed(TRACEBACK))
    failed = h.find("upgrade.failed")
    assert failed == [
        {
            "trigger": "SIGUSR2",
            "error": "ModuleNotFoundError: No module named 'nothing' (app.py:3)",
            "detail": TRACEBACK,
        }
    ]
    assert h.orders("drain") == [] and h.told == [] and all(pid in h.live for pid in old)
    h.do(h.sup.successor_ready())
    assert h.orders("drain") == [], "a late word of a failed new master counts for nothing"
    h.do(h.sup.upgrade("SIGUSR2"))
    assert h.upgrades == [2, 2], "a later upgrade may try again"


def test_a_new_master_not_ready_in_time_is_killed(h):
    h.start()
    h.do(h.sup.upgrade("SIGUSR2"))
    h.advance(sv.UPGRADE_TIMEOUT - 1)
    assert h.successor_kills == 0
    h.advance(2)
    assert h.successor_kills == 1 and h.find("upgrade.failed")[0]["error"].startswith("the new master was not ready")
    assert h.orders("drain") == []


@pytest.mark.parametrize("when", ["before serving", "during an upgrade", "stopping"])
def test_an_upgrade_is_refused_when_it_cannot_be_done(h, when):
    if when != "before serving":
        h.start()
    if when == "during an upgrade":
        h.do(h.sup.upgrade("SIGUSR2"))
    if when == "stopping":
        h.do(h.sup.stop(graceful=True))
    h.do(h.sup.upgrade("SIGUSR2"))
    assert len(h.upgrades) == (1 if when == "during an upgrade" else 0)
    assert len(h.find("upgrade.refused")) == 1


def test_a_stop_while_the_new_master_starts_stops_it_too(h):
    h.start()
    h.do(h.sup.upgrade("SIGUSR2"))
    h.do(h.sup.stop(graceful=True))
    assert h.successor_kills == 1 and h.find("upgrade.failed")[0]["error"] == "the server is stopping"


def test_the_new_master_says_ready_and_waits_for_the_old_workers_drain_before_go():
    h = Harness(first_generation=5, successor=True)
    h.trigger("upgrade")
    new = h.of(5)
    h.ready(new[0])
    assert h.told == []
    h.ready(new[1])
    assert h.told == ["ready"] and h.orders("go") == [], "no go while old workers may accept"
    h.do(h.sup.predecessor_drained())
    assert h.orders("go") == new and h.find("upgrade.serving") == [{"generation": 5}]
    assert h.find("reload.done")[0]["generation"] == 5
    h.do(h.sup.predecessor_drained())
    assert h.orders("go") == new and h.told == ["ready"], "once"


def test_a_new_master_whose_first_generation_fails_ends():
    h = Harness(first_generation=3, successor=True)
    h.trigger("upgrade")
    h.do(h.sup.failed(h.of(3)[0], TRACEBACK))
    assert h.sup.failed_start and h.told == []
    h.reap_killed()
    assert h.exits == 1


def test_a_new_master_lost_after_it_said_ready_is_replaced_by_a_generation_of_our_own(h):
    old = h.start()
    h.do(h.sup.upgrade("SIGUSR2"))
    h.do(h.sup.successor_ready())
    h.draining(old[0])
    h.do(h.sup.successor_failed("the new master exited before it was ready\n"))
    assert h.find("upgrade.failed")[0]["error"] == "the new master exited before it was ready"
    assert h.find("reload.start")[1:] == [{"generation": 2, "trigger": "upgrade.failed"}]
    h.ready(*h.of(2))
    assert h.orders("go") == old, "not while an old worker may still accept"
    h.draining(old[1])
    assert h.orders("go") == old + h.of(2)
    h.exit(*old)
    assert h.exits == 0 and h.told == [] and h.find("reload.done")[-1]["generation"] == 2


def test_a_new_master_lost_during_a_stop_is_not_replaced(h):
    old = h.start()
    h.do(h.sup.upgrade("SIGUSR2"))
    h.do(h.sup.successor_ready())
    h.do(h.sup.stop(graceful=True))
    h.do(h.sup.successor_failed("gone\n"))
    assert h.find("reload.start")[1:] == []
    h.exit(*old)
    assert h.exits == 1
