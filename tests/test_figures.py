"""``python -m lab figures`` draws every picture from real runs and the benchmark results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lab_copy import copy_lab
from PIL import Image

from lab.errors import LabError
from lab.events import Kind
from lab.figures import (
    HEARTBEAT_FLOORS,
    Plan,
    bench_connections,
    bench_heartbeat,
    heartbeat_lifetimes,
    reload_timeline,
    render,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REAL_RUNS = ("architecture", "reload_timeline", "heartbeat_lifetimes")
BENCH_NAMES = ("watcher", "reload", "throughput", "heartbeat", "connections")


def _check_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width >= 600 and height >= 300, (path, image.size)  # readable at README size
        # Not a blank canvas: a drawn figure has many colours.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 20, path


def test_quick_figures_from_real_runs_and_results(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    present = [name for name in BENCH_NAMES if (RESULTS / f"{name}.json").exists()]
    for name in present:
        shutil.copy(RESULTS / f"{name}.json", results)
    out = tmp_path / "pic"
    run = subprocess.run(
        [sys.executable, "-m", "lab", "figures", "--quick", "--out", str(out), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    expected = [*REAL_RUNS, *(f"bench_{name}" for name in present)]
    assert sorted(p.stem for p in out.iterdir()) == sorted(expected)
    for stem in expected:
        _check_png(out / f"{stem}.png")
        assert f"wrote {out / stem}.png" in run.stdout
    for name in set(BENCH_NAMES) - set(present):
        assert f"skipped bench_{name}.png" in run.stdout


def test_quick_figures_leave_pic_alone_and_any_greeting_will_do(tmp_path):
    """--quick writes to test-artifacts/figures, never over the committed pic/; a reader's edit of
    Greeting.text in lab/examples/hello.py (in a copy of the package here) changes nothing."""
    copy_lab(tmp_path / "lib", greeting="bonjour")
    (tmp_path / "results").mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "lab", "figures", "--quick", "--results", "results"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "lib")},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = tmp_path / "test-artifacts" / "figures"
    assert sorted(p.stem for p in out.iterdir()) == sorted(REAL_RUNS)
    assert not (tmp_path / "pic").exists()
    _check_png(out / "reload_timeline.png")


def test_a_malformed_result_file_is_one_clear_error_before_any_real_run(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "throughput.json").write_text(json.dumps({"median_rps": {"lab": 1}}))
    logged: list[str] = []
    with pytest.raises(LabError, match=r"throughput\.json is not what benchmarks/throughput\.py writes"):
        render(tmp_path / "pic", quick=True, results=results, log=logged.append)
    assert not (tmp_path / "pic" / "reload_timeline.png").exists()


def test_an_out_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "pic").write_text("not a directory")
    run = subprocess.run(
        [sys.executable, "-m", "lab", "figures", "--quick", "--out", str(tmp_path / "pic")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2 and "give --out a writable directory" in run.stderr, run.stderr


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_heartbeat_lifetimes_tells_closed_from_still_open():
    events = [
        {"t": 10.0, "kind": Kind.CONN_OPEN, "pid": 1, "conn": 1, "peer": "127.0.0.1:5001"},
        {"t": 10.0, "kind": Kind.CONN_OPEN, "pid": 2, "conn": 1, "peer": "127.0.0.1:5002"},
        {"t": 11.1, "kind": Kind.CONN_CLOSE, "pid": 1, "conn": 1, "reason": "idle", "idle": 1.1},
        {"t": 12.0, "kind": Kind.FIGURE_END, "pid": 9},
        # Closed by the final stop, after the figure's end: drawn as open until the end.
        {"t": 12.5, "kind": Kind.CONN_CLOSE, "pid": 2, "conn": 1, "reason": "drain"},
    ]
    texts = _texts(heartbeat_lifetimes(events, {"127.0.0.1:5001"}, Plan()))
    assert "closed by the heartbeat after 1.10 s idle" in texts
    assert "still open" in texts


def test_reload_timeline_marks_the_refused_generation():
    phases = {"seen": 1.02, "forked": 1.03, "ready": 1.05, "serving": 1.051, "old_gone": 1.06}
    events = [
        {"t": 0.0, "kind": Kind.WORKER_START, "pid": 11, "generation": 1, "index": 0},
        {"t": 0.1, "kind": Kind.WORKER_READY, "pid": 11, "generation": 1, "index": 0},
        {"t": 1.0, "kind": Kind.LAB_EDIT, "pid": 9},
        {"t": 1.025, "kind": Kind.WORKER_START, "pid": 12, "generation": 2, "index": 0},
        {"t": 1.05, "kind": Kind.WORKER_READY, "pid": 12, "generation": 2, "index": 0},
        {"t": 1.055, "kind": Kind.WORKER_EXIT, "pid": 11, "generation": 1, "index": 0, "code": 0},
        {"t": 1.06, "kind": Kind.RELOAD_DONE, "pid": 10, "generation": 2, "phases": phases},
        {"t": 2.0, "kind": Kind.LAB_EDIT, "pid": 9},
        {"t": 2.03, "kind": Kind.WORKER_START, "pid": 13, "generation": 3, "index": 0},
        {"t": 2.05, "kind": Kind.WORKER_EXIT, "pid": 13, "generation": 3, "index": 0, "signal": "SIGKILL"},
        {"t": 2.05, "kind": Kind.RELOAD_FAILED, "pid": 10, "generation": 3, "error": "SyntaxError: boom (app.py:3)"},
    ]
    texts = _texts(reload_timeline(events))
    assert "60 ms" in texts  # save at 1.0 -> old generation gone at 1.06
    assert "gen 3 refused: SyntaxError: boom (app.py:3)" in texts
    assert "edit 2: syntax error" in texts and "edit 1" in texts
    assert "gen 3 #0 (syntax error)" in texts


def test_bench_connections_shows_the_bounds_and_the_cost_of_holding():
    def run(strategy: str, cpu: float) -> dict:
        return {
            "strategy": strategy,
            "holding": {
                "connections": 100,
                "cpu_percent_of_one_core": cpu,
                "server_processes": 8,
                "uss_per_connection_bytes": 1200,
            },
            "expiry": {
                "connections": 100,
                "closed": 100,
                "within_bounds": 99,
                "histogram": {"edges": [4.9, 5.0, 5.1, 5.2], "counts": [0, 90, 10]},
            },
        }

    data = {
        "settings": {"workers": 7, "default_strategy": "wheel", "interval": 0.1, "hold_idle": 60.0, "expiry_idle": 5.0},
        "runs": [run("wheel", 0.25), run("queue", 0.0)],
    }
    fig = bench_connections(data)
    texts = _texts(fig)
    assert " 4.95 s" in texts and " 5.35 s" in texts
    box = next(t for t in texts if "held" in t)
    assert "wheel: 0.25 % of one core, 1,200 B per connection" in box and "queue: 0.00 %" in box
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["wheel (default): 99 of 100 in bounds", "queue: 99 of 100 in bounds"]


def test_bench_heartbeat_draws_costs_below_the_floor_at_it_hollow_and_says_so():
    """A cost less the loop's own can come out at or below 0; on a log axis it would vanish."""
    rows = [
        {"strategy": s, "connections": n, "cpu_percent": cpu, "touch_ns": touch}
        for s, n, cpu, touch in (
            ("scan", 1000, 0.06, -4.9),
            ("scan", 10000, 0.6, 0.0),
            ("scan", 100000, 30.0, 392.1),
            ("wheel", 1000, 0.005, 3.9),
            ("wheel", 10000, 0.07, 16.0),
        )
    ]
    fig = bench_heartbeat({"steady_state": rows, "default_strategy": "wheel"})
    cpu, cost = fig.axes
    floor = HEARTBEAT_FLOORS["touch_ns"]
    drawn = [(x, y) for line in cost.get_lines() for x, y in line.get_xydata()]
    assert min(y for _, y in drawn) == floor
    hollow = [line for line in cost.get_lines() if line.get_markerfacecolor() == "white" and len(line.get_xdata())]
    assert [list(line.get_xdata()) for line in hollow] == [[1000, 10000]]  # scan's two, and nothing else
    assert [t.get_text() for t in cost.get_legend().get_texts()] == [
        "hollow: measured below 1 (timing noise), drawn at 1"
    ]
    assert all(not t.get_text().startswith("hollow") for t in cpu.get_legend().get_texts())  # none below there


def test_bench_heartbeat_of_the_committed_results_keeps_every_point_on_the_axis():
    fig = bench_heartbeat(json.loads((RESULTS / "heartbeat.json").read_text()))
    for ax in fig.axes:
        assert all(y > 0 for line in ax.get_lines() for y in line.get_ydata())
