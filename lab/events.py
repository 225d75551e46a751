"""The event stream: one JSON object a line, timed on CLOCK_MONOTONIC.

Master, workers and a notebook share one clock (``time.monotonic()``), so their events can be
drawn on one time axis. Each line is written with a single ``write`` of at most ``PIPE_BUF``
bytes on an ``O_APPEND`` file, so lines from different processes never interleave.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

LINE_MAX = select.PIPE_BUF  # 4096 on Linux

# A reload's phases in order, as ``reload.done`` carries them (``phases``: monotonic times), each
# with what happens between the previous phase and it. One definition for every view of a reload.
RELOAD_PHASES: dict[str, str] = {
    "seen": "the change is seen (inotify + debounce)",
    "forked": "fork new workers",
    "ready": "new workers import the app",
    "serving": "old workers stop accepting",
    "old_gone": "old workers drain and exit",
}


def record(kind: str, **fields: Any) -> dict[str, Any]:
    """An event as a dict: ``t`` (monotonic seconds), ``kind``, ``pid`` and the given fields."""
    return {"t": time.monotonic(), "kind": kind, "pid": os.getpid(), **fields}


def encode(event: dict[str, Any]) -> bytes:
    """One JSON line of at most ``LINE_MAX`` bytes; the longest string fields are cut to fit."""
    line = json.dumps(event, separators=(",", ":"), default=str) + "\n"
    data = line.encode()
    if len(data) <= LINE_MAX:
        return data
    event = dict(event)
    while len(data) > LINE_MAX:
        strings = [k for k, v in event.items() if isinstance(v, str) and len(v) > 64]
        if not strings:
            event = {k: event[k] for k in ("t", "kind", "pid") if k in event} | {"truncated": True}
            return (json.dumps(event) + "\n").encode()
        key = max(strings, key=lambda k: len(event[k]))
        excess = len(data) - LINE_MAX + 32
        value = event[key]
        # Keep the end: the last lines of a traceback say what went wrong.
        event[key] = "…" + value[max(excess, len(value) // 2):]
        event["truncated"] = True
        data = (json.dumps(event, separators=(",", ":"), default=str) + "\n").encode()
    return data


class EventSink:
    """Appends events to a file (or nowhere), and optionally echoes a readable line to a stream.

    A failing write (a full disk, say) never stops the caller: it is reported once on ``echo``
    (or stderr) and the sink keeps trying, so events flow again when space is back.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, echo: TextIO | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.echo = echo
        self.failing = False
        self._fd = -1
        if self.path is not None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o600)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one event and return it."""
        event = record(kind, **fields)
        if self._fd >= 0:
            self._write(encode(event))
        if self.echo is not None:
            self._print(event)
        return event

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except OSError as exc:
            if not self.failing:
                self.failing = True
                print(f"reactor-lab: cannot write events to {self.path}: {exc.strerror}; "
                      "serving on without them", file=self.echo or sys.stderr, flush=True)
        else:
            self.failing = False

    def _print(self, event: dict[str, Any]) -> None:
        extra = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("t", "kind", "pid"))
        try:
            print(f"[{event['t']:.3f}] {event['pid']} {event['kind']} {extra}".rstrip(),
                  file=self.echo, flush=True)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> EventSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventTail:
    """Reads the events appended to a file since the last call (the file may not exist yet)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        """The complete new lines, parsed; a line still being written waits for the next call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            if line.strip():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.read())


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All events of a file."""
    return EventTail(path).read()
