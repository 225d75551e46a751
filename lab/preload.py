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

# Run by ``python -c`` in the throwaway child: import the app (its prints go to stderr), then print
# as JSON the modules it brought in whose files lie outside argv's folders, in the order they were
# first imported, and the import error if it failed (what was imported before the error still counts).
_DISCOVER = """\
import importlib, json, os, sys
app_dir, target, *own = sys.argv[1:]
sys.path.insert(0, app_dir)
before, out, sys.stdout = set(sys.modules), sys.stdout, sys.stderr
try:
    importlib.import_module(target)
    error = None
except BaseException as exc:
    error = f"{type(exc).__name__}: {exc}"
own = tuple(os.path.join(os.path.realpath(d), "") for d in own)
found = [
    name for name, module in list(sys.modules.items())
    if name not in before and getattr(module, "__file__", None)
    and not os.path.realpath(module.__file__).startswith(own)
]
print(json.dumps({"modules": found, "error": error}), file=out)
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
    paths (a framework, numpy...), found by importing it once in a throwaway child, and the app's
    import error there if any (None). The master itself still never imports the app."""
    target = config.target.partition(":")[0]
    own = [config.app_dir, *config.watch]
    try:
        child = subprocess.run(
            [sys.executable, "-c", _DISCOVER, os.path.abspath(config.app_dir), target, *own],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            timeout=DISCOVERY_TIMEOUT,
            check=False,
        )
        found = json.loads(child.stdout.decode().strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        raise LabError(
            _(
                "--preload auto: importing {target!r} in a throwaway child took over {seconds:g} s; "
                "name the modules to preload instead"
            ).format(target=target, seconds=DISCOVERY_TIMEOUT)
        ) from None
    except (ValueError, IndexError):
        raise LabError(
            _("--preload auto: the throwaway child that imports {target!r} ended without a list").format(target=target)
        ) from None
    return tuple(found["modules"]), found["error"]


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
        found, error = discover(config)
        names += found
        if error:
            warnings.append(f"--preload auto: the app did not import in the throwaway child ({error})")
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
