"""A copy of the lab package to run instead of ours (``PYTHONPATH=<into>``): for runs that need
it where ours cannot be read, or with an edited example app, without touching the checkout."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import lab


def copy_lab(into: Path, greeting: str | None = None) -> Path:
    """Copy ``lab/`` into ``into``; with ``greeting``, its examples/hello.py answers that instead
    (as after a reader's edit). Returns the copy's package directory."""
    package = into / "lab"
    shutil.copytree(Path(lab.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    if greeting is not None:
        hello = package / "examples" / "hello.py"
        source, n = re.subn(r'(?m)^    text = ".*"$', f"    text = {greeting!r}", hello.read_text())
        assert n == 1, "Greeting.text's line has changed: update this helper"
        hello.write_text(source)
    return package
