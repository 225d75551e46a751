"""The package's layering: importing a lower layer does not load the ones above it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize(
    "module",
    ["lab", "lab.config", "lab.debounce", "lab.errors", "lab.watch_filter", "lab.watch_index", "lab.watch_interpreter"],
)
def test_importing_a_lower_layer_loads_no_inotify(module: str):
    """The watcher's pure parts (filter, index, interpreter) are such a layer too."""
    assert _loaded_after(f"import {module}", ("inotify_simple", "ctypes", "lab.watcher")) == []


def test_the_watcher_is_still_one_attribute_away():
    code = (
        "import lab\nfrom lab import Change, LabError, Watcher\n"
        "from lab.watcher import Watcher as W\n"
        "assert lab.Watcher is Watcher is W and 'Watcher' in dir(lab)\n"
        "try:\n    lab.no_such_name\nexcept AttributeError:\n    pass\n"
        "else:\n    raise SystemExit('no AttributeError')"
    )
    assert _loaded_after(code, ("inotify_simple",)) == ["inotify_simple"]
