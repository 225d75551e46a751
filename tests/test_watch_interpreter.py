"""lab.watch_interpreter (with lab.watch_index, lab.watch_filter): exact, with hand-made records.

Real inotify will not produce these cases on demand (a rename pair split across two reads, an
overflow at a chosen moment); here each is fed record by record, and the facts and actions the
interpreter answers with are checked exactly. No file system, no clock: times are made up.
"""

from __future__ import annotations

import pytest

from lab.watch_filter import NameFilter
from lab.watch_index import UNSIGNED
from lab.watch_interpreter import RESCAN, Interpreter, Mask, Scan, Unwatch, mask_name, root_of

M = Mask
DIR = M.ISDIR


def tree() -> Interpreter:
    """/w (wd 1) holds b.py and pkg/ (wd 2), which holds a.py and sub/ (wd 3), which holds c.py."""
    interp = Interpreter(NameFilter((".py",)), ["/w"], quiet=0.25, max_wait=10)
    index = interp.index
    index.add(1, "/w")
    index.add(2, "/w/pkg")
    index.add(3, "/w/pkg/sub")
    for path in ("/w/b.py", "/w/pkg/a.py", "/w/pkg/sub/c.py"):
        index.remember(path, hash(path))
    return interp


def feed(interp: Interpreter, *records: tuple[int, int, int, str], now: float = 0.0) -> list:
    """Feeds ``records`` as one read (drained after it); the actions, in order."""
    actions = [interp.feed(r, now) for r in records]
    return [a for a in actions if a is not None] + interp.drained(now)


def batch(interp: Interpreter) -> list[tuple[str, str, str | None]]:
    return [(c.kind, c.path, c.src) for c in interp.take()]


def test_a_rename_pair_in_one_read_is_one_move():
    interp = tree()
    assert feed(interp, (1, M.MOVED_FROM, 7, "b.py"), (1, M.MOVED_TO, 7, "d.py")) == []
    assert batch(interp) == [("moved", "/w/d.py", "/w/b.py")]


def test_a_rename_pair_split_by_the_records_per_poll_slice_still_pairs():
    interp = tree()
    assert interp.feed((1, M.MOVED_FROM, 7, "b.py"), 0.0) is None  # the slice ends here:
    assert interp.feed((2, M.MOVED_TO, 7, "b.py"), 0.1) is None  # no drained() in between
    assert interp.drained(0.1) == []
    assert batch(interp) == [("moved", "/w/pkg/b.py", "/w/b.py")]


def test_a_file_rename_pair_split_across_two_reads_is_deleted_plus_created():
    interp = tree()
    assert feed(interp, (1, M.MOVED_FROM, 7, "b.py")) == []  # the read ended: moved out
    assert feed(interp, (1, M.MOVED_TO, 7, "d.py"), now=0.1) == []  # moved in, unpaired
    changes = interp.take()
    assert [(c.kind, c.path) for c in changes] == [("deleted", "/w/b.py"), ("created", "/w/d.py")]
    assert "moved out of the watched tree" in changes[0].why[-1]
    assert changes[1].why[-1] == "moved in from outside the watched tree"


def test_a_directory_rename_pair_split_across_two_reads_unwatches_then_scans():
    interp = tree()
    assert feed(interp, (1, M.MOVED_FROM | DIR, 7, "pkg")) == [Unwatch((2, 3))]
    assert "/w/pkg" not in interp.index.path_wd and "/w/pkg/sub" not in interp.index.path_wd
    [scan] = feed(interp, (1, M.MOVED_TO | DIR, 7, "lib"))
    assert isinstance(scan, Scan) and scan.path == "/w/lib"
    assert "moved into the watched tree" in scan.why[-1]
    assert batch(interp) == [("deleted", "/w/pkg/a.py", None), ("deleted", "/w/pkg/sub/c.py", None)]


def test_a_directory_renamed_inside_the_tree_keeps_its_watches_under_the_new_paths():
    interp = tree()
    assert feed(interp, (1, M.MOVED_FROM | DIR, 7, "pkg"), (1, M.MOVED_TO | DIR, 7, "lib")) == []
    assert interp.index.wd_path == {1: "/w", 2: "/w/lib", 3: "/w/lib/sub"}
    assert interp.index.subtree("/w") == ["/w", "/w/lib", "/w/lib/sub"]
    assert sorted(batch(interp)) == [
        ("moved", "/w/lib/a.py", "/w/pkg/a.py"),
        ("moved", "/w/lib/sub/c.py", "/w/pkg/sub/c.py"),
    ]
    # records of the renamed watches now name the new paths
    feed(interp, (3, M.CLOSE_WRITE, 0, "c.py"))
    assert batch(interp) == [("modified", "/w/lib/sub/c.py", None)]


def test_a_file_moved_out_is_deleted_and_one_not_watched_is_only_logged():
    interp = tree()
    assert feed(interp, (1, M.MOVED_FROM, 7, "b.py"), (1, M.MOVED_FROM, 8, "notes.txt")) == []
    assert batch(interp) == [("deleted", "/w/b.py", None)]
    assert interp.log[-1].endswith("moved out of the watched tree; not watched")


def test_a_directory_moved_out_loses_its_watches_and_its_files():
    interp = tree()
    assert feed(interp, (1, M.MOVED_FROM | DIR, 7, "pkg")) == [Unwatch((2, 3))]
    assert interp.index.wd_path == {1: "/w"} and interp.index.subtree("/w") == ["/w"]
    assert feed(interp, (3, M.CLOSE_WRITE, 0, "c.py")) == []  # its last records: no path
    assert batch(interp) == [("deleted", "/w/pkg/a.py", None), ("deleted", "/w/pkg/sub/c.py", None)]


def test_a_name_made_anew_settles_the_unpaired_move_out_of_that_name_first():
    """``mv sub out; mkdir sub`` in one read: the move-out is settled before the new directory
    (else its CREATE would find ``sub`` still indexed, and the drained move-out forget it)."""
    interp = tree()
    actions = feed(interp, (2, M.MOVED_FROM | DIR, 5, "sub"), (2, M.CREATE | DIR, 0, "sub"))
    assert [type(a) for a in actions] == [Scan, Unwatch] and actions[1] == Unwatch((3,))
    assert interp.index.path_wd == {"/w": 1, "/w/pkg": 2}, "the old sub forgotten before the scan"
    assert batch(interp) == [("deleted", "/w/pkg/sub/c.py", None)]
    interp = tree()  # another directory moved in under the name: the same
    actions = feed(interp, (2, M.MOVED_FROM | DIR, 5, "sub"), (2, M.MOVED_TO | DIR, 9, "sub"))
    assert [type(a) for a in actions] == [Scan, Unwatch]
    interp = tree()  # files: moved out, then written anew / replaced by a rename
    feed(interp, (1, M.MOVED_FROM, 5, "b.py"), (1, M.CREATE, 0, "b.py"), (1, M.CLOSE_WRITE, 0, "b.py"))
    assert batch(interp) == [("modified", "/w/b.py", None)]
    interp = tree()
    feed(interp, (1, M.MOVED_FROM, 5, "b.py"), (2, M.MOVED_FROM, 6, "a.py"), (1, M.MOVED_TO, 6, "b.py"))
    assert batch(interp) == [("moved", "/w/b.py", "/w/pkg/a.py")]


def test_a_directory_renamed_to_an_ignored_name_is_unwatched():
    interp = tree()
    actions = feed(interp, (1, M.MOVED_FROM | DIR, 7, "pkg"), (1, M.MOVED_TO | DIR, 7, ".git"))
    assert actions == [Unwatch((2, 3))]
    assert len(batch(interp)) == 2 and interp.index.wd_path == {1: "/w"}


def test_in_ignored_for_a_deleted_directory_forgets_its_watch_and_asks_nothing():
    interp = tree()
    # rm -r /w/pkg/sub, as the kernel queues it
    actions = feed(
        interp,
        (3, M.DELETE, 0, "c.py"),
        (3, M.DELETE_SELF, 0, ""),
        (3, M.IGNORED, 0, ""),
        (2, M.DELETE | DIR, 0, "sub"),
    )
    assert actions == []  # the kernel removed the watch itself: no Unwatch
    assert interp.index.wd_path == {1: "/w", 2: "/w/pkg"}
    assert interp.index.subtree("/w/pkg") == ["/w/pkg"]
    assert batch(interp) == [("deleted", "/w/pkg/sub/c.py", None)]


def test_a_created_directory_is_watched_and_scanned_by_the_shell():
    interp = tree()
    [scan] = feed(interp, (1, M.CREATE | DIR, 0, "new"))
    assert scan == Scan(
        "/w/new",
        ("wd=1 IN_CREATE|IN_ISDIR cookie=0 name='new' -> /w/new", "synthesized by scanning new directory /w/new"),
    )
    # what the shell does with it: watch, list, and report each file found as appeared
    interp.index.add(4, "/w/new")
    interp.appeared("/w/new/x.py", 0.0, scan.why)
    interp.appeared("/w/b.py", 0.0, scan.why)  # already known: a modification
    assert batch(interp) == [("created", "/w/new/x.py", None), ("modified", "/w/b.py", None)]
    # a directory already found by its parent's listing (mkdir -p) is not scanned twice
    assert feed(interp, (4, M.CREATE | DIR, 0, "deeper"), (1, M.CREATE | DIR, 0, "new")) == [
        Scan(
            "/w/new/deeper",
            (
                "wd=4 IN_CREATE|IN_ISDIR cookie=0 name='deeper' -> /w/new/deeper",
                "synthesized by scanning new directory /w/new/deeper",
            ),
        )
    ]


def test_an_ignored_directory_is_never_scanned():
    interp = tree()
    assert feed(interp, (1, M.CREATE | DIR, 0, "__pycache__"), (1, M.MOVED_TO | DIR, 9, "node_modules")) == []
    assert all("directory name ignored" in line for line in interp.log)


def test_an_overflow_asks_for_a_rescan_once_the_queue_is_drained():
    interp = tree()
    assert interp.feed((-1, M.Q_OVERFLOW, 0, ""), 0.0) is None
    interp.feed((1, M.CLOSE_WRITE, 0, "b.py"), 0.0)  # held, then replaced by the rescan
    assert interp.drained(0.0) == [RESCAN]
    old_wds, held = interp.lose_all()
    assert (old_wds, held) == ({1, 2, 3}, 1) and interp.index.wd_path == {}
    interp.index.add(1, "/w")  # what the shell's walk does again
    current = {"/w/b.py": 1, "/w/pkg/a.py": hash("/w/pkg/a.py"), "/w/new.py": 2}
    interp.rescanned(current, dirs=1, took_ms=1.5, held=held, now=0.0)
    # the differences are facts like any other: due after the quiet time
    assert interp.timeout(0.0, backlog=False) == 0.25 and interp.due(0.25, backlog=False)
    changes = interp.take()
    assert [(c.kind, c.path) for c in changes] == [
        ("rescan", "/w"),
        ("modified", "/w/b.py"),
        ("created", "/w/new.py"),
        ("deleted", "/w/pkg/sub/c.py"),
    ]
    assert changes[0].why[1] == (
        "queue overflow: rescanned 1 directories and 3 files in 1.5 ms; "
        "3 differ from the snapshot taken after the last batch"
    )
    assert changes[0].why[2] == "1 changes held before the overflow were replaced by the rescan"
    assert interp.drained(0.0) == []  # once


def test_a_quiet_directory_not_known_exactly_is_one_rescan_of_its_root_with_every_reason():
    interp = Interpreter(NameFilter((".py",)), ["/w", "/w2", "/w/pkg-not-nested"], quiet=0.25, max_wait=10)
    interp.unlisted("/w/lib", "changed before the first poll listed it", rebuild=False)
    interp.unlisted("/w2", "changed before the first poll listed it", rebuild=False)
    assert interp.due(0.0, backlog=False), "nothing else held: due at once"
    interp.feed((-1, M.Q_OVERFLOW, 0, ""), 0.0)
    assert interp.drained(0.0) == [RESCAN]
    interp.lose_all()
    interp.rescanned({}, dirs=2, took_ms=1.0, held=0, now=0.0)
    changes = interp.take()
    assert [(c.kind, c.path) for c in changes] == [("rescan", "/w"), ("rescan", "/w2"), ("rescan", "/w/pkg-not-nested")]
    why = changes[0].why
    assert why[0].startswith("/w/lib: changed") and "may be missing" in why[0]
    assert why[2].startswith("IN_Q_OVERFLOW") and why[3].startswith("queue overflow: rescanned 2 directories")
    assert sum(line.startswith("IN_Q_OVERFLOW") for line in changes[1].why) == 1
    assert [line.split(":")[0] for line in interp.log] == ["/w/lib", "/w2"]


def test_a_quiet_directory_moved_before_its_listing_asks_for_a_rescan_that_rebuilds_the_snapshot():
    interp = tree()
    interp.unlisted("/w/pkg/sub", "moved or deleted before the first poll listed it", rebuild=True)
    assert interp.take() == [], "nothing yet: the rescan says it"
    assert interp.drained(0.0) == [RESCAN]
    assert not interp.overflowed, "no record was lost: the shell keeps the watches and held changes"
    interp.rescanned({"/w/b.py": 7, "/w/pkg/a.py": 8, "/w/lib/c.py": 9}, dirs=2, took_ms=1.0, held=0, now=0.0)
    changes = interp.take()
    assert (changes[0].kind, changes[0].path) == ("rescan", "/w")
    assert sorted((c.kind, c.path) for c in changes[1:]) == [
        ("created", "/w/lib/c.py"),
        ("deleted", "/w/pkg/sub/c.py"),
    ], "other signatures differ, but no record was lost: records tell a change of content"
    assert changes[0].why[0].startswith("/w/pkg/sub: moved or deleted before the first poll")
    assert changes[0].why[1].startswith("rescanned 2 directories"), "no IN_Q_OVERFLOW was read"
    assert any(c.why == ("rescanned: new since the last batch",) for c in changes)
    assert interp.drained(0.0) == [], "once"


def test_the_root_of_a_path_is_the_innermost_root_holding_it():
    roots = ["/", "/w", "/w/inner", "/w2"]
    assert root_of("/w/inner/x", roots) == "/w/inner"
    assert root_of("/w/innerx", roots) == "/w"
    assert root_of("/w2", roots) == "/w2"
    assert root_of("/lib", roots) == "/"
    assert root_of("/lib", ["/w"]) == "/lib"


def test_after_an_overflow_a_held_change_counts_even_if_its_signature_matches():
    """The snapshot's signature of b.py was taken after its change (a set-up file signed late,
    or a batch that signed a later write): only the held record says it changed."""
    interp = tree()
    interp.feed((1, M.CLOSE_WRITE, 0, "b.py"), 0.0)
    interp.feed((1, M.CLOSE_WRITE, 0, "x.py"), 0.0)  # gone by the rescan, never known: nothing
    interp.feed((-1, M.Q_OVERFLOW, 0, ""), 0.0)
    assert interp.drained(0.0) == [RESCAN]
    current = {path: sig for path, sig in interp.index.files.items()}  # the same signatures
    _, held = interp.lose_all()
    interp.rescanned(current, dirs=3, took_ms=1.0, held=held, now=0.0)
    changes = interp.take()
    assert [(c.kind, c.path) for c in changes] == [("rescan", "/w"), ("modified", "/w/b.py")]
    assert "records read before the overflow" in changes[1].why[0]


def test_an_unsigned_file_counts_as_modified_by_a_rescan_and_sign_never_overwrites():
    interp = tree()
    index = interp.index
    index.remember("/w/late.py", UNSIGNED)  # found at set-up, not signed yet
    index.sign("/w/late.py", 7)
    index.sign("/w/b.py", 7)  # signed by a batch since: a later state, kept
    index.sign("/w/gone.py", 7)  # forgotten since: stays forgotten
    assert (index.files["/w/late.py"], index.files["/w/b.py"]) == (7, hash("/w/b.py"))
    assert "/w/gone.py" not in index.files
    index.unsign(["/w/late.py", "/w/gone.py"])  # signed while records may have been lost
    assert index.files["/w/late.py"] == UNSIGNED and "/w/gone.py" not in index.files
    current = dict(index.files, **{"/w/late.py": 7})
    assert feed(interp, (-1, M.Q_OVERFLOW, 0, "")) == [RESCAN]
    _, held = interp.lose_all()
    interp.rescanned(current, dirs=3, took_ms=1.0, held=held, now=0.0)
    changes = interp.take()
    assert [(c.kind, c.path) for c in changes] == [("rescan", "/w"), ("modified", "/w/late.py")]
    assert "no signature to compare with" in changes[1].why[0]


def test_a_lost_root_is_a_problem_and_a_moved_root_is_unwatched():
    interp = tree()
    assert feed(interp, (1, M.MOVE_SELF, 0, "")) == [Unwatch((1, 2, 3))]
    assert interp.problems[-1] == ("root-lost", "watched root /w was moved away: no longer watched")
    interp = tree()
    assert feed(interp, (2, M.DELETE_SELF, 0, "")) == []  # not a root: its parent's records tell
    assert feed(interp, (1, M.DELETE_SELF, 0, "")) == [] and interp.problems[-1][0] == "root-lost"


def test_names_filter_files_and_a_save_by_rename_counts_for_the_target():
    interp = tree()
    feed(
        interp,
        (1, M.CREATE, 0, ".b.py.swp"),
        (1, M.CLOSE_WRITE, 0, "notes.txt"),
        (1, M.MOVED_FROM, 5, "b.py.tmp"),
        (1, M.MOVED_TO, 5, "b.py"),
    )
    assert batch(interp) == [("modified", "/w/b.py", None)]
    assert interp.log[0].endswith("name matches ignore pattern '*.swp'")
    assert interp.log[1].endswith("not a watched type ('.py',)")


def test_a_single_file_root_reports_that_file_only():
    interp = Interpreter(NameFilter((".py",), explicit=["/etc/app.conf"]), [], ["/etc/app.conf"])
    interp.index.add(1, "/etc")
    interp.index.add_only(1, "app.conf")
    feed(interp, (1, M.CLOSE_WRITE, 0, "app.conf"), (1, M.CLOSE_WRITE, 0, "other.py"))
    assert batch(interp) == [("modified", "/etc/app.conf", None)]


def test_a_file_being_written_holds_the_batch_until_closed():
    interp = tree()
    feed(interp, (1, M.CREATE, 0, "n.py"), (1, M.MODIFY, 0, "n.py"))
    assert not interp.due(5.0, backlog=False)  # open for writing: quiet alone is not enough
    feed(interp, (1, M.CLOSE_WRITE, 0, "n.py"), now=5.0)
    assert interp.due(5.25, backlog=False) and not interp.due(5.25, backlog=True)
    assert batch(interp) == [("created", "/w/n.py", None)]


def test_a_save_that_closes_or_renames_into_place_ends_its_batch_after_settle_only():
    interp = tree()  # quiet 0.25, settle the default 0.002 (binary fractions below it are exact)
    settle = interp.debouncer.settle
    feed(interp, (1, M.MODIFY, 0, "b.py"), (1, M.MODIFY, 0, "b.py"), (1, M.CLOSE_WRITE, 0, "b.py"))
    assert interp.timeout(0.0, backlog=False) == settle and interp.due(settle, backlog=False)
    assert batch(interp) == [("modified", "/w/b.py", None)]
    feed(
        interp,
        (1, M.CREATE, 0, "b.py.tmp"),
        (1, M.CLOSE_WRITE, 0, "b.py.tmp"),
        (1, M.MOVED_FROM, 7, "b.py.tmp"),
        (1, M.MOVED_TO, 7, "b.py"),
    )  # atomic save
    assert interp.timeout(0.0, backlog=False) == settle
    assert batch(interp) == [("modified", "/w/b.py", None)]
    feed(interp, (1, M.MOVED_TO, 8, "new.py"))  # moved in from outside the tree
    assert interp.timeout(0.0, backlog=False) == settle
    assert batch(interp) == [("created", "/w/new.py", None)]
    feed(interp, (1, M.MOVED_FROM, 9, "b.py"), (1, M.MOVED_TO, 9, "b.py~"))  # vim's first half
    assert interp.timeout(0.0, backlog=False) == 0.25  # a deletion alone: quiet time
    feed(interp, (1, M.CREATE, 0, "b.py"), (1, M.MODIFY, 0, "b.py"), (1, M.CLOSE_WRITE, 0, "b.py"))
    assert interp.timeout(0.0, backlog=False) == settle  # the new file written and closed
    assert batch(interp) == [("modified", "/w/b.py", None)]


@pytest.mark.parametrize("mask, name", [(M.CREATE | DIR, "IN_CREATE|IN_ISDIR"), (M.Q_OVERFLOW, "IN_Q_OVERFLOW")])
def test_mask_names_read_as_the_kernel_headers(mask: int, name: str):
    assert mask_name(mask) == name
