"""``edgegate allowlist import|lookup``: load a gate's allow-list from a file, ask about a plate."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.console import Console
from rich.table import Table

from edgegate.allowlist import importer
from edgegate.allowlist.service import (
    AllowListService,
    UpdateResult,
    VersionError,
    check_version,
    load_from_file,
)
from edgegate.allowlist.store import StoreError
from edgegate.cli.commands import Subparsers, action_group
from edgegate.config import ConfigError, GateConfig, load_config
from edgegate.core.allowlist import AllowList, AllowListError
from edgegate.core.domain import (
    Appointment,
    BlacklistEntry,
    Credential,
    Credentials,
    Direction,
    FuzzyMatch,
    GateKind,
    PlateRead,
    Registration,
    TemporaryPermit,
)
from edgegate.core.plates import normalise
from edgegate.core.policy import Decision, decide, decide_all_kinds
from edgegate.log import EventLog, LogError
from edgegate.observability import get_logger

log = get_logger("cli.allowlist")

DEFAULT_TZ = "Asia/Shanghai"


def register(sub: Subparsers) -> None:
    al_sub = action_group(sub, "allowlist", "import and query a gate's allow-list")

    imp = al_sub.add_parser(
        "import",
        help="replace the allow-list with a CSV or JSON file (or apply a delta)",
        description="A file with any bad row imports nothing and lists every bad line. "
        "The change and its allowlist.updated event are committed together.",
    )
    imp.add_argument("db", type=Path, help="the gate's SQLite log file (created if missing)")
    imp.add_argument("file", type=Path, help="CSV or JSON file (format by extension)")
    imp.add_argument("--delta", action="store_true", help="apply as a delta (upsert/remove)")
    imp.add_argument("--version", type=int, help="the list version (default: current + 1)")
    imp.add_argument("-c", "--config", type=Path, help="gate config: gate id and time zone")
    imp.add_argument("--gate", help="gate id, for a new log file without --config")
    imp.add_argument("--timezone", help=f"zone of times without offset (default {DEFAULT_TZ})")
    imp.add_argument(
        "--encoding",
        choices=importer.ENCODINGS,
        help="read the file as this (default: decided by which reading gives valid plates)",
    )
    imp.set_defaults(func=cmd_import)

    look = al_sub.add_parser(
        "lookup",
        help="what the allow-list holds for a plate and what the policy would say",
    )
    look.add_argument("db", type=Path, help="the gate's SQLite log file")
    look.add_argument("plate", help="the plate as read, e.g. 苏E12345")
    look.add_argument(
        "--at", help="ISO time to evaluate at (local gate time if no offset; default now)"
    )
    look.add_argument("-c", "--config", type=Path, help="also decide as this configured gate")
    look.add_argument(
        "--gate", help="gate id for gate-specific credentials (default: the config's gate)"
    )
    look.add_argument("--timezone", help=f"zone for --at and display (default {DEFAULT_TZ})")
    look.add_argument("--json", action="store_true", help="print one JSON object")
    look.set_defaults(func=cmd_lookup)


def _fail(message: str, **fields: Any) -> int:
    print(f"edgegate allowlist: {message}", file=sys.stderr)
    log.error("allowlist_command_failed", error=message, **fields)
    return 2


def _config(path: Path | None) -> GateConfig | None:
    if path is None:
        return None
    return load_config(path)


def _config_and_timezone(args: argparse.Namespace) -> tuple[GateConfig | None, str]:
    """``--config`` (``ConfigError`` if invalid) and the time zone: ``--timezone``, else the
    configured gate's, else the default."""
    config = _config(args.config)
    return config, args.timezone or (config.gate.timezone if config else DEFAULT_TZ)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: name too long
        raise ValueError(f"unknown time zone {name[:60]!r}") from exc


def cmd_import(args: argparse.Namespace) -> int:
    try:
        config, tz = _config_and_timezone(args)
        _zone(tz)
    except ConfigError as exc:  # a ValueError too: caught first
        return _fail(f"invalid configuration:\n{exc}")
    except ValueError as exc:
        return _fail(str(exc))
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        return _fail(f"cannot read {args.file}: {exc.strerror or exc}")
    suffix = args.file.suffix.lower()
    if suffix not in (".csv", ".json"):
        return _fail(f"{args.file}: unknown format {suffix!r}: use a .csv or .json file")
    try:
        decoded = importer.read_text(data, args.encoding)
        if args.delta:
            parse_delta = (
                importer.parse_json_delta if suffix == ".json" else (importer.parse_csv_delta)
            )
            delta = parse_delta(decoded.text, tz)
            entries: list[Credential] = delta.upserts
            removals = delta.removals
        else:
            parse = importer.parse_json if suffix == ".json" else importer.parse_csv
            entries = parse(decoded.text, tz)
            removals = []
    except importer.AllowListInputError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        log.error(
            "allowlist_import_refused",
            file=str(args.file),
            errors=[str(e) for e in exc.errors],
        )
        return 2
    gate_id = args.gate or (config.gate.id if config else None)
    if not args.db.exists() and gate_id is None:
        return _fail(f"{args.db} does not exist: name its gate with --gate or --config")
    try:
        if args.version is not None and not args.db.exists():
            check_version(args.version, 0)  # refused before a new log file is created
        result = asyncio.run(
            _import(args.db, gate_id, entries, removals, args.delta, args.version, args.file)
        )
    except VersionError as exc:
        return _fail(f"{args.file}: refused, nothing imported: {exc}")
    except AllowListError as exc:
        return _fail(f"{args.file}: refused, nothing imported:\n{exc}")
    except (LogError, StoreError) as exc:
        return _fail(str(exc))
    kind = "delta" if args.delta else "snapshot"
    if decoded.notable:
        other = "gbk" if decoded.encoding == "utf-8" else "utf-8"
        print(
            f"read {args.file} as {decoded.encoding.upper()} ({decoded.why}); it is also "
            f"valid {other.upper()} text: give --encoding {other} if that is meant"
        )
    print(
        f"imported {args.file} as {kind}: version {result.previous_version} -> "
        f"{result.version}, {result.upserted} upserted, {result.removed} removed, "
        f"{result.entries} entries now (allowlist.updated seq {result.seq})"
    )
    return 0


async def _import(
    db: Path,
    gate_id: str | None,
    entries: list[Credential],
    removals: list[Any],
    delta: bool,
    version: int | None,
    file: Path,
) -> UpdateResult:
    if gate_id is None:
        from edgegate.log import LogReader

        with LogReader(db) as reader:
            gate_id = reader.gate_id
    async with await EventLog.open(db, gate_id=gate_id) as event_log:
        service = await AllowListService.open(event_log)
        source = f"import:{file.name}"
        if delta:
            return await service.apply_delta(entries, removals, source=source, version=version)
        return await service.replace(entries, source=source, version=version)


# --- lookup -----------------------------------------------------------------------------


def _parse_at(text: str | None, zone: ZoneInfo) -> datetime:
    if text is None:
        return datetime.now(UTC)
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        at = at.replace(tzinfo=zone)
    try:
        return at.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-23:00 is past year 9999 in UTC
        raise ValueError(f"{text!r} is out of range") from None


def _window(c: Credential) -> tuple[datetime | None, datetime | None]:
    if isinstance(c, Appointment):
        return c.window_start, c.window_end
    return c.valid_from, c.valid_until


def _describe(c: Credential) -> str:
    if isinstance(c, Registration):
        return f"{c.category} {c.holder} of {c.organisation}"
    if isinstance(c, TemporaryPermit):
        return f"{c.category} visitor {c.visitor}, host {c.host}" + (
            f", {c.purpose}" if c.purpose else ""
        )
    if isinstance(c, Appointment):
        state = ", consumed" if c.consumed else ""
        return (
            f"{c.category} to {c.destination}, UN{c.un_number} class {c.hazard_class}, "
            f"waybill {c.waybill}{state}"
        )
    assert isinstance(c, BlacklistEntry)
    return f"{c.reason} ({c.source})" + (f": {c.detail}" if c.detail else "")


def _credential_json(c: Credential, zone: ZoneInfo, at: datetime) -> dict[str, Any]:
    start, end = _window(c)
    gates = sorted(getattr(c, "gates", frozenset()))
    return {
        "kind": str(c.kind),
        "id": c.id,
        "plate": c.plate,
        "summary": _describe(c),
        "from": start.astimezone(zone).isoformat() if start else None,
        "until": end.astimezone(zone).isoformat() if end else None,
        "gates": gates,
        "valid_at": c.valid_at(at),
    }


@dataclass(frozen=True, slots=True)
class _Lookup:
    """Everything ``allowlist lookup`` found, for either rendering."""

    allowlist: AllowList
    plate: str
    exact: Credentials
    fuzzy: list[FuzzyMatch]
    decisions: dict[tuple[GateKind, Direction], Decision]
    configured: dict[Direction, Decision]
    config: GateConfig | None
    gate_id: str
    zone: ZoneInfo
    at: datetime


def _decision_json(d: Decision) -> dict[str, Any]:
    return {
        "verdict": str(d.verdict),
        "reasons": [str(r) for r in d.reasons],
        "match": str(d.match),
        "matched_plate": d.matched_plate,
        "category": None if d.category is None else str(d.category),
        "credential": None if d.credential is None else f"{d.credential.kind}:{d.credential.id}",
        "explanation": d.explanation,
    }


def cmd_lookup(args: argparse.Namespace) -> int:
    try:
        config, tz = _config_and_timezone(args)
        zone = _zone(tz)
        at = _parse_at(args.at, zone)
    except ConfigError as exc:  # a ValueError too: caught first
        return _fail(f"invalid configuration:\n{exc}")
    except ValueError as exc:
        return _fail(f"--at/--timezone: {exc}")
    if not args.db.exists():
        return _fail(f"no log file at {args.db}")
    try:
        allowlist = load_from_file(str(args.db))
    except (StoreError, LogError) as exc:
        return _fail(str(exc))
    except sqlite3.DatabaseError as exc:
        return _fail(f"{args.db}: not an edgegate log with an allow-list ({exc})")
    read = PlateRead(plate=args.plate, reader="cli")
    plate = normalise(args.plate)
    exact = allowlist.exact(plate)
    fuzzy = [] if not exact.empty else allowlist.fuzzy(plate)
    gate_id = args.gate or (config.gate.id if config else "")
    decisions = decide_all_kinds(read, allowlist, at, gate_id=gate_id)
    configured: dict[Direction, Decision] = {}
    if config is not None:
        rules = config.rules()
        for direction in Direction:
            configured[direction] = decide(rules, direction, read, allowlist, at)
    found = _Lookup(
        allowlist, plate, exact, fuzzy, decisions, configured, config, gate_id, zone, at
    )
    if args.json:
        print(json.dumps(_lookup_json(found), ensure_ascii=False))
        return 0
    _print_lookup(found)
    return 0


def _lookup_json(found: _Lookup) -> dict[str, Any]:
    zone, at, config = found.zone, found.at, found.config
    return {
        "plate": found.plate,
        "at": at.astimezone(zone).isoformat(),
        "allowlist_version": found.allowlist.version,
        "exact": [_credential_json(c, zone, at) for c in found.exact.all()],
        "fuzzy": [
            {
                "plate": m.credentials.plate,
                "position": m.position,
                "read": m.read_char,
                "listed": m.list_char,
                "credentials": [_credential_json(c, zone, at) for c in m.credentials.all()],
            }
            for m in found.fuzzy
        ],
        "by_gate_kind": {
            f"{kind}/{direction}": _decision_json(d)
            for (kind, direction), d in found.decisions.items()
        },
        "configured_gate": None
        if config is None
        else {
            "gate": config.gate.id,
            **{str(direction): _decision_json(d) for direction, d in found.configured.items()},
        },
    }


def _print_lookup(found: _Lookup) -> None:
    zone, at, config, gate_id = found.zone, found.at, found.config, found.gate_id
    console = Console(highlight=False)
    console.print(
        f"[bold]{found.plate}[/bold] at {at.astimezone(zone):%Y-%m-%d %H:%M:%S %Z} — "
        f"allow-list version {found.allowlist.version}, {len(found.allowlist)} entries"
    )
    rows: list[tuple[str, Credential]] = [("exact", c) for c in found.exact.all()]
    for m in found.fuzzy:
        how = f"fuzzy: {m.credentials.plate} ({m.read_char}→{m.list_char} at {m.position})"
        rows.extend((how, c) for c in m.credentials.all())
    if not rows:
        console.print("no credential matches, exactly or fuzzily")
    for how, c in rows:
        start, end = _window(c)
        valid = "[green]valid now[/green]" if c.valid_at(at) else "[red]not valid now[/red]"
        gates = ", ".join(sorted(getattr(c, "gates", ()))) or "all gates"
        console.print(f"{how:<6} {c.kind} [bold]{c.id}[/bold]  {valid}")
        console.print(f"       {_describe(c)}")
        frm = f"{start.astimezone(zone):%Y-%m-%d %H:%M}" if start else "-"
        until = f"{end.astimezone(zone):%Y-%m-%d %H:%M}" if end else "open-ended"
        console.print(f"       {frm} → {until} ({zone.key}), {gates}")
    gate_specific = any(getattr(c, "gates", None) for _, c in rows)
    title = "What the policy would say"
    if gate_specific and not (config or gate_id):
        title += " (no --gate given: gate-specific credentials count as for another gate)"
    table = Table(title=title)
    for col in ("gate", "direction", "verdict"):
        table.add_column(col)
    table.add_column("reasons", overflow="fold")
    if config is not None:
        for direction, d in found.configured.items():
            table.add_row(
                config.gate.id, str(direction), str(d.verdict), ", ".join(str(r) for r in d.reasons)
            )
    for (kind, direction), d in found.decisions.items():
        where = f"{gate_id} as {kind}" if gate_id else f"any {kind}"
        table.add_row(where, str(direction), str(d.verdict), ", ".join(str(r) for r in d.reasons))
    console.print(table)
    decided = [*found.configured.values(), *found.decisions.values()]
    for explanation in dict.fromkeys(d.explanation for d in decided if d.explanation):
        console.print(explanation)
