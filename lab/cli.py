"""``python -m lab COMMAND ...``: every demo of the lab from a terminal.

Each command is one ``_cmd_*`` function that adds its parser and sets ``func``; handlers import
what they need lazily, so ``python -m lab watch`` does not import the server, and the reverse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from lab.debounce import DEFAULT_DEBOUNCE  # pure logic: cheap to import
from lab.errors import LabError
from lab.i18n import LANGUAGES, _


def _types(text: str) -> tuple[str, ...]:
    """``.py,.txt`` or ``py,txt`` -> ``('.py', '.txt')``."""
    return tuple("." + t.strip().lstrip(".") for t in text.split(",") if t.strip())


# --- commands ---------------------------------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(fn: Callable[[argparse._SubParsersAction], None]):
    COMMANDS.append(fn)
    return fn


@command
def _cmd_watch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "watch",
        help="print file changes under PATHs as they happen (inotify)",
        description="Watch directories (recursively) or files and print each "
        "change, one batch after each burst of events.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument(
        "--types", type=_types, default=(".py",), help="file suffixes to report, comma-separated (default: .py)"
    )
    p.add_argument("--all-types", action="store_true", help="report files of every type")
    p.add_argument(
        "--ignore", action="append", metavar="PATTERN", default=[], help="one more name pattern to ignore (repeatable)"
    )
    p.add_argument(
        "--no-default-ignore", action="store_true", help="do not ignore .git, __pycache__, editor swap files, ..."
    )
    p.add_argument(
        "--debounce",
        type=float,
        default=DEFAULT_DEBOUNCE,
        metavar="S",
        help=f"seconds of quiet before a burst is reported (default: {DEFAULT_DEBOUNCE:g})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.add_argument("--explain", action="store_true", help="say how each change was made")
    p.set_defaults(func=_watch)


def _watch(args: argparse.Namespace) -> int:
    import json
    import os
    import selectors
    import signal

    from lab.config import check_duration
    from lab.watcher import DEFAULT_IGNORE, Watcher

    check_duration("debounce", args.debounce)
    ignore = (() if args.no_default_ignore else DEFAULT_IGNORE) + tuple(args.ignore)
    types = None if args.all_types else args.types
    # Signals only wake the loop (through the wakeup fd): the loop stops between batches, so
    # nothing printed is ever cut in half.
    stop = []
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    old_handlers = {sig: signal.signal(sig, lambda s, f: stop.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with (
            Watcher(args.paths, types=types, ignore=ignore, debounce=args.debounce) as watcher,
            selectors.DefaultSelector() as selector,
        ):
            selector.register(watcher.fileno(), selectors.EVENT_READ)
            selector.register(wake_r, selectors.EVENT_READ)
            print(
                _("watching {dirs} directories, {files} files (Ctrl-C to stop)").format(
                    dirs=watcher.watched_dirs, files=watcher.watched_files
                ),
                file=sys.stderr,
                flush=True,
            )
            while not stop:
                selector.select(watcher.timeout())
                for change in watcher.poll():
                    _print_change(change, args.json, args.explain, json)
                sys.stdout.flush()
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)
    return 0


def _print_change(change, as_json: bool, explain: bool, json) -> None:
    if as_json:
        record = change.to_json()
        if not explain:
            del record["why"]
        print(json.dumps(record))
        return
    where = f"{_shown(change.src)} -> {_shown(change.path)}" if change.src else _shown(change.path)
    print(f"{change.kind:<9} {where}")
    if explain:
        for line in change.why:
            print(f"    {_shown(line)}")


def _shown(text: str) -> str:
    """``text`` on one printable line: a file name may hold a newline (which would forge a line of
    output), other control characters or undecodable bytes; these and ``\\`` are escaped."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(
        c
        if c.isprintable() and c != "\\"
        # an undecodable byte of the name (os.fsdecode's surrogateescape) as that byte
        else f"\\x{ord(c) - 0xDC00:02x}"
        if 0xDC80 <= ord(c) <= 0xDCFF
        else repr(c)[1:-1]  # \\ \n \x1b \u200b ...
        for c in text
    )


@command
def _cmd_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the prefork reactor server with hot reload",
        description="Serve TARGET (module or module:attr with on_receive(server, conn, "
        "data)) with a prefork master; SIGUSR1/SIGHUP or a watched change "
        "reloads the workers without dropping a connection.",
    )
    p.add_argument("target", metavar="TARGET", help="the app: module or module:attr, e.g. lab.examples.hello")
    p.add_argument("--app-dir", default=".", metavar="DIR", help="put DIR first on sys.path (default: .)")
    p.add_argument(
        "--bind",
        default="127.0.0.1:9000",
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:9000; [::1]:9000 for IPv6; port 0: any)",
    )
    p.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes (default: CPUs)")
    p.add_argument(
        "--watch", action="append", default=[], metavar="PATH", help="reload when files under PATH change (repeatable)"
    )
    p.add_argument("--types", type=_types, default=(".py",), help="watched suffixes (default: .py)")
    p.add_argument(
        "--debounce",
        type=float,
        default=DEFAULT_DEBOUNCE,
        metavar="S",
        help=f"seconds of quiet before a burst of changes reloads (default: {DEFAULT_DEBOUNCE:g})",
    )
    p.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="how long old workers may finish their requests before SIGKILL (default: 30)",
    )
    p.add_argument("--pidfile", metavar="PATH", help="write the master's pid here (for reload/stop)")
    p.add_argument("--events", metavar="PATH", help="append events as JSON lines to PATH")
    _serve_limits(p)
    p.add_argument("--quiet", action="store_true", help="no log lines on stderr")
    p.set_defaults(func=_serve)


def _serve_limits(p: argparse.ArgumentParser) -> None:
    """``serve``'s options for the heartbeat, timeouts, buffers and preloading."""
    from lab.heartbeat import DEFAULT_STRATEGY, STRATEGIES  # pure logic: cheap to import

    p.add_argument("--heartbeat-idle", type=float, metavar="S", help="close connections idle this long")
    p.add_argument("--heartbeat-interval", type=float, metavar="S", help="how often idleness is checked")
    p.add_argument(
        "--heartbeat-strategy", metavar="NAME", help=f"{', '.join(STRATEGIES)} (default: {DEFAULT_STRATEGY})"
    )
    p.add_argument(
        "--worker-timeout",
        type=float,
        metavar="S",
        help="replace a worker whose loop has been stuck this long (default: never)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="the example app answers 408 to a request not whole S s after its first byte (slowloris; default: 10)",
    )
    p.add_argument(
        "--max-output",
        type=int,
        default=64 << 20,
        metavar="BYTES",
        help="close a connection whose unsent output grows past this (default: 64 MiB)",
    )
    p.add_argument(
        "--buffer-budget",
        type=int,
        default=16 << 20,
        metavar="BYTES",
        help="a worker's buffers (all connections, in and out) above this: a connection over "
        "its share is not read until it frees; at worst twice this is held (default: 16 MiB)",
    )
    p.add_argument(
        "--preload",
        action="append",
        default=[],
        metavar="MODULE[,MODULE...]",
        help="modules the master imports once before forking (numpy, a framework): every "
        "generation inherits them and imports only the app; a reload does not pick up "
        "a change to them (repeatable); 'auto': what the app imports from outside its folder "
        "and the watched paths, found by importing it once in a throwaway child",
    )


def _serve(args: argparse.Namespace) -> int:
    from lab.config import Config
    from lab.master import Master
    from lab.upgrade import take_upgrade_env

    handed = take_upgrade_env()
    if handed is not None:  # a new master exec'd by an upgrade: the old one's settings, not argv's
        config, quiet, predecessor = handed
        return Master(config, echo=None if quiet else sys.stderr, predecessor=predecessor).run()
    options = {
        name: getattr(args, name)
        for name in (
            "target",
            "app_dir",
            "bind",
            "watch",
            "types",
            "debounce",
            "graceful_timeout",
            "pidfile",
            "events",
            "heartbeat_idle",
            "heartbeat_interval",
            "heartbeat_strategy",
            "worker_timeout",
            "max_output",
            "header_timeout",
            "buffer_budget",
        )
    }
    if args.workers is not None:
        options["workers"] = args.workers
    options["preload"] = ",".join(args.preload)
    return Master(Config(**options), echo=None if args.quiet else sys.stderr).run()


@command
def _cmd_reload(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reload", help="reload a running server's workers (SIGUSR1 to its master)")
    p.add_argument("--pidfile", required=True, metavar="PATH", help="the server's pid file")
    p.set_defaults(func=_reload)


def _reload(args: argparse.Namespace) -> int:
    import signal

    from lab.pidfile import signal_server

    pid = signal_server(args.pidfile, signal.SIGUSR1)
    print(_("reload requested from server {pid}").format(pid=pid))
    return 0


@command
def _cmd_upgrade(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upgrade",
        help="replace a running server's master without dropping a connection "
        "(SIGUSR2): new lab code and preloaded modules are loaded",
        description="Send SIGUSR2 to the master named in the pid file and wait until the pid "
        "file names its successor. A new master that fails is reported in the "
        "server's events (upgrade.failed) and the old one keeps serving.",
    )
    p.add_argument("--pidfile", required=True, metavar="PATH", help="the server's pid file")
    p.add_argument(
        "--timeout", type=float, default=120.0, metavar="S", help="give up waiting after S seconds (default: 120)"
    )
    p.set_defaults(func=_upgrade)


def _upgrade(args: argparse.Namespace) -> int:
    from lab.pidfile import upgrade_server

    old, new = upgrade_server(args.pidfile, args.timeout)
    print(_("server upgraded: master {old} -> {new}").format(old=old, new=new))
    return 0


@command
def _cmd_stop(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stop", help="stop a running server gracefully and wait until it is gone")
    p.add_argument("--pidfile", required=True, metavar="PATH", help="the server's pid file")
    p.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="give up waiting after S seconds (default: 60)"
    )
    p.set_defaults(func=_stop)


def _stop(args: argparse.Namespace) -> int:
    from lab.pidfile import stop_server

    pid = stop_server(args.pidfile, args.timeout)
    print(_("server {pid} stopped").format(pid=pid))
    return 0


@command
def _cmd_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the tutorial's story on a real server, in the terminal",
        description="Start a server in a scratch directory, edit its app and watch it "
        "reload (a syntax error included), then let the heartbeat close "
        "silent clients. Everything is stopped at the end, Ctrl-C too.",
    )
    p.add_argument("scenario", nargs="?", default="all", choices=("reload", "heartbeat", "all"))
    p.add_argument("--workers", type=int, default=2, metavar="N", help="worker processes (default: 2)")
    p.add_argument("--edits", type=int, default=3, metavar="K", help="edits that reload the app (default: 3)")
    p.add_argument("--port", type=int, default=None, metavar="P", help="serve on 127.0.0.1:P (default: a free port)")
    p.add_argument(
        "--pace",
        type=float,
        default=None,
        metavar="S",
        help="pause between steps (default: 0.8 s on a terminal, 0 otherwise)",
    )
    p.add_argument(
        "--lang",
        choices=LANGUAGES,
        default=None,
        help="en or zh, the language of the story (default: LAB_LANG, else the locale's)",
    )
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from lab.demo import run

    return run(args.scenario, workers=args.workers, edits=args.edits, port=args.port, pace=args.pace, lang=args.lang)


@command
def _cmd_figures(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "figures",
        help="regenerate the pictures in pic/ from real runs and benchmark results",
        description="Draw the architecture sketch, a reload timeline and heartbeat "
        "lifetimes from real server runs, and plot benchmarks/results/*.json.",
    )
    p.add_argument(
        "--out", metavar="DIR", help="where to write the PNGs (default: pic; with --quick: test-artifacts/figures)"
    )
    p.add_argument(
        "--results",
        default="benchmarks/results",
        metavar="DIR",
        help="benchmark JSON files to plot (default: benchmarks/results)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny real runs (about a second each), a check rather than the pictures to commit",
    )
    p.set_defaults(func=_figures)


def _figures(args: argparse.Namespace) -> int:
    from lab.figures import render

    render(args.out, quick=args.quick, results=args.results)
    return 0


@command
def _cmd_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="measure hot reload and heartbeat of ANY server (yours too)",
        description="Edit --app while clients ask the server at --connect; report failed, "
        "missed and stale answers, a syntax error, heartbeat timing and a "
        "graceful stop. Exit status 0 only if every check passes.",
    )
    p.add_argument("--connect", required=True, metavar="HOST:PORT", help="the server (loopback only)")
    p.add_argument("--app", required=True, metavar="FILE", help="the source file that holds --marker")
    p.add_argument("--marker", required=True, metavar="TEXT", help="text the server answers with, as in FILE")
    p.add_argument("--cmd", metavar="COMMAND", help="start the server with COMMAND (and stop it at the end)")
    p.add_argument(
        "--protocol",
        choices=("line", "http"),
        default="line",
        help="line: send 'hi\\n', read a line; http: GET / (default: line)",
    )
    p.add_argument("--edits", type=int, default=10, metavar="N", help="edits during reload (default: 10)")
    p.add_argument("--clients", type=int, default=6, metavar="N", help="clients asking without pause (default: 6)")
    p.add_argument("--broken", metavar="TEXT", help="a syntax error for the app (default for .py: an unclosed string)")
    p.add_argument("--idle", type=float, metavar="S", help="the idle time the server's heartbeat claims")
    p.add_argument("--interval", type=float, metavar="S", help="its check interval (default: idle/2)")
    p.add_argument(
        "--scenarios",
        default="reload,broken,heartbeat,stop",
        metavar="LIST",
        help="comma-separated subset of reload,broken,heartbeat,stop (default: all)",
    )
    p.add_argument("--json", metavar="FILE", help="write the report as JSON to FILE ('-': stdout, quiet)")
    p.add_argument("--plots", metavar="DIR", help="write reload and heartbeat plots (PNG) into DIR")
    p.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from lab.check.cli import main as check_main

    return check_main(args)


# --- entry point -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except LabError as exc:
        print(f"python -m lab {args.command}: {exc}", file=sys.stderr)
        return 2
