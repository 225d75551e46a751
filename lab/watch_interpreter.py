"""Interpreting raw inotify records: pure logic, no I/O, no clock (the caller passes ``now``).

The ``Interpreter`` is fed records ``(wd, mask, cookie, name)`` as the kernel queued them and
turns them into facts for a ``Debouncer`` (created, modified, deleted, moved) and into the few
things only the I/O shell can do, returned as actions:

* ``Scan(path, why)``: watch the directory ``path`` and everything below it, then list it and
  report each wanted file through ``appeared`` (a directory created or moved in);
* ``Unwatch(wds)``: remove these watches (a directory moved out or renamed to an ignored name:
  its watches would go on reporting under paths that are wrong);
* ``RESCAN``: records were lost (``IN_Q_OVERFLOW``): rebuild the watches, list the tree and hand
  the listing to ``rescanned``, which compares it with the snapshot; or, with no record lost, a
  quiet directory's files were never listed (``unlisted``): the listing completes the snapshot.

A rename is two records paired by cookie. The kernel queues both in the same syscall, under the
directory's lock, so a ``MOVED_FROM`` still unpaired went out of the tree once the queue is
drained (``drained``), or as soon as a later record reuses its path or moves its directory.
Should a read ever split a pair, the outcome is still right: deleted + created, a directory
scanned.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from posixpath import dirname

from lab.debounce import DEFAULT_DEBOUNCE, Change, Debouncer
from lab.watch_filter import NameFilter
from lab.watch_index import UNSIGNED, Signature, WatchIndex

__all__ = ["RESCAN", "Interpreter", "Mask", "Record", "Rescan", "Scan", "Unwatch", "mask_name", "root_of"]

Record = tuple[int, int, int, str]  # (wd, mask, cookie, name), as inotify_simple's Event


class Mask(enum.IntEnum):
    """The inotify mask bits (``<sys/inotify.h>``, without ``IN_``)."""

    ACCESS = 0x00000001
    MODIFY = 0x00000002
    ATTRIB = 0x00000004
    CLOSE_WRITE = 0x00000008
    CLOSE_NOWRITE = 0x00000010
    OPEN = 0x00000020
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE = 0x00000200
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    UNMOUNT = 0x00002000
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    ONLYDIR = 0x01000000
    DONT_FOLLOW = 0x02000000
    EXCL_UNLINK = 0x04000000
    MASK_ADD = 0x20000000
    ISDIR = 0x40000000
    ONESHOT = 0x80000000


_MASK_NAMES: dict[int, str] = {}


def mask_name(mask: int) -> str:
    """``IN_CREATE|IN_ISDIR`` for the mask of a record (for the log)."""
    name = _MASK_NAMES.get(mask)
    if name is None:
        name = _MASK_NAMES[mask] = "|".join(f"IN_{f.name}" for f in Mask if f & mask)
    return name


@dataclass(frozen=True)
class Scan:
    """Watch the directory ``path`` and all below it; report its files as appeared."""

    path: str
    why: tuple[str, ...]


@dataclass(frozen=True)
class Unwatch:
    """Remove these watches (the kernel may have removed some already)."""

    wds: tuple[int, ...]


@dataclass(frozen=True)
class Rescan:
    """Records were lost: rebuild the watches and compare the tree with the snapshot."""


RESCAN = Rescan()
Action = Scan | Unwatch | Rescan
_MOVED_OUT = "IN_MOVED_FROM without IN_MOVED_TO: moved out of the watched tree"
_IGNORED_DIR = "directory name ignored, never watched"


def root_of(path: str, roots: Iterable[str]) -> str:
    """The innermost of ``roots`` that holds ``path`` (``path`` itself if none does)."""
    inside = [r for r in roots if path == r or path.startswith(r.rstrip("/") + "/")]
    return max(inside, key=len, default=path)


class Interpreter:
    """Records in, facts and actions out. ``roots``: the watched root directories;
    ``file_roots``: the files watched one by one; ``limits``:
    the kernel's inotify limits (for messages). ``log`` says why records were dropped;
    ``problems`` holds ``(kind, text)`` a user must hear of (also in ``log``)."""

    def __init__(
        self,
        names: NameFilter,
        roots: list[str],
        file_roots: Iterable[str] = (),
        quiet: float = DEFAULT_DEBOUNCE,
        max_wait: float = 0.5,
        limits: dict[str, int] | None = None,
        log_size: int = 1000,
    ):
        self.names = names
        self.roots = roots
        self.file_roots = list(file_roots)
        self.limits = limits or {}
        self.index = WatchIndex()
        self.log: deque[str] = deque(maxlen=log_size)
        self.problems: deque[tuple[str, str]] = deque(maxlen=log_size)
        self.debouncer = Debouncer(quiet, max_wait, on_drop=self._dropped)
        self._moves: dict[int, tuple[str, bool, bool, str]] = {}  # cookie -> unpaired MOVED_FROM
        self._moving: dict[str, dict[str, int]] = {}  # by directory: unpaired MOVED_FROM path -> cookie
        self._later: list[Action] = []  # actions of moves settled early, for ``drained``
        self._rebuild: list[str] = []  # why the snapshot must be rebuilt, though no record was lost
        self._rescans: list[Change] = []
        self._overflowed = False
        self._lost: list[str] = []  # paths held when records were lost (see ``rescanned``)

    def problem(self, kind: str, text: str) -> None:
        self.log.append(text)
        self.problems.append((kind, text))

    # --- records ----------------------------------------------------------------------------------

    def feed(self, record: Record, now: float) -> Action | None:
        """Interprets one record; returns what the shell must do now, if anything."""
        wd, mask, cookie, name = record
        if mask & Mask.Q_OVERFLOW:
            self._overflowed = True
            return None
        directory = self.index.wd_path.get(wd)
        if directory is None:
            return None  # a watch already forgotten (moved out, deleted): its last records
        if mask & Mask.IGNORED:
            self.index.forget_wd(wd)
            return None
        if mask & (Mask.DELETE_SELF | Mask.MOVE_SELF):
            return self._self_record(mask, directory)
        only = self.index.only.get(wd)
        if only is not None and name not in only:
            return None  # a neighbour of a single watched file
        path = f"{directory}/{name}"
        why = f"wd={wd} {mask_name(mask)} cookie={cookie} name={name!r} -> {path}"
        if mask & Mask.ISDIR:
            return self._dir_record(mask, cookie, path, name, why, now)
        self._file_record(mask, cookie, path, name, why, now)
        return None

    @property
    def overflowed(self) -> bool:
        """An IN_Q_OVERFLOW was fed and its rescan is not done yet."""
        return self._overflowed

    def drained(self, now: float) -> list[Action]:
        """The kernel's queue is empty: unpaired moves went out; lost records need a rescan."""
        actions, self._later = self._later, []
        self._moving.clear()  # settled in their order: a move out of a moved directory came first
        for cookie in list(self._moves):
            action = self._moved_out(*self._moves.pop(cookie), now=now)
            if action is not None:
                actions.append(action)
        if self._overflowed or self._rebuild:
            actions.append(RESCAN)
        return actions

    def _move_from(self, cookie: int, path: str, is_dir: bool, wanted: bool, why: str) -> None:
        self._moves[cookie] = (path, is_dir, wanted, why)
        self._moving.setdefault(dirname(path), {})[path] = cookie

    def _pair(self, cookie: int) -> tuple[str, bool, bool, str] | None:
        pair = self._moves.pop(cookie, None)
        if pair is not None and self._moving.get(dirname(pair[0]), {}).get(pair[0]) == cookie:
            del self._moving[dirname(pair[0])][pair[0]]
        return pair

    def _made_anew(self, path: str, now: float) -> None:
        """``path`` is created or moved in: an unpaired MOVED_FROM of that path went out of the
        tree (its pair would have come first), and is settled before the new one is indexed."""
        pending = self._moving.get(dirname(path))
        cookie = pending.pop(path, None) if pending else None
        if cookie is not None:
            action = self._moved_out(*self._moves.pop(cookie), now=now)
            if action is not None:
                self._later.append(action)

    def _settle_under(self, top: str, now: float) -> None:
        """``top`` is renamed or goes: unpaired moves out of its subtree came first, and are
        settled under the paths they had (the shell skips a watch added again meanwhile)."""
        if self._moving:
            for directory in self.index.subtree(top):
                for path in list(self._moving.get(directory, ())):
                    self._made_anew(path, now)

    def _self_record(self, mask: int, directory: str) -> Unwatch | None:
        if directory not in self.roots:
            return None  # other directories: handled by their parent's records
        what = "deleted" if mask & Mask.DELETE_SELF else "moved away"
        self.problem("root-lost", f"watched root {directory} was {what}: no longer watched")
        if mask & Mask.MOVE_SELF:  # its watches live on under paths that are now wrong
            return Unwatch(tuple(self.index.forget_tree(directory)))
        return None

    def _file_record(self, mask: int, cookie: int, path: str, name: str, why: str, now: float) -> None:
        wanted = self.names.wanted(path, name)
        if mask & Mask.MOVED_FROM:
            self._move_from(cookie, path, False, wanted, why)
        elif mask & Mask.MOVED_TO:
            self._file_moved_to(cookie, path, name, wanted, why, now)
        elif not wanted:
            self._drop(name, why)
        elif mask & Mask.CREATE:
            self._made_anew(path, now)
            self.debouncer.created(path, now, (why,), writing=True)
        elif mask & Mask.CLOSE_WRITE:  # the writer is done: the batch may end after settle
            self.debouncer.modified(path, now, (why,), settled=True)
        elif mask & Mask.MODIFY:
            self.debouncer.modified(path, now, (why,), writing=True)
        elif mask & Mask.DELETE:
            self.debouncer.deleted(path, now, (why,))

    def _file_moved_to(self, cookie: int, path: str, name: str, wanted: bool, why: str, now: float) -> None:
        pair = self._pair(cookie)
        self._made_anew(path, now)
        if pair is None:
            if wanted:
                self.appeared(path, now, (why, "moved in from outside the watched tree"), settled=True)
            else:
                self._drop(name, why)
            return
        src, _, src_wanted, src_why = pair
        rule = f"paired IN_MOVED_FROM/IN_MOVED_TO cookie={cookie}"
        if src_wanted and wanted:
            self.debouncer.moved(src, path, now, (src_why, why, rule), replaced=path in self.index.files)
        elif src_wanted:
            self.debouncer.deleted(src, now, (src_why, why, f"{rule}: renamed to {name!r}, which is not watched"))
        elif wanted:
            # write-temp-then-rename: the temp file was never reported; the target has new
            # content (a modification if it existed)
            self.appeared(path, now, (src_why, why, f"{rule}: a save by rename onto {name!r}"), settled=True)
        else:
            self._drop(name, f"{src_why}; {why}")

    def _dir_record(self, mask: int, cookie: int, path: str, name: str, why: str, now: float) -> Action | None:
        ignored = self.names.ignored(name)
        if mask & Mask.MOVED_FROM:
            self._move_from(cookie, path, True, not ignored, why)
        elif mask & Mask.MOVED_TO:
            return self._dir_moved_to(cookie, path, name, ignored, why, now)
        elif ignored:
            self.log.append(f"dropped {why}: {_IGNORED_DIR}")
        elif mask & Mask.CREATE:
            self._made_anew(path, now)
            if path not in self.index.path_wd:  # else: found and listed by its parent's listing
                return Scan(path, (why, f"synthesized by scanning new directory {path}"))
        elif mask & Mask.DELETE:
            self._drop_tree(path, now, (why, "directory deleted"))
        return None

    def _dir_moved_to(self, cookie: int, path: str, name: str, ignored: bool, why: str, now: float) -> Action | None:
        pair = self._pair(cookie)
        self._made_anew(path, now)
        if pair is not None and pair[2]:
            src, src_why = pair[0], pair[3]
            if not ignored:
                if path in self.index.path_wd:  # onto a watched directory: replaced, or exchanged
                    self._rebuild.append(f"{src} renamed onto the watched {path}: its watches are read again")
                self._rename_tree(src, path, now, (src_why, why, f"paired IN_MOVED_FROM/IN_MOVED_TO cookie={cookie}"))
                return None
            return Unwatch(
                self._drop_tree(src, now, (src_why, why, f"renamed to the ignored name {name!r}: no longer watched"))
            )
        if ignored:
            self.log.append(f"dropped {why}: {_IGNORED_DIR}")
            return None
        return Scan(path, (why, f"synthesized by scanning directory {path}, moved into the watched tree"))

    def _moved_out(self, path: str, is_dir: bool, wanted: bool, why: str, now: float) -> Unwatch | None:
        if is_dir and wanted:
            return Unwatch(self._drop_tree(path, now, (why, _MOVED_OUT)))
        if wanted:
            self.debouncer.deleted(path, now, (why, _MOVED_OUT))
        else:
            self.log.append(f"dropped {why}: {_MOVED_OUT}; not watched")
        return None

    # --- facts ------------------------------------------------------------------------------------

    def appeared(self, path: str, now: float, why: tuple[str, ...], settled: bool = False) -> None:
        """New content at ``path``: a modification if the file existed before this batch.
        ``settled``: it was renamed into place, so it is complete (a scan finds files that may
        still be written)."""
        if path in self.index.files:
            self.debouncer.modified(path, now, why, settled=settled)
        else:
            self.debouncer.created(path, now, why, settled=settled)

    def _files_under(self, subtree: list[str]) -> list[str]:
        """Wanted files in the watched directories ``subtree`` now: known at the last batch and
        not deleted since, or appeared in this batch."""
        held, files, dir_files = self.debouncer.state, self.index.files, self.index.dir_files
        known = [p for d in subtree for p in dir_files.get(d, ()) if held(p) is not False]
        appeared = self.debouncer.paths_in
        return known + [p for d in subtree for p in appeared(d) if p not in files]

    def _rename_tree(self, old: str, new: str, now: float, why: tuple[str, ...]) -> None:
        """A directory renamed inside the tree: its watches now stand for the new paths."""
        self._settle_under(old, now)
        subtree = self.index.subtree(old)
        files = self._files_under(subtree)
        self.index.rename(old, new, subtree)
        inside = f"inside renamed directory {old} -> {new}"
        for path in files:
            dst = new + path[len(old) :]
            self.debouncer.moved(path, dst, now, (*why, inside), replaced=dst in self.index.files)

    def _drop_tree(self, old: str, now: float, why: tuple[str, ...]) -> tuple[int, ...]:
        """A directory deleted or moved out: its files are deleted; its watches are forgotten
        (returned: the shell removes them unless the directory is gone)."""
        self._settle_under(old, now)
        for path in self._files_under(self.index.subtree(old)):
            self.debouncer.deleted(path, now, (*why, f"inside {old}"))
        return tuple(self.index.forget_tree(old))

    # --- the overflow rescan ----------------------------------------------------------------------

    def lose_all(self) -> tuple[set[int], int]:
        """Before a rescan: forget every watch, held change and unpaired move. Returns the old
        wds and how many changes were held."""
        self._lost = self.debouncer.discard()
        self._moves.clear()
        self._moving.clear()
        return self.index.forget_watches(), len(self._lost)

    def rescanned(self, current: dict[str, Signature], dirs: int, took_ms: float, held: int, now: float) -> None:
        """The rescan listed ``current`` (path -> signature) in ``dirs`` directories: each
        difference from the snapshot is a fact, and every root gets a ``rescan`` change.

        A path held when records were lost changed since the last batch (the kernel said so),
        even if its signature matches: the snapshot's may have been taken after that change.
        With no record lost (only ``unlisted``), the records tell every change of content: only
        files missing from the snapshot, or in it and gone, are facts."""
        overflowed, self._overflowed = self._overflowed, False
        rule = "queue overflow: rescanned" if overflowed else "rescanned"
        files, debouncer, differences = self.index.files, self.debouncer, 0
        lost = set(self._lost)
        self._lost = []
        for path, sig in current.items():
            before = files.get(path)
            if before is None:
                debouncer.created(path, now, (f"{rule}: new since the last batch",))
            elif not overflowed:
                continue
            elif before == UNSIGNED:
                debouncer.modified(
                    path,
                    now,
                    (f"{rule}: no signature to compare with (taken after the records were lost, or not yet)",),
                )
            elif before != sig:
                debouncer.modified(path, now, (f"{rule}: inode, size or mtime changed since the last batch",))
            elif path in lost:
                debouncer.modified(
                    path, now, (f"{rule}: changed since the last batch by its records read before the overflow",)
                )
            else:
                continue
            differences += 1
        for path in files.keys() - current.keys():
            debouncer.deleted(path, now, (f"{rule}: gone since the last batch",))
            differences += 1
        limit = self.limits.get("max_queued_events", "?")
        overflow = (
            f"IN_Q_OVERFLOW: more than max_queued_events={limit} records were queued "
            "unread; the kernel dropped the rest"
        )
        why = (
            *([overflow] if overflowed else []),
            *self._rebuild,
            f"{rule} {dirs} directories and {len(current)} files in {took_ms:.1f} ms; "
            f"{differences} differ from the snapshot taken after the last batch",
            *([f"{held} changes held before the overflow were replaced by the rescan"] if overflowed else []),
        )
        self._rebuild = []
        for root in self.roots + self.file_roots:
            self._rescan(root, why)

    def unlisted(self, directory: str, why: str, rebuild: bool) -> None:
        """Set-up left the quiet ``directory`` to be listed later, and what it held at set-up can
        no longer be known (``why``): its root is reported as a rescan, as after lost records.
        ``rebuild``: its files now are not in the snapshot either (it moved, or could not be
        listed), so the drained queue asks for a rescan that rebuilds the snapshot and watches."""
        text = f"{directory}: {why}: its files at set-up are not known, changes in it may be missing"
        self.log.append(text)
        if rebuild:
            self._rebuild.append(text)
        else:
            self._rescan(root_of(directory, self.roots), (text, "call poll() soon after set-up to avoid this"))

    def _rescan(self, root: str, why: tuple[str, ...]) -> None:
        """A rescan of ``root`` in the next batch: one per root, with every reason."""
        for i, change in enumerate(self._rescans):
            if change.path == root:
                self._rescans[i] = Change("rescan", root, None, change.why + why)
                return
        self._rescans.append(Change("rescan", root, None, why))

    # --- batches ----------------------------------------------------------------------------------

    def due(self, now: float, backlog: bool) -> bool:
        """Is a batch due? ``backlog``: records are read but not all interpreted yet, so only
        ``max_wait`` makes it due."""
        if backlog:
            return self.debouncer.overdue(now)
        return self.debouncer.ready(now) or bool(self._rescans and not self.debouncer.pending)

    def timeout(self, now: float, backlog: bool) -> float | None:
        """Seconds until a batch may be due; 0 while records wait; None when nothing is held."""
        if backlog or (self._rescans and not self.debouncer.pending):
            return 0.0
        return self.debouncer.timeout(now)

    def take(self) -> list[Change]:
        """The batch: rescans first, then the coalesced changes."""
        changes = self._rescans + self.debouncer.take()
        self._rescans = []
        return changes

    # --- the log ----------------------------------------------------------------------------------

    def _drop(self, name: str, why: str) -> None:
        self.log.append(f"dropped {why}: {self.names.reason(name)}")

    def _dropped(self, path: str, why: tuple[str, ...]) -> None:
        self.log.append(f"dropped {path}: " + "; ".join(why))
