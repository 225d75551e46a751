"""The pid file: only ever replaces or removes a pid file of the lab's own, and ``stop`` /
``reload`` signal only the very server that wrote it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_helpers import run_cli, wait_until, write_app

from lab.errors import LabError
from lab.pidfile import PidFile, is_alive, is_lab_server, read_record, start_time

PASSWD = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"


def serve_args(tmp_path: Path, pidfile: Path, events: Path | None = None) -> list[str]:
    write_app(tmp_path, "v1")
    return [
        "serve",
        "app",
        "--app-dir",
        str(tmp_path),
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--pidfile",
        str(pidfile),
        "--events",
        str(events or tmp_path / "events.jsonl"),
        "--quiet",
    ]


@pytest.mark.parametrize(
    "content",
    [PASSWD, "", "12345\n" * 20, "12 34 56\n", "٣٤\n"],
    ids=["passwd", "empty", "big", "three-numbers", "unicode-digits"],
)
def test_a_file_that_is_not_a_pid_file_is_refused_and_kept(tmp_path, content):
    precious = tmp_path / "passwd"
    precious.write_text(content)
    result = run_cli(*serve_args(tmp_path, precious), timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "refusing it; remove it or choose another path" in lines[0], lines
    assert precious.read_text() == content, "the file is left as it was"


@pytest.mark.parametrize("option", ["pidfile", "events"])
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_fifo_or_a_directory_is_a_one_line_error_not_a_hang(tmp_path, option, kind):
    odd = tmp_path / f"odd-{option}"
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        odd.mkdir()
    paths = {"pidfile": tmp_path / "s.pid", "events": tmp_path / "events.jsonl", option: odd}
    result = run_cli(*serve_args(tmp_path, paths["pidfile"], paths["events"]), timeout=60)
    lines = result.stderr.strip().splitlines()
    what = "a FIFO" if kind == "fifo" else "a directory"
    assert result.returncode == 2 and len(lines) == 1 and what in lines[0], result.stderr
    assert odd.exists() and (odd.is_fifo() if kind == "fifo" else odd.is_dir())
    assert not (tmp_path / "s.pid").exists(), "the failed start leaves no pid file"


def test_the_pid_file_holds_pid_and_start_time_and_is_removed_only_if_ours(tmp_path):
    path = tmp_path / "s.pid"
    pidfile = PidFile(str(path))
    pidfile.create()
    assert path.read_text() == f"{os.getpid()} {start_time(os.getpid())}\n"
    path.unlink()
    path.write_text(PASSWD)  # replaced by something else while we ran
    pidfile.remove()
    assert path.read_text() == PASSWD


def sleeper_looking_like_a_server() -> subprocess.Popen:
    """A program whose command line has ``serve`` and ``lab``: it is no lab server."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "serve", "lab"])
    wait_until(lambda: is_lab_server(proc.pid), 10, message="the sleeper's command line")
    return proc


@pytest.mark.parametrize("command", ["stop", "reload"])
@pytest.mark.parametrize("format", ["pid-and-start", "plain-pid"])
def test_stop_and_reload_never_signal_a_process_that_merely_looks_like_a_server(tmp_path, command, format):
    proc = sleeper_looking_like_a_server()
    try:
        path = tmp_path / "s.pid"
        if format == "plain-pid":
            # An older lab's file, written before this pid went to the sleeper (a server that died).
            path.write_text(f"{proc.pid}\n")
            past = time.time() - 3600
            os.utime(path, (past, past))
        else:
            path.write_text(f"{proc.pid} {start_time(proc.pid) - 1}\n")  # the pid's previous owner
        result = (
            run_cli(command, "--pidfile", str(path), "--timeout", "5")
            if command == "stop"
            else run_cli(command, "--pidfile", str(path))
        )
        assert result.returncode == 2 and "not a running lab server" in result.stderr, result.stderr
        assert proc.poll() is None, "the sleeper got no signal"
    finally:
        proc.kill()
        proc.wait()


def test_stop_finds_its_server_by_a_pid_file_of_either_format(tmp_path):
    path = tmp_path / "s.pid"
    server = subprocess.Popen(
        [sys.executable, "-m", "lab", *serve_args(tmp_path, path)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: path.exists() and path.read_text().endswith("\n"), 30, message="the pid file")
        assert read_record(str(path)).start == start_time(server.pid)
        result = run_cli("reload", "--pidfile", str(path))
        assert result.returncode == 0, result.stderr
        path.write_text(f"{server.pid}\n")  # as an older lab wrote it: still stoppable
        result = run_cli("stop", "--pidfile", str(path), "--timeout", "30", timeout=60)
        assert result.returncode == 0 and f"server {server.pid} stopped" in result.stdout, result.stderr
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        server.stderr.close()
    assert not is_alive(server.pid)


def test_an_absurd_timeout_is_refused_before_any_signal(tmp_path):
    path = tmp_path / "s.pid"
    server = subprocess.Popen(
        [sys.executable, "-m", "lab", *serve_args(tmp_path, path)], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: path.exists() and path.read_text().endswith("\n"), 30, message="the pid file")
        for command in ("stop", "upgrade"):
            for value in ("nan", "-1", "0", "inf", "1e9"):
                result = run_cli(command, "--pidfile", str(path), "--timeout", value)
                lines = result.stderr.strip().splitlines()
                assert result.returncode == 2 and len(lines) == 1, (command, value, result.stderr)
                assert f"timeout must be a number of seconds from 1 to 604800, not {float(value)!r}" in lines[0]
                assert server.poll() is None and read_record(str(path)).pid == server.pid, "no signal was sent"
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stderr.close()


def test_a_stale_pid_file_of_ours_is_replaced(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for content in (done.stdout, f"{done.stdout.strip()} 12345\n"):
        path = tmp_path / "s.pid"
        path.write_text(content)
        pidfile = PidFile(str(path))
        pidfile.create()
        assert read_record(str(path)).pid == os.getpid()
        pidfile.remove()
        assert not path.exists()
    with pytest.raises(LabError, match="no pid file"):
        read_record(str(path))
