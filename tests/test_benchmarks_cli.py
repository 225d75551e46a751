"""The benchmarks run outside CI; here each one must at least start and explain its options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("*.py"))


def test_there_are_benchmarks():
    assert {p.stem for p in BENCHMARKS} >= {
        "watcher",
        "reload",
        "throughput",
        "heartbeat",
        "heartbeat_server",
        "soak",
        "connections",
    }


@pytest.mark.parametrize("script", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_benchmark_starts(script: Path):
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_connections_quick_holds_and_expires_every_connection(tmp_path):
    """--quick: 2,000 real connections held, then all closed by the heartbeat (the timing goals are
    the full run's; here only that it runs to the end, on its own, and accounts for every connection)."""
    script = next(p for p in BENCHMARKS if p.stem == "connections")
    out = tmp_path / "connections.json"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--json", str(out)], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(out.read_text())["runs"]
    assert run["holding"]["connections"] == 2000 and run["holding"]["closed_during_hold"] == 0
    expiry = run["expiry"]
    assert (expiry["opened"], expiry["closed"], expiry["still_open"]) == (2000, 2000, 0)
    assert sum(expiry["histogram"]["counts"]) == 2000
