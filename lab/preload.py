"""``--preload``: heavy, unchanging modules imported once by the master, before any fork.

Every generation inherits them and imports only the app (gunicorn's ``--preload``). What an
import leaves behind that a fork would break is refused (a Python thread, the app itself) or said
(native threads, open fds). A refusal is a start-up error, in the learner's language; what is said
goes into a ``preload.warning`` event, English like every event's payload. ``--preload auto`` finds
the modules itself: what the app imports from outside its folder and the watched paths, seen by
importing the app once in a throwaway child.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

from lab.config import Config
from lab.errors import LabError, StoppedWhileStarting
from lab.fresh_imports import use_fresh_imports
from lab.i18n import _
from lab.supervisor import summarize_traceback

AUTO = "auto"  # ``--preload auto``: the modules are found by importing the app in a throwaway child
DISCOVERY_TIMEOUT = 60.0  # seconds the throwaway child may take to import the app

# Run by ``python -c`` in the throwaway child: import the app, then write as JSON, on a line of its
# own, every module it brought in (name, file) in the order they were first imported, the modules
# under import whenever a thread was started, and the import error if it failed (what was imported
# before the error still counts). The line goes to a private copy of fd 1 that nothing the app starts
# inherits (os.dup's fds are not inheritable); fd 1 itself, the app's prints and its children's
# output, goes where stderr goes (nowhere). os._exit: a thread the app left running does not hold it.
_DISCOVER = """\
import importlib, json, os, sys, threading
app_dir, target = sys.argv[1:]
out = os.dup(1)
os.dup2(2, 1)
sys.path.insert(0, app_dir)
starters, start = set(), threading.Thread.start
def recording_start(thread):
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>":
            starters.add(frame.f_globals.get("__name__"))
        frame = frame.f_back
    start(thread)
threading.Thread.start = recording_start
before = set(sys.modules)
try:
    importlib.import_module(target)
    error = None
except BaseException as exc:
    error = f"{type(exc).__name__}: {exc}"
found = [[name, getattr(module, "__file__", None)] for name, module in list(sys.modules.items()) if name not in before]
starters = sorted(name for name in starters if isinstance(name, str))
with os.fdopen(out, "w") as result:
    result.write(json.dumps({"modules": found, "starters": starters, "error": error}) + "\\n")
os._exit(0)
"""


@dataclass
class Preloaded:
    """What ``--preload`` imported into the master, to be inherited by every generation."""

    modules: tuple[str, ...] = ()
    files: set[str] = field(default_factory=set)  # the source files of every module it brought in
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # threads or fds the imports left behind


def _fd_targets() -> dict[int, str]:
    """This process's open fds and what each points at (a path, ``socket:[N]``, ``pipe:[N]``)."""
    targets = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            targets[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the fd of the listing itself, closed by now
    return targets


def discover(config: Config) -> tuple[tuple[str, ...], str | None]:
    """``--preload auto``: the modules the app imports from outside its folder and the watched
    paths (a framework, numpy...), found by importing it once in a throwaway child, and a warning
    if the app did not import there (None). The master itself still never imports the app."""
    target = config.target.partition(":")[0]
    child = subprocess.Popen(
        [sys.executable, "-c", _DISCOVER, os.path.abspath(config.app_dir), target],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its group: what the app started there ends with it
    )
    try:
        assert child.stdout is not None  # stdout=PIPE
        line = _first_line(child.stdout.fileno(), DISCOVERY_TIMEOUT)
    finally:
        _end_group(child)
    if line is None:
        raise LabError(
            _(
                "--preload auto: importing {target!r} in a throwaway child took over {seconds:g} s; "
                "name the modules to preload instead"
            ).format(target=target, seconds=DISCOVERY_TIMEOUT)
        )
    try:
        found = json.loads(line)
    except ValueError:  # it ended before the list: os._exit or a crash at import
        return (), f"--preload auto: the throwaway child that imports {target!r} ended without a list ({_ended(child)})"
    folders, files = _own_paths([config.app_dir, *config.watch])
    # Never listed: the app's packages, the app and the modules under import when a thread was
    # started, and their submodules (importing one imports them: the app, or the thread again).
    barred, parents = (target, *found["starters"]), _packages(target)
    modules = tuple(
        name
        for name, path in found["modules"]
        if path and name not in parents and not _within(name, barred) and not _is_own(path, folders, files)
    )
    error = found["error"]
    warning = None if error is None else f"--preload auto: the app did not import in the throwaway child ({error})"
    return modules, warning


def _first_line(fd: int, timeout: float) -> bytes | None:
    """The first line read from ``fd`` (what came before its end if none did), None if it took over
    ``timeout`` s. Never waits for the end of the pipe: a process the app started may hold it open."""
    deadline, data = time.monotonic() + timeout, b""
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not poll.poll(left * 1000):
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return data
        data += chunk
    return data.partition(b"\n")[0]


def _end_group(child: subprocess.Popen) -> None:
    """SIGKILL the throwaway child and every process left in its group, and reap them: the child,
    and those adopted by this process when it is a subreaper (the master is)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is gone already
        pass
    child.wait()  # first: the child's pid, the group's id, is not reused while its group lives
    if child.stdout is not None:
        child.stdout.close()
    while True:
        try:
            os.waitpid(-child.pid, 0)
        except ChildProcessError:
            return


def _ended(child: subprocess.Popen) -> str:
    """How the reaped ``child`` ended: ``exit status N`` or ``killed by SIGNAME``."""
    code = child.returncode
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def _own_paths(paths: list[str]) -> tuple[tuple[str, ...], frozenset[str]]:
    """The folders (as prefixes) and the files among ``paths``: the app's and the watched ones,
    each both as given (absolute) and resolved, so that a symlink on either side still matches."""
    folders, files = [], set()
    for path in paths:
        for form in {os.path.abspath(path), os.path.realpath(path)}:
            if os.path.isfile(form):
                files.add(form)
            else:
                folders.append(os.path.join(form, ""))
    return tuple(folders), frozenset(files)


def _is_own(path: str, folders: tuple[str, ...], files: frozenset[str]) -> bool:
    """True when the module file ``path``, as given or resolved, is one of ``files`` or lies in
    one of ``folders`` (prefixes)."""
    return any(form in files or form.startswith(folders) for form in (os.path.abspath(path), os.path.realpath(path)))


def _within(name: str, modules: tuple[str, ...]) -> bool:
    """True when module ``name`` is one of ``modules`` or a submodule of one (importing it imports them)."""
    return any(name == module or name.startswith(module + ".") for module in modules)


def _packages(name: str) -> set[str]:
    """The packages above module ``name``: ``a`` and ``a.b`` for ``a.b.c``."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def preload(config: Config) -> Preloaded:
    """Import ``config.preload`` in the master, before any fork (gunicorn's ``--preload``).

    Every worker inherits these modules: a generation imports only the app. LabError (one line)
    if one fails to import, starts a Python thread (a forked worker has none of the master's
    threads, and a lock one of them held stays locked in the child for good) or imports the app
    itself; native threads and fds it leaves open are warnings (every worker shares the fds).
    ``auto`` among them stands for what ``discover`` finds; only the modules that an earlier one
    did not already bring in are imported and reported.
    """
    if not config.preload:
        return Preloaded()
    warnings, names = [], [name for name in config.preload if name != AUTO]
    if AUTO in config.preload:
        found, warning = discover(config)
        names += found
        if warning:
            warnings.append(warning)
    app_dir = os.path.abspath(config.app_dir)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)  # a helper module next to the app may be preloaded too
    # The app's own modules are compiled from source, as in the workers: an edit of the same size
    # within the second of the last one must not be hidden by a stale .pyc when an upgrade loads it.
    use_fresh_imports()
    before, fds, tasks = set(sys.modules), _fd_targets(), len(os.listdir("/proc/self/task"))
    started, imported = time.perf_counter(), []
    for name in names:
        if name in sys.modules and name not in config.preload:
            continue  # found by auto, and already brought in by an earlier one
        try:
            importlib.import_module(name)
        except StoppedWhileStarting:
            raise  # a stop signal, not the module's failure
        except BaseException as exc:  # SystemExit and KeyboardInterrupt at import too: refused
            why = summarize_traceback(_import_traceback(exc))
            raise LabError(_("cannot preload {name!r}: {why}").format(name=name, why=why)) from None
        imported.append(name)
    report = Preloaded(tuple(imported), seconds=time.perf_counter() - started, warnings=warnings)
    _check_preloaded(config, report, tasks, fds)
    for name in set(sys.modules) - before:
        path = getattr(sys.modules[name], "__file__", None)
        if path:
            report.files.add(os.path.realpath(path))
    return report


def _import_traceback(exc: BaseException) -> str:
    """The traceback of a failed import without importlib's frames or this module's."""
    report = traceback.TracebackException.from_exception(exc)
    report.stack = traceback.StackSummary.from_list(
        [
            f
            for f in report.stack
            if f.filename not in (__file__, importlib.__file__) and not f.filename.startswith("<frozen importlib")
        ]
    )
    return "".join(report.format())


def _check_preloaded(config: Config, report: Preloaded, tasks: int, fds: dict[int, str]) -> None:
    """Refuse Python threads and the app imported by a preload; note native threads and fds."""
    names = ", ".join(report.modules) or AUTO
    python_threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if python_threads:
        raise LabError(
            _(
                "preloading {names} started Python thread(s) {threads}: a forked worker would have none "
                "of them (and any lock they hold stays locked); start threads in the app (on_start), not at import"
            ).format(names=names, threads=", ".join(python_threads))
        )
    app_module = config.target.partition(":")[0]
    if app_module in sys.modules:
        raise LabError(
            _(
                "preloading {names} imported the app {app_module!r} itself: the master never imports "
                "the app (it could never be reloaded); preload only what the app imports"
            ).format(names=names, app_module=app_module)
        )
    native = len(os.listdir("/proc/self/task")) - tasks
    if native > 0:
        report.warnings.append(
            f"{native} native thread(s) started at import (e.g. a BLAS pool that "
            "restarts itself after fork): the workers do not inherit them"
        )
    opened = {fd: target for fd, target in _fd_targets().items() if fds.get(fd) != target}
    if opened:
        shown = ", ".join(f"{fd} -> {target}" for fd, target in sorted(opened.items())[:5])
        report.warnings.append(
            f"{len(opened)} fd(s) left open at import ({shown}): every worker shares "
            "them (one file offset, one socket); open them in the app instead"
        )
