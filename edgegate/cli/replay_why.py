"""``edgegate replay why|what-if``: a decision explained, and the log's decisions taken
again under another allow-list, configuration or software version."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from edgegate.allowlist import importer
from edgegate.cli.commands import Subparsers
from edgegate.cli.replay_cmd import add_source_arguments, fail, open_source
from edgegate.config.loading import load_config
from edgegate.config.problems import ConfigError
from edgegate.core.allowlist import AllowList, AllowListError
from edgegate.core.rules import GateRules
from edgegate.log.eventlog import LogError
from edgegate.log.reader import StoredEvent
from edgegate.replay.source import Source, SourceError, parse_range, parse_time
from edgegate.replay.whatif import WhatIfReport, stored_allowlist_of, what_if
from edgegate.replay.why import Why, WhyError, explain, find_decision, where_consumed


def register_action(actions: Subparsers) -> None:
    why = actions.add_parser("why", help="explain one decision step by step")
    add_source_arguments(why)
    why.add_argument("seq", nargs="?", type=int, help="the access.decided event's seq")
    why.add_argument("--plate", help="the decision on this plate ... (with --at)")
    why.add_argument("--at", help="... nearest before this time (ISO 8601; the gate's zone)")
    why.add_argument("--json", action="store_true", help="one JSON object")
    why.set_defaults(func=cmd_why)

    wi = actions.add_parser(
        "what-if", help="decide every recorded read again; print the decisions that change"
    )
    add_source_arguments(wi)
    wi.add_argument("--allowlist", type=Path, help="another allow-list (.csv or .json)")
    wi.add_argument("-c", "--config", type=Path, help="another configuration (rules, policy)")
    wi.add_argument("--from", dest="since", help="from this time (ISO 8601; the gate's zone)")
    wi.add_argument("--to", dest="until", help="to this time (ISO 8601, excluded; a date: its day)")
    wi.add_argument(
        "--as-recorded",
        action="store_true",
        help="the credentials and rules recorded in each decision: every decision must be "
        "reproduced (exit 1 if not); -c gives the rules of decisions that did not record them",
    )
    wi.add_argument("--json", action="store_true", help="one JSON object")
    wi.set_defaults(func=cmd_what_if)


class _BadInput(ValueError):
    pass


def _events(source: Source, after: int = 0, batch: int = 10_000) -> Iterator[StoredEvent]:
    for rows in source.batches(after=after, batch=batch):
        for row in rows:
            yield StoredEvent(*row)


def _central_seq(args: argparse.Namespace) -> None:
    """``why --central DSN --gate G SEQ``: the one positional is the seq, not a log file."""
    if args.central and args.seq is None and args.db is not None and str(args.db).isdigit():
        args.seq, args.db = int(str(args.db)), None


def cmd_why(args: argparse.Namespace) -> int:
    _central_seq(args)
    try:
        if (args.seq is None) == (args.plate is None):
            raise _BadInput("give either SEQ or --plate P --at T")
        if args.plate is not None and args.at is None:
            raise _BadInput("--plate needs --at")
        source, zone = open_source(args)
        with source:
            seq = args.seq
            if seq is None:
                at = parse_time(args.at, zone)
                seq = find_decision(_events(source), args.plate, at)
                if seq is None:
                    raise _BadInput(f"no decision on {args.plate} at or before {args.at}")
            # The decision's read precedes it by a few seqs; read from a little before.
            why = explain(_events(source, max(0, seq - 64), 256), seq, zone.key)
            if why.consumed:
                why.note_consumed(where_consumed(_events(source), why.consumed, seq, zone))
    except (_BadInput, WhyError, SourceError, LogError) as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(why.to_json(), ensure_ascii=False))
    else:
        _print_why(why, zone)
    return 0


def _print_why(why: Why, zone: ZoneInfo) -> None:
    console = Console(highlight=False)
    when = why.at.astimezone(zone).isoformat(sep=" ", timespec="milliseconds")
    console.print(f"[bold]Decision seq {why.seq}[/bold], lane {why.lane}, {when}: {why.verdict}")
    if why.version < 4:
        console.print(
            f"access.decided v{why.version}: what the policy looked at was not recorded "
            "(recorded since v4); the steps marked \\[not recorded] show what the log has."
        )
    for n, step in enumerate(why.steps, start=1):
        mark = "" if step.recorded else " \\[not recorded]"
        console.print(f"{n:>2}. [bold]{step.title}[/bold]{mark}: {step.outcome}", soft_wrap=True)
        for line in step.details:
            console.print(f"      {line}", soft_wrap=True)
    console.print("[bold]What followed[/bold]")
    for step in why.followed:
        detail = f" ({'; '.join(step.details)})" if step.details else ""
        console.print(f"   - {step.title}: {step.outcome}{detail}", soft_wrap=True)


def _allowlist(path: Path, tz: str) -> AllowList:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise _BadInput(f"{path}: unknown format {suffix!r}: use a .csv or .json file")
    try:
        text = importer.read_text(data, None).text
        parse = importer.parse_json if suffix == ".json" else importer.parse_csv
        return AllowList.from_credentials(parse(text, tz))
    except (importer.AllowListInputError, AllowListError) as exc:
        raise _BadInput(f"{path}: {exc}") from None


def cmd_what_if(args: argparse.Namespace) -> int:
    try:
        if args.as_recorded and args.allowlist is not None:
            raise _BadInput("--as-recorded takes the recorded credentials: not with --allowlist")
        rules: GateRules | None = None
        if args.config is not None:
            try:
                rules = load_config(args.config).rules()
            except ConfigError as exc:
                raise _BadInput(f"{args.config}: {exc}") from None
        source, zone = open_source(args)
        with source:
            since, until = parse_range(args.since, args.until, zone)
            allowlist = None if args.allowlist is None else _allowlist(args.allowlist, zone.key)
            report = what_if(
                source.batches(),
                stored_allowlist=stored_allowlist_of(source),
                allowlist=allowlist,
                rules=None if args.as_recorded else rules,
                fallback_rules=rules,
                since=since,
                until=until,
            )
    except (_BadInput, SourceError, LogError) as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        _print_report(report, zone, args.as_recorded)
    if args.as_recorded and (report.differing or report.skipped):
        return 1
    return 0


def _print_report(report: WhatIfReport, zone: ZoneInfo, as_recorded: bool) -> None:
    console = Console(highlight=False)
    for note in report.notes:
        console.print(f"[dim]{note}[/dim]", soft_wrap=True)
    shown = report.differing if as_recorded else report.changed
    if shown:
        table = Table(title="decisions that differ" if as_recorded else "decisions that change")
        for column in ("seq", "time", "lane", "plate read", "change", "old reasons", "new reasons"):
            table.add_column(column)
        for r in shown:
            table.add_row(
                str(r.seq),
                r.at.astimezone(zone).isoformat(sep=" ", timespec="seconds"),
                r.lane or "",
                r.plate_read,
                r.change,
                ", ".join(r.old_reasons),
                ", ".join(r.new_reasons),
            )
        console.print(table)
    for seq, why in report.skipped:
        console.print(f"seq {seq}: not decided again: {why}", soft_wrap=True)
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(report.counts.items())) or "none"
    console.print(f"{report.decisions} decisions; {summary}")
    if as_recorded:
        ok = report.reproduced == report.decisions
        console.print(
            f"reproduced {report.reproduced} of {report.decisions}"
            + (" (all)" if ok else " — NOT ALL: see above")
        )
