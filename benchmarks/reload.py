"""Hot reload, measured against ``uvicorn --reload`` in the same run with the same edits.

For each server: 6 client threads keep making fresh HTTP connections (``Connection: close``) while
the app's file is edited 10 times (version 1..10 in the answer). Per edit:
- latency: from the file write to the first answer carrying the new version;
- missed: the new version never answered within 15 s;
- old after new: answers with an older version to requests *sent after* the first new answer
  arrived (a mixed-version window);
and over the whole run, failed requests (refused, reset, empty). Target: our median latency
<= 0.15 x uvicorn's, no edit missed, no failed request, no old answer after a new one.

    .venv/bin/python benchmarks/reload.py            # ~1 minute

Writes benchmarks/results/reload.json.

``--heavy``: both apps import ``matplotlib.pyplot`` and ``numpy`` at their top (about 0.45 s), and
the lab serves with ``--preload matplotlib.pyplot,numpy``; target ratio <= 0.05 (a heavy app
reloads about as fast as a light one). Writes benchmarks/results/reload_heavy.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lab.process import terminate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "reload.json"
TARGET_RATIO = 0.15
CLIENTS = 6
SEEN_TIMEOUT = 15.0

HELLO = (ROOT / "lab" / "examples" / "hello.py").read_text()
ASGI_APP = """\
TEXT = {text!r}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = (TEXT + "\\n").encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
"""


HEAVY_IMPORTS = "import matplotlib.pyplot  # noqa: F401\nimport numpy  # noqa: F401\n\n"
HEAVY_PRELOAD = ["--preload", "matplotlib.pyplot,numpy"]
HEAVY_RESULTS = RESULTS.with_name("reload_heavy.json")
HEAVY_TARGET_RATIO = 0.05


def heavy(source):
    """The same app with the heavy imports at its top (``--heavy``), after a ``__future__`` import."""
    future = "from __future__ import annotations\n"

    def heavy_source(text: str) -> str:
        head, found, rest = source(text).partition(future)
        return head + found + HEAVY_IMPORTS + rest if found else HEAVY_IMPORTS + head

    return heavy_source


def lab_source(text: str) -> str:
    return HELLO.replace('text = "hello world client"', f"text = {text!r}")


def uvicorn_source(text: str) -> str:
    return ASGI_APP.format(text=text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int) -> str:
    """One fresh connection, one GET, the body's text (raises on any failure)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    head, sep, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or not sep:
        raise ConnectionError(f"bad answer {data[:60]!r}")
    return body.decode().strip()


class Clients:
    """Threads making fresh connections in a loop; every answer is kept with its times."""

    def __init__(self, port: int, count: int):
        self.port = port
        self.stop = threading.Event()
        self.answers: list[tuple[float, float, str]] = []  # (sent, received, text)
        self.failures: list[tuple[float, str]] = []
        self.first: dict[str, float] = {}  # text -> when it was first received
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def _run(self) -> None:
        while not self.stop.is_set():
            sent = time.monotonic()
            try:
                text = get(self.port)
            except OSError as exc:
                with self.lock:
                    self.failures.append((sent, repr(exc)))
                time.sleep(0.01)  # a refused connection returns at once: don't spin
                continue
            received = time.monotonic()
            with self.lock:
                self.answers.append((sent, received, text))
                self.first.setdefault(text, received)

    def first_answer(self, text: str) -> float | None:
        """When ``text`` was first received (each edit has a new text), or None."""
        with self.lock:
            return self.first.get(text)

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def measure(kind: str, edits: int, workdir: Path, is_heavy: bool = False) -> dict:
    app_dir = workdir / kind
    app_dir.mkdir()
    source = lab_source if kind == "lab" else uvicorn_source
    source = heavy(source) if is_heavy else source
    app_file = app_dir / "bench_app.py"
    app_file.write_text(source("v0"))
    port = free_port()
    if kind == "lab":
        argv = [
            sys.executable,
            "-m",
            "lab",
            "serve",
            "bench_app",
            "--app-dir",
            str(app_dir),
            "--watch",
            str(app_dir),
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--quiet",
        ]
        argv += HEAVY_PRELOAD if is_heavy else []
    else:
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench_app:app",
            "--app-dir",
            str(app_dir),
            "--reload",
            "--reload-dir",
            str(app_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    latencies: list[float] = []
    missed = 0
    old_after_new = 0
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if get(port) == "v0":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} did not start")
            time.sleep(0.05)
        with Clients(port, CLIENTS) as clients:
            time.sleep(0.5)  # clients warm up on v0
            for version in range(1, edits + 1):
                text = f"v{version}"
                written = time.monotonic()
                app_file.write_text(source(text))
                limit = written + SEEN_TIMEOUT
                first = None
                while first is None and time.monotonic() < limit:
                    time.sleep(0.002)
                    first = clients.first_answer(text)
                if first is None:
                    missed += 1
                    continue
                latencies.append(first - written)
                time.sleep(0.4)  # let clients run on the new version before the next edit
                with clients.lock:
                    old_after_new += sum(
                        1
                        for sent, _, t in clients.answers
                        if sent > first and t.startswith("v") and int(t[1:]) < version
                    )
            requests = len(clients.answers)
            failures = list(clients.failures)
    finally:
        terminate(proc)
    return {
        "median_latency_s": round(statistics.median(latencies), 4) if latencies else None,
        "latencies_s": [round(x, 4) for x in latencies],
        "edits": edits,
        "missed": missed,
        "requests": requests,
        "failed_requests": len(failures),
        "failure_examples": sorted({f for _, f in failures})[:5],
        "old_after_new": old_after_new,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument(
        "--heavy", action="store_true", help="apps that import matplotlib.pyplot and numpy; the lab preloads them"
    )
    args = parser.parse_args()
    target, out = (HEAVY_TARGET_RATIO, HEAVY_RESULTS) if args.heavy else (TARGET_RATIO, RESULTS)
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for kind in ("lab", "uvicorn"):
            results[kind] = measure(kind, args.edits, Path(workdir), args.heavy)
            r = results[kind]
            print(
                f"{kind:8} median {r['median_latency_s']} s  missed {r['missed']}/{r['edits']}  "
                f"failed {r['failed_requests']}/{r['requests'] + r['failed_requests']}  "
                f"old-after-new {r['old_after_new']}",
                flush=True,
            )
    lab, uv = results["lab"], results["uvicorn"]
    ratio = (
        lab["median_latency_s"] / uv["median_latency_s"] if lab["median_latency_s"] and uv["median_latency_s"] else None
    )
    met = (
        ratio is not None
        and ratio <= target
        and lab["missed"] == 0
        and lab["failed_requests"] == 0
        and lab["old_after_new"] == 0
    )
    summary = {
        "what": f"file write -> first answer from new code; {CLIENTS} clients on fresh connections; "
        f"{args.edits} edits" + ("; apps import matplotlib.pyplot, numpy" if args.heavy else ""),
        "uvicorn": "--reload (watchfiles), 1 process",
        "lab": "--watch, 2 workers" + (" --preload matplotlib.pyplot,numpy" if args.heavy else ""),
        "ratio_median_latency": round(ratio, 4) if ratio else None,
        "target_ratio": target,
        "met": met,
        **results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"ratio {summary['ratio_median_latency']} (target <= {target}) met={met} -> {out}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
