"""The learner's language: English (the source) or Chinese, through stdlib ``gettext`` catalogs.

    from lab.i18n import _, ngettext      # text a learner reads: _("server stopped")
    from lab.i18n import _f, N_           # text drawn in a figure; N_ marks a string translated later

The language is, first to last: ``set_language()``; the notebook edition (a process whose working
directory is ``notebooks/zh``, as a notebook's kernel is, speaks Chinese: the editions share their
code cells, so the folder is what tells them apart); ``LAB_LANG``; then the locale (``LANGUAGE``,
``LC_ALL``, ``LC_MESSAGES``, ``LANG``: one starting with ``zh`` means Chinese); English otherwise.
The English notebooks in ``notebooks/`` are no edition folder: their kernels follow ``LAB_LANG``
and the locale.
Catalogs are ``lab/locale/<lang>/LC_MESSAGES/reactor-lab.mo``, built by ``make i18n``.

Figures need a font with Chinese glyphs: in Chinese, ``register_cjk_font()`` adds one (WenQuanYi
Zen Hei or Noto CJK) to matplotlib's font families as a fallback; where there is none, it warns once
and ``_f`` keeps figure text English, so a figure never shows boxes.
"""

from __future__ import annotations

import gettext
import logging
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DOMAIN = "reactor-lab"
LOCALEDIR = Path(__file__).parent / "locale"
LANGUAGES = ("en", "zh")
EDITIONS = tuple(lang for lang in LANGUAGES if lang != "en")  # notebooks/<lang>/ (English: notebooks/)
LOCALE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")
CJK_FONTS = ("WenQuanYi Zen Hei", "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC")
CJK_FILES = ("wqy-zenhei", "notosanscjk", "notosanssc", "sourcehansans")  # their files' names, lower case

# The language in use, its catalog, and the CJK font found ("" when none; None: not looked for yet).
_state: dict[str, Any] = {"lang": None, "catalog": None, "font": None}


def edition(cwd: Path) -> str | None:
    """The language of the notebook edition folder ``cwd`` is (``notebooks/zh``), else None."""
    if cwd.parent.name == "notebooks" and cwd.name in EDITIONS:
        return cwd.name
    return None


def detect(environ: Mapping[str, str] = os.environ, cwd: Path | None = None) -> str:
    """The language asked for: the edition of the working directory ``cwd`` (default: this process's),
    else ``LAB_LANG``, else the first locale variable set."""
    try:
        folder = edition(Path.cwd() if cwd is None else cwd)
    except OSError:  # a working directory removed under the process
        folder = None
    if folder:
        return folder
    wanted = environ.get("LAB_LANG", "")
    if not wanted:
        wanted = next((environ[v] for v in LOCALE_VARIABLES if environ.get(v)), "")
        wanted = wanted.split(":")[0]  # LANGUAGE is a list: its first entry wins
    return "zh" if wanted.lower().startswith("zh") else "en"


def set_language(lang: str | None = None) -> str:
    """Use ``lang`` (``en``, ``zh``, ``zh_CN.UTF-8``...; None: detect it); returns the one in use."""
    lang = detect() if lang is None else ("zh" if lang.lower().startswith("zh") else "en")
    _state.update(lang=lang, catalog=gettext.translation(DOMAIN, localedir=LOCALEDIR, languages=[lang], fallback=True))
    if lang == "zh" and "matplotlib" in sys.modules:
        register_cjk_font()
    return lang


def language() -> str:
    """The language in use (``en`` or ``zh``)."""
    if _state["lang"] is None:
        set_language()
    return _state["lang"]


def _catalog() -> gettext.NullTranslations:
    language()
    return _state["catalog"]


def _(message: str) -> str:
    """``message`` in the learner's language."""
    return _catalog().gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of a message for ``n`` things, in the learner's language."""
    return _catalog().ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks ``message`` for the catalog where it is defined; ``_()`` translates it where shown."""
    return message


def _f(message: str) -> str:
    """``message`` for a figure: translated only when a font can draw it."""
    if language() == "zh" and not register_cjk_font():
        return message
    return _(message)


def _nf(singular: str, plural: str, n: int) -> str:
    """``ngettext`` for a figure (English where no font can draw the translation)."""
    if language() == "zh" and not register_cjk_font():
        return singular if n == 1 else plural
    return ngettext(singular, plural, n)


class _OneWeight(logging.Filter):
    """Drops matplotlib's "Failed to find font weight ... for <the CJK font>": such fonts have one
    weight (WenQuanYi's is 500), and the line, repeated for each weight drawn, asks nothing of a learner."""

    def __init__(self, font: str):
        super().__init__()
        self.font = font

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            str(record.msg).startswith("findfont: Failed to find font weight")
            and self.font in map(str, record.args or ())
        )


def figure_fonts() -> None:
    """In Chinese, register the CJK font before any figure is made: a figure's texts (an axes'
    title among them) take their fonts from matplotlib's settings when they are created."""
    if language() == "zh":
        register_cjk_font()


def _installed_cjk_font(font_manager: Any) -> str:
    """The first of ``CJK_FONTS`` matplotlib knows, else "". A font installed after matplotlib
    cached its font list is not in it: such files are added from the system's font directories."""
    for attempt in range(2):
        installed = {f.name for f in font_manager.fontManager.ttflist}
        found = next((name for name in CJK_FONTS if name in installed), "")
        if found or attempt:
            return found
        for path in font_manager.findSystemFonts():
            if any(key in Path(path).name.lower() for key in CJK_FILES):
                font_manager.fontManager.addfont(path)
    return ""


def register_cjk_font() -> str | None:
    """Add an installed CJK font to matplotlib's font families, as the fallback for the glyphs the
    others lack; its name, or None with a one-line warning (once) where none is installed."""
    if _state["font"] is None:
        from matplotlib import font_manager, rcParams

        found = _installed_cjk_font(font_manager)
        if found:
            # A family list falls back glyph by glyph (a generic name such as sans-serif stands for
            # one font only): Latin text keeps its font, Chinese characters come from this one.
            rcParams["font.family"] = [*(f for f in rcParams["font.family"] if f != found), found]
            logging.getLogger("matplotlib.font_manager").addFilter(_OneWeight(found))
        else:
            warnings.warn(
                "no CJK font installed (Debian: apt-get install fonts-wqy-zenhei): figures stay in English",
                stacklevel=2,
            )
        _state["font"] = found
    return _state["font"] or None
