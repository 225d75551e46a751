"""The server's settings: one ``Config`` with the tutorial's ``$server->set([...])``.

Every value is checked when it is set, so a bad option fails at start-up with one clear line
instead of deep inside a worker.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from lab.debounce import DEFAULT_DEBOUNCE
from lab.errors import LabError
from lab.heartbeat import STRATEGIES
from lab.i18n import _

WEEK = 7 * 24 * 3600.0

# Every duration option's sane range in seconds, (least, most), checked at start-up. The ceiling
# stays far below the 2**31 ms (24.8 days) that a poll timeout or timer may span; the floors are
# what the loops can honour: a shorter heartbeat spins a worker, and a worker reports it is
# alive every worker_timeout / 4, which a loaded machine delays by far more than a millisecond.
SERVER_DURATIONS: dict[str, tuple[float, float]] = {
    "debounce": (0.0, 60.0),
    "graceful_timeout": (0.0, WEEK),
    "heartbeat_idle": (0.02, WEEK),  # its derived interval (idle / 2) stays in range
    "heartbeat_interval": (0.01, WEEK),
    "worker_timeout": (1.0, WEEK),
    "header_timeout": (0.1, WEEK),  # a week: in effect, no deadline
}
# The commands' own: how long ``stop`` and ``upgrade`` wait (a new master takes longer than a
# second to start), and the heartbeat ``check`` is told, which it watches for idle + interval + 2 s
# (an hour bounds the run and covers a server's usual idle time, Swoole's 600 s included).
DURATIONS = {**SERVER_DURATIONS, "timeout": (1.0, WEEK), "idle": (0.02, 3600.0), "interval": (0.01, 3600.0)}
OPTIONAL_DURATIONS = frozenset({"heartbeat_idle", "heartbeat_interval", "worker_timeout"})  # None: off

_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?$")


def parse_bind(bind: str) -> tuple[int, str, int]:
    """``"127.0.0.1:9000"``, ``"[::1]:9000"`` or ``"localhost:9000"`` -> (family, host, port)."""
    if not isinstance(bind, str):
        raise LabError(_("bind must be a string HOST:PORT, not {bind!r}").format(bind=bind))
    host, sep, port_text = bind.rpartition(":")
    if not sep or not host:
        raise LabError(_("bad bind {bind!r}: use HOST:PORT, e.g. 127.0.0.1:9000 or [::1]:9000").format(bind=bind))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise LabError(_("bad bind {bind!r}: put an IPv6 address in brackets, e.g. [::1]:9000").format(bind=bind))
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise LabError(
            _("bad port in bind {bind!r}: use a number from 0 to 65535 (0 = any free port)").format(bind=bind)
        )
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise LabError(
            _("bad host in bind {bind!r}: use an IP address such as 127.0.0.1 or [::1]").format(bind=bind)
        ) from None
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return family, str(address), int(port_text)


def format_bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Config:
    """What ``python -m lab serve`` is told; field names follow the tutorial and Swoole."""

    target: str = ""
    app_dir: str = "."
    bind: str = "127.0.0.1:9000"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    watch: list[str] = field(default_factory=list)
    types: tuple[str, ...] = (".py",)
    debounce: float = DEFAULT_DEBOUNCE
    graceful_timeout: float = 30.0
    pidfile: str | None = None
    events: str | None = None
    heartbeat_idle: float | None = None
    heartbeat_interval: float | None = None
    heartbeat_strategy: str | None = None
    backlog: int = 1024
    max_buffer: int = 1 << 20  # queued output above this: stop reading that client (backpressure)
    max_output: int = 64 << 20  # queued output above this: the app outran its client; close it
    buffer_budget: int = 16 << 20  # a worker's buffers above this: connections over their share wait
    worker_timeout: float | None = None  # a worker silent this long (stuck in app code) is replaced
    header_timeout: float = 10.0  # for apps: a request not whole this long after its first byte: 408
    preload: tuple[str, ...] = ()  # modules the master imports once, before any fork (not reloaded)

    def __post_init__(self) -> None:
        # Which heartbeat option was derived from the other (Swoole's defaults), so that changing
        # the given one derives it again instead of keeping a stale value.
        self._derived: str | None = None
        self._check()

    def set(self, **options: Any) -> Config:
        """Change options by name, like the tutorial's ``$server->set([...])``; returns self."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise LabError(
                _("unknown option(s) {unknown}; known: {known}").format(
                    unknown=", ".join(unknown), known=", ".join(sorted(names))
                )
            )
        previous, derived = dataclasses.asdict(self), self._derived
        given = {"heartbeat_idle", "heartbeat_interval"} & set(options)
        if given and self._derived in given:
            self._derived = None  # given now
        elif given and self._derived is not None:
            options = {**options, self._derived: None}  # derive it again from the new value
        for name, value in options.items():
            setattr(self, name, value)
        try:
            self._check()
        except LabError:
            for name, value in previous.items():
                setattr(self, name, value)
            self._derived = derived
            raise
        return self

    @property
    def address(self) -> tuple[int, str, int]:
        return parse_bind(self.bind)

    def _check(self) -> None:
        if self.target and not _TARGET.match(self.target):
            raise LabError(
                _("bad target {target!r}: use module or module:attribute, e.g. hello or hello:app").format(
                    target=self.target
                )
            )
        parse_bind(self.bind)
        self._check_preload()
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or not 1 <= self.workers <= 256:
            raise LabError(_("workers must be an integer from 1 to 256, not {workers!r}").format(workers=self.workers))
        if isinstance(self.watch, (str, os.PathLike)):
            self.watch = [os.fspath(self.watch)]
        self.watch = [os.fspath(p) for p in self.watch]
        if isinstance(self.types, str):
            self.types = (self.types,)  # one suffix, not its letters
        self.types = tuple(t if t.startswith(".") else "." + t for t in self.types)
        self._check_durations()
        for name in ("backlog", "max_buffer", "max_output", "buffer_budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LabError(_("{name} must be a positive integer, not {value!r}").format(name=name, value=value))
        if self.max_output < self.max_buffer:
            raise LabError(
                _("max_output ({max_output}) must be >= max_buffer ({max_buffer})").format(
                    max_output=self.max_output, max_buffer=self.max_buffer
                )
            )
        # Swoole's defaults when only one is given: idle = 2 x interval, interval = idle / 2.
        if self.heartbeat_idle is None and self.heartbeat_interval is not None:
            self.heartbeat_idle, self._derived = 2 * self.heartbeat_interval, "heartbeat_idle"
        elif self.heartbeat_interval is None and self.heartbeat_idle is not None:
            self.heartbeat_interval, self._derived = self.heartbeat_idle / 2, "heartbeat_interval"
        elif self.heartbeat_idle is None:
            self._derived = None
        self._check_durations()  # a derived value too (2 x interval may pass the ceiling)
        if self.heartbeat_strategy is not None and self.heartbeat_strategy not in STRATEGIES:
            raise LabError(
                _("unknown heartbeat strategy {heartbeat_strategy!r}; choose one of {choices}").format(
                    heartbeat_strategy=self.heartbeat_strategy, choices=", ".join(STRATEGIES)
                )
            )

    def _check_preload(self) -> None:
        """``preload`` as a tuple of module names (a comma-separated string is split)."""
        if isinstance(self.preload, str):
            self.preload = tuple(m.strip() for m in self.preload.split(",") if m.strip())
        self.preload = tuple(self.preload)
        for name in self.preload:
            if not isinstance(name, str) or not _MODULE.match(name):
                raise LabError(
                    _("bad preload module {name!r}: use module names, e.g. numpy,matplotlib.pyplot").format(name=name)
                )
        app_module = self.target.partition(":")[0]
        if app_module and app_module in self.preload:
            raise LabError(
                _(
                    "cannot preload the app {app_module!r} itself: the master never imports the app "
                    "(it could never be reloaded); preload what the app imports"
                ).format(app_module=app_module)
            )

    def _check_durations(self) -> None:
        for name in SERVER_DURATIONS:
            value = getattr(self, name)
            if value is not None or name not in OPTIONAL_DURATIONS:
                check_duration(name, value)


def check_duration(name: str, value: Any) -> None:
    """LabError unless ``value`` is in the sane range of the duration option ``name``."""
    least, most = DURATIONS[name]
    # ``not least <= value <= most`` is also true for nan.
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not least <= value <= most:
        off = _(" (leave it unset to turn it off)") if name in OPTIONAL_DURATIONS else ""
        raise LabError(
            _("{name} must be a number of seconds from {least:g} to {most:g}{off}, not {value!r}").format(
                name=name, least=least, most=most, off=off, value=value
            )
        )
