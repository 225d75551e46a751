"""Config's ranges and derived values: what used to pass the checks and break a server later."""

from __future__ import annotations

import inspect
import math

import pytest
from server_helpers import run_cli, write_app

from lab.cli import build_parser
from lab.config import DURATIONS, Config, parse_bind
from lab.debounce import DEFAULT_DEBOUNCE
from lab.errors import LabError
from lab.playground import Lab
from lab.watcher import Watcher

# Each of these passed Config once, then crashed, spun or kill-looped a server.
BROKEN = [
    ("graceful_timeout", math.inf),
    ("graceful_timeout", 3e6),
    ("heartbeat_idle", 5e6),
    ("heartbeat_idle", 1e308),
    ("heartbeat_idle", 1e-300),
    ("heartbeat_idle", math.inf),
    ("heartbeat_interval", 1e-300),
    ("worker_timeout", math.inf),
    ("worker_timeout", 0.001),
    ("worker_timeout", 1e-300),
    ("debounce", math.inf),
    ("debounce", math.nan),
    ("heartbeat_idle", math.nan),
    ("worker_timeout", math.nan),
]


@pytest.mark.parametrize("name, value", BROKEN)
def test_every_duration_has_a_sane_range(name, value):
    with pytest.raises(LabError, match=f"{name} must be a number of seconds from"):
        Config(target="hello", **{name: value})
    least, most = DURATIONS[name]
    for edge in (least, most):
        given = {"heartbeat_idle": most} if name == "heartbeat_interval" else {}  # not 2 x most
        assert getattr(Config(target="hello", **{**given, name: edge}), name) == edge


def test_a_derived_heartbeat_value_is_checked_too():
    with pytest.raises(LabError, match="heartbeat_idle"):
        Config(heartbeat_interval=DURATIONS["heartbeat_interval"][1])


@pytest.mark.parametrize(
    "option, value",
    [
        ("--graceful-timeout", "inf"),
        ("--heartbeat-idle", "1e-300"),
        ("--worker-timeout", "0.001"),
        ("--heartbeat-idle", "nan"),
    ],
)
def test_the_command_line_says_it_in_one_line_at_start(tmp_path, option, value):
    write_app(tmp_path, "v1")
    result = run_cli(
        "serve", "app", "--app-dir", str(tmp_path), "--bind", "127.0.0.1:0", "--workers", "1", option, value, timeout=60
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "must be a number of seconds" in lines[0], result.stderr


def test_a_lab_says_it_before_it_makes_anything(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where its scratch directory would go
    with pytest.raises(LabError, match="heartbeat_idle must be"):
        Lab(heartbeat_idle=1e-300)
    assert not list(tmp_path.iterdir()), "no scratch directory"


@pytest.mark.parametrize("port", ["٩٠٠٠", "９０００", "9\u0660"])
def test_a_port_is_ascii_digits_only(port):
    with pytest.raises(LabError, match="bad port"):
        parse_bind(f"127.0.0.1:{port}")


def test_types_given_as_one_string_is_one_suffix():
    assert Config(types=".py").types == (".py",)
    assert Config(types="txt").types == (".txt",)
    assert Config().set(types=".md").types == (".md",)


def test_a_derived_heartbeat_value_follows_the_given_one():
    config = Config(heartbeat_idle=10).set(heartbeat_idle=1)
    assert (config.heartbeat_idle, config.heartbeat_interval) == (1, 0.5)
    config = Config(heartbeat_interval=2).set(heartbeat_interval=1)
    assert (config.heartbeat_idle, config.heartbeat_interval) == (2, 1)
    config = Config(heartbeat_idle=10, heartbeat_interval=1).set(heartbeat_idle=4)
    assert config.heartbeat_interval == 1, "a given interval is kept"
    config = Config(heartbeat_idle=10).set(heartbeat_idle=None)
    assert config.heartbeat_interval is None, "heartbeat off: the derived interval goes too"
    config = Config(heartbeat_idle=10)
    with pytest.raises(LabError):
        config.set(heartbeat_idle=-1)
    assert (config.heartbeat_idle, config.heartbeat_interval) == (10, 5)
    assert config.set(heartbeat_idle=2).heartbeat_interval == 1, "still derived after a refused set"


def test_one_debounce_default_everywhere():
    sub = build_parser()._subparsers._group_actions[0].choices
    defaults = {
        "Config": Config().debounce,
        "Watcher": inspect.signature(Watcher).parameters["debounce"].default,
        "Lab": inspect.signature(Lab).parameters["debounce"].default,
        "lab watch": sub["watch"].parse_args(["."]).debounce,
        "lab serve": sub["serve"].parse_args(["app"]).debounce,
    }
    assert set(defaults.values()) == {DEFAULT_DEBOUNCE}, defaults
