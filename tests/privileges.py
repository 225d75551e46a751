"""Refusals a test needs while running as root: code run as user ``nobody``, or as root of a new
user namespace (whose inotify limits are its own)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lab_copy import copy_lab


def python_for_nobody(into: Path) -> tuple[str, dict[str, str]]:
    """An interpreter ``nobody`` may run and an environment that imports lab and inotify_simple
    (both pure Python) from copies made in ``into``: ours may sit where nobody may not enter (a
    0700 home, a ``mktemp -d``). ``into`` must be a directory nobody may enter."""
    import inotify_simple

    if os.geteuid() != 0:
        pytest.skip("running code as user nobody needs root")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    python = shutil.which(version, path="/usr/local/bin:/usr/bin")
    if python is None:
        pytest.skip(f"no system {version} that user nobody may run")
    lib = into / "pylib"
    copy_lab(lib)
    shutil.copy(inotify_simple.__file__, lib)
    for path in (lib, *lib.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return python, {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(lib)}


@functools.cache
def user_namespace_refusal() -> str | None:
    """Why this machine refuses ``unshare --user --map-root-user`` (a chroot, Docker's default
    seccomp profile, user namespaces switched off), or None when it allows it."""
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"user namespaces are refused here: {probe.stderr.strip() or f'exit {probe.returncode}'}"
    return None


def skip_without_user_namespaces() -> None:
    if (reason := user_namespace_refusal()) is not None:
        pytest.skip(reason)
