"""lab.watcher: real inotify on real files in temporary directories.

Most tests use a made-up clock: inotify queues a record inside the syscall that causes it, so once
our writes return, everything is queued; ``settle`` then reads it all at one made-up time and
takes the batch at a later one. No sleeping, no guessing how long the kernel takes.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from privileges import python_for_nobody, skip_without_user_namespaces

from lab.errors import LabError
from lab.watcher import DEFAULT_IGNORE, RECORDS_PER_POLL, Change, Watcher, inotify_limits


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def settle(w: Watcher, clock: Clock) -> list[Change]:
    """Everything queued so far, as the batch it makes."""
    clock.t += 100
    early = w.poll()  # reads queued records (at most RECORDS_PER_POLL a call) ...
    for _ in range(1000):  # bounded: the kernel queues at most max_queued_events records
        if w.timeout() != 0.0:
            break
        early += w.poll()  # ... all of them, at one time ...
    clock.t += 100
    return early + w.poll()  # ... and the quiet time has passed


def signed(w: Watcher) -> Watcher:
    """``w`` once the first polls have signed set-up's files (nothing else is pending)."""
    for _ in range(1000):  # bounded: SIGNS_PER_POLL files a poll
        if w.timeout() != 0.0:
            break
        assert w.poll() == []
    return w


def collect(w: Watcher, done, timeout: float = 20.0) -> list[Change]:
    """Batches (real time) until ``done(changes)`` or the deadline (``done`` may wait on
    something else than a batch, so it is asked again at least every 0.2 s)."""
    changes: list[Change] = []
    deadline = time.monotonic() + timeout
    while not done(changes) and time.monotonic() < deadline:
        changes += w.read_batch(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
    return changes


def kernel_watches(w: Watcher) -> int:
    """Watches the kernel holds for this inotify fd (from /proc, not from our own books)."""
    with open(f"/proc/self/fdinfo/{w.fileno()}") as f:
        return sum(line.startswith("inotify wd:") for line in f)


def summary(changes: list[Change]) -> list[tuple]:
    return [(c.kind, c.path) if c.src is None else (c.kind, c.src, c.path) for c in changes]


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "app.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "sub" / "a.b.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    for ignored in (".git/objects", "__pycache__", "node_modules/x", ".venv/lib"):
        (tmp_path / ignored).mkdir(parents=True)
        (tmp_path / ignored / "m.py").write_text("")
    return tmp_path


# --- set-up -------------------------------------------------------------------------------------


def test_one_watch_per_directory_and_none_for_ignored_ones(tree: Path):
    with Watcher(tree) as w:
        assert w.watched_dirs == 3  # root, pkg, pkg/sub: not .git, __pycache__, ...
        assert kernel_watches(w) == 3
        assert w.watched_files == 2  # app.py and a.b.py (its real suffix is .py), not notes.txt
    assert w.closed


def test_ignore_is_configurable(tree: Path):
    expected = 1 + sum(1 for p in tree.rglob("*") if p.is_dir() and "pkg" not in p.parts)
    with Watcher(tree, types=None, ignore=("pkg",)) as w:
        assert w.watched_dirs == expected
        assert w.watched_files == 5  # notes.txt and the four m.py


def test_fileno_works_in_a_selector_and_idle_means_no_timeout(tree: Path):
    with Watcher(tree) as w, selectors.DefaultSelector() as sel:
        sel.register(w.fileno(), selectors.EVENT_READ)
        assert w.timeout() == 0.0  # set-up's files are signed by the first polls
        assert signed(w).timeout() is None and sel.select(0) == []
        (tree / "pkg" / "app.py").write_text("x = 2\n")
        assert sel.select(5)  # readable
        assert w.poll() == []
        assert (held := w.timeout()) is not None and 0 <= held <= 0.02  # held for the quiet time
        assert summary(collect(w, bool)) == [("modified", str(tree / "pkg" / "app.py"))]


# --- editor saves --------------------------------------------------------------------------------


def test_in_place_write_is_one_modification(tree: Path, clock: Clock):
    app = tree / "pkg" / "app.py"
    with Watcher(tree, clock=clock) as w:
        with open(app, "a") as f:
            for _ in range(5):
                f.write("y = 1\n")
                f.flush()
        [change] = settle(w, clock)
        assert (change.kind, change.path) == ("modified", str(app))
        assert any("IN_CLOSE_WRITE" in line and "name='app.py'" in line for line in change.why)


def test_write_temp_then_rename_is_one_modification(tree: Path, clock: Clock):
    app = tree / "pkg" / "app.py"
    with Watcher(tree, clock=clock) as w:
        tmp = tree / "pkg" / ".app.py.4f2a"  # an unwatched type, like most editors' temp names
        tmp.write_text("x = 3\n")
        os.replace(tmp, app)
        [change] = settle(w, clock)
        assert (change.kind, change.path) == ("modified", str(app))
        assert any("IN_MOVED_TO" in line for line in change.why)


def test_vims_backup_dance_is_one_modification(tree: Path, clock: Clock):
    app = tree / "pkg" / "app.py"
    with Watcher(tree, clock=clock) as w:
        probe = tree / "pkg" / "4913"  # vim checks it may create files here
        probe.write_text("")
        probe.unlink()
        swap = tree / "pkg" / ".app.py.swp"
        swap.write_text("swap")
        os.rename(app, tree / "pkg" / "app.py~")  # backup
        app.write_text("x = 4\n")  # new file
        (tree / "pkg" / "app.py~").unlink()
        swap.unlink()
        batch = settle(w, clock)
        assert summary(batch) == [("modified", str(app))]
        assert "IN_MOVED_FROM" in batch[0].why[0]
        # the drops say why they were dropped
        assert any("4913" in line and "'4913'" in line for line in w.log)
        assert any(".app.py.swp" in line and "'*.swp'" in line for line in w.log)


def test_new_rename_delete_of_files(tree: Path, clock: Clock):
    pkg = tree / "pkg"
    with Watcher(tree, clock=clock) as w:
        (pkg / "new.py").write_text("")
        assert summary(settle(w, clock)) == [("created", str(pkg / "new.py"))]
        os.rename(pkg / "new.py", pkg / "newer.py")
        assert summary(settle(w, clock)) == [("moved", str(pkg / "new.py"), str(pkg / "newer.py"))]
        (pkg / "newer.py").unlink()
        assert summary(settle(w, clock)) == [("deleted", str(pkg / "newer.py"))]
        (pkg / "short.py").write_text("")
        (pkg / "short.py").unlink()
        assert settle(w, clock) == []  # created and deleted in one batch: nothing happened
        assert any("created and deleted within one batch" in line for line in w.log)
        assert w.watched_files == 2


def test_types_use_the_real_suffix(tree: Path, clock: Clock):
    with Watcher(tree, types=(".py", ".txt"), clock=clock) as w:
        for name in ("a.b.py", "c.txt", "d.php", "e.pyc", "py"):
            (tree / name).write_text("")
        assert sorted(c.path for c in settle(w, clock)) == [str(tree / "a.b.py"), str(tree / "c.txt")]
        assert any("'d.php'" in line and "not a watched type" in line for line in w.log)
    with Watcher(tree, types=None, clock=clock) as w:
        (tree / "d.php").write_text("changed")
        (tree / "x.swp").write_text("")
        assert summary(settle(w, clock)) == [("modified", str(tree / "d.php"))]


def test_a_single_file_can_be_watched(tree: Path, clock: Clock):
    notes = tree / "notes.txt"  # not a .py file: named explicitly, so it is watched
    with Watcher([notes], clock=clock) as w:
        assert w.watched_dirs == 1 and w.watched_files == 1
        (tree / "other.txt").write_text("")
        (tree / "pkg" / "app.py").write_text("")
        tmp = tree / "notes.txt.new"
        tmp.write_text("atomic")
        os.replace(tmp, notes)
        assert summary(settle(w, clock)) == [("modified", str(notes))]
        notes.write_text("in place")
        assert summary(settle(w, clock)) == [("modified", str(notes))]


# --- directories -------------------------------------------------------------------------------


def test_nested_new_directories_written_at_once_every_file_reported(tmp_path: Path):
    """The race `inotifywait -r` loses: files written into directories whose watch does not exist
    yet. A separate process writes the bursts while we read, 20 times."""
    trials, levels, per_dir = 20, 4, 3
    script = textwrap.dedent(f"""
        import os, sys
        root = sys.argv[1]
        for t in range({trials}):
            deep = os.path.join(root, f"t{{t}}", *[f"d{{i}}" for i in range({levels})])
            os.makedirs(deep)
            d = os.path.join(root, f"t{{t}}")
            for i in range({levels} + 1):
                for k in range({per_dir}):
                    with open(os.path.join(d, f"f{{k}}.py"), "w") as f:
                        f.write("x")
                if i < {levels}:
                    d = os.path.join(d, f"d{{i}}")
    """)
    expected = set()
    for t in range(trials):
        d = tmp_path / f"t{t}"
        for i in range(levels + 1):
            expected |= {str(d / f"f{k}.py") for k in range(per_dir)}
            d = d / f"d{i}"
    with Watcher(tmp_path, debounce=0.005) as w:
        writer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
        try:
            seen: dict[str, str] = {}

            def done(changes):
                # The first report of each file counts: one found by a new directory's listing
                # while still being written is created, and its close may come in a later
                # batch (a loaded machine) as a modification.
                for c in changes:
                    seen.setdefault(c.path, c.kind)
                return writer.poll() is not None and expected <= set(seen)

            collect(w, done)
            assert writer.wait(10) == 0
        finally:
            writer.kill()
            writer.wait()
        assert set(seen) == expected, f"missed {len(expected - set(seen))} of {len(expected)}"
        assert set(seen.values()) == {"created"}
        assert w.watched_dirs == 1 + trials * (levels + 1)


def test_files_found_by_scanning_a_new_directory_say_so(tmp_path: Path, clock: Clock):
    with Watcher(tmp_path, clock=clock) as w:
        (tmp_path / "a" / "b").mkdir(parents=True)
        (tmp_path / "a" / "b" / "m.py").write_text("")
        [change] = settle(w, clock)
        assert change.kind == "created" and change.path == str(tmp_path / "a" / "b" / "m.py")
        assert any(line.startswith("synthesized by scanning new directory") for line in change.why)


def test_renamed_directory_is_followed(tree: Path, clock: Clock):
    with Watcher(tree, clock=clock) as w:
        os.rename(tree / "pkg", tree / "lib")
        assert sorted(summary(settle(w, clock))) == [
            ("moved", str(tree / "pkg" / "app.py"), str(tree / "lib" / "app.py")),
            ("moved", str(tree / "pkg" / "sub" / "a.b.py"), str(tree / "lib" / "sub" / "a.b.py")),
        ]
        (tree / "lib" / "sub" / "a.b.py").write_text("edited")  # deep in the renamed subtree
        (tree / "lib" / "sub" / "deeper").mkdir()
        (tree / "lib" / "sub" / "deeper" / "n.py").write_text("")
        assert sorted(summary(settle(w, clock))) == [
            ("created", str(tree / "lib" / "sub" / "deeper" / "n.py")),
            ("modified", str(tree / "lib" / "sub" / "a.b.py")),
        ]
        assert w.watched_dirs == kernel_watches(w) == 4


def test_directory_moved_out_is_forgotten_and_moved_in_is_watched(tree: Path, clock: Clock):
    outside = Path(tempfile.mkdtemp())
    try:
        with Watcher(tree, clock=clock) as w:
            os.rename(tree / "pkg", outside / "pkg")
            assert sorted(summary(settle(w, clock))) == [
                ("deleted", str(tree / "pkg" / "app.py")),
                ("deleted", str(tree / "pkg" / "sub" / "a.b.py")),
            ]
            assert w.watched_dirs == kernel_watches(w) == 1
            (outside / "pkg" / "app.py").write_text("not ours any more")
            assert settle(w, clock) == []
            os.rename(outside / "pkg", tree / "back")
            assert sorted(summary(settle(w, clock))) == [
                ("created", str(tree / "back" / "app.py")),
                ("created", str(tree / "back" / "sub" / "a.b.py")),
            ]
            assert w.watched_dirs == kernel_watches(w) == 3
    finally:
        shutil.rmtree(outside)


def test_a_directory_moved_out_and_made_anew_under_its_name_in_one_read_is_watched(tree: Path, clock: Clock):
    """The unpaired IN_MOVED_FROM is settled before the new directory's record, not after it
    (then the new directory went unwatched and its files unreported)."""
    outside = Path(tempfile.mkdtemp())
    try:
        with Watcher(tree, clock=clock) as w:
            os.rename(tree / "pkg" / "sub", outside / "sub")
            (tree / "pkg" / "sub").mkdir()
            (tree / "pkg" / "sub" / "z.py").write_text("new\n")
            assert sorted(summary(settle(w, clock))) == [
                ("created", str(tree / "pkg" / "sub" / "z.py")),
                ("deleted", str(tree / "pkg" / "sub" / "a.b.py")),
            ]
            assert w.watched_dirs == kernel_watches(w) == 3
            (tree / "pkg" / "sub" / "later.py").write_text("after the batch\n")
            assert summary(settle(w, clock)) == [("created", str(tree / "pkg" / "sub" / "later.py"))]
    finally:
        shutil.rmtree(outside)


def test_a_directory_moved_out_and_another_moved_in_under_its_name_in_one_read_is_watched(tree: Path, clock: Clock):
    outside = Path(tempfile.mkdtemp())
    try:
        (outside / "other").mkdir()
        (outside / "other" / "z.py").write_text("new\n")
        with Watcher(tree, clock=clock) as w:
            os.rename(tree / "pkg" / "sub", outside / "sub")
            os.rename(outside / "other", tree / "pkg" / "sub")
            assert sorted(summary(settle(w, clock))) == [
                ("created", str(tree / "pkg" / "sub" / "z.py")),
                ("deleted", str(tree / "pkg" / "sub" / "a.b.py")),
            ]
            (outside / "sub" / "a.b.py").write_text("outside the tree: not ours\n")
            (tree / "pkg" / "sub" / "later.py").write_text("after the batch\n")
            assert summary(settle(w, clock)) == [("created", str(tree / "pkg" / "sub" / "later.py"))]
            assert w.watched_dirs == kernel_watches(w) == 3
    finally:
        shutil.rmtree(outside)


def test_deleted_directories_drop_their_watches(tree: Path, clock: Clock):
    with Watcher(tree, clock=clock) as w:
        shutil.rmtree(tree / "pkg")
        assert sorted(summary(settle(w, clock))) == [
            ("deleted", str(tree / "pkg" / "app.py")),
            ("deleted", str(tree / "pkg" / "sub" / "a.b.py")),
        ]
        assert w.watched_dirs == kernel_watches(w) == 1
        assert w.watched_files == 0


def test_an_ignored_directory_created_later_gets_no_watch(tree: Path, clock: Clock):
    with Watcher(tree, clock=clock) as w:
        (tree / "pkg" / "__pycache__").mkdir()
        (tree / "pkg" / "__pycache__" / "app.cpython-311.py").write_text("")
        assert settle(w, clock) == []
        assert w.watched_dirs == kernel_watches(w) == 3
        assert any("__pycache__" in line and "never watched" in line for line in w.log)


# --- floods --------------------------------------------------------------------------------------


def _files(directory: Path, count: int) -> list[Path]:
    """``count`` empty .py files in ``directory``, in sorted order (``rm dir/*``'s order; a
    directory listing, and so the snapshot, has another)."""
    directory.mkdir(exist_ok=True)
    paths = [directory / f"f{i:06d}.py" for i in range(count)]
    for path in paths:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    return paths


def test_forgetting_a_deleted_file_is_not_a_search_of_its_directory(tmp_path: Path, clock: Clock):
    """The snapshot's index by directory is a hash table: with a list, each deletion searched
    it (40,000 files deleted from one directory took 5 s of CPU, 200,000 blocked a server)."""
    paths = _files(tmp_path / "many", 200)
    with signed(Watcher(tmp_path, clock=clock)) as w:  # set-up's listing is in the snapshot
        index = w._index.dir_files[str(tmp_path / "many")]
        assert isinstance(index, dict)  # path -> None: O(1) to forget, insertion-ordered
        listed = list(index)
        for path in paths[::2]:
            path.unlink()
        assert {c.kind for c in settle(w, clock)} == {"deleted"}
        assert list(w._index.dir_files[str(tmp_path / "many")]) == [
            p for p in listed if p not in {str(q) for q in paths[::2]}
        ]
        assert w.watched_files == 100


def test_a_flood_is_interpreted_a_slice_at_a_time_and_nothing_is_lost(tmp_path: Path, clock: Clock):
    """A poll interprets at most RECORDS_PER_POLL records and says (timeout 0) that more wait:
    a server polling from its loop handles signals between slices of a big deletion."""
    count = 2 * RECORDS_PER_POLL + 100
    paths = _files(tmp_path / "many", count)
    with signed(Watcher(tmp_path, clock=clock)) as w:
        for path in paths:
            path.unlink()
        clock.t += 100
        polls = 0
        while polls == 0 or w.timeout() == 0.0:
            assert w.poll() == []  # the clock stands still: the batch is not due yet
            polls += 1
            assert polls <= 10, "the backlog never ends"
        assert polls == 3  # ceil(count / RECORDS_PER_POLL) slices
        deleted = settle(w, clock)
        assert sorted(c.path for c in deleted) == [str(p) for p in paths]
        assert {c.kind for c in deleted} == {"deleted"} and w.watched_files == 0


# --- overflow ------------------------------------------------------------------------------------


def test_queue_overflow_is_reported_and_the_rescan_finds_what_was_missed(tree: Path, clock: Clock):
    limit = inotify_limits()["max_queued_events"]
    if limit > 100_000:  # bounded: ~limit/3 file operations below
        pytest.skip(f"max_queued_events={limit}: flooding it would take too long here")
    keep = tree / "pkg" / "app.py"
    with Watcher(tree, debounce=0.005, clock=clock) as w:
        rounds = (limit + 2000) // 3 + 1  # three records a round: create, close, delete
        for i in range(rounds):  # nobody reads meanwhile
            junk = tree / f"junk{i % 2}.txt"
            junk.write_bytes(b"")
            junk.unlink()
            if i == rounds // 2:
                keep.write_text("changed during the flood, its records lost\n")
        (tree / "pkg" / "sub" / "a.b.py").unlink()
        changes = settle(w, clock)
        rescans = [c for c in changes if c.kind == "rescan"]
        assert [c.path for c in rescans] == [str(tree)]
        assert "IN_Q_OVERFLOW" in rescans[0].why[0] and str(limit) in rescans[0].why[0]
        found = {c.path: c for c in changes if c.kind != "rescan"}
        assert found[str(keep)].kind == "modified"
        assert any("queue overflow: rescanned" in line for line in found[str(keep)].why)
        assert found[str(tree / "pkg" / "sub" / "a.b.py")].kind == "deleted"
        # and the watcher goes on as before
        (tree / "pkg" / "after.py").write_text("")
        assert summary(settle(w, clock)) == [("created", str(tree / "pkg" / "after.py"))]


def test_a_change_between_the_watch_and_the_signature_survives_an_overflow(tree: Path, clock: Clock):
    """Set-up signs its files later than it watches them: a file changed in between is signed
    with its new content, so after an overflow only its held record can tell; it must."""
    limit = inotify_limits()["max_queued_events"]
    if limit > 100_000:  # bounded: ~limit/3 file operations below
        pytest.skip(f"max_queued_events={limit}: flooding it would take too long here")
    keep = tree / "pkg" / "app.py"
    with Watcher(tree, debounce=0.005, clock=clock) as w:
        keep.write_text("changed after its watch, before its signature\n")
        signed(w)  # reads the change (held: the clock stands still), then signs every file
        assert w._index.files[str(keep)] == hash(_sig(keep))  # the new content's signature
        for i in range((limit + 2000) // 3 + 1):  # nobody reads meanwhile: records are lost
            junk = tree / f"junk{i % 2}.txt"
            junk.write_bytes(b"")
            junk.unlink()
        changes = []
        for _ in range(1000):  # every record read with the clock still: the rescan drops ...
            changes += w.poll()
            if w.timeout() != 0.0:
                break
        clock.t += 100
        changes += w.poll()
        assert [c.path for c in changes if c.kind == "rescan"] == [str(tree)]
        assert [(c.kind, c.path) for c in changes if c.kind != "rescan"] == [
            ("modified", str(keep))
        ]  # ... the held change, and reports it all the same


def _sig(path: Path) -> tuple[int, int, int]:
    st = os.stat(path, follow_symlinks=False)
    return st.st_ino, st.st_size, st.st_mtime_ns


# --- bad input and limits ------------------------------------------------------------------------


def test_bad_input_is_a_clear_error(tmp_path: Path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases: list[tuple[dict[str, Any], str]] = [
        (dict(paths=tmp_path / "missing"), "no such file or directory"),
        (dict(paths=fifo), "neither a directory nor a regular file"),
        (dict(paths=[]), "no path to watch"),
        (dict(paths=tmp_path, types=("py",)), "bad file type 'py'"),
        (dict(paths=tmp_path, types=()), "no file types given"),
        (dict(paths=tmp_path, ignore=".git"), "one string"),
        (dict(paths=tmp_path, ignore=("a/b",)), "not paths"),
        (dict(paths=tmp_path, debounce=-1), "give seconds >= 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(LabError, match=message) as info:
            Watcher(**kwargs)
        assert "\n" not in str(info.value)


def test_a_directory_we_may_not_read(tmp_path: Path):
    """As root nothing is denied, so the watcher runs as ``nobody`` in a subprocess."""
    top = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        top.chmod(0o755)
        (top / "secret").mkdir(mode=0o700)
        (top / "open" / "closed").mkdir(parents=True)
        (top / "open").chmod(0o755)
        (top / "open" / "closed").chmod(0o700)
        code = textwrap.dedent("""
            import sys
            from lab.watcher import Watcher
            from lab.errors import LabError
            try:
                Watcher(sys.argv[1])
            except LabError as exc:
                print("LabError:", exc)
            with Watcher(sys.argv[2]) as w:  # an unreadable directory inside: skipped, said so
                print("watched", w.watched_dirs, "|", *w.log)
        """)
        python, env = python_for_nobody(top)
        out = subprocess.run(
            [python, "-c", code, str(top / "secret"), str(top / "open")],
            user="nobody",
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            env=env,
        )
        assert out.returncode == 0, out.stderr
        assert f"LabError: {top / 'secret'}: permission denied" in out.stdout
        assert f"watched 1 | not watched: {top / 'open' / 'closed'}: Permission denied" in out.stdout
    finally:
        shutil.rmtree(top)


def _in_user_namespace(code: str, *args: str) -> subprocess.CompletedProcess:
    """Runs ``code`` as root of a new user namespace, whose inotify limits are its own: lowering
    them there cannot starve the other tests running on this machine."""
    skip_without_user_namespaces()
    out = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode == 99:
        pytest.skip(f"cannot lower inotify limits in a user namespace: {out.stderr.strip()}")
    return out


def _error_with_lowered_limit(limit: str, value: int, path: Path) -> str:
    """What ``Watcher(path)`` says with ``/proc/sys/user/max_inotify_<limit>`` set to ``value``."""
    out = _in_user_namespace(
        """
        import sys
        try:
            with open(f"/proc/sys/user/max_inotify_{sys.argv[2]}", "w") as f:
                f.write(sys.argv[3])
        except OSError as exc:
            print(exc, file=sys.stderr)
            sys.exit(99)
        from lab.watcher import Watcher
        from lab.errors import LabError
        try:
            Watcher(sys.argv[1])
        except LabError as exc:
            print(exc)
    """,
        str(path),
        limit,
        str(value),
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_running_out_of_watches_is_a_clear_error(tmp_path: Path):
    for i in range(20):
        (tmp_path / f"d{i}" / "sub").mkdir(parents=True)
    message = _error_with_lowered_limit("watches", 10, tmp_path)
    assert "inotify watch limit reached: watching needs 41 watches" in message
    assert "only 10 could be added" in message
    assert "max_user_watches=10" in message and "sysctl fs.inotify.max_user_watches=" in message


def test_running_out_of_instances_is_a_clear_error(tmp_path: Path):
    message = _error_with_lowered_limit("instances", 0, tmp_path)
    assert "cannot create an inotify instance" in message
    assert "max_user_instances=0" in message


def test_limits_are_read_from_the_kernel():
    limits = inotify_limits()
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        assert limits["max_queued_events"] == int(f.read())
    assert limits["max_user_watches"] > 0 and limits["max_user_instances"] > 0


def test_default_ignore_names_the_usual_suspects():
    for name in (".git", "__pycache__", ".venv", "node_modules", "*.swp", "*~", ".#*", "4913"):
        assert name in DEFAULT_IGNORE


def test_iterating_yields_batches(tree: Path):
    with Watcher(tree) as w:
        (tree / "pkg" / "app.py").write_text("x = 5\n")
        batch = next(iter(w))
        assert summary(batch) == [("modified", str(tree / "pkg" / "app.py"))]
        assert w.read_batch(timeout=0.05) == []
    with pytest.raises(LabError, match="closed"):
        w.poll()


def test_a_half_written_file_is_not_reported_until_its_writer_closes_it(tree: Path, clock: Clock):
    app = tree / "pkg" / "app.py"
    with Watcher(tree, debounce=0.02, max_wait=1000, clock=clock) as w:
        with open(app, "w") as f:  # truncated: the file is empty, a reload now would break
            f.write("x = ")
            f.flush()
            assert settle(w, clock) == []  # quiet for 200 s of made-up time: still held
            f.write("2\n")
        assert summary(settle(w, clock)) == [("modified", str(app))]
