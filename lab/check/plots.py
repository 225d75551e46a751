"""Plots of a check (``--plots DIR``): drawn on ``Figure`` objects, no pyplot, no global state."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from lab.check.report import Report
from lab.check.verdicts import EARLY_SLACK, LATE_SLACK, NEVER_AFTER, latencies
from lab.i18n import _f, figure_fonts

figure_fonts()  # in Chinese, before any figure is made


def reload_figure(report: Report) -> Figure | None:
    """Latency per edit, and every answer by token over time (failures in red)."""
    raw = report.raw.get("reload")
    if raw is None:
        return None
    edits, answers = raw["edits"], raw["answers"]
    t0 = min((a.sent for a in answers), default=0.0)
    fig = Figure(figsize=(10, 6))
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1, 2]})
    lat = latencies(edits, answers, float("inf"))
    top.bar([e.token for e in edits], [0 if x is None else x * 1000 for x in lat], color="tab:blue")
    top.set(xlabel=_f("edit"), ylabel=_f("write -> first new answer (ms)"), title=_f("reload latency per edit"))
    ok = [a for a in answers if a.token is not None]
    bad = [a for a in answers if a.token is None]
    bottom.scatter([a.received - t0 for a in ok], [a.token for a in ok], s=4, label=_f("answer"))
    bottom.scatter([a.received - t0 for a in bad], [-0.5] * len(bad), s=8, color="tab:red", label=_f("failed"))
    for e in edits:
        bottom.axvline(e.written - t0, color="grey", lw=0.6, ls=":")
    bottom.set(
        xlabel=_f("time (s); dotted: an edit written"), ylabel=_f("token (0: the marker)"), title=_f("answers by token")
    )
    bottom.legend(loc="upper left")
    fig.tight_layout()
    return fig


def heartbeat_figure(report: Report) -> Figure | None:
    """Each silent connection's lifetime against the early / late / never bounds."""
    raw = report.raw.get("heartbeat")
    if raw is None:
        return None
    idle, interval = raw["idle"], raw["interval"]
    until = idle + interval + NEVER_AFTER
    fig = Figure(figsize=(9, 1.5 + 0.4 * len(raw["silent"])))
    ax = fig.subplots()
    for i, life in enumerate(raw["silent"]):
        lived = until if life.closed is None else life.closed - life.opened
        ax.barh(i, lived, color="tab:grey" if life.closed is None else "tab:blue")
    for x, label, colour in (
        (idle - EARLY_SLACK, _f("early before"), "tab:orange"),
        (idle + interval + LATE_SLACK, _f("late after"), "tab:red"),
        (until, _f("never closed"), "black"),
    ):
        ax.axvline(x, color=colour, ls="--", label=f"{label} {x:.2f} s")
    ax.set(
        xlabel=_f("seconds from connect to close"),
        ylabel=_f("silent connection"),
        title=_f("heartbeat: idle {idle:g} s, interval {interval:g} s").format(idle=idle, interval=interval),
    )
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def save(report: Report, directory: str | Path) -> list[Path]:
    """Write ``reload.png`` and ``heartbeat.png`` (those whose scenario ran) into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (("reload", reload_figure), ("heartbeat", heartbeat_figure)):
        fig = draw(report)
        if fig is not None:
            fig.savefig(out / f"{name}.png", dpi=100)
            paths.append(out / f"{name}.png")
    return paths
