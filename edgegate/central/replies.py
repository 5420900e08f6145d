"""A gate's answer to a central command, as central learns it: from the gate's own log.

A gate logs every command it receives: ``command.accepted`` before carrying it out (then
``command.failed`` if it cannot, e.g. an unknown lane), or ``command.refused`` with the reason
(forged, expired, replayed, wrong gate...). Its uplink hands those events to central's sink
like any other, and the sink stores them: ``wait_for_reply`` reads central's store for the
events naming one command id. No reply topic is needed, and a reply is exactly what the gate
logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from edgegate.central.store import CentralStore
from edgegate.core.events import (
    CommandAccepted,
    CommandFailed,
    CommandRefused,
    EventDecodeError,
    decode,
)

_TYPES = frozenset({CommandAccepted.TYPE, CommandRefused.TYPE, CommandFailed.TYPE})

SETTLE_S = 1.0
"""After ``command.accepted``, how long a ``command.failed`` for it is still waited for: the
gate logs it right after the acceptance when it cannot carry the command out."""


@dataclass(frozen=True, slots=True)
class CommandReply:
    """What the gate logged about a command at ``seq``: ``accepted``, ``refused`` or
    ``failed`` (accepted but not carried out), with the gate's code and message."""

    outcome: Literal["accepted", "refused", "failed"]
    seq: int
    code: str = ""
    message: str = ""


def wait_for_reply(
    store: CentralStore,
    gate: str,
    command_id: str,
    *,
    after: int,
    timeout: float,
    poll: float = 0.2,
    settle: float = SETTLE_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> CommandReply | None:
    """The gate's reply to ``command_id`` among ``gate``'s events stored after seq ``after``
    (central's head before the command was sent), polling until ``timeout`` seconds have
    passed; None if none came. The first reply counts: a copy of the command delivered
    twice (QoS 1) is refused as replayed after it was accepted."""
    deadline = clock() + timeout
    accepted: CommandReply | None = None
    settled_at = 0.0
    while True:
        for row in store.events(gate, after):
            after = row[0]
            if row[4] not in _TYPES:
                continue
            try:
                event = decode(row[4], row[6], row[7], row[5])
            except EventDecodeError:
                continue
            assert isinstance(event, CommandAccepted | CommandRefused | CommandFailed)
            if event.command_id != command_id:
                continue
            if isinstance(event, CommandFailed):
                return CommandReply("failed", row[0], event.code, event.message)
            if accepted is None:
                if isinstance(event, CommandRefused):
                    return CommandReply("refused", row[0], event.code, event.message)
                accepted = CommandReply("accepted", row[0])
                settled_at = min(clock() + settle, deadline)
        now = clock()
        if accepted is not None and now >= settled_at:
            return accepted
        if now >= deadline:
            return accepted
        sleep(poll)
