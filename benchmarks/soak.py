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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lab.events import EventTail  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "soak.json"
GREETING = b"hello world client\n"
MAX_RSS_GROWTH = 2 << 20


class Server:
    """``python -m lab serve lab.examples.hello`` with an event stream we follow."""

    def __init__(self, tmp: Path, workers: int):
        self.events_path = tmp / "events.jsonl"
        argv = [sys.executable, "-m", "lab", "serve", "lab.examples.hello", "--bind", "127.0.0.1:0",
                "--workers", str(workers), "--events", str(self.events_path), "--graceful-timeout", "5",
                "--heartbeat-idle", "2", "--quiet"]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL)
        self.tail = EventTail(self.events_path)
        self.events: list[dict] = []
        self.port = int(self.wait("server.start")["bind"].rsplit(":", 1)[1])
        self.wait("reload.done", generation=1)

    def wait(self, kind: str, timeout: float = 30.0, **match) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            self.events.extend(self.tail.read())
            for e in self.events:
                if e["kind"] == kind and all(e.get(k) == v for k, v in match.items()):
                    return e
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no {kind} {match} (server exit code {self.proc.poll()})")
            time.sleep(0.005)

    def serving_pids(self) -> list[int]:
        self.events.extend(self.tail.read())
        exited = {e["pid"] for e in self.events if e["kind"] == "worker.exit"}
        serving = max(e["generation"] for e in self.events if e["kind"] == "reload.done")
        return [e["pid"] for e in self.events if e["kind"] == "worker.ready"
                and e["generation"] == serving and e["pid"] not in exited]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def measure(pid: int) -> dict:
    p = psutil.Process(pid)
    return {"rss": p.memory_info().rss, "fds": p.num_fds(), "threads": p.num_threads()}


def normal_client(port: int, stop: threading.Event, log: list) -> None:
    while not stop.is_set():
        start = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"hi\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(100)
                    if not chunk:
                        break
                    data += chunk
            ok = data == GREETING
        except OSError:
            ok = False
        log.append((start, time.monotonic(), ok))


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
        server = Server(Path(tmp), args.workers)
        stop = threading.Event()
        logs: list[list] = [[] for _ in range(args.clients)]
        hostile_counts: dict[str, int] = {}
        threads = [threading.Thread(target=normal_client, args=(server.port, stop, log)) for log in logs]
        threads.append(threading.Thread(target=hostile_client, args=(server.port, stop, hostile_counts)))
        for t in threads:
            t.start()
        kills: list[float] = []
        began = time.monotonic()
        try:
            for i in range(1, args.reloads + 1):
                if i == args.warmup + 1:
                    before = measure(server.proc.pid)
                if i % args.kill_every == 0:
                    victim = rng.choice(server.serving_pids())
                    kills.append(time.monotonic())
                    os.kill(victim, signal.SIGKILL)
                    server.wait("worker.exit", pid=victim)
                server.proc.send_signal(signal.SIGUSR1)
                server.wait("reload.done", generation=i + 1, timeout=60)
            # Let the never-read clients be closed by the heartbeat, then measure.
            time.sleep(3)
            after = measure(server.proc.pid)
        finally:
            stop.set()
            for t in threads:
                t.join()
            code = server.stop()
        elapsed = time.monotonic() - began
    requests = [r for log in logs for r in log]
    failed = [r for r in requests if not r[2]]
    excused = [r for r in failed if any(r[0] - 0.001 <= k <= r[1] for k in kills)]
    result = {
        "command": " ".join(["benchmarks/soak.py", *sys.argv[1:]]),
        "reloads": args.reloads, "worker_kills": len(kills), "seconds": round(elapsed, 1),
        "requests": len(requests), "failed": len(failed), "failed_in_flight_on_a_killed_worker": len(excused),
        "hostile_clients": hostile_counts,
        "master_before": before, "master_after": after,
        "rss_growth_bytes": after["rss"] - before["rss"],
        "server_exit_code": code,
    }
    ok = (result["rss_growth_bytes"] < MAX_RSS_GROWTH and after["fds"] == before["fds"]
          and after["threads"] == before["threads"] and len(failed) == len(excused) and code == 0)
    result["pass"] = ok
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
