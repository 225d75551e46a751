"""``python -m lab check`` against real servers: the lab's own, and small ones with one defect each.

Each defective server (tests/check_servers/server.py) must fail exactly the check that names its
defect and pass every other; the lab's server must pass them all. Scenarios are kept short
(3 edits, idle 1 s) so the file runs in about a minute and a half on a loaded machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from server_helpers import wait_until

from lab.check import SCENARIOS, Options, Report, run

ROOT = Path(__file__).resolve().parent.parent
SERVER = Path(__file__).resolve().parent / "check_servers" / "server.py"
MARKER = "hello check"
APP = f'TEXT = "{MARKER}"\n'
SHORT: dict[str, Any] = dict(edits=3, broken_s=1.0)
# Heartbeat claims: the late bound is idle + interval + 250 ms, so a wide interval keeps a stall of
# the loaded machine from turning a correct close into a late one (the defects are seconds apart).
SERVER_BEAT: dict[str, Any] = dict(idle=1.0, interval=1.0)
LAB_BEAT = dict(idle=1.0, interval=0.5)
QUICK_MISS = 2.0  # the test server reloads within a poll (10 ms): a missed edit need not wait 10 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_server(tmp_path: Path, defect: str, scenarios: tuple[str, ...] = SCENARIOS) -> Report:
    """Run the whole check against the test server with ``defect``; the app must come back intact."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    port = free_port()
    cmd = f"{sys.executable} {SERVER} --port {port} --app {app} --idle 1 --interval 1 --defect {defect}"
    report = run(
        Options(
            connect=f"127.0.0.1:{port}",
            app=str(app),
            marker=MARKER,
            cmd=cmd,
            scenarios=scenarios,
            seen_timeout=QUICK_MISS,
            **SHORT,
            **SERVER_BEAT,
        )
    )
    assert app.read_text() == APP
    return report


@pytest.mark.parametrize(
    "defect, failed",
    [
        ("none", []),
        ("kill-early", ["reload.failed_requests"]),
        ("never-reload", ["reload.missed_edits", "broken.recovered"]),
        ("side-by-side", ["reload.stale_answers"]),
        ("never-close", ["heartbeat.never_closed"]),
        ("close-early", ["heartbeat.closed_early"]),
        ("close-late", ["heartbeat.closed_late"]),
        ("close-busy", ["heartbeat.chatty_closed"]),
        ("leave-behind", ["stop.left_behind"]),
    ],
)
def test_a_defect_fails_exactly_its_check(tmp_path, defect, failed):
    report = check_server(tmp_path, defect)
    assert len(report.checks) == 12, str(report)
    assert report.failed == failed, str(report)
    assert report.ok is (not failed)


def test_a_server_dying_on_a_syntax_error_fails_the_broken_checks(tmp_path):
    # Once dead it cannot be asked about heartbeats: those scenarios are left out.
    report = check_server(tmp_path, "die-on-syntax", ("reload", "broken", "stop"))
    assert report.failed == ["broken.kept_serving", "broken.failed_requests", "broken.recovered"], str(report)


def test_workers_left_behind_are_named_and_then_killed(tmp_path):
    report = check_server(tmp_path, "leave-behind", ("stop",))
    left = report.stop["left_behind"]
    assert len(left) == 1 and report.stop["graceful"], str(report)
    wait_until(
        lambda: all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in left),
        message="the left-behind worker to be killed",
    )


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_labs_own_server_passes_every_check(tmp_path):
    app = tmp_path / "hello.py"
    shutil.copy(ROOT / "lab" / "examples" / "hello.py", app)
    original = app.read_text()
    port = free_port()
    cmd = (
        f"{sys.executable} -m lab serve hello --app-dir {tmp_path} --watch {tmp_path} --workers 2 "
        f"--bind 127.0.0.1:{port} --heartbeat-idle 1 --heartbeat-interval 0.5 --quiet"
    )
    for protocol in ("line", "http"):
        report = run(
            Options(
                connect=f"127.0.0.1:{port}",
                app=str(app),
                marker="hello world client",
                cmd=cmd,
                protocol=protocol,
                **SHORT,
                **LAB_BEAT,
            )
        )
        assert report.ok, str(report)
        assert report.reload["ok_requests"] > 0 and report.heartbeat["silent"] == 4
    assert app.read_text() == original


def test_an_already_running_server_is_checked_and_left_running(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), "--port", str(port), "--app", str(app)])
    try:
        wait_until(lambda: _answers(port), timeout=30, message="the test server")
        report = run(
            Options(
                connect=f"127.0.0.1:{port}",
                app=str(app),
                marker=MARKER,
                scenarios=("reload", "stop"),
                edits=2,
                seen_timeout=3.0,
            )
        )
        assert report.ok and report.stop is None, str(report)
        assert any("stop: skipped" in note for note in report.notes)
        assert proc.poll() is None and app.read_text() == APP
    finally:
        proc.terminate()
        proc.wait(30)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"hi\n")
            return MARKER in s.recv(100).decode()
    except OSError:
        return False


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lab", "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_cli_json_to_stdout_is_quiet_and_complete(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    port = free_port()
    cmd = f"{sys.executable} {SERVER} --port {port} --app {app} --idle 1"
    done = cli(
        "--connect",
        f"127.0.0.1:{port}",
        "--app",
        str(app),
        "--marker",
        MARKER,
        "--cmd",
        cmd,
        "--edits",
        "2",
        "--idle",
        "1",
        "--json",
        "-",
        "--plots",
        str(tmp_path / "plots"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    data = json.loads(done.stdout)
    assert data["ok"] is True and {c["name"] for c in data["checks"]} >= {"reload.stale_answers", "stop.graceful"}
    assert set(data["checks"][0]) == {"name", "ok", "value", "bound", "detail"}
    assert set(data["reload"]) >= {
        "edits",
        "missed",
        "failed_requests",
        "ok_requests",
        "stale_answers",
        "latency_ms",
        "p50_ms",
    }
    assert set(data["broken"]) >= {"kept_serving", "failed_requests", "recovered"}
    assert set(data["heartbeat"]) >= {
        "silent",
        "closed_early",
        "closed_late",
        "never_closed",
        "chatty",
        "chatty_closed",
        "lateness_ms",
    }
    assert set(data["stop"]) >= {"graceful", "exit_s", "left_behind"}
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["heartbeat.png", "reload.png"]
    assert app.read_text() == APP


def test_cli_a_failing_check_exits_1_with_a_table(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    port = free_port()
    cmd = f"{sys.executable} {SERVER} --port {port} --app {app} --defect side-by-side"
    done = cli(
        "--connect",
        f"127.0.0.1:{port}",
        "--app",
        str(app),
        "--marker",
        MARKER,
        "--cmd",
        cmd,
        "--edits",
        "2",
        "--scenarios",
        "reload",
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert "reload.stale_answers" in done.stdout and "FAIL" in done.stdout and "02_hot_reload" in done.stdout
    assert "reload: edit 2/2" in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--connect", "192.0.2.1:80"], "only loopback addresses"),
        (["--connect", "nonsense"], "expected HOST:PORT"),
        (["--marker", "not in the file"], "is not in this file"),
        (["--scenarios", "reload,dance"], "unknown dance"),
        (["--cmd", "/nonexistent/server"], "No such file"),
        # Refused before the run: each of these once ran a whole check for nothing, a false FAIL,
        # a run of years or a thread per client past the system's limit.
        (["--idle", "nan"], "idle must be a number of seconds from 0.02 to 3600, not nan"),
        (["--idle", "0"], "idle must be a number of seconds from 0.02 to 3600, not 0.0"),
        (["--idle", "1e9"], "idle must be a number of seconds from 0.02 to 3600, not 1000000000.0"),
        (["--idle", "1", "--interval", "1e9"], "interval must be a number of seconds from 0.01 to 3600"),
        (["--interval", "-1"], "interval must be a number of seconds from 0.01 to 3600, not -1.0"),
        (["--clients", "100000"], "--clients must be an integer from 1 to 256, not 100000"),
        (["--clients", "0"], "--clients must be an integer from 1 to 256, not 0"),
        (["--edits", "1001"], "--edits must be an integer from 1 to 1000, not 1001"),
        (["--json", "/proc/nope/x"], "--json /proc/nope/x: no folder /proc/nope to write the report into"),
        (["--plots", "/proc/nope"], "--plots /proc/nope: cannot make this folder (No such file or directory)"),
    ],
)
def test_cli_bad_input_is_one_line_and_touches_nothing(tmp_path, args, message):
    app = tmp_path / "app.py"
    app.write_text(APP)
    options = {"--connect": "127.0.0.1:9", "--marker": MARKER}
    for flag, value in zip(args[::2], args[1::2]):
        options[flag] = value
    done = cli("--app", str(app), *[x for kv in options.items() for x in kv], cwd=tmp_path)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if not line.startswith("check: ")]  # not progress
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert app.read_text() == APP


@pytest.mark.parametrize("output", ["json", "plots"])
def test_cli_an_output_not_written_after_the_run_is_one_line_after_the_table(tmp_path, output):
    app = tmp_path / "app.py"
    app.write_text(APP)
    plots = tmp_path / "plots"
    (plots / "reload.png").mkdir(parents=True)  # passes the check before the run, not savefig
    args = ["--json", "/dev/full", "--scenarios", "stop"] if output == "json" else ["--plots", str(plots)]
    port = free_port()
    done = cli(
        "--connect",
        f"127.0.0.1:{port}",
        "--app",
        str(app),
        "--marker",
        MARKER,
        "--cmd",
        f"{sys.executable} {SERVER} --port {port} --app {app}",
        "--edits",
        "1",
        "--scenarios",
        "reload",
        *args,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert ("stop.graceful" if output == "json" else "reload.stale_answers") in done.stdout, "the table first"
    errors = [line for line in done.stderr.splitlines() if not line.startswith("check: ")]
    expected = "--json /dev/full: cannot write the report" if output == "json" else f"--plots {plots}: cannot write"
    assert len(errors) == 1 and expected in errors[0], done.stderr
    assert (plots / "reload.png").is_dir() and app.read_text() == APP


def test_cli_a_server_that_exits_at_once_is_one_line(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    done = cli(
        "--connect",
        "127.0.0.1:9",
        "--app",
        str(app),
        "--marker",
        MARKER,
        "--cmd",
        f"{sys.executable} -c 'print(\"bad config\"); raise SystemExit(3)'",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "exited with status 3" in done.stderr and "bad config" in done.stderr, done.stderr
    assert app.read_text() == APP


def test_ctrl_c_restores_the_app_and_stops_the_server(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    port = free_port()
    cmd = f"{sys.executable} {SERVER} --port {port} --app {app}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab",
            "check",
            "--connect",
            f"127.0.0.1:{port}",
            "--app",
            str(app),
            "--marker",
            MARKER,
            "--cmd",
            cmd,
            "--edits",
            "1000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_until(lambda: MARKER not in app.read_text(), timeout=60, message="an edit in progress")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert app.read_text() == APP
    assert not _answers(port)  # the server it started is gone
