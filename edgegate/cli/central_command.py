"""``edgegate central command GATE ACTION``: a signed command to one gate, and with
``--wait`` the gate's answer read from central's store."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path
from typing import cast

from edgegate.central import publish as pub
from edgegate.central.replies import wait_for_reply
from edgegate.central.sink import DEFAULT_DSN
from edgegate.central.store import CentralStore, StoreError, open_store, redact
from edgegate.cli.central_common import UsageError, broker_args, broker_settings, check_ids, fail
from edgegate.cli.commands import Subparsers, add_command
from edgegate.config import parse_duration
from edgegate.observability import get_logger
from edgegate.sync.protocol import ProtocolError
from edgegate.sync.signing import MAX_COMMAND_LIFETIME_NS, CommandAction, SignedCommand

log = get_logger("cli.central")

_ACTIONS: tuple[str, ...] = ("open-lane", "release-lane", "incident-on", "incident-off")
_LANE_ACTIONS = ("open-lane", "release-lane")
WAIT_TIMEOUT_S = 60.0
#: The command's fields ``command_published`` carries after its id, gate and site, in order.
_PUBLISHED_FIELDS = ("action", "lane", "operator", "expires_at_ns")


def register(central: Subparsers) -> None:
    """Add ``command`` to the ``edgegate central`` sub-commands."""
    p = add_command(
        central,
        "command",
        cmd_command,
        help="send a signed command to a gate (open or release a lane, incident mode on/off)",
        description="open-lane opens a lane and holds it open until release-lane (or a guard) "
        "releases it; with --once it opens for one vehicle and then closes as after any pass. "
        "With --wait, the gate's answer is read from central's store (the sink of "
        "`edgegate central run --db` must be running): exit 0 when the gate accepted the "
        "command, 1 when it refused it or could not carry it out (the reason is printed), "
        "3 when no answer came in time.",
    )
    p.add_argument("gate", metavar="GATE", help="the gate id")
    p.add_argument("action", metavar="ACTION", choices=_ACTIONS, help=", ".join(_ACTIONS))
    p.add_argument("--lane", help="the lane (open-lane and release-lane only)")
    p.add_argument(
        "--once", action="store_true", help="open-lane: for one vehicle only, then back to normal"
    )
    p.add_argument("--reason", default="", help="why (required for open-lane)")
    p.add_argument("--operator", required=True, help="who gives the command")
    p.add_argument("--key", type=Path, required=True, help="central's private key (PEM)")
    p.add_argument("--site", required=True, help="the gate's site id")
    p.add_argument(
        "--expires",
        default="5min",
        metavar="DURATION",
        help="how long the command stays valid, e.g. 90s, 5min (default 5min, at most 1h)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the gate to accept or refuse the command (read from --db)",
    )
    p.add_argument(
        "--wait-timeout",
        type=float,
        default=WAIT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"with --wait: how long to wait for the gate's answer (default {WAIT_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--db",
        default=DEFAULT_DSN,
        metavar="DSN",
        help=f"with --wait: central's store, as given to `central run` (default {DEFAULT_DSN})",
    )
    broker_args(p)


def cmd_command(args: argparse.Namespace) -> int:
    name = "command"
    try:
        check_ids(site=args.site, gate=args.gate)
        try:
            lifetime = parse_duration(args.expires)
        except ValueError as exc:
            raise UsageError(f"--expires: {exc}") from None
        lifetime_ns = int(lifetime.total_seconds() * 1e9)
        if lifetime_ns <= 0 or lifetime_ns > MAX_COMMAND_LIFETIME_NS:
            raise UsageError(
                f"--expires {args.expires}: must be more than 0 and at most "
                f"{MAX_COMMAND_LIFETIME_NS // 10**9 // 60} min"
            )
        if args.action in _LANE_ACTIONS and not args.lane:
            raise UsageError(f"{args.action} needs --lane (the lane it acts on)")
        if args.action == "open-lane" and not args.reason.strip():
            raise UsageError("open-lane needs --reason (it is logged at the gate)")
        if args.action not in _LANE_ACTIONS and args.lane:
            raise UsageError(f"{args.action} applies to the whole gate: drop --lane")
        if args.once and args.action != "open-lane":
            raise UsageError("--once goes with open-lane only")
        if args.wait and not args.wait_timeout > 0:
            raise UsageError(f"--wait-timeout {args.wait_timeout:g}: must be more than 0")
        action = cast(CommandAction, "open-lane-once" if args.once else args.action)
        broker = broker_settings(args)
        key = pub.load_signing_key(args.key)
        try:
            command = SignedCommand.create(
                args.gate,
                action,
                lane=args.lane,
                reason=args.reason,
                operator=args.operator,
                now_ns=time.time_ns(),
                lifetime_ns=lifetime_ns,
            )
        except ProtocolError as exc:
            raise UsageError(str(exc)) from None
        payload = pub.signed_command(command, key)
    except (UsageError, pub.PublishError) as exc:
        return fail(name, str(exc))
    store: CentralStore | None = None
    since = 0
    if args.wait:
        try:
            store = open_store(args.db)
            since = store.head(args.gate)[0]  # the gate's reply comes after this
        except StoreError as exc:
            if store is not None:
                store.close()
            return fail(name, f"--db: {exc}", db=redact(args.db))
    try:
        message = pub.Outgoing(args.site, args.gate, "commands", payload, retain=False)
        try:
            asyncio.run(pub.publish(broker, [message], timeout=args.timeout))
        except pub.PublishError as exc:
            return fail(name, str(exc), command_id=command.id)
        print(command.id, flush=True)
        _log_published(args, command, pub.signing_key_id(key))
        if store is None:
            return 0
        return _await_reply(args, command, store, since)
    finally:
        if store is not None:
            store.close()


def _named(command: SignedCommand) -> dict[str, str]:
    """The fields that name ``command`` in each log line about it."""
    return {"command_id": command.id, "gate": command.gate}


def _log_published(args: argparse.Namespace, command: SignedCommand, key_id: str) -> None:
    fields = dataclasses.asdict(command)
    log.info(
        "command_published",
        **_named(command),
        site=args.site,
        **{name: fields[name] for name in _PUBLISHED_FIELDS},
        key_id=key_id,
    )


def _await_reply(
    args: argparse.Namespace, command: SignedCommand, store: CentralStore, since: int
) -> int:
    """Exit 0 when the gate accepted ``command``; 1 when it refused it or could not carry it
    out; 3 when central's store shows no answer within ``--wait-timeout``."""
    gate = args.gate
    try:
        reply = wait_for_reply(store, gate, command.id, after=since, timeout=args.wait_timeout)
    except StoreError as exc:
        return fail("command", f"--db: {exc}", db=redact(args.db), command_id=command.id)
    if reply is None:
        print(
            f"edgegate central command: no answer from gate {gate} to command {command.id} "
            f"within {args.wait_timeout:g} s (is the gate online, and is `edgegate central run "
            f"--db {redact(args.db)}` storing its events?)",
            file=sys.stderr,
        )
        log.error("command_unanswered", **_named(command))
        return 3
    if reply.outcome == "accepted":
        print(f"accepted by gate {gate} (seq {reply.seq})")
        log.info("command_accepted", **_named(command), seq=reply.seq)
        return 0
    what = "refused" if reply.outcome == "refused" else "accepted but could not carry out"
    print(
        f"edgegate central command: gate {gate} {what} command {command.id}: "
        f"{reply.code}: {reply.message} (seq {reply.seq})",
        file=sys.stderr,
    )
    log.error(
        f"command_{reply.outcome}",
        **_named(command),
        seq=reply.seq,
        code=reply.code,
        error=reply.message,
    )
    return 1
