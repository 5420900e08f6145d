"""``edgegate central blacklist propose|list|approve|dismiss|publish``: overstays to the blacklist.

``propose`` turns the overstays of central's park projections into proposals (one per stay,
:mod:`edgegate.central.store.blacklist`); an operator approves or dismisses each. The
decision is recorded in the store (who, when, why) before anything is published; an approval
then publishes a signed delta adding the plate to the blacklist to every gate
(:mod:`edgegate.central.blacklist`), with the key and broker options of
``publish-allowlist``. Exit 0 done, 1 decided but not (all) published, 2 bad input, an
unusable store, or a proposal that cannot be decided.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import unicodedata
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgegate.central import blacklist as bl
from edgegate.central import publish as pub
from edgegate.central.api import iso as _iso
from edgegate.central.store import CentralStore, StoreError, redact
from edgegate.central.store.blacklist import APPROVED, DISMISSED, STATES, Proposal
from edgegate.cli import central_park
from edgegate.cli.central_common import (
    UsageError,
    broker_args,
    broker_settings,
    check_ids,
    fail,
    open_existing,
    output_args,
    store_arg,
)
from edgegate.cli.central_park import _duration, _local
from edgegate.cli.commands import Subparsers, add_command
from edgegate.observability import get_logger

log = get_logger("cli.central")

_TEXT_MAX = 500
_COMMAND = "blacklist"


def register(central: Subparsers) -> None:
    """Add ``blacklist`` and its actions to ``edgegate central``."""
    parser = central.add_parser(
        _COMMAND,
        help="overstays to the blacklist: propose, list, approve, dismiss, publish",
        description="Vehicles inside past their permit's end or their category's dwell "
        "limit become proposals (`propose`); an operator approves (the plate is blacklisted "
        "at every gate by a signed delta) or dismisses each, once.",
    )
    actions = parser.add_subparsers(dest="blacklist_command", metavar="ACTION", required=True)

    propose = add_command(
        actions,
        "propose",
        cmd_propose,
        help="turn the overstays into proposals (one per stay; run it as often as you like)",
        description="New overstays become proposals; undecided ones get their dwell brought "
        "up to date; a proposal whose vehicle left is kept and marked as left.",
    )
    store_arg(propose)
    propose.add_argument(
        "--dwell-limit",
        action="append",
        default=[],
        metavar="CATEGORY=DURATION",
        help="central's dwell limit of a category, as for `central roll-call`",
    )
    propose.add_argument(
        "--auto-approve",
        action="append",
        default=[],
        metavar="CATEGORY",
        help="approve new proposals of this category at once (operator 'auto') and publish "
        "them (needs --key, --site and the broker options); repeat for several",
    )
    _publish_args(propose)

    listing = add_command(
        actions, "list", cmd_list, help="the proposals, with their evidence and decisions"
    )
    store_arg(listing)
    listing.add_argument("--state", choices=STATES, help="only proposals in this state")
    output_args(listing)

    for name, what in ((APPROVED, "approve"), (DISMISSED, "dismiss")):
        p = add_command(
            actions,
            what,
            cmd_decide,
            help=f"{what} a proposal (recorded with --operator and --reason first)"
            + (", then publish the blacklist entry to every gate" if name == APPROVED else ""),
        )
        p.add_argument("id", metavar="ID", help="the proposal's id (see `list`)")
        p.add_argument("--operator", required=True, help="who decides")
        p.add_argument("--reason", required=True, help="why")
        store_arg(p)
        if name == APPROVED:
            _publish_args(p)
        p.set_defaults(decision=name)

    again = add_command(
        actions,
        "publish",
        cmd_publish,
        help="publish what approvals have not published yet (after a broker failure)",
    )
    again.add_argument("ids", nargs="*", metavar="ID", help="these proposals (default: all)")
    store_arg(again)
    _publish_args(again)


def _publish_args(p: argparse.ArgumentParser) -> None:
    """``publish-allowlist``'s key, site, gate and broker options."""
    p.add_argument("--key", type=Path, help="central's private key (PEM)")
    p.add_argument("--site", help="the gates' site id")
    p.add_argument(
        "--gate",
        action="append",
        dest="gates",
        metavar="GATE",
        help="publish to this gate (repeat for several; default every gate central knows)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    broker_args(p)
    for action in p._actions:
        if action.dest == "broker":  # checked by _Publisher, with --key and --site
            action.required = False


# ------------------------------------------------------------------------------ helpers


def _text(flag: str, value: str) -> str:
    text = value.strip()
    if not text:
        raise UsageError(f"{flag}: must not be empty")
    if len(text) > _TEXT_MAX:
        raise UsageError(f"{flag}: at most {_TEXT_MAX} characters")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise UsageError(f"{flag}: contains a control character")
    return text


def _proposal_id(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise UsageError(
            f"proposal id {value[:40]!r}: expected a number (see `edgegate central blacklist list`)"
        )
    return int(value)


class _Publisher:
    """The checked publishing options: key, site, gates, broker."""

    def __init__(self, args: argparse.Namespace) -> None:
        missing = [f for f in ("key", "site", "broker") if getattr(args, f) is None]
        if missing:
            raise UsageError("publishing needs " + ", ".join(f"--{m}" for m in missing))
        check_ids(site=args.site, **{f"gate {g!r}": g for g in args.gates or ()})
        self.site: str = args.site
        self.gates: list[str] | None = args.gates
        self.timeout: float = args.timeout
        self.broker = broker_settings(args)
        self.key = pub.load_signing_key(args.key)

    def check_gates(self, store: CentralStore) -> None:
        if self.gates is None and not store.gate_states():
            raise UsageError("no gate known to the store yet: name the gates with --gate")

    def publish(self, store: CentralStore, proposal: Proposal) -> str | None:
        """Publish ``proposal``'s pending deltas; None when done, else what failed."""
        pending = proposal.pending
        if not pending:
            return None

        def send(messages: list[pub.Outgoing]) -> None:
            asyncio.run(pub.publish(self.broker, messages, timeout=self.timeout))

        try:
            bl.publish_approval(
                store, proposal, site=self.site, key=self.key, send=send, now_ns=time.time_ns()
            )
        except pub.PublishError as exc:
            log.error("blacklist_publish_failed", proposal=proposal.id, error=str(exc))
            return str(exc)
        shown = ", ".join(f"{p.gate} ({p.base_version} -> {p.version})" for p in pending)
        print(
            f"published blacklist entry {proposal.entry_id} ({proposal.plate}) as a signed "
            f"delta to {shown} (site {self.site}), key id {pub.signing_key_id(self.key)}"
        )
        bl.log_published(proposal, pending, self.site)
        return None

    def publish_all(self, store: CentralStore, proposals: list[Proposal]) -> list[str]:
        """Publish each proposal's pending deltas; what failed, as ``#ID: problem``."""
        failed = []
        for p in proposals:
            problem = self.publish(store, p)
            if problem is not None:
                failed.append(f"#{p.id}: {problem}")
        return failed


def _retry_hint(proposal_id: int) -> str:
    return (
        f"publish it with `edgegate central blacklist publish {proposal_id}` "
        "and the same key and broker options"
    )


# ------------------------------------------------------------------------------ propose


def cmd_propose(args: argparse.Namespace) -> int:
    name = f"{_COMMAND} propose"
    try:
        limits = central_park._dwell_limits(args.dwell_limit)
        auto = central_park._categories(args.auto_approve or None) or []
        publisher = _Publisher(args) if auto else None
        if not auto and (args.key or args.site or args.broker or args.gates):
            raise UsageError("--key, --site, --gate and --broker go with --auto-approve")
    except (UsageError, pub.PublishError) as exc:
        return fail(name, str(exc).replace("--category", "--auto-approve"))
    try:
        with open_existing(args.store) as store:
            if publisher is not None:
                publisher.check_gates(store)
            gates = None if publisher is None else publisher.gates
            created, left = store.propose_blacklist(
                time.time_ns(), limits, auto_approve=auto, gates=gates
            )
            new = store.blacklist_proposals(ids=created)
            print(
                f"{len(new)} new proposal{'s' if len(new) != 1 else ''}"
                f"{''.join(f', #{p.id} {p.plate} ({p.state})' for p in new)}; "
                f"{left} marked as left"
            )
            log.info("blacklist_proposed", created=created, left=left)
            approved = [p for p in new if p.state == APPROVED]
            for p in approved:
                _log_decision(p)
            failed = [] if publisher is None else publisher.publish_all(store, approved)
    except (UsageError, StoreError) as exc:
        return fail(name, str(exc), db=redact(args.store))
    if failed:
        print(
            f"edgegate central {name}: approved automatically but not published: "
            f"{'; '.join(failed)}; publish them with `edgegate central blacklist publish`",
            file=sys.stderr,
        )
        return 1
    return 0


# ------------------------------------------------------------------------------ decide


def _log_decision(p: Proposal) -> None:
    bl.log_decision(p)


def cmd_decide(args: argparse.Namespace) -> int:
    what = "approve" if args.decision == APPROVED else "dismiss"
    name = f"{_COMMAND} {what}"
    try:
        proposal_id = _proposal_id(args.id)
        operator = _text("--operator", args.operator)
        reason = _text("--reason", args.reason)
        publisher = _Publisher(args) if args.decision == APPROVED else None
    except (UsageError, pub.PublishError) as exc:
        return fail(name, str(exc))
    try:
        with open_existing(args.store) as store:
            if publisher is not None:
                publisher.check_gates(store)
            decided = store.decide_blacklist(
                proposal_id,
                args.decision,
                operator=operator,
                reason=reason,
                gates=None if publisher is None else publisher.gates,
            )
            _log_decision(decided)
            print(f"proposal {decided.id} ({decided.plate}) {decided.state} by {operator}")
            problem = None if publisher is None else publisher.publish(store, decided)
    except (UsageError, StoreError) as exc:
        return fail(name, str(exc), db=redact(args.store))
    if problem is not None:
        print(
            f"edgegate central {name}: the approval is recorded but was not published: "
            f"{problem}; {_retry_hint(proposal_id)}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    name = f"{_COMMAND} publish"
    try:
        ids = [_proposal_id(v) for v in args.ids]
        publisher = _Publisher(args)
    except (UsageError, pub.PublishError) as exc:
        return fail(name, str(exc))
    try:
        with open_existing(args.store) as store:
            chosen = store.blacklist_proposals(ids=ids) if ids else store.blacklist_proposals()
            unknown = sorted(set(ids) - {p.id for p in chosen})
            if unknown:
                raise UsageError(f"no proposal {', '.join(map(str, unknown))}")
            for p in chosen:
                if p.state != APPROVED:
                    if ids:
                        raise UsageError(f"proposal {p.id} is {p.state}: nothing to publish")
                    continue
                if not p.pending and ids:
                    print(f"proposal {p.id}: every delta is published already")
            failed = publisher.publish_all(store, [p for p in chosen if p.state == APPROVED])
    except (UsageError, StoreError) as exc:
        return fail(name, str(exc), db=redact(args.store))
    if failed:
        print(f"edgegate central {name}: not published: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------ list


def cmd_list(args: argparse.Namespace) -> int:
    name = f"{_COMMAND} list"
    try:
        zone = central_park._zone(args.timezone)
    except UsageError as exc:
        return fail(name, str(exc))
    try:
        with open_existing(args.store) as store:
            found = store.blacklist_proposals(state=args.state)
    except StoreError as exc:
        return fail(name, str(exc), db=redact(args.store))
    if args.json:
        doc = {"proposals": [_proposal_json(p) for p in found]}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    table = Table(title=f"blacklist proposals ({zone.key})", title_justify="left", expand=False)
    for col in ("#", "state", "plate", "category", "entered at", "entered", "dwell", "past"):
        table.add_column(col, no_wrap=True)
    table.add_column("left")
    table.add_column("decision")
    for p in found:
        dwell = _duration(timedelta(microseconds=p.dwell_ns // 1000))
        left = "-" if p.left_at_ns is None else f"{_local(p.left_at_ns, zone)} at {p.left_gate}"
        decision = ""
        if p.operator is not None:
            decision = escape(f"{p.operator} {_local(p.decided_at_ns, zone)}: {p.reason}")
            if p.pending:
                decision += f" [red]({len(p.pending)} gate(s) not published)[/red]"
        table.add_row(
            str(p.id),
            p.state,
            escape(p.plate),
            "unknown" if p.category is None else str(p.category),
            f"{escape(p.gate)} seq {p.seq}",
            _local(p.entered_at_ns, zone),
            dwell,
            f"{p.limit} {_local(p.deadline_ns, zone)}",
            escape(left),
            decision,
        )
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    if found:
        console.print(table)
    else:
        console.print("no proposals" + (f" {args.state}" if args.state else ""))
    return 0


def _proposal_json(p: Proposal) -> dict[str, Any]:
    return {
        "id": p.id,
        "state": p.state,
        "plate": p.plate,
        "category": None if p.category is None else str(p.category),
        "entry_gate": p.gate,
        "entry_seq": p.seq,
        "entered_at": _iso(p.entered_at_ns),
        "dwell_s": p.dwell_ns // 10**9,
        "limit": p.limit,
        "deadline": _iso(p.deadline_ns),
        "proposed_at": _iso(p.proposed_at_ns),
        "left": p.left,
        "left_at": _iso(p.left_at_ns),
        "left_gate": p.left_gate,
        "operator": p.operator,
        "reason": p.reason,
        "decided_at": _iso(p.decided_at_ns),
        "blacklist_entry": p.entry_id if p.state == APPROVED else None,
        "publications": [
            {
                "gate": u.gate,
                "base_version": u.base_version,
                "version": u.version,
                "published_at": _iso(u.published_at_ns),
            }
            for u in p.publications
        ],
    }
