"""reactor-lab: hot reload (inotify + a prefork reactor server) and heartbeat detection, for real.

``Watcher`` and ``Change`` are loaded on first use (PEP 562): importing a lower layer such as
``lab.config`` must not load the watcher's ``inotify_simple`` and ``ctypes``.
"""

from __future__ import annotations

import importlib
from typing import Any

from lab.errors import LabError

__all__ = ["Change", "LabError", "Watcher"]
__version__ = "0.1.0"

_LAZY = {"Change": "lab.debounce", "Watcher": "lab.watcher"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
