"""``python -m lab figures``: regenerate the pictures in ``pic/`` from real runs and benchmark results.

    architecture.png        who starts whom, who signals whom, where events flow
    reload_timeline.png     a real server edited a few times: workers per generation, reload phases
    heartbeat_lifetimes.png real silent and chatty clients under a short heartbeat
    bench_*.png             benchmarks/results/*.json plotted against the peers measured with them

``--quick`` makes the real runs tiny and writes to ``test-artifacts/figures`` (a check, not the
pictures to commit). Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot, no
global backend), so this runs headless and never touches a notebook's matplotlib state.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from lab.debounce import DEFAULT_DEBOUNCE, DEFAULT_SETTLE
from lab.demo import set_greeting
from lab.errors import LabError
from lab.events import RELOAD_PHASES, Event, Kind
from lab.i18n import N_, _f, _nf, figure_fonts
from lab.live import PHASE_COLOURS
from lab.playground import Lab, wait_until

figure_fonts()  # in Chinese, before any figure is made

DPI = 110
OUT, QUICK_OUT = Path("pic"), Path("test-artifacts/figures")  # quick runs never replace the committed pic/
# (key, label's parts, colour) of each step of a reload, the first from the save; the parts are
# translated when drawn and joined with ": ".
PHASES = (
    (RELOAD_PHASES[0].key, (RELOAD_PHASES[0].step, RELOAD_PHASES[0].what), "tab:gray"),
    *((p.key, (p.what,), PHASE_COLOURS[p.key]) for p in RELOAD_PHASES[1:]),
)


@dataclass
class Plan:
    """How big the real runs are: ``quick`` makes them tiny (for tests), the default readable."""

    edits: int = 3
    edit_gap: float = 0.4  # seconds between edits, so generations are apart on the time axis
    silent: int = 4
    chatty: int = 2
    idle: float = 1.0
    interval: float = 0.25

    @classmethod
    def quick(cls) -> Plan:
        return cls(edits=1, edit_gap=0.1, silent=2, chatty=1, idle=0.3, interval=0.1)


def render(
    out: str | Path | None = None,
    *,
    quick: bool = False,
    results: str | Path = "benchmarks/results",
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Draw every figure into ``out`` (default: ``pic``, or ``test-artifacts/figures`` when
    ``quick``); returns the files written.

    Benchmark figures whose JSON is missing from ``results`` are skipped (and said so).
    """
    out = Path(out) if out is not None else QUICK_OUT if quick else OUT
    results = Path(results)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LabError(f"cannot create {out}: {exc.strerror}; give --out a writable directory") from None
    plan = Plan.quick() if quick else Plan()
    written = [_save(architecture(), out / "architecture.png")]
    log(f"wrote {written[-1]}")
    # Benchmarks first: a malformed result file stops us before the real runs, not after.
    for name, draw in BENCHMARKS.items():
        source = results / f"{name}.json"
        if not source.exists():
            log(f"skipped bench_{name}.png: no {source} (run benchmarks/{name}.py)")
            continue
        try:
            data = json.loads(source.read_text())
            figure = draw(data)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, ZeroDivisionError) as exc:
            raise LabError(
                f"{source} is not what benchmarks/{name}.py writes ({type(exc).__name__}: {exc}); re-run the benchmark"
            ) from None
        written.append(_save(figure, out / f"bench_{name}.png"))
        log(f"wrote {written[-1]} (from {source})")
    events = record_reload_run(plan)
    written.append(_save(reload_timeline(events), out / "reload_timeline.png"))
    log(f"wrote {written[-1]} (a real run: {_count(plan.edits, 'edit')} and a syntax error)")
    events, silent_peers = record_heartbeat_run(plan)
    written.append(_save(heartbeat_lifetimes(events, silent_peers, plan), out / "heartbeat_lifetimes.png"))
    log(f"wrote {written[-1]} (a real run: {plan.silent} silent, {_count(plan.chatty, 'chatty client')})")
    return written


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _plain_log(axis: Any) -> None:
    """Log-scale ticks as plain numbers (30, 300) rather than 3x10^1, for readers of any level."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


# --- the architecture sketch ---------------------------------------------------------------------


# The architecture sketch, as data: boxes (x, y, width, height, title, body, colour) and arrows
# (from, to, label, colour, style, curvature, where the label goes), in axes units of 110 x 64.
_BOXES: tuple[tuple[float, float, float, float, str, str, str], ...] = (
    (2, 47, 24, 13, N_("notebook kernel"), N_("notebooks/*.ipynb\nor python -m lab demo\nnever forks"), "#e8f0fe"),
    (
        2,
        25,
        24,
        14,
        N_("lab.playground.Lab"),
        N_("edits the app files\nopens clients\nsends signals\nreads the events"),
        "#e8f0fe",
    ),
    (2, 4, 24, 12, N_("lab.live"), N_("timeline, reload phases,\nconnections: drawn\nfrom the events"), "#e8f0fe"),
    (
        38,
        25,
        30,
        35,
        N_("master  (python -m lab serve)"),
        N_(
            "pid file\nsignals: USR1/HUP reload,\nTERM/INT stop, QUIT now\nwatcher: inotify on the app dir\n"
            "supervisor: replace dead workers,\nfork gen N+1, drain gen N"
        ),
        "#fff4e0",
    ),
    (41, 26.5, 24, 7, N_("listening socket"), N_("127.0.0.1:PORT, bound before the fork"), "#ffe2b8"),
    (
        80,
        44,
        28,
        16,
        N_("worker gen N #0"),
        N_("reactor (selectors + timers)\nheartbeat: close idle conns\napp: imported after fork"),
        "#e6f4ea",
    ),
    (
        80,
        24,
        28,
        16,
        N_("worker gen N #1"),
        N_("reactor (selectors + timers)\nheartbeat: close idle conns\napp: imported after fork"),
        "#e6f4ea",
    ),
    (80, 4, 28, 12, N_("clients"), N_("curl, nc, lab.request(),\nsilent and chatty ones"), "#f3e8fd"),
    (
        38,
        4,
        30,
        12,
        N_("events.jsonl"),
        N_("one JSON line per event,\nt = CLOCK_MONOTONIC,\nO_APPEND single writes"),
        "#f1f3f4",
    ),
)
_Point = tuple[float, float]
_ARROWS: tuple[tuple[_Point, _Point, str, str, str, float, _Point | None], ...] = (
    ((14, 46.4), (14, 39.6), N_("drives"), "black", "-|>", 0.0, None),
    ((27, 33), (37.4, 33), N_("spawns\n(subprocess)"), "black", "-|>", 0.0, (32, 36)),
    ((27, 28), (37.4, 28), N_("SIGUSR1 / SIGTERM"), "tab:red", "-|>", 0.0, (32, 25.5)),
    ((68.6, 50), (79.4, 52), N_("fork, then\n'go' on a pipe"), "black", "-|>", 0.0, None),
    ((68.6, 34), (79.4, 32), N_("fork"), "black", "-|>", 0.0, None),
    ((65.6, 29), (79.4, 27), N_("inherited:\nall accept()"), "tab:purple", "-|>", 0.0, (73, 25)),
    ((79.4, 47), (68.6, 44), N_("ready /\ntraceback"), "tab:gray", "-|>", 0.0, (74, 42)),
    ((94, 16.6), (94, 23.4), N_("TCP on 127.0.0.1\n(shared accept queue)"), "tab:purple", "<|-|>", 0.0, None),
    ((53, 24.4), (53, 16.6), N_("events"), "tab:green", "-|>", 0.0, None),
    ((84, 23.4), (68.6, 12), N_("events"), "tab:green", "-|>", -0.25, (76, 14.5)),
    ((37.4, 10), (26.6, 10), N_("tails"), "tab:green", "-|>", 0.0, None),
    ((40, 16.6), (20, 24.4), N_("tails"), "tab:green", "-|>", 0.2, (31, 21.5)),
)


def _sketch_box(ax: Any, x: float, y: float, w: float, h: float, title: str, body: str, colour: str) -> None:
    ax.add_patch(
        FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.6", facecolor=colour, edgecolor="black", linewidth=1.2)
    )
    ax.text(x + w / 2, y + h - 1.8, _f(title), ha="center", va="top", fontsize=11, fontweight="bold")
    ax.text(x + w / 2, y + h - 5.2, _f(body), ha="center", va="top", fontsize=9, linespacing=1.35)


def _sketch_arrow(
    ax: Any, a: _Point, b: _Point, label: str, colour: str, style: str, rad: float, where: _Point | None
) -> None:
    arrow = FancyArrowPatch(
        a, b, arrowstyle=style, mutation_scale=16, color=colour, linewidth=1.6, connectionstyle=f"arc3,rad={rad}"
    )
    ax.add_patch(arrow)
    x, y = where or ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
    bbox = {"facecolor": "white", "edgecolor": "none", "pad": 1.2}
    ax.text(x, y, _f(label), fontsize=8.5, color=colour, ha="center", va="center", bbox=bbox)


def architecture() -> Figure:
    """Boxes and arrows: notebook -> playground -> master -> workers of a generation."""
    fig = Figure(figsize=(11, 6.4))
    ax = fig.add_axes((0, 0, 1, 0.93))
    ax.set_xlim(0, 110)
    ax.set_ylim(0, 64)
    ax.axis("off")
    fig.suptitle(
        _f("reactor-lab: who starts whom, who signals whom, where events flow"), fontsize=14, fontweight="bold"
    )
    for box in _BOXES:
        _sketch_box(ax, *box)
    for arrow in _ARROWS:
        _sketch_arrow(ax, *arrow)
    return fig


# --- the reload timeline from a real run ---------------------------------------------------------


def record_reload_run(plan: Plan) -> list[Event]:
    """Serve the example app, edit it ``plan.edits`` times, break it once, fix it; all its events."""
    with Lab(workers=2, watch=True) as lab:

        def edit(value: str, outcome: str) -> None:
            time.sleep(plan.edit_gap)  # spacing for the picture only: each step waits on its event
            set_greeting(lab, value)
            lab.wait_for(outcome, timeout=15)

        for k in range(1, plan.edits + 1):
            edit(f'"hello, edit {k}"', Kind.RELOAD_DONE)
        edit('"broken', Kind.RELOAD_FAILED)  # refused: the old generation keeps serving
        edit('"hello, fixed"', Kind.RELOAD_DONE)
        lab.stop()
        return list(lab.read_events())


def reload_timeline(events: list[Event]) -> Figure:
    """Top: each worker's life, by generation, with the edits. Bottom: each reload's phases in ms."""
    fig = Figure(figsize=(10, 8))
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": (3, 2.2)})
    edits = [e["t"] for e in events if e["kind"] == Kind.LAB_EDIT]
    rows = _worker_lives(top, events, edits)
    _reload_steps(bottom, events, edits)
    started = next((e for e in events if e["kind"] == Kind.SERVER_START), {})
    workers = started.get("workers", sum(e["generation"] == 1 for e in rows))
    fig.suptitle(
        _nf(
            "Hot reload on a real server ({n} worker, lab/examples/hello.py)",
            "Hot reload on a real server ({n} workers, lab/examples/hello.py)",
            workers,
        ).format(n=workers),
        fontsize=13,
        fontweight="bold",
    )
    fig.tight_layout()
    return fig


def _worker_lives(top: Any, events: list[Event], edits: list[float]) -> list[Event]:
    """A bar per worker from start to exit, by generation, and a line per edit; the workers drawn."""
    t0 = min(e["t"] for e in events if e["kind"] == Kind.WORKER_START)
    end = max(e["t"] for e in events)
    failed = {e["generation"] for e in events if e["kind"] == Kind.RELOAD_FAILED}
    starts = {e["pid"]: e for e in events if e["kind"] == Kind.WORKER_START}
    exits = {e["pid"]: e["t"] for e in events if e["kind"] == Kind.WORKER_EXIT}
    ready = {e["pid"]: e["t"] for e in events if e["kind"] == Kind.WORKER_READY}
    rows = sorted(starts.values(), key=lambda e: (e["generation"], e.get("index", 0)))
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    for y, e in enumerate(rows):
        gen, start = e["generation"], e["t"]
        stop = exits.get(e["pid"], end)
        colour = "tab:red" if gen in failed else palette[(gen - 1) % len(palette)]
        top.barh(y, stop - start, left=start - t0, height=0.6, color=colour, alpha=0.85)
        if e["pid"] in ready and gen not in failed:
            top.plot([ready[e["pid"]] - t0], [y], marker="|", markersize=12, color="black")
        label = _f("gen {gen} #{index}").format(gen=gen, index=e.get("index", 0)) + (
            _f(" (syntax error)") if gen in failed else ""
        )
        top.text(stop - t0 + 0.01, y, label, va="center", fontsize=8.5)
    outcomes = sorted((e["t"], e["kind"]) for e in events if e["kind"] in (Kind.RELOAD_DONE, Kind.RELOAD_FAILED))
    for i, t in enumerate(edits):
        answer = next((kind for when, kind in outcomes if when > t), None)
        label = _f("edit {k}").format(k=i + 1) + (_f(": syntax error") if answer == Kind.RELOAD_FAILED else "")
        top.axvline(t - t0, color="tab:red" if answer == Kind.RELOAD_FAILED else "black", linestyle="--", linewidth=1)
        top.text(t - t0, len(rows) - 0.3, label, rotation=90, va="top", ha="right", fontsize=8.5)
    top.set_yticks([])
    top.set_ylim(-0.7, len(rows) + 0.3)
    top.set_xlim(0, (end - t0) * 1.12)
    top.set_xlabel(_f("time since the first worker started (s)"))
    top.set_ylabel(_f("worker processes"))
    top.set_title(
        _f(
            "Each edit forks a new generation; the old one leaves only once the new one is ready\n"
            "(bar: a worker's life; tick: ready; red: refused, the old generation kept serving)"
        ),
        fontsize=10.5,
    )
    top.grid(axis="x", alpha=0.3)
    return rows


def _reload_steps(bottom: Any, events: list[Event], edits: list[float]) -> None:
    """A bar per reload that answered an edit, split into its steps (``PHASES``), in ms from the save."""
    # Not the first generation, nor one sent by a signal: those with the time the change was seen.
    done = [
        e
        for e in events
        if e["kind"] == Kind.RELOAD_DONE
        and e.get("trigger", "watch") == "watch"
        and isinstance((e.get("phases") or {}).get("seen"), (int, float))
        and any(t <= e["phases"]["seen"] for t in edits)
    ]
    failed = [e for e in events if e["kind"] == Kind.RELOAD_FAILED]
    right = 0.0
    for e in done:
        phases = e["phases"]
        saved = max(t for t in edits if t <= phases["seen"])  # the edit this reload answered
        previous = saved
        for key, label, colour in PHASES:
            if isinstance(phases.get(key), (int, float)):
                bottom.barh(
                    e["generation"],
                    (phases[key] - previous) * 1000,
                    left=(previous - saved) * 1000,
                    height=0.6,
                    color=colour,
                    label=": ".join(_f(part) for part in label),
                )
                previous = phases[key]
        total = (previous - saved) * 1000
        right = max(right, total)
        bottom.text(total + 0.5, e["generation"], _f("{ms:.0f} ms").format(ms=total), va="center", fontsize=8.5)
    for e in failed:
        bottom.text(
            0.5,
            e["generation"],
            _f("gen {gen} refused: {error}").format(gen=e["generation"], error=e.get("error", "")[:60]),
            va="center",
            fontsize=8.5,
            color="tab:red",
        )
    handles, labels = bottom.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    bottom.legend(
        unique.values(),
        unique.keys(),
        fontsize=8.5,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.3),
        ncol=3,
        frameon=False,
    )
    gens = sorted({e["generation"] for e in done} | {e["generation"] for e in failed})
    bottom.set_yticks(gens, [_f("gen {gen}").format(gen=g) for g in gens])
    bottom.set_xlim(0, right * 1.15 + 1)
    bottom.set_xlabel(_f("time since the file was saved (ms)"))
    bottom.set_ylabel(_f("reload"))
    bottom.set_title(_f("Reload phases per generation"), fontsize=10.5)
    bottom.grid(axis="x", alpha=0.3)


# --- heartbeat lifetimes from a real run ---------------------------------------------------------


def record_heartbeat_run(plan: Plan) -> tuple[list[Event], set[str]]:
    """Silent and chatty clients under a short heartbeat; the events and the silent clients' peers."""
    with Lab(workers=2, watch=False, heartbeat_idle=plan.idle, heartbeat_interval=plan.interval) as lab:
        quiet = [lab.silent() for _ in range(plan.silent)]
        peers = {"{}:{}".format(*c.sock.getsockname()[:2]) for c in quiet}
        talkers = [lab.chatty(every=plan.idle / 4, duration=60) for _ in range(plan.chatty)]
        for c in quiet:
            if not c.wait_closed(timeout=plan.idle + plan.interval + 5):
                raise LabError("a silent client was not closed by the heartbeat: see the server's log")
        # The chatty ones outlive twice the idle time, so their staying open means something.
        opened = wait_until(lambda: lab.of(Kind.CONN_OPEN)[:1], timeout=5, what="a connection")[0]["t"]
        time.sleep(max(0.0, opened + 2 * plan.idle - time.monotonic()))
        lab.note(Kind.FIGURE_END)
        for t in talkers:
            t.stop()
        lab.stop()
        return list(lab.read_events()), peers


def _closing_note(close: Event | None) -> str:
    """Why and when a connection closed, as written beside its bar (None: open at the end)."""
    if close is not None and close.get("reason") == "idle" and "idle" in close:
        return _f("closed by the heartbeat after {s:.2f} s idle").format(s=close["idle"])
    if close is not None:
        return _f("closed: {reason}").format(reason=close.get("reason"))
    return _f("still open")


def heartbeat_lifetimes(events: list[Event], silent_peers: set[str], plan: Plan) -> Figure:
    """One bar per connection from open to close, silent vs chatty, with why and when it closed."""
    opens = [e for e in events if e["kind"] == Kind.CONN_OPEN]
    closes = {(e["pid"], e["conn"]): e for e in events if e["kind"] == Kind.CONN_CLOSE}
    end = next((e["t"] for e in events if e["kind"] == Kind.FIGURE_END), max(e["t"] for e in events))
    t0 = min(e["t"] for e in opens)
    opens.sort(key=lambda e: (e["peer"] not in silent_peers, e["t"]))
    fig = Figure(figsize=(10, 2.4 + 0.5 * len(opens)))
    ax = fig.add_subplot()
    ax.axvspan(
        plan.idle,
        plan.idle + plan.interval,
        color="tab:orange",
        alpha=0.15,
        label=_f("closing window: idle + up to one check interval ({s:g} s)").format(s=plan.interval),
    )
    ax.axvline(plan.idle, color="tab:orange", linestyle="--", linewidth=1)
    for y, e in enumerate(opens):
        silent = e["peer"] in silent_peers
        close = closes.get((e["pid"], e["conn"]))
        # A chatty connection closed only by the final graceful stop was open until the figure's end.
        early = close if close is not None and close["t"] <= end else None
        stop = early["t"] if early is not None else end
        colour = "tab:orange" if silent else "tab:blue"
        ax.barh(
            y,
            stop - e["t"],
            left=e["t"] - t0,
            height=0.55,
            color=colour,
            label=_f("silent client (never sends)")
            if silent
            else _f("chatty client (a line every {s:g} s)").format(s=plan.idle / 4),
        )
        ax.text(stop - t0 + 0.02, y, _closing_note(early), va="center", fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8.5, loc="lower right")
    kinds = [_f("silent :") if e["peer"] in silent_peers else _f("chatty :") for e in opens]
    ax.set_yticks(range(len(opens)), [kind + e["peer"].rsplit(":", 1)[-1] for kind, e in zip(kinds, opens)])
    ax.set_xlim(0, (end - t0) * 1.6)
    ax.set_ylim(-2.2, len(opens) - 0.4)  # room under the bars for the legend
    ax.set_xlabel(_f("time since the first connection opened (s)"))
    ax.set_ylabel(_f("client connection (local port)"))
    ax.set_title(
        _f(
            "Heartbeat on a real server: idle {idle:g} s, checked every {interval:g} s\n"
            "silent connections are closed, chatty ones stay"
        ).format(idle=plan.idle, interval=plan.interval),
        fontsize=11,
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# --- benchmark results -----------------------------------------------------------------------------


def bench_watcher(data: dict[str, Any]) -> Figure:
    """Latency, set-up time and burst completeness of the watcher vs watchfiles, watchdog, inotifywait."""
    tools = data["tools"]
    names = list(tools)
    fig = Figure(figsize=(12, 4.4))
    axes = fig.subplots(1, 3)
    # The numbers in the titles are the run's: its largest tree, its burst, its debounce.
    dirs = max(
        int(k.split("_")[1]) for t in tools.values() for k in t if k.startswith("setup_") and k.split("_")[1].isdigit()
    )
    written = max(t["burst"]["written"] for t in tools.values() if "burst" in t)
    settings = data.get("settings", {})
    debounce = settings.get("debounce", DEFAULT_DEBOUNCE)
    settle = settings.get("settle", DEFAULT_SETTLE)
    panels = [
        (_f("change -> report, median (ms)"), lambda t: t.get("latency_in_place", {}).get("median_ms"), "{:.1f}"),
        (
            _f("set-up for {dirs:,} directories (s)").format(dirs=dirs),
            lambda t: t.get(f"setup_{dirs}", {}).get("setup_s"),
            "{:.3f}",
        ),
        (
            _f("burst of {written:,} changes: reported (%)").format(written=written),
            lambda t: 100 * t["burst"]["reported"] / t["burst"]["written"] if "burst" in t else None,
            "{:.0f}",
        ),
    ]
    for panel, (ax, (title, value, fmt)) in enumerate(zip(axes, panels)):
        values = [value(tools[n]) for n in names]
        shown = [(n, v) for n, v in zip(names, values) if v is not None]
        bars = ax.bar(
            [n for n, _ in shown],
            [v for _, v in shown],
            color=["tab:green" if n == "lab" else "tab:gray" for n, _ in shown],
        )
        stacked = panel == 1  # set-up, with the lab's first poll on top: set-up's value inside
        ax.bar_label(bars, [fmt.format(v) for _, v in shown], fontsize=8.5, label_type="center" if stacked else "edge")
        if stacked:
            _first_poll(ax, {n: tools[n].get(f"setup_{dirs}", {}) for n, _ in shown}, fmt)
        ax.set_title(title, fontsize=10.5)
        ax.set_ylabel(title.rsplit("(", 1)[-1].rstrip(")"))
        ax.set_xlabel(_f("watcher"))
        ax.tick_params(axis="x", labelsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
    overflow = ", ".join(n for n in names if tools[n].get("overflow", {}).get("rescan_said"))
    title = _f(
        "Watcher vs peers (the lab's latency includes its {settle:g} ms settle after a closed save, "
        "{quiet:g} ms quiet otherwise; on IN_Q_OVERFLOW, reports it and rescans: {tools})"
    ).format(settle=settle * 1000, quiet=debounce * 1000, tools=overflow or _f("none"))
    fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=11.5)
    fig.tight_layout()
    return fig


def _first_poll(ax: Axes, setups: dict[str, dict[str, float]], fmt: str) -> None:
    """On the set-up bars: the first poll's listing of what set-up left (the lab's), stacked."""
    late = {n: s for n, s in setups.items() if "first_poll_s" in s and "setup_s" in s}
    if late:
        bars = ax.bar(
            list(late),
            [s["first_poll_s"] for s in late.values()],
            bottom=[s["setup_s"] for s in late.values()],
            color="tab:green",
            alpha=0.3,
            hatch="//",
            label=_f("then its first poll lists the quiet folders"),
        )
        ax.bar_label(bars, ["+" + fmt.format(s["first_poll_s"]) for s in late.values()], fontsize=8.5)
        ax.legend(fontsize=8, loc="upper left")


def bench_reload(data: dict[str, Any]) -> Figure:
    """File write -> first answer from the new code, the lab vs uvicorn --reload, per edit."""
    fig = Figure(figsize=(8.5, 4.6))
    ax = fig.add_subplot()
    peers = [("lab", "tab:green"), ("uvicorn", "tab:gray")]
    for i, (name, colour) in enumerate(peers):
        run = data[name]
        ms = [v * 1000 for v in run["latencies_s"]]
        ax.scatter([i + (j - len(ms) / 2) * 0.02 for j in range(len(ms))], ms, color=colour, s=30, zorder=3)
        median = run["median_latency_s"] * 1000
        ax.hlines(median, i - 0.25, i + 0.25, color="black", linewidth=2)
        ax.text(
            i + 0.28,
            median,
            _f("median {ms:.0f} ms\n{failed} failed of {requests:,} requests").format(
                ms=median, failed=run["failed_requests"], requests=run["requests"]
            ),
            va="center",
            fontsize=9,
        )
    ax.set_xticks(range(len(peers)), [n for n, _ in peers])
    ax.set_xlim(-0.5, len(peers) - 0.1)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator([10, 20, 30, 50, 100, 200, 300, 500, 1000]))
    _plain_log(ax.yaxis)
    ax.set_xlabel(_f("server"))
    ax.set_ylabel(_f("file write -> new answer (ms, log scale)"))
    ax.set_title(
        _f("Reload latency: {what}\nlab / uvicorn median = {ratio:.2f}").format(
            what=data.get("what", ""), ratio=data["ratio_median_latency"]
        ),
        fontsize=10.5,
    )
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def bench_throughput(data: dict[str, Any]) -> Figure:
    """Requests per second under wrk, the lab vs uvicorn, median and each round."""
    fig = Figure(figsize=(8, 4.6))
    ax = fig.add_subplot()
    names = list(data["median_rps"])
    bars = ax.bar(
        names,
        [data["median_rps"][n] for n in names],
        color=["tab:green" if n == "lab" else "tab:gray" for n in names],
        alpha=0.8,
    )
    ax.bar_label(
        bars,
        [_f("median\n{rps:,.0f}").format(rps=data["median_rps"][n]) for n in names],
        label_type="center",
        fontsize=10,
        color="white",
        fontweight="bold",
    )
    for i, n in enumerate(names):
        rounds = [r["rps"] for r in data.get("runs", {}).get(n, [])]
        ax.scatter([i] * len(rounds), rounds, color="black", s=14, zorder=3, label=_f("one round") if i == 0 else None)
    ax.set_xlabel(_f("server (2 workers each)"))
    ax.set_ylabel(_f("requests per second"))
    ax.set_title(
        _f("Throughput: {wrk} keep-alive GET / on loopback\nlab / uvicorn = {ratio:.2f}").format(
            wrk=data.get("wrk", "wrk"), ratio=data["ratio"]
        ),
        fontsize=10.5,
    )
    ax.legend(fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.12)
    fig.tight_layout()
    return fig


# The least each heartbeat panel draws on its log axis. A cost is a timing less the same loop's
# time with a no-op: where the two are within the machine's noise, the difference can come out
# below these (even negative, in results measured before benchmarks/heartbeat.py timed both together).
HEARTBEAT_FLOORS = {"cpu_percent": 0.001, "touch_ns": 1.0}


def _floored(ax: Any, xs: list[float], values: list[float], floor: float, **style: Any) -> bool:
    """A line of ``values``, those below ``floor`` drawn at it, hollow; True when there were any."""
    low = [i for i, v in enumerate(values) if v < floor]
    shown = [i for i in range(len(values)) if i not in low]
    line = ax.plot(xs, [max(v, floor) for v in values], marker="o", markevery=shown, **style)[0]
    ax.plot([xs[i] for i in low], [floor] * len(low), "o", markerfacecolor="white", markeredgecolor=line.get_color())
    return bool(low)


def bench_heartbeat(data: dict[str, Any]) -> Figure:
    """CPU cost of each heartbeat strategy as connections grow, and the cost of one message."""
    rows = data["steady_state"]
    strategies = sorted({r["strategy"] for r in rows})
    default = data.get("default_strategy")
    fig = Figure(figsize=(11, 4.4))
    axes = fig.subplots(1, 2)
    hollows: list[tuple[Any, Any]] = []  # (panel, the legend entry of its hollow points)
    for ax, key, label in (
        (axes[0], "cpu_percent", _f("CPU (% of one core)")),
        (axes[1], "touch_ns", _f("work per message (ns)")),
    ):
        floor, floored = HEARTBEAT_FLOORS[key], False
        for s in strategies:
            mine = sorted((r["connections"], r[key]) for r in rows if r["strategy"] == s)
            floored |= _floored(
                ax,
                [c for c, _ in mine],
                [v for _, v in mine],
                floor,
                label=s + (_f(" (default)") if s == default else ""),
                linewidth=2.5 if s == default else 1.2,
            )
        if floored:  # a legend entry says what a hollow point is; the legend finds room for it
            note = _f("hollow: measured below {floor:g} (timing noise), drawn at {floor:g}").format(floor=floor)
            hollows.append((ax, ax.plot([], [], "o", markerfacecolor="white", markeredgecolor="gray", label=note)[0]))
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_xlabel(_f("connections tracked"))
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].yaxis.set_major_locator(FixedLocator([1, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 5000]))
    axes[0].set_title(_f("Bookkeeping CPU"), fontsize=10.5)
    axes[1].set_title(_f("Cost of noting one message"), fontsize=10.5)
    axes[0].legend(fontsize=9)  # the strategies, and the hollow points if that panel has any
    for ax, hollow in hollows:
        if ax is not axes[0]:
            ax.legend(handles=[hollow], fontsize=8)
    settings = data.get("settings", {})
    fig.suptitle(
        _f(
            "Heartbeat strategies (simulated clock: idle {idle} s, check every {interval} s, a message "
            "every {period} s)"
        ).format(
            idle=settings.get("idle", "?"), interval=settings.get("interval", "?"), period=settings.get("period", "?")
        ),
        fontsize=11.5,
    )
    fig.tight_layout()
    return fig


def bench_connections(data: dict[str, Any]) -> Figure:
    """Real idle connections, per strategy: when each closed after it opened, what holding them cost."""
    settings, runs = data["settings"], data["runs"]
    fig = Figure(figsize=(10, 4.8))
    ax = fig.subplots()
    held = []
    for run in runs:
        hist, name, expiry, h = run["expiry"]["histogram"], run["strategy"], run["expiry"], run["holding"]
        default = name == settings.get("default_strategy")
        label = (
            _f("{name} (default): {ok:,} of {n:,} in bounds") if default else _f("{name}: {ok:,} of {n:,} in bounds")
        )
        ax.stairs(
            hist["counts"],
            hist["edges"],
            linewidth=2.2 if default else 1.3,
            label=label.format(name=name, ok=expiry["within_bounds"], n=expiry["connections"]),
        )
        held.append(
            _f("{name}: {cpu:.2f} % of one core, {bytes:,} B per connection").format(
                name=name, cpu=h["cpu_percent_of_one_core"], bytes=h["uss_per_connection_bytes"]
            )
        )
    idle = settings["expiry_idle"]
    for x, text in ((idle, _f("idle ({s:g} s)").format(s=idle)), (4.95, "4.95 s"), (5.35, "5.35 s")):
        ax.axvline(x, color="grey", linestyle=":" if x == idle else "--")
        ax.text(x, 0.97, " " + text, transform=ax.get_xaxis_transform(), fontsize=9, va="top")
    ax.set_xlabel(
        _f("open to close, from the client kernel's TCP_INFO (SYN-ACK to FIN) [s]; later ones in the last bin")
    )
    ax.set_ylabel(_f("connections per 10 ms"))
    ax.set_yscale("log")  # the few late ones show
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    connections, processes = (
        (runs[0]["holding"]["connections"], runs[0]["holding"]["server_processes"]) if runs else (0, "?")
    )
    heading = _f("{n:,} held, idle {idle:g} s, all {processes} server processes:").format(
        n=connections, idle=settings["hold_idle"], processes=processes
    )
    box = {"boxstyle": "round", "facecolor": "white", "alpha": 0.9}
    ax.text(0.99, 0.80, "\n".join([heading, *held]), transform=ax.transAxes, ha="right", va="top", fontsize=9, bbox=box)
    ax.legend(loc="lower left", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(
        _f(
            "python -m lab serve, {workers} workers: {n:,} idle loopback connections, "
            "closed after {idle:g} s idle, checked every {interval:g} s"
        ).format(workers=settings["workers"], n=connections, idle=idle, interval=settings["interval"]),
        fontsize=10.5,
    )
    fig.tight_layout()
    return fig


BENCHMARKS: dict[str, Callable[[dict[str, Any]], Figure]] = {
    "watcher": bench_watcher,
    "reload": bench_reload,
    "throughput": bench_throughput,
    "heartbeat": bench_heartbeat,
    "connections": bench_connections,
}
