"""Hostile inputs at the edges: torn event lines, file names that forge output, odd watched roots,
a closed Lab, scratch folders of a killed notebook (the whole story: test_playground.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from server_helpers import run_cli
from test_cli_watch import WatchProcess

from lab.errors import LabError
from lab.events import EventSink, Kind, read_events
from lab.pidfile import start_time
from lab.playground import OWNER_FILE, SERVER_PIDFILE, Lab, sweep_scratch

# --- events --------------------------------------------------------------------------------------


def test_a_run_after_a_torn_line_starts_on_a_fresh_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"t":1.0,"kind":"reload.done","pid":7}\n{"t":2.0,"kind":"conn.op')  # the disk filled
    with EventSink(path) as sink:
        sink.emit(Kind.SERVER_START, bind="127.0.0.1:1")
    assert [e["kind"] for e in read_events(path)] == [Kind.RELOAD_DONE, Kind.SERVER_START]


def test_an_event_glued_to_a_torn_line_by_another_writer_is_read(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"t":2.0,"kind":"conn.op{"t":3.0,"kind":"server.start","pid":8,"x":"{\\"t\\":"}\n')
    assert read_events(path) == [{"t": 3.0, "kind": Kind.SERVER_START, "pid": 8, "x": '{"t":'}]


FILL_THE_DISK = textwrap.dedent("""
    import resource, signal, sys
    from lab.events import EventSink
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a short write and EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
    sink = EventSink(sys.argv[1])
    for i in range(100):
        sink.emit("conn.open", n=i)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    sink.emit("disk.back")  # space is back: the same writer goes on, on a fresh line
""")


def test_a_full_disk_tears_one_line_and_loses_no_other(tmp_path):
    path = tmp_path / "events.jsonl"
    limit = 1000  # bytes: a few events fit, then one is cut short
    done = subprocess.run(
        [sys.executable, "-c", FILL_THE_DISK, str(path), str(limit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "cannot write events" in done.stderr
    with EventSink(path) as sink:  # the next run
        sink.emit(Kind.SERVER_START)
    kinds = [e["kind"] for e in read_events(path)]
    assert kinds[-2:] == ["disk.back", Kind.SERVER_START], kinds
    opened = [e["n"] for e in read_events(path) if e["kind"] == Kind.CONN_OPEN]
    assert opened == list(range(len(opened))) and opened, "every complete line before the tear"
    assert path.read_bytes().count(b"\n") == len(kinds) + 1, "one torn line, then fresh lines"


# --- lab watch and odd roots -----------------------------------------------------------------------


def test_a_file_name_with_a_newline_cannot_forge_a_line_of_lab_watch(tmp_path):
    watch = WatchProcess(str(tmp_path))
    try:
        assert watch.line(watch.proc.stderr).startswith("watching")
        (tmp_path / "x.py\ncreated   forged.py").write_text("")
        (tmp_path / "zz.py").write_text("")  # a second change: whatever the first printed comes before
        lines = [watch.line(watch.proc.stdout, timeout=30) for _ in range(2)]
    finally:
        watch.stop()
    forged = f"{tmp_path}/x.py\\ncreated   forged.py"
    assert sorted(line.split(None, 1)[1] for line in lines) == [forged, f"{tmp_path}/zz.py"], lines


@pytest.mark.parametrize(
    "root, message",
    [
        ("link", "is a symlink to the directory /: links are not followed; give the directory itself"),
        ("/proc", "/proc is in /proc, a kernel file system: its files change without inotify events"),
    ],
)
def test_an_unwatchable_root_says_what_is_wrong(tmp_path, root, message):
    (tmp_path / "link").symlink_to("/")
    result = run_cli("watch", str(tmp_path / root), timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


# --- the playground ----------------------------------------------------------------------------------


def test_start_after_close_is_a_clear_error():
    lab = Lab(workers=1)
    lab.close()
    with pytest.raises(LabError, match="this Lab is closed"):
        lab.start()


def a_dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_scratch_folders_of_a_killed_notebook_are_swept_and_no_other(tmp_path):
    me = f"{os.getpid()} {start_time(os.getpid())}\n"
    gone = f"{a_dead_pid()} 1\n"
    folders = {
        "abandoned": (gone, None),
        "owner-runs": (me, None),
        "server-runs": (gone, me),
        "not-made-by-a-lab": (None, None),
        "owner-not-a-pid": ("precious\n", None),
    }
    for name, (owner, server) in folders.items():
        folder = tmp_path / f"reactor-lab-{name}"
        (folder / "app").mkdir(parents=True)
        for file, content in ((OWNER_FILE, owner), (SERVER_PIDFILE, server)):
            if content is not None:
                (folder / file).write_text(content)
    (tmp_path / "reactor-lab-a-link").symlink_to(tmp_path / "reactor-lab-abandoned")
    assert sweep_scratch(str(tmp_path)) == [tmp_path / "reactor-lab-abandoned"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["reactor-lab-a-link"] + [f"reactor-lab-{n}" for n in folders if n != "abandoned"]
    )
