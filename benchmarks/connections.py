"""The heartbeat at 100,000 real idle loopback connections: what holding them costs, and when they close.

1. Holding (``--heartbeat-idle 60 --heartbeat-interval 0.1``): client processes open N silent
   connections, paced, each process from its own source address in 127.0.0.0/8 (a source address
   has ~28,000 ephemeral ports); once all are open, the server's processes (master + workers) are
   measured over a window that ends before the first connection can expire: CPU from the
   kernel's per-task run time (``/proc/PID/schedstat``, ns), memory as USS (``smaps_rollup``)
   minus the same before any connection. Goal: < 1 % of one core, < 2 KiB per connection.
2. Expiry (``--heartbeat-idle 5``): the same N connections, paced the same; each is timed from
   the kernel's own record, ``TCP_INFO.tcpi_last_ack_recv``, read right after ``connect`` (the
   SYN-ACK) and on EOF (the server's FIN), so a busy client loop does not blur it. Goal: every
   one closed between 4.95 and 5.35 s after it was opened.

Facts of the machine it was written for: a process may hold 20,000 fds at most, so the server
runs 7 workers and the clients ``--clients`` processes; connects faster than ~2,000/s overflow the
accept backlog and come back 1-3 s later by SYN retransmit (that would measure the kernel), so the
clients pace their connects (``--rate``, in total). Everything is bounded in time; the clients
end on their own, on EOF of their stdin, and on Ctrl-C.

    .venv/bin/python benchmarks/connections.py             # 100,000 connections, ~3 minutes
    .venv/bin/python benchmarks/connections.py --quick     # 2,000 connections, ~20 s

Writes benchmarks/results/connections.json and pic/bench_connections.png (``--quick``: neither).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from heartbeat_server import _cpu, _memory, serve  # noqa: E402

from lab.events import Kind  # noqa: E402
from lab.heartbeat import DEFAULT_STRATEGY  # noqa: E402

INTERVAL = 0.1
HOLD_IDLE, EXPIRY_IDLE = 60.0, 5.0
EXPIRY_BOUNDS = (4.95, 5.35)  # seconds from open to close, the goal
_LAST_ACK_RECV = struct.Struct("=I")  # struct tcp_info: 8 one-byte fields, then u32s; this is the 14th
_LAST_ACK_RECV_OFFSET = 8 + 12 * 4


# --- the client processes (``connections.py client ...``) -----------------------------------------


def _last_ack_at(sock: socket.socket) -> float:
    """When (time.monotonic) the kernel last received an ACK on ``sock``: its SYN-ACK or FIN here.

    The kernel says how long ago, at the moment of the call; a client preempted around the call
    (the machine is loaded) would shift the answer, so the call is retried until it took < 2 ms."""
    for _ in range(100):
        before = time.monotonic()
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        if time.monotonic() - before < 0.002:
            break
    (ago_ms,) = _LAST_ACK_RECV.unpack_from(info, _LAST_ACK_RECV_OFFSET)
    return before - ago_ms / 1000


def _connect(port: int, source: str, connecting: dict[int, socket.socket], poller: select.epoll) -> None:
    """Starts a connect without waiting: a SYN lost to a full backlog is retried by the kernel 1-3 s
    later, and meanwhile this client must go on reading the closes of the others."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((source, 0))
    sock.connect_ex(("127.0.0.1", port))
    connecting[sock.fileno()] = sock
    poller.register(sock.fileno(), select.EPOLLOUT)


def client(port: int, source: str, count: int, rate: float, hold: bool, deadline: float) -> dict:
    """Opens ``count`` silent connections at ``rate``/s from ``source``. ``hold``: says ``ready`` and
    holds them until stdin ends; else waits for the server to close each one. Ends by ``deadline`` s."""
    poller = select.epoll()
    connecting: dict[int, socket.socket] = {}
    opened: dict[int, tuple[socket.socket, float]] = {}  # fd: (socket, when its SYN-ACK came)
    lifetimes: list[float] = []
    start = time.monotonic()
    end = start + deadline
    started = failed = 0
    stdin_open = hold
    if hold:
        poller.register(sys.stdin.fileno(), select.EPOLLIN)
    try:
        while time.monotonic() < end and (started < count or connecting or (stdin_open if hold else opened)):
            for _ in range(min(count, int((time.monotonic() - start) * rate) + 1) - started):
                _connect(port, source, connecting, poller)
                started += 1
            for fd, _ in poller.poll(0.005 if started < count or connecting else 0.1):
                if fd == sys.stdin.fileno():
                    if not os.read(fd, 4096):
                        stdin_open = False
                        poller.unregister(fd)
                elif fd in connecting:
                    sock = connecting.pop(fd)
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        failed += 1
                        poller.unregister(fd)
                        sock.close()
                    else:
                        opened[fd] = (sock, _last_ack_at(sock))
                        poller.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)
                    if hold and started == count and not connecting:
                        print("ready" if not failed else f"{failed} connects failed", flush=True)
                else:
                    sock, opened_at = opened.pop(fd)
                    lifetimes.append(_last_ack_at(sock) - opened_at)
                    poller.unregister(fd)
                    sock.close()
    finally:
        for sock in [*connecting.values(), *(s for s, _ in opened.values())]:
            sock.close()
    return {
        "opened": started - failed - len(connecting),
        "failed": failed,
        "still_connecting": len(connecting),
        "still_open": len(opened),
        "closed": len(lifetimes),
        "lifetimes": lifetimes,
        "seconds": round(time.monotonic() - start, 2),
    }


# --- the measurements -------------------------------------------------------------------------------


def _clients(port: int, args, hold: bool, deadline: float) -> list[subprocess.Popen]:
    per, extra = divmod(args.connections, args.clients)
    return [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "client",
                "--port",
                str(port),
                "--source",
                f"127.0.0.{10 + i}",
                "--count",
                str(per + (i < extra)),
                "--rate",
                str(args.rate / args.clients),
                "--deadline",
                str(deadline),
            ]
            + (["--hold"] if hold else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(args.clients)
    ]


def _finish(clients: list[subprocess.Popen], timeout: float) -> list[dict]:
    """Each client's report; a client still running at ``timeout`` is killed (and fails the run)."""
    reports = []
    for proc in clients:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"client {proc.pid} did not finish in {timeout} s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"client {proc.pid} failed (exit {proc.returncode})")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def _kill(clients: list[subprocess.Popen]) -> None:
    for proc in clients:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _fds(procs: list) -> int:
    return sum(len(os.listdir(f"/proc/{p.pid}/fd")) for p in procs)


def _wait_accepted(procs: list, fds: int, timeout: float) -> None:
    """Until the server's processes hold ``fds`` (cheaper than reading 100,000 events meanwhile)."""
    deadline = time.monotonic() + timeout
    while _fds(procs) < fds:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not accept every connection in {timeout} s")
        time.sleep(0.1)


def holding(args, strategy: str) -> dict:
    """Open everything, then measure the server over a window that ends before the first expiry."""
    open_seconds = args.connections / args.rate
    with serve(strategy, HOLD_IDLE, INTERVAL, args.workers) as server:
        procs = server.processes()
        time.sleep(1)  # settle after start-up: imports done, first ticks passed
        uss0, rss0 = _memory(procs)
        fds0 = _fds(procs)
        first_open = time.monotonic()
        clients = _clients(server.port, args, hold=True, deadline=open_seconds + HOLD_IDLE + 60)
        try:
            for proc in clients:
                assert proc.stdout is not None  # stdout=PIPE
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("a client could not open its connections")
            opened_in = time.monotonic() - first_open
            _wait_accepted(procs, fds0 + args.connections, 60)
            time.sleep(0.5)  # the last accepts and their first reads are over
            window = min(args.hold_seconds, first_open + HOLD_IDLE - 1.0 - time.monotonic())
            if window < 1:
                raise RuntimeError(
                    f"opening took {opened_in:.1f} s: no time left to measure before the "
                    f"first expiry at {HOLD_IDLE:g} s; raise --rate"
                )
            uss1, rss1 = _memory(procs)
            cpu0, master0, wall0 = _cpu(procs), _cpu(procs[:1]), time.monotonic()
            time.sleep(window)
            cpu1, master1, wall1 = _cpu(procs), _cpu(procs[:1]), time.monotonic()
            closed = server.count(Kind.CONN_CLOSE)
            for proc in clients:  # all at once: their connections close before the first could expire
                assert proc.stdin is not None  # stdin=PIPE
                proc.stdin.close()
                proc.stdin = None
            reports = _finish(clients, 120)
        finally:
            _kill(clients)
    return {
        "connections": args.connections,
        "opened_in_s": round(opened_in, 1),
        "window_s": round(wall1 - wall0, 2),
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 3),
        "master_cpu_percent": round(100 * (master1 - master0) / (wall1 - wall0), 3),
        "uss_per_connection_bytes": round((uss1 - uss0) / args.connections),
        "rss_per_connection_bytes": round((rss1 - rss0) / args.connections),
        "server_processes": len(procs),
        "closed_during_hold": closed,
        "closed_before_clients_ended": sum(r["closed"] for r in reports),
    }


def expiry(args, strategy: str) -> dict:
    """Open everything at the same pace with idle 5 s; every connection's open-to-close time."""
    deadline = args.connections / args.rate + EXPIRY_IDLE + 30
    with serve(strategy, EXPIRY_IDLE, INTERVAL, args.workers) as server:
        clients = _clients(server.port, args, hold=False, deadline=deadline)
        try:
            reports = _finish(clients, deadline + 30)
        finally:
            _kill(clients)
        idle_at_close = [e["idle"] for e in _events(server) if e.get("reason") == "idle"]
    lifetimes = sorted(t for r in reports for t in r["lifetimes"])
    lo, hi = EXPIRY_BOUNDS
    bins = [round(4.9 + 0.01 * i, 2) for i in range(61)]  # 10 ms bins, 4.9 to 5.5 s
    return {
        "connections": args.connections,
        "opened": sum(r["opened"] for r in reports),
        "failed": sum(r["failed"] + r["still_connecting"] for r in reports),
        "closed": len(lifetimes),
        "still_open": sum(r["still_open"] for r in reports),
        "within_bounds": sum(1 for t in lifetimes if lo <= t <= hi),
        "lifetime_s": _summary(lifetimes),
        "server_idle_at_close_s": _summary(idle_at_close),
        "histogram": {"edges": bins, "counts": _histogram(lifetimes, bins)},
    }


def _events(server) -> list[dict]:
    """The server's ``conn.close`` events so far."""
    return server.find(Kind.CONN_CLOSE)


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)
    return {
        "min": round(values[0], 4),
        "p50": round(statistics.median(values), 4),
        "p99": round(values[min(len(values) - 1, int(0.99 * len(values)))], 4),
        "max": round(values[-1], 4),
    }


def _histogram(values: list[float], edges: list[float]) -> list[int]:
    """Counts per bin; values outside go to the first or last bin (the bounds are drawn)."""
    counts = [0] * (len(edges) - 1)
    width = edges[1] - edges[0]
    for v in values:
        counts[min(len(counts) - 1, max(0, int((v - edges[0]) / width)))] += 1
    return counts


def _print(result: dict) -> None:
    settings, (lo, hi) = result["settings"], EXPIRY_BOUNDS
    print(
        f"\n{settings['connections']:,} idle connections, {settings['workers']} workers, interval {INTERVAL} s "
        f"(goals: < 1 % of one core and < 2048 B per connection held; every one closed {lo}-{hi} s after "
        "opening)\n"
    )
    print(
        "| strategy | CPU held (% of one core) | USS per connection (B) | closed in bounds "
        "| open to close p50 / p99 / max (s) | load (1 min) |"
    )
    print("|---|---:|---:|---:|---|---|")
    for run in result["runs"]:
        held, expired, life = run["holding"], run["expiry"], run["expiry"]["lifetime_s"]
        print(
            f"| {run['strategy']} | {held['cpu_percent_of_one_core']} (over {held['window_s']} s) "
            f"| {held['uss_per_connection_bytes']:,} | {expired['within_bounds']:,} / {expired['connections']:,} "
            f"| {life.get('p50')} / {life.get('p99')} / {life.get('max')} "
            f"| {run['load_before'].split()[0]} → {run['load_after'].split()[0]} |"
        )


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--source", required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--rate", type=float, required=True)
    c.add_argument("--deadline", type=float, required=True)
    c.add_argument("--hold", action="store_true")
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8, help="client processes (each < 20,000 fds)")
    parser.add_argument("--workers", type=int, default=7, help="server workers (each < 20,000 fds)")
    parser.add_argument("--rate", type=float, default=1900, help="connects per second, all clients together")
    parser.add_argument("--hold-seconds", type=float, default=5.0, help="CPU window, at most")
    parser.add_argument(
        "--strategies",
        default=f"{DEFAULT_STRATEGY},queue",
        help="heartbeat strategies, each measured in turn (default: the default and queue)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2,000 connections, 2 clients, 2 workers, the default strategy; writes no result or figure",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    args = parser.parse_args()
    if args.mode == "client":
        try:
            report = client(args.port, args.source, args.count, args.rate, args.hold, args.deadline)
        except KeyboardInterrupt:
            return 130
        print(json.dumps(report))
        return 0
    if args.quick:
        args.connections, args.clients, args.workers, args.hold_seconds = 2000, 2, 2, 2.0
    strategies = [DEFAULT_STRATEGY] if args.quick else list(dict.fromkeys(args.strategies.split(",")))
    runs = []
    for strategy in strategies:
        load_before = _load()
        held = holding(args, strategy)
        print(f"  {strategy} holding: {held}", file=sys.stderr)
        expired = expiry(args, strategy)
        print(f"  {strategy} expiry: { ({k: v for k, v in expired.items() if k != 'histogram'}) }", file=sys.stderr)
        runs.append(
            {
                "strategy": strategy,
                "load_before": load_before,
                "load_after": _load(),
                "holding": held,
                "expiry": expired,
            }
        )
    result = {
        "settings": {
            "connections": args.connections,
            "clients": args.clients,
            "workers": args.workers,
            "rate": args.rate,
            "interval": INTERVAL,
            "hold_idle": HOLD_IDLE,
            "expiry_idle": EXPIRY_IDLE,
            "default_strategy": DEFAULT_STRATEGY,
            "cpus": os.cpu_count(),
        },
        "runs": runs,
    }
    _print(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.quick:
        return 0
    out = ROOT / "benchmarks" / "results" / "connections.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    from lab.figures import bench_connections

    bench_connections(result).savefig(ROOT / "pic" / "bench_connections.png", dpi=110)
    print(f"\nwrote {out}, {ROOT / 'pic' / 'bench_connections.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
