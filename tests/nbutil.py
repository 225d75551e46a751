"""Helpers for tests that run notebooks: find them, execute them headless, read their outputs."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = ROOT / "solutions"


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def load_strip():
    """``strip(nb)`` from scripts/strip_notebooks.py (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("strip_notebooks", ROOT / "scripts" / "strip_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.strip


def execute(
    path: Path, replace: dict[str, str] | None = None, cell_timeout: int = 120
) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook top to bottom in the venv's ``python3`` kernel; returns it and the seconds.

    ``replace`` maps a cell tag to new source (to run an exercise with its solution). A cell error
    raises ``nbclient.exceptions.CellExecutionError`` with the traceback.
    """
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        for tag in cell.metadata.get("tags", []):
            if replace and tag in replace:
                cell.source = replace[tag]
    client = NotebookClient(
        nb, kernel_name="python3", timeout=cell_timeout, resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.monotonic()
    client.execute()
    return nb, time.monotonic() - start


def outputs(nb: nbformat.NotebookNode, tag: str | None = None) -> list[dict]:
    """All outputs of the code cells (only those tagged ``tag`` if given)."""
    return [
        out
        for cell in nb.cells
        if cell.cell_type == "code" and (tag is None or tag in cell.metadata.get("tags", []))
        for out in cell.outputs
    ]


def text(outs: list[dict]) -> str:
    """The printed text and ``text/plain`` results of some outputs."""
    parts = []
    for out in outs:
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def solution(name: str) -> dict[str, str]:
    """The solution cells of ``solutions/NAME.py``: blocks after ``# %% tag`` lines, by tag."""
    cells: dict[str, str] = {}
    tag = None
    for line in (SOLUTIONS / f"{name}.py").read_text().splitlines(keepends=True):
        if line.startswith("# %% "):
            tag = line[5:].strip()
            cells[tag] = ""
        elif tag is not None:
            cells[tag] += line
    return {t: src.strip() + "\n" for t, src in cells.items()}
