"""lab.watch_walk: quiet leaf directories listed by the first poll, exactly or said to be unknown.

The rule and the mount table are pure (exact tests); the rest is real inotify on real trees made
quiet by waiting (with a deadline) until their newest ctime is older than ``QUIET``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from test_watcher import Clock, kernel_watches, settle, signed, summary

from lab.watch_walk import QUIET, QuietLeaves, leaf_devices, quiet_leaf
from lab.watcher import Watcher, inotify_limits

S = 1_000_000_000


def test_the_quiet_leaf_rule():
    before = 50 * S
    assert quiet_leaf(2, 10 * S + 1, True, before)
    assert not quiet_leaf(3, 10 * S + 1, True, before), "a subdirectory: listed at once"
    assert not quiet_leaf(1, 10 * S + 1, True, before), "btrfs, or more subdirectories than st_nlink holds"
    assert not quiet_leaf(2, 10 * S + 1, False, before), "a file system that may not count subdirectories"
    assert not quiet_leaf(2, before, True, before), "changed within QUIET of set-up"
    assert not quiet_leaf(2, before + 1, True, before)
    assert not quiet_leaf(2, 10 * S, True, before), "whole seconds: a change could keep its ctime"


def test_the_leaf_file_systems_are_read_from_the_mount_table():
    mountinfo = [
        "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw",
        "23 22 0:21 / /tmp rw,nosuid master:4 shared:2 - tmpfs tmpfs rw,size=1g",
        "24 22 0:33 /@home /home rw - btrfs /dev/vdb rw,space_cache",
        "25 22 0:44 / /merged rw - overlay overlay rw,lowerdir=/a,upperdir=/b",
        "26 22 8:3 / /data rw - xfs /dev/sda3 rw",
        "garbage",
    ]
    assert leaf_devices(mountinfo) == {os.makedev(254, 1), os.makedev(0, 21), os.makedev(8, 3)}


# --- real trees -----------------------------------------------------------------------------------


def quiet(tree: Path) -> Path:
    """``tree`` once every directory in it is quiet for set-up (its ctime older than QUIET); skips
    on a file system where set-up lists every directory at once."""
    if os.lstat(tree).st_dev not in QuietLeaves.now().devices:
        pytest.skip(f"{tree} is on a file system whose st_nlink set-up does not trust")
    newest = max(os.lstat(d).st_ctime_ns for d, _, _ in os.walk(tree))
    deadline = time.monotonic() + 10
    while time.time_ns() - QUIET * S <= newest + S // 100:
        assert time.monotonic() < deadline, "the clock does not move"
        time.sleep(0.01)
    return tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{top.py, pkg/{app.py, sub/{a.py, b.py}}, lib/{c.py}, empty/}: leaves sub, lib, empty."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "lib").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("top.py", "pkg/app.py", "pkg/sub/a.py", "pkg/sub/b.py", "lib/c.py", "lib/notes.txt"):
        (tmp_path / name).write_text("x = 1\n")
    return tmp_path


def files_of(tree: Path) -> set[str]:
    return {str(p) for p in tree.rglob("*.py")}


def test_a_fresh_tree_is_listed_at_set_up(tree: Path):
    with Watcher(tree) as w:
        assert w.unlisted_dirs == 0, "every directory changed just now: none is quiet"
        assert w.watched_dirs == kernel_watches(w) == 5


def test_quiet_leaves_are_watched_at_set_up_and_listed_exactly_by_the_first_poll(tree: Path):
    clock = Clock()
    with Watcher(quiet(tree), clock=clock) as w:
        assert w.unlisted_dirs == 3  # pkg/sub, lib, empty
        assert w.watched_dirs == kernel_watches(w) == 5
        (tree / "pkg" / "sub" / "a.py").write_text("edited in place: the directory's entries stay\n")
        assert summary(settle(w, clock)) == [("modified", str(tree / "pkg" / "sub" / "a.py"))]
        assert w.unlisted_dirs == 0
        assert set(signed(w)._index.files) == files_of(tree)
        assert not any("not known" in line for line in w.log)


def test_after_the_first_poll_a_quiet_leaf_moved_out_reports_each_file(tree: Path):
    clock = Clock()
    outside = Path(tempfile.mkdtemp())
    try:
        with Watcher(quiet(tree), clock=clock) as w:
            assert w.poll() == []  # as a loop does at once: the quiet leaves are listed
            os.rename(tree / "pkg", outside / "pkg")
            assert sorted(summary(settle(w, clock))) == [
                ("deleted", str(tree / "pkg" / "app.py")),
                ("deleted", str(tree / "pkg" / "sub" / "a.py")),
                ("deleted", str(tree / "pkg" / "sub" / "b.py")),
            ]
            assert w.watched_dirs == kernel_watches(w) == 3
    finally:
        shutil.rmtree(outside)


def test_a_quiet_leaf_moved_out_before_the_first_poll_is_a_rescan_not_a_gap(tree: Path):
    clock = Clock()
    outside = Path(tempfile.mkdtemp())
    try:
        with Watcher(quiet(tree), clock=clock) as w:
            os.rename(tree / "pkg", outside / "pkg")  # pkg/sub is not listed yet
            changes = settle(w, clock)
            rescans = [c for c in changes if c.kind == "rescan"]
            assert [c.path for c in rescans] == [str(tree)]
            assert rescans[0].why[0].startswith(f"{tree / 'pkg' / 'sub'}: moved or deleted before the first poll")
            # pkg itself was listed at set-up (not a leaf): its own file is reported exactly
            assert ("deleted", str(tree / "pkg" / "app.py")) in summary(changes)
            assert w.watched_dirs == kernel_watches(w) == 3
            assert set(w._index.files) == files_of(tree)
            (tree / "lib" / "c.py").write_text("and it goes on exactly\n")
            assert summary(settle(w, clock)) == [("modified", str(tree / "lib" / "c.py"))]
    finally:
        shutil.rmtree(outside)


def test_a_quiet_leaf_renamed_before_the_first_poll_is_rebuilt_then_followed_exactly(tree: Path):
    clock = Clock()
    outside = Path(tempfile.mkdtemp())
    try:
        with Watcher(quiet(tree), clock=clock) as w:
            os.rename(tree / "lib", tree / "lib2")  # before the first poll: lib is not listed
            changes = settle(w, clock)
            assert [c.path for c in changes if c.kind == "rescan"] == [str(tree)]
            assert summary([c for c in changes if c.kind != "rescan"]) == [("created", str(tree / "lib2" / "c.py"))]
            assert set(w._index.files) == files_of(tree) and w.watched_files == len(files_of(tree))
            os.rename(tree / "lib2", tree / "lib3")
            assert summary(settle(w, clock)) == [("moved", str(tree / "lib2" / "c.py"), str(tree / "lib3" / "c.py"))]
            os.rename(tree / "lib3", outside / "lib3")
            assert summary(settle(w, clock)) == [("deleted", str(tree / "lib3" / "c.py"))]
            assert w.watched_dirs == kernel_watches(w) == 4
    finally:
        shutil.rmtree(outside)


def test_a_quiet_leaf_replaced_by_another_before_the_first_poll_is_rebuilt(tree: Path):
    clock = Clock()
    outside = Path(tempfile.mkdtemp())
    try:
        with Watcher(quiet(tree), clock=clock) as w:
            os.rename(tree / "lib", tree / "old")
            os.rename(tree / "pkg" / "sub", tree / "lib")  # lib now holds a.py and b.py
            changes = settle(w, clock)
            assert [c.path for c in changes if c.kind == "rescan"] == [str(tree)]
            assert set(w._index.files) == files_of(tree)
            os.rename(tree / "lib", outside / "lib")
            assert sorted(summary(settle(w, clock))) == [
                ("deleted", str(tree / "lib" / "a.py")),
                ("deleted", str(tree / "lib" / "b.py")),
            ]
            assert w.watched_dirs == kernel_watches(w)
    finally:
        shutil.rmtree(outside)


def test_a_quiet_leaf_changed_before_the_first_poll_is_a_rescan_and_its_changes(tree: Path):
    clock = Clock()
    with Watcher(quiet(tree), clock=clock) as w:
        new = tree / "lib" / "new.py"
        tmp = tree / "lib" / ".new.py.tmp"
        tmp.write_text("y = 2\n")
        os.rename(tmp, new)  # a new file saved atomically: created, or an old one replaced?
        (tree / "lib" / "c.py").unlink()
        changes = settle(w, clock)
        assert [(c.kind, c.path) for c in changes if c.kind == "rescan"] == [("rescan", str(tree))]
        reported = {c.path: c.kind for c in changes if c.kind != "rescan"}
        assert reported[str(tree / "lib" / "c.py")] == "deleted"
        assert reported[str(new)] in ("created", "modified")
        assert any(str(tree / "lib") in line and "changed" in line for line in w.log)
        assert set(w._index.files) == files_of(tree)


def test_an_overflow_before_the_first_poll_still_finds_the_changes_in_a_quiet_leaf(tree: Path):
    limit = inotify_limits()["max_queued_events"]
    if limit > 100_000:  # bounded: ~limit/3 file operations below
        pytest.skip(f"max_queued_events={limit}: flooding it would take too long here")
    clock = Clock()
    keep, new = tree / "pkg" / "sub" / "b.py", tree / "pkg" / "sub" / "new.py"
    with Watcher(quiet(tree), debounce=0.005, clock=clock) as w:
        for i in range((limit + 2000) // 3 + 1):  # nobody reads: records are lost
            junk = tree / f"junk{i % 2}.txt"  # in the root, listed at set-up
            junk.write_bytes(b"")
            junk.unlink()
        keep.write_text("changed in place, its record lost\n")
        new.write_text("created, its record lost\n")
        changes = settle(w, clock)
        rescans = [c for c in changes if c.kind == "rescan"]
        assert [c.path for c in rescans] == [str(tree)], "one rescan of the root says it all"
        assert any("IN_Q_OVERFLOW" in line for line in rescans[0].why)
        assert any("pkg/sub: changed" in line for line in rescans[0].why), "and the late listing's reason"
        reported = {c.path: c.kind for c in changes if c.kind != "rescan"}
        assert reported[str(keep)] == "modified"
        assert reported[str(new)] in ("created", "modified")  # listed after set-up: unsigned
        assert set(w._index.files) == files_of(tree)
