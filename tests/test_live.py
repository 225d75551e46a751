"""lab.live: the views draw what the events say, redraw only on news, and refresh from a task."""

from __future__ import annotations

import asyncio
import time

import pytest

from lab import live
from lab.errors import LabError
from lab.events import PHASE_BY_KEY, EventSink, Kind
from lab.watcher import Watcher


def labels(fig):
    ax = fig.axes[0]
    return ax.get_title(), ax.get_xlabel(), ax.get_ylabel()


def reload_events(t0: float, absolute: bool) -> list[dict]:
    phases = {"seen": 0.0, "forked": 0.010, "ready": 0.150, "serving": 0.160, "old_gone": 0.400}
    if absolute:
        phases = {k: t0 + v for k, v in phases.items()}
    return [
        {"t": t0 - 0.05, "kind": Kind.WATCH_CHANGE, "paths": ["app.py"]},
        {"t": t0, "kind": Kind.RELOAD_START, "generation": 2},
        {"t": t0 + 0.4, "kind": Kind.RELOAD_DONE, "generation": 2, "duration": 0.4, "phases": phases},
    ]


@pytest.mark.parametrize("cls", [live.Timeline, live.ReloadPhases, live.ReloadLatency, live.Connections])
def test_every_plot_has_a_title_and_labelled_axes_with_units(cls):
    view = cls(reload_events(100.0, absolute=False), autostart=False)
    title, xlabel, ylabel = labels(view.figure())
    assert title and xlabel and ylabel
    assert any(unit in xlabel for unit in ("(s)", "(ms)", "(generation)"))
    assert bytes(view.image.value).startswith(b"\x89PNG")


def test_timeline_has_one_row_per_kind_in_order_of_appearance():
    events = [
        {"t": 10.0, "kind": Kind.SERVER_START},
        {"t": 10.5, "kind": Kind.WORKER_READY},
        {"t": 11.0, "kind": Kind.WORKER_READY},
        {"t": 12.0, "kind": Kind.RELOAD_FAILED},
    ]
    ax = live.Timeline(events, autostart=False).figure().axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [Kind.SERVER_START, Kind.WORKER_READY, Kind.RELOAD_FAILED]
    offsets = [list(c.get_offsets()[:, 0]) for c in ax.collections]
    assert offsets == [[0.0], [0.5, 1.0], [2.0]]


def test_timeline_window_keeps_only_recent_events():
    events = [{"t": float(i), "kind": f"k{i}"} for i in range(10)]
    ax = live.Timeline(events, window=2.5, autostart=False).figure().axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["k7", "k8", "k9"]


@pytest.mark.parametrize("absolute", [False, True])
def test_reload_phases_accept_offsets_or_monotonic_times(absolute):
    ax = live.ReloadPhases(reload_events(5000.0, absolute), autostart=False).figure().axes[0]
    bars = [(round(p.get_x(), 3), round(p.get_width(), 3)) for p in ax.patches]
    assert bars == [(0.0, 10.0), (10.0, 140.0), (150.0, 10.0), (160.0, 240.0)]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [PHASE_BY_KEY[name].what for name in live.PHASE_COLOURS]


def test_reload_phases_draw_what_a_server_reports_and_skip_the_rest():
    events = [
        {"t": 9.0, "kind": Kind.RELOAD_DONE, "generation": 4, "phases": {"seen": 0.0, "ready": 0.5}},
        {"t": 9.0, "kind": Kind.RELOAD_DONE, "generation": 5, "phases": {"seen": 1.0}},
    ]
    ax = live.ReloadPhases(events, autostart=False).figure().axes[0]
    assert [(p.get_x(), p.get_width()) for p in ax.patches] == [(0.0, 500.0)]


def test_reload_latency_shows_durations_failures_and_save_to_done():
    events = reload_events(100.0, absolute=False) + [
        {"t": 103.0, "kind": Kind.RELOAD_FAILED, "generation": 3, "traceback": "SyntaxError"}
    ]
    ax = live.ReloadLatency(events, autostart=False).figure().axes[0]
    assert [round(p.get_height()) for p in ax.patches] == [400]
    assert list(ax.lines[0].get_ydata()) == pytest.approx([450.0])
    assert list(ax.collections[0].get_offsets()[:, 0]) == [3]


def test_connections_are_spans_coloured_by_close_reason():
    events = [
        {"t": 0.0, "kind": Kind.CONN_OPEN, "pid": 7, "conn": 1},
        {"t": 0.5, "kind": Kind.CONN_OPEN, "pid": 7, "conn": 2},
        {"t": 2.0, "kind": Kind.CONN_CLOSE, "pid": 7, "conn": 1, "reason": "idle"},
        {"t": 3.0, "kind": Kind.WORKER_EXIT, "pid": 7},
    ]
    ax = live.Connections(events, autostart=False).figure().axes[0]
    spans = [list(line.get_xdata()) for line in ax.lines]
    assert spans == [[0.0, 2.0], [0.5, 3.0]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["closed: idle", "still open"]


def test_update_redraws_only_when_events_arrive(tmp_path):
    path = tmp_path / "events.jsonl"
    view = live.Timeline(path, autostart=False)
    assert view.renders == 1 and not view.update()
    with EventSink(path) as sink:
        sink.emit(Kind.SERVER_START)
    assert view.update() and view.renders == 2
    assert not view.update()
    assert "1 events" in view.status.value


def test_feed_is_shared_and_takes_events_by_hand():
    feed = live.Feed()
    a, b = live.Timeline(feed, autostart=False), live.Connections(feed, autostart=False)
    feed.add("inotify.IN_MODIFY", path="x.py")
    assert a.update() and b.update()
    assert feed.of("inotify.IN_MODIFY")[0]["path"] == "x.py"


def test_feed_reads_a_watcher(tmp_path):
    with Watcher([tmp_path], debounce=0.01) as watcher:
        feed = live.Feed(watcher)
        (tmp_path / "app.py").write_text("x = 1\n")
        deadline = time.monotonic() + 5
        while not feed.events and time.monotonic() < deadline:
            feed.pull()
            time.sleep(0.01)
    assert feed.events and feed.events[0]["kind"].startswith("watch.")
    assert feed.events[0]["path"].endswith("app.py")


def test_views_refresh_themselves_on_a_running_loop(tmp_path):
    path = tmp_path / "events.jsonl"

    async def scenario() -> tuple[bool, int, bool]:
        view = live.Timeline(path, refresh=0.02)
        started = view.running
        with EventSink(path) as sink:
            sink.emit(Kind.SERVER_START)
        deadline = time.monotonic() + 5
        while view.renders < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        view.stop()
        await asyncio.sleep(0)
        return started, view.renders, view.running

    started, renders, running = asyncio.run(scenario())
    assert started and renders >= 2 and not running


def test_a_view_without_a_loop_does_not_start():
    view = live.Timeline([], autostart=True)
    assert not view.running and not view.start()


def test_a_bad_event_is_shown_and_the_refresh_goes_on():
    async def scenario():
        feed = live.Feed()
        view = live.ReloadLatency(feed, refresh=0.01)
        feed.add(Kind.RELOAD_DONE, duration={"not": "a number"})
        deadline = time.monotonic() + 5
        while "cannot draw" not in view.status.value and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        alive = view.running
        view.stop()
        return view.status.value, alive

    status, alive = asyncio.run(scenario())
    assert "cannot draw" in status and alive


def test_dashboard_shares_one_feed_and_refuses_unknown_views():
    dash = live.Dashboard([{"t": 1.0, "kind": Kind.CONN_OPEN, "conn": 1}], autostart=False)
    assert {v.feed for v in dash.views.values()} == {dash.feed}
    assert not dash.update()
    dash.feed.add(Kind.CONN_CLOSE, conn=1, reason="peer")
    assert dash.update()
    with pytest.raises(LabError, match="unknown view"):
        live.Dashboard([], views=["pie"], autostart=False)


def test_a_source_it_cannot_read_is_a_clear_error():
    with pytest.raises(LabError, match="cannot draw events from int"):
        live.Timeline(42, autostart=False)
