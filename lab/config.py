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

from lab.errors import LabError
from lab.heartbeat import STRATEGIES

_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?$")


def parse_bind(bind: str) -> tuple[int, str, int]:
    """``"127.0.0.1:9000"``, ``"[::1]:9000"`` or ``"localhost:9000"`` -> (family, host, port)."""
    if not isinstance(bind, str):
        raise LabError(f"bind must be a string HOST:PORT, not {bind!r}")
    host, sep, port_text = bind.rpartition(":")
    if not sep or not host:
        raise LabError(f"bad bind {bind!r}: use HOST:PORT, e.g. 127.0.0.1:9000 or [::1]:9000")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise LabError(f"bad bind {bind!r}: put an IPv6 address in brackets, e.g. [::1]:9000")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise LabError(f"bad port in bind {bind!r}: use a number from 0 to 65535 (0 = any free port)")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise LabError(f"bad host in bind {bind!r}: use an IP address such as 127.0.0.1 or [::1]") from None
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
    # Short: a reload that catches a half-written file is refused (or followed at once by the
    # reload of the rest of the write), never served broken, so waiting longer buys nothing.
    debounce: float = 0.01
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
    header_timeout: float | None = 10.0  # for apps: a request not whole this long after its first byte: 408

    def __post_init__(self) -> None:
        self._check()

    def set(self, **options: Any) -> Config:
        """Change options by name, like the tutorial's ``$server->set([...])``; returns self."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise LabError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        previous = dataclasses.asdict(self)
        for name, value in options.items():
            setattr(self, name, value)
        try:
            self._check()
        except LabError:
            for name, value in previous.items():
                setattr(self, name, value)
            raise
        return self

    @property
    def address(self) -> tuple[int, str, int]:
        return parse_bind(self.bind)

    def _check(self) -> None:
        if self.target and not _TARGET.match(self.target):
            raise LabError(f"bad target {self.target!r}: use module or module:attribute, e.g. hello or hello:app")
        parse_bind(self.bind)
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or not 1 <= self.workers <= 256:
            raise LabError(f"workers must be an integer from 1 to 256, not {self.workers!r}")
        if isinstance(self.watch, (str, os.PathLike)):
            self.watch = [os.fspath(self.watch)]
        self.watch = [os.fspath(p) for p in self.watch]
        self.types = tuple(t if t.startswith(".") else "." + t for t in self.types)
        for name in ("debounce", "graceful_timeout"):
            _non_negative(name, getattr(self, name))
        for name in ("backlog", "max_buffer", "max_output", "buffer_budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LabError(f"{name} must be a positive integer, not {value!r}")
        if self.max_output < self.max_buffer:
            raise LabError(f"max_output ({self.max_output}) must be >= max_buffer ({self.max_buffer})")
        for name in ("heartbeat_idle", "heartbeat_interval", "worker_timeout", "header_timeout"):
            value = getattr(self, name)
            if value is not None:
                _non_negative(name, value)
                if value == 0:
                    raise LabError(f"{name} must be > 0 (leave it unset to turn it off)")
        # Swoole's defaults when only one is given: idle = 2 x interval, interval = idle / 2.
        if self.heartbeat_idle is None and self.heartbeat_interval is not None:
            self.heartbeat_idle = 2 * self.heartbeat_interval
        elif self.heartbeat_interval is None and self.heartbeat_idle is not None:
            self.heartbeat_interval = self.heartbeat_idle / 2
        if self.heartbeat_strategy is not None and self.heartbeat_strategy not in STRATEGIES:
            raise LabError(f"unknown heartbeat strategy {self.heartbeat_strategy!r}; "
                           f"choose one of {', '.join(STRATEGIES)}")


def _non_negative(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value or value < 0:
        raise LabError(f"{name} must be a number >= 0 seconds, not {value!r}")
