"""lab.heartbeat: every strategy, exact, on a made-up clock."""

from __future__ import annotations

import math
import random

import pytest

from lab.errors import LabError
from lab.heartbeat import DEFAULT_STRATEGY, STRATEGIES, make_tracker

EPS = 1e-9  # float slack for "lateness <= interval" (deadlines are sums of floats)

all_strategies = pytest.mark.parametrize("strategy", sorted(STRATEGIES))


@all_strategies
def test_silent_key_expires_not_before_idle_and_touch_resets(strategy):
    hb = make_tracker(strategy, idle=1.0, interval=0.25)
    hb.touch("a", 0.0)
    hb.touch("a", 0.6)  # resets: due at 1.6 now, not 1.0
    assert hb.expired(1.0) == []
    assert hb.expired(1.5) == [] and len(hb) == 1
    now = hb.next_check(1.5)
    while now < 1.6:  # follow the tracker's own schedule up to the deadline
        assert hb.expired(now) == []
        now = hb.next_check(now)
    assert hb.expired(now) == [("a", 0.6)]
    assert 1.6 <= now <= 1.6 + 0.25 + EPS
    assert len(hb) == 0 and hb.next_check(now) is None
    assert hb.expired(now + 10) == []  # expired removes: reported once


@all_strategies
def test_forget_removes_and_a_reused_key_starts_afresh(strategy):
    hb = make_tracker(strategy, idle=1.0, interval=0.1)
    hb.forget("never seen")  # fine
    hb.touch(7, 0.0)
    hb.touch(8, 0.0)
    hb.forget(7)
    assert len(hb) == 1
    hb.touch(7, 0.5)  # fd 7 reused by a new connection
    assert hb.expired(1.0) == [(8, 0.0)]
    assert hb.expired(1.4) == []
    assert hb.expired(1.5) == [(7, 0.5)]
    hb.forget(7)
    assert len(hb) == 0 and hb.next_check(1.5) is None


@all_strategies
def test_many_keys_expire_each_on_time(strategy):
    idle, interval = 5.0, 0.5
    hb = make_tracker(strategy, idle, interval)
    last = {k: k * 0.001 for k in range(10_000)}  # spread over 10 s
    for k, t in last.items():
        hb.touch(k, t)
    now, seen = 0.0, {}
    while len(hb):
        now = hb.next_check(now)
        for key, t in hb.expired(now):
            assert t == last[key] and t + idle <= now <= t + idle + interval + EPS
            seen[key] = now
    assert seen.keys() == last.keys()


@all_strategies
def test_no_growth_after_a_million_touches_on_a_few_keys(strategy):
    hb = make_tracker(strategy, idle=1.0, interval=0.1)
    keys = range(5)
    now, check = 0.0, 0.0
    for i in range(1_000_000):
        now = i * 1e-5  # 10 s of chatter: every key touched every 50 µs
        hb.touch(i % 5, now)
        if now >= check:
            assert hb.expired(now) == []
            check = hb.next_check(now)
    assert len(hb) == 5
    limit = {
        "timer": 200,  # the timer heap compacts past 64 cancelled timers
        "wheel": len(keys) + 12,
    }.get(strategy, len(keys))  # + at most idle/interval+2 ticks
    assert hb.entries <= limit


@all_strategies
def test_no_growth_when_connections_come_and_go(strategy):
    hb = make_tracker(strategy, idle=60.0, interval=0.1)
    for i in range(200_000):  # fd numbers are reused, as the kernel does
        hb.touch(i % 100, i * 1e-4)
        hb.forget((i + 50) % 100)
    assert len(hb) <= 100
    assert hb.entries <= 300  # stale entries compacted, not 200,000


def _reference_check(hb, model, now, out, idle, interval, on_schedule):
    """What ``expired(now)`` returned agrees with a plain dict of last-activity times."""
    for key, last in out:
        assert model.pop(key) == last
        assert last + idle <= now, "closed early"
        if on_schedule:
            assert now - (last + idle) <= interval + EPS, "closed late"
    assert len(hb) == len(model)
    if on_schedule:  # nothing overdue by more than interval is left behind
        assert all(last + idle > now - interval - EPS for last in model.values())
    nxt = hb.next_check(now)
    if not model:
        assert nxt is None
    else:
        assert nxt > now, "the next check must be later than this one"
        assert nxt <= min(model.values()) + idle + interval + EPS


@all_strategies
@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_a_reference_model(strategy, seed):
    """Random touches, forgets and extra checks, with checks at the times the tracker asks."""
    rng = random.Random(seed)
    idle = rng.choice([0.3, 1.0, 2.5])
    interval = rng.choice([0.05, 0.1, 0.25, 0.7, 3.0])
    hb = make_tracker(strategy, idle, interval)
    model: dict[int, float] = {}
    now = 0.0
    for _ in range(3000):
        step = rng.expovariate(1 / (idle / 10)) if rng.random() < 0.9 else rng.uniform(0, 3 * idle)
        op_time = now + step
        nxt = hb.next_check(now)
        while nxt is not None and nxt <= op_time:  # the server's loop wakes for the check
            now = nxt
            _reference_check(hb, model, now, hb.expired(now), idle, interval, True)
            nxt = hb.next_check(now)
        now = op_time
        r = rng.random()
        key = rng.randrange(40)
        if r < 0.75:
            hb.touch(key, now)
            model[key] = now
        elif r < 0.9:
            hb.forget(key)
            model.pop(key, None)
        else:  # a check off schedule (the loop woke for something else): still never early
            out = hb.expired(now)
            for k, last in out:
                assert model.pop(k) == last and last + idle <= now
            assert len(hb) == len(model)


@all_strategies
def test_next_check_is_none_when_empty(strategy):
    hb = make_tracker(strategy, idle=1.0, interval=0.5)
    assert hb.next_check(0.0) is None and len(hb) == 0
    assert hb.expired(100.0) == []
    hb.touch("x", 100.0)
    assert 100.0 < hb.next_check(100.0) <= 101.5


def test_wheel_with_more_ticks_than_slots_keeps_later_rounds():
    hb = make_tracker("wheel", idle=100.0, interval=0.001)  # 100,001 ticks, capped slots
    hb.touch("a", 0.0)
    hb.touch("b", 50.0)
    assert hb.expired(99.9995) == []
    assert hb.expired(100.0) == [("a", 0.0)]
    assert hb.expired(149.999) == []
    assert hb.expired(1000.0) == [("b", 50.0)]  # after a long pause too


def test_default_strategy_and_make_tracker():
    assert DEFAULT_STRATEGY in STRATEGIES
    hb = make_tracker(None, 2, 1)
    assert type(hb) is STRATEGIES[DEFAULT_STRATEGY]
    assert (hb.idle, hb.interval) == (2.0, 1.0)


@pytest.mark.parametrize(
    "idle, interval",
    [(0, 1), (-1, 1), (1, 0), (math.nan, 1), (1, math.inf), ("1", 1), (True, 1)],
    ids=["zero", "negative", "zero interval", "nan", "inf", "text", "bool"],
)
def test_bad_numbers_are_a_clear_error(idle, interval):
    with pytest.raises(LabError, match="must be a positive number of seconds"):
        make_tracker(None, idle, interval)


def test_unknown_strategy_names_the_choices():
    with pytest.raises(LabError, match="choose one of lazy, queue, scan, timer, wheel"):
        make_tracker("fast", 1, 1)
