"""Renames the interpreter used to get wrong, found by attacking it from outside: a pending
move-out and a later record of the same path or of its parent, a directory moved out and back,
and two directories exchanged (``renameat2(RENAME_EXCHANGE)``)."""

from __future__ import annotations

import ctypes
import os
import tempfile
from pathlib import Path

import pytest
from test_watch_interpreter import DIR, M, feed, tree
from test_watcher import Clock, kernel_watches, settle, summary

from lab.watch_interpreter import RESCAN, Scan, Unwatch
from lab.watcher import Watcher


def test_a_move_out_before_its_parent_is_renamed_is_settled_under_its_old_path():
    """``mv /w/pkg/sub out; mv /w/pkg /w/old`` in one read: sub's files are deleted (not moved
    under old/), and its watch is removed (not carried to /w/old/sub)."""
    interp = tree()
    actions = feed(
        interp,
        (2, M.MOVED_FROM | DIR, 7, "sub"),
        (1, M.MOVED_FROM | DIR, 8, "pkg"),
        (1, M.MOVED_TO | DIR, 8, "old"),
    )
    assert actions == [Unwatch((3,))]
    assert sorted((c.kind, c.path, c.src) for c in interp.take()) == [
        ("deleted", "/w/pkg/sub/c.py", None),
        ("moved", "/w/old/a.py", "/w/pkg/a.py"),
    ]
    assert interp.index.path_wd == {"/w": 1, "/w/old": 2}


def test_a_move_out_then_its_parent_renamed_then_the_path_made_again_keeps_the_new_watch():
    interp = tree()
    for record in (
        (2, M.MOVED_FROM | DIR, 7, "sub"),
        (1, M.MOVED_FROM | DIR, 8, "pkg"),
        (1, M.MOVED_TO | DIR, 8, "old"),
    ):
        assert interp.feed(record, 0.0) is None
    assert isinstance(interp.feed((1, M.CREATE | DIR, 0, "pkg"), 0.0), Scan)
    interp.index.add(4, "/w/pkg", "/w")  # the shell's walk of the new pkg and its new sub
    interp.index.add(5, "/w/pkg/sub", "/w/pkg")
    assert interp.drained(0.0) == [Unwatch((3,))]
    assert interp.index.path_wd == {"/w": 1, "/w/old": 2, "/w/pkg": 4, "/w/pkg/sub": 5}


def test_a_directory_moved_out_and_back_in_one_read_is_still_watched_by_the_kernel(tmp_path: Path):
    """The kernel gives the directory back its old wd: the settled move-out's Unwatch of that
    wd must not remove the watch the scan has just added again."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "a.py").write_text("")
    clock = Clock()
    with tempfile.TemporaryDirectory() as outside, Watcher(tmp_path, clock=clock) as w:
        os.rename(tmp_path / "pkg", Path(outside) / "pkg")
        os.rename(Path(outside) / "pkg", tmp_path / "pkg")
        assert summary(settle(w, clock)) == [("modified", str(tmp_path / "pkg" / "sub" / "a.py"))]
        assert w.watched_dirs == kernel_watches(w) == 3
        (tmp_path / "pkg" / "sub" / "b.py").write_text("")
        assert summary(settle(w, clock)) == [("created", str(tmp_path / "pkg" / "sub" / "b.py"))]


def test_two_directories_exchanged_read_their_watches_again():
    interp = tree()
    interp.index.add(4, "/w/lib", "/w")
    actions = feed(
        interp,
        (1, M.MOVED_FROM | DIR, 7, "pkg"),
        (1, M.MOVED_TO | DIR, 7, "lib"),
        (1, M.MOVED_FROM | DIR, 8, "lib"),
        (1, M.MOVED_TO | DIR, 8, "pkg"),
    )
    assert actions == [RESCAN] and not interp.overflowed, "a walk re-reads wd -> path; no record was lost"


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:  # AT_FDCWD, RENAME_EXCHANGE
        pytest.skip(f"renameat2(RENAME_EXCHANGE): {os.strerror(ctypes.get_errno())}")


def test_two_directories_exchanged_report_under_their_new_paths(tmp_path: Path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "lib").mkdir()
    (tmp_path / "pkg" / "sub" / "a.py").write_text("")
    (tmp_path / "lib" / "b.py").write_text("")
    clock = Clock()
    with Watcher(tmp_path, clock=clock) as w:
        _exchange(tmp_path / "pkg", tmp_path / "lib")
        changes = settle(w, clock)
        assert [c.path for c in changes if c.kind == "rescan"] == [str(tmp_path)]
        assert any("renamed onto the watched" in line for c in changes for line in c.why)
        assert w.watched_dirs == kernel_watches(w) == 4
        for path in ("lib/sub/a.py", "pkg/b.py"):
            (tmp_path / path).write_text("edited")
            assert summary(settle(w, clock)) == [("modified", str(tmp_path / path))]
        assert set(w._index.files) == {str(tmp_path / "lib" / "sub" / "a.py"), str(tmp_path / "pkg" / "b.py")}
