"""The report of ``python -m lab check``: the checks, the figures behind them, a table, JSON."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any

from lab.check.verdicts import Check, checks
from lab.i18n import _

SECTIONS = ("reload", "broken", "heartbeat", "stop")


@dataclass
class Report:
    """``ok`` only if every check that ran passed; ``str(report)`` is the terminal table."""

    ok: bool
    checks: list[Check]
    sections: dict[str, dict[str, Any] | None]
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # observations, for plots

    @classmethod
    def build(cls, sections: dict[str, dict[str, Any] | None], raw: dict[str, Any], notes: list[str]) -> Report:
        found = checks(sections)
        return cls(bool(found) and all(c.ok for c in found), found, sections, notes, raw)

    @property
    def failed(self) -> list[str]:
        """Names of the checks that failed."""
        return [c.name for c in self.checks if not c.ok]

    # Each scenario's figures (the JSON's sections): None when the scenario did not run.
    reload = property(lambda self: self.sections.get("reload"))
    broken = property(lambda self: self.sections.get("broken"))
    heartbeat = property(lambda self: self.sections.get("heartbeat"))
    stop = property(lambda self: self.sections.get("stop"))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [c.to_json() for c in self.checks],
            **{name: self.sections.get(name) for name in SECTIONS},
            "notes": self.notes,
            "duration_s": self.raw.get("duration_s"),
        }

    def __str__(self) -> str:
        rows = [(_("check"), _("value"), _("bound"), "")] + [
            (c.name, _short(c.value), _(c.bound), _("pass") if c.ok else _("FAIL")) for c in self.checks
        ]
        widths = [max(_width(r[i]) for r in rows) for i in range(3)]
        lines = []
        for i, row in enumerate(rows):
            lines.append("  ".join(cell + " " * (w - _width(cell)) for cell, w in zip(row, widths)) + "  " + row[3])
            if i and not self.checks[i - 1].ok:
                lines.append(f"    -> {self.checks[i - 1].detail}")
        lines += _figures(self.sections) + [_("note: {note}").format(note=n) for n in self.notes]
        verdict = (
            _("every check passed")
            if self.ok
            else _("FAILED: {checks}").format(checks=", ".join(self.failed) or _("no check ran"))
        )
        return "\n".join(lines + [verdict])


def _width(text: str) -> int:
    """The columns ``text`` takes in a terminal: a wide or full-width (CJK) character takes two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _short(value: Any) -> str:
    return (_("yes") if value else _("no")) if isinstance(value, bool) else str(value)


def _figures(sections: dict[str, dict[str, Any] | None]) -> list[str]:
    """One line of the main figures per scenario that ran."""
    out = []
    if r := sections.get("reload"):
        out.append(
            _("reload: {edits} edits, latency p50 {p50} ms, {ok} answers, {failed} failed").format(
                edits=r["edits"], p50=r["p50_ms"], ok=r["ok_requests"], failed=r["failed_requests"]
            )
        )
    if h := sections.get("heartbeat"):
        late = h["lateness_ms"]
        told = (
            _("heartbeat: idle {idle} s, interval {interval} s, silent closed {span} after the idle time")
            if late
            else _("heartbeat: idle {idle} s, interval {interval} s, no silent connection closed")
        )
        span = f"{min(late)} .. {max(late)} ms" if late else ""
        out.append(told.format(idle=h["idle_s"], interval=h["interval_s"], span=span))
    if s := sections.get("stop"):
        out.append(_("stop: exit after {s} s (status {code})").format(s=s["exit_s"], code=s["exit_code"]))
    return out
