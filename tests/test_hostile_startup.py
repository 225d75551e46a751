"""Hostile start-up and security defaults: planted symlinks, loose modes, code from the network.

(A port in use, a running or stale pid file, a bad --bind and an app that does not import or lacks
on_receive are in test_server_lifecycle.py.)
"""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import psutil
import pytest
from server_helpers import run_cli, write_app

import lab
from lab.events import EventSink
from lab.pidfile import PidFile

LAB = Path(lab.__file__).parent


def leftovers(marker: str) -> list[int]:
    """Processes still running whose command line names ``marker`` (a test's own temp dir)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(marker in part for part in p.info["cmdline"] or ()):
            found.append(p.info["pid"])
    return found


@pytest.mark.parametrize("planted", ["pidfile", "events"])
def test_a_symlink_planted_at_a_file_the_server_writes_is_refused(tmp_path, planted):
    write_app(tmp_path, "v1")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    paths = {"pidfile": tmp_path / "s.pid", "events": tmp_path / "events.jsonl"}
    paths[planted].symlink_to(victim)
    result = run_cli(
        "serve",
        "app",
        "--app-dir",
        str(tmp_path),
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--pidfile",
        str(paths["pidfile"]),
        "--events",
        str(paths["events"]),
        "--quiet",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "symlink" in lines[0] and "remove it or choose another path" in lines[0], lines
    assert victim.read_text() == "precious\n", "nothing written through the link"
    assert paths[planted].is_symlink(), "the planted link is left for the user to look at"
    if planted == "events":
        assert not paths["pidfile"].exists(), "the pid file of the failed start is removed"
    assert not leftovers(str(tmp_path))


def test_pid_and_events_files_are_not_writable_by_others_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        pidfile = PidFile(str(tmp_path / "s.pid"))
        pidfile.create()
        EventSink(tmp_path / "events.jsonl").close()
    finally:
        os.umask(old)
    try:
        for name in ("s.pid", "events.jsonl"):
            mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
            assert not mode & (stat.S_IWGRP | stat.S_IWOTH), f"{name}: {oct(mode)}"
    finally:
        pidfile.remove()


def test_nothing_from_the_network_is_evaluated_or_unpickled():
    banned_calls = {"eval", "exec", "compile", "__import__"}
    banned_modules = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "yaml"}
    found = []
    for path in sorted(LAB.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in banned_calls:
                found.append(f"{path.name}:{node.lineno} {node.func.id}()")
            elif isinstance(node, ast.Import):
                found += [
                    f"{path.name}:{node.lineno} import {a.name}"
                    for a in node.names
                    if a.name.split(".")[0] in banned_modules
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in banned_modules:
                found.append(f"{path.name}:{node.lineno} from {node.module}")
    assert not found, found


def test_the_default_bind_is_loopback():
    result = run_cli("serve", "--help")
    assert "default 127.0.0.1:9000" in result.stdout
    from lab.config import Config

    assert Config(target="app").bind.startswith("127.0.0.1:")
