"""Remove outputs, execution counts and widget state from notebooks, in place.

    python scripts/strip_notebooks.py notebooks/*.ipynb

Notebooks are kept in git without outputs: diffs stay readable and nothing of a run (paths, pids,
timings) is committed. ``tests/test_notebooks.py`` fails when a notebook still has outputs.
"""

from __future__ import annotations

import sys

import nbformat

# Metadata a run leaves behind; everything else (tags, kernelspec) is authored and kept.
RUN_METADATA = ("widgets", "execution", "collapsed", "scrolled")


def strip(nb: nbformat.NotebookNode) -> bool:
    """Strip ``nb`` in place; True when anything was removed."""
    changed = nb.metadata.pop("widgets", None) is not None
    for cell in nb.cells:
        for key in RUN_METADATA:
            changed |= cell.metadata.pop(key, None) is not None
        if cell.cell_type == "code":
            changed |= bool(cell.outputs) or cell.execution_count is not None
            cell.outputs = []
            cell.execution_count = None
    return changed


def main(paths: list[str]) -> int:
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            nbformat.write(nb, path)
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
