"""Imports that never trust a ``.pyc``: what a reload or an upgrade loads is what is on disk now."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
from typing import Any

_installed = False  # the hook is in place in this process (a forked worker inherits it)


class FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles from the source every time: never trusts a ``.pyc``.

    Python's ``.pyc`` check compares the source's mtime (whole seconds) and size, so two edits of
    the same size within one second would load the stale first version. App code is small, so
    compiling it on each (re)load costs little and is always right.
    """

    def get_code(self, fullname: str):
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


def use_fresh_imports() -> None:
    """Code outside the interpreter's own trees (the app, the lab, a preloaded module of the app's)
    is compiled from source from now on; once per process (a worker inherits its master's hook)."""
    global _installed
    if _installed:
        return
    _installed = True
    sys.dont_write_bytecode = True  # and no .pyc is written inside a watched tree
    installed = tuple({os.path.join(p, "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    default_hook = importlib.machinery.FileFinder.path_hook((FreshSourceLoader, importlib.machinery.SOURCE_SUFFIXES))

    def fresh_hook(path: str) -> Any:
        if os.path.join(os.path.abspath(path or "."), "").startswith(installed):
            raise ImportError("installed code: the default finder handles it")
        return default_hook(path)

    sys.path_hooks.insert(0, fresh_hook)
    for path in list(sys.path_importer_cache):
        if not os.path.join(os.path.abspath(path or "."), "").startswith(installed):
            del sys.path_importer_cache[path]
    importlib.invalidate_caches()
