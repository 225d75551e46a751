"""Copy the code cells of the English notebooks onto their translations: one source of truth for code.

    python scripts/sync_editions.py            # notebooks/zh/NAME.ipynb gets the code of notebooks/NAME.ipynb
    python scripts/sync_editions.py --check    # only report where the editions drift apart (exit 1)

The editions have one layout: the same sequence of cell types, cell for cell (markdown cells are the
translation's own). Each code cell of the translation gets the source and metadata (tags included) of
the English cell at its position. A translation with another layout, or one that is not a notebook, is
refused with a one-line error: pair its cells by hand. Every pair is checked first and nothing is
written unless all can be synced, so a refusal leaves every notebook as it was.
``tests/test_editions.py`` checks the editions with ``drift``.
"""

from __future__ import annotations

import copy
import json
import sys
import warnings
from pathlib import Path

import nbformat

from lab.i18n import EDITIONS

ROOT = Path(__file__).resolve().parent.parent


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _tagged(cells: list[nbformat.NotebookNode], prefix: str) -> list[str]:
    """The tags starting with ``prefix`` (``exercise-wanted``, ``check-due``...), cell by cell."""
    return [tag for cell in cells for tag in cell.metadata.get("tags", []) if tag.startswith(prefix)]


def layout_drift(english: nbformat.NotebookNode, edition: nbformat.NotebookNode) -> str | None:
    """Where ``edition``'s sequence of cell types first differs from ``english``'s, or None."""
    ours, theirs = [c.cell_type for c in english.cells], [c.cell_type for c in edition.cells]
    if ours == theirs:
        return None
    first = next((i for i, pair in enumerate(zip(ours, theirs)) if pair[0] != pair[1]), min(len(ours), len(theirs)))
    here, there = (kinds[first] if first < len(kinds) else "none" for kinds in (theirs, ours))
    counts = len(code_cells(edition)), len(code_cells(english))
    return (
        f"cell types differ from the English at cell {first + 1} ({here}, English {there}); "
        f"{counts[0]} code cells, English {counts[1]}"
    )


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
    if layout := layout_drift(english, edition):
        return [*problems, layout]
    for number, (a, b) in enumerate(zip(ours, theirs), 1):
        differs = [part for part in ("source", "metadata") if a[part] != b[part]]
        if differs:
            problems.append(f"code cell {number} differs from the English in its {' and '.join(differs)}")
    return problems


def sync(english: nbformat.NotebookNode, edition: nbformat.NotebookNode) -> None:
    """Copy the source and metadata of ``english``'s code cells onto ``edition``'s (same layout)."""
    assert layout_drift(english, edition) is None, "sync needs the same sequence of cell types"
    for a, b in zip(code_cells(english), code_cells(edition)):
        b.source, b.metadata = a.source, copy.deepcopy(a.metadata)


def read(path: Path) -> nbformat.NotebookNode:
    """The v4 notebook at ``path``; ValueError (one line) when it is not JSON or not a valid notebook."""
    text = path.read_text(encoding="utf-8")  # a decoding error is a ValueError
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"not a notebook (a JSON {type(data).__name__})")
    if data.get("nbformat") != 4:  # the editions are v4: no conversion, whose errors are not ValueErrors
        raise ValueError(f"not a version 4 notebook (nbformat {data.get('nbformat')!r})")
    try:  # the schema first: reading a notebook with a key missing may raise anything
        with warnings.catch_warnings():  # a cell id missing is told as a warning on stderr: not our line
            warnings.simplefilter("ignore")
            nbformat.validate(data, version=4)
    except nbformat.ValidationError as exc:  # jsonschema's: a key missing, a value of the wrong type
        raise ValueError(f"not a valid notebook: {exc.message}") from None
    return nbformat.reads(text, as_version=4)


def _plan(root: Path, name: str, lang: str, check: bool) -> str | nbformat.NotebookNode | None:
    """The ``lang`` edition of the English notebook ``name``: what is wrong (one line), the synced
    edition to write, or None when it needs nothing. Writes nothing."""
    path, target = Path("notebooks", name), Path("notebooks", lang, name)
    if not (root / target).exists():
        return f"{target}: missing (translate {path})"
    try:
        english, edition = read(root / path), read(root / target)
    except (OSError, ValueError) as exc:
        return f"{target}: cannot read it: {exc}".splitlines()[0]
    problems = drift(english, edition)
    if not problems:
        return None
    if check or layout_drift(english, edition):
        return f"{target}: {'; '.join(problems)}" + ("" if check else " (cells pair by position: left untouched)")
    sync(english, edition)
    return edition


def main(argv: list[str], root: Path = ROOT) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print("usage: python scripts/sync_editions.py [--check]", file=sys.stderr)
        return 2
    plans = {
        Path("notebooks", lang, path.name): _plan(root, path.name, lang, check)
        for path in sorted((root / "notebooks").glob("*.ipynb"))
        for lang in EDITIONS
    }
    errors = [plan for plan in plans.values() if isinstance(plan, str)]
    synced = {target: plan for target, plan in plans.items() if isinstance(plan, nbformat.NotebookNode)}
    for error in errors:
        print(error, file=sys.stderr)
    if errors and synced:  # all or nothing: the drifted notebooks wait for the refused ones
        print(f"nothing written: {', '.join(map(str, synced))} not synced", file=sys.stderr)
    if errors:
        return 1
    for target, edition in synced.items():
        nbformat.write(edition, root / target)
        print(f"synced {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
