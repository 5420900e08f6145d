"""``edgegate replay incidents DB|--central DSN [--from T] [--to T] [--json]``: what a
technician looks for in a gate's log, each finding with the seqs that prove it
(``edgegate.replay.incidents``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console

from edgegate.cli.commands import Subparsers
from edgegate.cli.replay_cmd import add_source_arguments, progress_for, run_on_source
from edgegate.log.chain import Row
from edgegate.replay.incidents import Finding, Incidents, find_incidents, find_incidents_in_rows
from edgegate.replay.source import EventFilter, Progress, Source, parse_range

_STYLE = {"critical": "bold red", "warning": "yellow", "notice": "cyan", "info": "dim"}


def register_action(actions: Subparsers) -> None:
    p = actions.add_parser(
        "incidents",
        help="findings: faults, slow arms, tailgates, back-outs, outages, guard waits, ...",
        description="Findings a technician looks for in a gate's log, each with the seqs that "
        "prove it, a severity and a line in plain words. The log is only read.",
    )
    add_source_arguments(p)
    p.add_argument("--from", dest="start", metavar="T", help="from this time (inclusive)")
    p.add_argument("--to", dest="end", metavar="T", help="to this time (a date: its whole day)")
    p.add_argument("--json", action="store_true", help="one JSON document for scripts")
    p.set_defaults(func=cmd_incidents)


def cmd_incidents(args: argparse.Namespace) -> int:
    def body(source: Source, tz: ZoneInfo) -> int:
        start, end = parse_range(args.start, args.end, tz)
        window = EventFilter(start=start, end=end)
        with progress_for("reading", source.head()[0]) as progress:
            if window == EventFilter():  # the whole log: rows as stored, no event per row
                result = find_incidents_in_rows(_counted(source, progress), tz=tz)
            else:
                result = find_incidents(source.events(window, progress=progress), tz=tz)
        if args.json:
            doc: dict[str, Any] = {"gate": source.gate_id, "timezone": tz.key, **result.to_json(tz)}
            print(json.dumps(doc, ensure_ascii=False))
        else:
            _show(source.gate_id, result, tz)
        return 0

    return run_on_source(args, body)


def _counted(source: Source, progress: Progress | None) -> Iterator[list[Row]]:
    """The source's batches of rows, telling ``progress`` the rows read."""
    read = 0
    for rows in source.batches():
        yield rows
        read += len(rows)
        if progress is not None:
            progress(read)


def _show(gate: str, result: Incidents, tz: ZoneInfo) -> None:
    console = Console(highlight=False)
    console.print(f"gate {gate}: {result.events} events read, times in {tz.key}")
    for f in result.findings:
        lane = f" {f.lane}" if f.lane else ""
        console.print(
            f"[{_STYLE[f.severity]}]{f.severity:<8}[/] {_when(f, tz)}{lane}  [bold]{f.kind}[/]"
            f"  seqs {_seqs(f)}"
        )
        console.print(f"         {f.summary}", soft_wrap=True)
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(result.counts().items()))
    console.print(f"{len(result.findings)} findings" + (f": {counts}" if counts else ""))


def _when(f: Finding, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(f.wall_ns / 1e9, tz).strftime("%Y-%m-%d %H:%M:%S")


def _seqs(f: Finding) -> str:
    seqs = [str(s) for s in f.seqs]
    return " ".join(seqs if len(seqs) <= 6 else [*seqs[:5], f"… ({len(seqs)})"])
