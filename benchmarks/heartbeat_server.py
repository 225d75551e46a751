"""The heartbeat's server-level goals, measured on ``python -m lab serve`` with real sockets.

1. Timeliness (``--heartbeat-idle 1 --heartbeat-interval 0.25``): 2,000 silent connections are each
   closed no earlier than 1 s and no later than 1.5 s after their last byte, while 50 connections
   that send a line every 0.3 s stay open.
2. Cost of holding (``--heartbeat-idle 60 --heartbeat-interval 0.1``): with 10,000 silent
   connections open, the whole server (master + workers) uses under 1 % of a core and under
   3 KiB of memory per connection.

Each strategy (default: the default one and ``scan``) is measured in the same run. Clients run in
a separate process, which raises its fd soft limit to the hard one.

    .venv/bin/python benchmarks/heartbeat_server.py                 # ~1-2 minutes
    .venv/bin/python benchmarks/heartbeat_server.py --strategies wheel,lazy,scan,timer

Writes benchmarks/results/heartbeat_server.json and pic/heartbeat_server_lateness.png.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.events import Kind  # noqa: E402
from lab.heartbeat import DEFAULT_STRATEGY  # noqa: E402
from lab.process import ServerProcess, serve_argv  # noqa: E402

APP = "lab.examples.hello"  # answers each line with one line
# Timeliness: silent connections must be closed within [IDLE, IDLE + SLACK] s of their last byte
# while chatty ones (a line every CHAT s) stay; the silent ones open over SPREAD s.
IDLE, INTERVAL, SLACK, CHAT, SPREAD = 1.0, 0.25, 0.5, 0.3, 1.0
# Holding: the cost of many silent connections that are not due for a long time.
HOLD_IDLE, HOLD_INTERVAL = 60.0, 0.1


# --- the server ----------------------------------------------------------------------------------


class Server(ServerProcess):
    """A ``python -m lab serve`` subprocess on a free loopback port, read through its events."""

    def processes(self) -> list[psutil.Process]:
        if self.proc is None:
            raise RuntimeError("the server is not started")
        master = psutil.Process(self.proc.pid)
        return [master] + master.children(recursive=True)

    def count(self, kind: str, **fields: Any) -> int:
        return len(self.find(kind, **fields))


@contextmanager
def serve(strategy: str, idle: float, interval: float, workers: int) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="hb-bench-") as tmp:
        events = Path(tmp) / "events.jsonl"
        argv = serve_argv(
            APP,
            events,
            bind="127.0.0.1:0",
            workers=workers,
            heartbeat_idle=idle,
            heartbeat_interval=interval,
            heartbeat_strategy=strategy,
            quiet=True,
        )
        server = Server(argv, events, cwd=ROOT, output=Path(tmp) / "stderr.txt")  # workers log there
        try:
            yield server.start(timeout=30)
        except BaseException:
            sys.stderr.write(server.output()[-4000:])  # why it failed
            raise
        finally:
            server.stop(30)


# --- the clients (run in their own process: ``heartbeat_server.py client-...``) ---------------------


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _line(sock: socket.socket) -> None:
    """Sends a line and reads the one-line answer (blocking)."""
    sock.sendall(b"hi\n")
    got = b""
    while not got.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed by the server")
        got += chunk


def client_timeliness(
    port: int, silent: int, chatty: int, spread: float, every: float, idle: float, slack: float
) -> dict:
    """Chatty connections talk every ``every`` s; silent ones send one line each (over ``spread`` s)
    and wait for the server to close them. Reports when each silent one sent and saw EOF."""
    _raise_fd_limit()
    talkers = [socket.create_connection(("127.0.0.1", port)) for _ in range(chatty)]
    sel = selectors.DefaultSelector()
    sent: dict[int, float] = {}
    eof: dict[int, float] = {}
    started = time.monotonic()
    next_talk = started
    opened = 0
    chatty_closed = 0
    end = started + spread + idle + slack + 5
    while time.monotonic() < end and (opened < silent or len(eof) < silent):
        now = time.monotonic()
        if now >= next_talk:
            for sock in list(talkers):
                try:
                    _line(sock)
                except OSError:
                    chatty_closed += 1
                    talkers.remove(sock)
            next_talk += every
        while opened < silent and opened < silent * (now - started) / spread:
            sock = socket.create_connection(("127.0.0.1", port))
            sent[sock.getsockname()[1]] = time.monotonic()
            _line(sock)
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
            opened += 1
        for key, _ in sel.select(timeout=0.005):
            sock = cast(socket.socket, key.fileobj)  # only sockets are registered
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                eof[sock.getsockname()[1]] = time.monotonic()
                sel.unregister(sock)
                sock.close()
    for sock in talkers:  # one more round: still served?
        try:
            _line(sock)
        except OSError:
            chatty_closed += 1
        sock.close()
    for key in list(sel.get_map().values()):
        cast(socket.socket, key.fileobj).close()
    return {
        "sent": sent,
        "eof": eof,
        "chatty_closed": chatty_closed,
        "chatty_seconds": round(time.monotonic() - started, 2),
    }


def client_hold(port: int, count: int) -> None:
    """Opens ``count`` silent connections, says ``ready``, holds them until stdin closes."""
    _raise_fd_limit()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    print("ready", flush=True)
    sys.stdin.read()
    for sock in socks:
        sock.close()


# --- the measurements ------------------------------------------------------------------------------


def _summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "min": round(values[0], 4),
        "p50": round(statistics.median(values), 4),
        "p99": round(values[min(len(values) - 1, int(0.99 * len(values)))], 4),
        "max": round(values[-1], 4),
    }


def timeliness(strategy: str, args) -> dict:
    with serve(strategy, IDLE, INTERVAL, args.workers) as server:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "client-timeliness",
                "--port",
                str(server.port),
                "--silent",
                str(args.silent),
                "--chatty",
                str(args.chatty),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        client = json.loads(out.stdout)
        server.read()
    opened = {
        e["conn"] + e["pid"] * 1_000_000: int(e["peer"].rsplit(":", 1)[1])
        for e in server.events
        if e["kind"] == Kind.CONN_OPEN
    }
    silent_ports = {int(p) for p in client["sent"]}
    idle_closes = {
        opened[e["conn"] + e["pid"] * 1_000_000]: e
        for e in server.events
        if e["kind"] == Kind.CONN_CLOSE and e.get("reason") == "idle"
    }
    server_idle = [e["idle"] for p, e in idle_closes.items() if p in silent_ports]
    client_gap = [client["eof"][str(p)] - client["sent"][str(p)] for p in silent_ports if str(p) in client["eof"]]
    closed_by_server = [idle_closes[p]["t"] - client["sent"][str(p)] for p in silent_ports if p in idle_closes]
    in_bounds = sum(1 for v in server_idle if IDLE <= v <= IDLE + SLACK)
    return {
        "strategy": strategy,
        "silent": len(silent_ports),
        "chatty": args.chatty,
        "closed_idle": len(server_idle),
        "within_1_to_1.5_s": in_bounds,
        "chatty_closed": client["chatty_closed"],
        "chatty_seconds": client["chatty_seconds"],
        "server_idle_at_close_s": _summary(server_idle),
        "client_send_to_close_event_s": _summary(closed_by_server),
        "client_send_to_eof_s": _summary(client_gap),
        "_server_idle": server_idle,
    }


def _memory(procs: list[psutil.Process]) -> tuple[int, int]:
    uss = rss = 0
    for p in procs:
        info = p.memory_full_info()
        uss += info.uss
        rss += info.rss
    return uss, rss


def _cpu(procs: list[psutil.Process]) -> float:
    """CPU seconds used so far, from the scheduler's ns counter (cpu_times() counts 10 ms ticks)."""
    total = 0.0
    for p in procs:
        with open(f"/proc/{p.pid}/schedstat") as f:
            total += int(f.read().split()[0]) / 1e9
    return total


def holding(strategy: str, args) -> dict:
    with serve(strategy, HOLD_IDLE, HOLD_INTERVAL, args.workers) as server:
        procs = server.processes()
        time.sleep(1)  # settle after start-up: imports done, first ticks passed
        uss0, rss0 = _memory(procs)
        client = subprocess.Popen(
            [sys.executable, __file__, "client-hold", "--port", str(server.port), "--count", str(args.held)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdin is not None and client.stdout is not None  # both PIPE
        try:
            if client.stdout.readline().strip() != "ready":
                raise RuntimeError("the client could not open its connections")
            server.wait_events(lambda evs: server.count(Kind.CONN_OPEN) >= args.held, 60, "every connection open")
            time.sleep(1)  # the accept burst is over
            uss1, rss1 = _memory(procs)
            cpu0, wall0 = _cpu(procs), time.monotonic()
            time.sleep(args.hold_seconds)  # the measurement window itself
            cpu1, wall1 = _cpu(procs), time.monotonic()
            closed = server.count(Kind.CONN_CLOSE)
        finally:
            client.stdin.close()
            client.wait(60)
    return {
        "strategy": strategy,
        "connections": args.held,
        "seconds": round(wall1 - wall0, 2),
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 4),
        "uss_per_connection_bytes": round((uss1 - uss0) / args.held),
        "rss_per_connection_bytes": round((rss1 - rss0) / args.held),
        "closed_during_hold": closed,
    }


def plot(rows: list[dict], pic: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6))
    for row in rows:
        ax.hist(
            row["_server_idle"],
            bins=60,
            range=(IDLE - 0.05, IDLE + SLACK + 0.1),
            histtype="step",
            linewidth=1.6,
            label=f"{row['strategy']} ({row['closed_idle']:,} closed)",
        )
    for x, text in ((IDLE, f"idle ({IDLE:g} s)"), (IDLE + SLACK, f"bound ({IDLE + SLACK:g} s)")):
        ax.axvline(x, color="grey", linestyle="--")
        ax.text(x, ax.get_ylim()[1] * 0.95, " " + text, fontsize=9, va="top")
    ax.set_xlabel("silence at close, measured by the worker [s]")
    ax.set_ylabel("connections")
    silent = max(row["silent"] for row in rows)
    ax.set_title(f"python -m lab serve: {silent:,} silent connections, idle {IDLE:g} s, interval {INTERVAL:g} s")
    ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(pic / "heartbeat_server_lateness.png", dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    c = sub.add_parser("client-timeliness")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--silent", type=int, default=2000)
    c.add_argument("--chatty", type=int, default=50)
    h = sub.add_parser("client-hold")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--count", type=int, required=True)
    parser.add_argument("--strategies", default=f"{DEFAULT_STRATEGY},scan")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--silent", type=int, default=2000)
    parser.add_argument("--chatty", type=int, default=50)
    parser.add_argument("--held", type=int, default=10_000)
    parser.add_argument("--hold-seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.mode == "client-timeliness":
        print(
            json.dumps(
                client_timeliness(
                    args.port, args.silent, args.chatty, spread=SPREAD, every=CHAT, idle=IDLE, slack=SLACK
                )
            )
        )
        return 0
    if args.mode == "client-hold":
        client_hold(args.port, args.count)
        return 0

    strategies = [s for s in args.strategies.split(",") if s]
    timely, held = [], []
    for s in strategies:
        timely.append(timeliness(s, args))
        print(f"  timeliness {s}: {timely[-1]['within_1_to_1.5_s']}/{timely[-1]['silent']} in bounds", file=sys.stderr)
    for s in strategies:
        held.append(holding(s, args))
        print(f"  holding {s}: {held[-1]['cpu_percent_of_one_core']} % cpu", file=sys.stderr)

    print(
        f"\n{args.silent:,} silent + {args.chatty} chatty connections, idle {IDLE:g} s, interval {INTERVAL:g} s, "
        f"{args.workers} workers (goal: every silent one closed {IDLE:g}-{IDLE + SLACK:g} s after its last byte, "
        "no chatty one closed)\n"
    )
    print(
        "| strategy | closed idle | within 1-1.5 s | silence at close p50 / p99 / max (s) "
        "| client send→EOF max (s) | chatty closed |"
    )
    print("|---|---:|---:|---|---:|---:|")
    for r in timely:
        si = r["server_idle_at_close_s"]
        print(
            f"| {r['strategy']} | {r['closed_idle']:,} / {r['silent']:,} | {r['within_1_to_1.5_s']:,} | "
            f"{si['p50']} / {si['p99']} / {si['max']} | {r['client_send_to_eof_s']['max']} | "
            f"{r['chatty_closed']} of {r['chatty']} |"
        )
    print(
        f"\n{args.held:,} silent connections held, idle {HOLD_IDLE:g} s, interval {HOLD_INTERVAL:g} s, "
        f"{args.workers} workers, "
        f"{args.hold_seconds:g} s (goal: < 1 % of a core, < 3 KiB per connection)\n"
    )
    print("| strategy | CPU (% of one core) | USS per connection (B) | RSS per connection (B) |")
    print("|---|---:|---:|---:|")
    for r in held:
        print(
            f"| {r['strategy']} | {r['cpu_percent_of_one_core']} | {r['uss_per_connection_bytes']} | "
            f"{r['rss_per_connection_bytes']} |"
        )

    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (ROOT / "pic").mkdir(exist_ok=True)
    plot(timely, ROOT / "pic")
    (out / "heartbeat_server.json").write_text(
        json.dumps(
            {
                "settings": {
                    "workers": args.workers,
                    "silent": args.silent,
                    "chatty": args.chatty,
                    "held": args.held,
                    "hold_seconds": args.hold_seconds,
                    "cpus": os.cpu_count(),
                },
                "timeliness": [{k: v for k, v in r.items() if not k.startswith("_")} for r in timely],
                "holding": held,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {out / 'heartbeat_server.json'}, {ROOT / 'pic' / 'heartbeat_server_lateness.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
