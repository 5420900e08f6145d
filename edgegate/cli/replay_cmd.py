"""``edgegate replay ACTION``: a technician's replay of a gate's log, read-only.

This module registers ``timeline``, ``verify`` and ``export`` and then the actions of the
modules in ``ACTION_MODULES`` (each ``edgegate.cli.<module>`` has ``register_action(actions)``).
It also gives those modules the common ground: ``add_source_arguments`` / ``open_source``
(a log file or ``--central DSN --gate ID``, ``--tz``), ``add_filter_arguments`` /
``query_from``, ``progress_for`` and ``fail`` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgegate.cli.commands import Subparsers, action_group
from edgegate.log import LogError
from edgegate.replay import export as export_mod
from edgegate.replay.cycles import Cycle, Item
from edgegate.replay.source import (
    EventFilter,
    LogSource,
    PlateQuery,
    Source,
    SourceError,
    check_types,
    open_central,
    open_log,
    parse_range,
)
from edgegate.replay.timeline import TimelineQuery, timeline, to_json
from edgegate.replay.verify import VerifyResult, verify

#: Modules of edgegate.cli that add actions to ``edgegate replay`` (``register_action``); one
#: a line.
ACTION_MODULES: list[str] = [
    "replay_incidents",
    "replay_why",
    "replay_report",
]

_PROG = "edgegate replay"


def register(sub: Subparsers) -> None:
    actions = action_group(sub, "replay", "replay a gate's log read-only: timeline, verify ...")

    tl = actions.add_parser("timeline", help="vehicle cycles and the events between them")
    add_source_arguments(tl)
    add_filter_arguments(tl)
    tl.add_argument("--json", action="store_true", help="one JSON document for scripts")
    tl.set_defaults(func=cmd_timeline)

    vf = actions.add_parser(
        "verify",
        help="the hash chain, and with --central the log against central's copy "
        "(exit 0 identical, 1 differs, 2 unreadable)",
    )
    vf.add_argument("db", type=Path, help="the gate's log file (read-only)")
    vf.add_argument("--central", metavar="DSN", help="central's store: sqlite:///… postgresql://…")
    vf.add_argument("--gate", help="the gate's id in central's store (default: the log's)")
    vf.add_argument("--json", action="store_true", help="the result as JSON")
    vf.set_defaults(func=cmd_verify)

    ex = actions.add_parser("export", help="events as CSV (spreadsheets) or NDJSON (scripts)")
    add_source_arguments(ex)
    fmt = ex.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--csv", type=Path, metavar="OUT", help="UTF-8 CSV with BOM")
    fmt.add_argument("--ndjson", type=Path, metavar="OUT", help="one JSON event a line")
    add_filter_arguments(ex)
    ex.set_defaults(func=cmd_export)

    for name in ACTION_MODULES:
        importlib.import_module(f"edgegate.cli.{name}").register_action(actions)


# --- common ground for replay actions -----------------------------------------------------------


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """``DB`` (optional with ``--central``), ``--central DSN``, ``--gate ID``, ``--tz ZONE``."""
    p.add_argument("db", type=Path, nargs="?", help="the gate's log file (read-only)")
    p.add_argument("--central", metavar="DSN", help="read central's copy instead of a log file")
    p.add_argument("--gate", help="the gate in central's store (needed if it holds several)")
    p.add_argument("--tz", help="show times in this zone (default: the one the log records)")


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    """``--from``/``--to`` (ISO; without offset in the gate's zone), ``--lane``, ``--type``,
    ``--plate`` (OCR-confusable neighbours match too, marked fuzzy)."""
    p.add_argument("--from", dest="start", metavar="T", help="from this time (inclusive)")
    p.add_argument("--to", dest="end", metavar="T", help="to this time (a date: its whole day)")
    p.add_argument("--lane", action="append", help="only this lane (repeatable)")
    p.add_argument(
        "--type", action="append", help="only events of this type (repeatable, comma list, x.*)"
    )
    p.add_argument("--plate", help="only this plate (and its OCR-confusable neighbours)")


def open_source(args: argparse.Namespace) -> tuple[Source, ZoneInfo]:
    """The source the arguments name and the zone to show times in; ``SourceError``."""
    if args.central:
        if args.db is not None:
            raise SourceError("give a log file or --central, not both")
        source: Source = open_central(args.central, args.gate)
    else:
        if args.db is None:
            raise SourceError("give the gate's log file, or --central DSN --gate ID")
        source = open_log(args.db)
    try:
        return source, source.timezone(args.tz)
    except BaseException:
        source.close()
        raise


def filter_from(args: argparse.Namespace, tz: ZoneInfo) -> EventFilter:
    """``add_filter_arguments``' values as a filter (times without offset in ``tz``)."""
    start, end = parse_range(args.start, args.end, tz)
    return EventFilter(
        start=start,
        end=end,
        lanes=frozenset(args.lane) if args.lane else None,
        types=check_types(args.type) if args.type else None,
        plate=PlateQuery(args.plate) if args.plate else None,
    )


def query_from(args: argparse.Namespace, tz: ZoneInfo) -> TimelineQuery:
    f = filter_from(args, tz)
    return TimelineQuery(start=f.start, end=f.end, lanes=f.lanes, types=f.types, plate=f.plate)


def fail(message: str) -> int:
    """Unreadable or bad input: one line on stderr, exit 2."""
    print(f"{_PROG}: {message}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def progress_for(what: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr while stdout is a terminal (rows done of ``total``);
    None otherwise, so that a script's output stays clean."""
    if not sys.stdout.isatty():
        yield None
        return
    with Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=total)
        yield lambda done: bar.update(task, completed=done)


def run_on_source(args: argparse.Namespace, body: Callable[[Source, ZoneInfo], int]) -> int:
    """Open the source the arguments name and run ``body`` on it; a source that cannot be
    read, or fails while read, is one line and exit 2."""
    try:
        source, tz = open_source(args)
    except (SourceError, LogError) as exc:
        return fail(str(exc))
    with source:
        try:
            return body(source, tz)
        except (SourceError, LogError) as exc:
            return fail(str(exc))


# --- timeline -------------------------------------------------------------------------------


def cmd_timeline(args: argparse.Namespace) -> int:
    def body(source: Source, tz: ZoneInfo) -> int:
        query = query_from(args, tz)
        with progress_for("reading", source.head()[0]) as progress:
            items = list(timeline(source, query, tz, progress=progress))
        if args.json:
            json.dump(to_json(source.gate_id, tz, items), sys.stdout, ensure_ascii=False, indent=1)
            print()
        else:
            _print_timeline(source, tz, items)
        return 0

    return run_on_source(args, body)


def _fmt_ms(timings: dict[str, float], key: str) -> str:
    v = timings.get(key)
    return "" if v is None else f"{v / 1000:.1f}s"


def _print_timeline(source: Source, tz: ZoneInfo, items: list[Item]) -> None:
    table = Table(title=f"gate {source.gate_id} — times in {tz.key}", expand=False)
    for name in ("time", "lane", "plate", "what", "outcome", "decide", "rise", "under", "seqs"):
        table.add_column(name, overflow="fold", no_wrap=name in ("time", "seqs"))
    for item in items:
        if isinstance(item, Cycle):
            plate = item.plate or "?"
            if item.plate_match == "fuzzy":
                plate += " (fuzzy)"
            what = "; ".join(f"{v}" for v in item.verdicts()) or "no decision"
            flags = " ".join(item.flags)
            outcome = item.outcome + (f" [bold red]{flags}[/]" if flags else "")
            guard = _fmt_ms(item.timings, "guard_wait_ms")
            if guard:
                what += f" (guard {guard})"
            table.add_row(
                f"{item.start.time(tz):%Y-%m-%d %H:%M:%S}",
                item.lane,
                plate,
                what,
                outcome,
                _fmt_ms(item.timings, "decision_ms"),
                _fmt_ms(item.timings, "arm_rise_ms"),
                _fmt_ms(item.timings, "under_arm_ms"),
                f"{item.start.seq}–{item.end.seq}",
            )
        else:
            s = item.step
            table.add_row(
                f"[dim]{s.time(tz):%Y-%m-%d %H:%M:%S}[/]",
                s.lane or "",
                "",
                f"[dim]{s.summary()}[/]",
                "",
                "",
                "",
                "",
                str(s.seq),
            )
    # A pipe or a file gets the whole table, not rich's 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


# --- verify ---------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        log = open_log(args.db)
    except (SourceError, LogError) as exc:
        return fail(str(exc))
    with log:
        central: Source | None = None
        try:
            if args.central:
                central = open_central(args.central, args.gate or log.gate_id)
            with progress_for("verifying", log.head()[0]) as progress:
                result = verify(log, central, progress=progress)
        except (SourceError, LogError) as exc:
            return fail(str(exc))
        finally:
            if central is not None:
                central.close()
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        _print_verify(result)
    return 0 if result.ok else 1


def _print_verify(r: VerifyResult) -> None:
    if r.fault is not None:
        print(f"FAILED gate {r.gate_id}: first bad seq {r.fault.seq}: {r.fault.problem}")
    if r.missing_triggers:
        missing = ", ".join(r.missing_triggers)
        print(f"FAILED gate {r.gate_id}: append-only triggers missing: {missing}")
    if r.difference is not None:
        print(f"FAILED gate {r.gate_id} against central: {r.difference.problem}")
    if r.fault is None:
        mark = "OK" if not r.missing_triggers else "  "
        first = r.head_seq - r.events + 1  # above 1 after [log.retention] removed archives
        anchored = "" if first == 1 else " (chained from the anchor the last removed archive left)"
        print(
            f"{mark} gate {r.gate_id}: {r.events} events, seq {first}..{r.head_seq}, "
            f"chain verified{anchored}"
        )
    if r.central_head is not None and r.difference is None:
        print(
            f"OK gate {r.gate_id}: identical to central's copy "
            f"({r.compared} events up to central's head, seq {r.central_head})"
        )


# --- export ---------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    def body(source: Source, tz: ZoneInfo) -> int:
        q = query_from(args, tz)
        flt = EventFilter(q.start, q.end, q.lanes, q.types, q.plate)
        out_path: Path = args.csv or args.ndjson
        if isinstance(source, LogSource) and _same_file(out_path, source.reader.path):
            raise SourceError(f"{out_path} is the log being read: choose another output file")
        try:
            out = out_path.open("w", encoding="utf-8", newline="")
        except OSError as exc:
            raise SourceError(f"cannot write {out_path}: {exc.strerror or exc}") from None
        with out, progress_for("exporting", source.head()[0]) as progress:
            events = source.events(flt, progress=progress)
            if args.csv:
                n = export_mod.write_csv(events, out, tz, q.types)
            else:
                n = export_mod.write_ndjson(events, out, tz)
        print(f"{n} events written to {out_path}", file=sys.stderr)
        return 0

    return run_on_source(args, body)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and a.samefile(b)
    except OSError:
        return False
