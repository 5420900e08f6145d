"""``edgegate replay report DB|--central DSN [--gate ID] --from T --to T --html OUT``: one
self-contained HTML file of a window of a gate's log for a safety officer
(``edgegate.replay.report``). The log is only read."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgegate.cli.commands import Subparsers, add_command
from edgegate.cli.replay_cmd import add_source_arguments, fail, open_source, progress_for
from edgegate.log.eventlog import LogError
from edgegate.replay.report import write_report
from edgegate.replay.source import LogSource, SourceError, parse_range


def register_action(actions: Subparsers) -> None:
    p = add_command(
        actions,
        "report",
        cmd_report,
        help="one self-contained HTML file: lane timeline, cycles, findings, verification",
        description="A window of a gate's log as one HTML file that makes no network request: "
        "a zoomable lane timeline, the vehicle cycles, the findings linked to the timeline, "
        "the chain's verification and the log's head. The log is only read.",
    )
    add_source_arguments(p)
    p.add_argument("--from", dest="start", metavar="T", required=True, help="from this time")
    p.add_argument(
        "--to", dest="end", metavar="T", required=True, help="to this time (a date: its whole day)"
    )
    p.add_argument("--html", type=Path, metavar="OUT", required=True, help="the file to write")


def cmd_report(args: argparse.Namespace) -> int:
    try:
        source, tz = open_source(args)
    except (SourceError, LogError) as exc:
        return fail(str(exc))
    out: Path = args.html
    with source:
        try:
            start, end = parse_range(args.start, args.end, tz)
            assert start is not None and end is not None  # both are required arguments
            if isinstance(source, LogSource) and _same_file(out, source.reader.path):
                raise SourceError(f"{out} is the log being read: choose another output file")
            with progress_for("reading", source.head()[0]) as progress:
                size = write_report(source, out, tz, start, end, progress=progress)
        except (SourceError, LogError) as exc:
            return fail(str(exc))
        except OSError as exc:
            return fail(f"cannot write {out}: {exc.strerror or exc}")
    print(
        f"report of gate {source.gate_id} written to {out} ({size / 1e6:.2f} MB)", file=sys.stderr
    )
    return 0


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and a.samefile(b)
    except OSError:
        return False
