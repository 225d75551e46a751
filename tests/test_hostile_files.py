"""Hostile file systems under a serving, watching server: it keeps serving and says what is wrong.

(The watcher's own handling of unreadable directories, watch and instance limits and queue
overflows is in test_watcher.py; these tests check what the server makes of them.)
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Self

import pytest
from privileges import python_for_nobody, skip_without_user_namespaces
from server_helpers import ServerProcess, wait_until, write_app

from lab.events import Kind
from lab.watcher import Watcher, inotify_limits


def watched_tree(top: Path) -> Path:
    (top / "pkg").mkdir(parents=True)
    (top / "pkg" / "mod.py").write_text("A = 1\n")
    return top


def test_the_watched_root_deleted_and_recreated_is_watched_again(serve, app_dir, tmp_path):
    root = watched_tree(tmp_path / "watched")
    server = serve(app_dir=app_dir, args=("--watch", str(root)))
    shutil.rmtree(root)
    degraded = server.wait_event(Kind.SERVER_DEGRADED)
    assert degraded["reason"] == "watched root gone" and degraded["paths"] == [str(root)]
    assert server.find(Kind.WATCH_ERROR, problem="root-lost")
    assert server.ask() == "v1", "the server keeps serving"
    watched_tree(root)
    server.wait_event(Kind.WATCH_RESTORED)
    done = server.wait_event(Kind.RELOAD_DONE, trigger="watch", count=2)  # the first: the deletion
    (root / "pkg" / "mod.py").write_text("A = 2\n")
    server.wait_event(Kind.RELOAD_DONE, trigger="watch", generation=done["generation"] + 1)
    assert server.ask() == "v1"


def test_a_symlink_loop_is_not_followed(serve, app_dir, tmp_path):
    root = watched_tree(tmp_path / "watched")
    (root / "loop").symlink_to(root)
    (root / "pkg" / "up").symlink_to("..")
    (root / "pkg" / "self").symlink_to("self")  # a link to itself: ELOOP when followed
    with Watcher(root) as w:
        assert w.watched_dirs == 2
        assert w.poll() == []  # the first poll puts set-up's listing in the snapshot
        assert sorted(w._index.files) == [str(root / "pkg" / "mod.py")]
    server = serve(app_dir=app_dir, args=("--watch", str(root)))
    (root / "pkg" / "mod.py").write_text("A = 2\n")
    change = server.wait_event(Kind.WATCH_CHANGE)
    assert change["paths"] == [str(root / "pkg" / "mod.py")]
    server.wait_event(Kind.RELOAD_DONE, generation=2)
    assert server.ask() == "v1"


class NobodyServer(ServerProcess):
    """The server run as user ``nobody``: as root, no permission is ever denied."""

    def start(self, wait: bool = True, timeout: float = 30.0, **popen: Any) -> Self:
        python, env = python_for_nobody(self.tmp)
        self.argv[0] = python
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=self.tmp,
                user="nobody",
                env=env,
                **popen,
            )
        start = self.wait_event(Kind.SERVER_START, timeout=timeout)
        self.port = int(start["bind"].rsplit(":", 1)[1])
        self.wait_event(Kind.RELOAD_DONE, timeout=timeout, generation=1)
        return self


def test_an_unreadable_directory_is_skipped_and_reported(tmp_path):
    top = Path(tempfile.mkdtemp(dir="/tmp"))  # our tmp_path is not reachable by nobody
    server = None
    try:
        shutil.chown(top, "nobody")
        write_app(top, "v1")
        root = watched_tree(top / "watched")
        (root / "closed").mkdir(mode=0o700)  # root's: nobody may not read it
        for path in (root, root / "pkg", root / "pkg" / "mod.py", top / "app.py"):
            path.chmod(0o755)
        server = NobodyServer(top, workers=1, args=("--watch", str(root))).start()
        error = server.wait_event(Kind.WATCH_ERROR, problem="unwatched")
        assert error["error"] == f"not watched: {root / 'closed'}: Permission denied"
        (root / "later").mkdir(mode=0o700)  # one made while serving: the same
        server.wait_event(Kind.WATCH_ERROR, problem="unwatched", count=2)
        (root / "pkg" / "mod.py").write_text("A = 2\n")  # the rest is still watched
        server.wait_event(Kind.RELOAD_DONE, trigger="watch")
        assert server.ask() == "v1"
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(top)


LIMITED = """
import os, sys
try:
    with open("/proc/sys/user/max_inotify_watches", "w") as f:
        f.write(sys.argv[1])
except OSError:
    sys.exit(99)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def test_the_watch_limit_reached_while_serving_is_a_degraded_state(tmp_path, app_dir):
    skip_without_user_namespaces()
    root = watched_tree(tmp_path / "watched")
    server = ServerProcess(tmp_path, app_dir=app_dir, args=("--watch", str(root)))
    # A user namespace has inotify limits of its own: lowering them there starves no one else.
    server.argv = ["unshare", "--user", "--map-root-user", sys.executable, "-c", LIMITED, "6", *server.argv[1:]]
    try:
        server.start(wait=False)
        wait_until(
            lambda: server.find(Kind.RELOAD_DONE) or server.proc.poll() is not None,
            10,
            message="the server started (or exited)",
        )
        if server.proc.poll() == 99:
            pytest.skip("cannot lower inotify limits in a user namespace")
        server.port = int(server.find(Kind.SERVER_START)[0]["bind"].rsplit(":", 1)[1])
        for i in range(10):
            (root / f"new{i}").mkdir()
            (root / f"new{i}" / "m.py").write_text("")
        degraded = server.wait_event(Kind.SERVER_DEGRADED)
        assert degraded["reason"] == "inotify watch limit"
        assert "inotify watch limit reached" in degraded["error"] and "max_user_watches=6" in degraded["error"]
        assert server.find(Kind.WATCH_ERROR, problem="watch-limit")
        assert server.ask() == "v1", "the server keeps serving"
        assert len(server.find(Kind.SERVER_DEGRADED)) == 1, "said once"
    finally:
        server.stop()


def test_an_event_queue_overflow_rescans_and_reloads(serve, app_dir, tmp_path):
    limit = inotify_limits()["max_queued_events"]
    if limit > 100_000:
        pytest.skip(f"max_queued_events={limit}: flooding it would take too long here")
    root = watched_tree(tmp_path / "watched")
    server = serve(app_dir=app_dir, args=("--watch", str(root)))
    server.signal(signal.SIGSTOP)  # the master reads nothing meanwhile; the workers serve on
    try:
        for i in range((limit + 2000) // 3 + 1):  # three records a round: create, close, delete
            junk = root / f"junk{i % 2}.txt"
            junk.write_bytes(b"")
            junk.unlink()
        (root / "pkg" / "mod.py").write_text("A = 2\n")
        assert server.ask() == "v1"
    finally:
        server.signal(signal.SIGCONT)
    change = server.wait_event(Kind.WATCH_CHANGE)
    assert "rescan" in change["kinds"] and str(root / "pkg" / "mod.py") in change["paths"]
    server.wait_event(Kind.RELOAD_DONE, generation=2)
    assert server.ask() == "v1"


def test_a_full_disk_for_the_events_file(tmp_path, app_dir):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    server = ServerProcess(disk, app_dir=app_dir, workers=1, pidfile=tmp_path / "s.pid")
    server.stderr_path = tmp_path / "stderr.txt"  # not on the full disk: we read what it says
    try:
        server.start()
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, bytes(4096))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        for _ in range(20):
            assert server.ask() == "v1", "the server keeps serving"
        failing = [line for line in server.stderr().splitlines() if "cannot write events" in line]
        # Said once by each writer (master, worker, worker's connection events), not per event.
        assert 1 <= len(failing) <= 3, failing
        assert "No space left on device" in failing[0]
        filler.unlink()
        before = len(server.poll_events())
        assert server.ask() == "v1"
        wait_until(
            lambda: len(server.find(Kind.CONN_CLOSE)) and len(server.poll_events()) > before,
            5,
            message="events written again once there is space",
        )
    finally:
        server.stop()
        subprocess.run(["umount", "-l", str(disk)], check=True)
