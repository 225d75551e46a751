"""The event stream: one JSON object a line, timed on CLOCK_MONOTONIC.

Master, workers and a notebook share one clock (``time.monotonic()``), so their events can be
drawn on one time axis. Each line is written with a single ``write`` of at most ``PIPE_BUF``
bytes on an ``O_APPEND`` file, so lines from different processes never interleave.

A line torn by a full disk (a short write) must not take the next event with it: a sink whose
file does not end in a newline when it opens, or whose last write was cut short, starts its next
line with one; the reader skips what cannot be parsed and finds an event glued to a torn line.
"""

from __future__ import annotations

import errno
import json
import os
import select
import stat
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from lab.errors import LabError, translated
from lab.i18n import N_
from lab.vocabulary import PHASE_BY_KEY, RELOAD_PHASES, Kind, Phase

LINE_MAX = select.PIPE_BUF  # 4096 on Linux
Event = dict[str, Any]  # one decoded line: {"t": ..., "kind": ..., "pid": ..., and the kind's fields}
__all__ = [
    "PHASE_BY_KEY",
    "RELOAD_PHASES",
    "Kind",
    "Phase",
    "Event",
    "EventSink",
    "EventTail",
    "matches",
    "record",
    "read_events",
]


def matches(event: Event, kind: str, match: Event) -> bool:
    """True when ``event`` is of ``kind`` and has every field of ``match`` equal."""
    return event.get("kind") == kind and all(event.get(k) == v for k, v in match.items())


def record(kind: str, **fields: Any) -> Event:
    """An event as a dict: ``t`` (monotonic seconds), ``kind``, ``pid`` and the given fields."""
    return {"t": time.monotonic(), "kind": kind, "pid": os.getpid(), **fields}


def encode(event: Event) -> bytes:
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
            return (json.dumps(event, separators=(",", ":")) + "\n").encode()
        key = max(strings, key=lambda k: len(event[k]))
        excess = len(data) - LINE_MAX + 32
        value = event[key]
        # Keep the end: the last lines of a traceback say what went wrong.
        event[key] = "…" + value[max(excess, len(value) // 2) :]
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
        self._torn = False  # the file does not end in a newline: start the next line with one
        if self.path is not None:
            self._fd, self._torn = _open_events(self.path)

    def emit(self, kind: str, **fields: Any) -> Event:
        """Write one event and return it."""
        event = record(kind, **fields)
        if self._fd >= 0:
            self._write(encode(event))
        if self.echo is not None:
            self._print(event)
        return event

    def _write(self, data: bytes) -> None:
        if self._torn:
            data = b"\n" + data
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            if not self.failing:
                self.failing = True
                print(
                    f"reactor-lab: cannot write events to {self.path}: {exc.strerror}; serving on without them",
                    file=self.echo or sys.stderr,
                    flush=True,
                )
        else:
            self.failing = False
            # Short (the disk filled up): the line is torn; otherwise it ends the line.
            self._torn = written < len(data)

    def _print(self, event: Event) -> None:
        if self.echo is None:
            return
        extra = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("t", "kind", "pid"))
        line = f"[{event['t']:.3f}] {event['pid']} {event['kind']} {extra}".rstrip() + "\n"
        try:  # one write of the whole line: workers echo to the same stream, and print() writes its end apart
            self.echo.write(line)
            self.echo.flush()
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

    def read(self) -> list[Event]:
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
        return [event for line in lines if line.strip() and (event := parse_line(line)) is not None]

    def __iter__(self) -> Iterator[Event]:
        return iter(self.read())


def _open_events(path: str) -> tuple[int, bool]:
    """(fd, torn) of the events file opened for appending; torn: it does not end in a newline.

    Without following a link, and without blocking: a FIFO nobody reads would hang the open.
    A FIFO or a directory is refused: events go to a file that a notebook can read back.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:  # ENXIO: a FIFO with no reader; EISDIR: a directory
        if exc.errno in (errno.ENXIO, errno.EISDIR):
            _refuse_odd(path, os.stat(path).st_mode)
        raise
    st = os.fstat(fd)
    try:
        _refuse_odd(path, st.st_mode)
    except LabError:
        os.close(fd)
        raise
    os.set_blocking(fd, True)  # appends to a regular file wait for the disk, as before
    return fd, stat.S_ISREG(st.st_mode) and st.st_size > 0 and _last_byte(path, st.st_size) != b"\n"


def _refuse_odd(path: str, mode: int) -> None:
    for test, text in (
        (stat.S_ISFIFO, N_("the events file {path} is a FIFO: give a path for a regular file")),
        (stat.S_ISDIR, N_("the events file {path} is a directory: give a path for a regular file")),
    ):
        if test(mode):
            raise translated(text, path=path)


def _last_byte(path: str, size: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b"\n"  # unreadable (a write-only file): assume it ends well
    try:
        return os.pread(fd, 1, size - 1)
    finally:
        os.close(fd)


def parse_line(line: bytes) -> Event | None:
    """The event of one line, or None. A line torn by a full disk may have the next event glued
    to it: every line starts with ``{"t":``, which no JSON string holds unescaped, so try there."""
    start = 0
    while start >= 0:
        try:
            event = json.loads(line[start:])
        except ValueError:
            start = line.find(b'{"t":', start + 1)
            continue
        return event if isinstance(event, dict) else None
    return None


def read_events(path: str | os.PathLike[str]) -> list[Event]:
    """All events of a file."""
    return EventTail(path).read()
