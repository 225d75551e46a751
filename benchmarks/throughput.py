"""Keep-alive hello-world throughput: ``python -m lab serve`` against uvicorn, same run, same wrk.

Both with 2 workers on loopback; uvicorn at its fastest (``--loop uvloop --http httptools``, no
access log). Rounds alternate (ours, uvicorn, ours, ...) so drift of the machine hits both; the
median of each side counts. Target: ours >= 1.8 x uvicorn's requests per second.

    .venv/bin/python benchmarks/throughput.py                 # ~1 minute
    .venv/bin/python benchmarks/throughput.py --rounds 5 --duration 10

Writes benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.playground import terminate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "throughput.json"
TARGET_RATIO = 1.8

ASGI_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"19")]})
    await send({"type": "http.response.body", "body": b"hello world client\\n"})
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no server answering on port {port}")


def start(kind: str, port: int, app_dir: str) -> subprocess.Popen:
    if kind == "lab":
        argv = [
            sys.executable,
            "-m",
            "lab",
            "serve",
            "lab.examples.hello",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--quiet",
        ]
    else:
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench_asgi:app",
            "--app-dir",
            app_dir,
            "--workers",
            "2",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_http(port)
        time.sleep(1.0)  # uvicorn's second worker may still be starting: let both be up
        wait_http(port)
    except BaseException:
        terminate(proc)
        raise
    return proc


def wrk(port: int, duration: float, connections: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration:g}s", "--latency", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")
    rps = float(found.group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    return {
        "rps": rps,
        "socket_errors": errors.group(1) if errors else None,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "p99": p99.group(1) if p99 else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"lab": [], "uvicorn": []}
    with tempfile.TemporaryDirectory() as app_dir:
        Path(app_dir, "bench_asgi.py").write_text(ASGI_APP)
        for round_ in range(args.rounds):
            for kind in ("lab", "uvicorn"):
                port = free_port()
                proc = start(kind, port, app_dir)
                try:
                    wrk(port, 1, args.connections)  # warm-up
                    result = wrk(port, args.duration, args.connections)
                finally:
                    terminate(proc)
                runs[kind].append(result)
                print(
                    f"round {round_ + 1} {kind:8} {result['rps']:>10.0f} req/s  p99 {result['p99']}"
                    f"  errors {result['socket_errors']}",
                    flush=True,
                )
    median = {kind: statistics.median(r["rps"] for r in rs) for kind, rs in runs.items()}
    ratio = median["lab"] / median["uvicorn"]
    summary = {
        "what": "wrk keep-alive GET / hello world, 2 workers each, loopback",
        "wrk": f"wrk -t2 -c{args.connections} -d{args.duration:g}s",
        "uvicorn": "--workers 2 --loop uvloop --http httptools --no-access-log",
        "median_rps": {k: round(v) for k, v in median.items()},
        "ratio": round(ratio, 3),
        "ratio_per_round": [round(a["rps"] / b["rps"], 3) for a, b in zip(runs["lab"], runs["uvicorn"])],
        "target_ratio": TARGET_RATIO,
        "met": ratio >= TARGET_RATIO,
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"median: lab {median['lab']:.0f} req/s, uvicorn {median['uvicorn']:.0f} req/s, "
        f"ratio {ratio:.2f} (target >= {TARGET_RATIO}) -> {RESULTS}"
    )
    return 0 if summary["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
