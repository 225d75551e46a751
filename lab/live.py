"""Live views for the notebooks: matplotlib figures inside ipywidgets, redrawn while the lab runs.

One line in a cell shows a view that keeps itself up to date::

    view = live.Timeline(lab)      # or an events file, a Watcher, a Feed, a list of events
    view                           # displays; refreshes every ``refresh`` seconds
    view.figure()                  # the same plot as a static matplotlib Figure

How the refresh works, and why: each view owns an ``asyncio`` task on the kernel's own event loop
(ipykernel runs one in the main thread; a task created in a cell keeps running between cells and
while a cell awaits). The task reads new events, and only when something changed it renders the
figure to PNG with matplotlib's Agg canvas and assigns the bytes to an ``ipywidgets.Image``. No
thread touches a widget (comm messages from background threads are unreliable) and no pyplot
figure is involved (the inline backend would only draw it when the cell ends, and then twice).
A cell that blocks (``time.sleep``) pauses the refresh; ``await asyncio.sleep(...)`` does not.
Where no loop runs (a script, a test), ``update()`` refreshes by hand.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lab.errors import LabError
from lab.events import PHASE_BY_KEY, RELOAD_PHASES, Event, EventTail, Kind
from lab.i18n import N_, _, _f, figure_fonts

figure_fonts()  # in Chinese, before any figure is made


# One colour per family of events, so a timeline reads at a glance.
FAMILY_COLOURS = {
    "server": "tab:gray",
    "watch": "tab:blue",
    "inotify": "tab:cyan",
    "reload": "tab:green",
    "worker": "tab:purple",
    "conn": "tab:orange",
    "client": "tab:brown",
    "heartbeat": "tab:olive",
}
REASON_COLOURS = {
    "peer": "tab:blue",
    "idle": "tab:orange",
    "drain": "tab:green",
    "error": "tab:red",
    "open": "tab:gray",
}
# A colour for each step of a reload (the step ends at the phase); the first phase starts them.
PHASE_COLOURS = dict(zip([p.key for p in RELOAD_PHASES[1:]], ("tab:blue", "tab:orange", "tab:purple", "tab:green")))


class Feed:
    """Events gathered from a source, shared by the views drawn from it.

    ``source`` is an events file path, an object with ``events_path`` (a playground ``Lab``), a
    ``Watcher`` (its changes become ``watch.<kind>`` events), a list of events, or None (events
    then come only from ``add``). ``version`` grows whenever events arrive.
    """

    def __init__(self, source: Any = None):
        self.events: list[Event] = []
        self.version = 0
        self._read: Callable[[], list[Event]] = _reader(source)

    def add(self, kind: str, t: float | None = None, **fields: Any) -> Event:
        """Record an event by hand (``t`` defaults to now on the monotonic clock)."""
        event = {"t": time.monotonic() if t is None else t, "kind": kind, **fields}
        self.extend([event])
        return event

    def extend(self, events: Iterable[Event]) -> None:
        new = [e for e in events if "t" in e and "kind" in e]
        if new:
            self.events.extend(new)
            self.version += 1

    def pull(self) -> int:
        """Read what the source has new; returns how many events arrived."""
        before = len(self.events)
        self.extend(self._read())
        return len(self.events) - before

    def of(self, *kinds: str) -> list[Event]:
        """The events of the given kinds, in arrival order."""
        return [e for e in self.events if e["kind"] in kinds]

    @property
    def t0(self) -> float:
        """The time axis starts at the first event."""
        return min((e["t"] for e in self.events), default=0.0)


def _reader(source: Any) -> Callable[[], list[Event]]:
    if source is None:
        return list
    if isinstance(source, (str, os.PathLike)):
        return EventTail(source).read
    if hasattr(source, "events_path"):
        return EventTail(source.events_path).read
    if hasattr(source, "poll") and hasattr(source, "fileno"):
        return lambda: _watcher_events(source)
    if isinstance(source, Iterable):
        pending = list(source)

        def once() -> list[Event]:
            out = pending[:]
            pending.clear()
            return out

        return once
    raise LabError(
        _(
            "cannot draw events from {type}: pass an events file path, a playground Lab, a Watcher, "
            "a Feed or a list of events"
        ).format(type=type(source).__name__)
    )


def _watcher_events(watcher: Any) -> list[Event]:
    if watcher.closed:  # a view may outlive its watcher: it then just stops growing
        return []
    now = time.monotonic()
    return [{"t": now, "kind": f"watch.{c.kind}", "path": c.path, "why": c.why} for c in watcher.poll(now)]


def as_feed(source: Any) -> Feed:
    return source if isinstance(source, Feed) else Feed(source)


class StaticFigure(Figure):
    """A Figure that shows itself as a PNG in any notebook, pyplot or not (IPython's ``_repr_png_``)."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=80)
        return buf.getvalue()


class _Refreshing:
    """Calls ``update()`` every ``refresh`` seconds from a task on the running event loop."""

    refresh: float
    widget: widgets.Widget  # what the notebook displays
    _task: asyncio.Task | None = None

    def update(self) -> bool:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _show_error(self, text: str) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def start(self) -> bool:
        """Start refreshing; False when no event loop runs here (a script: call ``update()``)."""
        if self.running:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._task = loop.create_task(self._run())
        return True

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            try:
                self.update()
            except Exception as exc:  # shown, not raised: a bad event must not kill the view
                self._show_error(_("cannot draw: {error}").format(error=f"{type(exc).__name__}: {exc}"))
            # Drawing runs on the kernel's thread: a slow draw (a huge stream) refreshes less
            # often, so the kernel spends at most a fifth of its time drawing.
            await asyncio.sleep(max(self.refresh, 4 * (time.perf_counter() - started)))

    def stop(self) -> None:
        """Stop refreshing; the view keeps its last picture."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


class LiveView(_Refreshing):
    """A plot of a ``Feed`` in an ``ipywidgets.Image``, redrawn when new events arrive.

    Subclasses set ``title`` and implement ``draw(ax, feed)``.
    """

    title = N_("events")

    def __init__(
        self,
        source: Any = None,
        *,
        refresh: float = 0.25,
        size: tuple[float, float] = (8.0, 3.2),
        autostart: bool = True,
    ):
        self.feed = as_feed(source)
        self.refresh = refresh
        self.size = size
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.status = widgets.HTML()
        self.widget = widgets.VBox([self.image, self.status])
        self.renders = 0
        self.driver: _Refreshing = self  # who refreshes this view: itself, or a Dashboard
        self._drawn_version = -1
        self._error = ""
        self.update(force=True)
        if autostart:
            self.start()

    # --- drawing ---------------------------------------------------------------------------

    def draw(self, ax, feed: Feed) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def figure(self) -> StaticFigure:
        """The plot of every event so far, as a static Figure (what a headless run shows)."""
        self.feed.pull()
        fig = StaticFigure(figsize=self.size, layout="constrained")
        self.draw(fig.add_subplot(), self.feed)
        return fig

    def png(self) -> bytes:
        return self.figure()._repr_png_()

    def update(self, force: bool = False) -> bool:
        """Read new events and redraw if anything changed; True when it redrew."""
        self.feed.pull()
        redrew = False
        if force or self.feed.version != self._drawn_version:
            self._drawn_version = self.feed.version
            try:
                self.image.value = self.png()
                self.renders += 1
                self._error = ""
                redrew = True
            except Exception as exc:  # shown, not raised: a bad event must not kill the view
                self._error = " · " + _("cannot draw: {error}").format(error=f"{type(exc).__name__}: {exc}")
        # traitlets send a comm message only when the value changes, so this is cheap when idle
        count = _("{n} events").format(n=len(self.feed.events))
        self.status.value = f"<small>{count} · {self._state()}{self._error}</small>"
        return redrew

    def _state(self) -> str:
        driver = self.driver
        return _("live, every {s:g} s").format(s=driver.refresh) if driver.running else _("stopped")

    def _show_error(self, text: str) -> None:
        self.status.value = f"<small>{text}</small>"


def _family(kind: str) -> str:
    return kind.split(".", 1)[0]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


class Timeline(LiveView):
    """Every event as a tick on its kind's row, on one time axis (seconds since the first).

    ``window`` (seconds) shows only the most recent part, which keeps a long run readable.
    """

    title = N_("Events over time")

    def __init__(self, source: Any = None, *, window: float | None = None, **kw: Any):
        self.window = window
        super().__init__(source, **kw)

    def draw(self, ax, feed: Feed) -> None:
        ax.set_title(_f(self.title))
        ax.set_xlabel(_f("time since the first event (s)"))
        ax.set_ylabel(_f("event kind"))
        if not feed.events:
            _empty(ax, _f("no events yet"))
            return
        t0 = feed.t0
        events = feed.events
        if self.window is not None:
            latest = max(e["t"] for e in events)
            events = [e for e in events if e["t"] >= latest - self.window]
        rows: dict[str, list[float]] = {}
        for e in events:
            rows.setdefault(e["kind"], []).append(e["t"] - t0)
        for y, (kind, xs) in enumerate(rows.items()):
            colour = "tab:red" if kind.endswith("failed") else FAMILY_COLOURS.get(_family(kind), "black")
            ax.scatter(xs, [y] * len(xs), marker="|", s=220, linewidths=2, color=colour)
        ax.set_yticks(range(len(rows)), list(rows))
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.grid(axis="x", alpha=0.3)


def _phase_offsets(event: Event) -> list[tuple[str, float]]:
    """The reload's phases that were reported, as (name, seconds since the trigger was seen).

    The server may report phases as monotonic times or as offsets; a value far from the event's
    own time is an offset.
    """
    phases = event.get("phases") or {}
    present = [(p.key, phases[p.key]) for p in RELOAD_PHASES if isinstance(phases.get(p.key), (int, float))]
    if len(present) < 2:
        return []
    last = present[-1][1]
    start = present[0][1] if abs(last - event["t"]) < abs(last) else 0.0
    return [(name, value - start) for name, value in present]


class ReloadPhases(LiveView):
    """One bar per reload generation, split into its steps (``lab.events.RELOAD_PHASES``)."""

    title = N_("Reload phases per generation")

    def draw(self, ax, feed: Feed) -> None:
        ax.set_title(_f(self.title))
        ax.set_xlabel(_f("time since the change was seen (ms)"))
        ax.set_ylabel(_f("generation"))
        done = [(e, offs) for e in feed.of(Kind.RELOAD_DONE) if (offs := _phase_offsets(e))]
        failed = feed.of(Kind.RELOAD_FAILED)
        if not done and not failed:
            _empty(ax, _f("no reload yet: edit a file or send SIGUSR1"))
            return
        for e, offs in done:
            for (_start, begin), (name, end) in zip(offs, offs[1:]):
                ax.barh(
                    e.get("generation", 0),
                    (end - begin) * 1000,
                    left=begin * 1000,
                    height=0.6,
                    color=PHASE_COLOURS.get(name, "tab:gray"),
                    label=_f(PHASE_BY_KEY[name].what),
                )
        for e in failed:
            ax.scatter(
                [(e.get("duration") or 0) * 1000],
                [e.get("generation", 0)],
                marker="x",
                color="tab:red",
                s=80,
                label=_f("reload failed (old workers kept)"),
            )
        _dedup_legend(ax)
        gens = sorted({e.get("generation", 0) for e, _ in done} | {e.get("generation", 0) for e in failed})
        ax.set_yticks(gens)


class ReloadLatency(LiveView):
    """How long each reload took, and how long from saving a file to the new code serving."""

    title = N_("Reload latency over edits")

    def draw(self, ax, feed: Feed) -> None:
        ax.set_title(_f(self.title))
        ax.set_xlabel(_f("reload (generation)"))
        ax.set_ylabel(_f("latency (ms)"))
        reloads = feed.of(Kind.RELOAD_DONE, Kind.RELOAD_FAILED, Kind.WATCH_CHANGE)
        xs: list[float] = []
        durations: list[float] = []
        saved_to_done: list[float | None] = []  # None: no change seen before this reload
        failures: list[float] = []
        last_change: float | None = None
        for e in reloads:
            if e["kind"] == Kind.WATCH_CHANGE:
                last_change = e["t"] if last_change is None else last_change
                continue
            n = e.get("generation", len(xs) + len(failures) + 1)
            if e["kind"] == Kind.RELOAD_FAILED:
                failures.append(n)
            else:
                xs.append(n)
                durations.append((e.get("duration") or 0) * 1000)
                saved_to_done.append((e["t"] - last_change) * 1000 if last_change is not None else None)
            last_change = None
        if not xs and not failures:
            _empty(ax, _f("no reload yet"))
            return
        ax.bar(xs, durations, color="tab:green", label=_f("reload (trigger → old workers gone)"))
        pts = [(x, s) for x, s in zip(xs, saved_to_done) if s is not None]
        if pts:
            ax.plot(*zip(*pts), "o", color="tab:blue", label=_f("file saved → reload done"))
        if failures:
            ax.scatter(
                failures, [0] * len(failures), marker="x", color="tab:red", s=80, label=_f("reload failed"), zorder=3
            )
        ax.set_xticks(sorted(xs + failures))
        _dedup_legend(ax)


def _conn_key(e: Event) -> tuple:
    return e.get("pid"), e.get("conn", e.get("fd", e.get("peer")))


class Connections(LiveView):
    """Each connection as a line from open to close, coloured by why it was closed."""

    title = N_("Connection lifetimes by close reason")

    def __init__(self, source: Any = None, *, last: int = 60, **kw: Any):
        self.last = last
        super().__init__(source, **kw)

    def draw(self, ax, feed: Feed) -> None:
        ax.set_title(_f(self.title))
        ax.set_xlabel(_f("time since the first event (s)"))
        ax.set_ylabel(_f("connection (last {n})").format(n=self.last))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        t0 = feed.t0
        spans: dict[tuple, list] = {}
        for e in feed.of(Kind.CONN_OPEN, Kind.CONN_CLOSE):
            key = _conn_key(e)
            if e["kind"] == Kind.CONN_OPEN:
                spans[key] = [e["t"], None, "open"]
            elif key in spans and spans[key][1] is None:
                spans[key][1:] = [e["t"], e.get("reason", "peer")]
        if not spans:
            _empty(ax, _f("no connections yet"))
            return
        now = max(e["t"] for e in feed.events)
        rows = list(spans.values())[-self.last :]
        for y, (opened, closed, reason) in enumerate(rows):
            end = now if closed is None else closed
            # the end marker keeps a connection of a millisecond visible
            ax.plot(
                [opened - t0, end - t0],
                [y, y],
                linewidth=3,
                solid_capstyle="butt",
                marker="|",
                markevery=[1],
                markersize=8,
                color=REASON_COLOURS.get(reason, "black"),
                label=_f("closed: {reason}").format(reason=reason) if closed else _f("still open"),
            )
        _dedup_legend(ax)


def _dedup_legend(ax) -> None:
    """One legend entry per label, beside the axes so it never hides data."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if unique:
        ax.legend(
            unique.values(),
            unique.keys(),
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize="small",
            borderaxespad=0,
        )


VIEWS = {"timeline": Timeline, "phases": ReloadPhases, "latency": ReloadLatency, "connections": Connections}


class Dashboard(_Refreshing):
    """Several views of one feed, refreshed by one task: ``live.Dashboard(lab)``."""

    def __init__(
        self,
        source: Any = None,
        views: Iterable[str] = ("timeline", "phases", "latency", "connections"),
        *,
        refresh: float = 0.5,
        autostart: bool = True,
    ):
        self.feed = as_feed(source)
        names = list(views)
        unknown = [n for n in names if n not in VIEWS]
        if unknown:
            raise LabError(
                _("unknown view {name!r}: choose from {views}").format(name=unknown[0], views=", ".join(VIEWS))
            )
        self.views = {n: VIEWS[n](self.feed, size=(6.4, 2.8), autostart=False) for n in names}
        for view in self.views.values():
            view.driver = self
        self.refresh = refresh
        self.widget = widgets.GridBox(
            [v.widget for v in self.views.values()], layout=widgets.Layout(grid_template_columns="repeat(2, 50%)")
        )
        if autostart:
            self.start()

    def update(self) -> bool:
        return any([v.update() for v in self.views.values()])

    def _show_error(self, text: str) -> None:
        for v in self.views.values():
            v._show_error(text)

    def __getitem__(self, name: str) -> LiveView:
        return self.views[name]
