"""Master upgrade (SIGUSR2, ``python -m lab upgrade``, a change to a preloaded module): a new master
is exec'd with the listening socket, and takes over once its generation is ready. Real processes.

The ``serve`` process a test starts is the first old master: it exits after the first upgrade, and
later masters are nobody's child here. The pid file and the events file are the truth: a test finds
each master there, and stops the last one through its pid file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from lab_copy import copy_lab
from server_helpers import ask, run_cli, wait_until, write_app
from test_preload import APP, write_heavy

from lab.pidfile import inspect, is_alive, is_lab_server, runs, stop_server

CLIENTS = 6


@pytest.fixture
def heavy_app(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    write_heavy(directory, "h1")
    write_app(directory, "v1", source=APP)
    return directory


@pytest.fixture
def upgradable(serve, heavy_app):
    """A server preloading ``heavy`` and watching its app; at the end its last master is stopped
    through the pid file and every process any of its masters started is checked gone."""
    servers = []

    def start(**kwargs):
        server = serve(app_dir=heavy_app, args=("--preload", "heavy", "--watch", str(heavy_app)), **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        record = _record(server.pidfile)
        if record is not None and runs(record):
            stop_server(str(server.pidfile), 30)
        ours = [e["pid"] for e in server.find("server.start")] + [e["pid"] for e in server.find("worker.start")]
        for pid in ours:  # a test that failed half-way: nothing of it is left running
            if is_lab_server(pid):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda pids=ours: not any(is_alive(p) for p in pids), 10, message="every master and worker gone")


def _record(pidfile: Path):
    try:
        return inspect(str(pidfile))
    except Exception:
        return None


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except FileNotFoundError:
        return set()


def master_named(server) -> int:
    record = _record(server.pidfile)
    assert record is not None and runs(record), "the pid file names a running master"
    return record.pid


def events(server, kind: str, **match):
    return [e for e in server.poll_events() if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]


def wait_event(server, kind: str, count: int = 1, timeout: float = 60, **match):
    """Like ServerProcess.wait_event, but the first master exiting is expected here."""
    return wait_until(
        lambda: len(events(server, kind, **match)) >= count and events(server, kind, **match)[count - 1],
        timeout,
        message=f"{kind} {match} x{count}",
    )


def check_one_master(server, master: int) -> None:
    """Exactly one master runs, with its own workers only; no worker of an older master is left."""
    masters = [e["pid"] for e in events(server, "server.start")]
    assert masters[-1] == master
    wait_until(lambda: not any(is_alive(p) for p in masters[:-1]), 30, message="old masters gone")
    mine = {e["pid"] for e in events(server, "worker.start") if e["pid"] in _children(master)}

    def standbys() -> set[int]:  # forked ahead of a reload, not started (lab/standby.py)
        started = {e["pid"] for e in events(server, "worker.start")}
        return {e["pid"] for e in events(server, "worker.standby")} - started

    wait_until(
        lambda: _children(master) - standbys() == mine and len(mine) == 2,
        30,
        message="the master's 2 workers, nothing else",
    )
    others = {e["pid"] for e in events(server, "worker.start")} - mine
    wait_until(lambda: not any(is_alive(p) for p in others), 30, message="no worker of an old master left")


class Load:
    """CLIENTS threads asking on fresh connections: when each request was sent, when its answer came
    back, and the answer."""

    def __init__(self, port: int):
        self.port = port
        self.answers: list[tuple[float, float, str]] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(CLIENTS)]

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                text = ask(self.port, timeout=30)
                self.answers.append((sent, time.monotonic(), text))
            except OSError as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def upgrade(server, how: str, old: int, heavy_app: Path) -> int:
    """One upgrade, ``how`` it is asked for; the new master's pid, once it serves and the old is gone."""
    if how == "cli":
        result = run_cli("upgrade", "--pidfile", str(server.pidfile), timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"server upgraded: master {old} -> ")
    elif how == "SIGUSR2":
        os.kill(old, signal.SIGUSR2)
    else:
        write_heavy(heavy_app, "h2")
    new = wait_event(server, "server.start", upgrade_from=old)["pid"]
    wait_event(server, "server.stop", pid=old, upgraded_to=new)
    wait_until(
        lambda: (r := _record(server.pidfile)) is not None and r.pid == new,
        30,
        message="the pid file names the new master",
    )
    wait_until(lambda: not is_alive(old), 30, message="old master gone")
    return new


def test_three_upgrades_under_load_drop_nothing_and_leave_one_master(upgradable, heavy_app):
    server = upgradable()
    master = server.pid
    assert master_named(server) == master
    with Load(server.port) as load:
        wait_until(lambda: len(load.answers) > 20, 30, message="clients running")
        for how in ("cli", "SIGUSR2", "preload"):
            new = upgrade(server, how, master, heavy_app)
            if master == server.pid:
                assert server.proc.wait(30) == 0, "the first old master exits cleanly"
            master = new
            check_one_master(server, master)
            assert master_named(server) == master
        wait_until(lambda: load.answers[-1][2].split()[1] == "h2", 30, message="the changed preloaded module served")
        time.sleep(0.2)  # a few more answers after the last upgrade
    assert load.failures == []
    assert [e["trigger"] for e in events(server, "upgrade.start")] == ["SIGUSR2", "SIGUSR2", "preload"]
    # The checker's stale rule: a request sent after a client received the new code's answer must
    # not be answered by the old code (sent times alone would depend on thread scheduling).
    first_new = min(received for _, received, text in load.answers if text.split()[1] == "h2")
    assert not [a for a in load.answers if a[0] > first_new and a[2].split()[1] == "h1"], (
        "once the new master answers, the old one never does again"
    )
    generations = [e["generation"] for e in events(server, "upgrade.serving")]
    assert generations == [2, 3, 4], "each new master numbers its generations on"


@pytest.mark.parametrize("broken", ["preloaded module", "app", "lab install"])
def test_a_new_master_that_fails_leaves_the_old_one_serving(upgradable, heavy_app, tmp_path, monkeypatch, broken):
    if broken == "lab install":
        package = copy_lab(tmp_path / "labcopy")
        monkeypatch.setenv("PYTHONPATH", f"{package.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    server = upgradable()
    master = server.pid
    if broken == "preloaded module":
        (heavy_app / "heavy.py").write_text("VERSION = 'h2'\nraise RuntimeError('heavy is broken')\n")
        expected = "cannot preload 'heavy': RuntimeError: heavy is broken (heavy.py:2)"
    elif broken == "app":
        (heavy_app / "app.py").write_text("raise RuntimeError('app is broken')\n")
        server.signal(signal.SIGUSR2)
        expected = "RuntimeError: app is broken (app.py:1)"
    else:
        with open(package / "supervisor.py", "a") as f:
            f.write("\nthis is not python (\n")
        server.signal(signal.SIGUSR2)
        expected = "the new master exited"
    failed = wait_event(server, "upgrade.failed", pid=master)
    assert expected in failed["error"]
    failed_master = [e["pid"] for e in events(server, "server.start") if e["pid"] != master]
    wait_until(lambda: not any(is_alive(p) for p in failed_master), 30, message="the failed new master gone")
    assert master_named(server) == master and server.proc.poll() is None
    text, version, imported_by, worker = server.ask().split()
    assert (text, version, int(imported_by)) == ("v1", "h1", master), "the old master serves on, unchanged"
    assert int(worker) in _children(master)


def test_upgrade_cli_without_a_server_says_so(tmp_path):
    result = run_cli("upgrade", "--pidfile", str(tmp_path / "none.pid"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"python -m lab upgrade: no pid file at {tmp_path / 'none.pid'}: is the server running "
        f"(serve --pidfile {tmp_path / 'none.pid'})?"
    ]


def test_the_new_master_takes_the_pid_file_over_atomically_and_only_from_its_predecessor(tmp_path):
    from lab.errors import LabError
    from lab.pidfile import PidFile

    path = tmp_path / "lab.pid"
    # a running process that is not this one: the "old master" (not our parent, which is pid 1
    # when the suite runs orphaned, the very pid the file must not be taken from)
    old = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        parent = old.pid
        path.write_text(f"{parent} 1\n")
        before = path.stat().st_ino
        with pytest.raises(LabError, match=f"names {parent}, not the old master 1: left alone"):
            PidFile(str(path)).take_over(1)
        assert path.read_text() == f"{parent} 1\n"
        pidfile = PidFile(str(path))
        pidfile.take_over(parent)
    finally:
        old.kill()
        old.wait()
    record = inspect(str(path))
    assert (record.pid, runs(record)) == (os.getpid(), True)
    assert path.stat().st_ino != before, "a new file renamed over the old one: never half written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.pid"], "no temporary file left"
    pidfile.remove()
    assert not path.exists()
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(LabError, match="not a pid file of the lab"):
        PidFile(str(tmp_path / "notes.txt")).take_over(parent)
    assert (tmp_path / "notes.txt").read_text() == "mine\n"
