"""Signed commands to a gate (open or release a lane, incident mode) and the gate's guard
against expired, replayed or misdirected ones. Pure: callers pass ``now_ns``."""

from __future__ import annotations

import heapq
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgegate.core.codec import ns_to_datetime
from edgegate.core.events import CommandAccepted
from edgegate.sync.envelope import (
    KIND_COMMAND,
    SignatureCode,
    SignatureError,
    check_int,
    check_str,
    open_signed,
    pack_fields,
    unpack_map,
)
from edgegate.sync.protocol import ProtocolError, check_id

CommandAction = Literal[
    "open-lane", "open-lane-once", "release-lane", "incident-on", "incident-off"
]
_ACTIONS: dict[object, CommandAction] = {
    "open-lane": "open-lane",
    "open-lane-once": "open-lane-once",
    "release-lane": "release-lane",
    "incident-on": "incident-on",
    "incident-off": "incident-off",
}
LANE_ACTIONS: frozenset[CommandAction] = frozenset({"open-lane", "open-lane-once", "release-lane"})
"""Actions on one lane (the command names it); the others apply to the whole gate."""
_OPENING_ACTIONS = frozenset({"open-lane", "open-lane-once"})
MAX_COMMAND_LIFETIME_NS = 3600 * 10**9
"""The longest a command may stay valid (``expires_at_ns - issued_at_ns``)."""
_COMMAND_ID = re.compile(r"[0-9a-f]{32}")
_COMMAND_KEYS = frozenset(
    {"id", "gate", "action", "lane", "reason", "operator", "issued_at_ns", "expires_at_ns"}
)
_MAX_REASON = 500
_MAX_OPERATOR = 64


@dataclass(frozen=True, slots=True)
class SignedCommand:
    """An operator's command to one gate (the body of a ``command`` envelope).

    ``id``: 32 lowercase hex digits (a uuid4), unique. ``open-lane`` (open and hold),
    ``open-lane-once`` (open for one vehicle) and ``release-lane`` (end a hold) name a
    ``lane``; the two openings need a non-empty ``reason``; incident mode is gate-wide (no
    lane). Valid from ``issued_at_ns``
    until (excluding) ``expires_at_ns``, at most ``MAX_COMMAND_LIFETIME_NS`` later.
    """

    id: str
    gate: str
    action: CommandAction
    lane: str | None
    reason: str
    operator: str
    issued_at_ns: int
    expires_at_ns: int

    def __post_init__(self) -> None:
        if type(self.id) is not str or not _COMMAND_ID.fullmatch(self.id):
            raise ProtocolError(f"id: {self.id!r} is not 32 lowercase hex digits")
        check_id(self.gate, "gate")
        if not isinstance(self.action, str) or self.action not in _ACTIONS:
            raise ProtocolError(
                f"action: {self.action!r} is not one of {', '.join(map(repr, _ACTIONS))}"
            )
        if self.action in LANE_ACTIONS:
            if self.lane is None:
                raise ProtocolError(f"lane: {self.action} needs the lane it acts on")
            check_id(self.lane, "lane")
            check_str(self.reason, "reason", _MAX_REASON, empty=self.action not in _OPENING_ACTIONS)
        else:
            if self.lane is not None:
                raise ProtocolError(f"lane: {self.action} applies to the whole gate, not a lane")
            check_str(self.reason, "reason", _MAX_REASON, empty=True)
        check_str(self.operator, "operator", _MAX_OPERATOR)
        issued = check_int(self.issued_at_ns, "issued_at_ns", 0)
        expires = check_int(self.expires_at_ns, "expires_at_ns", 0)
        if expires <= issued:
            raise ProtocolError("expires_at_ns: not after issued_at_ns")
        if expires - issued > MAX_COMMAND_LIFETIME_NS:
            raise ProtocolError(
                f"expires_at_ns: lifetime {(expires - issued) / 1e9:.0f} s exceeds "
                f"{MAX_COMMAND_LIFETIME_NS // 10**9} s"
            )

    @classmethod
    def create(
        cls,
        gate: str,
        action: CommandAction,
        *,
        lane: str | None = None,
        reason: str = "",
        operator: str,
        now_ns: int,
        lifetime_ns: int = 300 * 10**9,
    ) -> SignedCommand:
        """A new command with a fresh uuid4 id, valid from ``now_ns`` for ``lifetime_ns``."""
        return cls(
            uuid.uuid4().hex, gate, action, lane, reason, operator, now_ns, now_ns + lifetime_ns
        )

    def accepted(self, key_id: str) -> CommandAccepted:
        """The ``command.accepted`` a gate logs for this command, verified with ``key_id``."""
        return CommandAccepted(
            command_id=self.id,
            action=self.action,
            operator=self.operator,
            reason=self.reason,
            issued_at=ns_to_datetime(self.issued_at_ns),
            expires_at=ns_to_datetime(self.expires_at_ns),
            key_id=key_id,
            lane=self.lane,
        )


def encode_command(command: SignedCommand) -> bytes:
    return pack_fields(command)


def decode_command(body: bytes) -> SignedCommand:
    """The command in ``body`` (checked), else ``ProtocolError``."""
    doc = unpack_map(body, "command", _COMMAND_KEYS)
    action = _ACTIONS.get(doc["action"]) if type(doc["action"]) is str else None
    if action is None:
        raise ProtocolError(
            f"action: {doc['action']!r} is not one of {', '.join(map(repr, _ACTIONS))}"
        )
    return SignedCommand(
        doc["id"],
        doc["gate"],
        action,
        doc["lane"],
        doc["reason"],
        doc["operator"],
        doc["issued_at_ns"],
        doc["expires_at_ns"],
    )


RefusalCode = Literal[
    "unsigned", "forged", "expired", "replayed", "wrong-gate", "malformed", "not-yet-valid"
]
_SIGNATURE_REFUSALS: dict[SignatureCode, RefusalCode] = {
    "malformed": "malformed",
    "unsigned": "unsigned",
    "wrong-kind": "malformed",
    "unknown-key": "forged",
    "forged": "forged",
}


class CommandRefused(Exception):
    """A command the gate will not carry out; ``code`` is the short reason for the log."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: RefusalCode = code
        self.message = message

    @classmethod
    def from_error(cls, error: ProtocolError) -> CommandRefused:
        """The refusal for a payload that failed to open or decode: unknown-key counts as
        ``forged``, a wrong kind or a bad body as ``malformed``."""
        code = _SIGNATURE_REFUSALS[error.code] if isinstance(error, SignatureError) else "malformed"
        return cls(code, str(error))


DEFAULT_SKEW_NS = 30 * 10**9


class CommandGuard:
    """Refuses commands for another gate, expired, issued in the future (beyond ``skew_ns``
    of clock difference) or already seen. Pure: the caller passes ``now_ns``.

    Ids are remembered until their command's expiry plus ``skew_ns``, then forgotten; a
    command whose expiry is at or before the latest time forgotten up to is refused as
    expired, so a clock stepping back cannot make a forgotten id acceptable again. Memory is
    bounded by the commands issued within one lifetime. The memory does not survive a
    restart: the gate rebuilds it with ``remember`` from the commands in its log.
    """

    __slots__ = ("_by_expiry", "_horizon_ns", "_seen", "skew_ns")

    def __init__(self, *, skew_ns: int = DEFAULT_SKEW_NS) -> None:
        self.skew_ns = skew_ns
        self._seen: dict[str, int] = {}
        self._by_expiry: list[tuple[int, str]] = []
        self._horizon_ns = -1  # every id expiring at or before this has been forgotten

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, command: SignedCommand, gate_id: str, now_ns: int) -> None:
        """Accept ``command`` (and remember its id) or raise ``CommandRefused``."""
        self._prune(now_ns)
        if command.gate != gate_id:
            raise CommandRefused(
                "wrong-gate", f"command {command.id} is for gate {command.gate!r}, not {gate_id!r}"
            )
        if now_ns >= command.expires_at_ns:
            ago = (now_ns - command.expires_at_ns) / 1e9
            raise CommandRefused(
                "expired", f"command {command.id} expired {ago:.1f} s ago by this gate's clock"
            )
        if command.expires_at_ns <= self._horizon_ns:
            # The gate's clock stepped back: ids expiring this early are already forgotten.
            raise CommandRefused(
                "expired",
                f"command {command.id} expires before commands this gate no longer remembers "
                "(its clock stepped back)",
            )
        if command.issued_at_ns > now_ns + self.skew_ns:
            ahead = (command.issued_at_ns - now_ns) / 1e9
            raise CommandRefused(
                "not-yet-valid",
                f"command {command.id} issued {ahead:.1f} s in the future by this gate's clock "
                f"(allowed skew {self.skew_ns / 1e9:.0f} s)",
            )
        if command.id in self._seen:
            raise CommandRefused("replayed", f"command {command.id} was already received")
        self.remember(command.id, command.expires_at_ns)

    def remember(self, command_id: str, expires_at_ns: int) -> None:
        """Count ``command_id`` as seen (a command accepted, or read back from the log)."""
        if command_id not in self._seen and expires_at_ns > self._horizon_ns:
            self._seen[command_id] = expires_at_ns
            heapq.heappush(self._by_expiry, (expires_at_ns, command_id))

    def accept(
        self,
        payload: bytes,
        public_key: Ed25519PublicKey | Iterable[Ed25519PublicKey],
        gate_id: str,
        now_ns: int,
    ) -> SignedCommand:
        """Open, decode and check a ``commands`` payload; every refusal is ``CommandRefused``."""
        try:
            command = decode_command(open_signed(payload, KIND_COMMAND, public_key))
        except ProtocolError as exc:
            raise CommandRefused.from_error(exc) from exc
        self.check(command, gate_id, now_ns)
        return command

    def _prune(self, now_ns: int) -> None:
        horizon = now_ns - self.skew_ns
        if horizon <= self._horizon_ns:
            return
        self._horizon_ns = horizon
        heap = self._by_expiry
        while heap and heap[0][0] <= horizon:
            _, command_id = heapq.heappop(heap)
            del self._seen[command_id]
