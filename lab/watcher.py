"""The recursive inotify watcher: the tutorial's §2 ``Inotify`` class, done for real.

One inotify instance, one watch per directory (never per file: saves replace files, and a watch
on a replaced inode goes deaf). Raw records are turned into facts about files and fed to a
``Debouncer``, which hands out one coalesced batch of ``Change``s after a quiet time.

What the tutorial's class misses and this one does:
- a directory created (or moved in) later is watched first and listed second, so a file written
  into it before its watch existed is found by the listing, and one written after is reported
  by the watch (``mkdir -p a/b/c`` + files, at once: every file reported);
- renames are paired by cookie and followed: a renamed directory's whole subtree keeps its
  watches under the new paths; a directory moved out of the tree loses its watches;
- a flood (200,000 files deleted at once) is interpreted ``RECORDS_PER_POLL`` records per
  ``poll``, ``timeout()`` 0 while more wait, so the caller's loop gets its turn between slices;
  the snapshot and the pending batch are indexed by directory, so the work is linear;
- ``IN_Q_OVERFLOW`` (events lost) is answered by a rescan against a snapshot of
  ``path -> (inode, size, mtime_ns)`` and a ``Change(kind="rescan")`` that says so;
- the file type is the real suffix (``a.b.py`` is ``.py``); editor swap/backup files and
  directories such as ``.git`` are ignored by name, and ignored directories get no watch at all;
- the kernel's limits are read at run time; running out of watches is a clear ``LabError``.

Not thread-safe: one thread (or one event loop) calls ``poll``/``read_batch``.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import gc
import math
import os
import re
import select
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from inotify_simple import Event, INotify, flags, parse_events

from lab.debounce import DEFAULT_DEBOUNCE, Change, Debouncer
from lab.errors import LabError

__all__ = ["DEFAULT_IGNORE", "Change", "Watcher", "inotify_limits"]

DEFAULT_IGNORE: tuple[str, ...] = (
    # version control, caches, environments: big, busy, never code we reload
    ".git", ".hg", ".svn", "__pycache__", ".venv", "node_modules", ".tox", ".nox",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints",
    # editor swap, backup, lock and probe files (vim writes "4913" to test a directory)
    "*.swp", "*.swo", "*.swx", "*.swpx", "*~", ".#*", "#*#", "4913", "*.tmp",
)

# What a directory watch listens to. IN_MODIFY as well as IN_CLOSE_WRITE: a writer that keeps a
# file open only makes IN_MODIFY, and each IN_MODIFY restarts the quiet time, so a file being
# written is reported once it is quiet. IN_EXCL_UNLINK: nothing about unlinked temp files.
DIR_MASK = (flags.CREATE | flags.DELETE | flags.MODIFY | flags.CLOSE_WRITE | flags.MOVED_FROM
            | flags.MOVED_TO | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR
            | flags.DONT_FOLLOW | flags.EXCL_UNLINK)

READ_SIZE = 1 << 16
# At most this many raw records are interpreted per poll() (a few ms of work): a flood, such as
# 200,000 files deleted at once, cannot starve the caller's loop; timeout() is 0 while more wait.
RECORDS_PER_POLL = 4096

# A file's signature: hash((inode, size, mtime_ns)). An atomic save changes the inode; one int
# instead of a 3-tuple keeps the snapshot of a big tree small.
_Signature = int

# inotify_add_watch called directly (bytes in, int out): set-up makes one call per directory.
_libc = ctypes.CDLL(None, use_errno=True)
_inotify_add_watch = _libc.inotify_add_watch
_inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
_inotify_add_watch.restype = ctypes.c_int


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def inotify_limits() -> dict[str, int]:
    """The kernel's inotify limits, read now (``/proc/sys/fs/inotify/*``).

    Inside a user namespace ``/proc/sys/user/max_inotify_*`` may be lower; the smaller counts.
    """
    limits = {}
    for key, user_key in (("max_user_watches", "max_inotify_watches"),
                          ("max_user_instances", "max_inotify_instances"),
                          ("max_queued_events", None)):
        values = [_read_int(f"/proc/sys/fs/inotify/{key}")]
        if user_key:
            values.append(_read_int(f"/proc/sys/user/{user_key}"))
        known = [v for v in values if v is not None]
        if known:
            limits[key] = min(known)
    return limits


def _name_matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """name -> ignored? Plain names are a set lookup; only wildcard patterns need the regex."""
    plain = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    wild = [p for p in patterns if p not in plain]
    if not wild:
        return plain.__contains__
    match = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in wild)).match
    return lambda name: name in plain or match(name) is not None


_MASK_NAMES: dict[int, str] = {}


def _mask_name(mask: int) -> str:
    name = _MASK_NAMES.get(mask)
    if name is None:
        name = _MASK_NAMES[mask] = "|".join(f"IN_{f.name}" for f in flags.from_mask(mask))
    return name


class _WatchLimit(Exception):
    """inotify_add_watch failed with ENOSPC."""


class Watcher:
    """Watches directory trees (and single files) for changed files of the given types.

    ``types``: suffixes such as ``(".py",)``, or None for every file. ``ignore``: name patterns
    (fnmatch) for files and directories never reported; an ignored directory is never watched.
    ``debounce``: seconds of quiet after the last raw event before a batch is due; ``max_wait``:
    the longest a batch waits while events keep coming. ``clock``: the time source of ``poll``.
    """

    def __init__(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                 types: Iterable[str] | None = (".py",), ignore: Iterable[str] = DEFAULT_IGNORE,
                 debounce: float = DEFAULT_DEBOUNCE, max_wait: float = 0.5,
                 clock: Callable[[], float] = time.monotonic, log_size: int = 1000):
        self.types = _check_types(types)
        self.ignore = _check_ignore(ignore)
        self._ignored = _name_matcher(self.ignore)
        if not (isinstance(debounce, (int, float)) and isinstance(max_wait, (int, float))
                and debounce >= 0 and max_wait >= 0):
            raise LabError(f"debounce={debounce!r}, max_wait={max_wait!r}: give seconds >= 0")
        self._clock = clock
        # Dropped raw records with the reason, newest last: a notebook can show why a save of a
        # swap file did not count.
        self.log: deque[str] = deque(maxlen=log_size)
        # What a user must hear of (also in ``log``), as (kind, text): kind is "unwatched" (a
        # directory that cannot be watched), "watch-limit", "root-lost" or "rescan-incomplete".
        # A server reports these; ``popleft`` them once said.
        self.problems: deque[tuple[str, str]] = deque(maxlen=log_size)
        self.limits = inotify_limits()
        self._debouncer = Debouncer(debounce, max_wait, on_drop=self._dropped)
        self._dir_roots, self._file_roots = _check_paths(paths)
        self._explicit = set(self._file_roots)
        self._wd_path: dict[int, str] = {}
        self._path_wd: dict[str, int] = {}
        self._only: dict[int, set[str]] = {}  # wd of a file root's directory -> names watched
        self._subdirs: dict[str, set[str]] = {}  # watched directory -> its watched subdirectories
        self._files: dict[str, _Signature] = {}  # the snapshot, as of the last batch
        # The snapshot by directory: path -> None, so forgetting a file is O(1), not a search
        # (200,000 files deleted from one directory were quadratic with a list).
        self._dir_files: dict[str, dict[str, None]] = {}
        self._records: deque[Event] = deque()  # read, not yet interpreted (see RECORDS_PER_POLL)
        self._moves: dict[int, tuple[str, bool, bool, str]] = {}  # cookie -> unpaired MOVED_FROM
        self._rescans: list[Change] = []
        self._overflowed = False
        self._backlog = False  # the last poll stopped at RECORDS_PER_POLL: more may be readable
        self._inotify = self._open()
        self._fd = self._inotify.fileno()
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        try:
            self._setup()
        except BaseException:
            self._inotify.close()
            raise

    # --- the public interface -------------------------------------------------------------------

    def fileno(self) -> int:
        """The inotify fd: register it in a selector (the tutorial's ``swoole_event_add``)."""
        return self._inotify.fileno()

    @property
    def watched_dirs(self) -> int:
        return len(self._wd_path)

    @property
    def watched_files(self) -> int:
        """Files of the watched types known now (the tutorial's ``getWatchedFileCount``)."""
        return len(self._files)

    @property
    def lost_roots(self) -> list[str]:
        """Watched root directories deleted or moved away since: nothing under them is watched."""
        return [root for root in self._dir_roots if root not in self._path_wd]

    @property
    def closed(self) -> bool:
        return self._inotify.closed

    def poll(self, now: float | None = None) -> list[Change]:
        """Reads what is readable (never blocks); returns a batch when it is due, else []."""
        if self.closed:
            raise LabError("the watcher is closed; create a new Watcher")
        now = self._clock() if now is None else now
        self._backlog = not self._read(now)
        if self._backlog:  # records read are not all interpreted: only max_wait makes it due
            due = self._debouncer.overdue(now)
        else:
            due = self._debouncer.ready(now) or (self._rescans and not self._debouncer.pending)
        return self._take() if due else []

    def timeout(self, now: float | None = None) -> float | None:
        """Seconds until ``poll`` may return a batch, or 0 while raw records wait to be
        interpreted (call ``poll`` again soon, after other work); None when nothing is pending."""
        now = self._clock() if now is None else now
        if self._backlog or (self._rescans and not self._debouncer.pending):
            return 0.0
        return self._debouncer.timeout(now)

    def read_batch(self, timeout: float | None = None) -> list[Change]:
        """Blocks until a batch is due and returns it; [] when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            batch = self.poll()
            if batch:
                return batch
            now = self._clock()
            wait = self.timeout(now)
            if deadline is not None:
                left = deadline - now
                if left <= 0:
                    return []
                wait = left if wait is None else min(wait, left)
            self._poller.poll(None if wait is None else math.ceil(wait * 1000))

    def __iter__(self) -> Iterator[list[Change]]:
        """Batches, blocking, until the watcher is closed."""
        while not self.closed:
            yield self.read_batch()

    def close(self) -> None:
        """Closes the inotify fd; the kernel drops every watch with it."""
        self._inotify.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.watched_dirs} dirs, {self.watched_files} files"
        return f"<Watcher {', '.join(self._dir_roots + self._file_roots)}: {state}>"

    def _problem(self, kind: str, text: str) -> None:
        self.log.append(text)
        self.problems.append((kind, text))

    # --- set-up -------------------------------------------------------------------------------

    def _open(self) -> INotify:
        try:
            return INotify(nonblocking=True)
        except OSError as exc:
            if exc.errno == errno.EMFILE:
                limit = self.limits.get("max_user_instances", "?")
                raise LabError(
                    f"cannot create an inotify instance: this user's limit "
                    f"(fs.inotify.max_user_instances={limit}) is reached, or this process is out "
                    f"of file descriptors; close unused watchers or raise it: "
                    f"sudo sysctl fs.inotify.max_user_instances=<more>") from None
            raise LabError(f"cannot create an inotify instance: {exc.strerror}") from None

    def _setup(self) -> None:
        # Set-up makes tens of thousands of small objects and no cyclic garbage: the cyclic
        # collector would only traverse them again and again (about 15% of the time).
        paused = gc.isenabled()
        gc.disable()
        try:
            self._setup_walk()
        finally:
            if paused:
                gc.enable()

    def _setup_walk(self) -> None:
        def remember(directory: str, entry: os.DirEntry) -> None:
            sig = _signature(entry)
            if sig is not None:
                self._remember(entry.path, sig, directory)

        try:
            for root in self._dir_roots:
                try:
                    self._walk(root, remember, strict=True)
                except OSError as exc:
                    raise LabError(_unwatchable(root, exc)) from None
            for path in self._file_roots:
                try:
                    self._watch_file(path)
                except PermissionError:
                    raise LabError(f"{path}: permission denied: cannot watch its directory "
                                   f"{os.path.dirname(path)}") from None
                except OSError as exc:
                    raise LabError(f"{path}: cannot watch it: {exc.strerror}") from None
                try:
                    self._remember(path, _signature_of(path))
                except OSError:
                    pass
        except _WatchLimit:
            needed = sum(self._count_dirs(root) for root in self._dir_roots)
            needed += len({os.path.dirname(p) for p in self._file_roots})
            limit = self.limits.get("max_user_watches", "?")
            raise LabError(
                f"inotify watch limit reached: watching needs {needed} watches (one per "
                f"directory), only {len(self._wd_path)} could be added "
                f"(fs.inotify.max_user_watches={limit}, shared by all of this user's processes); "
                f"raise it (sudo sysctl fs.inotify.max_user_watches={max(2 * needed, 8192)}) or "
                f"ignore big directories") from None

    def _watch_file(self, path: str) -> None:
        """A single file: watch its directory (an atomic save replaces the file's inode)."""
        directory, name = os.path.split(path)
        wd = self._path_wd.get(directory)
        if wd is not None and wd not in self._only:
            return  # inside a watched tree already
        wd = self._add_watch(directory)
        self._only.setdefault(wd, set()).add(name)

    def _walk(self, top: str, found: Callable[[str, os.DirEntry], None],
              strict: bool = False) -> int:
        """Watches ``top`` and every directory below it that is not ignored, and calls
        ``found(directory, entry)`` for each wanted file. Watch first, then list: whatever is
        created in a directory after its listing is reported by its watch. Returns how many
        directories it watched. (The hot loop of set-up: names are bound to locals.)"""
        ignored, types, explicit, add_watch = self._ignored, self.types, self._explicit, \
            self._add_watch
        stack, count = [(top, os.path.dirname(top))], 0
        while stack:
            directory, parent = stack.pop()
            is_top = directory == top
            try:
                add_watch(directory, parent)
                entries = os.scandir(directory)
            except FileNotFoundError:
                if strict and is_top:
                    raise LabError(f"{directory}: no such directory") from None
                continue  # gone again: its IN_DELETE follows
            except OSError as exc:  # unreadable, replaced by a file, ...: say so, go on
                if strict and is_top:
                    raise
                self._problem("unwatched", f"not watched: {directory}: {exc.strerror}")
                continue
            count += 1
            with entries:
                for entry in entries:
                    name = entry.name
                    if ignored(name):
                        continue
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if is_dir:
                        stack.append((entry.path, directory))
                    elif (types is None or name.endswith(types) and name not in types
                          or explicit and entry.path in explicit):
                        found(directory, entry)
        return count

    def _count_dirs(self, top: str) -> int:
        """Directories a watch of ``top`` needs (for the error message when they do not fit)."""
        stack, count = [top], 0
        while stack:
            try:
                with os.scandir(stack.pop()) as entries:
                    count += 1
                    stack.extend(e.path for e in entries
                                 if not self._ignored(e.name) and e.is_dir(follow_symlinks=False))
            except OSError:
                continue
        return count

    def _add_watch(self, directory: str, parent: str | None = None) -> int:
        wd = _inotify_add_watch(self._fd, os.fsencode(directory), DIR_MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code == errno.ENOSPC:
                raise _WatchLimit()
            if code == errno.EACCES:
                raise PermissionError(code, os.strerror(code), directory)
            if code in (errno.ENOENT, errno.ENOTDIR):
                raise FileNotFoundError(code, os.strerror(code), directory)
            raise OSError(code, os.strerror(code), directory)
        old = self._wd_path.get(wd)
        if old is not None and old != directory:
            self._forget_wd(wd)  # the same directory under a name we have not caught up with
        self._wd_path[wd] = directory
        self._path_wd[directory] = wd
        if parent is None:
            parent = os.path.dirname(directory)
        subdirs = self._subdirs.get(parent)
        if subdirs is None:
            self._subdirs[parent] = {directory}
        else:
            subdirs.add(directory)
        return wd

    # --- reading raw records ------------------------------------------------------------------

    def _read(self, now: float) -> bool:
        """Interprets at most RECORDS_PER_POLL raw records; True once the queue is drained."""
        records, handle, budget = self._records, self._handle, RECORDS_PER_POLL
        while True:
            if not records:
                try:
                    data = os.read(self._fd, READ_SIZE)
                except BlockingIOError:
                    break
                if not data:
                    break
                records.extend(parse_events(data))
            count = min(budget, len(records))
            for _ in range(count):
                handle(records.popleft(), now)
            budget -= count
            if not budget:
                return False  # the rest waits for the next poll; moves may still pair up
        # The kernel queues a rename's MOVED_FROM and MOVED_TO in the same syscall, so with the
        # queue drained a MOVED_FROM still unpaired went out of the tree. (Should a read ever
        # split a pair, the outcome is still right: deleted + created, a directory re-scanned.)
        for cookie in list(self._moves):
            self._moved_out(*self._moves.pop(cookie), now=now)
        if self._overflowed:
            self._overflowed = False
            self._rescan(now)
        return True

    def _handle(self, event: Event, now: float) -> None:
        mask = event.mask
        if mask & flags.Q_OVERFLOW:
            self._overflowed = True
            return
        directory = self._wd_path.get(event.wd)
        if directory is None:
            return  # a watch already forgotten (moved out, deleted): its last records
        if mask & flags.IGNORED:
            self._forget_wd(event.wd)
            return
        if mask & (flags.DELETE_SELF | flags.MOVE_SELF):
            if directory in self._dir_roots:
                what = "deleted" if mask & flags.DELETE_SELF else "moved away"
                self._problem("root-lost", f"watched root {directory} was {what}: no longer watched")
                if mask & flags.MOVE_SELF:  # its watches live on under paths that are now wrong
                    for path in self._subtree(directory):
                        wd = self._path_wd.get(path)
                        if wd is not None:
                            self._forget_wd(wd)
                            try:
                                self._inotify.rm_watch(wd)
                            except OSError:
                                pass
            return  # other directories: handled by their parent's records
        name = event.name
        only = self._only.get(event.wd)
        if only is not None and name not in only:
            return  # a neighbour of a single watched file
        path = f"{directory}/{name}"
        why = f"wd={event.wd} {_mask_name(mask)} cookie={event.cookie} name={name!r} -> {path}"
        if mask & flags.ISDIR:
            self._dir_record(mask, event.cookie, path, name, why, now)
        else:
            self._file_record(mask, event.cookie, path, name, why, now)

    def _file_record(self, mask: int, cookie: int, path: str, name: str, why: str,
                     now: float) -> None:
        wanted = self._wanted(path, name)
        if mask & flags.MOVED_FROM:
            self._moves[cookie] = (path, False, wanted, why)
            return
        if mask & flags.MOVED_TO:
            pair = self._moves.pop(cookie, None)
            if pair is None:
                if wanted:
                    self._appeared(path, now, (why, "moved in from outside the watched tree"))
                else:
                    self._drop(path, name, why)
                return
            src, _, src_wanted, src_why = pair
            rule = f"paired IN_MOVED_FROM/IN_MOVED_TO cookie={cookie}"
            if src_wanted and wanted:
                self._debouncer.moved(src, path, now, (src_why, why, rule),
                                      replaced=path in self._files)
            elif src_wanted:
                self._debouncer.deleted(src, now, (src_why, why, f"{rule}: renamed to "
                                                   f"{name!r}, which is not watched"))
            elif wanted:
                # write-temp-then-rename: the temp file was never reported; the target has new
                # content (a modification if it existed)
                self._appeared(path, now, (src_why, why, f"{rule}: a save by rename onto "
                                                         f"{name!r}"))
            else:
                self._drop(path, name, f"{src_why}; {why}")
            return
        if not wanted:
            self._drop(path, name, why)
        elif mask & flags.CREATE:
            self._debouncer.created(path, now, (why,), writing=True)
        elif mask & (flags.MODIFY | flags.CLOSE_WRITE):
            self._debouncer.modified(path, now, (why,), writing=not mask & flags.CLOSE_WRITE)
        elif mask & flags.DELETE:
            self._debouncer.deleted(path, now, (why,))

    def _dir_record(self, mask: int, cookie: int, path: str, name: str, why: str,
                    now: float) -> None:
        ignored = self._ignored(name)
        if mask & flags.MOVED_FROM:
            self._moves[cookie] = (path, True, not ignored, why)
        elif mask & flags.MOVED_TO:
            pair = self._moves.pop(cookie, None)
            if pair is not None and pair[2] and not ignored:
                self._rename_tree(pair[0], path, now, (pair[3], why, "paired IN_MOVED_FROM/"
                                                       f"IN_MOVED_TO cookie={cookie}"))
            elif pair is not None and pair[2]:
                self._drop_tree(pair[0], now, (pair[3], why, f"renamed to the ignored name "
                                                            f"{name!r}: no longer watched"),
                                remove_watches=True)
            elif not ignored:
                self._new_tree(path, now, why, f"synthesized by scanning directory {path}, "
                                               "moved into the watched tree")
            else:
                self.log.append(f"dropped {why}: directory name ignored, never watched")
        elif ignored:
            self.log.append(f"dropped {why}: directory name ignored, never watched")
        elif mask & flags.CREATE:
            if path not in self._path_wd:  # else: found and listed by its parent's listing
                self._new_tree(path, now, why, f"synthesized by scanning new directory {path}")
        elif mask & flags.DELETE:
            self._drop_tree(path, now, (why, "directory deleted"), remove_watches=False)

    def _moved_out(self, path: str, is_dir: bool, wanted: bool, why: str, now: float) -> None:
        rule = "IN_MOVED_FROM without IN_MOVED_TO: moved out of the watched tree"
        if is_dir and wanted:
            self._drop_tree(path, now, (why, rule), remove_watches=True)
        elif wanted:
            self._debouncer.deleted(path, now, (why, rule))
        else:
            self.log.append(f"dropped {why}: {rule}; not watched")

    # --- facts ------------------------------------------------------------------------------------

    def _appeared(self, path: str, now: float, why: tuple[str, ...]) -> None:
        """New content at ``path``: a modification if the file existed before this batch."""
        if path in self._files:
            self._debouncer.modified(path, now, why)
        else:
            self._debouncer.created(path, now, why)

    def _new_tree(self, path: str, now: float, why: str, rule: str) -> None:
        def found(directory: str, entry: os.DirEntry) -> None:
            self._appeared(entry.path, now, (why, rule))

        try:
            self._walk(path, found)
        except _WatchLimit:
            limit = self.limits.get("max_user_watches", "?")
            self._problem("watch-limit", f"NOT WATCHED {path}: inotify watch limit reached "
                            f"(fs.inotify.max_user_watches={limit}); raise it and restart")

    def _subtree(self, top: str) -> list[str]:
        """``top`` and the watched directories below it (through the index, not a scan of all)."""
        out, stack = [], [top]
        while stack:
            directory = stack.pop()
            out.append(directory)
            stack.extend(self._subdirs.get(directory, ()))
        return out

    def _files_under(self, subtree: list[str]) -> list[str]:
        """Wanted files in the watched directories ``subtree`` now: known at the last batch and
        not deleted since, or appeared in this batch."""
        held = self._debouncer.state
        known = [p for d in subtree for p in self._dir_files.get(d, ()) if held(p) is not False]
        appeared = self._debouncer.paths_in
        return known + [p for d in subtree for p in appeared(d) if p not in self._files]

    def _rename_tree(self, old: str, new: str, now: float, why: tuple[str, ...]) -> None:
        """A directory renamed inside the tree: its watches now stand for the new paths."""
        subtree = self._subtree(old)
        files = self._files_under(subtree)
        self._subdirs.get(os.path.dirname(old), set()).discard(old)
        self._subdirs.setdefault(os.path.dirname(new), set()).add(new)
        for directory in subtree:
            moved = new + directory[len(old):]
            kids = self._subdirs.pop(directory, None)
            if kids:
                self._subdirs[moved] = {new + k[len(old):] for k in kids}
            wd = self._path_wd.pop(directory, None)
            if wd is not None:
                self._path_wd[moved] = wd
                self._wd_path[wd] = moved
        for path in files:
            dst = new + path[len(old):]
            self._debouncer.moved(path, dst, now, (*why, f"inside renamed directory {old} -> "
                                                        f"{new}"), replaced=dst in self._files)

    def _drop_tree(self, old: str, now: float, why: tuple[str, ...],
                   remove_watches: bool) -> None:
        """A directory deleted or moved out: forget its watches; its files are deleted."""
        subtree = self._subtree(old)
        for path in self._files_under(subtree):
            self._debouncer.deleted(path, now, (*why, f"inside {old}"))
        for directory in subtree:
            wd = self._path_wd.get(directory)
            if wd is None:
                continue
            self._forget_wd(wd)
            if remove_watches:
                try:
                    self._inotify.rm_watch(wd)
                except OSError:
                    pass  # already gone with its directory

    def _forget_wd(self, wd: int) -> None:
        directory = self._wd_path.pop(wd, None)
        if directory is not None and self._path_wd.get(directory) == wd:
            del self._path_wd[directory]
            self._subdirs.get(os.path.dirname(directory), set()).discard(directory)
        self._only.pop(wd, None)

    # --- overflow --------------------------------------------------------------------------------

    def _rescan(self, now: float) -> None:
        """Events were lost: rebuild the watches and compare the tree with the snapshot."""
        started = time.perf_counter()
        held = self._debouncer.discard()
        self._moves.clear()
        old_wds = set(self._wd_path)
        self._wd_path.clear()
        self._path_wd.clear()
        self._only.clear()
        self._subdirs.clear()
        current: dict[str, _Signature] = {}

        def found(directory: str, entry: os.DirEntry) -> None:
            sig = _signature(entry)
            if sig is not None:
                current[entry.path] = sig

        dirs = 0
        try:
            for root in self._dir_roots:
                dirs += self._walk(root, found)
            for path in self._file_roots:
                self._watch_file(path)
                try:
                    current[path] = _signature_of(path)
                except OSError:
                    pass
        except (_WatchLimit, OSError) as exc:
            self._problem("rescan-incomplete", f"rescan incomplete: {exc!r}")
        for wd in old_wds - set(self._wd_path):
            try:
                self._inotify.rm_watch(wd)
            except OSError:
                pass
        rule = "queue overflow: rescanned"
        differences = 0
        for path, sig in current.items():
            before = self._files.get(path)
            if before is None:
                self._debouncer.created(path, now, (f"{rule}: new since the last batch",))
            elif before != sig:
                self._debouncer.modified(path, now, (f"{rule}: inode, size or mtime changed "
                                                     "since the last batch",))
            else:
                continue
            differences += 1
        for path in self._files.keys() - current.keys():
            self._debouncer.deleted(path, now, (f"{rule}: gone since the last batch",))
            differences += 1
        took = (time.perf_counter() - started) * 1000
        limit = self.limits.get("max_queued_events", "?")
        why = (f"IN_Q_OVERFLOW: more than max_queued_events={limit} records were queued "
               "unread; the kernel dropped the rest",
               f"{rule} {dirs} directories and {len(current)} files in {took:.1f} ms; "
               f"{differences} differ from the snapshot taken after the last batch",
               f"{len(held)} changes held before the overflow were replaced by the rescan")
        for root in self._dir_roots + self._file_roots:
            self._rescans.append(Change("rescan", root, None, why))

    # --- batches -------------------------------------------------------------------------------

    def _take(self) -> list[Change]:
        changes = self._rescans + self._debouncer.take()
        self._rescans = []
        for change in changes:  # the snapshot follows the batches (for the overflow rescan)
            if change.kind == "moved":
                self._forget_file(change.src)
            if change.kind == "deleted":
                self._forget_file(change.path)
            elif change.kind != "rescan":
                try:
                    self._remember(change.path, _signature_of(change.path))
                except OSError:
                    self._forget_file(change.path)  # gone again: its record follows
        return changes

    def _remember(self, path: str, sig: _Signature, directory: str | None = None) -> None:
        if path not in self._files:
            if directory is None:
                directory = os.path.dirname(path)
            paths = self._dir_files.get(directory)
            if paths is None:
                self._dir_files[directory] = {path: None}
            else:
                paths[path] = None
        self._files[path] = sig

    def _forget_file(self, path: str | None) -> None:
        if path is not None and self._files.pop(path, None) is not None:
            directory = os.path.dirname(path)
            paths = self._dir_files[directory]
            del paths[path]
            if not paths:
                del self._dir_files[directory]

    # --- names ---------------------------------------------------------------------------------

    def _wanted(self, path: str, name: str) -> bool:
        if path in self._explicit:
            return True
        if self._ignored(name):
            return False
        return self.types is None or (name.endswith(self.types) and name not in self.types)

    def _drop(self, path: str, name: str, why: str) -> None:
        if self._ignored(name):
            pattern = next(p for p in self.ignore if fnmatch.fnmatchcase(name, p))
            reason = f"name matches ignore pattern {pattern!r}"
        else:
            reason = f"not a watched type {self.types}"
        self.log.append(f"dropped {why}: {reason}")

    def _dropped(self, path: str, why: tuple[str, ...]) -> None:
        self.log.append(f"dropped {path}: " + "; ".join(why))


def _signature(entry: os.DirEntry) -> _Signature | None:
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    return hash((st.st_ino, st.st_size, st.st_mtime_ns))


def _signature_of(path: str) -> _Signature:
    st = os.stat(path, follow_symlinks=False)
    return hash((st.st_ino, st.st_size, st.st_mtime_ns))


def _check_types(types: Iterable[str] | None) -> tuple[str, ...] | None:
    if types is None:
        return None
    if isinstance(types, str):
        types = (types,)
    checked = tuple(types)
    for t in checked:
        if not (isinstance(t, str) and len(t) > 1 and t.startswith(".") and "/" not in t):
            raise LabError(f"bad file type {t!r}: give suffixes such as '.py' (or types=None "
                           "for every file)")
    if not checked:
        raise LabError("no file types given: give suffixes such as '.py', or types=None for "
                       "every file")
    return checked


def _check_ignore(ignore: Iterable[str]) -> tuple[str, ...]:
    if isinstance(ignore, str):
        raise LabError(f"ignore={ignore!r} is one string: give a list of name patterns")
    checked = tuple(ignore)
    for p in checked:
        if not isinstance(p, str) or not p or "/" in p:
            raise LabError(f"bad ignore pattern {p!r}: patterns match file and directory names "
                           "(such as '.git' or '*.swp'), not paths")
    return checked


def _pseudo_devices() -> dict[int, str]:
    """The devices of /proc and /sys (st_dev -> path), where inotify sees no changes."""
    found = {}
    for top in ("/proc", "/sys"):
        try:
            found[os.stat(top).st_dev] = top
        except OSError:
            continue
    return found


def _unwatchable(root: str, exc: OSError) -> str:
    """Why the tree at ``root`` cannot be watched, naming the directory that failed."""
    where = root if exc.filename in (None, root) else f"{root}: {exc.filename} below it"
    if isinstance(exc, PermissionError):
        return (f"{where}: permission denied: cannot read this directory; watch one you may "
                "read, or fix its permissions")
    return f"{where}: cannot watch it: {exc.strerror}"


def _check_paths(paths) -> tuple[list[str], list[str]]:
    """(directories, files) to watch, absolute; nested directories are watched once."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    dirs: list[str] = []
    files: list[str] = []
    for raw in paths:
        path = os.path.abspath(os.fsdecode(raw))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise LabError(f"{path}: no such file or directory; give a directory (watched "
                           "recursively) or a file") from None
        except PermissionError:
            raise LabError(f"{path}: permission denied: cannot reach it") from None
        except OSError as exc:
            raise LabError(f"{path}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode) and os.path.islink(path):
            # Watches never follow a link (it could be re-pointed while watched).
            raise LabError(f"{path} is a symlink to the directory {os.path.realpath(path)}: links "
                           "are not followed; give the directory itself")
        if stat.S_ISDIR(st.st_mode) and st.st_dev in _pseudo_devices():
            raise LabError(f"{path} is in {_pseudo_devices()[st.st_dev]}, a kernel file system: its "
                           "files change without inotify events, so nothing there can be watched")
        if stat.S_ISDIR(st.st_mode):
            dirs.append(path)
        elif stat.S_ISREG(st.st_mode):
            files.append(path)
        else:
            raise LabError(f"{path} is neither a directory nor a regular file; give a directory "
                           "(watched recursively) or a file")
    if not dirs and not files:
        raise LabError("no path to watch: give at least one directory or file")
    # One watch per directory: a root inside another root is already covered.
    real = {d: os.path.realpath(d) for d in dirs}
    unique: list[str] = []
    for d in sorted(dict.fromkeys(dirs), key=lambda d: len(real[d])):
        if not any(real[d] == real[u] or real[d].startswith(real[u] + "/") for u in unique):
            unique.append(d)
    return unique, list(dict.fromkeys(files))
