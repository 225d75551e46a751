"""The checker's pure verdicts, with hand-made observations: exact rules and boundaries."""

from __future__ import annotations

import unicodedata

import pytest

from lab import i18n
from lab.check.report import Report
from lab.check.verdicts import (
    Answer,
    Edit,
    Lifetime,
    broken_summary,
    checks,
    classify,
    first_received,
    heartbeat_summary,
    latencies,
    reload_summary,
    stale,
)

IDLE, INTERVAL = 1.0, 0.5  # early before 0.95 s, late after 1.75 s, never if open at 3.5 s


def test_first_received_is_the_earliest_over_all_clients():
    answers = [Answer(0.0, 3.0, 1), Answer(0.5, 2.0, 1), Answer(0.1, 0.2, 0), Answer(0.3, 0.4, None)]
    assert first_received(answers) == {1: 2.0, 0: 0.2}


def test_an_old_answer_is_stale_only_if_sent_strictly_after_a_newer_one_was_received():
    new = Answer(1.0, 2.0, 1)  # token 1 first received at 2.0
    before = Answer(1.5, 2.5, 0)  # sent before 2.0: an in-flight request, not stale
    at = Answer(2.0, 2.1, 0)  # sent exactly then: not after
    after = Answer(2.01, 2.2, 0)  # sent after: stale
    failed = Answer(2.5, 2.6, None)  # a failure is counted elsewhere
    assert stale([new, before, at, after, failed]) == [after]


def test_stale_compares_with_the_newest_token_received_before_the_send():
    answers = [Answer(0, 1.0, 1), Answer(0, 2.0, 2), Answer(1.5, 1.6, 1), Answer(2.5, 2.6, 1), Answer(2.5, 2.7, 2)]
    assert stale(answers) == [Answer(2.5, 2.6, 1)]


def test_latency_is_write_to_first_answer_and_missed_past_the_timeout():
    edits = [Edit(1, 10.0), Edit(2, 20.0), Edit(3, 30.0)]
    answers = [Answer(10.0, 10.25, 1), Answer(10.1, 10.2, 1), Answer(20.0, 30.5, 2)]
    # edit 1: first seen at 10.2; edit 2 seen 10.5 s after its write (> 10 s): missed; 3: never seen
    assert latencies(edits, answers, seen_timeout=10.0) == [pytest.approx(0.2), None, None]
    assert latencies(edits[1:2], answers, seen_timeout=10.5) == [pytest.approx(10.5)]


def test_reload_summary_counts_everything_once():
    edits = [Edit(1, 1.0), Edit(2, 2.0)]
    answers = [
        Answer(0.9, 1.0, 0),
        Answer(1.0, 1.1, 1),
        Answer(1.2, 1.3, 0),
        Answer(1.3, 1.4, None, "reset"),
        Answer(1.5, 1.6, 1),
    ]
    summary = reload_summary(edits, answers, 10.0)
    assert summary == {
        "edits": 2,
        "missed": 1,
        "failed_requests": 1,
        "ok_requests": 4,
        "stale_answers": 1,
        "latency_ms": [100.0, None],
        "p50_ms": 100.0,
    }


def test_broken_kept_serving_needs_the_good_token_to_the_last_request():
    good = [Answer(0.1, 0.2, 3), Answer(0.3, 0.4, 3)]
    assert broken_summary(good, 3, True) == {
        "kept_serving": True,
        "failed_requests": 0,
        "ok_requests": 2,
        "recovered": True,
    }
    died = good + [Answer(0.5, 0.5, None, "ConnectionRefusedError")]
    assert broken_summary(died, 3, False)["kept_serving"] is False
    assert broken_summary(died, 3, False)["failed_requests"] == 1
    assert broken_summary(good + [Answer(0.5, 0.6, 2)], 3, True)["kept_serving"] is False  # an older one
    assert broken_summary([], 3, True)["kept_serving"] is False  # never answered at all
    assert broken_summary(good, None, True)["kept_serving"] is False  # never settled on one token


@pytest.mark.parametrize(
    "closed, verdict",
    [
        (0.0, "early"),
        (0.9499, "early"),
        (0.95, "ok"),
        (1.0, "ok"),
        (1.75, "ok"),
        (1.7501, "late"),
        (3.4, "late"),
        (None, "never"),
    ],
)
def test_silent_connection_boundaries(closed, verdict):
    assert classify(Lifetime(100.0, None if closed is None else 100.0 + closed), IDLE, INTERVAL) == verdict


def test_heartbeat_summary():
    silent = [Lifetime(0, 1.1), Lifetime(0, 0.5), Lifetime(0, 2.0), Lifetime(0, None)]
    chatty = [Lifetime(0, None), Lifetime(0, 1.2)]
    assert heartbeat_summary(silent, chatty, IDLE, INTERVAL) == {
        "idle_s": IDLE,
        "interval_s": INTERVAL,
        "silent": 4,
        "closed_early": 1,
        "closed_late": 1,
        "never_closed": 1,
        "chatty": 2,
        "chatty_closed": 1,
        "lateness_ms": [100.0, -500.0, 1000.0],
    }


def sections(**changes):
    base = {
        "reload": reload_summary([Edit(1, 0.0)], [Answer(0, 0.1, 1)], 10.0),
        "broken": broken_summary([Answer(0, 0.1, 1)], 1, True),
        "heartbeat": heartbeat_summary([Lifetime(0, 1.1)], [Lifetime(0, None)], IDLE, INTERVAL),
        "stop": {"graceful": True, "exit_s": 0.1, "exit_code": 0, "left_behind": []},
    }
    return {**base, **changes}


def test_checks_are_named_per_scenario_and_only_for_scenarios_that_ran():
    found = checks(sections(heartbeat=None))
    assert [c.name for c in found] == [
        "reload.failed_requests",
        "reload.missed_edits",
        "reload.stale_answers",
        "broken.kept_serving",
        "broken.failed_requests",
        "broken.recovered",
        "stop.graceful",
        "stop.left_behind",
    ]
    assert all(c.ok and c.detail == "" for c in found)


def test_a_failed_check_says_what_it_means_and_where_to_read():
    stop = {"graceful": True, "exit_s": 0.1, "exit_code": 0, "left_behind": [4242]}
    failed = [c for c in checks(sections(stop=stop)) if not c.ok]
    assert [(c.name, c.value, c.bound) for c in failed] == [("stop.left_behind", 1, "= 0")]
    assert "notebooks/02_hot_reload.ipynb" in failed[0].detail and "4242" in failed[0].detail


def test_report_ok_table_and_json():
    report = Report.build(
        sections(stop={"graceful": False, "exit_s": 5.0, "exit_code": None, "left_behind": []}), {}, ["a note"]
    )
    assert not report.ok and report.failed == ["stop.graceful"]
    table = str(report)
    assert "stop.graceful" in table and "FAIL" in table and "-> SIGTERM did not stop" in table
    assert table.splitlines()[-1] == "FAILED: stop.graceful" and "note: a note" in table
    data = report.to_json()
    assert data["ok"] is False and data["stop"]["graceful"] is False and len(data["checks"]) == 12
    assert report.heartbeat == data["heartbeat"]


def _columns(row: str, cells: list[str]) -> list[int]:
    """The terminal columns where ``cells`` start in ``row`` (a wide or full-width character takes two)."""
    starts, at = [], 0
    for cell in cells:
        at = row.index(cell, at)
        starts.append(sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in row[:at]))
        at += len(cell)
    return starts


def test_the_chinese_table_lines_up_in_a_terminal_and_is_all_chinese():
    i18n.set_language("zh")
    try:
        report = Report.build(
            sections(stop={"graceful": False, "exit_s": 5.0, "exit_code": None, "left_behind": []}), {}, []
        )
        lines = [line for line in str(report).splitlines() if not line.startswith("    -> ")]
        header = [i18n._("check"), i18n._("value"), i18n._("bound")]
    finally:
        i18n.set_language("en")
    # a row's cells: the name, the value, the bound's first word ("=" of "= 0"), pass or fail
    starts = {
        tuple(_columns(line, [c.name, *line.split()[1:3], line.split()[-1]]))
        for line, c in zip(lines[1:], report.checks)
    }
    assert len(starts) == 1 and min(starts)[:3] == tuple(_columns(lines[0], header)), "\n".join(lines)
    flags = [line for line in lines if line.startswith(("broken.kept_serving", "stop.graceful"))]
    assert [line.split()[1:] for line in flags] == [["是", "是", "通过"], ["否", "是", "未通过"]], flags


def test_a_report_with_no_check_is_not_ok():
    assert not Report.build({}, {}, []).ok
