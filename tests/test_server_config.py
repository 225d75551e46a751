"""Config (the tutorial's ``$server->set([...])``) and the pid file, without a server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from lab.config import Config, parse_bind
from lab.errors import LabError
from lab.pidfile import PidFile, is_alive, is_lab_server, read_pid


def test_defaults_are_loopback_and_one_worker_per_cpu():
    config = Config(target="hello")
    assert config.bind == "127.0.0.1:9000"
    assert config.workers == os.cpu_count()
    assert config.heartbeat_idle is None and config.heartbeat_interval is None


@pytest.mark.parametrize(
    "bind, expected",
    [
        ("127.0.0.1:9000", (socket.AF_INET, "127.0.0.1", 9000)),
        ("[::1]:0", (socket.AF_INET6, "::1", 0)),
        ("localhost:8080", (socket.AF_INET, "127.0.0.1", 8080)),
    ],
)
def test_binds(bind, expected):
    assert parse_bind(bind) == expected


@pytest.mark.parametrize(
    "bind, message",
    [
        ("9000", "HOST:PORT"),
        ("127.0.0.1:", "bad port"),
        ("127.0.0.1:70000", "bad port"),
        ("::1:9000", "brackets"),
        ("example.com:80", "bad host"),
        ("127.0.0.1:-1", "bad port"),
    ],
)
def test_bad_binds_say_what_to_do(bind, message):
    with pytest.raises(LabError, match=message):
        Config(target="hello", bind=bind)


def test_swoole_heartbeat_defaults():
    assert Config(heartbeat_interval=2).heartbeat_idle == 4
    assert Config(heartbeat_idle=10).heartbeat_interval == 5
    both = Config(heartbeat_idle=10, heartbeat_interval=1)
    assert (both.heartbeat_idle, both.heartbeat_interval) == (10, 1)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"workers": 0}, "workers"),
        ({"workers": "2"}, "workers"),
        ({"debounce": -0.1}, "debounce"),
        ({"graceful_timeout": float("nan")}, "graceful_timeout"),
        ({"heartbeat_idle": 0}, "heartbeat_idle"),
        ({"backlog": 0}, "backlog"),
        ({"max_buffer": -5}, "max_buffer"),
        ({"target": "a b"}, "bad target"),
        ({"heartbeat_strategy": "nope"}, "strategy"),
        ({"nonsense": 1}, "unknown option"),
    ],
)
def test_set_rejects_bad_values_and_keeps_the_old_ones(options, message):
    config = Config(target="hello", workers=3)
    with pytest.raises(LabError, match=message):
        config.set(**options)
    assert config.workers == 3 and config.target == "hello"


def test_set_changes_options_like_the_tutorial():
    config = Config(target="hello").set(watch="src", types=("py", ".txt"), workers=2)
    assert config.watch == ["src"] and config.types == (".py", ".txt") and config.workers == 2


def test_pid_file_create_refuse_and_remove(tmp_path):
    path = tmp_path / "s.pid"
    pidfile = PidFile(str(path))
    pidfile.create()
    assert read_pid(str(path)) == os.getpid()
    assert path.stat().st_mode & 0o133 == 0, "0o644 or stricter"
    pidfile.remove()
    assert not path.exists()


def test_a_stale_pid_file_is_replaced_and_a_symlink_refused(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / "s.pid"
    path.write_text(done.stdout)
    assert not is_alive(int(done.stdout))
    PidFile(str(path)).create()
    assert read_pid(str(path)) == os.getpid()
    link = tmp_path / "link.pid"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LabError, match="symlink"):
        PidFile(str(link)).create()
    assert not (tmp_path / "elsewhere").exists()


def test_a_pid_of_another_program_is_not_a_lab_server(tmp_path):
    assert not is_lab_server(os.getpid())  # pytest is not a lab server
    (tmp_path / "junk.pid").write_text("hello\n")
    with pytest.raises(LabError, match="not a pid"):
        read_pid(str(tmp_path / "junk.pid"))
    with pytest.raises(LabError, match="no pid file"):
        read_pid(str(tmp_path / "missing.pid"))
