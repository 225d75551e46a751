"""``python -m lab check ...``: flags -> ``Options``, progress on stderr, table, JSON, plots."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lab.check.report import Report
from lab.check.runner import Options, Progress, run
from lab.errors import LabError
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
    json_file = None if quiet else args.json
    options.validate()
    _check_outputs(json_file, args.plots)

    def progress(line: str, **fields: object) -> None:
        if not quiet:
            print(_("check: {line}").format(line=line), file=sys.stderr, flush=True)

    report = run(options, progress)
    if quiet:
        sys.stdout.write(_json(report))
    else:
        print(report)
    _write_outputs(report, json_file, args.plots, progress)
    return 0 if report.ok else 1


def _check_outputs(json_file: str | None, plots: str | None) -> None:
    """Where the report and the plots go, checked before the run: a typo does not waste one."""
    if json_file:
        folder = Path(json_file).parent
        if not folder.is_dir():
            raise LabError(
                _("--json {path}: no folder {folder} to write the report into").format(path=json_file, folder=folder)
            )
        if Path(json_file).is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise LabError(_("--json {path}: not a file this user can write").format(path=json_file))
    if plots:
        try:  # made now rather than guessed: only mkdir knows (root may write anywhere but /proc)
            Path(plots).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LabError(
                _("--plots {path}: cannot make this folder ({error})").format(path=plots, error=_reason(exc))
            ) from None


def _write_outputs(report: Report, json_file: str | None, plots: str | None, progress: Progress) -> None:
    """The JSON file and the plots, after the table: a failure is one line, and the other is tried."""
    errors = []
    if json_file:
        try:
            Path(json_file).write_text(_json(report))
        except OSError as exc:
            errors.append(
                _("--json {path}: cannot write the report ({error})").format(path=json_file, error=_reason(exc))
            )
    if plots:
        from lab.check.plots import save

        try:
            for path in save(report, plots):
                progress(_("plot {path}").format(path=path))
        except OSError as exc:
            errors.append(_("--plots {path}: cannot write the plots ({error})").format(path=plots, error=_reason(exc)))
    if errors:
        raise LabError("; ".join(errors))


def _json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2) + "\n"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
