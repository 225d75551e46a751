"""``python -m lab watch``: a real subprocess, real files, real signals."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


class WatchProcess:
    """``python -m lab watch ...`` with line reads that have deadlines."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lab", "watch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._buffers = {self.proc.stdout: b"", self.proc.stderr: b""}

    def line(self, stream, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(stream, selectors.EVENT_READ)
            while b"\n" not in self._buffers[stream]:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError(f"no line within {timeout}s; so far: {self._buffers[stream]!r}")
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"stream closed; so far: {self._buffers[stream]!r}")
                self._buffers[stream] += chunk
        line, _, self._buffers[stream] = self._buffers[stream].partition(b"\n")
        return line.decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def watch():
    started: list[WatchProcess] = []

    def start(*args: str) -> WatchProcess:
        started.append(WatchProcess(*args))
        return started[-1]

    yield start
    for w in started:
        w.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_json_lines_as_changes_happen_and_a_clean_stop(tmp_path: Path, watch, sig):
    w = watch(str(tmp_path), "--json")
    assert w.line(w.proc.stderr).startswith("watching 1 directories, 0 files")
    (tmp_path / "app.py").write_text("x = 1\n")
    assert json.loads(w.line(w.proc.stdout)) == {"kind": "created", "path": str(tmp_path / "app.py")}
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "m.py").write_text("")
    assert json.loads(w.line(w.proc.stdout))["path"] == str(tmp_path / "a" / "b" / "m.py")
    w.proc.send_signal(sig)
    assert w.proc.wait(10) == 0


def test_types_explain_and_plain_text(tmp_path: Path, watch):
    w = watch(str(tmp_path), "--types", "txt,.md", "--explain", "--debounce", "0.01")
    w.line(w.proc.stderr)
    (tmp_path / "skip.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    assert w.line(w.proc.stdout).split() == ["created", str(tmp_path / "notes.txt")]
    assert "IN_CREATE" in w.line(w.proc.stdout)


def test_all_types_and_json_explain(tmp_path: Path, watch):
    w = watch(str(tmp_path), "--all-types", "--json", "--explain")
    w.line(w.proc.stderr)
    (tmp_path / "data.bin").write_bytes(b"\0")
    record = json.loads(w.line(w.proc.stdout))
    assert record["kind"] == "created" and record["path"] == str(tmp_path / "data.bin")
    assert any("IN_CLOSE_WRITE" in line for line in record["why"])


def test_bad_path_is_one_line_and_exit_2(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-m", "lab", "watch", str(tmp_path / "nope")], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2
    assert out.stderr == (
        f"python -m lab watch: {tmp_path / 'nope'}: no such file or directory; "
        "give a directory (watched recursively) or a file\n"
    )
