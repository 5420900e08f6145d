"""``edgegate central events|verify|trial-broker``: central's own tools.

``events`` and ``verify`` read central's store read-only, through the replay's
``CentralSource`` (never migrated, never written); ``verify`` proves each stored chain with
the ``ChainVerifier`` of ``edgegate log verify``. ``trial-broker`` writes a broker for trials
(``edgegate.central.trial``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import pwd
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgegate.central.store import redact
from edgegate.central.trial import TrialError, TrialPlan, write_trial
from edgegate.cli.central_common import store_arg
from edgegate.cli.commands import Subparsers, add_command
from edgegate.cli.replay_cmd import add_filter_arguments, filter_from
from edgegate.log.chain import Row, verify_to_head
from edgegate.log.reader import StoredEvent
from edgegate.log.render import to_json_dict
from edgegate.observability import get_logger
from edgegate.replay.source import (
    EventFilter,
    PlateQuery,
    Source,
    SourceError,
    central_gates,
    open_central,
    plates_of,
)

log = get_logger("cli.central_tools")

_DEFAULT_COUNT = 50
_HEADER_KEYS = frozenset({"seq", "type", "lane", "ts", "version"})


def register(central: Subparsers) -> None:
    """Add ``events``, ``verify`` and ``trial-broker`` to ``edgegate central``."""
    _register_events(central)
    _register_verify(central)
    _register_trial_broker(central)


def _register_events(central: Subparsers) -> None:
    p = add_command(
        central,
        "events",
        cmd_events,
        help="a gate's events in central's store, decoded (read-only)",
        description="The newest N events of GATE that match the filters, oldest first, times "
        "in the zone the gate recorded. A table on a terminal, one line per event otherwise, "
        "one JSON object per line with --json. --plate also matches plates one OCR-confusable "
        "character away (marked fuzzy), as the gate does.",
    )
    p.add_argument("gate", metavar="GATE", help="the gate id")
    store_arg(p)
    add_filter_arguments(p)
    p.add_argument(
        "-n",
        type=_count,
        default=_DEFAULT_COUNT,
        metavar="N",
        help=f"the newest N matching events (default {_DEFAULT_COUNT}; 0: all)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line (NDJSON)")


def _register_verify(central: Subparsers) -> None:
    p = add_command(
        central,
        "verify",
        cmd_verify,
        help="verify each gate's stored hash chain (exit 1 naming the first fault)",
        description="For each gate in central's store (or each --gate): contiguous seqs from "
        "1, every event's hash, every link, and the chain ending at the gate's recorded head, "
        "with the same chain code as `edgegate log verify`. Read-only. Exit 0 when every "
        "chain holds, 1 when one does not, 2 for bad usage or an unreadable store.",
    )
    store_arg(p)
    p.add_argument(
        "--gate",
        action="append",
        dest="gates",
        metavar="ID",
        help="only this gate (repeatable; default every gate stored)",
    )


def _register_trial_broker(central: Subparsers) -> None:
    p = add_command(
        central,
        "trial-broker",
        cmd_trial_broker,
        help="write a TLS mosquitto broker for a trial: config, ACL, passwords, CA, certificates",
        description="Writes into DIR a mosquitto configuration (one TLS listener, the "
        "production ACL and settings of config/mosquitto/), a password file, a CA with the "
        "broker's certificate and each gate's and central's credentials (password, client "
        "certificate), and trial.txt saying what goes where. Secrets are 0600. Existing files "
        "are kept unless --force. For trials and tests, not production.",
    )
    p.add_argument("directory", type=Path, metavar="DIR", help="where to write (created)")
    p.add_argument("--gates", required=True, metavar="G1,G2", help="the gate ids (comma-separated)")
    p.add_argument(
        "--central-id", default="central", help="central's broker user (default central)"
    )
    p.add_argument(
        "--site", help="the gates' site: each may read its park chain (default: none may)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8883, help="TLS port (default 8883)")
    p.add_argument(
        "--user",
        default=None,
        help="the user mosquitto runs as when started as root (default: the current user)",
    )
    p.add_argument("--force", action="store_true", help="replace files that exist")


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {n}")
    return n


def _fail(command: str, message: str, **fields: Any) -> int:
    print(f"edgegate central {command}: {message}", file=sys.stderr)
    log.error("central_command_failed", command=command, error=message, **fields)
    return 2


# ------------------------------------------------------------------------------ events


def cmd_events(args: argparse.Namespace) -> int:
    try:
        with open_central(args.store, args.gate) as source:
            tz = source.timezone()
            flt = filter_from(args, tz)
            events = _newest(source, flt, args.n)
            _print_events(source, events, tz, flt.plate, json_lines=args.json)
    except SourceError as exc:
        return _fail("events", str(exc), store=redact(args.store))
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        # Python's final flush of stdout would fail again: point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _newest(source: Source, flt: EventFilter, n: int) -> list[StoredEvent]:
    """The newest ``n`` events ``flt`` admits (all with 0), oldest first."""
    if n and flt == EventFilter():
        # Central holds a gate's events from seq 1 without a gap: read only the last n.
        after = max(0, source.head()[0] - n)
        rows = [row for batch in source.batches(after) for row in batch]
        return [StoredEvent(*row) for row in rows[-n:]]
    kept: collections.deque[StoredEvent] = collections.deque(maxlen=n or None)
    kept.extend(source.events(flt))
    return list(kept)


def _record(stored: StoredEvent, tz: ZoneInfo, plate: PlateQuery | None) -> dict[str, Any]:
    """The event as ``log tail --json`` shows it, its time in the gate's zone; with a plate
    query, whether it matched exactly or by a confusable character."""
    out = to_json_dict(stored)
    with contextlib.suppress(TypeError, ValueError, OverflowError):  # a damaged wall_ns
        out["ts"] = stored.ts.astimezone(tz).isoformat()
    if plate is not None:
        out["plate_match"] = _plate_match(stored, plate)
    return out


def _plate_match(stored: StoredEvent, plate: PlateQuery) -> str | None:
    try:
        matches = [plate.match(p) for p in plates_of(stored.event())]
    except Exception:
        return None
    return "exact" if "exact" in matches else ("fuzzy" if "fuzzy" in matches else None)


def _print_events(
    source: Source,
    events: list[StoredEvent],
    tz: ZoneInfo,
    plate: PlateQuery | None,
    *,
    json_lines: bool,
) -> None:
    records = (_record(e, tz, plate) for e in events)
    out = sys.stdout
    if not events and not json_lines:
        # Said on stderr: stdout stays what a pipe expects (one line per event).
        print(f"no events of gate {source.gate_id} match", file=sys.stderr)
        return
    if json_lines:
        for rec in records:
            out.write(json.dumps({"gate": source.gate_id, **rec}, ensure_ascii=False) + "\n")
        out.flush()
        return
    if out.isatty():
        table = Table(title=f"gate {source.gate_id}: {len(events)} events, times in {tz.key}")
        for name in ("seq", "time", "lane", "type", "fields"):
            table.add_column(
                name, no_wrap=name != "fields", justify="right" if name == "seq" else "left"
            )
        for rec in records:
            table.add_row(*(Text(c) for c in _cells(rec)))  # text, never markup
        Console(file=out).print(table)
        return
    for rec in records:
        out.write("  ".join(_cells(rec)) + "\n")
    out.flush()


def _cells(rec: dict[str, Any]) -> tuple[str, str, str, str, str]:
    fields = " ".join(f"{k}={_short(v)}" for k, v in rec.items() if k not in _HEADER_KEYS)
    ts = str(rec["ts"]).replace("T", " ")
    return str(rec["seq"]), ts, str(rec["lane"] or "-"), str(rec["type"]), fields


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------------------ verify


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        gates = central_gates(args.store)
    except SourceError as exc:
        return _fail("verify", str(exc), store=redact(args.store))
    wanted = list(dict.fromkeys(args.gates)) if args.gates else gates
    unknown = [g for g in wanted if g not in gates]
    if unknown:
        held = ", ".join(gates) or "none"
        return _fail(
            "verify", f"the store holds no gate {', '.join(map(repr, unknown))} (gates: {held})"
        )
    if not wanted:
        print(f"no gates in {redact(args.store)}: nothing to verify")
        return 0
    faults = 0
    for gate in wanted:
        try:
            faults += _verify_gate(args.store, gate)
        except SourceError as exc:
            return _fail("verify", str(exc), store=redact(args.store))
    return 1 if faults else 0


def _verify_gate(dsn: str, gate: str) -> int:
    """Print the gate's verdict; 1 if its chain has a fault, else 0."""
    with open_central(dsn, gate) as source:
        head = source.head()  # before the rows: events stored meanwhile are not a fault
        fault = verify_to_head(gate, _rows(source), head)
    if fault is not None:
        print(f"FAILED gate {gate}: first bad seq {fault.seq}: {fault.problem}")
        log.error("central_verify_failed", gate=gate, seq=fault.seq, problem=fault.problem)
        return 1
    if head[0] == 0:
        print(f"OK gate {gate}: no events stored yet")
    else:
        print(f"OK gate {gate}: {head[0]} events, seq 1..{head[0]}, chain verified")
    log.info("central_verified", gate=gate, events=head[0])
    return 0


def _rows(source: Source) -> Iterator[Row]:
    for batch in source.batches():
        yield from batch


# ------------------------------------------------------------------------------ trial-broker


def cmd_trial_broker(args: argparse.Namespace) -> int:
    gates = tuple(g.strip() for g in args.gates.split(",") if g.strip())
    try:
        run_as = args.user or _current_user()
        plan = TrialPlan(
            args.directory,
            gates,
            central_id=args.central_id,
            host=args.host,
            port=args.port,
            run_as=run_as,
            site=args.site,
        )
        written = write_trial(plan, force=args.force)
    except TrialError as exc:
        return _fail("trial-broker", str(exc))
    print(
        f"wrote {len(written)} files under {plan.root}; what goes where: {plan.root / 'trial.txt'}"
    )
    print(f"start the broker: mosquitto -c {plan.root / 'broker' / 'mosquitto.conf'}")
    log.info("trial_broker_written", directory=str(plan.root), gates=list(gates))
    return 0


def _current_user() -> str:
    """The effective user's name: mosquitto started by it as root must stay it."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise TrialError(f"user id {os.geteuid()} has no name: give --user NAME") from None
