"""The class kit: slides from the notebooks, `make lab` settings, objectives and recaps, the docs."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import nbformat
import nbutil
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell

ROOT = nbutil.ROOT
TAUGHT = ["00_start_here", "01_inotify", "02_hot_reload", "03_heartbeat"]


def slides_module():
    spec = importlib.util.spec_from_file_location("slides", ROOT / "scripts" / "slides.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_section_is_a_slide_and_an_optional_cell_is_skipped():
    slide_type = slides_module().slide_type
    assert slide_type(new_markdown_cell("## §2 · A watcher")) == "slide"
    assert slide_type(new_markdown_cell("### New directories")) == "subslide"
    assert slide_type(new_markdown_cell("Plain text")) == "-"
    assert slide_type(new_code_cell("x = 1", metadata={"tags": ["optional"]})) == "skip"


def test_slides_are_made_without_touching_the_notebook(tmp_path):
    source = nbutil.NOTEBOOKS / "01_inotify.ipynb"
    before = source.read_bytes()
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "slides.py"), "--no-execute", "--out", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    html = (tmp_path / "01_inotify.slides.html").read_text()
    assert "reveal" in html.lower() and "A watcher for a whole tree" in html
    assert source.read_bytes() == before and not (tmp_path / "01_inotify.ipynb").exists()


def test_make_lab_roots_at_the_repository_without_the_news_popup():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nlab:") :]
    assert "--ServerApp.root_dir=. " in recipe  # the notebook it opens: tests/test_i18n.py
    settings = re.search(r"printf '%s\\n' '(.*)' > \$@", makefile).group(1)
    assert json.loads(settings)["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"


@pytest.mark.parametrize("name", TAUGHT)
def test_each_notebook_states_objectives_and_ends_with_a_recap(name):
    nb = nbformat.read(nbutil.NOTEBOOKS / f"{name}.ipynb", as_version=4)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert "**You will learn**" in markdown[0] and "core" in markdown[0].lower()
    assert any(s.lstrip().startswith("## Recap") for s in markdown[-3:])


def test_the_benchmark_cells_are_optional():
    for name in ("02_hot_reload", "03_heartbeat"):
        nb = nbformat.read(nbutil.NOTEBOOKS / f"{name}.ipynb", as_version=4)
        bench = [c for c in nb.cells if c.cell_type == "code" and "benchmarks/results" in c.source]
        assert bench and all("optional" in c.metadata.get("tags", []) for c in bench), name


def test_the_lesson_plan_and_glossary_exist_and_link_the_notebooks():
    plan = (ROOT / "docs" / "lesson-plan.md").read_text()
    assert "90" in plan and all(f"{n}.ipynb" in plan for n in TAUGHT[1:])
    glossary = (ROOT / "docs" / "glossary.md").read_text().lower()
    for term in ("debounce", "drain", "generation", "idle", "backlog", "uss"):
        assert f"**{term}" in glossary, term
