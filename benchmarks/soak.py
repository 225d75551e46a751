"""Soak: many reloads, random worker kills and mixed (partly hostile) clients against one master.

While ``--reloads`` SIGUSR1 reloads run one after another (each waits for its ``reload.done``),
and a random serving worker is SIGKILLed every ``--kill-every`` reloads:
- ``--clients`` threads make fresh connections, send a line, and expect the greeting back;
- one hostile thread cycles through random bytes, RST closes, half-closes and never-reading
  clients (the heartbeat closes those).
Checks, master measured after a warm-up of ``--warmup`` reloads and at the end: RSS growth
< 2 MiB, open fds and threads back to where they were, and no failed request except one in
flight while a worker was killed (its time span contains a kill).

    .venv/bin/python benchmarks/soak.py --reloads 300     # a few minutes

Writes benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lab.clients import Load  # noqa: E402
from lab.events import Kind  # noqa: E402
from lab.process import ServerProcess, serve_argv  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "soak.json"
GREETING = "hello world client"
MAX_RSS_GROWTH = 2 << 20


def start_server(tmp: Path, workers: int) -> ServerProcess:
    """``python -m lab serve lab.examples.hello``, serving, with an event stream we follow."""
    events = tmp / "events.jsonl"
    argv = serve_argv(
        "lab.examples.hello",
        events,
        bind="127.0.0.1:0",
        workers=workers,
        graceful_timeout=5,
        heartbeat_idle=2,
        quiet=True,
    )
    return ServerProcess(argv, events, cwd=ROOT, output=tmp / "server.log").start(timeout=30)


def measure(pid: int) -> dict:
    p = psutil.Process(pid)
    return {"rss": p.memory_info().rss, "fds": p.num_fds(), "threads": p.num_threads()}


def hostile_client(port: int, stop: threading.Event, counts: dict) -> None:
    rng = random.Random(1)
    never_read: list[socket.socket] = []
    while not stop.is_set():
        kind = rng.choice(("random", "reset", "half", "never_read"))
        counts[kind] = counts.get(kind, 0) + 1
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if kind == "random":
                s.sendall(rng.randbytes(rng.randrange(1, 70_000)))
                s.close()
            elif kind == "reset":
                s.sendall(b"hi\n")
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            elif kind == "half":
                s.sendall(b"hi\nhi\n")
                s.shutdown(socket.SHUT_WR)
                s.recv(100)
                s.close()
            else:
                s.setblocking(False)
                try:
                    s.send(b"hi\n" * 50_000)
                except BlockingIOError:
                    pass
                never_read.append(s)  # closed by the server's heartbeat; ours at the end
                if len(never_read) > 20:
                    never_read.pop(0).close()
        except OSError:
            pass
        stop.wait(0.02)
    for s in never_read:
        s.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=300)
    parser.add_argument("--kill-every", type=int, default=10, help="SIGKILL a serving worker every N reloads")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), args.workers)
        master, address = server.pid, server.address
        assert master is not None and address is not None  # start_server waits until it serves
        stop = threading.Event()
        # Fresh connections, one line each, expecting the greeting: until stopped.
        load = Load(address, args.clients, duration=float("inf"), pause=0, expect=GREETING, timeout=10)
        hostile_counts: dict[str, int] = {}
        hostile = threading.Thread(target=hostile_client, args=(server.port, stop, hostile_counts))
        load.start()
        hostile.start()
        kills: list[float] = []
        began = time.monotonic()
        try:
            for i in range(1, args.reloads + 1):
                if i == args.warmup + 1:
                    before = measure(master)
                if i % args.kill_every == 0:
                    victim = rng.choice(server.serving_pids())
                    kills.append(time.monotonic())
                    mark = len(server.read())
                    os.kill(victim, signal.SIGKILL)
                    server.wait_for(Kind.WORKER_EXIT, 30, after=mark, pid=victim)
                mark = len(server.read())
                server.send_signal(signal.SIGUSR1)
                server.wait_for(Kind.RELOAD_DONE, 60, after=mark, generation=i + 1)
            # Let the never-read clients be closed by the heartbeat, then measure.
            time.sleep(3)
            after = measure(master)
        finally:
            stop.set()
            load.stop(timeout=60)
            hostile.join()
            code = server.stop(30)
        elapsed = time.monotonic() - began
    requests, failed = load.ok + load.failed, load.failed
    # A request fails when the worker holding it is killed: excused if its span holds a kill.
    excused = [r for r in load.spans if any(r[0] - 0.001 <= k <= r[1] for k in kills)]
    result = {
        "command": " ".join(["benchmarks/soak.py", *sys.argv[1:]]),
        "reloads": args.reloads,
        "worker_kills": len(kills),
        "seconds": round(elapsed, 1),
        "requests": requests,
        "failed": failed,
        "failed_in_flight_on_a_killed_worker": len(excused),
        "hostile_clients": hostile_counts,
        "master_before": before,
        "master_after": after,
        "rss_growth_bytes": after["rss"] - before["rss"],
        "server_exit_code": code,
    }
    ok = (
        result["rss_growth_bytes"] < MAX_RSS_GROWTH
        and after["fds"] == before["fds"]
        and after["threads"] == before["threads"]
        and failed == len(excused)
        and code == 0
    )
    result["pass"] = ok
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
