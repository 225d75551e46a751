"""Copy the code cells of the English notebooks onto their translations: one source of truth for code.

    python scripts/sync_editions.py            # notebooks/zh/NAME.ipynb gets the code of notebooks/NAME.ipynb
    python scripts/sync_editions.py --check    # only report where the editions drift apart (exit 1)

Code cells are paired by their position among code cells (markdown cells are the translation's own);
each gets the English cell's source and metadata (tags included). A translation whose number of code
cells differs is refused with a one-line error and left untouched: pair its cells by hand.
``tests/test_editions.py`` checks the editions with ``drift``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import nbformat

from lab.i18n import EDITIONS

ROOT = Path(__file__).resolve().parent.parent


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _tagged(cells: list[nbformat.NotebookNode], prefix: str) -> list[str]:
    """The tags starting with ``prefix`` (``exercise-wanted``, ``check-due``...), cell by cell."""
    return [tag for cell in cells for tag in cell.metadata.get("tags", []) if tag.startswith(prefix)]


def drift(english: nbformat.NotebookNode, edition: nbformat.NotebookNode) -> list[str]:
    """Where ``edition``'s code differs from ``english``'s, one line each; empty when they agree."""
    ours, theirs = code_cells(english), code_cells(edition)
    problems = []
    exercises = sorted(set(_tagged(theirs, "exercise"))), sorted(set(_tagged(ours, "exercise")))
    if exercises[0] != exercises[1]:
        problems.append(f"exercises {exercises[0]}, English {exercises[1]}")
    checks = len(_tagged(theirs, "check-")), len(_tagged(ours, "check-"))
    if checks[0] != checks[1]:
        problems.append(f"{checks[0]} check cells, English {checks[1]}")
    if len(ours) != len(theirs):
        return [*problems, f"{len(theirs)} code cells, English {len(ours)}"]
    for number, (a, b) in enumerate(zip(ours, theirs), 1):
        differs = [part for part in ("source", "metadata") if a[part] != b[part]]
        if differs:
            problems.append(f"code cell {number} differs from the English in its {' and '.join(differs)}")
    return problems


def sync(english: nbformat.NotebookNode, edition: nbformat.NotebookNode) -> None:
    """Copy the source and metadata of ``english``'s code cells onto ``edition``'s (as many)."""
    for a, b in zip(code_cells(english), code_cells(edition)):
        b.source, b.metadata = a.source, copy.deepcopy(a.metadata)


def _one(root: Path, name: str, lang: str, check: bool) -> str | None:
    """Check or sync the ``lang`` edition of the English notebook ``name``; what is wrong, or None."""
    path, target = Path("notebooks", name), Path("notebooks", lang, name)
    if not (root / target).exists():
        return f"{target}: missing (translate {path})"
    try:
        english, edition = nbformat.read(root / path, as_version=4), nbformat.read(root / target, as_version=4)
    except (OSError, ValueError) as exc:  # not JSON, not a notebook
        return f"{target}: cannot read it: {exc}".splitlines()[0]
    problems = drift(english, edition)
    if not problems:
        return None
    if check or len(code_cells(english)) != len(code_cells(edition)):
        return f"{target}: {'; '.join(problems)}" + ("" if check else " (code cells pair by position: left untouched)")
    sync(english, edition)
    nbformat.write(edition, root / target)
    print(f"synced {target}")
    return None


def main(argv: list[str], root: Path = ROOT) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print("usage: python scripts/sync_editions.py [--check]", file=sys.stderr)
        return 2
    errors = [
        error
        for path in sorted((root / "notebooks").glob("*.ipynb"))
        for lang in EDITIONS
        if (error := _one(root, path.name, lang, check))
    ]
    for error in errors:
        print(error, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
