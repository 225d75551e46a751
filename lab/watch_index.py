"""What the watcher knows of the tree: pure bookkeeping, no I/O.

* the watches: watch descriptor <-> directory, and each watched directory's watched
  subdirectories (so a renamed or deleted directory's subtree is found without a scan);
* the directories watched for single files only (a file root: its neighbours are not reported);
* the snapshot of the last batch: path -> signature (``hash((inode, size, mtime_ns))``, one int
  instead of a 3-tuple keeps a big tree's snapshot small), also held by directory so that
  forgetting a file is O(1) (200,000 files deleted from one directory were quadratic with a list).
  A file found at set-up is known at once but signed later (``UNSIGNED`` until then), off the
  critical path; a signature that may postdate lost records is withdrawn (``unsign``).
"""

from __future__ import annotations

from posixpath import dirname

__all__ = ["UNSIGNED", "Signature", "WatchIndex"]

Signature = int
# No signature taken (yet, or one withdrawn): differs from every real one, since hash() never
# returns -1 in CPython; a rescan reports such a file as modified (it may have changed).
UNSIGNED: Signature = -1


class WatchIndex:
    """Watches and the snapshot. Directories and files are absolute path strings."""

    def __init__(self) -> None:
        self.wd_path: dict[int, str] = {}
        self.path_wd: dict[str, int] = {}
        self.only: dict[int, set[str]] = {}  # wd of a file root's directory -> names watched
        self.subdirs: dict[str, set[str]] = {}  # watched directory -> its watched subdirectories
        self.files: dict[str, Signature] = {}  # the snapshot, as of the last batch
        self.dir_files: dict[str, dict[str, None]] = {}  # the snapshot by directory

    # --- watches ----------------------------------------------------------------------------------

    def add(self, wd: int, directory: str, parent: str | None = None) -> None:
        """The kernel gave ``wd`` to ``directory`` (``parent``: its directory, if known)."""
        old = self.wd_path.get(wd)
        if old is not None and old != directory:
            self.forget_wd(wd)  # the same directory under a name we have not caught up with
        self.wd_path[wd] = directory
        self.path_wd[directory] = wd
        if parent is None:
            parent = dirname(directory)
        subdirs = self.subdirs.get(parent)
        if subdirs is None:
            self.subdirs[parent] = {directory}
        else:
            subdirs.add(directory)

    def add_only(self, wd: int, name: str) -> None:
        """The directory of ``wd`` is watched for the file ``name`` (among others so named)."""
        self.only.setdefault(wd, set()).add(name)

    def covers(self, directory: str) -> bool:
        """Is ``directory`` watched as part of a tree (not only for single files)?"""
        wd = self.path_wd.get(directory)
        return wd is not None and wd not in self.only

    def forget_wd(self, wd: int) -> None:
        directory = self.wd_path.pop(wd, None)
        if directory is not None and self.path_wd.get(directory) == wd:
            del self.path_wd[directory]
            self.subdirs.get(dirname(directory), set()).discard(directory)
        self.only.pop(wd, None)

    def forget_tree(self, top: str) -> list[int]:
        """Forgets the watches of ``top`` and its subtree; returns their wds."""
        wds = [wd for wd in map(self.path_wd.get, self.subtree(top)) if wd is not None]
        for wd in wds:
            self.forget_wd(wd)
        return wds

    def forget_watches(self) -> set[int]:
        """Forgets every watch (the overflow rescan builds them anew); returns their wds."""
        wds = set(self.wd_path)
        self.wd_path.clear()
        self.path_wd.clear()
        self.only.clear()
        self.subdirs.clear()
        return wds

    def subtree(self, top: str) -> list[str]:
        """``top`` and the watched directories below it (through the index, not a scan of all)."""
        out, stack = [], [top]
        while stack:
            directory = stack.pop()
            out.append(directory)
            stack.extend(self.subdirs.get(directory, ()))
        return out

    def rename(self, old: str, new: str, subtree: list[str]) -> None:
        """The directory ``old`` (with its watched ``subtree``) is now ``new``: its watches stand
        for the new paths."""
        self.subdirs.get(dirname(old), set()).discard(old)
        self.subdirs.setdefault(dirname(new), set()).add(new)
        for directory in subtree:
            moved = new + directory[len(old) :]
            kids = self.subdirs.pop(directory, None)
            if kids:
                self.subdirs[moved] = {new + k[len(old) :] for k in kids}
            wd = self.path_wd.pop(directory, None)
            if wd is not None:
                self.path_wd[moved] = wd
                self.wd_path[wd] = moved

    # --- the snapshot -----------------------------------------------------------------------------

    def remember(self, path: str, sig: Signature, directory: str | None = None) -> None:
        if path not in self.files:
            if directory is None:
                directory = dirname(path)
            paths = self.dir_files.get(directory)
            if paths is None:
                self.dir_files[directory] = {path: None}
            else:
                paths[path] = None
        self.files[path] = sig

    def remember_unsigned(self, directory: str, paths: list[str]) -> None:
        """The files ``paths``, listed in ``directory``, are known from now on, to be signed
        later (set-up lists tens of thousands: one call per directory, not per file)."""
        listed = dict.fromkeys(paths)
        known = self.dir_files.get(directory)
        if known is None:
            self.dir_files[directory] = listed
        else:
            known.update(listed)
        self.files.update(dict.fromkeys(paths, UNSIGNED))

    def sign(self, path: str, sig: Signature) -> None:
        """The signature of a file known UNSIGNED; nothing if it was signed or forgotten since
        (a batch signs what it reports, a later state than this one may be)."""
        if self.files.get(path) == UNSIGNED:
            self.files[path] = sig

    def unsign(self, paths: list[str]) -> None:
        """Withdraw these signatures: they may have been taken after records were lost."""
        files = self.files
        for path in paths:
            if path in files:
                files[path] = UNSIGNED

    def forget_file(self, path: str | None) -> None:
        if path is not None and self.files.pop(path, None) is not None:
            directory = dirname(path)
            paths = self.dir_files[directory]
            del paths[path]
            if not paths:
                del self.dir_files[directory]
