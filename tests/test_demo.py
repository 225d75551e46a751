"""``python -m lab demo`` tells the story on a real server and leaves nothing running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from lab_copy import copy_lab

from lab.demo import set_greeting
from lab.errors import LabError
from lab.playground import Lab, wait_until

DEMO = [sys.executable, "-m", "lab", "demo"]


def _servers(output: str) -> list[int]:
    pids = [int(p) for p in re.findall(r"server pid (\d+)", output)]
    assert pids, output
    return pids


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _assert_all_gone(pids: list[int]) -> None:
    """The servers ran in their own sessions: gone means their whole process group is gone too."""
    wait_until(lambda: all(_gone(pid) for pid in pids), timeout=10, what="the demo's servers exiting")
    for pid in pids:
        members = [p.pid for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pid]
        assert not members, f"processes of server {pid} left: {members}"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_demo_all_tells_the_reload_and_heartbeat_story():
    run = subprocess.run([*DEMO, "all", "--edits", "2", "--workers", "2"], capture_output=True, text=True, timeout=60)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "\033[" not in out  # no colour when stdout is not a terminal
    # The tutorial's curl, then each edit answered by a new generation with its phases.
    assert re.search(r"\$ curl http://127\.0\.0\.1:\d+/\n.*hello world client", out)
    for k, generation in ((1, 2), (2, 3)):
        assert re.search(
            rf"generation {generation} serving: save->seen \d+ \| fork \d+ \| import \d+ "
            rf"\| switch \d+ \| drain \d+ \| total \d+ ms\n.*answer: hello, edit {k}\n",
            out,
        ), out
    # The syntax error is refused while the old code answers; the fix is served.
    assert re.search(r"generation 4 refused and removed: SyntaxError.*\n.*keep answering: hello, edit 2", out), out
    assert re.search(r"fixed: generation 5 serving: .*\n.*answer: hello, fixed", out), out
    assert re.search(r"background clients: [1-9]\d* answers, 0 failed during 4 edits", out), out
    # Heartbeat: three silent clients closed for idleness after about a second; chatty ones stay.
    idles = [float(x) for x in re.findall(r"closed silent client \S+ after \S+ s: reason idle, idle ([\d.]+) s", out)]
    assert len(idles) == 3 and all(1.0 <= x < 2.0 for x in idles), out
    assert "closed chatty" not in out
    assert "2 of 2 chatty clients still open" in out
    assert out.rstrip().endswith("== done: every server and client started by the demo is stopped ==")
    _assert_all_gone(_servers(out))


def test_the_demo_edits_whatever_the_greeting_says(tmp_path):
    """A reader has edited Greeting.text in lab/examples/hello.py (a copy of the package here)."""
    copy_lab(tmp_path, greeting="bonjour")
    run = subprocess.run(
        [*DEMO, "reload", "--edits", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert re.search(r"\$ curl http://127\.0\.0\.1:\d+/\n.*bonjour\n", out), out
    assert "answer: hello, edit 1" in out and "keep answering: hello, edit 1" in out
    assert "answer: hello, fixed" in out
    _assert_all_gone(_servers(out))


def test_an_app_without_a_greeting_line_is_one_clear_error(tmp_path):
    app = tmp_path / "hello.py"
    app.write_text("def on_receive(server, conn, data):\n    server.send(conn, b'hi\\n')\n")
    lab = Lab(app, start=False)
    try:
        with pytest.raises(LabError, match=r"no 'text = \.\.\.' line in hello\.py") as info:
            set_greeting(lab, '"x"')
        assert "\n" not in str(info.value)
        assert lab.read("hello.py") == app.read_text(), "nothing written"
    finally:
        lab.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_demo_stops_its_server(signum):
    proc = subprocess.Popen(
        [*DEMO, "reload", "--edits", "5", "--pace", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # readline returns at each line or at exit
            line = proc.stdout.readline()
            lines.append(line)
            if not line or "answer: hello, edit 1" in line:
                break
        assert "answer: hello, edit 1" in lines[-1], "".join(lines)
        proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    out = "".join(lines) + rest
    assert proc.returncode == 130, out
    assert "interrupted: every server and client started by the demo is stopped" in out
    _assert_all_gone(_servers(out))


@pytest.mark.parametrize(
    "args, says",
    [
        (["reload", "--edits", "0"], "give 1-32 workers and 1-50 edits"),
        (["reload", "--workers", "500"], "give 1-32 workers and 1-50 edits"),
        (["heartbeat", "--port", "70000"], "--port 70000 is not a TCP port"),
        (["all", "--pace", "-1"], "--pace -1 is out of range"),
    ],
)
def test_bad_options_get_one_clear_line(args, says):
    run = subprocess.run([*DEMO, *args], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert says in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert "server pid" not in run.stdout
