"""The one driver of a ``serve`` subprocess (lab/process.py) and the one vocabulary of event kinds."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from lab.errors import LabError
from lab.events import PHASE_BY_KEY, RELOAD_PHASES, Kind
from lab.process import ServerProcess, serve_argv

LAB = Path(__file__).resolve().parent.parent / "lab"


def test_serve_argv_spells_the_options_as_the_cli_does(tmp_path):
    argv = serve_argv(
        "app", tmp_path / "e.jsonl", app_dir=tmp_path, workers=2, quiet=True, watch=None, heartbeat_strategy=False
    )
    assert argv == [
        sys.executable,
        "-m",
        "lab",
        "serve",
        "app",
        "--events",
        str(tmp_path / "e.jsonl"),
        "--app-dir",
        str(tmp_path),
        "--workers",
        "2",
        "--quiet",
    ]


def test_waiting_ends_as_soon_as_the_server_exits(tmp_path):
    events = tmp_path / "events.jsonl"
    server = ServerProcess(
        serve_argv("app", events, app_dir=tmp_path, workers=0), events, cwd=tmp_path, output=tmp_path / "out.txt"
    )
    with pytest.raises(LabError, match=r"(?s)the server exited with code 2:.*workers"):
        server.start(timeout=60)  # a deadline far beyond the exit: the error comes from the exit
    assert not server.running


def test_every_kind_the_lab_emits_comes_from_the_vocabulary():
    sources = {path: path.read_text() for path in LAB.rglob("*.py")}
    literal = {f"{path.name}: {m}" for path, text in sources.items() for m in re.findall(r'emit\(\s*"([^"]*)"', text)}
    assert not literal, f"event kinds written as strings instead of lab.events.Kind: {sorted(literal)}"
    named = {m for text in sources.values() for m in re.findall(r"emit\(\s*Kind\.([A-Z_]+)", text)}
    assert len(named) > 20 and named <= set(Kind.__members__), named - set(Kind.__members__)
    assert len({k.value for k in Kind}) == len(Kind)  # no two names for one kind on disk


def test_the_on_disk_names_stay():
    assert (Kind.RELOAD_DONE, Kind.CONN_CLOSE, Kind.WORKER_UNRESPONSIVE) == (
        "reload.done",
        "conn.close",
        "worker.unresponsive",
    )
    assert [p.key for p in RELOAD_PHASES] == ["seen", "forked", "ready", "serving", "old_gone"]
    assert PHASE_BY_KEY["old_gone"].step == "drain"
