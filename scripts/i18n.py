"""The message catalogs of lab/: extract, update, compile (pure Python: a fresh machine has no gettext).

    python scripts/i18n.py          # lab/locale/reactor-lab.pot from lab/**/*.py and the code cells of
                                    # notebooks/*.ipynb (notebooks/zh/ has the same code), merged into each
                                    # lab/locale/<lang>/LC_MESSAGES/reactor-lab.po, compiled to .mo

Messages are the string literals given to ``_``, ``_f``, ``N_`` (one), ``ngettext``, ``_nf``
(singular, plural), ``Phase`` (step, what) - what
``xgettext --keyword=_f --keyword=N_ --keyword=_nf:1,2 --keyword=Phase:2 --keyword=Phase:3 ...`` finds. A new
message gets an empty translation in each .po (the tests then ask for one); a message gone from the
code is dropped. The .mo is the GNU format ``gettext`` reads, written like ``msgfmt`` would.
"""

from __future__ import annotations

import ast
import json
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lab"
NOTEBOOKS = ROOT / "notebooks"
LOCALEDIR = PACKAGE / "locale"
DOMAIN = "reactor-lab"
# name -> the positions (from 1) of the message arguments, as in ``xgettext --keyword=Phase:2``.
# ``Phase(key, step, what)`` (lab.events) is marked here rather than in its module: its step and
# ``what`` are shown translated wherever a reload is told.
SINGULAR = {"_": (1,), "_f": (1,), "N_": (1,), "Phase": (2, 3)}
PLURAL = {"ngettext": (1, 2), "_nf": (1, 2)}
COMMON = (
    "Project-Id-Version: reactor-lab\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n"
    "Content-Transfer-Encoding: 8bit\n"
)
HEADER = {"zh": COMMON + "Language: zh\nPlural-Forms: nplurals=1; plural=0;\n"}  # a .po per language

Key = tuple[str, str | None]  # (msgid, msgid_plural)


def _messages(call: ast.Call) -> list[Key]:
    """The messages ``call`` marks: none unless it is a keyword's, with string literals there."""
    if not isinstance(call.func, ast.Name):
        return []
    name = call.func.id
    strings = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in call.args]
    texts = [strings[i - 1] if i <= len(strings) else None for i in PLURAL.get(name, SINGULAR.get(name, ()))]
    if name in PLURAL:
        singular, plural = texts
        return [(singular, plural)] if singular is not None and plural is not None else []
    return [(text, None) for text in texts if text is not None]


def _cells(notebook: Path) -> Iterator[ast.Module]:
    """The syntax trees of ``notebook``'s code cells; a cell with IPython syntax (``%magic``, ``!shell``)
    is skipped. A cell may ``await`` at the top level, as the kernel allows."""
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])  # a list of lines in the file, or one string
        try:
            yield compile(source, str(notebook), "exec", flags=flags, dont_inherit=True)
        except SyntaxError:
            continue


def trees(package: Path = PACKAGE, notebooks: Path = NOTEBOOKS) -> Iterator[tuple[str, ast.Module]]:
    """(file, syntax tree) of each module of ``package`` and each code cell of the notebooks directly
    in ``notebooks``, the file named from the repository (both directories are at its top)."""
    for path in sorted(package.rglob("*.py")):
        yield str(path.relative_to(package.parent)), ast.parse(path.read_text(), str(path))
    for path in sorted(notebooks.glob("*.ipynb")):
        for tree in _cells(path):
            yield str(path.relative_to(notebooks.parent)), tree


def extract(package: Path = PACKAGE, notebooks: Path = NOTEBOOKS) -> dict[Key, list[str]]:
    """Every message in ``package``'s modules and the notebooks' code cells, in order of first use,
    with the files that use it."""
    found: dict[Key, list[str]] = {}
    for file, tree in trees(package, notebooks):
        for node in sorted(ast.walk(tree), key=lambda n: getattr(n, "lineno", 0)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            for key in _messages(node):
                where = found.setdefault(key, [])
                if file not in where:  # files only: line numbers churn on every edit
                    where.append(file)
    return found


def _quote(text: str) -> str:
    """``text`` as a C string literal, the .po syntax (``ast.literal_eval`` reads it back)."""
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t").replace("\n", "\\n")
    return f'"{body}"'


def _field(name: str, text: str) -> list[str]:
    """A .po field as msgmerge writes one: a long or multi-line text on lines of its own."""
    if "\n" in text.rstrip("\n") or len(text) > 70:
        parts = text.splitlines(keepends=True) if "\n" in text else [text]
        return [f'{name} ""', *(_quote(p) for p in parts)]
    return [f"{name} {_quote(text)}"]


def read_po(path: Path) -> dict[Key, list[str]]:
    """The translations of a .po file: (msgid, msgid_plural) -> msgstr forms; the header under ("", None)."""
    entries: dict[Key, list[str]] = {}
    fields: dict[str, str] = {}
    current = ""

    def flush() -> None:
        if "msgid" in fields:
            forms = [fields[k] for k in sorted(f for f in fields if f.startswith("msgstr"))]
            entries[(fields["msgid"], fields.get("msgid_plural"))] = forms
        fields.clear()

    for line in path.read_text().splitlines() + [""]:
        line = line.strip()
        if not line or line.startswith("#"):
            if not line:
                flush()
            continue
        if line.startswith('"'):
            fields[current] += ast.literal_eval(line)
            continue
        current, _, value = line.partition(" ")
        if current == "msgid" and "msgid" in fields:
            flush()
        fields[current] = ast.literal_eval(value)
    return entries


def write_po(path: Path, messages: dict[Key, list[str]], old: dict[Key, list[str]], header: str) -> None:
    """``messages`` with the translations ``old`` had (empty for new ones), sorted by first use."""
    out = [
        "# reactor-lab's learner-facing messages. Edit msgstr; `make i18n` keeps this in step with lab/.",
        *_field("msgid", ""),
        *_field("msgstr", header),
        "",
    ]
    for (msgid, plural), where in messages.items():
        forms = old.get((msgid, plural)) or [""]
        out += [f"#: {' '.join(where[:3])}"]
        if any("{" in s for s in (msgid, plural or "")):
            out += ["#, python-brace-format"]
        out += _field("msgid", msgid)
        if plural is None:
            out += _field("msgstr", forms[0])
        else:
            out += _field("msgid_plural", plural)
            out += [line for i, f in enumerate(forms) for line in _field(f"msgstr[{i}]", f)]
        out.append("")
    path.write_text("\n".join(out))


def compile_mo(entries: dict[Key, list[str]]) -> bytes:
    """The GNU .mo of ``entries`` (untranslated ones left out, so ``gettext`` falls back to English)."""
    pairs = sorted(
        (msgid if plural is None else f"{msgid}\0{plural}", "\0".join(forms))
        for (msgid, plural), forms in entries.items()
        if all(forms)
    )
    ids = [k.encode() for k, _ in pairs]
    strs = [v.encode() for _, v in pairs]
    n = len(pairs)
    start = 7 * 4 + 16 * n
    ids_blob, strs_blob = b"\0".join(ids) + b"\0", b"\0".join(strs) + b"\0"
    table, offset = [], start
    for s in ids:
        table += [len(s), offset]
        offset += len(s) + 1
    offset = start + len(ids_blob)
    for s in strs:
        table += [len(s), offset]
        offset += len(s) + 1
    head = struct.pack("Iiiiiii", 0x950412DE, 0, n, 7 * 4, 7 * 4 + 8 * n, 0, 0)
    return head + struct.pack(f"{4 * n}i", *table) + ids_blob + strs_blob


def main() -> int:
    messages = extract()
    pot = LOCALEDIR / f"{DOMAIN}.pot"
    pot.parent.mkdir(exist_ok=True)
    write_po(pot, messages, {}, COMMON)
    for lang, header in HEADER.items():
        po = LOCALEDIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
        po.parent.mkdir(parents=True, exist_ok=True)
        old = read_po(po) if po.exists() else {}
        write_po(po, messages, old, header)
        entries = read_po(po)
        po.with_suffix(".mo").write_bytes(compile_mo(entries))
        missing = sum(1 for k, forms in entries.items() if k[0] and not all(forms))
        print(f"{po}: {len(messages)} messages, {missing} untranslated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
