r"""The tutorial's server, small: prefork workers, reload by killing every worker, its heartbeat.

    python -m lab.tutorial.server APP.py --pidfile PATH [--workers 2] [--watch DIR] [--heartbeat S]

The master binds ``127.0.0.1`` (the tutorial binds ``tcp://0.0.0.0:9000``: every interface;
the lab stays on loopback), writes its pid file, and forks the workers; with ``--watch`` it runs
the tutorial's ``Inotify`` (``lab.tutorial.inotify``) whose callback sends ``SIGUSR1`` to the pid
in the pid file. Its ``sigHandler``::

    switch ($sig) {
        case SIGUSR1: $this->reloadSig(); break;   // kill every worker, then fork new ones
        case SIGKILL: $this->stop(); break;        // never runs: SIGKILL cannot be caught
        case SIGINT:  $this->stop(); break;
    }

A worker loads the app on first use, as PHP's autoload loads ``Test`` when ``onReceive`` first
says ``new Test()``; it answers each read with ``Greeting().index()`` (the tutorial's
``(new Test())->index(); send($client, "hello world client \n")``) and runs the tutorial's
heartbeat (``lab.tutorial.heartbeat``). An app that does not compile kills each worker that
reaches it; the series' master only waits for its workers, so here it exits when the last one
is gone: nothing serves until someone restarts it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import selectors
import signal
import socket
import sys
import time
from types import ModuleType

from lab.config import check_duration
from lab.errors import LabError
from lab.tutorial.heartbeat import SwooleTimers, TutorialHeartbeat
from lab.tutorial.inotify import Inotify, watch_event


def log(text: str) -> None:
    print(f"[{os.getpid()}] {text}", flush=True)


class Worker:
    """One worker's event loop: accept, read, answer, and the tutorial's heartbeat."""

    def __init__(self, listener: socket.socket, app: str, heartbeat: float):
        self.listener, self.app_path = listener, app
        self.module: ModuleType | None = None
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ)
        self.conns: dict[int, socket.socket] = {}
        self.timers = SwooleTimers()
        self.heartbeat = TutorialHeartbeat(
            heartbeat, self.close, self.timers, time.monotonic, lambda: int(time.time())
        )  # PHP's time(): whole seconds

    def app(self) -> ModuleType:
        """Autoload: the app is loaded on first use; a SyntaxError ends this worker."""
        if self.module is None:
            spec = importlib.util.spec_from_file_location("app", self.app_path)
            assert spec is not None and spec.loader is not None  # a path ending in .py always has both
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self.module = module
        return self.module

    def run(self) -> None:
        while True:
            deadline = self.timers.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            for key, _ in self.selector.select(timeout):
                if key.fileobj is self.listener:
                    self.accept()
                else:
                    self.read(key.fd)
            self.timers.run(time.monotonic())

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return  # another worker took it
        conn.setblocking(False)
        self.conns[conn.fileno()] = conn
        self.selector.register(conn, selectors.EVENT_READ)

    def read(self, fd: int) -> None:
        self.heartbeat.before_read(fd)  # swoole_timer_clear, before fread
        try:
            data = self.conns[fd].recv(1024)
        except ConnectionError:
            data = b""
        if not data:
            self.close(fd)
            return
        text = self.app().Greeting().index()  # (new Test())->index()
        try:
            self.conns[fd].sendall(f"{text}\n".encode())
        except OSError:  # PHP's fwrite returns false on a closed peer; the read callback goes on
            pass
        self.heartbeat.on_read(fd)

    def close(self, fd: int) -> None:
        conn = self.conns.pop(fd)
        self.selector.unregister(conn)  # swoole_event_del
        conn.close()  # fclose


class Master:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workers: set[int] = set()
        self.killing: set[int] = set()
        self.listener = socket.create_server(("127.0.0.1", args.port), backlog=512)
        self.listener.setblocking(False)

    def fork(self) -> None:
        for _ in range(self.args.workers):
            pid = os.fork()
            if pid == 0:
                self.child()
            self.workers.add(pid)
        log(f"workers {sorted(self.workers)}")

    def child(self) -> None:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGUSR1, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        code = 0
        try:
            Worker(self.listener, self.args.app, self.args.heartbeat).run()
        except BaseException as exc:  # PHP's fatal error: print it, the worker dies
            log(f"worker died: {type(exc).__name__}: {exc}")
            code = 255
        finally:
            os._exit(code)

    def reload(self) -> None:
        """``reloadSig``: kill every worker (connections and all), then fork new ones."""
        log("reload: killing every worker")
        for pid in list(self.workers):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.workers.discard(pid)
        self.fork()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            self.workers.discard(pid)
            log(f"worker {pid} exited ({os.waitstatus_to_exitcode(status)})")
        if not self.workers:
            log("every worker is gone: the server is down")
            self.stop(1)

    def stop(self, code: int = 0) -> None:
        for pid in self.workers:
            os.kill(pid, signal.SIGKILL)
        try:
            os.unlink(self.args.pidfile)
        except FileNotFoundError:
            pass
        os._exit(code)

    async def main(self) -> None:
        with open(self.args.pidfile, "x") as f:
            f.write(f"{os.getpid()}\n")
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.reload)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        if self.args.watch:

            def master_pid() -> int:
                return int(open(self.args.pidfile).read().split()[0])  # pidGet(masterPidFiles)[0]

            watcher = Inotify(self.args.watch, watch_event(master_pid, log), loop=loop)
            watcher.add_file_type("py")
            watcher.start()
        self.fork()
        log(f"listening 127.0.0.1:{self.listener.getsockname()[1]}")
        await asyncio.Event().wait()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lab.tutorial.server", description=__doc__.split("\n")[0])
    parser.add_argument("app", help="a .py file with a class Greeting whose index() returns the answer")
    parser.add_argument("--pidfile", required=True, help="created by the server (must not exist)")
    parser.add_argument("--port", type=int, default=0, help="on 127.0.0.1 (default: any free port)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--watch", help="a directory: reload on a change, the tutorial's way")
    parser.add_argument("--heartbeat", type=float, default=0.0, help="heartbeat_check_interval, seconds")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.app):
        parser.error(f"no app file at {args.app}")
    if not 1 <= args.workers <= 256:
        parser.error("--workers must be from 1 to 256")
    if args.heartbeat != 0:  # 0: no heartbeat, as Swoole's default
        try:
            check_duration("heartbeat_interval", args.heartbeat)
        except LabError as exc:
            parser.error(f"--heartbeat: {exc} (or 0: none)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    try:
        asyncio.run(Master(args).main())
    except FileExistsError:
        sys.exit(f"error: {args.pidfile} exists: is a server running? (remove it if not)")


if __name__ == "__main__":
    main()
