"""Slides for a projector from the notebooks: one slide per ``##`` section, a sub-slide per ``###``.

    python scripts/slides.py --out build/slides notebooks/0[0-3]_*.ipynb [--no-execute]

Each notebook is copied to ``--out``, its cells given ``slideshow`` metadata from their headings
(cells tagged ``optional`` are skipped: the benchmarks), run headless unless ``--no-execute``, and
converted with ``jupyter nbconvert --to slides``. The notebooks themselves are never written.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import nbformat


def slide_type(cell: nbformat.NotebookNode) -> str:
    """The reveal.js role of a cell: a section starts a slide, a subsection a sub-slide."""
    if "optional" in cell.metadata.get("tags", []):
        return "skip"
    first = cell.source.lstrip().split("\n", 1)[0] if cell.cell_type == "markdown" else ""
    if first.startswith(("# ", "## ")):
        return "slide"
    if first.startswith("### "):
        return "subslide"
    return "-"


def mark(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        cell.metadata["slideshow"] = {"slide_type": slide_type(cell)}
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("build/slides"))
    parser.add_argument("--no-execute", action="store_true", help="slides without outputs (fast)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.notebooks:
        copy = args.out / path.name
        nbformat.write(mark(nbformat.read(path, as_version=4)), copy)
        cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "slides", str(copy), "--output-dir", str(args.out)]
        if not args.no_execute:
            cmd += ["--execute", "--ExecutePreprocessor.timeout=300"]
        subprocess.run(cmd, check=True)
        copy.unlink()
        print(f"slides: {args.out / (path.stem + '.slides.html')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
