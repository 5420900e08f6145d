"""The gate's signed downlink: allow-list publications and commands from central.
Over 600 lines as one module: both topics share the key ring, the log-then-act path and the
restore from the log.

``Downlink`` takes the payloads the uplink's MQTT client receives on the gate's ``allowlist``
and ``commands`` topics. Every outcome is an event in the log: a publication is applied (the
allow-list service logs ``allowlist.updated`` with the publication's version, source
``central:<key id>``) or refused (``allowlist.refused`` with the reason; on a version gap also
``allowlist.snapshot-requested`` before the request goes out); a command is refused
(``command.refused``) or logged as ``command.accepted`` before it is carried out
(log-then-act), and ``command.failed`` if the gate cannot carry it out.

Revoked admissions (offline policy). After a publication is applied, entries the gate
admitted with a credential that central had revoked are reported as
``admission.revoked-credential``, one per decision. An admission is an ``access.decided`` of
direction entry, taken with an older list than the publication, with a credential, and either
allowed or asking for confirmation and then opened for (a guard confirmed it). Its credential
counts as revoked when the new list no longer holds it (``removed``), holds it with a window
that does not cover the decision time (``expired`` / ``not-yet-valid``), no longer for this
gate (``gate-withdrawn``), or blacklists the plate at the decision time (``blacklisted``).

When did central revoke it? The publication only says that central's list said so when it
was issued (``revoked_at`` = its ``issued_at``):

- A publication of the next version after the gate's (current + 1, delta or snapshot)
  carries one step of central's changes, which central publishes as it makes them: an
  admission is reported when it was decided at or after ``revoked_at`` (``certain``).
  Normal online operation reports nothing: the gate applies a publication within moments of
  its issue, before any decision could follow it.
- A publication that skips versions replaces publications the gate missed (it was offline, or
  messages were lost): the revocation happened somewhere after the gate's list was issued
  (``revoked_after``, the list's ``updated_at``) and by ``revoked_at``. Every admission decided
  after ``revoked_after`` is reported; ``certain`` only if decided at or after ``revoked_at``.
  The others may have preceded the revocation (central can tell from its own records).

Each decision is reported once (decisions already reported are skipped). The scan reads only
the events logged since ``revoked_after`` (or ``revoked_at``) less a margin for clock jitter,
found by binary search on the log's wall times. The reports are appended right after the
update commits, in one transaction; a crash between the two loses them (milliseconds).

A tampered allow-list (one that failed its integrity check when the gate started: see
``edgegate.allowlist.service``) is replaced by the next valid snapshot of its version or a
newer one (the retained snapshot of the same version too, which is otherwise no news), and
``on_connected`` asks central for a snapshot after each connect until one has replaced it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgegate.allowlist.importer import Delta
from edgegate.allowlist.service import AllowListService, UpdateResult
from edgegate.core.allowlist import AllowList, AllowListError
from edgegate.core.clock import Clock
from edgegate.core.codec import datetime_to_ns, ns_to_datetime
from edgegate.core.domain import (
    Appointment,
    Credential,
    CredentialKind,
    Direction,
)
from edgegate.core.events import (
    AccessDecided,
    AllowListRefused,
    BarrierCommand,
    BarrierCommanded,
    CommandAccepted,
    CommandFailed,
    CommandRefused,
    Event,
    EventDecodeError,
    GateMode,
    ModeSource,
    RevokedCredentialAdmission,
    SnapshotRequested,
    VehiclePassed,
    decode,
)
from edgegate.log import EventLog, LogError, LogReader
from edgegate.observability import get_logger
from edgegate.sync import signing
from edgegate.sync.protocol import ProtocolError, SnapshotRequest
from edgegate.sync.signing import (
    KIND_ALLOWLIST,
    LANE_ACTIONS,
    MAX_COMMAND_LIFETIME_NS,
    AllowListPublication,
    CommandGuard,
    SignatureError,
    SignedCommand,
)

log = get_logger("downlink")

MAX_REFUSED_PAYLOAD = 4096
"""Bytes of a refused command kept in its ``command.refused`` event."""
SNAPSHOT_REQUEST_INTERVAL_NS = 30 * 10**9
"""A snapshot request for the same version is not repeated sooner (a burst of gap deltas)."""
CLOCK_MARGIN_NS = 10 * 60 * 10**9
"""Scans start this much before the time they need: wall times in the log may wobble."""
RESTORE_SLACK_NS = 24 * 3600 * 10**9
"""``restore`` reads the accepted commands of this much longer than a command can live, so a
wall clock stepped back by up to this much still finds every command it must remember."""

_DECIDED = AccessDecided.TYPE
_PASSED = VehiclePassed.TYPE
_COMMANDED = BarrierCommanded.TYPE
_REPORTED = RevokedCredentialAdmission.TYPE


class GateControl(Protocol):
    """What central commands act on; implemented by the daemon
    (``edgegate.daemon.control.GateController``)."""

    @property
    def mode(self) -> GateMode:
        """The gate's mode now (incident while incident mode is on)."""
        ...

    def open_lane(self, lane_id: str, operator: str, reason: str) -> None:
        """Open and hold ``lane_id``; ``KeyError`` (or ``ValueError``) for an unknown lane."""
        ...

    def open_lane_once(self, lane_id: str, operator: str, reason: str) -> None:
        """Open ``lane_id`` for one vehicle, then back to normal; ``KeyError`` as above."""
        ...

    def release_lane(self, lane_id: str, operator: str, reason: str) -> None:
        """End a hold of ``lane_id`` (it closes once clear); ``KeyError`` as above."""
        ...

    async def set_incident(
        self,
        on: bool,
        *,
        source: ModeSource,
        operator: str,
        reason: str,
        command_id: str | None = None,
    ) -> int | None:
        """Incident mode on or off for the gate: ``mode.changed`` logged durably before any
        lane is told (its seq; None when the gate is in that mode already, nothing logged);
        ``LogError`` when it cannot be logged (nothing done)."""
        ...


SnapshotRequester = Callable[[SnapshotRequest], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class AllowListOutcome:
    """What ``on_allowlist`` did: ``applied`` (with the update), ``redelivered`` (no news,
    nothing logged: the very publication last applied or refused as stale, again; or a
    publication not newer than the gate's list and issued no later than it, such as the
    retained snapshot under later deltas, or the one applied, after a restart), or refused
    with ``code``."""

    code: str  # "applied", "redelivered" or the refusal code
    update: UpdateResult | None = None
    reported: int = 0  # admission.revoked-credential events appended

    @property
    def applied(self) -> bool:
        return self.code == "applied"


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What ``on_command`` did: ``done``, ``failed`` (accepted, not carried out) or the
    refusal code."""

    code: str
    command_id: str | None = None


class Downlink:
    """Verifies and carries out what central sends one gate.

    ``central_keys``: the pinned central public key, or several during a key rotation.
    ``request_snapshot`` sends a ``SnapshotRequest`` on the gate's ``requests`` topic.
    Publications are handled one at a time, commands too, each in arrival order.
    """

    def __init__(
        self,
        gate_id: str,
        central_keys: Ed25519PublicKey | Iterable[Ed25519PublicKey],
        allowlist: AllowListService,
        event_log: EventLog,
        control: GateControl,
        clock: Clock,
        request_snapshot: SnapshotRequester,
        *,
        guard: CommandGuard | None = None,
    ) -> None:
        keys = [central_keys] if isinstance(central_keys, Ed25519PublicKey) else list(central_keys)
        if not keys:
            raise ValueError("no central public key: the downlink would refuse everything")
        self.gate_id = gate_id
        self.keys: tuple[Ed25519PublicKey, ...] = tuple(keys)
        self.allowlist = allowlist
        self.event_log = event_log
        self.control = control
        self.clock = clock
        self.request_snapshot = request_snapshot
        self.guard = guard if guard is not None else CommandGuard()
        self._allowlist_lock = asyncio.Lock()
        # SHA-256 of the last publication applied or refused as stale: the broker delivers
        # the retained snapshot again at every reconnect, and it is no news the second time.
        self._last_publication: bytes | None = None
        self._command_lock = asyncio.Lock()
        self._last_request: tuple[int, int] | None = None  # (have_version, mono_ns)
        #: What the latest allow-list payload came to (None before the first).
        self.last_allowlist: AllowListOutcome | None = None

    # --- start-up -------------------------------------------------------------------------

    async def restore(self, log_path: str | Path | None = None) -> int:
        """Remember the commands the log shows accepted and not yet expired, so a replay is
        refused after a restart too. Call before handling commands; returns how many."""
        path = Path(log_path) if log_path is not None else self.event_log.path
        now = self.clock.wall_ns()
        skew = self.guard.skew_ns
        since = now - MAX_COMMAND_LIFETIME_NS - skew - RESTORE_SLACK_NS
        found = await asyncio.to_thread(_accepted_commands, path, since)
        count = 0
        for command_id, expires_ns in found:
            if expires_ns > now - skew:
                self.guard.remember(command_id, expires_ns)
                count += 1
        log.info("downlink_restored", commands=count)
        return count

    # --- allow-lists ----------------------------------------------------------------------

    async def on_allowlist(self, payload: bytes) -> None:
        """The ``allowlist`` topic's handler (an uplink ``Handler``): ``receive_allowlist``."""
        await self.receive_allowlist(payload)

    async def receive_allowlist(self, payload: bytes) -> AllowListOutcome:
        """Verify and apply (or refuse, logged) one ``allowlist`` payload. Never raises for
        bad input; ``LogError`` if the log cannot be written."""
        async with self._allowlist_lock:
            self.last_allowlist = await self._on_allowlist(bytes(payload))
            return self.last_allowlist

    async def _on_allowlist(self, payload: bytes) -> AllowListOutcome:
        current = self.allowlist.view.version
        try:
            pub, key = await asyncio.to_thread(_open_publication, payload, self.keys)
        except SignatureError as exc:
            return await self._refuse_list(payload, exc.code, str(exc), current)
        except ProtocolError as exc:
            return await self._refuse_list(
                payload, "malformed", f"malformed publication: {exc}", current
            )
        opened = (pub, key)
        disposition = pub.disposition(current)
        if self.allowlist.view.tampered and pub.kind == "snapshot" and pub.version == current:
            disposition = "apply"  # the same version, untampered
        if disposition == "stale":
            digest = await _sha256(payload)
            held_since = self.allowlist.view.updated_at
            if digest == self._last_publication or (
                # Issued no later than the list the gate holds: superseded by it, or that very
                # publication (a restart forgot the digest). Only a stale version issued
                # after the gate's list (central went back) is news.
                held_since is not None and ns_to_datetime(pub.issued_at_ns) <= held_since
            ):
                log.info("allowlist_redelivered", kind=pub.kind, version=pub.version)
                return AllowListOutcome("redelivered")
            self._last_publication = digest
            what = f"{pub.kind} version {pub.version}"
            return await self._refuse_list(
                payload,
                "stale",
                f"{what} is not newer than this gate's version {current}",
                current,
                opened,
                digest,
            )
        if disposition == "gap":
            message = f"delta {pub.base_version}->{pub.version} does not apply on version {current}"
            outcome = await self._refuse_list(payload, "gap", message, current, opened)
            await self._ask_snapshot(current, f"version gap: have {current}, {message}")
            return outcome

        try:
            # Decoded only now: a stale snapshot of a million entries costs no decoding.
            content = await asyncio.to_thread(_content, pub)
        except ProtocolError as exc:
            message = f"malformed {pub.kind} {pub.version}: {exc}"
            return await self._refuse_list(payload, "malformed", message, current, opened)
        old_updated_at = self.allowlist.view.updated_at
        issued_at = ns_to_datetime(pub.issued_at_ns)
        source = f"central:{key}"
        try:
            if isinstance(content, Delta):
                update = await self.allowlist.apply_delta(
                    content.upserts,
                    content.removals,
                    source=source,
                    version=pub.version,
                    updated_at=issued_at,
                )
            else:
                update = await self.allowlist.replace(
                    content, source=source, version=pub.version, updated_at=issued_at
                )
        except AllowListError as exc:
            return await self._refuse_list(
                payload, "invalid", f"{pub.kind} {pub.version}: {exc}", current, opened
            )
        # The next version: one step of central's changes, revoked when issued. Skipping
        # versions: revoked at some time after the gate's list was issued (any time if unknown).
        revoked_after: datetime | None = None
        if pub.version != current + 1:
            revoked_after = old_updated_at or ns_to_datetime(0)
        reported = await self._report_revoked(pub, revoked_after)
        self._last_publication = await _sha256(payload)
        return AllowListOutcome("applied", update, reported)

    async def _refuse_list(
        self,
        payload: bytes,
        code: str,
        message: str,
        current: int,
        opened: tuple[AllowListPublication, str] | None = None,
        digest: bytes | None = None,
    ) -> AllowListOutcome:
        """Log the refusal of a publication (``opened``: it and its key id, once verified;
        ``digest``: its SHA-256 if already computed)."""
        pub = None if opened is None else opened[0]
        key_id = _claimed(payload).get("key_id") if opened is None else opened[1]
        if digest is None:
            digest = await _sha256(payload)
        event = AllowListRefused(
            code=code,
            message=message,
            current_version=current,
            publication_kind=None if pub is None else pub.kind,
            version=None if pub is None else pub.version,
            base_version=None if pub is None else pub.base_version,
            issued_at=None if pub is None else ns_to_datetime(pub.issued_at_ns),
            key_id=key_id,
            payload_size=len(payload),
            payload_sha256=digest.hex(),
        )
        seq = await self.event_log.append(event)
        log.warning("allowlist_refused", seq=seq, code=code, error=message)
        return AllowListOutcome(code)

    async def on_connected(self) -> None:
        """After each connect (an uplink connect hook): while the allow-list is tampered, ask
        central for a snapshot."""
        view = self.allowlist.view
        if view.tampered:
            await self._ask_snapshot(
                view.version, "the stored allow-list failed its integrity check (tampered)"
            )

    async def _ask_snapshot(self, have_version: int, reason: str) -> None:
        now = self.clock.mono_ns()
        last = self._last_request
        if (
            last is not None
            and last[0] == have_version
            and now - last[1] < SNAPSHOT_REQUEST_INTERVAL_NS
        ):
            log.info("snapshot_request_skipped", have_version=have_version, reason="recent")
            return
        reason = reason[:256]
        request = SnapshotRequest(self.gate_id, have_version, reason)
        await self.event_log.append(SnapshotRequested(have_version=have_version, reason=reason))
        try:
            await self.request_snapshot(request)
        except Exception as exc:  # the link may be down: the next gap asks again
            log.error("snapshot_request_failed", have_version=have_version, error=repr(exc))
            return
        self._last_request = (have_version, now)

    async def _report_revoked(
        self, pub: AllowListPublication, revoked_after: datetime | None
    ) -> int:
        """Append one ``admission.revoked-credential`` per admission the new list revokes."""
        # Decisions taken with the old list are submitted before the list swap; this no-op
        # in the writer's order makes sure they are committed before the scan reads.
        await self.event_log.run_in_writer(lambda _conn: None)
        revoked_at_ns = pub.issued_at_ns
        since_ns = revoked_at_ns if revoked_after is None else datetime_to_ns(revoked_after)
        admissions = await asyncio.to_thread(
            _admissions_since, self.event_log.path, since_ns, pub.version
        )
        view = self.allowlist.view
        reports: list[Event] = []
        for a in admissions:
            if a.decided_ns < since_ns:
                continue
            found = _revocation(view, a, self.gate_id)
            if found is None:
                continue
            basis, detail = found
            reports.append(a.report(basis, detail, revoked_at_ns, revoked_after, pub.version))
        if reports:
            seqs = await self.event_log.append_group(lambda _first: reports)
            log.warning(
                "revoked_credential_admissions",
                count=len(reports),
                first_seq=seqs[0],
                allowlist_version=pub.version,
            )
        return len(reports)

    # --- commands -------------------------------------------------------------------------

    async def on_command(self, payload: bytes) -> None:
        """The ``commands`` topic's handler (an uplink ``Handler``): ``receive_command``."""
        await self.receive_command(payload)

    async def receive_command(self, payload: bytes) -> CommandOutcome:
        """Verify one ``commands`` payload; refuse it (logged) or log it accepted and carry it
        out. Never raises for bad input; ``LogError`` if the log cannot be written (the
        command is then not carried out)."""
        async with self._command_lock:
            return await self._on_command(bytes(payload))

    async def _on_command(self, payload: bytes) -> CommandOutcome:
        now = self.clock.wall_ns()
        try:
            command = self.guard.accept(payload, self.keys, self.gate_id, now)
        except signing.CommandRefused as exc:
            claimed = _claimed(payload, command=True)
            command_id = claimed.get("id")
            event = CommandRefused(
                code=exc.code,
                message=exc.message,
                command_id=command_id,
                action=claimed.get("action"),
                key_id=claimed.get("key_id"),
                payload=payload[:MAX_REFUSED_PAYLOAD],
                truncated=len(payload) > MAX_REFUSED_PAYLOAD,
            )
            seq = await self.event_log.append(event)
            log.warning("command_refused", seq=seq, code=exc.code, error=exc.message)
            return CommandOutcome(exc.code, command_id)
        key = _claimed(payload).get("key_id") or ""
        accepted = command.accepted(key_id=key)
        try:
            seq = await self.event_log.append(accepted)
        except LogError:
            # Log-then-act: not logged, not done. Its id stays remembered: central reissues.
            log.error("command_not_logged", command_id=command.id, action=command.action)
            raise
        log.info("command_accepted", seq=seq, command_id=command.id, action=command.action)
        return await self._carry_out(command)

    async def _carry_out(self, command: SignedCommand) -> CommandOutcome:
        operator = f"central:{command.operator}"
        try:
            if command.action in LANE_ACTIONS:
                assert command.lane is not None
                act = {
                    "open-lane": self.control.open_lane,
                    "open-lane-once": self.control.open_lane_once,
                    "release-lane": self.control.release_lane,
                }[command.action]
                act(command.lane, operator, command.reason)
            else:
                # The control logs mode.changed before any lane is told (a repeated command
                # for the mode the gate is in changes no mode).
                await self.control.set_incident(
                    command.action == "incident-on",
                    source=ModeSource.CENTRAL,
                    operator=operator,
                    reason=command.reason,
                    command_id=command.id,
                )
        except LogError:
            # Log-then-act: not logged, not done (as for command.accepted above).
            log.error("mode_change_not_logged", command_id=command.id, action=command.action)
            raise
        except Exception as exc:
            if isinstance(exc, KeyError):
                code, message = "unknown-lane", str(exc.args[0]) if exc.args else repr(exc)
            elif isinstance(exc, ValueError):
                code, message = "invalid", str(exc)
            else:
                code, message = "error", repr(exc)
            seq = await self.event_log.append(
                CommandFailed(
                    lane=command.lane,
                    command_id=command.id,
                    action=command.action,
                    code=code,
                    message=message,
                )
            )
            log.error("command_failed", seq=seq, command_id=command.id, code=code, error=message)
            return CommandOutcome("failed", command.id)
        return CommandOutcome("done", command.id)


# --- helpers (pure, or run in a worker thread) -----------------------------------------------


def _open_publication(
    payload: bytes, keys: Sequence[Ed25519PublicKey]
) -> tuple[AllowListPublication, str]:
    """The verified publication and the id of the key that signed it, else ``ProtocolError``
    (``SignatureError`` for the envelope). Hashes the whole payload: run in a thread."""
    body = signing.open_signed(payload, KIND_ALLOWLIST, keys)
    publication = signing.decode_publication(body)
    return publication, _claimed(payload).get("key_id") or ""


def _content(publication: AllowListPublication) -> list[Credential] | Delta:
    """A snapshot's credentials or a delta's changes, else ``ProtocolError`` (in a thread)."""
    if publication.kind == "snapshot":
        return signing.snapshot_entries(publication.content)
    return signing.delta_changes(publication.content)


def _claimed(payload: bytes, *, command: bool = False) -> dict[str, str]:
    """What an envelope says about itself (``key_id``; with ``command``, the body's ``id`` and
    ``action``), unverified and best effort: for refusal events and provenance."""
    out: dict[str, str] = {}
    try:
        doc = msgpack.unpackb(
            payload, raw=False, max_str_len=256, max_array_len=16, max_map_len=8, max_ext_len=0
        )
    except Exception:
        return out
    if type(doc) is not dict:
        return out
    kid = doc.get("key_id")
    if type(kid) is str:
        out["key_id"] = kid[:64]
    body = doc.get("body")
    if command and type(body) is bytes:
        try:
            inner = msgpack.unpackb(
                body, raw=False, max_str_len=4096, max_array_len=0, max_map_len=16, max_ext_len=0
            )
        except Exception:
            return out
        if type(inner) is dict:
            for field in ("id", "action"):
                value = inner.get(field)
                if type(value) is str:
                    out[field] = value[:64]
    return out


def _accepted_commands(path: Path, since_ns: int) -> list[tuple[str, int]]:
    """(command id, expiry ns) of the ``command.accepted`` events logged since ``since_ns``."""
    with LogReader(path, live=True) as reader:
        start = reader.first_seq_since(since_ns)
        rows = list(reader.of_types((CommandAccepted.TYPE,), from_seq=start))
    out: list[tuple[str, int]] = []
    for _, _, _, lane, version, data in rows:
        try:
            event = decode(CommandAccepted.TYPE, version, data, lane)
        except EventDecodeError as exc:
            log.error("accepted_command_unreadable", error=str(exc))
            continue
        assert isinstance(event, CommandAccepted)
        out.append((event.command_id, datetime_to_ns(event.expires_at)))
    return out


@dataclass(frozen=True, slots=True)
class _Admission:
    seq: int
    lane: str | None
    decided_ns: int
    plate: str
    kind: CredentialKind
    credential_id: str

    def report(
        self,
        basis: str,
        detail: str,
        revoked_at_ns: int,
        revoked_after: datetime | None,
        allowlist_version: int,
    ) -> RevokedCredentialAdmission:
        """This admission reported as made with a credential revoked by ``revoked_at_ns``
        (and after ``revoked_after`` when known: see the module's docstring)."""
        return RevokedCredentialAdmission(
            lane=self.lane,
            decision_seq=self.seq,
            plate=self.plate,
            credential_kind=str(self.kind),
            credential_id=self.credential_id,
            decided_at=ns_to_datetime(self.decided_ns),
            revoked_at=ns_to_datetime(revoked_at_ns),
            revoked_after=revoked_after,
            certain=self.decided_ns >= revoked_at_ns,
            basis=basis,
            detail=detail,
            allowlist_version=allowlist_version,
        )


def _admissions_since(path: Path, since_ns: int, version: int) -> list[_Admission]:
    """Entries admitted with an allow-list older than ``version``, logged from about
    ``since_ns`` (less ``CLOCK_MARGIN_NS``) to the head, not yet reported."""
    with LogReader(path, live=True) as reader:
        start = reader.first_seq_since(since_ns - CLOCK_MARGIN_NS)
        types = (_DECIDED, _PASSED, _COMMANDED, _REPORTED)
        rows = list(reader.of_types(types, from_seq=start))
    decided: dict[int, tuple[AccessDecided, int]] = {}
    opened: set[int] = set()  # decisions a barrier opened for, or a vehicle passed on
    reported: set[int] = set()
    for seq, wall_ns, type_, lane, ver, data in rows:
        try:
            event = decode(type_, ver, data, lane)
        except EventDecodeError as exc:
            log.error("event_unreadable", seq=seq, type=type_, error=str(exc))
            continue
        if isinstance(event, AccessDecided):
            if (
                event.direction is Direction.ENTRY
                and event.verdict in ("allow", "confirm")
                and event.credential_kind is not None
                and event.credential_id is not None
                and event.allowlist_version < version
            ):
                decided[seq] = (event, wall_ns)
        elif isinstance(event, VehiclePassed):
            if event.decision_seq is not None:
                opened.add(event.decision_seq)
        elif isinstance(event, BarrierCommanded):
            if event.command is BarrierCommand.OPEN and event.cause_seq is not None:
                opened.add(event.cause_seq)
        elif isinstance(event, RevokedCredentialAdmission):
            reported.add(event.decision_seq)
    out: list[_Admission] = []
    for seq, (event, wall_ns) in decided.items():
        if seq in reported or (event.verdict == "confirm" and seq not in opened):
            continue
        assert event.credential_kind is not None and event.credential_id is not None
        try:
            kind = CredentialKind(event.credential_kind)
        except ValueError:
            continue
        plate = event.matched_plate or event.plate
        out.append(_Admission(seq, event.lane, wall_ns, plate, kind, event.credential_id))
    return out


def _window(credential: Credential) -> tuple[datetime, datetime | None]:
    if isinstance(credential, Appointment):
        return credential.window_start, credential.window_end
    return credential.valid_from, credential.valid_until


def _revocation(view: AllowList, admission: _Admission, gate_id: str) -> tuple[str, str] | None:
    """(basis, detail) if the list ``view`` revokes ``admission``'s credential at its
    decision time, else None."""
    at = ns_to_datetime(admission.decided_ns)
    credential = view.get(admission.kind, admission.credential_id)
    plate = credential.plate if credential is not None else admission.plate
    for entry in view.exact(plate).blacklist:
        if entry.valid_at(at):
            return "blacklisted", f"blacklist {entry.id} ({entry.reason}) from {entry.valid_from}"
    if credential is None:
        return "removed", ""
    start, end = _window(credential)
    if at < start:
        return "not-yet-valid", f"valid from {start.isoformat()}"
    if end is not None and at >= end:
        return "expired", f"valid until {end.isoformat()}"
    gates: frozenset[str] = getattr(credential, "gates", frozenset())
    if gates and gate_id not in gates:
        return "gate-withdrawn", f"valid at {', '.join(sorted(gates))}"
    return None


async def _sha256(payload: bytes) -> bytes:
    """SHA-256 of a publication; off the event loop when it is large (a full snapshot)."""
    if len(payload) < 1 << 20:
        return hashlib.sha256(payload).digest()
    return await asyncio.to_thread(lambda: hashlib.sha256(payload).digest())
