"""Which names the watcher reports: file types and ignore patterns. Pure: strings in, bools out.

The file type is the real suffix (``a.b.py`` is ``.py``; a file named ``.py`` has none). Ignore
patterns (fnmatch) match names, never paths: an ignored directory is never watched, so nothing
below it is reported. A file given explicitly is always wanted, whatever its name.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable

from lab.errors import LabError
from lab.i18n import _

__all__ = ["DEFAULT_IGNORE", "NameFilter"]

DEFAULT_IGNORE: tuple[str, ...] = (
    # version control, caches, environments: big, busy, never code we reload
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".venv",
    "node_modules",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".ipynb_checkpoints",
    # editor swap, backup, lock and probe files (vim writes "4913" to test a directory)
    "*.swp",
    "*.swo",
    "*.swx",
    "*.swpx",
    "*~",
    ".#*",
    "#*#",
    "4913",
    "*.tmp",
)


class NameFilter:
    """``types``: suffixes such as ``(".py",)``, or None for every file; ``ignore``: name patterns.
    ``explicit``: paths of files given one by one (wanted whatever their name)."""

    def __init__(
        self,
        types: Iterable[str] | None = (".py",),
        ignore: Iterable[str] = DEFAULT_IGNORE,
        explicit: Iterable[str] = (),
    ):
        self.types = _check_types(types)
        self.ignore = _check_ignore(ignore)
        self.ignored: Callable[[str], bool] = _name_matcher(self.ignore)
        self.explicit = set(explicit)

    def is_type(self, name: str) -> bool:
        """Has ``name`` one of the watched suffixes (a bare ``.py`` is a name, not a suffix)?"""
        types = self.types
        return types is None or (name.endswith(types) and name not in types)

    def wanted(self, path: str, name: str) -> bool:
        """Is the file ``path`` (named ``name``) reported?"""
        if path in self.explicit:
            return True
        return not self.ignored(name) and self.is_type(name)

    def reason(self, name: str) -> str:
        """Why a file named ``name`` is not reported (for the log)."""
        if self.ignored(name):
            pattern = next(p for p in self.ignore if fnmatch.fnmatchcase(name, p))
            return f"name matches ignore pattern {pattern!r}"
        return f"not a watched type {self.types}"


# Characters that make a pattern a wildcard one; as its first or last character, one that may
# match something else (``]`` ends a class such as ``[ab]``, ``[`` may be literal: both count).
_WILD = "*?[]"


def _name_matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """name -> ignored? Plain names are a set lookup. The wildcard patterns' regex costs most
    per name, so it is tried only on names that could match one: a pattern ending in a literal
    character matches only names ending in it; one ending in a wildcard but starting with a
    literal, only names starting with it (most names, such as ``m.py``, pass neither test)."""
    plain = frozenset(p for p in patterns if not any(c in p for c in _WILD))
    wild = [p for p in patterns if p not in plain]
    if not wild:
        return plain.__contains__
    match = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in wild)).match
    if any(p[0] in _WILD and p[-1] in _WILD for p in wild):  # no test tells: ask the regex
        return lambda name: name in plain or match(name) is not None
    tails = frozenset(p[-1] for p in wild if p[-1] not in _WILD)
    heads = frozenset(p[0] for p in wild if p[-1] in _WILD)
    return lambda name: name in plain or (name[-1:] in tails or name[:1] in heads) and match(name) is not None


def _check_types(types: Iterable[str] | None) -> tuple[str, ...] | None:
    if types is None:
        return None
    if isinstance(types, str):
        types = (types,)
    checked = tuple(types)
    for t in checked:
        if not (isinstance(t, str) and len(t) > 1 and t.startswith(".") and "/" not in t):
            raise LabError(
                _("bad file type {type!r}: give suffixes such as '.py' (or types=None for every file)").format(type=t)
            )
    if not checked:
        raise LabError(_("no file types given: give suffixes such as '.py', or types=None for every file"))
    return checked


def _check_ignore(ignore: Iterable[str]) -> tuple[str, ...]:
    if isinstance(ignore, str):
        raise LabError(_("ignore={ignore!r} is one string: give a list of name patterns").format(ignore=ignore))
    checked = tuple(ignore)
    for p in checked:
        if not isinstance(p, str) or not p or "/" in p:
            raise LabError(
                _(
                    "bad ignore pattern {pattern!r}: patterns match file and directory names "
                    "(such as '.git' or '*.swp'), not paths"
                ).format(pattern=p)
            )
    return checked
