"""``edgegate central roll-call|gates|rebuild-projections``: central's park view from its store.

The commands read the projections ``edgegate central run`` keeps in its store
(:mod:`edgegate.central.store.projections`). Exit 0 done, 2 bad input or an unusable store,
with a message naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.console import Console
from rich.table import Table

from edgegate.central.api import gate_json, iso, vehicle_json
from edgegate.central.store import (
    GateState,
    ParkOverstay,
    StoreError,
    VehicleInside,
    redact,
)
from edgegate.central.store.projections import park_overstays
from edgegate.cli.central_common import (
    UsageError,
    fail,
    log,
    open_existing,
    output_args,
    store_arg,
)
from edgegate.cli.commands import Subparsers, add_command
from edgegate.config import parse_duration
from edgegate.core.domain import VehicleCategory
from edgegate.core.rules import DEFAULT_DWELL_LIMITS

_CATEGORIES = ", ".join(c.value for c in VehicleCategory)


def register(central: Subparsers) -> None:
    """Add ``roll-call``, ``gates`` and ``rebuild-projections`` to ``edgegate central``."""
    roll = add_command(
        central,
        "roll-call",
        cmd_roll_call,
        help="the vehicles inside the park, hazmat first, with entry gate and time",
        description="Every vehicle whose latest passage at any gate is an entry, as central "
        "has stored the gates' events: hazmat, then hazardous waste, then the others, each "
        "longest inside first; a vehicle past its permit's end or its category's dwell limit "
        "is marked overdue.",
    )
    store_arg(roll)
    roll.add_argument(
        "--category",
        action="append",
        dest="categories",
        metavar="CATEGORY",
        help=f"only this category (repeat for several): {_CATEGORIES}",
    )
    roll.add_argument("--gate", help="only vehicles that entered at this gate")
    roll.add_argument(
        "--dwell-limit",
        action="append",
        default=[],
        metavar="CATEGORY=DURATION",
        help="central's dwell limit of a category for 'overdue', e.g. hazmat=6h or "
        "ordinary=none (default: the gates' defaults, "
        + ", ".join(f"{c}={_duration(d)}" for c, d in DEFAULT_DWELL_LIMITS.items())
        + ")",
    )
    output_args(roll)

    gates = add_command(
        central,
        "gates",
        cmd_gates,
        help="each gate: online, last seen, synced seq, allow-list version, mode, faults",
        description="Each gate central knows, offline ones first: its retained status "
        "(online/offline, the head of its log), the events central has stored of it, and "
        "what those events say (mode, allow-list version, devices in fault).",
    )
    store_arg(gates)
    output_args(gates)

    rebuild = add_command(
        central,
        "rebuild-projections",
        cmd_rebuild,
        help="drop central's park projections and apply every stored event again",
        description="In one transaction that holds every gate's head (running sinks wait "
        "for it): the vehicles inside and the gates' state are dropped and rebuilt from the "
        "stored events, with the same result as the live projections.",
    )
    store_arg(rebuild)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: name too long
        raise UsageError(f"--timezone: unknown time zone {name[:60]!r}") from None


def _categories(values: list[str] | None) -> list[VehicleCategory] | None:
    if values is None:
        return None
    try:
        return [VehicleCategory(v) for v in values]
    except ValueError:
        bad = next(v for v in values if v not in VehicleCategory.__members__.values())
        raise UsageError(f"--category {bad!r}: expected one of {_CATEGORIES}") from None


def _dwell_limits(values: list[str]) -> dict[VehicleCategory, timedelta | None]:
    limits = dict(DEFAULT_DWELL_LIMITS)
    for value in values:
        name, sep, text = value.partition("=")
        try:
            category = VehicleCategory(name.strip())
        except ValueError:
            raise UsageError(
                f"--dwell-limit {value!r}: expected CATEGORY=DURATION with CATEGORY one of "
                f"{_CATEGORIES}"
            ) from None
        if not sep:
            raise UsageError(f"--dwell-limit {value!r}: expected CATEGORY=DURATION")
        if text.strip().lower() == "none":
            limits[category] = None
            continue
        try:
            limit = parse_duration(text.strip())
        except ValueError as exc:
            raise UsageError(f"--dwell-limit {value!r}: {exc}") from None
        if limit <= timedelta(0):
            raise UsageError(f"--dwell-limit {value!r}: must be more than 0")
        limits[category] = limit
    return limits


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "none"
    seconds = int(value.total_seconds())
    hours, rest = divmod(abs(seconds), 3600)
    text = f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
    return f"-{text}" if seconds < 0 else text


def _local(ns: int | None, zone: ZoneInfo) -> str:
    if ns is None:
        return "-"
    return f"{datetime.fromtimestamp(ns / 1e9, zone):%Y-%m-%d %H:%M:%S}"


# ------------------------------------------------------------------------------ roll-call


def cmd_roll_call(args: argparse.Namespace) -> int:
    try:
        zone = _zone(args.timezone)
        categories = _categories(args.categories)
        limits = _dwell_limits(args.dwell_limit)
    except UsageError as exc:
        return fail("roll-call", str(exc))
    now = time.time_ns()
    try:
        with open_existing(args.store) as store:
            inside = store.presence(categories=categories, gate=args.gate)
    except StoreError as exc:
        return fail("roll-call", str(exc), db=redact(args.store))
    overdue = {o.vehicle.plate: o for o in park_overstays(inside, now, limits)}
    if args.json:
        print(json.dumps(_roll_call_json(inside, overdue, now), ensure_ascii=False, indent=2))
    else:
        _print_roll_call(inside, overdue, now, zone)
    return 0


def _counts(inside: list[VehicleInside]) -> dict[str, int]:
    return {
        "inside": len(inside),
        "hazmat": sum(v.category is VehicleCategory.HAZMAT for v in inside),
        "hazwaste": sum(v.category is VehicleCategory.HAZWASTE for v in inside),
    }


def _roll_call_json(
    inside: list[VehicleInside], overdue: dict[str, ParkOverstay], now: int
) -> dict[str, object]:
    vehicles = [vehicle_json(v, overdue.get(v.plate), now) for v in inside]
    return {"at": iso(now), **_counts(inside), "vehicles": vehicles}


def _print_roll_call(
    inside: list[VehicleInside], overdue: dict[str, ParkOverstay], now: int, zone: ZoneInfo
) -> None:
    counts = _counts(inside)
    title = (
        f"roll call at {_local(now, zone)} ({zone.key}): {counts['inside']} inside, "
        f"{counts['hazmat']} hazmat, {counts['hazwaste']} hazardous waste"
    )
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("#", "plate", "category", "entry gate", "lane", "entered", "inside for"):
        table.add_column(col, no_wrap=True)
    table.add_column("permit until", no_wrap=True)
    table.add_column("overdue")
    for i, v in enumerate(inside, 1):
        o = overdue.get(v.plate)
        category = "unknown" if v.category is None else str(v.category)
        if v.dangerous:
            category = f"[bold red]{category}[/bold red]"
        late = ""
        if o is not None:
            by = _duration(timedelta(microseconds=o.exceeded_ns // 1000))
            late = f"[red]{by} past {o.limit}[/red]"
        if v.unauthorised:
            late = (late + " unauthorised").strip()
        table.add_row(
            str(i),
            v.plate,
            category,
            v.entry_gate,
            v.lane or "-",
            _local(v.entered_at_ns, zone),
            _duration(timedelta(microseconds=max(0, now - v.entered_at_ns) // 1000)),
            _local(v.permit_until_ns, zone),
            late,
        )
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    if inside:
        console.print(table)
    else:
        console.print(f"{title}: nobody inside")


# ------------------------------------------------------------------------------ gates


def cmd_gates(args: argparse.Namespace) -> int:
    try:
        zone = _zone(args.timezone)
    except UsageError as exc:
        return fail("gates", str(exc))
    try:
        with open_existing(args.store) as store:
            states = store.gate_states()
    except StoreError as exc:
        return fail("gates", str(exc), db=redact(args.store))
    # Offline (or never heard from) first: those are the ones to look at.
    states.sort(key=lambda g: (g.online, g.gate))
    if args.json:
        print(json.dumps({"gates": [gate_json(g) for g in states]}, indent=2))
    else:
        _print_gates(states, zone)
    return 0


def _last_seen(g: GateState) -> int | None:
    seen = [t for t in (g.status_at_ns, g.last_event_at_ns) if t is not None]
    return max(seen, default=None)


def _print_gates(states: list[GateState], zone: ZoneInfo) -> None:
    table = Table(title=f"gates ({zone.key})", title_justify="left", expand=False)
    for col in ("gate", "online", "last seen", "synced seq", "lag", "allow-list", "mode"):
        table.add_column(col, no_wrap=True)
    table.add_column("faulted devices")
    for g in states:
        data = gate_json(g)
        online = "[green]online[/green]" if g.online else f"[red]{g.state or 'never seen'}[/red]"
        version = data["allowlist_version"]
        table.add_row(
            g.gate,
            online,
            _local(_last_seen(g), zone),
            str(g.stored_seq),
            "-" if g.lag is None else str(g.lag),
            "-" if version is None else f"v{version}",
            g.mode or "-",
            ", ".join(f"{f.device} ({f.code})" for f in g.faults),
        )
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    if states:
        console.print(table)
    else:
        console.print("no gate known to this store yet")


# ------------------------------------------------------------------------------ rebuild


def cmd_rebuild(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        with open_existing(args.store) as store:
            events = store.rebuild_projections()
            gates = len(store.heads())
    except StoreError as exc:
        return fail("rebuild-projections", str(exc), db=redact(args.store))
    took = time.monotonic() - started
    print(f"rebuilt the park projections from {events} events of {gates} gates in {took:.1f} s")
    log.info("projections_rebuilt", events=events, gates=gates, seconds=round(took, 3))
    return 0
