"""Walking a tree to watch it: a watch on every directory, then its listing, or, at set-up, a
quiet leaf directory's listing left for later.

Set-up's cost is the kernel's: a watch (``inotify_add_watch``) and a listing (``openat``,
``fstat``, two ``getdents64``, ``close``) per directory. Every watch must be in place before the
constructor returns (a change after it must have a record), but the listing only feeds the
snapshot, and most directories of a big tree are leaves that nobody touches. So set-up ``stat``s
each directory after its watch, and a **quiet leaf** is listed by the first poll instead:

* a leaf: ``st_nlink == 2`` (no subdirectory) on a file system known to keep that count (the
  ext family, XFS, tmpfs: GNU find's leaf optimisation trusts the same list);
* quiet: its ``st_ctime`` (which every entry created, deleted or renamed in it, and a rename of
  the directory itself, move to the present) is older than set-up by ``QUIET``, more than the
  kernel's coarse clock tick, and has nanoseconds (a file system of whole seconds is not trusted).

The first poll lists it and ``stat``s it again: the same inode with the same ctime means that no
entry changed between the watch and the listing, so the listing is the tree at set-up, exactly.
Otherwise what it held at set-up is not known, and the caller reports a rescan of its root, as
after lost records, never a silent gap: changed (or only chmod-ed), its listing now is the
snapshot and its records tell the rest; moved, replaced or unreadable, the snapshot is rebuilt by
a rescan of the whole tree. A loop that polls at once (as the lab's master does) meets neither.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lab.errors import translated
from lab.i18n import N_
from lab.watch_filter import NameFilter
from lab.watch_interpreter import Mask

__all__ = [
    "DIR_MASK",
    "LEAF_FILESYSTEMS",
    "QUIET",
    "QuietLeaves",
    "WatchLimit",
    "add_watch",
    "add_watch_error",
    "leaf_devices",
    "list_late",
    "quiet_leaf",
    "walk_tree",
]

# What a directory watch listens to. IN_MODIFY as well as IN_CLOSE_WRITE: a writer that keeps a
# file open only makes IN_MODIFY, and each IN_MODIFY restarts the quiet time, so a file being
# written is reported once it is quiet. IN_EXCL_UNLINK: nothing about unlinked temp files.
DIR_MASK = (
    Mask.CREATE
    | Mask.DELETE
    | Mask.MODIFY
    | Mask.CLOSE_WRITE
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
    | Mask.ONLYDIR
    | Mask.DONT_FOLLOW
    | Mask.EXCL_UNLINK
)

# inotify_add_watch called directly (fd, bytes path, mask -> wd): set-up makes one call per
# directory. No argtypes: ctypes' own conversion of int and bytes costs half as much per call,
# and DIR_MASK (a plain int) fits in a C int.
_libc = ctypes.CDLL(None, use_errno=True)
add_watch = _libc.inotify_add_watch
add_watch.restype = ctypes.c_int

# A directory changed less than this before set-up is listed at once: a change within the same
# tick of the kernel's coarse clock (at most 10 ms) could leave its ctime as it was.
QUIET = 0.1
# File systems whose directories count their subdirectories in st_nlink (2 + subdirectories).
# Not btrfs (always 1), overlayfs, NFS, CIFS, FUSE, ...: their directories are listed at once.
LEAF_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "tmpfs"})
_SECOND_NS = 1_000_000_000


class WatchLimit(Exception):
    """inotify_add_watch failed with ENOSPC."""


def add_watch_error(directory: str) -> Exception:
    """The error of a failed inotify_add_watch (errno as the OSError subclass open() raises)."""
    code = ctypes.get_errno()
    if code == errno.ENOSPC:
        return WatchLimit()
    if code == errno.EACCES:
        return PermissionError(code, os.strerror(code), directory)
    if code in (errno.ENOENT, errno.ENOTDIR):
        return FileNotFoundError(code, os.strerror(code), directory)
    return OSError(code, os.strerror(code), directory)


def quiet_leaf(nlink: int, ctime_ns: int, counts_subdirs: bool, before_ns: int) -> bool:
    """May set-up leave this directory's listing to the first poll? (See the module's text.)"""
    return nlink == 2 and counts_subdirs and ctime_ns < before_ns and ctime_ns % _SECOND_NS != 0


def leaf_devices(mountinfo: Iterable[str]) -> set[int]:
    """The devices (``st_dev``) of the mounted file systems in ``LEAF_FILESYSTEMS``, from the
    lines of ``/proc/self/mountinfo`` (``... major:minor ... - fstype source options``)."""
    devices = set()
    for line in mountinfo:
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) > 2 and rest.split(" ", 1)[0] in LEAF_FILESYSTEMS:
            major, _, minor = parts[2].partition(":")
            if major.isdigit() and minor.isdigit():
                devices.add(os.makedev(int(major), int(minor)))
    return devices


@dataclass
class QuietLeaves:
    """Set-up's quiet leaf directories, ``(directory, device, inode, ctime_ns)``, left to be listed."""

    before_ns: int  # a ctime older than this is quiet
    devices: set[int]  # where st_nlink counts subdirectories
    found: list[tuple[str, int, int, int]] = field(default_factory=list)  # + st_dev

    @classmethod
    def now(cls) -> QuietLeaves:
        """For a set-up starting now, on the file systems mounted now."""
        try:
            with open("/proc/self/mountinfo") as f:
                devices = leaf_devices(f)
        except OSError:
            devices = set()  # no leaf is trusted: every directory is listed at once
        return cls(time.time_ns() - int(QUIET * _SECOND_NS), devices)

    def defer(self, directory: str, st: os.stat_result) -> bool:
        """Leave ``directory`` (``st``: its stat, taken after its watch) for later, if quiet."""
        if quiet_leaf(st.st_nlink, st.st_ctime_ns, st.st_dev in self.devices, self.before_ns):
            self.found.append((directory, st.st_dev, st.st_ino, st.st_ctime_ns))
            return True
        return False


def walk_tree(
    fd: int,
    names: NameFilter,
    index_add: Callable[[int, str, str | None], Any],
    problem: Callable[[str, str], Any],
    top: str,
    found: Callable[[str, list[str]], None],
    strict: bool = False,
    later: QuietLeaves | None = None,
) -> int:
    """Watches ``top`` and each directory below not ignored (each wd to ``index_add``), then lists
    it, ``found(directory, wanted files)``, or keeps a quiet leaf in ``later``; an unreadable one
    is a ``problem``. Watch, then list: a later change has its record. Returns the watch count."""
    ignored, types, explicit = names.ignored, names.types, names.explicit
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    stack, count = [(top, os.path.dirname(top))], 0
    while stack:
        directory, parent = stack.pop()
        try:
            wd = add_watch(fd, directory.encode(encoding, errors), DIR_MASK)
            if wd < 0:
                raise add_watch_error(directory)
            index_add(wd, directory, parent)
            if later is not None and later.defer(directory, os.lstat(directory)):
                count += 1
                continue
            entries = os.scandir(directory)
        except FileNotFoundError:
            if strict and directory == top:
                raise translated(N_("{directory}: no such directory"), directory=directory) from None
            continue  # gone again: its IN_DELETE follows
        except OSError as exc:  # unreadable, replaced by a file, ...: say so, go on
            if strict and directory == top:
                raise
            problem("unwatched", f"not watched: {directory}: {exc.strerror}")
            continue
        count += 1
        files = []
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
                elif (
                    types is None
                    or name.endswith(types)
                    and name not in types  # is_type
                    or explicit
                    and entry.path in explicit
                ):
                    files.append(entry.path)
        if files:
            found(directory, files)
    return count


def list_late(
    leaves: Iterable[tuple[str, int, int, int]], names: NameFilter, unknown: Callable[[str, str, bool], None]
) -> list[tuple[str, list[str]]]:
    """Lists set-up's quiet leaves: ``(directory, wanted files)`` for each that is as it was at
    set-up; else ``unknown(directory, why, rebuild)``, with what it holds now if it is the same
    directory (``rebuild`` False), or without (True: it moved, was replaced or cannot be
    listed). A subdirectory made since has its own record."""
    ignored, types, explicit, lstat = names.ignored, names.types, names.explicit, os.lstat
    listed = []
    for directory, dev, ino, ctime_ns in leaves:
        files = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:  # as walk_tree's loop, without the subdirectories
                    name = entry.name
                    if (
                        not ignored(name)
                        and (types is None or name.endswith(types) and name not in types or entry.path in explicit)
                        and not entry.is_dir(follow_symlinks=False)
                    ):
                        files.append(entry.path)
            st = lstat(directory)
        except (FileNotFoundError, NotADirectoryError):
            unknown(directory, "moved or deleted before the first poll listed it", True)
            continue
        except OSError as exc:
            unknown(directory, f"could not be listed by the first poll ({exc.strerror})", True)
            continue
        if (st.st_dev, st.st_ino) != (dev, ino):
            unknown(directory, "replaced by another directory before the first poll listed it", True)
            continue
        if files:
            listed.append((directory, files))
        if st.st_ctime_ns != ctime_ns:
            unknown(directory, "changed before the first poll listed it (an entry, or its attributes)", False)
    return listed
