"""Hot reload with real processes: triggers, new code answering, failures refused, no lost request."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from server_helpers import VERSIONED_APP, ask, run_cli, wait_until, write_app
from test_watch_walk import quiet

from lab.events import Kind


def test_a_watched_change_reloads_and_the_new_code_answers(serve, app_dir):
    server = serve(app_dir=app_dir, args=("--watch", str(app_dir)))
    assert server.ask() == "v1"
    # Same size, same second as the first version: a .pyc check by mtime+size would load "v1".
    write_app(app_dir, "v2")
    done = server.wait_event(Kind.RELOAD_DONE, generation=2)
    assert server.ask() == "v2"
    change = server.find(Kind.WATCH_CHANGE)[0]
    assert str(app_dir / "app.py") in change["paths"]
    assert done["trigger"] == "watch"
    phases = done["phases"]
    assert phases["seen"] <= phases["forked"] <= phases["ready"] <= phases["serving"] <= phases["old_gone"]
    assert not list(app_dir.rglob("*.pyc")), "workers must not write bytecode into the watched tree"


def test_a_quiet_watched_folder_is_listed_at_start_so_a_save_by_rename_is_exact(serve, app_dir):
    """Set-up leaves a quiet folder's listing to the first poll: the master polls at once, so a
    later save is measured against the folder as it was, not reported as a rescan."""
    server = serve(app_dir=quiet(app_dir), args=("--watch", str(app_dir)))
    assert server.ask() == "v1"
    temp = app_dir / "app.py.new"  # not a .py file: never reported itself
    write_app(app_dir, "v2", name=temp.name)
    os.rename(temp, app_dir / "app.py")
    server.wait_event(Kind.RELOAD_DONE, generation=2)
    assert server.ask() == "v2"
    change = server.find(Kind.WATCH_CHANGE)[0]
    assert (change["kinds"], change["paths"]) == (["modified"], [str(app_dir / "app.py")])


@pytest.mark.parametrize("trigger", ["SIGUSR1", "SIGHUP", "cli"])
def test_signals_and_the_cli_reload(serve, app_dir, tmp_path, trigger):
    server = serve(app_dir=app_dir)
    old = set(server.worker_pids(1))
    write_app(app_dir, "v2")
    assert server.ask() == "v1", "without a watch, an edit changes nothing until a reload"
    if trigger == "cli":
        result = run_cli("reload", "--pidfile", str(server.pidfile))
        assert result.returncode == 0, result.stderr
    else:
        server.signal(getattr(signal, trigger))
    done = server.wait_event(Kind.RELOAD_DONE, generation=2)
    assert done["trigger"] == ("SIGUSR1" if trigger == "cli" else trigger)
    assert server.ask() == "v2"
    server.wait_event(Kind.WORKER_EXIT, count=2)
    assert old <= {e["pid"] for e in server.find(Kind.WORKER_EXIT)}
    assert all(e["code"] == 0 for e in server.find(Kind.WORKER_EXIT)), "old workers drain and exit cleanly"


def test_a_broken_app_is_refused_and_a_fix_recovers(serve, app_dir):
    server = serve(app_dir=app_dir)
    (app_dir / "app.py").write_text("def on_receive(server, conn, data)\n    pass\n")
    server.signal(signal.SIGUSR1)
    failed = server.wait_event(Kind.RELOAD_FAILED, generation=2)
    assert "SyntaxError" in failed["traceback"] and "app.py" in failed["traceback"]
    assert "SyntaxError" in failed["error"]
    assert server.ask() == "v1", "the old generation keeps serving"
    wait_until(
        lambda: all(e["generation"] == 1 for e in server.find(Kind.WORKER_START) if e["pid"] in server.worker_pids()),
        message="new generation removed",
    )
    write_app(app_dir, "v3")
    server.signal(signal.SIGUSR1)
    server.wait_event(Kind.RELOAD_DONE, generation=3)
    assert server.ask() == "v3"


def test_an_app_without_on_receive_is_refused(serve, app_dir):
    server = serve(app_dir=app_dir)
    (app_dir / "app.py").write_text("TEXT = 'no callbacks here'\n")
    server.signal(signal.SIGUSR1)
    failed = server.wait_event(Kind.RELOAD_FAILED, generation=2)
    assert "on_receive" in failed["error"]
    assert server.ask() == "v1"


def test_no_failed_request_and_no_old_answer_across_reloads(serve, app_dir):
    server = serve(app_dir=app_dir)
    stop = threading.Event()
    answers: list[list[str]] = [[] for _ in range(4)]
    failures: list[str] = []

    def client(mine: list[str]) -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                mine.append(ask(server.port))
            except OSError as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(a,)) for a in answers]
    for t in threads:
        t.start()
    try:
        for version in range(2, 7):
            write_app(app_dir, f"v{version}")
            server.reload()
            wait_until(
                lambda v=version: all(a and a[-1] == f"v{v}" for a in answers),
                10,
                message=f"every client sees v{version}",
            )
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    for mine in answers:
        versions = [int(a[1:]) for a in mine]
        assert versions == sorted(versions), "after a new answer, never an old one"
        assert versions[-1] == 6
    assert sum(map(len, answers)) > 100


def test_in_flight_requests_finish_on_the_old_code(serve, app_dir):
    server = serve(app_dir=app_dir)
    # Generous timeouts: each recv returns as soon as its answer or close arrives, even under load.
    slow, idle, silent = (socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(3))
    try:
        # Only these three connections are ours to judge; the probes below open more, and one that
        # lands on an old worker while it drains is closed as "drain" too.
        mine = {f"127.0.0.1:{s.getsockname()[1]}" for s in (slow, idle, silent)}
        idle.sendall(b"hi\n")
        assert idle.recv(100) == b"v1\n"
        slow.sendall(b"slow 0.6\n")
        opened = wait_until(
            lambda: _all([e for e in server.find(Kind.CONN_OPEN) if e["peer"] in mine], 3),
            30,
            message="our 3 connections accepted",
        )
        write_app(app_dir, "v2")
        server.signal(signal.SIGUSR1)
        server.wait_event(Kind.RELOAD_START, generation=2, timeout=30)
        wait_until(lambda: server.ask() == "v2", 30, message="new code answering")
        assert slow.recv(100) == b"v1 slow\n", "the old worker finished the request it had"
        assert idle.recv(100) == b"", "an idle keep-alive connection is closed by the drain"
        assert silent.recv(100) == b"", "a connection that never sent is closed after a grace time"
        server.wait_event(Kind.RELOAD_DONE, generation=2, timeout=30)
        keys = {(e["pid"], e["conn"]) for e in opened}
        closed = wait_until(
            lambda: _all([e for e in server.find(Kind.CONN_CLOSE) if (e["pid"], e["conn"]) in keys], 3),
            30,
            message="our 3 connections closed",
        )
        assert [(e["generation"], e["reason"]) for e in closed] == [(1, "drain")] * 3, closed
        assert not server.find(Kind.WORKER_EXIT, signal="SIGKILL"), "all left before the graceful timeout"
    finally:
        slow.close()
        idle.close()
        silent.close()


def _all(found: list[dict], n: int) -> list[dict] | None:
    """``found`` once it has all ``n`` events we wait for."""
    return found if len(found) == n else None


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "T"


def test_a_burst_of_triggers_during_a_reload_queues_exactly_one_more(serve, app_dir):
    # The decision is unit-tested in test_supervisor.py; this is the same promise with real signals.
    # A stopped master keeps one of each signal pending, however many come: once continued, it
    # handles SIGHUP (lower numbers first), which starts generation 2, then SIGUSR1, during it.
    server = serve(app_dir=app_dir)
    server.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: _stopped(server.pid), message="the master is stopped")
        for _ in range(100):
            server.signal(signal.SIGHUP)
            server.signal(signal.SIGUSR1)
    finally:
        server.signal(signal.SIGCONT)
    server.wait_event(Kind.RELOAD_DONE, generation=3)
    server.reload()  # a sentinel: generation 4 only if the burst caused exactly two reloads
    assert [e["trigger"] for e in server.find(Kind.RELOAD_START)] == ["start", "SIGHUP", "SIGUSR1", "SIGUSR1"]
    assert server.ask() == "v1"


def test_files_the_server_writes_never_trigger_a_reload(serve, tmp_path):
    # Events and pid file inside the watched tree, with their suffixes watched: still no reload.
    write_app(tmp_path, "v1")
    server = serve(app_dir=tmp_path, args=("--watch", str(tmp_path), "--types", ".py,.jsonl,.pid"))
    for _ in range(20):
        assert server.ask() == "v1"  # each request writes conn.open/conn.close events
    server.reload()  # a reload writes events and forks workers that import app.py
    write_app(tmp_path, "v2")
    server.wait_event(Kind.RELOAD_DONE, generation=3)
    server.reload()  # a sentinel: a reload caused by our own writes would show up before it
    assert [e["trigger"] for e in server.find(Kind.RELOAD_START)] == ["start", "SIGUSR1", "watch", "SIGUSR1"]
    assert not list(tmp_path.rglob("*.pyc"))


def test_a_stale_pyc_is_never_used(serve, app_dir):
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(app_dir)], check=True)
    before = (app_dir / "app.py").stat()
    server = serve(app_dir=app_dir)
    write_app(app_dir, "v2")  # same size; give it the old mtime too: the .pyc now looks valid
    os.utime(app_dir / "app.py", ns=(before.st_atime_ns, before.st_mtime_ns))
    server.reload()
    assert server.ask() == "v2"


def test_a_refused_generation_shows_the_apps_frames_only(serve, app_dir):
    # The traceback a learner reads names the app's file and line, not the lab's loader's frames.
    server = serve(app_dir=app_dir)
    (app_dir / "app.py").write_text('TEXT = "oops\n')
    server.signal(signal.SIGUSR1)
    failed = server.wait_event(Kind.RELOAD_FAILED)
    assert "SyntaxError" in failed["traceback"] and "app.py" in failed["traceback"]
    assert "lab/" not in failed["traceback"] and "Traceback (most recent call last)" not in failed["traceback"]


# The app notes each process that imports it (in the server's folder: not watched, not the lab's).
NOTING_APP = 'with open("imported.txt", "a") as _f:\n    _f.write("%d\\n" % __import__("os").getpid())\n\n'


def _standbys(server) -> set[int]:
    return {e["pid"] for e in server.find(Kind.WORKER_STANDBY)}


def test_a_reload_starts_standbys_forked_ahead_that_import_the_app_only_then(serve, app_dir):
    write_app(app_dir, "v1", source=NOTING_APP + VERSIONED_APP)
    server = serve(app_dir=app_dir)
    standbys = wait_until(lambda: len(_standbys(server)) == 2 and _standbys(server), message="standbys forked ahead")

    def imported() -> set[int]:
        return {int(pid) for pid in (server.tmp / "imported.txt").read_text().split()}

    assert len(imported()) == 2 and not standbys & imported(), "a standby has imported nothing of the app"
    write_app(app_dir, "v2", source=NOTING_APP + VERSIONED_APP)
    server.reload()
    assert set(server.worker_pids(2)) == standbys and standbys <= imported()
    assert server.ask() == "v2"
    # A standby that dies is forgotten: the next reload forks what it lacks, and loads the new code.
    spares = wait_until(
        lambda: len(_standbys(server) - standbys) == 2 and _standbys(server) - standbys, message="spares"
    )
    os.kill(min(spares), signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{min(spares)}"), message="the standby reaped by the master")
    write_app(app_dir, "v3", source=NOTING_APP + VERSIONED_APP)
    server.reload()
    assert max(spares) in server.worker_pids(3) and min(spares) not in server.worker_pids(3)
    assert len(server.worker_pids(3)) == 2 and server.ask() == "v3"


def test_a_standby_not_needed_by_a_replacement_starts_when_told_later(serve, app_dir):
    server = serve(app_dir=app_dir)
    standbys = wait_until(lambda: len(_standbys(server)) == 2 and _standbys(server), message="standbys forked ahead")
    os.kill(server.worker_pids(1)[0], signal.SIGKILL)
    replacement = server.wait_event(Kind.WORKER_START, count=3)
    assert replacement["generation"] == 1 and replacement["pid"] in standbys
    write_app(app_dir, "v2")
    server.reload()
    assert standbys - {replacement["pid"]} <= set(server.worker_pids(2)), "the other one, let go without an order"
    assert server.ask() == "v2"


def test_a_standby_told_to_start_but_not_yet_run_is_never_locked_out(serve, app_dir):
    # A busy machine, made on demand: the standbys are stopped when one is told to replace a dead
    # worker, and stay stopped while the master forks new standbys (which holds a latch again).
    server = serve(app_dir=app_dir)
    standbys = wait_until(lambda: len(_standbys(server)) == 2 and _standbys(server), message="standbys forked ahead")
    for pid in standbys:
        os.kill(pid, signal.SIGSTOP)
    try:
        os.kill(server.worker_pids(1)[0], signal.SIGKILL)
        wait_until(lambda: _standbys(server) - standbys, timeout=15, message="a new standby forked meanwhile")
    finally:
        for pid in standbys:
            os.kill(pid, signal.SIGCONT)
    wait_until(
        lambda: any(e["pid"] in standbys for e in server.find(Kind.WORKER_READY)),
        timeout=15,
        message="the told standby ready as the replacement",
    )
    assert len(server.worker_pids(1)) == 2
