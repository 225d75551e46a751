"""``TutorialServer``: the tutorial's server (``lab.tutorial.server``) as a subprocess, for notebooks
and tests: a scratch copy of its app, its address, clients, edits and signals; like ``lab.Lab``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from lab.clients import Client, Load
from lab.process import _DIE_WITH_PARENT, terminate, wait_until

APP = '''class Greeting:
    """The tutorial's class Test: onReceive says (new Test())->index()."""

    text = "hello world client"

    def index(self):
        return self.text
'''

# One app for both servers, with 20 ms of work per request (a database call, say): the tutorial's
# server calls Greeting().index(), the lab's calls on_receive.
SLOW_APP = (
    APP.replace("        return self.text", "        time.sleep(0.02)\n        return self.text")
    + """

def on_receive(server, conn, data):
    for _ in range(data.count(b"\\n")):
        server.send(conn, f"{Greeting().index()}\\n".encode())
"""
)
SLOW_APP = "import time\n\n\n" + SLOW_APP


def _cleanup(proc: subprocess.Popen | None, root: Path) -> None:
    if proc is not None:
        terminate(proc, timeout=10)
    shutil.rmtree(root, ignore_errors=True)


class TutorialServer:
    """``python -m lab.tutorial.server`` on a free loopback port, serving ``app/hello.py``."""

    def __init__(
        self,
        app: str = APP,
        *,
        workers: int = 2,
        watch: bool = True,
        heartbeat: float = 0.0,
        ready_timeout: float = 20.0,
    ):
        self.root = Path(tempfile.mkdtemp(prefix="lab-tutorial-"))
        self.app_dir = self.root / "app"
        self.app_dir.mkdir()
        self.app = self.app_dir / "hello.py"
        self.app.write_text(app)
        self.pidfile = self.root / "server.pid"
        self.log_path = self.root / "server.log"
        cmd = [
            sys.executable,
            "-c",
            _DIE_WITH_PARENT,
            str(os.getpid()),
            sys.executable,
            "-m",
            "lab.tutorial.server",
            str(self.app),
            "--pidfile",
            str(self.pidfile),
            "--workers",
            str(workers),
            "--heartbeat",
            str(heartbeat),
            *(["--watch", str(self.app_dir)] if watch else []),
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._finalizer = weakref.finalize(self, _cleanup, self.proc, self.root)
        found = wait_until(
            lambda: self.proc.poll() is not None or re.search(r"listening 127\.0\.0\.1:(\d+)", self.log()),
            timeout=ready_timeout,
            what="the tutorial server listening",
        )
        if found is True:
            raise RuntimeError(f"the tutorial server exited:\n{self.log()}")
        self.address = ("127.0.0.1", int(found.group(1)))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def workers(self) -> list[int]:
        """The master's children now (from /proc)."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in children.split()]

    def connect(self, timeout: float = 5.0) -> Client:
        return Client(self.address, timeout)

    def request(self, line: str = "hi", timeout: float = 5.0) -> str:
        with self.connect(timeout) as client:
            return client.request(line)

    def load(self, threads: int = 2, duration: float = 10.0, pause: float = 0.01) -> Load:
        """Clients in threads, a new connection per request, counting answers and failures."""
        load = Load(self.address, threads, duration, pause)
        load.start()
        return load

    def edit(self, text: str) -> None:
        """Save the app as an editor does: a new file renamed over the old one."""
        tmp = self.app.with_name(".hello.py.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.app)

    def reload(self) -> None:
        """``SIGUSR1`` to the master: the tutorial's reload."""
        self.proc.send_signal(signal.SIGUSR1)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> TutorialServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def under_reloads(
    address: tuple[str, int], reload: Callable[[], object], reloads: int = 3, gap: float = 0.4
) -> dict[str, int]:
    """The same client load for any server: two threads of one-request connections while
    ``reload()`` runs ``reloads`` times, ``gap`` seconds apart. Counts what the clients saw."""
    load = Load(address, 2, 60.0, 0.01)
    load.start()
    for _ in range(reloads):
        time.sleep(gap)
        reload()
    time.sleep(gap)
    load.stop()
    return {"requests": load.ok + load.failed, "failed": load.failed}


def outage(address: tuple[str, int], seconds: float = 1.5) -> dict[str, int]:
    """Two threads of one-request connections for ``seconds``: how many got an answer."""
    load = Load(address, 2, seconds, 0.01)
    load.start()
    load.join(timeout=seconds + 30)
    return {"requests": load.ok + load.failed, "failed": load.failed}
