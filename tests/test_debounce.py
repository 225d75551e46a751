"""lab.debounce: exact, with made-up times."""

import pytest

from lab.debounce import WHY_LIMIT, Change, Debouncer


def kinds(changes):
    return [(c.kind, c.path, c.src) for c in changes]


def test_quiet_time_runs_from_the_last_fact_even_for_a_path_already_held():
    d = Debouncer(quiet=0.25, max_wait=10)  # binary fractions: the sums are exact
    d.modified("/a.py", 0.0)
    assert d.timeout(0.0) == 0.25
    d.modified("/a.py", 0.125)  # same path, nothing new held: the quiet time still restarts
    assert not d.ready(0.25)
    assert d.timeout(0.25) == 0.125
    assert d.ready(0.375)
    assert kinds(d.take()) == [("modified", "/a.py", None)]
    assert d.timeout(1.0) is None and not d.pending


def test_max_wait_yields_a_batch_from_a_stream_that_never_pauses():
    d = Debouncer(quiet=0.1, max_wait=0.5)
    t = 0.0
    while not d.ready(t):
        d.modified(f"/f{int(t * 100)}.py", t)
        t = round(t + 0.05, 2)
    assert t == 0.5
    assert len(d.take()) == 10


@pytest.mark.parametrize(
    "facts, expected",
    [
        (["created", "modified"], "created"),
        (["created", "deleted"], None),
        (["modified", "deleted"], "deleted"),
        (["deleted", "created"], "modified"),
        (["deleted", "created", "modified"], "modified"),
        (["modified", "modified"], "modified"),
        (["created", "deleted", "created"], "created"),
        (["deleted"], "deleted"),
    ],
)
def test_coalescing_rules_per_path(facts, expected):
    d = Debouncer(quiet=0.01)
    for i, fact in enumerate(facts):
        getattr(d, fact)("/p.py", i * 0.001, (f"record {i}",))
    changes = d.take()
    assert [c.kind for c in changes] == ([expected] if expected else [])
    if expected and len(facts) > 1:
        assert changes[0].why[: len(facts)] == tuple(f"record {i}" for i in range(len(facts)))
        assert changes[0].why[-1] == f"merged {len(facts)} facts into one change"


def test_created_then_deleted_is_dropped_with_its_story_told():
    drops = []
    d = Debouncer(on_drop=lambda path, why: drops.append((path, why)))
    d.created("/tmp.py", 0, ("raw create",))
    d.deleted("/tmp.py", 0, ("raw delete",))
    assert d.take() == []
    assert drops[0][0] == "/tmp.py" and drops[0][1][:2] == ("raw create", "raw delete")


def test_moves_chain_and_pair():
    d = Debouncer()
    d.moved("/a.py", "/b.py", 0, ("a->b",))
    d.moved("/b.py", "/c.py", 0, ("b->c",))
    [change] = d.take()
    assert (change.kind, change.src, change.path) == ("moved", "/a.py", "/c.py")
    assert change.why[:2] == ("a->b", "b->c")


def test_move_of_a_new_file_is_a_creation_and_move_then_delete_is_a_deletion():
    d = Debouncer()
    d.created("/tmp.py", 0)
    d.moved("/tmp.py", "/app.py", 0)
    assert kinds(d.take()) == [("created", "/app.py", None)]
    d.moved("/a.py", "/b.py", 1)
    d.deleted("/b.py", 1)
    assert kinds(d.take()) == [("deleted", "/a.py", None)]


def test_rename_onto_an_existing_file_and_rename_back():
    d = Debouncer()
    d.moved("/new.py", "/old.py", 0, replaced=True)
    assert kinds(d.take()) == [("moved", "/old.py", "/new.py")]
    d.moved("/a.py", "/b.py", 1)
    d.moved("/b.py", "/a.py", 1)
    assert kinds(d.take()) == [("modified", "/a.py", None)]


def test_origin_recreated_means_no_move():
    # rename a -> b, then a new a: both exist, b has the old content, a the new
    d = Debouncer()
    d.moved("/a.py", "/b.py", 0)
    d.created("/a.py", 0)
    assert sorted(kinds(d.take())) == [("created", "/b.py", None), ("modified", "/a.py", None)]


def test_why_is_bounded():
    d = Debouncer()
    for i in range(1000):
        d.modified("/a.py", i * 1e-3, (f"record {i}",))
    [change] = d.take()
    assert len(change.why) == WHY_LIMIT + 2
    assert change.why[-2] == f"... and {1000 - WHY_LIMIT} more lines"
    assert change.why[-1] == "merged 1000 facts into one change"


def test_state_paths_in_and_discard():
    d = Debouncer()
    d.created("/d/x.py", 0)
    d.deleted("/d/y.py", 0)
    d.created("/dd/z.py", 0)
    d.created("/d/e/w.py", 0)
    assert d.state("/d/x.py") is True and d.state("/d/y.py") is False and d.state("/q") is None
    assert d.paths_in("/d") == ["/d/x.py"] and d.paths_in("/d/e") == ["/d/e/w.py"]
    assert sorted(d.discard()) == ["/d/e/w.py", "/d/x.py", "/d/y.py", "/dd/z.py"]
    assert not d.pending and d.take() == []


def test_held_paths_are_indexed_by_directory():
    """A deleted tree asks for each of its directories' held paths: an index answers each in
    the time of its own paths (a scan of every held path made deleting a tree quadratic)."""
    d = Debouncer()
    for i in range(3):
        d.created(f"/t/d{i}/f.py", 0)
    d.deleted("/t/d1/f.py", 0)
    assert d._dirs == {f"/t/d{i}": {f"/t/d{i}/f.py": None} for i in range(3)}
    assert [d.paths_in(f"/t/d{i}") for i in range(3)] == [["/t/d0/f.py"], [], ["/t/d2/f.py"]]
    d.take()
    assert d._dirs == {} and d.paths_in("/t/d0") == []


def test_change_to_json():
    change = Change("moved", "/b.py", "/a.py", ("why",))
    assert change.to_json() == {"kind": "moved", "path": "/b.py", "src": "/a.py", "why": ["why"]}
    assert Change("created", "/c.py").to_json() == {"kind": "created", "path": "/c.py", "why": []}


def test_a_file_still_open_for_writing_holds_the_batch_until_it_is_closed():
    d = Debouncer(quiet=0.25, max_wait=4)
    d.modified("/a.py", 0.0, writing=True)  # truncated (IN_MODIFY), the writer then stalls
    assert not d.ready(1.0) and d.timeout(1.0) == 3.0
    d.modified("/a.py", 1.5)  # IN_CLOSE_WRITE: now quiet time counts again
    assert not d.ready(1.625) and d.ready(1.75)
    assert kinds(d.take()) == [("modified", "/a.py", None)]
    assert d.timeout(2.0) is None


def test_an_open_writer_cannot_hold_a_batch_past_max_wait():
    d = Debouncer(quiet=0.25, max_wait=2)
    d.created("/log.py", 0.0, writing=True)  # a writer that never closes
    d.modified("/b.py", 0.5)
    assert not d.ready(1.5) and d.ready(2.0)
    assert [c.path for c in d.take()] == ["/log.py", "/b.py"]


def test_deleting_or_renaming_an_open_file_releases_the_batch():
    d = Debouncer(quiet=0.25, max_wait=8)
    d.created("/tmp.py", 0.0, writing=True)
    d.moved("/tmp.py", "/a.py", 0.5)
    d.modified("/b.py", 0.5, writing=True)
    d.deleted("/b.py", 0.75)
    assert d.ready(1.0)


def test_a_batch_of_closed_files_is_due_after_settle_not_quiet():
    d = Debouncer(quiet=0.25, max_wait=4, settle=0.0625)
    d.modified("/a.py", 0.0, writing=True)  # truncated
    d.modified("/a.py", 0.0, writing=True)  # written
    d.modified("/a.py", 0.125, settled=True)  # IN_CLOSE_WRITE: the save says it is done
    assert d.timeout(0.125) == 0.0625 and not d.ready(0.125) and d.ready(0.1875)
    d.created("/b.py", 0.1875, writing=True)  # the same burst's next file: held again
    assert d.timeout(1.0) == 3.0
    d.modified("/b.py", 1.0, settled=True)
    assert d.ready(1.0625)
    assert kinds(d.take()) == [("modified", "/a.py", None), ("created", "/b.py", None)]


def test_a_rename_into_place_settles_and_a_deletion_or_plain_modification_does_not():
    d = Debouncer(quiet=0.25, max_wait=4, settle=0.0625)
    d.created("/a.py.tmp", 0.0, writing=True)
    d.modified("/a.py.tmp", 0.0, settled=True)
    d.moved("/a.py.tmp", "/a.py", 0.0, replaced=True)  # an atomic save
    assert d.ready(0.0625)
    d.deleted("/b.py", 0.0625)  # vim moved the old file away; the new one is not written yet
    assert not d.ready(0.125) and d.ready(0.3125)
    d.take()
    d.modified("/c.py", 0.0)  # a change with no close (a scan, a rescan): quiet time
    assert d.timeout(0.0) == 0.25
    d.created("/d.py", 0.0, settled=True)  # moved in from outside: complete
    assert d.timeout(0.0) == 0.25  # c.py still wants the quiet time
    d.modified("/c.py", 0.125, settled=True)  # now closed too
    assert d.timeout(0.125) == 0.0625


def test_settle_never_exceeds_quiet_and_a_reopened_file_holds_the_batch_again():
    assert Debouncer(quiet=0.0).settle == 0.0 and Debouncer(quiet=1.0, settle=0.5).settle == 0.5
    with pytest.raises(ValueError):
        Debouncer(settle=-1)
    d = Debouncer(quiet=0.25, max_wait=4, settle=0.0625)
    d.modified("/a.py", 0.0, settled=True)
    d.modified("/a.py", 0.03125, writing=True)  # opened and written again before settle ends
    assert not d.ready(1.0) and d.timeout(1.0) == 3.0
