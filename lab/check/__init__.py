"""``python -m lab check``: point the lab's reload and heartbeat measurements at any server.

    from lab.check import Options, run
    report = run(Options(connect="127.0.0.1:9501", app="server.php", marker="hello", cmd="php server.php"))
    assert report.ok, str(report)

``verdicts`` is pure (observations in, checks out); ``probe`` (sockets), ``process`` (the server
and the app file) and ``runner`` (the scenarios) do the I/O; ``report`` prints and serialises;
``plots`` draws; ``pytest_plugin`` gives a learner's tests the ``lab_check`` fixture.
"""

from lab.check.report import Report
from lab.check.runner import SCENARIOS, Options, run

__all__ = ["Options", "Report", "SCENARIOS", "run"]
