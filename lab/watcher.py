"""The recursive inotify watcher: the tutorial's §2 ``Inotify`` class, done for real.

One inotify instance, one watch per directory (never per file: saves replace files, and a watch
on a replaced inode goes deaf). This module is the I/O shell: it opens inotify, adds and removes
watches, lists directories, reads raw records and stats files. What the records mean is decided
by the pure parts it feeds: ``lab.watch_interpreter`` (records -> facts for a ``Debouncer``, and
actions for this shell), ``lab.watch_index`` (watches and the snapshot) and
``lab.watch_filter`` (which names count). The ``Debouncer`` hands out one coalesced batch of
``Change``s after a quiet time.

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
  ``path -> (inode, size, mtime_ns)`` and a ``Change(kind="rescan")`` that says so. Set-up only
  watches and lists, and leaves quiet leaf directories (most of a big tree) for the first poll
  to list, exactly as they were (``lab.watch_walk``); the first poll puts the listing in the
  snapshot (before it interprets a record) and the first polls take the signatures,
  ``SIGNS_PER_POLL`` at a time (a change after the watch is in place has its record, so a later
  signature loses nothing; one taken while records may already be lost is withdrawn, and the
  rescan reports that file);
- the file type is the real suffix (``a.b.py`` is ``.py``); editor swap/backup files and
  directories such as ``.git`` are ignored by name, and ignored directories get no watch at all;
- the kernel's limits are read at run time; running out of watches is a clear ``LabError``.

Not thread-safe: one thread (or one event loop) calls ``poll``/``read_batch``.
"""

from __future__ import annotations

import errno
import gc
import math
import os
import select
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from inotify_simple import Event, INotify, parse_events

from lab.debounce import DEFAULT_DEBOUNCE, Change
from lab.errors import LabError, translated
from lab.i18n import N_
from lab.watch_filter import DEFAULT_IGNORE, NameFilter
from lab.watch_index import Signature
from lab.watch_interpreter import Action, Interpreter, Scan, Unwatch
from lab.watch_walk import DIR_MASK, QuietLeaves, WatchLimit, add_watch, add_watch_error, list_late, walk_tree

__all__ = ["DEFAULT_IGNORE", "RECORDS_PER_POLL", "Change", "Watcher", "inotify_limits"]

READ_SIZE = 1 << 16
# At most this many raw records are interpreted per poll() (a few ms of work): a flood, such as
# 200,000 files deleted at once, cannot starve the caller's loop; timeout() is 0 while more wait.
RECORDS_PER_POLL = 4096
# At most this many set-up files are signed (stat) per poll, once nothing else is to be done.
SIGNS_PER_POLL = 2048


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
    for key, user_key in (
        ("max_user_watches", "max_inotify_watches"),
        ("max_user_instances", "max_inotify_instances"),
        ("max_queued_events", None),
    ):
        values = [_read_int(f"/proc/sys/fs/inotify/{key}")]
        if user_key:
            values.append(_read_int(f"/proc/sys/user/{user_key}"))
        known = [v for v in values if v is not None]
        if known:
            limits[key] = min(known)
    return limits


class Watcher:
    """Watches directory trees (and single files) for changed files of the given types.

    ``types``: suffixes such as ``(".py",)``, or None for every file. ``ignore``: name patterns
    (fnmatch) for files and directories never reported; an ignored directory is never watched.
    ``debounce``: seconds of quiet after the last raw event before a batch is due; ``max_wait``:
    the longest a batch waits while events keep coming. ``clock``: the time source of ``poll``.

    Poll soon after set-up (``timeout()`` is 0 until then): the first poll lists the quiet
    directories set-up left, and one changed before that is reported as a ``rescan`` of its root.
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        types: Iterable[str] | None = (".py",),
        ignore: Iterable[str] = DEFAULT_IGNORE,
        debounce: float = DEFAULT_DEBOUNCE,
        max_wait: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        log_size: int = 1000,
    ):
        names = NameFilter(types, ignore)
        self.types, self.ignore = names.types, names.ignore
        _check_seconds(debounce, max_wait)
        self._clock = clock
        self.limits = inotify_limits()
        self._dir_roots, self._file_roots = _check_paths(paths)
        names.explicit.update(self._file_roots)
        self._names = names
        self._interp = Interpreter(names, self._dir_roots, self._file_roots, debounce, max_wait, self.limits, log_size)
        self._index = self._interp.index
        # Dropped raw records with the reason, newest last: a notebook can show why a save of a
        # swap file did not count.
        self.log: deque[str] = self._interp.log
        # What a user must hear of (also in ``log``), as (kind, text): kind is "unwatched" (a
        # directory that cannot be watched), "watch-limit", "root-lost" or "rescan-incomplete".
        # A server reports these; ``popleft`` them once said.
        self.problems: deque[tuple[str, str]] = self._interp.problems
        self._records: deque[Event] = deque()  # read, not yet interpreted (see RECORDS_PER_POLL)
        self._backlog = False  # the last poll stopped at RECORDS_PER_POLL: more may be readable
        # Set-up's listing, (directory, files), and its quiet leaves, not listed yet
        # (lab.watch_walk): the first poll lists them and puts it all in the snapshot, before it
        # interprets any record, so every record still meets the snapshot of set-up's time.
        self._listed: list[tuple[str, list[str]]] = []
        self._late = QuietLeaves.now()
        self._unsigned: list[str] = []  # files found at set-up, to sign (stat) in later polls
        # Signatures taken since the kernel's queue was last seen empty: should that read find
        # IN_Q_OVERFLOW, they may include changes whose records were lost, and are withdrawn.
        self._suspects: list[str] = []
        self._inotify = _open_inotify(self.limits)
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
        return len(self._index.wd_path)

    @property
    def watched_files(self) -> int:
        """Files of the watched types known now (the tutorial's ``getWatchedFileCount``); lists the
        quiet leaves set-up left, as the first poll would."""
        self._index_listed()
        return len(self._index.files)

    @property
    def unlisted_dirs(self) -> int:
        """Quiet leaf directories set-up watched but left for the first poll to list."""
        return len(self._late.found)

    @property
    def lost_roots(self) -> list[str]:
        """Watched root directories deleted or moved away since: nothing under them is watched."""
        return [root for root in self._dir_roots if root not in self._index.path_wd]

    @property
    def closed(self) -> bool:
        return self._inotify.closed

    def poll(self, now: float | None = None) -> list[Change]:
        """Reads what is readable (never blocks); returns a batch when it is due, else []."""
        if self.closed:
            raise translated(N_("the watcher is closed; create a new Watcher"))
        now = self._clock() if now is None else now
        self._index_listed()
        self._backlog = not self._read(now)
        if self._unsigned and not self._backlog and not self._interp.due(now, False):
            self._sign_some()
            # Read again at once: a queue found empty, without IN_Q_OVERFLOW, confirms them.
            self._backlog = not self._read(now)
        return self._take() if self._interp.due(now, self._backlog) else []

    def timeout(self, now: float | None = None) -> float | None:
        """Seconds until ``poll`` may return a batch, or 0 while raw records wait to be
        interpreted or set-up's files to be put in the snapshot and signed (call ``poll`` again
        soon, after other work); None when nothing is pending."""
        if (self._unsigned or self._listed or self._late.found) and not self._backlog:
            return 0.0
        return self._interp.timeout(self._clock() if now is None else now, self._backlog)

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

    # --- set-up -------------------------------------------------------------------------------

    def _setup(self) -> None:
        # Set-up makes tens of thousands of small objects and no cyclic garbage: the cyclic
        # collector would only traverse them again and again (about 15% of the time).
        paused = gc.isenabled()
        gc.disable()
        try:
            self._setup_walk()
        except WatchLimit:
            raise _watch_limit_error(
                self._dir_roots, self._file_roots, self.watched_dirs, self._names.ignored, self.limits
            ) from None
        finally:
            if paused:
                gc.enable()

    def _setup_walk(self) -> None:
        listed = self._listed

        def found(directory: str, paths: list[str]) -> None:
            listed.append((directory, paths))

        for root in self._dir_roots:
            try:
                walk_tree(self._fd, self._names, self._index.add, self._interp.problem, root, found, True, self._late)
            except OSError as exc:
                raise _unwatchable(root, exc) from None
        for path in self._file_roots:
            try:
                self._watch_file(path)
            except PermissionError:
                raise translated(
                    N_("{path}: permission denied: cannot watch its directory {directory}"),
                    path=path,
                    directory=os.path.dirname(path),
                ) from None
            except OSError as exc:
                raise translated(N_("{path}: cannot watch it: {reason}"), path=path, reason=exc.strerror) from None
            try:
                self._index.remember(path, _signature_of(path))
            except OSError:
                pass

    def _watch_file(self, path: str) -> None:
        """A single file: watch its directory (an atomic save replaces the file's inode)."""
        directory, name = os.path.split(path)
        if self._index.covers(directory):
            return  # inside a watched tree already
        self._index.add_only(self._add_watch(directory), name)

    def _walk(self, top: str, found: Callable[[str, list[str]], None], strict: bool = False) -> int:
        """``walk_tree`` with this watcher's fd, names and index."""
        return walk_tree(self._fd, self._names, self._index.add, self._interp.problem, top, found, strict)

    def _add_watch(self, directory: str, parent: str | None = None) -> int:
        wd = add_watch(self._fd, os.fsencode(directory), DIR_MASK)
        if wd < 0:
            raise add_watch_error(directory)
        self._index.add(wd, directory, parent)
        return wd

    # --- records and actions --------------------------------------------------------------------

    def _read(self, now: float) -> bool:
        """Interprets at most RECORDS_PER_POLL raw records; True once the queue is drained."""
        records, feed, act, budget = self._records, self._interp.feed, self._act, RECORDS_PER_POLL
        while True:
            if not records:
                try:
                    data = os.read(self._fd, READ_SIZE)
                except BlockingIOError:
                    if not self._interp.overflowed:
                        self._suspects.clear()  # taken before the queue was empty: none lost
                    break
                if not data:
                    break
                records.extend(parse_events(data))
            count = min(budget, len(records))
            for _record in range(count):
                action = feed(records.popleft(), now)
                if action is not None:
                    act(action, now)
            budget -= count
            if not budget:
                return False  # the rest waits for the next poll; moves may still pair up
        for action in self._interp.drained(now):
            act(action, now)
        return True

    def _act(self, action: Action, now: float) -> None:
        if isinstance(action, Scan):
            self._scan(action, now)
        elif isinstance(action, Unwatch):
            self._unwatch(action.wds)
        else:
            self._rescan(now)

    def _scan(self, scan: Scan, now: float) -> None:
        """A new directory: watch and list it; its files have appeared."""
        appeared, why = self._interp.appeared, scan.why

        def found(directory: str, paths: list[str]) -> None:
            for path in paths:
                appeared(path, now, why)

        try:
            self._walk(scan.path, found)
        except WatchLimit:
            limit = self.limits.get("max_user_watches", "?")
            self._interp.problem(
                "watch-limit",
                f"NOT WATCHED {scan.path}: inotify watch limit "
                f"reached (fs.inotify.max_user_watches={limit}); raise it and "
                "restart",
            )

    def _unwatch(self, wds: Iterable[int]) -> None:
        """Removes these watches, but not one added again since (a directory moved out and back)."""
        for wd in wds:
            if wd in self._index.wd_path:
                continue
            try:
                self._inotify.rm_watch(wd)
            except OSError:
                pass  # already gone with its directory

    def _rescan(self, now: float) -> None:
        """Events were lost: rebuild the watches, compare the tree with the snapshot. (Or none
        was, but set-up missed a folder's listing: the walk completes the snapshot, no more.)"""
        started = time.perf_counter()
        old_wds: set[int] = set()
        held = 0
        if self._interp.overflowed:
            self._index.unsign(self._suspects)
            self._suspects.clear()
            old_wds, held = self._interp.lose_all()
        current: dict[str, Signature] = {}

        def found(directory: str, paths: list[str]) -> None:
            for path in paths:
                try:
                    current[path] = _signature_of(path)
                except OSError:
                    continue  # gone again: its record follows

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
        except (WatchLimit, OSError) as exc:
            self._interp.problem("rescan-incomplete", f"rescan incomplete: {exc!r}")
        self._unwatch(old_wds)
        took = (time.perf_counter() - started) * 1000
        self._interp.rescanned(current, dirs, took, held, now)

    def _take(self) -> list[Change]:
        """The batch; the snapshot follows it (for the overflow rescan)."""
        index, changes = self._index, self._interp.take()
        for change in changes:
            if change.kind == "moved":
                index.forget_file(change.src)
            if change.kind == "deleted":
                index.forget_file(change.path)
            elif change.kind != "rescan":
                try:
                    index.remember(change.path, _signature_of(change.path))
                    self._suspects.append(change.path)
                except OSError:
                    index.forget_file(change.path)  # gone again: its record follows
        return changes

    def _index_listed(self) -> None:
        """Set-up's listing, with its quiet leaves listed now, into the snapshot, unsigned (see
        ``_listed``)."""
        if self._late.found:
            leaves, self._late.found = self._late.found, []
            self._listed += list_late(leaves, self._names, self._interp.unlisted)
        if not self._listed:
            return
        remember, unsigned = self._index.remember_unsigned, self._unsigned
        for directory, paths in self._listed:
            remember(directory, paths)
            unsigned.extend(paths)
        self._listed = []

    def _sign_some(self) -> None:
        """Signs up to SIGNS_PER_POLL of set-up's files (a file gone meanwhile stays UNSIGNED:
        its record follows)."""
        unsigned, sign, suspects = self._unsigned, self._index.sign, self._suspects
        for _sign in range(min(SIGNS_PER_POLL, len(unsigned))):
            path = unsigned.pop()
            try:
                sign(path, _signature_of(path))
            except OSError:
                continue
            suspects.append(path)


def _check_seconds(debounce: object, max_wait: object) -> None:
    if not (
        isinstance(debounce, (int, float)) and isinstance(max_wait, (int, float)) and debounce >= 0 and max_wait >= 0
    ):
        raise translated(
            N_("debounce={debounce!r}, max_wait={max_wait!r}: give seconds >= 0"), debounce=debounce, max_wait=max_wait
        )


def _open_inotify(limits: dict[str, int]) -> INotify:
    try:
        return INotify(nonblocking=True)
    except OSError as exc:
        if exc.errno == errno.EMFILE:
            raise translated(
                N_(
                    "cannot create an inotify instance: this user's limit "
                    "(fs.inotify.max_user_instances={limit}) is "
                    "reached, or this process is out of file descriptors; close unused watchers or "
                    "raise it: sudo sysctl fs.inotify.max_user_instances=<more>"
                ),
                limit=limits.get("max_user_instances", "?"),
            ) from None
        raise translated(N_("cannot create an inotify instance: {reason}"), reason=exc.strerror) from None


def _watch_limit_error(
    dir_roots: list[str], file_roots: list[str], added: int, ignored: Callable[[str], bool], limits: dict[str, int]
) -> LabError:
    """Set-up ran out of watches after ``added``: how many it needs, and what to do."""
    needed = sum(_count_dirs(root, ignored) for root in dir_roots)
    needed += len({os.path.dirname(p) for p in file_roots})
    limit = limits.get("max_user_watches", "?")
    return translated(
        N_(
            "inotify watch limit reached: watching needs {needed} watches (one per "
            "directory), only {added} could be added "
            "(fs.inotify.max_user_watches={limit}, shared by all of this user's processes); "
            "raise it (sudo sysctl fs.inotify.max_user_watches={enough}) or "
            "ignore big directories"
        ),
        needed=needed,
        added=added,
        limit=limit,
        enough=max(2 * needed, 8192),
    )


def _count_dirs(top: str, ignored: Callable[[str], bool]) -> int:
    """Directories a watch of ``top`` needs (for the error message when they do not fit)."""
    stack, count = [top], 0
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                count += 1
                stack.extend(e.path for e in entries if not ignored(e.name) and e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return count


def _signature_of(path: str) -> Signature:
    st = os.stat(path, follow_symlinks=False)
    return hash((st.st_ino, st.st_size, st.st_mtime_ns))


def _pseudo_devices() -> dict[int, str]:
    """The devices of /proc and /sys (st_dev -> path), where inotify sees no changes."""
    found = {}
    for top in ("/proc", "/sys"):
        try:
            found[os.stat(top).st_dev] = top
        except OSError:
            continue
    return found


def _unwatchable(root: str, exc: OSError) -> LabError:
    """Why the tree at ``root`` cannot be watched, naming the directory that failed."""
    if exc.filename not in (None, root):
        if isinstance(exc, PermissionError):
            return translated(
                N_(
                    "{root}: {path} below it: permission denied: cannot read this directory; watch one you may "
                    "read, or fix its permissions"
                ),
                root=root,
                path=exc.filename,
            )
        return translated(
            N_("{root}: {path} below it: cannot watch it: {reason}"), root=root, path=exc.filename, reason=exc.strerror
        )
    if isinstance(exc, PermissionError):
        return translated(
            N_("{path}: permission denied: cannot read this directory; watch one you may read, or fix its permissions"),
            path=root,
        )
    return translated(N_("{path}: cannot watch it: {reason}"), path=root, reason=exc.strerror)


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
            raise translated(
                N_("{path}: no such file or directory; give a directory (watched recursively) or a file"), path=path
            ) from None
        except PermissionError:
            raise translated(N_("{path}: permission denied: cannot reach it"), path=path) from None
        except OSError as exc:
            raise LabError(f"{path}: {exc.strerror}") from None  # the system's words: nothing to translate
        if stat.S_ISDIR(st.st_mode) and os.path.islink(path):
            # Watches never follow a link (it could be re-pointed while watched).
            raise translated(
                N_("{path} is a symlink to the directory {target}: links are not followed; give the directory itself"),
                path=path,
                target=os.path.realpath(path),
            )
        if stat.S_ISDIR(st.st_mode) and st.st_dev in _pseudo_devices():
            raise translated(
                N_(
                    "{path} is in {top}, a kernel file system: its "
                    "files change without inotify events, so nothing there can be watched"
                ),
                path=path,
                top=_pseudo_devices()[st.st_dev],
            )
        if stat.S_ISDIR(st.st_mode):
            dirs.append(path)
        elif stat.S_ISREG(st.st_mode):
            files.append(path)
        else:
            raise translated(
                N_(
                    "{path} is neither a directory nor a regular file; give a directory (watched recursively) or a file"
                ),
                path=path,
            )
    if not dirs and not files:
        raise translated(N_("no path to watch: give at least one directory or file"))
    # One watch per directory: a root inside another root is already covered.
    real = {d: os.path.realpath(d) for d in dirs}
    unique: list[str] = []
    for d in sorted(dict.fromkeys(dirs), key=lambda d: len(real[d])):
        if not any(real[d] == real[u] or real[d].startswith(real[u].rstrip("/") + "/") for u in unique):
            unique.append(d)
    return unique, list(dict.fromkeys(files))
