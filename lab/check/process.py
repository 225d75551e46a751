"""The server under check as a process (``--cmd``) and the app file the checker edits.

The server runs in its own session, so every process it starts is found by session id, however
it forks; whatever of it outlives the check is killed (they are all processes the checker started).
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from lab.check.verdicts import Edit
from lab.errors import LabError
from lab.i18n import _

GONE_AFTER_EXIT = 1.0  # how long the server's other processes get to follow it out


class AppFile:
    """The ``--app`` file: writes fresh tokens (or a broken version) and restores the original.

    Tokens are numbered: 0 is the marker, then one per edit; ``identify`` maps an answer to one.
    """

    def __init__(self, path: str | Path, marker: str):
        self.path = Path(path)
        try:
            self.original = self.path.read_bytes()
            text = self.original.decode()
        except (OSError, UnicodeDecodeError) as exc:
            raise LabError(_("--app {path}: cannot read it as UTF-8 text ({exc})").format(path=path, exc=exc)) from None
        if not os.access(self.path, os.W_OK):
            raise LabError(_("--app {path}: not writable, the check edits it (and puts it back)").format(path=path))
        if not marker or marker not in text:
            raise LabError(
                _(
                    "--app {path}: the marker {marker!r} is not in this file (give the text your server "
                    "answers with, as written in the file)"
                ).format(path=path, marker=marker)
            )
        self.text, self.tokens = text, [marker]

    @property
    def current(self) -> int:
        return len(self.tokens) - 1

    def identify(self, answer: str) -> int | None:
        """The newest token the answer contains, or ``None``."""
        return next((i for i in range(len(self.tokens) - 1, -1, -1) if self.tokens[i] in answer), None)

    def edit(self) -> Edit:
        """Write the app with a fresh token in place of the marker; the token is known before the write."""
        token = f"ck{len(self.tokens)}x{secrets.token_hex(4)}"
        self.tokens.append(token)
        written = time.monotonic()
        self._write(self.text.replace(self.tokens[0], token).encode())
        return Edit(self.current, written)

    def write_broken(self, broken: str) -> float:
        """Append ``broken`` to the current good version; returns when it was written."""
        written = time.monotonic()
        good = self.text.replace(self.tokens[0], self.tokens[-1])
        self._write((good.rstrip("\n") + "\n" + broken + "\n").encode())
        return written

    def restore(self) -> None:
        if self.path.read_bytes() != self.original:
            self._write(self.original)

    def _write(self, data: bytes) -> None:
        # In place, as an editor that saves over the file does: same inode, same permissions.
        with open(self.path, "r+b") as f:
            f.truncate(0)
            f.write(data)


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes whose session id is ``sid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry))
    return sorted(pids)


class Server:
    """``--cmd`` run in a new session, its output captured in a temporary file."""

    def __init__(self, cmd: str):
        argv = shlex.split(cmd)
        if not argv:
            raise LabError(_("--cmd is empty"))
        self.log = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError as exc:
            self.log.close()
            raise LabError(
                _("--cmd {cmd!r}: {reason}: {program}").format(cmd=cmd, reason=exc.strerror, program=argv[0])
            ) from None

    def output_tail(self, lines: int = 3) -> str:
        self.log.seek(0)
        text = self.log.read().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def stop(self, timeout: float) -> dict[str, Any]:
        """SIGTERM, wait ``timeout`` s; the ``stop`` section: graceful?, how long, who is left."""
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        exit_s = time.monotonic() - start
        deadline = time.monotonic() + GONE_AFTER_EXIT
        while (left := session_pids(self.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        left = [pid for pid in left if pid != self.proc.pid]
        self.kill()
        return {"graceful": code is not None, "exit_s": round(exit_s, 3), "exit_code": code, "left_behind": left}

    def kill(self) -> None:
        """SIGKILL the server and every process of its session; reap it; close the log."""
        for pid in session_pids(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()
