"""``python -m lab check ...``: flags -> ``Options``, progress on stderr, table, JSON, plots."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lab.check.runner import Options, run
from lab.i18n import _


def main(args: argparse.Namespace) -> int:
    """Run the check; exit status 0 only if every check passed (1 if one failed)."""
    quiet = args.json == "-"
    options = Options(
        connect=args.connect,
        app=args.app,
        marker=args.marker,
        cmd=args.cmd,
        protocol=args.protocol,
        edits=args.edits,
        clients=args.clients,
        broken=args.broken,
        idle=args.idle,
        interval=args.interval,
        scenarios=tuple(s.strip() for s in args.scenarios.split(",") if s.strip()),
    )

    def progress(line: str, **fields: object) -> None:
        if not quiet:
            print(_("check: {line}").format(line=line), file=sys.stderr, flush=True)

    report = run(options, progress)
    if args.json:
        text = json.dumps(report.to_json(), indent=2) + "\n"
        if quiet:
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text)
    if not quiet:
        print(report)
    if args.plots:
        from lab.check.plots import save

        for path in save(report, args.plots):
            progress(_("plot {path}").format(path=path))
    return 0 if report.ok else 1
