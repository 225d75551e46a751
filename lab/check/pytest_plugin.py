"""The ``lab_check`` fixture for pytest (entry point ``pytest11``: active after ``pip install``).

A learner's whole test file::

    def test_my_server(lab_check):
        report = lab_check(cmd="php server.php", connect="127.0.0.1:9501", app="server.php", marker="hello")
        assert report.ok, str(report)

On failure the assertion message is the report's table: each failed check, its figure, its bound,
what it means and which notebook explains it. The scenarios' progress is in the captured stdout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lab.check.report import Report
from lab.check.runner import Options, run


@pytest.fixture
def lab_check() -> Callable[..., Report]:
    """``lab_check(connect=..., app=..., marker=..., cmd=..., **options) -> Report``.

    The options are ``python -m lab check``'s flags as keywords (``protocol``, ``edits``,
    ``clients``, ``broken``, ``idle``, ``interval``, ``scenarios`` as a list or "reload,stop").
    """

    def check(connect: str, app: str, marker: str, **options: Any) -> Report:
        scenarios = options.pop("scenarios", None)
        if isinstance(scenarios, str):
            scenarios = tuple(s.strip() for s in scenarios.split(",") if s.strip())
        if scenarios is not None:
            options["scenarios"] = tuple(scenarios)
        return run(
            Options(connect=connect, app=str(app), marker=marker, **options),
            lambda line, **fields: print(f"check: {line}", flush=True),
        )

    return check
