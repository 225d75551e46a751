"""lab.watch_filter: which names the watcher reports (pure: strings in, bools out)."""

from __future__ import annotations

import fnmatch
import itertools

from lab.watch_filter import DEFAULT_IGNORE, NameFilter

NAMES = [
    "m.py",
    "e17",
    ".git",
    ".gitignore",
    "a.swp",
    ".swp",
    "a.swpx",
    "x~",
    "~",
    ".#lock",
    "#a#",
    "#",
    "4913",
    "a.tmp",
    "ab",
    "ba",
    "a]",
    "[a",
    "a[",
    "]",
    "abc",
    "xbc",
    "a.b.c",
    "",
    "b",
    "ca",
    "aXc",
]
PATTERNS = [
    "*.swp",
    "a*",
    "*c",
    "?b",
    "a?",
    "[ab]*",
    "*[!c]",
    "a]",
    "[a",
    "a[",
    "]*",
    "*]",
    "a*c",
    "[]c]",
    "*",
    "?",
    "#*#",
    ".#*",
    "a[b-c",
    "[!a]?",
]


def test_ignored_is_fnmatchcase_of_any_pattern():
    """The matcher skips the regex for names no pattern can match: never wrongly."""
    pattern_sets = [DEFAULT_IGNORE, *([p] for p in PATTERNS), *itertools.combinations(PATTERNS, 2)]
    for patterns in pattern_sets:
        ignored = NameFilter(ignore=patterns).ignored
        for name in NAMES:
            expected = any(fnmatch.fnmatchcase(name, p) for p in patterns)
            assert bool(ignored(name)) == expected, (patterns, name)


def test_default_ignore_spares_source_files():
    ignored = NameFilter().ignored
    assert not any(ignored(n) for n in ("m.py", "app.py", ".gitignore", "setup.cfg", "x.php"))
    assert all(ignored(n) for n in (".git", "a.swp", "x~", ".#x", "#x#", "4913", "a.tmp"))
