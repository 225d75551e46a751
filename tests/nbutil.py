"""Helpers for tests that run notebooks: find them, execute them headless, read their outputs."""

from __future__ import annotations

import gettext
import importlib.util
import re
import time
from pathlib import Path
from types import ModuleType

import nbformat
from nbclient import NotebookClient

from lab import i18n
from lab.i18n import EDITIONS

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = ROOT / "solutions"


def notebook_paths() -> list[Path]:
    """The English notebooks (the source of every edition)."""
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def editions() -> list[tuple[str, Path]]:
    """(edition, path) of every notebook of every edition: a translation's path is there whether or
    not its file exists, so a missing one fails the tests that read it."""
    english = notebook_paths()
    return [("en", p) for p in english] + [(lang, NOTEBOOKS / lang / p.name) for lang in EDITIONS for p in english]


def edition_id(lang: str, path: Path) -> str:
    """A test id: ``01_inotify``, ``zh-01_inotify``."""
    return path.stem if lang == "en" else f"{lang}-{path.stem}"


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` as a module (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader, name
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_strip():
    """``strip(nb)`` from scripts/strip_notebooks.py."""
    return load_script("strip_notebooks").strip


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


def widget_text(nb: nbformat.NotebookNode) -> str:
    """The text values of a run's widgets as they were left (nbclient stores their state)."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    values = (model.get("state", {}).get("value") for model in state.values())
    return "\n".join(v for v in values if isinstance(v, str))


def shown(msgid: str | tuple[str, str], lang: str) -> str:
    """The longest literal part of the lab's message ``msgid`` in ``lang`` (a (singular, plural)
    pair: its plural): what a run shows of it whatever its numbers (``{n} events``: ``个事件``)."""
    catalog = gettext.translation(i18n.DOMAIN, i18n.LOCALEDIR, languages=[lang], fallback=True)
    text = catalog.ngettext(*msgid, 2) if isinstance(msgid, tuple) else catalog.gettext(msgid)
    return max(re.split(r"\{[^}]*\}", text), key=len).strip()
