"""``edgegate replay incidents DB [--from T] [--to T] [--json]``: what a technician looks for
in a gate's log, each finding with the seqs that prove it (``edgegate.replay.incidents``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgegate.core.codec import datetime_to_ns
from edgegate.log.eventlog import LogError
from edgegate.log.reader import LogReader, StoredEvent
from edgegate.replay.incidents import Finding, Incidents, find_incidents

_STYLE = {"critical": "bold red", "warning": "yellow", "notice": "cyan", "info": "dim"}


def register_action(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = actions.add_parser(
        "incidents",
        help="findings: faults, slow arms, tailgates, back-outs, outages, guard waits, ...",
        description="Findings a technician looks for in a gate's log, each with the seqs that "
        "prove it, a severity and a line in plain words. The log is only read.",
    )
    p.add_argument("db", type=Path, help="the gate's SQLite log file (a copy will do)")
    p.add_argument("--from", dest="start", metavar="T", help="events at or after T (ISO 8601)")
    p.add_argument("--to", dest="end", metavar="T", help="events before T (ISO 8601)")
    p.add_argument(
        "--tz",
        default="Asia/Shanghai",
        help="the gate's time zone: times shown, T without an offset (default Asia/Shanghai)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document for scripts")
    p.set_defaults(func=cmd_incidents)


def _fail(message: str) -> int:
    print(f"edgegate replay incidents: {message}", file=sys.stderr)
    return 2


def _time(text: str | None, tz: ZoneInfo, option: str) -> int | None:
    """A time given on the line, as wall nanoseconds; without an offset, in ``tz``."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option} {text!r} is not a time (e.g. 2026-11-28T08:00)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return datetime_to_ns(value)


def cmd_incidents(args: argparse.Namespace) -> int:
    try:
        tz = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        return _fail(f"--tz {args.tz!r} is not a time zone (e.g. Asia/Shanghai)")
    try:
        start = _time(args.start, tz, "--from")
        end = _time(args.end, tz, "--to")
    except ValueError as exc:
        return _fail(str(exc))
    if start is not None and end is not None and end <= start:
        return _fail("--to must be after --from")
    try:
        with LogReader(args.db) as reader:
            gate = reader.gate_id
            result = find_incidents(_events(reader, start, end), tz=tz)
    except LogError as exc:
        return _fail(str(exc))
    if args.json:
        doc: dict[str, Any] = {"gate": gate, "timezone": args.tz, **result.to_json(tz)}
        print(json.dumps(doc, ensure_ascii=False))
    else:
        _show(gate, result, tz)
    return 0


def _events(reader: LogReader, start: int | None, end: int | None) -> Iterator[StoredEvent]:
    total = reader.head()[0]
    with Progress(
        TextColumn("reading"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        disable=not sys.stderr.isatty() or total < 200_000,
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task("incidents", total=total)
        for rows in reader.iter_rows():
            for row in rows:
                wall = row[1]
                if (start is None or wall >= start) and (end is None or wall < end):
                    yield StoredEvent(*row)
            progress.advance(task, len(rows))


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
