"""The watcher against its peers, in one run, on the same trees: lab.Watcher, watchfiles,
watchdog (and ``inotifywait -r`` from inotify-tools for the burst and overflow rows).

Each watcher runs in its own "agent" subprocess that prints one line per change it reports, so
every peer is measured the same way from the outside:

* set-up: seconds to watch a tree of 2,000 and 10,000 directories (one .py file each), timed by
  the agent around the constructor (median of 5 fresh agents), with its CPU time (user + system,
  all threads: unlike wall time, it does not grow with the load of a shared machine) and RSS
  growth (MiB);
* latency: write -> change line, for in-place and atomic (temp + rename) saves, median and p95
  (lab uses debounce=0.02; watchfiles step_ms=20, its nearest equivalent; watchdog and
  inotifywait do not debounce);
* idle CPU: CPU seconds the agent uses while nothing happens for a few seconds;
* burst: a separate process runs ``mkdir -p`` of nested new directories and writes files into
  all of them at once, 30 trials: files reported / files written (the race of new directories);
* overflow: the agent is stopped (SIGSTOP) while more than max_queued_events records happen and
  one watched file is modified, then continued: is the lost modification reported?

    .venv/bin/python benchmarks/watcher.py          # a few minutes
    .venv/bin/python benchmarks/watcher.py --quick  # fewer samples, 2,000 dirs only
    .venv/bin/python benchmarks/watcher.py --setup-only  # the set-up rows only (merged)

Prints a Markdown table; writes benchmarks/results/watcher.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.debounce import DEFAULT_DEBOUNCE as DEBOUNCE  # noqa: E402
from lab.debounce import DEFAULT_SETTLE  # noqa: E402

TOOLS = ("lab", "watchfiles", "watchdog", "inotifywait")


# --- agents (run in subprocesses) -----------------------------------------------------------------


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_s() -> float:
    """CPU seconds of this process, all threads, user + system: unlike wall time, what a tool
    costs does not grow with the load of a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def agent(tool: str, path: str) -> None:
    """Watch ``path`` with ``tool``; print ``ready <setup s> <rss growth MiB>``, then changes."""
    if tool == "lab":
        from lab.watcher import Watcher

        rss, cpu = _rss_mib(), _cpu_s()
        t0 = time.perf_counter()
        w = Watcher(path, types=None, debounce=DEBOUNCE)
        ready = f"ready {time.perf_counter() - t0:.6f} {_rss_mib() - rss:.2f} {_cpu_s() - cpu:.6f}"
        t0 = time.perf_counter()
        files = w.watched_files  # lists the quiet leaves set-up left: the snapshot is whole
        _say(f"{ready} {time.perf_counter() - t0:.6f} {files}")
        for batch in w:
            for c in batch:
                _say(f"{c.kind} {c.path}")
    elif tool == "watchfiles":
        from watchfiles._rust_notify import RustNotify

        rss, cpu = _rss_mib(), _cpu_s()
        t0 = time.perf_counter()
        notify = RustNotify([path], False, False, 50, True, False)
        _say(f"ready {time.perf_counter() - t0:.6f} {_rss_mib() - rss:.2f} {_cpu_s() - cpu:.6f}")
        while True:
            changes = notify.watch(500, int(DEBOUNCE * 1000), 0, None)
            if isinstance(changes, str):
                _say(f"rescan {changes}")
                continue
            for kind, p in changes:
                _say(f"{kind} {p}")
    elif tool == "watchdog":
        import threading

        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        lock = threading.Lock()

        class Printer(FileSystemEventHandler):
            def on_any_event(self, event):
                with lock:
                    _say(f"{event.event_type} {event.dest_path or event.src_path}")

        rss, cpu = _rss_mib(), _cpu_s()
        t0 = time.perf_counter()
        observer = Observer()
        observer.schedule(Printer(), path, recursive=True)
        observer.start()  # adds the watches before it returns
        _say(f"ready {time.perf_counter() - t0:.6f} {_rss_mib() - rss:.2f} {_cpu_s() - cpu:.6f}")
        signal.sigwait({signal.SIGTERM})
    else:
        raise SystemExit(f"unknown tool {tool}")


class Agent:
    """A watcher subprocess and its output lines, read with deadlines."""

    def __init__(self, tool: str, path: str):
        self.tool = tool
        if tool == "inotifywait":
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                ["inotifywait", "-m", "-r", "-e", "create,close_write,moved_to,delete", "--format", "%e %w%f", path],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert self.proc.stderr is not None  # stderr=PIPE
            err = b""
            while b"Watches established" not in err:
                chunk = os.read(self.proc.stderr.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(f"inotifywait failed: {err.decode()}")
                err += chunk
            self.setup, self.rss, self.cpu = time.perf_counter() - t0, float("nan"), float("nan")
            self.first_poll = float("nan")
        else:
            # The peers log warnings (watchdog: one per re-added watch); lab's errors stay visible.
            quiet = subprocess.DEVNULL if tool != "lab" else None
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--agent", tool, path], stdout=subprocess.PIPE, stderr=quiet
            )
        assert self.proc.stdout is not None  # stdout=PIPE
        self._stdout: IO[bytes] = self.proc.stdout
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._stdout, selectors.EVENT_READ)
        if tool != "inotifywait":
            ready = self.line(120)
            if ready is None or not ready.startswith("ready "):
                raise RuntimeError(f"{tool} agent did not start: {ready!r}")
            _, setup, rss, cpu, *first_poll = ready.split()
            self.setup, self.rss, self.cpu = float(setup), float(rss), float(cpu)
            self.first_poll = float(first_poll[0]) if first_poll else float("nan")

    def line(self, timeout: float) -> str | None:
        deadline = time.perf_counter() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.perf_counter()
            if left <= 0 or not self._sel.select(left):
                return None
            chunk = os.read(self._stdout.fileno(), 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def drain(self, quiet: float) -> list[str]:
        """Lines until none came for ``quiet`` seconds."""
        lines = []
        while (line := self.line(quiet)) is not None:
            lines.append(line)
        return lines

    def cpu_seconds(self) -> float:
        """CPU time of all the agent's threads, in ns precision (schedstat, not clock ticks)."""
        total = 0
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError):
                continue
        return total / 1e9

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._sel.close()
        self._stdout.close()
        if self.proc.stderr:
            self.proc.stderr.close()


# --- measurements ---------------------------------------------------------------------------------


def make_tree(top: Path, dirs: int, files: int = 1) -> Path:
    """``dirs`` directories (100 under each of dirs/100), ``files`` .py files in each."""
    top.mkdir(parents=True)
    per = 100
    for i in range(dirs // per):
        for j in range(per):
            d = top / f"d{i}" / f"e{j}"
            d.mkdir(parents=True)
            for k in range(files):
                (d / ("m.py" if k == 0 else f"m{k}.py")).write_text("x = 1\n")
    return top


def setup_costs(tools: list[str], trees: dict[int, Path], reps: int) -> dict:
    """Round-robin over the tools, ``reps`` times, so that the load of a shared machine falls on
    every tool alike; medians."""
    runs: dict = {(t, n): [] for t in tools for n in trees}
    for _ in range(reps):
        for n, tree in trees.items():
            for tool in tools:
                a = Agent(tool, str(tree))
                runs[tool, n].append((a.setup, a.rss, a.cpu, a.first_poll))
                a.close()
    return {
        (t, n): {
            "setup_s": statistics.median(r[0] for r in rs),
            "rss_mib": statistics.median(r[1] for r in rs),
            "cpu_s": statistics.median(r[2] for r in rs),
            "runs_s": [round(r[0], 4) for r in rs],
            # lab only: the first poll's listing of the quiet leaves set-up left
            **({"first_poll_s": statistics.median(r[3] for r in rs)} if rs[0][3] == rs[0][3] else {}),
        }
        for (t, n), rs in runs.items()
    }


def latency(a: Agent, target: Path, atomic: bool, samples: int) -> dict:
    out = []
    for i in range(samples):
        a.drain(0.05)
        data = f"x = {i}\n" * (1 + i % 3)
        t0 = time.perf_counter()
        if atomic:
            tmp = target.with_name(f".{target.name}.{i}.new")
            tmp.write_text(data)
            os.replace(tmp, target)
        else:
            with open(target, "w") as f:
                f.write(data)
        while True:
            line = a.line(5)
            if line is None:
                break
            if line.endswith(str(target)):
                out.append(time.perf_counter() - t0)
                break
    a.drain(0.05)
    out.sort()
    return {
        "median_ms": 1000 * statistics.median(out) if out else None,
        "p95_ms": 1000 * out[int(0.95 * (len(out) - 1))] if out else None,
        "seen": len(out),
        "samples": samples,
    }


def idle_cpu(a: Agent, seconds: float) -> float:
    a.drain(0.1)
    before = a.cpu_seconds()
    time.sleep(seconds)  # the measurement itself: nothing happens for this long
    return a.cpu_seconds() - before


BURST_WRITER = textwrap.dedent("""
    import os, sys
    root, levels, per_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.makedirs(os.path.join(root, *[f"d{i}" for i in range(levels)]))
    d = root
    for i in range(levels + 1):
        for k in range(per_dir):
            with open(os.path.join(d, f"f{k}.py"), "w") as f:
                f.write("x")
        if i < levels:
            d = os.path.join(d, f"d{i}")
""")


def burst(a: Agent, base: Path, trials: int, levels: int = 5, per_dir: int = 5) -> dict:
    written = reported = 0
    worst = 1.0
    for t in range(trials):
        root = base / f"burst{t}"
        subprocess.run([sys.executable, "-c", BURST_WRITER, str(root), str(levels), str(per_dir)], check=True)
        expected = set()
        d = root
        for i in range(levels + 1):
            expected |= {str(d / f"f{k}.py") for k in range(per_dir)}
            d = d / f"d{i}"
        seen: set[str] = set()
        deadline = time.perf_counter() + 5
        while not expected <= seen and time.perf_counter() < deadline:
            line = a.line(max(0.0, deadline - time.perf_counter()))
            if line is None:
                break
            seen.add(line.split(" ", 1)[1] if " " in line else line)
        found = len(expected & seen)
        written += len(expected)
        reported += found
        worst = min(worst, found / len(expected))
    return {"written": written, "reported": reported, "worst_trial": worst}


def overflow(a: Agent, tree: Path) -> dict:
    """Stop the agent, flood its queue past max_queued_events, modify a file, continue."""
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        limit = int(f.read())
    keep = tree / "keep.py"
    a.drain(0.2)
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        rounds = (limit + 4000) // 3 + 1
        for i in range(rounds):
            junk = tree / f"junk{i % 2}.txt"
            junk.write_bytes(b"")
            junk.unlink()
            if i == rounds // 2:
                keep.write_text("modified during the flood\n")
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    lines = []
    deadline = time.perf_counter() + 20
    while time.perf_counter() < deadline:
        line = a.line(2)
        if line is None:
            break
        lines.append(line)
    return {
        "rescan_said": any(line.split(" ", 1)[0] in ("rescan",) or "Q_OVERFLOW" in line for line in lines),
        "lost_change_found": any(line.endswith(str(keep)) and "junk" not in line for line in lines),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", nargs=2, metavar=("TOOL", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument(
        "--setup-only", action="store_true", help="measure set-up only; the other figures of watcher.json are kept"
    )
    parser.add_argument(
        "--files-per-dir",
        type=int,
        default=1,
        metavar="N",
        help="with --setup-only: N files in each directory (recorded as setup_<dirs>x<N> when N > 1)",
    )
    args = parser.parse_args()
    if args.agent:
        agent(*args.agent)
        return
    if args.setup_only:
        setup_only(
            [t for t in args.tools.split(",") if t and t != "inotifywait"],
            (2000,) if args.quick else (2000, 10000),
            1 if args.quick else 5,
            args.files_per_dir,
        )
        return
    tools = [t for t in args.tools.split(",") if t]
    if "inotifywait" in tools and shutil.which("inotifywait") is None:
        tools.remove("inotifywait")
    sizes = (2000,) if args.quick else (2000, 10000)
    samples, trials, reps = (10, 10, 1) if args.quick else (30, 30, 5)
    results: dict = {
        "machine": {"python": platform.python_version(), "kernel": platform.release(), "cpus": os.cpu_count()},
        "settings": {"debounce": DEBOUNCE, "settle": DEFAULT_SETTLE},
        "tools": {},
    }
    work = Path(tempfile.mkdtemp(prefix="watcher-bench-"))
    try:
        trees = {n: make_tree(work / f"tree{n}", n) for n in sizes}
        print("set-up ...", file=sys.stderr, flush=True)
        setups = setup_costs([t for t in tools if t != "inotifywait"], trees, reps)
        for tool in tools:
            r = results["tools"][tool] = {}
            print(f"{tool} ...", file=sys.stderr, flush=True)
            for n in sizes:
                if (tool, n) in setups:
                    r[f"setup_{n}"] = setups[tool, n]
            tree = trees[sizes[0]]
            target = tree / "d0" / "e0" / "m.py"
            a = Agent(tool, str(tree))
            try:
                r["latency_in_place"] = latency(a, target, False, samples)
                r["latency_atomic"] = latency(a, target, True, samples)
                r["idle_cpu_s"] = idle_cpu(a, 3.0)
                burst_dir = tree / f"bursts-{tool}"
                burst_dir.mkdir()
                r["burst"] = burst(a, burst_dir, trials)
            finally:
                a.close()
            flood = work / f"flood-{tool}"
            flood.mkdir()
            (flood / "keep.py").write_text("x = 1\n")
            a = Agent(tool, str(flood))
            try:
                r["overflow"] = overflow(a, flood)
            finally:
                a.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "benchmarks" / "results" / "watcher.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, sizes))
    print(f"\nwrote {out.relative_to(ROOT)}")


def setup_only(tools: list[str], sizes: tuple[int, ...], reps: int, files: int = 1) -> None:
    """The set-up rows alone, merged into watcher.json (the other rows keep their last run)."""
    suffix = f"x{files}" if files > 1 else ""
    out = ROOT / "benchmarks" / "results" / "watcher.json"
    results = json.loads(out.read_text()) if out.exists() else {"tools": {}}
    work = Path(tempfile.mkdtemp(prefix="watcher-bench-"))
    try:
        trees = {n: make_tree(work / f"tree{n}", n, files) for n in sizes}
        for (tool, n), r in setup_costs(tools, trees, reps).items():
            results["tools"].setdefault(tool, {})[f"setup_{n}{suffix}"] = r
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for n in sizes:
        for key, what in (("setup_s", "wall"), ("cpu_s", "CPU")):
            row = {t: results["tools"][t][f"setup_{n}{suffix}"][key] * 1000 for t in tools}
            ratio = (
                f"; lab / watchfiles {row['lab'] / row['watchfiles']:.2f}"
                if "lab" in row and "watchfiles" in row
                else ""
            )
            print(
                f"set-up {what}, {n:,} dirs, {files} file(s) each (ms, median of {reps}): "
                + ", ".join(f"{t} {ms:.0f}" for t, ms in row.items())
                + ratio
            )
        lab = results["tools"].get("lab", {}).get(f"setup_{n}{suffix}", {})
        if "first_poll_s" in lab:
            print(f"lab's first poll, {n:,} dirs (ms, median of {reps}): {lab['first_poll_s'] * 1000:.0f}")
    print(f"wrote {out.relative_to(ROOT)}")


def table(results: dict, sizes: tuple[int, ...]) -> str:
    tools = list(results["tools"])

    def cell(tool: str, *keys: str, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
        v = results["tools"][tool]
        for k in keys:
            if not isinstance(v, dict) or k not in v:
                return "–"
            v = v[k]
        if v is None or v != v:  # missing, or NaN (inotifywait's memory)
            return "–"
        return fmt.format(v * scale)

    def flag(v: bool) -> str:
        return "yes" if v else "no"

    rows = []
    for n in sizes:
        rows.append(
            (
                f"set-up, {n:,} dirs (ms, median of runs)",
                [cell(t, f"setup_{n}", "setup_s", scale=1000, fmt="{:.0f}") for t in tools],
            )
        )
        rows.append(
            (
                f"CPU of set-up, {n:,} dirs (ms, median of runs)",
                [cell(t, f"setup_{n}", "cpu_s", scale=1000, fmt="{:.0f}") for t in tools],
            )
        )
        rows.append(
            (
                f"first poll, {n:,} dirs (ms: lists the quiet leaves set-up left)",
                [cell(t, f"setup_{n}", "first_poll_s", scale=1000, fmt="{:.0f}") for t in tools],
            )
        )
        rows.append((f"RSS growth of set-up, {n:,} dirs (MiB)", [cell(t, f"setup_{n}", "rss_mib") for t in tools]))
    for kind in ("in_place", "atomic"):
        rows.append(
            (
                f"latency, {kind.replace('_', '-')} save: median / p95 (ms)",
                [f"{cell(t, f'latency_{kind}', 'median_ms')} / {cell(t, f'latency_{kind}', 'p95_ms')}" for t in tools],
            )
        )
    rows.append(
        ("idle CPU over 3 s (ms, all threads)", [cell(t, "idle_cpu_s", scale=1000, fmt="{:.2f}") for t in tools])
    )
    rows.append(
        (
            "burst of nested new dirs: files reported / written (worst trial)",
            [
                f"{results['tools'][t]['burst']['reported']} / "
                f"{results['tools'][t]['burst']['written']} "
                f"({results['tools'][t]['burst']['worst_trial']:.0%})"
                for t in tools
            ],
        )
    )
    rows.append(
        (
            "overflow: said so / lost change found",
            [
                f"{flag(results['tools'][t]['overflow']['rescan_said'])} / "
                f"{flag(results['tools'][t]['overflow']['lost_change_found'])}"
                for t in tools
            ],
        )
    )
    lines = ["| | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
