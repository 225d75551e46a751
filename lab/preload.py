"""``--preload``: heavy, unchanging modules imported once by the master, before any fork.

Every generation inherits them and imports only the app (gunicorn's ``--preload``). What an
import leaves behind that a fork would break is refused (a Python thread, the app itself) or said
(native threads, open fds). A refusal is a start-up error, in the learner's language; what is said
goes into a ``preload.warning`` event, English like every event's payload.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

from lab.config import Config
from lab.errors import LabError
from lab.fresh_imports import use_fresh_imports
from lab.i18n import _
from lab.supervisor import summarize_traceback


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


def preload(config: Config) -> Preloaded:
    """Import ``config.preload`` in the master, before any fork (gunicorn's ``--preload``).

    Every worker inherits these modules: a generation imports only the app. LabError (one line)
    if one fails to import, starts a Python thread (a forked worker has none of the master's
    threads, and a lock one of them held stays locked in the child for good) or imports the app
    itself; native threads and fds it leaves open are warnings (every worker shares the fds).
    """
    if not config.preload:
        return Preloaded()
    app_dir = os.path.abspath(config.app_dir)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)  # a helper module next to the app may be preloaded too
    # The app's own modules are compiled from source, as in the workers: an edit of the same size
    # within the second of the last one must not be hidden by a stale .pyc when an upgrade loads it.
    use_fresh_imports()
    before, fds, tasks = set(sys.modules), _fd_targets(), len(os.listdir("/proc/self/task"))
    started = time.perf_counter()
    for name in config.preload:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt at import too: refused
            why = summarize_traceback(_import_traceback(exc))
            raise LabError(_("cannot preload {name!r}: {why}").format(name=name, why=why)) from None
    report = Preloaded(config.preload, seconds=time.perf_counter() - started)
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
    names = ", ".join(config.preload)
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
