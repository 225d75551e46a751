"""The event loop: readers, writers, timers, signals -- on real pipes and real signals."""

from __future__ import annotations

import os
import signal

import pytest

from lab.reactor import Reactor


@pytest.fixture
def reactor():
    loop = Reactor()
    yield loop
    loop.close()


@pytest.fixture
def pipe():
    r, w = os.pipe2(os.O_NONBLOCK)
    yield r, w
    os.close(r)
    os.close(w)


def run_until(reactor: Reactor, condition, rounds: int = 200) -> None:
    """Runs loop rounds (each waits at most 50 ms) until ``condition()``; fails otherwise."""
    for _ in range(rounds):
        if condition():
            return
        reactor.run_once(0.05)
    raise AssertionError("condition not met")


def test_a_reader_is_called_when_data_arrives_and_not_after_removal(reactor, pipe):
    r, w = pipe
    got = []
    reactor.add_reader(r, lambda: got.append(os.read(r, 100)))
    reactor.run_once(0)
    assert got == []
    os.write(w, b"x")
    run_until(reactor, lambda: got)
    assert got == [b"x"]
    reactor.remove_reader(r)
    os.write(w, b"y")
    reactor.run_once(0.05)
    assert got == [b"x"]


def test_reader_and_writer_on_one_fd(reactor):
    import socket

    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        calls = []
        reactor.add_reader(a.fileno(), lambda: calls.append(("read", a.recv(10))))
        reactor.add_writer(a.fileno(), lambda: calls.append(("write",)))
        run_until(reactor, lambda: ("write",) in calls)
        reactor.remove_writer(a.fileno())
        calls.clear()
        b.sendall(b"hi")
        run_until(reactor, lambda: calls)
        assert calls == [("read", b"hi")], "the reader survives removing the writer"


def test_a_callback_removed_earlier_in_the_same_round_is_not_called(reactor):
    r1, w1 = os.pipe2(os.O_NONBLOCK)
    r2, w2 = os.pipe2(os.O_NONBLOCK)
    try:
        os.write(w1, b"x")
        os.write(w2, b"x")
        called = []

        def first(mine, other):
            called.append(mine)
            reactor.remove_reader(other)  # both are ready in this round: the other must be skipped

        reactor.add_reader(r1, first, r1, r2)
        reactor.add_reader(r2, first, r2, r1)
        reactor.run_once(1)
        assert len(called) == 1
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def test_timers_run_in_order_and_cancel(reactor):
    order = []
    reactor.call_later(0.03, order.append, "c")
    reactor.call_later(0.01, order.append, "a")
    reactor.call_later(0.02, order.append, "b")
    reactor.call_later(0.015, order.append, "never").cancel()
    run_until(reactor, lambda: len(order) == 3)
    assert order == ["a", "b", "c"]
    assert reactor.timer_count == 0


def test_call_every_repeats_until_cancelled(reactor):
    ticks = []
    handle = reactor.call_every(0.01, lambda: ticks.append(reactor.clock()))
    run_until(reactor, lambda: len(ticks) >= 3)
    handle.cancel()
    count = len(ticks)
    reactor.call_later(0.05, ticks.append, "done")
    run_until(reactor, lambda: ticks[-1] == "done")
    assert len(ticks) == count + 1
    assert ticks[:3] == sorted(ticks[:3])


def test_timers_follow_the_injected_clock():
    now = [100.0]
    loop = Reactor(clock=lambda: now[0])
    try:
        fired = []
        loop.call_later(5, fired.append, "late")
        loop.run_once(0)
        assert fired == []
        now[0] = 105.0
        loop.run_once(0)
        assert fired == ["late"]
    finally:
        loop.close()


def test_a_signal_runs_its_callback_in_the_loop_not_in_the_handler(reactor):
    seen = []
    reactor.add_signal_handler(signal.SIGUSR1, lambda: seen.append(signal.SIGUSR1))
    os.kill(os.getpid(), signal.SIGUSR1)
    assert seen == [], "nothing runs until the loop does"
    run_until(reactor, lambda: seen)
    assert seen == [signal.SIGUSR1]
    reactor.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1


def test_stop_ends_run(reactor):
    reactor.call_later(0.01, reactor.stop)
    reactor.run()
    assert reactor.timer_count == 0


def test_call_every_rejects_a_zero_interval(reactor):
    with pytest.raises(ValueError):
        reactor.call_every(0, print)


# --- a raising callback, a failing close ---------------------------------------------------------


def test_a_raising_callback_is_reported_and_the_loop_goes_on(pipe):
    r, w = pipe
    reported: list[tuple[object, str]] = []
    loop = Reactor(on_error=lambda callback, exc: reported.append((callback, str(exc))))
    try:
        got = []

        def bad_reader():
            os.read(r, 100)
            raise RuntimeError("reader")

        def bad_timer():
            raise ValueError("timer")

        def bad_signal():
            raise KeyError("signal")

        loop.add_reader(r, bad_reader)
        loop.call_later(0, bad_timer)
        loop.call_later(0, got.append, "timer after the bad one")
        loop.add_signal_handler(signal.SIGUSR1, bad_signal)
        loop.add_signal_handler(signal.SIGUSR2, lambda: got.append("signal after the bad one"))
        os.write(w, b"x")
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        run_until(loop, lambda: len(got) == 2 and len(reported) == 3)
        assert sorted(got) == ["signal after the bad one", "timer after the bad one"]
        assert sorted(text for _, text in reported) == ["'signal'", "reader", "timer"]
        assert {callback for callback, _ in reported} == {bad_reader, bad_timer, bad_signal}
        os.write(w, b"y")  # and the loop still works
        run_until(loop, lambda: len(reported) == 4)
    finally:
        loop.close()


def test_without_a_hook_a_raising_callback_is_logged(reactor, caplog):
    def boom():
        raise RuntimeError("boom in a timer")

    ran = []
    reactor.call_later(0, boom)
    reactor.call_later(0.01, ran.append, True)
    run_until(reactor, lambda: ran)
    [record] = [r for r in caplog.records if r.name == "lab.reactor"]
    assert "boom" in record.getMessage() and record.exc_info[1].args == ("boom in a timer",)


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_close_releases_the_selector_and_pipe_even_when_a_step_raises():
    loop = Reactor()
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    fds = (loop._selector.fileno(), loop._wake_r, loop._wake_w)
    other_r, other_w = os.pipe2(os.O_NONBLOCK)
    try:
        signal.set_wakeup_fd(other_w)  # someone else's, installed while the loop ran
        with pytest.raises(RuntimeError, match="another wakeup fd"):
            loop.close()
        assert all(_closed(fd) for fd in fds)
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
        assert signal.set_wakeup_fd(-1) == other_w, "the other owner's wakeup fd is left alone"
        loop.close()  # closed: nothing more to do
    finally:
        signal.set_wakeup_fd(-1)
        os.close(other_r)
        os.close(other_w)


def test_close_from_another_thread_still_releases_the_fds():
    import threading

    loop = Reactor()
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    fds = (loop._selector.fileno(), loop._wake_r, loop._wake_w)
    errors: list[Exception] = []

    def close():
        try:
            loop.close()
        except Exception as exc:
            errors.append(exc)

    try:
        thread = threading.Thread(target=close)
        thread.start()
        thread.join(30)
        assert [type(e) for e in errors] == [ValueError]  # signals are the main thread's
        assert all(_closed(fd) for fd in fds)
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
