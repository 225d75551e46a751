"""The notebooks of every edition run top to bottom headless, are committed without outputs, and
their exercises check; a translated edition's kernel speaks its language with glyphs for it."""

from __future__ import annotations

import functools
import re
import sys

import nbformat
import nbutil
import pytest

from lab import i18n

PATHS = nbutil.notebook_paths()
EDITIONS = nbutil.editions()
EDITION_IDS = [nbutil.edition_id(lang, path) for lang, path in EDITIONS]
BUDGET = 180  # seconds a notebook may take, whole
# matplotlib's warning for a character its fonts cannot draw (the figure shows a box instead)
MISSING_GLYPH = re.compile(r"Glyph \d+ .*missing from (current )?font")
# A message of the lab each notebook shows when it runs, in the kernel's language: a live view's
# status line (lab/live.py), the check cells' verdict of a starter (lab/exercises.py), the header
# of the check's report (lab/check/report.py).
VERDICT = (
    "{failed} of {total} case fails: keep going (a solution is in {solution})",
    "{failed} of {total} cases fail: keep going (a solution is in {solution})",
)
SHOWN: dict[str, str | tuple[str, str]] = {
    "00_start_here": "{n} events",
    "01_inotify": VERDICT,
    "02_hot_reload": VERDICT,
    "03_heartbeat": VERDICT,
    "04_check_any_server": "check",
}


def run(name: str, solved: bool = False, lang: str = "en"):
    """Each notebook of each edition is executed once per session (with its solutions: once more)."""
    return _run(name, solved, lang)  # one cache key however the arguments are spelled


@functools.cache
def _run(name: str, solved: bool, lang: str):
    path = nbutil.NOTEBOOKS / ("" if lang == "en" else lang) / f"{name}.ipynb"
    return nbutil.execute(path, replace=nbutil.solution(name) if solved else None)


def test_there_are_notebooks():
    assert [p.name for p in PATHS][:2] == ["00_start_here.ipynb", "01_inotify.ipynb"]


@pytest.mark.parametrize("lang, path", EDITIONS, ids=EDITION_IDS)
def test_committed_notebook_has_no_outputs(lang, path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert not nbutil.load_strip()(nb), (
        f"{path.name} has outputs or run state: run `python scripts/strip_notebooks.py {path}`"
    )


def test_strip_removes_outputs_and_keeps_tags():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1 + 1", execution_count=3, metadata={"tags": ["exercise"], "scrolled": True})
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=3)]
    nb.cells = [cell]
    nb.metadata["widgets"] = {"state": {}}
    strip = nbutil.load_strip()
    assert strip(nb) and not strip(nb)
    assert cell.outputs == [] and cell.execution_count is None
    assert cell.metadata == {"tags": ["exercise"]} and "widgets" not in nb.metadata


@pytest.mark.notebook
@pytest.mark.timeout(BUDGET + 60)
@pytest.mark.parametrize("lang, path", EDITIONS, ids=EDITION_IDS)
def test_notebook_runs_headless(lang, path):
    nb, seconds = run(path.stem, lang=lang)
    outs = nbutil.outputs(nb)
    assert not [o for o in outs if o.output_type == "error"]
    text = nbutil.text(outs)
    assert "Traceback" not in text
    # every figure a notebook draws reaches a headless run as a PNG, every glyph of it drawn
    assert any("image/png" in o.get("data", {}) for o in outs), "no static figure in the outputs"
    assert not MISSING_GLYPH.search(text), MISSING_GLYPH.search(text).group(0)
    # the kernel speaks the edition's language (the folder decides: the code cells are the same)
    marker = nbutil.shown(SHOWN[path.stem], lang)
    assert marker in text + nbutil.widget_text(nb), f"{marker!r} not shown by a run of {path}"
    assert seconds < BUDGET, f"{path.name} took {seconds:.0f} s"


@pytest.mark.notebook
def test_the_live_watcher_holds_a_save_until_its_file_is_closed():
    # notebook 01's live view: three saves, each written in five chunks with the file open
    nb, _ = run("01_inotify")
    assert "15 writes -> 3 reported changes" in nbutil.text(nbutil.outputs(nb))


@pytest.mark.notebook
def test_start_here_runs_in_the_venv_kernel():
    nb, _ = run("00_start_here")
    assert f"at {sys.executable}" in nbutil.text(nbutil.outputs(nb))


@pytest.mark.notebook
def test_check_notebook_puts_the_labs_server_beside_the_learners():
    nb, _ = run("04_check_any_server")
    text = nbutil.text(nbutil.outputs(nb))
    assert "lab       every check passed" in text, text
    # the starter has no heartbeat, and the check says exactly that
    assert "mine      failed: heartbeat.never_closed " in text, text
    assert "scratch removed: True" in text


@pytest.mark.notebook
@pytest.mark.parametrize(
    "name, checks",
    [
        ("01_inotify", ("check-wanted", "check-due")),
        ("02_hot_reload", ("check-phases", "check-signal")),
        ("03_heartbeat", ("check-tracker",)),
    ],
)
def test_exercises_are_checked_and_the_solutions_pass(name, checks):
    starter, _ = run(name)
    solved, _ = run(name, solved=True)
    for check in checks:
        assert "cases fail" in nbutil.text(nbutil.outputs(starter, check))
        assert "✓ all" in nbutil.text(nbutil.outputs(solved, check))
    # the translations run the same code: their check cells judge it, in their language
    for lang in i18n.EDITIONS:
        starter, _ = run(name, lang=lang)
        for check in checks:
            fail = nbutil.shown(SHOWN[name], lang)
            assert fail in nbutil.text(nbutil.outputs(starter, check)), f"{lang}: {check} does not say {fail!r}"
