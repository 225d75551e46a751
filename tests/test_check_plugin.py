"""The ``lab_check`` pytest fixture: a learner's three-line test file, passing and failing."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from test_check_servers import APP, MARKER, SERVER, free_port

ROOT = Path(__file__).resolve().parent.parent

LEARNER_TEST = """\
def test_my_server(lab_check):
    report = lab_check(cmd={cmd!r}, connect={connect!r}, app={app!r}, marker={marker!r}, edits=2, scenarios="reload,stop")
    assert report.ok, str(report)
"""  # noqa: E501 (the learner's file as they would write it, one call a line)


def test_the_plugin_is_an_entry_point_so_pip_install_enables_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"lab_check": "lab.check.pytest_plugin"}


def run_learner_test(tmp_path: Path, defect: str) -> subprocess.CompletedProcess:
    app = tmp_path / "app.py"
    app.write_text(APP)
    port = free_port()
    cmd = f"{sys.executable} {SERVER} --port {port} --app {app} --defect {defect}"
    test = tmp_path / "test_mine.py"
    test.write_text(LEARNER_TEST.format(cmd=cmd, connect=f"127.0.0.1:{port}", app=str(app), marker=MARKER))
    # Autoload off and the plugin by name: the same whether or not this checkout is pip-installed.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "lab.check.pytest_plugin", "-q", "-p", "no:cacheprovider", str(test)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )


def test_a_good_server_passes(tmp_path):
    done = run_learner_test(tmp_path, "none")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_a_failure_reads_as_the_report(tmp_path):
    done = run_learner_test(tmp_path, "side-by-side")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "reload.stale_answers" in done.stdout and "FAIL" in done.stdout
    assert "old and new workers serve side by side" in done.stdout
    assert "check: reload: edit 2/2" in done.stdout  # the progress, in the captured output
