"""The Chinese edition: complete catalogs, the language chosen from the locale, Chinese figures
that render with a font that has the glyphs, and the demo telling the same story in both languages."""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import string
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import nbformat
import pytest

from lab import i18n
from lab.errors import LabError
from lab.process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")
# Translations that may read as their English: a Unix word, a unit, names in the code.
SAME_IN_CHINESE = {"fork", "{ms:.0f} ms", "lab.playground.Lab", "lab.live", "events.jsonl", "SIGUSR1 / SIGTERM"}


def _catalog_tool():
    """scripts/i18n.py (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("i18n_catalog", ROOT / "scripts" / "i18n.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _catalog_tool()
PO = ROOT / "lab" / "locale" / "zh" / "LC_MESSAGES" / "reactor-lab.po"


@pytest.fixture
def chinese():
    """The lab in Chinese for one test, English again afterwards."""
    yield i18n.set_language("zh")
    i18n.set_language("en")


def _fields(text: str) -> set[tuple[str, str | None, str | None]]:
    """The ``{name!conv:spec}`` placeholders of a message."""
    return {(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text) if name is not None}


def test_every_message_in_lab_and_the_notebooks_has_a_chinese_translation_with_the_same_placeholders():
    entries = TOOL.read_po(PO)
    for (msgid, plural), where in TOOL.extract().items():
        forms = entries.get((msgid, plural))
        assert forms and all(forms), f"no Chinese for {msgid!r} ({where[0]}): run make i18n, then translate it"
        for form in forms:
            assert _fields(form) == _fields(msgid), f"placeholders differ: {msgid!r} -> {form!r}"
            assert msgid in SAME_IN_CHINESE or CJK.search(form), f"English left in the zh catalog: {form!r}"


def test_the_figure_texts_of_the_notebooks_code_cells_are_extracted():
    """A notebook's own plots are labelled through the catalog too, cells with top-level await included."""
    found = TOOL.extract()
    for message, notebook in (
        ("Reload latency seen by a client, per edit", "02_hot_reload"),
        ("slow reader", "03_heartbeat"),  # N_() in a cell that awaits
        ("heartbeat (never closed: no dot)", "04_check_any_server"),
    ):
        assert f"notebooks/{notebook}.ipynb" in found.get((message, None), []), message


def test_extraction_reads_code_cells_skips_ipython_syntax_and_the_chinese_copies(tmp_path):
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "m.py").write_text('_("in a module")\n')
    cells = [
        nbformat.v4.new_code_cell('%time _f("after a magic")'),
        nbformat.v4.new_code_cell('!ls\nx = N_("after a shell escape")'),
        nbformat.v4.new_code_cell('got = await until(_f("awaited"))\nprint("printed")'),
        nbformat.v4.new_markdown_cell('_("in markdown")'),
    ]
    (tmp_path / "notebooks" / "zh").mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "notebooks" / "01_x.ipynb")
    chinese = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('_f("a copy")')])
    nbformat.write(chinese, tmp_path / "notebooks" / "zh" / "01_x.ipynb")
    assert TOOL.extract(tmp_path / "lab", tmp_path / "notebooks") == {
        ("in a module", None): ["lab/m.py"],
        ("awaited", None): ["notebooks/01_x.ipynb"],
    }


def test_messages_are_literals_so_extraction_finds_them():
    """``_(f"...")`` or ``_("..." .format())`` would look a message up that no catalog holds."""
    for where, tree in TOOL.trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in TOOL.SINGULAR | TOOL.PLURAL:
                assert node.args and not isinstance(node.args[0], (ast.JoinedStr, ast.Call, ast.BinOp)), (
                    f"{where}:{node.lineno}: give {node.func.id}() a string literal"
                )


SCOPES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.Lambda,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.ClassDef,
)


def _own_nodes(fn: ast.AST):
    """The nodes of ``fn``'s own scope (not those of comprehensions or functions inside it)."""
    for child in ast.iter_child_nodes(fn):
        yield child
        if not isinstance(child, SCOPES):
            yield from _own_nodes(child)


def test_no_function_that_translates_also_binds_the_name_underscore():
    """``head, _, body = ...`` in a function makes its ``_("...")`` an UnboundLocalError."""
    for path in (ROOT / "lab").rglob("*.py"):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            own = list(_own_nodes(fn))
            binds = any(isinstance(n, ast.Name) and n.id == "_" and isinstance(n.ctx, ast.Store) for n in own)
            calls = any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "_" for n in own)
            assert not (binds and calls), f"{path.relative_to(ROOT)}: {fn.name} binds _ and calls _()"


def test_the_committed_mo_is_compiled_from_the_po():
    mo = PO.with_suffix(".mo")
    assert mo.read_bytes() == TOOL.compile_mo(TOOL.read_po(PO)), "the .mo is stale: run make i18n"


@pytest.mark.skipif(not shutil.which("msgfmt"), reason="no GNU gettext here")
def test_gnu_msgfmt_accepts_the_po_and_compiles_the_same_catalog(tmp_path):
    import gettext

    subprocess.run(["msgfmt", "--check-format", "-o", tmp_path / "gnu.mo", PO], check=True, timeout=60)
    with open(tmp_path / "gnu.mo", "rb") as gnu, open(PO.with_suffix(".mo"), "rb") as ours:
        assert gettext.GNUTranslations(gnu)._catalog == gettext.GNUTranslations(ours)._catalog


def test_the_catalog_ships_with_the_package():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["lab"]
    assert any(
        Path("lab").joinpath(PO.with_suffix(".mo").relative_to(ROOT / "lab")).match("lab/" + pattern)
        for pattern in data
    )


@pytest.mark.parametrize(
    "environ, lang",
    [
        ({}, "en"),
        ({"LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LANG": "en_US.UTF-8", "LC_ALL": "zh_TW.UTF-8"}, "zh"),
        ({"LANGUAGE": "zh_CN:en", "LANG": "C.UTF-8"}, "zh"),
        ({"LANGUAGE": "de:zh"}, "en"),
        ({"LC_MESSAGES": "fr_FR.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),
        ({"LAB_LANG": "en", "LANG": "zh_CN.UTF-8"}, "en"),
        ({"LAB_LANG": "zh"}, "zh"),
    ],
)
def test_the_language_comes_from_lab_lang_then_the_locale(environ, lang):
    assert i18n.detect(environ, cwd=ROOT) == lang


@pytest.mark.parametrize(
    "cwd, environ, lang",
    [
        ("/r/notebooks/zh", {"LAB_LANG": "en", "LANG": "en_US.UTF-8"}, "zh"),  # the edition wins
        ("notebooks/zh", {}, "zh"),
        ("/r/notebooks", {"LANG": "zh_CN.UTF-8"}, "zh"),  # the English notebooks: as before
        ("/r/notebooks", {"LAB_LANG": "en", "LANG": "zh_CN.UTF-8"}, "en"),
        ("/r/notebooks", {}, "en"),
        ("/r/notebooks/en", {"LAB_LANG": "zh"}, "zh"),  # English is no edition folder
        ("/r/notebooks/de", {}, "en"),  # nor a language the lab does not speak
        ("/r/zh", {}, "en"),  # nor a zh folder outside notebooks/
        ("/r/notebooks/zh/scratch", {}, "en"),  # nor a folder inside an edition
    ],
)
def test_a_notebook_edition_folder_decides_before_lab_lang_and_the_locale(cwd, environ, lang):
    assert i18n.detect(environ, cwd=Path(cwd)) == lang


def test_a_kernel_started_in_the_chinese_edition_speaks_chinese(tmp_path):
    """As JupyterLab and nbclient start it: the working directory is the notebook's folder."""
    folder = tmp_path / "notebooks" / "zh"
    folder.mkdir(parents=True)
    said = subprocess.run(
        [sys.executable, "-c", "from lab.i18n import _, language; print(language(), _('server stopped'))"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LAB_LANG": "en"},
    )
    assert said.stdout.split() == ["zh", "服务已停止"], said.stderr


def test_messages_follow_the_language(chinese):
    assert i18n._("server stopped") == "服务已停止"
    assert i18n.ngettext(
        "Hot reload on a real server ({n} worker, lab/examples/hello.py)",
        "Hot reload on a real server ({n} workers, lab/examples/hello.py)",
        2,
    ).startswith("真实服务")
    i18n.set_language("en")
    assert i18n._("server stopped") == "server stopped"


def test_a_start_up_error_keeps_its_english_for_the_events(chinese, tmp_path):
    """A new master that cannot start tells the old one why: an upgrade.failed event, English."""
    from lab.watcher import Watcher

    with pytest.raises(LabError) as caught:
        Watcher([tmp_path / "missing"])
    assert "没有这个文件或目录" in str(caught.value)
    assert caught.value.english == (
        f"{tmp_path / 'missing'}: no such file or directory; give a directory (watched recursively) or a file"
    )


def test_a_chinese_figure_renders_with_a_font_that_has_every_glyph(chinese):
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    from lab import live

    font = i18n.register_cjk_font()
    if font is None:
        pytest.skip("no CJK font installed (make test installs fonts-wqy-zenhei)")
    events = [
        {
            "t": 1.0,
            "kind": "reload.done",
            "generation": 2,
            "duration": 0.05,
            "phases": {"seen": 0.0, "forked": 0.01, "ready": 0.03, "serving": 0.04, "old_gone": 0.05},
        },
        {"t": 1.5, "kind": "conn.open", "pid": 1, "conn": 1},
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for view in (live.ReloadPhases, live.Connections, live.Timeline):
            fig = view(events, autostart=False).figure()
            fig.savefig(io.BytesIO(), format="png")
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
    title = fig.axes[0].get_title()
    assert CJK.search(title), title
    path = font_manager.findfont(font_manager.FontProperties(family=font), fallback_to_default=False)
    glyphs = FT2Font(path)
    assert all(glyphs.get_char_index(ord(c)) for c in title if CJK.match(c)), f"{path} lacks glyphs of {title!r}"


def test_without_a_cjk_font_figures_stay_english_after_one_warning(monkeypatch, chinese):
    monkeypatch.setattr(i18n, "CJK_FONTS", ("No Such Font CJK",))
    monkeypatch.setattr(i18n, "CJK_FILES", ("no-such-font-file",))
    monkeypatch.setitem(i18n._state, "font", None)
    with pytest.warns(UserWarning, match="no CJK font installed") as caught:
        assert i18n._f("Events over time") == "Events over time"
        assert i18n._f("no events yet") == "no events yet"
    assert len(caught) == 1
    assert i18n._("server stopped") == "服务已停止"  # the terminal needs no font


def test_a_font_installed_after_matplotlib_cached_its_list_is_found(monkeypatch, chinese):
    from matplotlib import font_manager

    if i18n.register_cjk_font() is None:
        pytest.skip("no CJK font installed (make test installs fonts-wqy-zenhei)")
    stale = [f for f in font_manager.fontManager.ttflist if f.name not in i18n.CJK_FONTS]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", stale)
    monkeypatch.setitem(i18n._state, "font", None)
    assert i18n.register_cjk_font() in i18n.CJK_FONTS


def _demo(args: list[str], **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("LAB_LANG", *i18n.LOCALE_VARIABLES)}
    done = subprocess.run(
        [sys.executable, "-m", "lab", "demo", "--edits", "1", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return [line.split("] ", 1)[-1] for line in done.stdout.splitlines()]


def test_the_demo_tells_the_same_story_in_chinese_by_the_locale_and_in_english_by_the_flag():
    zh = _demo([], LANG="zh_CN.UTF-8")
    en = _demo(["--lang", "en"], LANG="zh_CN.UTF-8")
    assert len(zh) == len(en), "\n".join(zh + ["---"] + en)
    told = [line for line in zh if line.strip() and not line.startswith(("$ ", "  hello"))]
    for line in told:
        # Every line a learner reads is Chinese; what stays English is data (answers, error text).
        assert CJK.search(line) or "hello" in line, line
    letters = "".join(told)
    assert len(CJK.findall(letters)) > len(re.findall(r"[A-Za-z]", letters)), "\n".join(zh)
    assert any("3 个静默客户端" in line for line in zh) and any("3 silent clients" in line for line in en)
    assert zh[-1] == "== 演示结束：演示启动的服务和客户端已全部停止 =="
    # The same structure: the same commands and the same kind of line at each step.
    for a, b in zip(zh, en):
        assert a.startswith("$ ") == b.startswith("$ ") and a.startswith("==") == b.startswith("==")


def _serve_in_chinese(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lab", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LAB_LANG": "zh"},
    )


@pytest.mark.parametrize(
    "case, chinese",
    [
        ("bad port", "bind 里的端口不对"),
        ("port in use", "已被占用"),
        ("app dir is a file", "不是一个目录"),
        ("no such --watch path", "没有这个文件或目录"),
        ("events file is a directory", "事件文件"),
    ],
)
def test_serve_says_its_start_up_errors_in_chinese_in_one_line(case, chinese, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    bind = {"bad port": "127.0.0.1:99999", "port in use": f"127.0.0.1:{busy.getsockname()[1]}"}
    (tmp_path / "file").write_text("")
    extra = {
        "app dir is a file": ["--app-dir", str(tmp_path / "file")],
        "no such --watch path": ["--watch", str(tmp_path / "missing")],
        "events file is a directory": ["--events", str(tmp_path)],
    }
    with busy:
        done = _serve_in_chinese("lab.examples.hello", "--bind", bind.get(case, "127.0.0.1:0"), *extra.get(case, []))
    assert done.returncode != 0
    said = done.stderr.strip()
    assert len(said.splitlines()) == 1 and chinese in said, said


def test_a_start_up_error_said_in_chinese_is_an_english_event(tmp_path):
    """A worker's LabError is said in Chinese at the end of the log (the start-up error), while the
    events stay English whatever the language: the failed reload's error, the stop's ``fatal``."""
    events = tmp_path / "events.jsonl"
    done = _serve_in_chinese("lab.examples.hello:nothing_here", "--bind", "127.0.0.1:0", "--events", str(events))
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith(
        "应用 'lab.examples.hello:nothing_here' 启动失败：LabError: 模块 'lab.examples.hello' 没有属性 'nothing_here'"
    ), last
    logged = [json.loads(line) for line in events.read_text().splitlines()]
    failed = next(e for e in logged if e["kind"] == "reload.failed")
    english = "LabError: module 'lab.examples.hello' has no attribute 'nothing_here'"
    assert failed["error"] == english, failed
    stop = next(e for e in logged if e["kind"] == "server.stop")
    assert stop["fatal"] == f"the app 'lab.examples.hello:nothing_here' failed to start: {english}", stop


@pytest.mark.skipif(not shutil.which("make"), reason="no make here")
@pytest.mark.parametrize(
    "switch, kernel_env",
    [
        (["LANG=zh"], "env LAB_LANG=zh LANG=C.UTF-8 "),
        (["LANG=zh_CN.UTF-8"], "env LAB_LANG=zh_CN.UTF-8 LANG=zh_CN.UTF-8 "),
        ([], "env  "),  # no switch: lab.i18n reads the locale the kernel inherits
    ],
)
def test_make_lab_passes_the_language_switch_to_the_kernel(switch, kernel_env):
    done = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "lab", *switch], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    jupyter = [line for line in done.stdout.splitlines() if "jupyter lab" in line]
    assert jupyter and jupyter[0].startswith(kernel_env + ".venv/bin/jupyter lab"), done.stdout


@pytest.mark.skipif(not shutil.which("make"), reason="no make here")
@pytest.mark.parametrize(
    "switch, locale, start",
    [
        ([], {"LANG": "C.UTF-8"}, "notebooks/00_start_here.ipynb"),
        ([], {"LANG": "zh_CN.UTF-8"}, "notebooks/zh/00_start_here.ipynb"),
        ([], {"LANG": "zh_CN.UTF-8", "LAB_LANG": "en"}, "notebooks/00_start_here.ipynb"),
        (["LANG=zh"], {"LANG": "C.UTF-8"}, "notebooks/zh/00_start_here.ipynb"),
        (["LANG=en"], {"LANG": "zh_CN.UTF-8"}, "notebooks/00_start_here.ipynb"),
    ],
)
def test_make_lab_opens_the_edition_of_the_language(switch, locale, start):
    environ = {k: v for k, v in os.environ.items() if k not in ("LAB_LANG", *i18n.LOCALE_VARIABLES)}
    done = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "lab", *switch],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **locale},
    )
    assert f"--LabApp.default_url=/lab/tree/{start} " in done.stdout, done.stdout + done.stderr


def test_a_fresh_process_in_chinese_draws_every_figure_without_a_missing_glyph(tmp_path):
    """The font is registered when the figure modules load, before an axes' title exists."""
    from lab import figures

    if i18n.register_cjk_font() is None:
        pytest.skip("no CJK font installed (make test installs fonts-wqy-zenhei)")
    script = (
        "import json, sys\nfrom lab import figures\n"
        "for name, draw in figures.BENCHMARKS.items():\n"
        "    draw(json.load(open(f'benchmarks/results/{name}.json'))).savefig(f'{sys.argv[1]}/{name}.png')\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error:Glyph:UserWarning", "-c", script, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LAB_LANG": "zh"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list(tmp_path.glob("*.png"))) == len(figures.BENCHMARKS)


def test_a_server_started_from_a_chinese_kernel_speaks_chinese(tmp_path, chinese):
    # a zh notebook's kernel is Chinese by its folder; the servers it starts run in scratch folders
    out = tmp_path / "out.txt"
    probe = ServerProcess(
        [sys.executable, "-c", "from lab.i18n import language; print(language())"],
        tmp_path / "events.jsonl",
        cwd=tmp_path,
        output=out,
        merge_stdout=True,
    )
    assert probe.spawn().wait(30) == 0
    assert out.read_text().strip() == "zh"
