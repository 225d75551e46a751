"""``python -m lab COMMAND ...``: every demo of the lab from a terminal.

Each command is one ``_cmd_*`` function that adds its parser and sets ``func``; handlers import
what they need lazily, so ``python -m lab watch`` does not import the server, and the reverse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from lab.errors import LabError


def _types(text: str) -> tuple[str, ...]:
    """``.py,.txt`` or ``py,txt`` -> ``('.py', '.txt')``."""
    return tuple("." + t.strip().lstrip(".") for t in text.split(",") if t.strip())


# --- commands ---------------------------------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(fn: Callable[[argparse._SubParsersAction], None]):
    COMMANDS.append(fn)
    return fn


# --- entry point -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except LabError as exc:
        print(f"python -m lab {args.command}: {exc}", file=sys.stderr)
        return 2

