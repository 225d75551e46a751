"""The editions of the notebooks (English in notebooks/, Chinese in notebooks/zh/) stay one notebook:
the same code cells, exercises and check cells; translated markdown; links that lead somewhere.
``scripts/sync_editions.py`` copies the English code onto the translations; ``drift`` is its check."""

from __future__ import annotations

import copy
import re
import unicodedata
import urllib.parse
from pathlib import Path

import nbformat
import nbutil
import pytest

from lab.i18n import EDITIONS

SYNC = nbutil.load_script("sync_editions")
NAMES = [p.stem for p in nbutil.notebook_paths()]
START = "00_start_here.ipynb"

# The brief's measure of a Chinese notebook's markdown: CJK characters among the non-space ones.
CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)")  # [text](target), ![alt](target), [text](<target> "title")
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)""")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)  # code is shown, not followed
SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:...
STARS = re.compile(r"\*+")
NOT_PROSE = re.compile(r"\]\([^)]*\)|<[^>]*>|[a-z][a-z0-9+.-]*://\S+", re.I)  # link targets, HTML tags, URLs
# One word for each thing a Chinese reader looks for: a notebook is 本篇 (节 is a section of one), its
# core part 必学, the rest 选学 (the cells marked （选学）).
TERMS = {"本节": "本篇", "下一节": "下一篇", "必做": "必学", "选做": "选学", "核心内容": "必学"}
PROSE = 40  # letters of an English cell, outside code, link targets and tags, that its translation translates


def cjk_ratio(markdown: str) -> float:
    chars = [c for c in markdown if not c.isspace()]
    return sum(bool(CJK.match(c)) for c in chars) / len(chars)


def read(path: Path) -> nbformat.NotebookNode:
    assert path.exists(), f"{path.relative_to(nbutil.ROOT)} is missing: translate notebooks/{path.name}"
    return nbformat.read(path, as_version=4)


def markdown(nb: nbformat.NotebookNode) -> str:
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


def _kind(char: str) -> str:
    """CommonMark's classes around a delimiter: whitespace, punctuation (Unicode P and S), or other."""
    if char.isspace():
        return "space"
    return "punct" if unicodedata.category(char)[0] in "PS" else "other"


def unrendered_emphasis(text: str) -> list[str]:
    """The ``*``/``**`` delimiters of some markdown that a CommonMark renderer shows as asterisks.

    CommonMark (0.31, 6.2) lets a run of ``*`` open emphasis only if it is left-flanking: not followed
    by whitespace, and if followed by punctuation then preceded by whitespace or punctuation; close only
    if right-flanking, the mirror image. Full-width punctuation (``：``, ``。``, ``）``, ``」``) is
    punctuation and a CJK character is not, so ``**必学：**原教程`` keeps its asterisks (the closing run
    follows ``：`` and precedes ``原``) while ``**必学**：原教程`` is bold. Within a paragraph, runs of one
    length alternate opening and closing; a code span counts as its backticks, which are punctuation.
    """
    bad = []
    for paragraph in re.split(r"\n\s*\n", CODE.sub("`x`", text)):
        opened: dict[int, bool] = {}
        for run in STARS.finditer(paragraph):
            before = _kind(paragraph[run.start() - 1]) if run.start() else "space"
            after = _kind(paragraph[run.end()]) if run.end() < len(paragraph) else "space"
            left = after != "space" and (after != "punct" or before != "other")
            right = before != "space" and (before != "punct" or after != "other")
            if left or right:  # else a literal asterisk: a bullet, ``a * b``
                closing = opened.get(len(run.group()), False)
                if not (right if closing else left):
                    bad.append(paragraph[max(0, run.start() - 10) : run.end() + 10])
                opened[len(run.group())] = not closing
    return bad


def english_left(english: nbformat.NotebookNode, edition: nbformat.NotebookNode) -> list[int]:
    """The indices of ``edition``'s markdown cells with no CJK at all where the English cell at the
    same index has prose: at least ``PROSE`` letters outside code, link targets, HTML tags and URLs
    (a cell of links, code or a table of identifiers may stay as it is)."""
    return [
        index
        for index, (ours, theirs) in enumerate(zip(english.cells, edition.cells))
        if ours.cell_type == theirs.cell_type == "markdown"
        and not CJK.search(theirs.source)
        and len(re.findall(r"[A-Za-z]", NOT_PROSE.sub("", CODE.sub("", ours.source)))) >= PROSE
    ]


def relative_links(text: str) -> list[str]:
    """The relative link targets of some markdown (file paths, without #anchors)."""
    text = CODE.sub("", text)
    targets = LINK.findall(text) + HTML_LINK.findall(text)
    return [
        urllib.parse.unquote(t.split("#")[0].split("?")[0]) for t in targets if not (SCHEME.match(t) or t[0] == "#")
    ]


@pytest.mark.parametrize("lang", EDITIONS)
@pytest.mark.parametrize("name", NAMES)
def test_each_edition_has_the_english_code_exercises_and_checks(name, lang):
    english = read(nbutil.NOTEBOOKS / f"{name}.ipynb")
    problems = SYNC.drift(english, read(nbutil.NOTEBOOKS / lang / f"{name}.ipynb"))
    assert not problems, f"notebooks/{lang}/{name}.ipynb: {problems} (python scripts/sync_editions.py copies the code)"


@pytest.mark.parametrize("name", NAMES)
def test_the_chinese_markdown_is_mostly_chinese(name):
    ratio = cjk_ratio(markdown(read(nbutil.NOTEBOOKS / "zh" / f"{name}.ipynb")))
    assert ratio >= 0.60, f"notebooks/zh/{name}.ipynb: {ratio:.2f} of its markdown characters are CJK (at least 0.60)"


@pytest.mark.parametrize("name", NAMES)
def test_no_chinese_markdown_cell_is_left_in_english(name):
    english = read(nbutil.NOTEBOOKS / f"{name}.ipynb")
    left = english_left(english, read(nbutil.NOTEBOOKS / "zh" / f"{name}.ipynb"))
    assert not left, f"notebooks/zh/{name}.ipynb: markdown cells {left} have no Chinese where the English has prose"


def test_a_markdown_cell_left_in_english_is_found_but_not_links_or_code():
    english = read(nbutil.NOTEBOOKS / "01_inotify.ipynb")
    edition = copy.deepcopy(english)
    cells = [i for i, c in enumerate(edition.cells) if c.cell_type == "markdown"]
    for index in cells:
        edition.cells[index].source = "热加载"
    left = cells[0]  # the title cell: prose
    edition.cells[left].source = english.cells[left].source
    assert english_left(english, edition) == [left]
    english.cells[left].source = "[← 00 · Start here](00_start_here.ipynb) `lab.watcher.Watcher.start()`"
    assert english_left(english, edition) == []


@pytest.mark.parametrize("name", NAMES)
def test_the_chinese_notebooks_use_one_word_for_each_thing(name):
    text = markdown(read(nbutil.NOTEBOOKS / "zh" / f"{name}.ipynb"))
    used = {word: TERMS[word] for word in TERMS if word in text}
    assert not used, f"notebooks/zh/{name}.ipynb: write {used} (the words of the other notebooks)"


@pytest.mark.parametrize("path", [nbutil.NOTEBOOKS / "zh" / f"{n}.ipynb" for n in NAMES], ids=NAMES)
def test_the_chinese_emphasis_renders(path):
    cells = [(i, unrendered_emphasis(c.source)) for i, c in enumerate(read(path).cells) if c.cell_type == "markdown"]
    bad = [(i, runs) for i, runs in cells if runs]
    assert not bad, f"{path.relative_to(nbutil.ROOT)}: asterisks shown, not emphasis (write **必学**：): {bad}"


@pytest.mark.parametrize(
    "text, shown",
    [
        ("**必学：**原教程", 1),
        ("**必学**：原教程", 0),
        ("*（选学）*基准测试", 1),
        ("*（选学）* 基准测试, *（选学）*`timer`, 见**术语表**。", 0),
        ("**本篇你将学会：**\n1. 运行", 0),  # a closing run before a line break is right-flanking
        ("* 列表\n* `**` 与 a * b", 0),  # bullets, code and a lone asterisk are no emphasis
        ("**`lab`**的", 1),  # the backtick is punctuation
    ],
)
def test_emphasis_follows_the_commonmark_flanking_rules(text, shown):
    assert len(unrendered_emphasis(text)) == shown, unrendered_emphasis(text)


@pytest.mark.parametrize("lang", EDITIONS)
def test_start_here_of_each_edition_links_to_the_other(lang):
    assert f"{lang}/{START}" in relative_links(markdown(read(nbutil.NOTEBOOKS / START)))
    assert f"../{START}" in relative_links(markdown(read(nbutil.NOTEBOOKS / lang / START)))


@pytest.mark.parametrize("lang, path", nbutil.editions(), ids=[nbutil.edition_id(*e) for e in nbutil.editions()])
def test_every_relative_link_leads_to_a_file(lang, path):
    broken = [t for t in relative_links(markdown(read(path))) if not (path.parent / t).exists()]
    assert not broken, f"{path.relative_to(nbutil.ROOT)} links to files that do not exist: {broken}"


def test_links_are_found_in_markdown_and_html_but_not_in_code():
    text = "[a](01_x.ipynb) ![p](../pic/a.png \"t\") <img src='b.png'> [w](https://x.org) [s](#top) `[c](no.md)`"
    assert relative_links(text) == ["01_x.ipynb", "../pic/a.png", "b.png"]


# --- the check catches drift (on in-memory copies of a notebook with exercises) ---------------


@pytest.fixture
def english() -> nbformat.NotebookNode:
    return read(nbutil.NOTEBOOKS / "01_inotify.ipynb")


def _code(nb: nbformat.NotebookNode, tag: str | None = None) -> list[nbformat.NotebookNode]:
    return [c for c in SYNC.code_cells(nb) if tag is None or any(t.startswith(tag) for t in c.metadata.get("tags", []))]


def test_a_copy_does_not_drift_and_its_markdown_is_its_own(english):
    edition = copy.deepcopy(english)
    for cell in edition.cells:
        if cell.cell_type == "markdown":
            cell.source = "热加载"
    assert SYNC.drift(english, edition) == []


@pytest.mark.parametrize("side", ["english", "edition"])
def test_one_code_cell_changed_in_one_edition_alone_is_drift(english, side):
    edition = copy.deepcopy(english)
    changed = english if side == "english" else edition
    _code(changed)[3].source += "\nprint('only here')"
    assert SYNC.drift(english, edition) == ["code cell 4 differs from the English in its source"]


def test_a_changed_tag_is_drift(english):
    edition = copy.deepcopy(english)
    _code(edition, "check-")[0].metadata["tags"] = ["optional"]
    assert any("check cells" in p for p in SYNC.drift(english, edition))


def test_a_missing_exercise_is_drift(english):
    edition = copy.deepcopy(english)
    edition.cells.remove(_code(edition, "exercise")[0])
    problems = SYNC.drift(english, edition)
    assert any("exercises" in p for p in problems) and any("code cells" in p for p in problems), problems


def _prose_turned_into_code(english: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int]:
    """An edition with its second markdown cell made a code cell and its last code
    cell deleted: as many code cells as the English, paired wrongly. Also the cell's index."""
    edition = copy.deepcopy(english)
    index = next(i for i, c in enumerate(edition.cells) if i and c.cell_type == "markdown")
    edition.cells[index] = nbformat.v4.new_code_cell(edition.cells[index].source, id=edition.cells[index].id)
    edition.cells.remove(_code(edition)[-1])
    return edition, index


def test_a_different_sequence_of_cell_types_is_drift_at_its_first_cell(english):
    edition, index = _prose_turned_into_code(english)
    assert len(_code(edition)) == len(_code(english))  # counting code cells alone misses it
    problems = SYNC.drift(english, edition)
    assert any(
        f"cell types differ from the English at cell {index + 1} (code, English markdown)" in p for p in problems
    )


def test_a_missing_check_cell_is_drift(english):
    edition = copy.deepcopy(english)
    edition.cells.remove(_code(edition, "check-")[-1])
    problems = SYNC.drift(english, edition)
    assert any("check cells" in p for p in problems) and any("code cells" in p for p in problems), problems


# --- the script ------------------------------------------------------------------------------


def _tree(
    tmp_path: Path, english: nbformat.NotebookNode, edition: nbformat.NotebookNode, name: str = "01_inotify.ipynb"
) -> Path:
    (tmp_path / "notebooks" / "zh").mkdir(parents=True, exist_ok=True)
    nbformat.write(english, tmp_path / "notebooks" / name)
    nbformat.write(edition, tmp_path / "notebooks" / "zh" / name)
    return tmp_path / "notebooks" / "zh" / name


def test_sync_copies_changed_code_and_keeps_the_markdown(tmp_path, english, capsys):
    edition = copy.deepcopy(english)
    edition.cells[0].source = "# 热加载"
    _code(edition)[0].source = "print('stale')"
    _code(edition)[1].metadata["tags"] = ["stale"]
    target = _tree(tmp_path, english, edition)
    assert SYNC.main(["--check"], root=tmp_path) == 1 and "code cell 1" in capsys.readouterr().err
    assert SYNC.main([], root=tmp_path) == 0
    synced = nbformat.read(target, as_version=4)
    assert SYNC.drift(english, synced) == [] and synced.cells[0].source == "# 热加载"
    assert SYNC.main(["--check"], root=tmp_path) == 0


def test_sync_refuses_a_different_number_of_code_cells_and_leaves_the_file(tmp_path, english, capsys):
    edition = copy.deepcopy(english)
    edition.cells.remove(_code(edition)[-1])
    target = _tree(tmp_path, english, edition)
    before = target.read_bytes()
    assert SYNC.main([], root=tmp_path) == 1
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1 and "code cells" in error, error
    assert target.read_bytes() == before


def test_sync_names_a_missing_or_broken_translation(tmp_path, english, capsys):
    target = _tree(tmp_path, english, english)
    target.write_text('{"cells": [')
    assert SYNC.main([], root=tmp_path) == 1 and target.read_text() == '{"cells": ['
    assert capsys.readouterr().err.startswith("notebooks/zh/01_inotify.ipynb: cannot read it: ")
    target.unlink()
    assert SYNC.main(["--check"], root=tmp_path) == 1
    assert "notebooks/zh/01_inotify.ipynb: missing" in capsys.readouterr().err


def test_sync_refuses_a_different_sequence_of_cell_types_and_keeps_the_prose(tmp_path, english, capsys):
    edition, _ = _prose_turned_into_code(english)
    target = _tree(tmp_path, english, edition)
    before = target.read_bytes()
    assert SYNC.main([], root=tmp_path) == 1
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1 and "cell types differ" in error, error
    assert target.read_bytes() == before


NOT_NOTEBOOKS = {
    "object": '{"a": 1}',
    "list": "[]",
    "string": '"cells"',
    "cell_lacking_keys": '{"cells": [{"cell_type": "code"}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}',
    "code_cell_lacking_outputs": (
        '{"cells": [{"cell_type": "code", "id": "a", "source": "", "metadata": {}}], '
        '"metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    ),
}


@pytest.mark.parametrize("text", NOT_NOTEBOOKS.values(), ids=NOT_NOTEBOOKS.keys())
@pytest.mark.parametrize("argv", [[], ["--check"]], ids=["sync", "check"])
def test_sync_refuses_json_that_is_no_notebook_in_one_line(tmp_path, english, capsys, text, argv):
    target = _tree(tmp_path, english, english)
    target.write_text(text)
    assert SYNC.main(argv, root=tmp_path) == 1 and target.read_text() == text
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1, error
    assert error.startswith("notebooks/zh/01_inotify.ipynb: cannot read it: "), error


def test_sync_writes_nothing_while_one_translation_is_refused(tmp_path, english, capsys):
    drifted = copy.deepcopy(english)
    _code(drifted)[0].source = "print('stale')"
    synced = _tree(tmp_path, english, drifted, "01_inotify.ipynb")
    refused = _tree(tmp_path, english, english, "02_x.ipynb")
    refused.write_text("[]")
    before = synced.read_bytes()
    assert SYNC.main([], root=tmp_path) == 1
    error = capsys.readouterr().err
    assert "notebooks/zh/02_x.ipynb: cannot read it" in error and "nothing written" in error, error
    assert synced.read_bytes() == before and refused.read_text() == "[]"
    refused.write_bytes(synced.read_bytes().replace(b"stale", b"also stale"))  # both can be synced now
    assert SYNC.main([], root=tmp_path) == 0
    assert all(SYNC.drift(english, nbformat.read(p, as_version=4)) == [] for p in (synced, refused))
