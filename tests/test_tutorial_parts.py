"""The tutorial's own code (lab/tutorial/): its weak spots happen when it runs, as the notebooks show."""

from __future__ import annotations

import asyncio
import os
import time

from inotify_simple import flags

from lab.tutorial.heartbeat import SwooleTimers, TutorialHeartbeat
from lab.tutorial.inotify import IN_MOVE, Inotify, action, strchr


async def settle(condition, timeout: float = 10.0) -> None:
    """Let the loop run until ``condition()`` holds (a deadline, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not happen in time"
        await asyncio.sleep(0.01)


def run_watcher(root, act, until):
    """Start the tutorial's Inotify on ``root``, run ``act()``, wait for ``until(watcher, got)``."""
    got: list[dict] = []

    async def main():
        watcher = Inotify(root, got.append)
        watcher.add_file_type("py")
        watcher.start()
        act()
        await settle(lambda: until(watcher, got))
        await asyncio.sleep(0.3)  # anything late would show up in `got` now
        watcher.stop()
        return watcher

    return asyncio.run(main()), got


def test_a_burst_reaches_the_handler_as_its_first_record_and_doing_drops_the_rest(tmp_path):
    app = tmp_path / "app.py"
    app.write_text("x = 1\n")

    def vim_save():
        os.rename(app, tmp_path / "app.py~")
        app.write_text("x = 2\n")
        (tmp_path / "app.py~").unlink()
        for k in range(5):
            app.write_text(f"x = {k}\n")

    watcher, got = run_watcher(tmp_path, vim_save, lambda w, got: got)
    assert len(got) == 1 and watcher.delivered == 1
    assert got[0]["name"] == "app.py" and got[0]["mask"] == flags.MOVED_FROM  # moved away: not what happened
    assert watcher.dropped >= 5
    assert action(got[0]["mask"]) == "file:"  # the switch never names a move


def test_files_in_a_directory_made_after_start_are_missed(tmp_path):
    (tmp_path / "old").mkdir()

    def new_package():
        (tmp_path / "routes").mkdir()
        (tmp_path / "routes" / "users.py").write_text("ROUTES = []\n")
        (tmp_path / "old" / "seen.py").write_text("x = 1\n")

    watcher, got = run_watcher(tmp_path, new_package, lambda w, got: w.records >= 2)
    assert [e["name"] for e in got] == ["seen.py"]
    assert "users.py" not in {e["name"] for e in got}


def test_each_directory_is_added_twice_and_types_start_at_the_first_dot(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    watcher = Inotify(tmp_path, print)
    try:
        assert watcher.add_watch_calls == 6 and watcher.get_watched_file_count() == 3
    finally:
        watcher.fd.close()
    assert strchr("a.b.php", ".") == ".b.php" and strchr("4913", ".") is None


def test_the_mask_switch_never_matches_a_move_or_a_directory():
    assert action(flags.CREATE) == "IN_CREATE" and action(flags.MODIFY) == "IN_MODIF"
    assert action(flags.MOVED_FROM) == action(flags.MOVED_TO) == "file:"
    assert action(flags.CREATE | flags.ISDIR) == "file:" and IN_MOVE == 0xC0


def test_swoole_timer_clear_removes_the_timer_at_once():
    timers, fired = SwooleTimers(), []
    ids = [timers.after(0.0, ms, lambda ms=ms: fired.append(ms)) for ms in (300, 100, 200, 400)]
    assert timers.clear(ids[0]) and not timers.clear(ids[0]) and len(timers) == 3
    assert timers.next_deadline() == 0.1
    assert timers.run(0.25) == 2 and fired == [100, 200] and len(timers) == 1


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t


def heartbeat(interval: float, clock: Clock):
    closed: list = []
    timers = SwooleTimers()
    hb = TutorialHeartbeat(interval, closed.append, timers, lambda: clock.t, lambda: int(clock.t))
    return hb, timers, closed


def test_a_client_that_never_sends_is_never_closed():
    clock = Clock()
    hb, timers, closed = heartbeat(1.0, clock)
    for _ in range(100):  # a silent connection: no read, so no timer
        clock.t += 1.0
        timers.run(clock.t)
    assert closed == [] and len(timers) == 0


def test_a_client_that_talked_is_closed_after_the_interval():
    clock = Clock(1000.2)
    hb, timers, closed = heartbeat(1.0, clock)
    hb.before_read("c")
    hb.on_read("c")
    hb.before_read("c")
    hb.on_read("c")  # a second message replaces the timer
    assert timers.created == 2 and timers.cleared == 1 and len(timers) == 1
    clock.t += 1.0
    timers.run(clock.t)
    assert closed == ["c"]


def test_whole_seconds_leave_a_sub_second_heartbeat_open_for_good():
    clock = Clock(1000.2)  # time() says 1000 for the message and for the check 0.5 s later
    hb, timers, closed = heartbeat(0.5, clock)
    hb.before_read("c")
    hb.on_read("c")
    clock.t += 0.5
    timers.run(clock.t)
    assert closed == [] and len(timers) == 0  # the check failed and no timer is left
