"""Coalescing a burst of file events into one batch of changes: pure logic, no I/O, no clock.

The caller feeds facts ("this path was created / modified / deleted / moved") with the time it
saw them; the ``Debouncer`` keeps, per path, whether the file existed before the batch and
whether it exists now, and turns that into one ``Change`` per path when the batch is taken:

    existed before | exists now | change
    ---------------+------------+---------------------------------------------------
    no             | yes        | created   (created + modified = created)
    yes            | yes        | modified  (deleted + created = modified: vim's dance)
    yes            | no         | deleted   (modified + deleted = deleted)
    no             | no         | nothing   (created + deleted = nothing)

A move keeps its origin, so ``a -> b`` is reported as ``moved`` (and ``a -> b -> c`` as one move
``a -> c``) while ``a`` is still gone when the batch is taken.

A batch is due ``quiet`` seconds after the LAST fact (every fact restarts the quiet time, even one
about a path already held), or ``max_wait`` seconds after the first one, so that a stream of
events that never pauses still yields batches. While a held file is still open for writing (it
was modified, or created, and not yet closed), quiet alone does not end the batch: a writer that
stalls between truncating a file and writing it (a loaded machine) must not get a half-written
file reloaded. Only its close, or ``max_wait``, does.

A save that says it is finished needs no quiet time: when every held file was closed after
writing (``IN_CLOSE_WRITE``) or renamed into place (an atomic save), the batch is due ``settle``
seconds after the last fact (a millisecond or two: time for the same burst's other records to
arrive), not ``quiet``. A deletion, a modification still open, or a file found by a scan gives
no such word (a deletion is often the first half of a save: vim renames the old file away, then
writes a new one), so the quiet time still applies to a batch that holds one.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# A path edited a thousand times in one batch keeps its first lines of ``why``, then a count.
WHY_LIMIT = 12

# Seconds of quiet that end a burst: the one default of every front end (``Watcher``, ``lab
# watch``, ``lab serve``, ``Config``, ``Lab``). Short, because a file still open for writing
# holds its batch anyway (see above): waiting longer only adds to every reload's latency.
DEFAULT_DEBOUNCE = 0.02

# Seconds after the last fact that end a batch whose every file was closed or renamed into place:
# the records of one save (truncate, writes, close) are queued within microseconds, so a short
# settle still gathers them; it is what is left of the debounce in a plain save's reload.
DEFAULT_SETTLE = 0.002


@dataclass(frozen=True)
class Change:
    """One change of a file, and how it was made (``why``: raw records, then the rule applied)."""

    kind: str  # "created" | "modified" | "deleted" | "moved" | "rescan"
    path: str  # absolute path (the new path for "moved"; the watched root for "rescan")
    src: str | None = None  # the old path, for "moved"
    why: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out: dict = {"kind": self.kind, "path": self.path}
        if self.src is not None:
            out["src"] = self.src
        out["why"] = list(self.why)
        return out


@dataclass
class _Entry:
    existed: bool  # did the path exist when the batch began?
    exists: bool  # does it exist after the facts seen so far?
    origin: str | None = None  # where its content was moved from, within this batch
    why: list[str] = field(default_factory=list)
    lines: int = 0  # explanation lines given, kept or not
    facts: int = 0
    writing: bool = False  # modified or created, and not closed since
    settled: bool = False  # the last fact was a close after writing, or a rename into place

    def note(self, why: Iterable[str]) -> None:
        self.facts += 1
        for line in why:
            self.lines += 1
            if len(self.why) < WHY_LIMIT:
                self.why.append(line)


class Debouncer:
    """Holds the facts of one batch and says when it is due. Times are whatever clock you use."""

    def __init__(
        self,
        quiet: float = DEFAULT_DEBOUNCE,
        max_wait: float = 0.5,
        on_drop: Callable[[str, tuple[str, ...]], None] | None = None,
        settle: float = DEFAULT_SETTLE,
    ):
        if quiet < 0 or max_wait < 0 or settle < 0:
            raise ValueError("quiet, max_wait and settle must be >= 0")
        self.quiet = quiet
        self.settle = min(settle, quiet)  # never longer than the quiet time it shortens
        self.max_wait = max(max_wait, quiet)
        self.on_drop = on_drop  # told about paths whose facts cancel out (created + deleted)
        self._entries: dict[str, _Entry] = {}
        # Held paths by directory: a deleted or renamed directory finds its own without a scan
        # of every held path (one scan per directory was quadratic in a deleted tree).
        self._dirs: dict[str, dict[str, None]] = {}
        self._first: float | None = None
        self._last: float | None = None
        self._writing = 0  # entries still open for writing
        self._unsettled = 0  # entries whose last fact does not say the file is complete

    # --- feeding facts ------------------------------------------------------------------------

    def created(
        self, path: str, now: float, why: Iterable[str] = (), writing: bool = False, settled: bool = False
    ) -> None:
        """``writing``: created by an open for writing that is not closed yet (IN_CREATE);
        ``settled``: its content is complete (renamed into place from outside)."""
        entry = self._entry(path, now, existed=False)
        if not entry.exists:
            entry.origin = None  # new content, unrelated to whatever was there before
        entry.exists = True
        self._set_state(entry, writing, settled and not writing)
        entry.note(why)

    def modified(
        self, path: str, now: float, why: Iterable[str] = (), writing: bool = False, settled: bool = False
    ) -> None:
        """``writing``: still open for writing (IN_MODIFY); False once closed (IN_CLOSE_WRITE).
        ``settled``: the record said the content is complete (IN_CLOSE_WRITE, or a rename onto
        the path)."""
        entry = self._entry(path, now, existed=True)
        entry.exists = True
        self._set_state(entry, writing, settled and not writing)
        entry.note(why)

    def deleted(self, path: str, now: float, why: Iterable[str] = ()) -> None:
        entry = self._entry(path, now, existed=True)
        entry.exists = False
        entry.origin = None
        self._set_state(entry, False, False)
        entry.note(why)

    def moved(self, src: str, dst: str, now: float, why: Iterable[str] = (), replaced: bool = False) -> None:
        """``src`` was renamed to ``dst``; ``replaced``: ``dst`` existed before this batch."""
        why = tuple(why)
        old = self._entry(src, now, existed=True)
        old.exists = False
        self._set_state(old, False, True)  # a rename is atomic: both ends are complete
        # The content keeps where it came from: a -> b -> c is a move a -> c; a file created in
        # this batch and then renamed is simply created under its new name.
        origin = old.origin if old.origin is not None else (src if old.existed else None)
        old.origin = None
        history = list(old.why)  # the new name inherits the story of the content so far
        old.note(why)
        new = self._entry(dst, now, existed=replaced)
        new.exists = True
        self._set_state(new, False, True)
        new.origin = origin if origin != dst else None
        new.why.extend(history[: WHY_LIMIT - len(new.why)])
        new.lines += len(history)
        new.facts += old.facts - 1
        new.note(why)

    def state(self, path: str) -> bool | None:
        """Whether a held path exists after the facts seen so far; None if it is not held."""
        entry = self._entries.get(path)
        return None if entry is None else entry.exists

    # --- timing -------------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return bool(self._entries)

    def deadline(self) -> float | None:
        """When the batch is due: quiet after the last fact (settle, if every held file was
        closed or renamed into place; never while one is open), capped at max_wait after the
        first."""
        if self._first is None or self._last is None:
            return None
        if self._writing:
            return self._first + self.max_wait
        wait = self.quiet if self._unsettled else self.settle
        return min(self._last + wait, self._first + self.max_wait)

    def timeout(self, now: float) -> float | None:
        """Seconds until the batch is due (0 if it is), or None when nothing is held."""
        deadline = self.deadline()
        return None if deadline is None else max(0.0, deadline - now)

    def ready(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def overdue(self, now: float) -> bool:
        """``max_wait`` has passed since the first fact: due even while facts keep coming."""
        return self._first is not None and now >= self._first + self.max_wait

    # --- taking the batch -----------------------------------------------------------------------

    def paths_in(self, directory: str) -> list[str]:
        """Held paths directly inside ``directory`` that exist now (a renamed directory takes
        them along)."""
        entries = self._entries
        return [p for p in self._dirs.get(directory, ()) if entries[p].exists]

    def take(self) -> list[Change]:
        """The batch as changes (in the order paths were first seen), and start a new one."""
        entries, self._entries = self._entries, {}
        self._dirs = {}
        self._first = self._last = None
        self._writing = self._unsettled = 0
        moved_away = {
            e.origin
            for e in entries.values()
            if e.exists and e.origin is not None and e.origin in entries and not entries[e.origin].exists
        }
        changes = []
        for path, e in entries.items():
            rule = f"merged {e.facts} facts into one change" if e.facts > 1 else None
            if e.lines > len(e.why):
                e.why.append(f"... and {e.lines - len(e.why)} more lines")
            if e.exists and e.origin in moved_away:
                kind, src = "moved", e.origin
                rule = f"paired the rename {e.origin} -> {path}" + (f"; {rule}" if rule else "")
            elif e.exists:
                kind, src = ("modified" if e.existed else "created"), None
            elif e.existed:
                if path in moved_away:
                    continue  # reported as the move of its content
                kind, src = "deleted", None
            else:
                if self.on_drop is not None:
                    self.on_drop(path, (*e.why, "created and deleted within one batch: nothing to report"))
                continue
            why = (*e.why, rule) if rule else tuple(e.why)
            changes.append(Change(kind, path, src, why))
        return changes

    def discard(self) -> list[str]:
        """Forget the batch (the caller rescans instead); returns the paths that were held."""
        paths = list(self._entries)
        self._entries = {}
        self._dirs = {}
        self._first = self._last = None
        self._writing = self._unsettled = 0
        return paths

    def _set_state(self, entry: _Entry, writing: bool, settled: bool) -> None:
        if entry.writing != writing:
            entry.writing = writing
            self._writing += 1 if writing else -1
        if entry.settled != settled:
            entry.settled = settled
            self._unsettled += -1 if settled else 1

    def _entry(self, path: str, now: float, existed: bool) -> _Entry:
        if self._first is None:
            self._first = now
        self._last = now
        entry = self._entries.get(path)
        if entry is None:
            entry = self._entries[path] = _Entry(existed=existed, exists=existed)
            self._unsettled += 1
            self._dirs.setdefault(posixpath.dirname(path), {})[path] = None
        return entry
