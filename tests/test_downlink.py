"""The gate's signed downlink: allow-list publications, central commands, revoked admissions.

Real event log (SQLite in a temporary directory), real allow-list service, real Ed25519 keys,
a recording ``GateControl`` that checks the log when it is called, and (end to end) the real
mosquitto broker.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgegate.allowlist.service import AllowListService
from edgegate.core import events as ev
from edgegate.core.clock import ManualClock
from edgegate.core.codec import ns_to_datetime
from edgegate.core.domain import (
    BlacklistEntry,
    BlacklistReason,
    Credential,
    CredentialKind,
    Direction,
    GateKind,
    HolderType,
    MatchKind,
    PlateRead,
    Registration,
    TemporaryPermit,
    VehicleCategory,
)
from edgegate.core.policy import decide
from edgegate.core.rules import GateRules
from edgegate.daemon.control import GateController
from edgegate.log import EventLog
from edgegate.log.reader import LogReader
from edgegate.sync.downlink import Downlink
from edgegate.sync.protocol import ProtocolError, SnapshotRequest, Topics
from edgegate.sync.signing import (
    KIND_ALLOWLIST,
    KIND_COMMAND,
    AllowListPublication,
    CommandAction,
    SignedCommand,
    encode_command,
    encode_delta_content,
    encode_publication,
    encode_snapshot_content,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    public_pem,
    sign,
)
from tests.services.mosquitto import Broker

pytestmark = pytest.mark.timeout(60)

GATE = "gate-a"
SITE = "park-1"
SECOND = 10**9
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
PLATE = "苏E12345"
OTHER_PLATE = "苏E54321"
WAIT = 10.0

Handler = Callable[[bytes], Awaitable[None]]
"""What the uplink routes a downlink topic's messages to (``edgegate.sync.uplink.Handler``)."""


# ------------------------------------------------------------------------------ harness


@dataclass
class RecordingControl:
    """A ``GateControl`` that records each call with the ``command.accepted`` ids already
    durable in the log at that moment (read through a separate read-only connection).
    Incident mode goes on to the daemon's real controller (``gate``), which logs it."""

    log_path: Path
    gate: GateController
    lanes: tuple[str, ...] = ("in-1", "out-1")
    calls: list[tuple[str, object, str, str, list[str]]] = field(default_factory=list)

    @property
    def mode(self) -> ev.GateMode:
        return self.gate.mode

    def _accepted(self) -> list[str]:
        with LogReader(self.log_path) as reader:
            return [
                e.event().command_id  # type: ignore[attr-defined]
                for e in reader.read(after=0, limit=100_000)
                if e.type == "command.accepted"
            ]

    def open_lane(self, lane_id: str, operator: str, reason: str) -> None:
        if lane_id not in self.lanes:
            raise KeyError(f"this gate has no lane {lane_id!r}")
        self.calls.append(("open", lane_id, operator, reason, self._accepted()))

    def open_lane_once(self, lane_id: str, operator: str, reason: str) -> None:
        if lane_id not in self.lanes:
            raise KeyError(f"this gate has no lane {lane_id!r}")
        self.calls.append(("open-once", lane_id, operator, reason, self._accepted()))

    def release_lane(self, lane_id: str, operator: str, reason: str) -> None:
        if lane_id not in self.lanes:
            raise KeyError(f"this gate has no lane {lane_id!r}")
        self.calls.append(("release", lane_id, operator, reason, self._accepted()))

    async def set_incident(
        self,
        on: bool,
        *,
        source: ev.ModeSource,
        operator: str,
        reason: str,
        command_id: str | None = None,
    ) -> int | None:
        assert source is ev.ModeSource.CENTRAL
        self.calls.append(("incident", on, operator, reason, self._accepted()))
        return await self.gate.set_incident(
            on, source=source, operator=operator, reason=reason, command_id=command_id
        )


@dataclass
class Env:
    path: Path
    log: EventLog
    service: AllowListService
    control: RecordingControl
    downlink: Downlink
    clock: ManualClock
    central: Ed25519PrivateKey
    requests: list[SnapshotRequest]

    @property
    def key_id(self) -> str:
        return key_id(self.central.public_key())

    def events(self, type_name: str) -> list[tuple[int, ev.Event]]:
        with LogReader(self.path) as reader:
            return [
                (e.seq, e.event())
                for e in reader.read(after=0, limit=100_000)
                if e.type == type_name
            ]

    def last(self, type_name: str) -> ev.Event:
        found = self.events(type_name)
        assert found, f"no {type_name} event in the log"
        return found[-1][1]

    def new_downlink(self) -> Downlink:
        """Another downlink on the same log (a restarted daemon: a fresh command guard)."""
        return make_downlink(self.path, self)


def make_downlink(path: Path, env: Env) -> Downlink:
    async def request(req: SnapshotRequest) -> None:
        env.requests.append(req)

    return Downlink(
        GATE,
        load_public_key(_pub_pem(env.central)),
        env.service,
        env.log,
        env.control,
        env.clock,
        request,
    )


def _pub_pem(private: Ed25519PrivateKey) -> bytes:
    return public_pem(private.public_key())


def _load_key(tmp_path: Path, name: str) -> Ed25519PrivateKey:
    private_pem, _ = generate_keypair()
    path = tmp_path / f"{name}.key"
    path.write_bytes(private_pem)
    return load_private_key(path)


@pytest.fixture
async def env(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Env]:
    path = tmp_path / "gate.db"
    log = await EventLog.open(path, gate_id=GATE, clock=clock)
    try:
        service = await AllowListService.open(log)
        central = _load_key(tmp_path, "central")
        control = RecordingControl(path, GateController({}, log))
        e = Env(path, log, service, control, None, clock, central, [])  # type: ignore[arg-type]
        e.downlink = make_downlink(path, e)
        yield e
    finally:
        await log.aclose()


# ------------------------------------------------------------------------------ messages


def now_dt(clock: ManualClock) -> datetime:
    return ns_to_datetime(clock.wall_ns())


def permit(id_: str, plate: str, start: datetime, *, hours: float = 24) -> TemporaryPermit:
    return TemporaryPermit(
        id=id_,
        plate=plate,
        category=VehicleCategory.ORDINARY,
        visitor="南京物流有限公司",
        host="扬子石化",
        valid_from=start,
        valid_until=start + timedelta(hours=hours),
    )


def registration(id_: str, plate: str, start: datetime) -> Registration:
    return Registration(
        id=id_,
        plate=plate,
        category=VehicleCategory.ORDINARY,
        holder=HolderType.COMPANY,
        organisation="扬子石化有限公司",
        valid_from=start,
    )


def snapshot(
    key: Ed25519PrivateKey, version: int, creds: list[Credential], issued_ns: int
) -> bytes:
    pub = AllowListPublication("snapshot", version, None, issued_ns, encode_snapshot_content(creds))
    return sign(KIND_ALLOWLIST, encode_publication(pub), key)


def delta(
    key: Ed25519PrivateKey,
    base: int,
    version: int,
    issued_ns: int,
    *,
    upserts: tuple[Credential, ...] = (),
    removals: tuple[tuple[CredentialKind, str], ...] = (),
) -> bytes:
    content = encode_delta_content(upserts, removals)
    pub = AllowListPublication("delta", version, base, issued_ns, content)
    return sign(KIND_ALLOWLIST, encode_publication(pub), key)


def command(
    key: Ed25519PrivateKey,
    action: CommandAction,
    now_ns: int,
    *,
    lane: str | None = None,
    gate: str = GATE,
    lifetime_ns: int = 5 * MINUTE,
) -> tuple[SignedCommand, bytes]:
    cmd = SignedCommand.create(
        gate,
        action,
        lane=lane,
        reason="fire engine escort" if lane else "chlorine leak at unit 4",
        operator="duty-officer-li",
        now_ns=now_ns,
        lifetime_ns=lifetime_ns,
    )
    return cmd, sign(KIND_COMMAND, encode_command(cmd), key)


def flip(payload: bytes, where: int = -71) -> bytes:
    """The envelope with one byte of its body changed: the signature is the last 64 bytes,
    after its 2-byte header and the 4-byte key ``sig``; ``-71`` is the body's last byte."""
    data = bytearray(payload)
    data[where] ^= 0x01
    return bytes(data)


def unsigned(payload: bytes) -> bytes:
    """The envelope with its signature removed."""
    doc = msgpack.unpackb(payload)
    del doc["sig"]
    return msgpack.packb(doc, use_bin_type=True)


def claiming(payload: bytes, kid: str) -> bytes:
    """The envelope relabelled as signed by key ``kid``."""
    doc = msgpack.unpackb(payload)
    doc["key_id"] = kid
    return msgpack.packb(doc, use_bin_type=True)


async def admit(env: Env, plate: str, *, lane: str = "in-1") -> tuple[int, ev.AccessDecided]:
    """Decide an entry with the real policy on the gate's current list and log it."""
    rules = GateRules.for_kind(GATE, GateKind.ORDINARY)
    decision = decide(
        rules, Direction.ENTRY, PlateRead(plate=plate), env.service.view, now_dt(env.clock)
    )
    event = decision.to_event(direction=Direction.ENTRY, plate_read=plate, lane=lane, read_seq=None)
    seq = await env.log.append(event)
    return seq, event


# ------------------------------------------------------------------------------ allow-lists


async def test_snapshot_applies_with_its_version_and_source(env: Env) -> None:
    issued = env.clock.wall_ns() - MINUTE
    creds: list[Credential] = [permit("P1", PLATE, now_dt(env.clock) - timedelta(hours=1))]
    outcome = await env.downlink.receive_allowlist(snapshot(env.central, 7, creds, issued))

    assert outcome.applied and outcome.update is not None
    assert env.service.view.version == 7
    assert env.service.view.updated_at == ns_to_datetime(issued)
    assert env.service.view.get(CredentialKind.PERMIT, "P1") is not None
    [(seq, updated)] = env.events("allowlist.updated")
    assert seq == outcome.update.seq
    assert isinstance(updated, ev.AllowListUpdated)
    assert updated.kind is ev.AllowListUpdateKind.SNAPSHOT
    assert (updated.version, updated.previous_version) == (7, 0)
    assert updated.source == f"central:{env.key_id}"


async def test_delta_applies_on_its_base_version(env: Env) -> None:
    start = now_dt(env.clock) - timedelta(hours=1)
    issued = env.clock.wall_ns()
    creds: list[Credential] = [permit("P1", PLATE, start), permit("P2", OTHER_PLATE, start)]
    await env.downlink.receive_allowlist(snapshot(env.central, 3, creds, issued))
    payload = delta(
        env.central,
        3,
        4,
        issued + SECOND,
        upserts=(registration("R1", "苏E11111", start),),
        removals=((CredentialKind.PERMIT, "P2"),),
    )
    outcome = await env.downlink.receive_allowlist(payload)

    assert outcome.applied
    view = env.service.view
    assert view.version == 4
    assert view.get(CredentialKind.PERMIT, "P2") is None
    assert view.get(CredentialKind.REGISTRATION, "R1") is not None
    updated = env.last("allowlist.updated")
    assert isinstance(updated, ev.AllowListUpdated)
    assert updated.kind is ev.AllowListUpdateKind.DELTA
    assert (updated.version, updated.previous_version) == (4, 3)
    assert (updated.upserted, updated.removed) == (1, 1)
    assert updated.source == f"central:{env.key_id}"
    assert env.events("allowlist.refused") == []


async def _at_version_3(env: Env) -> bytes:
    start = now_dt(env.clock) - timedelta(hours=1)
    payload = snapshot(env.central, 3, [permit("P1", PLATE, start)], env.clock.wall_ns())
    assert (await env.downlink.receive_allowlist(payload)).applied
    return payload


def _assert_refused(env: Env, code: str) -> ev.AllowListRefused:
    refused = env.last("allowlist.refused")
    assert isinstance(refused, ev.AllowListRefused)
    assert refused.code == code, refused
    assert refused.current_version == 3
    assert env.service.view.version == 3
    assert len(env.events("allowlist.updated")) == 1
    return refused


async def test_unsigned_allowlist_is_refused_and_logged(env: Env) -> None:
    await _at_version_3(env)
    start = now_dt(env.clock)
    good = delta(env.central, 3, 4, env.clock.wall_ns(), upserts=(permit("X", "苏E99999", start),))
    outcome = await env.downlink.receive_allowlist(unsigned(good))

    assert outcome.code == "unsigned"
    refused = _assert_refused(env, "unsigned")
    assert "no signature" in refused.message
    assert refused.version is None  # nothing of an unverified publication is believed
    assert refused.payload_size == len(unsigned(good))
    # A bare publication, no envelope at all, is unsigned too.
    pub = AllowListPublication("delta", 4, 3, 0, encode_delta_content([], []))
    assert (await env.downlink.receive_allowlist(encode_publication(pub))).code == "unsigned"
    _assert_refused(env, "unsigned")


@pytest.mark.parametrize("forgery", ["flipped-byte", "other-key", "other-key-claiming-central"])
async def test_forged_allowlist_is_refused_and_logged(
    env: Env, tmp_path: Path, forgery: str
) -> None:
    await _at_version_3(env)
    start = now_dt(env.clock)
    upserts = (permit("X", "苏E99999", start),)
    now = env.clock.wall_ns()
    if forgery == "flipped-byte":
        payload, code = flip(delta(env.central, 3, 4, now, upserts=upserts)), "forged"
    else:
        mallory = _load_key(tmp_path, "mallory")
        payload, code = delta(mallory, 3, 4, now, upserts=upserts), "unknown-key"
        if forgery == "other-key-claiming-central":
            payload, code = claiming(payload, env.key_id), "forged"
    outcome = await env.downlink.receive_allowlist(payload)

    assert outcome.code == code
    refused = _assert_refused(env, code)
    assert env.service.view.get(CredentialKind.PERMIT, "X") is None
    if code == "forged":
        assert refused.key_id == env.key_id
        assert "does not verify" in refused.message


@pytest.mark.parametrize("what", ["older-snapshot", "same-version-snapshot", "older-delta"])
async def test_older_publication_is_refused_as_stale(env: Env, what: str) -> None:
    """Central went back: a version not newer than the gate's, issued after the gate's."""
    await _at_version_3(env)
    env.clock.advance(1)
    now = env.clock.wall_ns()
    payload = {
        "older-snapshot": snapshot(env.central, 2, [], now),
        "same-version-snapshot": snapshot(env.central, 3, [], now),
        "older-delta": delta(env.central, 1, 2, now, removals=((CredentialKind.PERMIT, "P1"),)),
    }[what]
    outcome = await env.downlink.receive_allowlist(payload)

    assert outcome.code == "stale"
    refused = _assert_refused(env, "stale")
    assert "not newer than this gate's version 3" in refused.message
    assert refused.version in (2, 3)
    assert env.service.view.get(CredentialKind.PERMIT, "P1") is not None  # nothing removed


async def test_a_publication_delivered_again_is_no_news(env: Env) -> None:
    """The broker hands the retained snapshot over again at every reconnect: the one already
    applied, or a stale one already refused, is not refused (nor logged) once more."""
    applied = await _at_version_3(env)
    for _ in range(3):
        assert (await env.downlink.receive_allowlist(applied)).code == "redelivered"
    assert env.events("allowlist.refused") == []
    env.clock.advance(1)
    stale = snapshot(env.central, 2, [], env.clock.wall_ns())
    codes = [(await env.downlink.receive_allowlist(stale)).code for _ in range(3)]
    assert codes == ["stale", "redelivered", "redelivered"]
    assert len(env.events("allowlist.refused")) == 1
    assert len(env.events("allowlist.updated")) == 1 and env.service.view.version == 3


async def test_a_superseded_publication_is_no_news_after_a_restart(env: Env) -> None:
    """Central's retained snapshot, then deltas on it: a restarted gate (its memory of what
    it received gone) gets the snapshot again, and the one that made its list; neither is
    refused. A lower version issued after the gate's list still is."""
    clock = env.clock
    start = now_dt(clock) - timedelta(hours=1)
    retained = snapshot(env.central, 3, [permit("P1", PLATE, start)], clock.wall_ns())
    assert (await env.downlink.receive_allowlist(retained)).applied
    clock.advance(60)
    last = delta(env.central, 3, 4, clock.wall_ns(), upserts=(permit("P2", OTHER_PLATE, start),))
    assert (await env.downlink.receive_allowlist(last)).applied
    restarted = env.new_downlink()
    assert (await restarted.receive_allowlist(retained)).code == "redelivered"
    assert (await restarted.receive_allowlist(last)).code == "redelivered"
    assert env.events("allowlist.refused") == []
    clock.advance(60)
    assert (
        await restarted.receive_allowlist(snapshot(env.central, 4, [], clock.wall_ns()))
    ).code == "stale"
    assert len(env.events("allowlist.refused")) == 1
    assert env.service.view.version == 4
    assert restarted.last_allowlist is not None and restarted.last_allowlist.code == "stale"


async def test_delta_with_version_gap_asks_for_a_snapshot(env: Env) -> None:
    await _at_version_3(env)
    now = env.clock.wall_ns()
    outcome = await env.downlink.receive_allowlist(delta(env.central, 5, 6, now))

    assert outcome.code == "gap"
    refused = _assert_refused(env, "gap")
    assert (refused.publication_kind, refused.base_version, refused.version) == ("delta", 5, 6)
    assert refused.issued_at == ns_to_datetime(now)
    [(_, requested)] = env.events("allowlist.snapshot-requested")
    assert isinstance(requested, ev.SnapshotRequested)
    assert requested.have_version == 3
    assert "delta 5->6" in requested.reason
    assert env.requests == [SnapshotRequest(GATE, 3, requested.reason)]

    # A burst of gap deltas is refused each time but asks only once...
    assert (await env.downlink.receive_allowlist(delta(env.central, 6, 7, now))).code == "gap"
    assert len(env.events("allowlist.refused")) == 2
    assert len(env.requests) == 1
    # ...until the request is old: then it asks again.
    env.clock.advance(31)
    assert (await env.downlink.receive_allowlist(delta(env.central, 7, 8, now))).code == "gap"
    assert len(env.requests) == 2
    assert len(env.events("allowlist.snapshot-requested")) == 2
    # The snapshot that answers is applied.
    assert (await env.downlink.receive_allowlist(snapshot(env.central, 8, [], now))).applied
    assert env.service.view.version == 8


async def test_malformed_and_invalid_publications_are_refused(env: Env) -> None:
    await _at_version_3(env)
    now = env.clock.wall_ns()
    garbage = await env.downlink.receive_allowlist(b"\xc1 not msgpack")
    assert garbage.code == "malformed"
    _assert_refused(env, "malformed")

    bad_body = sign(KIND_ALLOWLIST, b"\x81\xa1x\x01", env.central)
    assert (await env.downlink.receive_allowlist(bad_body)).code == "malformed"
    assert "malformed publication" in _assert_refused(env, "malformed").message

    bad_content = AllowListPublication("snapshot", 4, None, now, b"\x01")
    signed_bad = sign(KIND_ALLOWLIST, encode_publication(bad_content), env.central)
    assert (await env.downlink.receive_allowlist(signed_bad)).code == "malformed"
    refused = _assert_refused(env, "malformed")
    assert "malformed snapshot 4: content" in refused.message and refused.version == 4

    as_command = sign(KIND_COMMAND, b"\x80", env.central)
    assert (await env.downlink.receive_allowlist(as_command)).code == "wrong-kind"
    _assert_refused(env, "wrong-kind")

    # Signed and in order, but removing a credential the gate does not hold: all or nothing.
    unknown = delta(env.central, 3, 4, now, removals=((CredentialKind.PERMIT, "NOPE"),))
    assert (await env.downlink.receive_allowlist(unknown)).code == "invalid"
    refused = _assert_refused(env, "invalid")
    assert "NOPE" in refused.message and refused.version == 4


# ------------------------------------------------------------------------------ commands


async def test_open_lane_command_is_logged_then_carried_out(env: Env) -> None:
    cmd, payload = command(env.central, "open-lane", env.clock.wall_ns(), lane="in-1")
    outcome = await env.downlink.receive_command(payload)

    assert (outcome.code, outcome.command_id) == ("done", cmd.id)
    [(_, accepted)] = env.events("command.accepted")
    assert isinstance(accepted, ev.CommandAccepted)
    assert (accepted.command_id, accepted.action, accepted.lane) == (cmd.id, "open-lane", "in-1")
    assert accepted.operator == "duty-officer-li"
    assert accepted.reason == "fire engine escort"
    assert accepted.expires_at == ns_to_datetime(cmd.expires_at_ns)
    assert accepted.key_id == env.key_id
    # The control was called once, and the accepted event was already durable then.
    assert env.control.calls == [
        ("open", "in-1", "central:duty-officer-li", "fire engine escort", [cmd.id])
    ]


async def test_open_once_and_release_commands_are_logged_then_carried_out(env: Env) -> None:
    """Beside the hold: open one lane for one vehicle, and release a held lane; each logged
    as accepted (with who) before the lane is told."""
    once, once_payload = command(env.central, "open-lane-once", env.clock.wall_ns(), lane="in-1")
    release = SignedCommand.create(
        GATE,
        "release-lane",
        lane="out-1",
        operator="duty-officer-li",
        now_ns=env.clock.wall_ns(),
    )
    release_payload = sign(KIND_COMMAND, encode_command(release), env.central)
    assert (await env.downlink.receive_command(once_payload)).code == "done"
    assert (await env.downlink.receive_command(release_payload)).code == "done"

    accepted = [e for _, e in env.events("command.accepted")]
    assert [(e.action, e.lane, e.operator) for e in accepted] == [  # type: ignore[attr-defined]
        ("open-lane-once", "in-1", "duty-officer-li"),
        ("release-lane", "out-1", "duty-officer-li"),
    ]
    assert env.control.calls == [
        ("open-once", "in-1", "central:duty-officer-li", "fire engine escort", [once.id]),
        ("release", "out-1", "central:duty-officer-li", "", [once.id, release.id]),
    ]
    assert env.events("mode.changed") == []


@pytest.mark.parametrize(
    ("action", "lane", "reason", "problem"),
    [
        ("release-lane", None, "", "release-lane needs the lane"),
        ("open-lane-once", None, "x", "open-lane-once needs the lane"),
        ("open-lane-once", "in-1", " ", "reason: must not be empty"),
    ],
)
def test_lane_commands_name_their_lane(
    action: CommandAction, lane: str | None, reason: str, problem: str
) -> None:
    with pytest.raises(ProtocolError, match=problem):
        SignedCommand.create(GATE, action, lane=lane, reason=reason, operator="li", now_ns=1)


async def test_incident_commands_are_logged_then_carried_out(env: Env) -> None:
    on, on_payload = command(env.central, "incident-on", env.clock.wall_ns())
    off, off_payload = command(env.central, "incident-off", env.clock.wall_ns())
    assert (await env.downlink.receive_command(on_payload)).code == "done"
    assert (await env.downlink.receive_command(off_payload)).code == "done"

    assert [c[:2] for c in env.control.calls] == [("incident", True), ("incident", False)]
    assert env.control.calls[0][4] == [on.id]
    assert env.control.calls[1][4] == [on.id, off.id]
    accepted = [e for _, e in env.events("command.accepted")]
    assert [(e.action, e.lane) for e in accepted] == [  # type: ignore[attr-defined]
        ("incident-on", None),
        ("incident-off", None),
    ]
    changes = env.events("mode.changed")
    assert [e for _, e in changes] == [
        ev.ModeChanged(
            mode=ev.GateMode.INCIDENT,
            previous=ev.GateMode.NORMAL,
            source=ev.ModeSource.CENTRAL,
            operator=f"central:{on.operator}",
            reason=on.reason,
            command_id=on.id,
        ),
        ev.ModeChanged(
            mode=ev.GateMode.NORMAL,
            previous=ev.GateMode.INCIDENT,
            source=ev.ModeSource.CENTRAL,
            operator=f"central:{off.operator}",
            reason=off.reason,
            command_id=off.id,
        ),
    ]
    # Logged after the command's acceptance and before the lanes were told (log-then-act).
    (on_accepted, _), (off_accepted, _) = env.events("command.accepted")
    assert on_accepted < changes[0][0] < off_accepted < changes[1][0]


async def test_a_repeated_incident_command_changes_no_mode(env: Env) -> None:
    for _ in range(2):
        _, payload = command(env.central, "incident-on", env.clock.wall_ns())
        assert (await env.downlink.receive_command(payload)).code == "done"
    assert [c[:2] for c in env.control.calls] == [("incident", True), ("incident", True)]
    assert len(env.events("mode.changed")) == 1


async def test_command_for_an_unknown_lane_fails_logged(env: Env) -> None:
    cmd, payload = command(env.central, "open-lane", env.clock.wall_ns(), lane="in-9")
    outcome = await env.downlink.receive_command(payload)

    assert (outcome.code, outcome.command_id) == ("failed", cmd.id)
    assert env.control.calls == []
    [(accepted_seq, _)] = env.events("command.accepted")
    [(failed_seq, failed)] = env.events("command.failed")
    assert failed_seq > accepted_seq
    assert isinstance(failed, ev.CommandFailed)
    assert (failed.command_id, failed.code, failed.lane) == (cmd.id, "unknown-lane", "in-9")
    assert "no lane 'in-9'" in failed.message


def _assert_command_refused(env: Env, code: str, command_id: str | None) -> ev.CommandRefused:
    refused = env.last("command.refused")
    assert isinstance(refused, ev.CommandRefused)
    assert (refused.code, refused.command_id) == (code, command_id), refused
    return refused


@pytest.mark.parametrize(
    "case", ["unsigned", "flipped-byte", "other-key", "other-key-claiming-central"]
)
async def test_unsigned_or_forged_command_is_refused_and_logged(
    env: Env, tmp_path: Path, case: str
) -> None:
    now = env.clock.wall_ns()
    if case in ("unsigned", "flipped-byte"):
        cmd, payload = command(env.central, "incident-on", now)
        payload = unsigned(payload) if case == "unsigned" else flip(payload)
        code = "unsigned" if case == "unsigned" else "forged"
    else:
        cmd, payload = command(_load_key(tmp_path, "mallory"), "incident-on", now)
        if case == "other-key-claiming-central":
            payload = claiming(payload, env.key_id)
        code = "forged"
    outcome = await env.downlink.receive_command(payload)

    assert (outcome.code, outcome.command_id) == (code, cmd.id)
    refused = _assert_command_refused(env, code, cmd.id)
    assert refused.payload == payload and not refused.truncated
    assert refused.action == "incident-on"
    assert env.control.calls == []
    assert env.events("command.accepted") == []


async def test_expired_command_is_refused_and_logged(env: Env) -> None:
    cmd, payload = command(env.central, "open-lane", env.clock.wall_ns() - 10 * MINUTE, lane="in-1")
    assert (await env.downlink.receive_command(payload)).code == "expired"
    refused = _assert_command_refused(env, "expired", cmd.id)
    assert "expired 300.0 s ago" in refused.message
    assert env.control.calls == []


async def test_command_for_another_gate_is_refused_and_logged(env: Env) -> None:
    cmd, payload = command(env.central, "incident-on", env.clock.wall_ns(), gate="gate-b")
    assert (await env.downlink.receive_command(payload)).code == "wrong-gate"
    refused = _assert_command_refused(env, "wrong-gate", cmd.id)
    assert "'gate-b'" in refused.message
    assert env.control.calls == []


async def test_replayed_command_is_refused_and_logged(env: Env) -> None:
    cmd, payload = command(env.central, "open-lane", env.clock.wall_ns(), lane="in-1")
    assert (await env.downlink.receive_command(payload)).code == "done"
    env.clock.advance(10)
    assert (await env.downlink.receive_command(payload)).code == "replayed"
    _assert_command_refused(env, "replayed", cmd.id)
    assert len(env.control.calls) == 1
    assert len(env.events("command.accepted")) == 1


async def test_replay_after_restart_is_refused(env: Env) -> None:
    now = env.clock.wall_ns()
    _, old_payload = command(env.central, "incident-on", now, lifetime_ns=MINUTE)
    cmd, payload = command(env.central, "open-lane", now, lane="in-1", lifetime_ns=HOUR)
    assert (await env.downlink.receive_command(old_payload)).code == "done"
    assert (await env.downlink.receive_command(payload)).code == "done"
    env.clock.advance(10 * 60)  # ``old`` has expired since

    restarted = env.new_downlink()
    assert await restarted.restore() == 1  # only the command still valid is remembered
    assert (await restarted.receive_command(payload)).code == "replayed"
    _assert_command_refused(env, "replayed", cmd.id)
    assert (await restarted.receive_command(old_payload)).code == "expired"
    assert len(env.control.calls) == 2

    # Without restore() the fresh guard would have carried the replay out.
    forgetful = env.new_downlink()
    assert (await forgetful.receive_command(payload)).code == "done"


async def test_restore_finds_commands_in_a_long_log(env: Env) -> None:
    """Only the recent part of the log is read (binary search on wall time), and it is found."""
    noise = ev.LoopChanged(lane="in-1", loop=ev.Loop.ARMING, occupied=True, source="plc-1")
    for _ in range(300):  # two days of older traffic
        await env.log.append(noise)
        env.clock.advance(600)
    cmd, payload = command(env.central, "open-lane", env.clock.wall_ns(), lane="in-1")
    assert (await env.downlink.receive_command(payload)).code == "done"
    for _ in range(30):
        env.clock.advance(1)
        await env.log.append(noise)

    restarted = env.new_downlink()
    assert await restarted.restore() == 1
    assert (await restarted.receive_command(payload)).code == "replayed"
    _assert_command_refused(env, "replayed", cmd.id)


# ------------------------------------------------------------------------------ revoked admissions


async def test_admission_by_a_credential_revoked_during_the_outage_is_reported(env: Env) -> None:
    clock = env.clock
    start = now_dt(clock) - timedelta(hours=1)
    creds: list[Credential] = [
        permit("P1", PLATE, start),
        registration("R2", OTHER_PLATE, start),
    ]
    assert (
        await env.downlink.receive_allowlist(snapshot(env.central, 1, creds, clock.wall_ns()))
    ).applied

    # The link goes down. P1 enters once before central revokes it, once after.
    clock.advance(600)
    before_seq, before = await admit(env, PLATE)
    assert before.verdict == "allow" and before.credential_id == "P1"
    clock.advance(600)
    revoked_ns = clock.wall_ns()  # central removes P1 now; the gate does not hear of it
    clock.advance(600)
    after_seq, after = await admit(env, PLATE, lane="in-2")
    assert after.verdict == "allow"
    other_seq, other = await admit(env, OTHER_PLATE)  # R2 stays valid
    assert other.verdict == "allow"
    clock.advance(3600)

    # The link returns: the delta central published during the outage arrives.
    removal = delta(env.central, 1, 2, revoked_ns, removals=((CredentialKind.PERMIT, "P1"),))
    outcome = await env.downlink.receive_allowlist(removal)

    assert outcome.applied and outcome.reported == 1
    [(report_seq, report)] = env.events("admission.revoked-credential")
    assert report_seq > outcome.update.seq  # type: ignore[union-attr]
    assert isinstance(report, ev.RevokedCredentialAdmission)
    assert report.decision_seq == after_seq
    assert report.lane == "in-2"
    assert (report.plate, report.credential_kind, report.credential_id) == (
        PLATE,
        "permit",
        "P1",
    )
    assert report.decided_at == ns_to_datetime(revoked_ns + 600 * SECOND)
    assert report.revoked_at == ns_to_datetime(revoked_ns)
    assert report.revoked_after is None
    assert report.certain and report.basis == "removed"
    assert report.allowlist_version == 2

    # Reported once: a later snapshot (skipping versions, so it looks back to when version 2
    # was issued) that still lacks P1 does not report the same decision again.
    clock.advance(60)
    again = snapshot(env.central, 5, [registration("R2", OTHER_PLATE, start)], clock.wall_ns())
    assert (await env.downlink.receive_allowlist(again)).reported == 0
    assert len(env.events("admission.revoked-credential")) == 1
    assert before_seq < after_seq and other_seq > after_seq


async def test_snapshot_skipping_versions_reports_possible_revocations(env: Env) -> None:
    clock = env.clock
    start = now_dt(clock) - timedelta(hours=1)
    list_issued = clock.wall_ns()
    creds: list[Credential] = [
        permit("P1", PLATE, start),
        registration("R2", OTHER_PLATE, start),
    ]
    assert (
        await env.downlink.receive_allowlist(snapshot(env.central, 1, creds, list_issued))
    ).applied

    clock.advance(600)
    p1_seq, _ = await admit(env, PLATE)
    r2_seq, _ = await admit(env, OTHER_PLATE)
    clock.advance(600)
    late_seq, _ = await admit(env, OTHER_PLATE, lane="in-2")
    clock.advance(3600)
    # Central missed versions 2..4 to this gate; version 5 drops P1 and blacklists R2's plate
    # from a moment between the two R2 entries.
    blacklisted_from = ns_to_datetime(list_issued + 900 * SECOND)
    black = BlacklistEntry(
        id="B1",
        plate=OTHER_PLATE,
        reason=BlacklistReason.SPEEDING,
        source="traffic-police",
        valid_from=blacklisted_from,
    )
    issued = clock.wall_ns() - 1800 * SECOND
    payload = snapshot(env.central, 5, [registration("R2", OTHER_PLATE, start), black], issued)
    outcome = await env.downlink.receive_allowlist(payload)

    assert outcome.applied and outcome.reported == 2
    reports = [e for _, e in env.events("admission.revoked-credential")]
    by_seq = {r.decision_seq: r for r in reports}  # type: ignore[attr-defined]
    assert set(by_seq) == {p1_seq, late_seq}
    p1 = by_seq[p1_seq]
    assert isinstance(p1, ev.RevokedCredentialAdmission)
    assert p1.basis == "removed" and not p1.certain
    assert p1.revoked_after == ns_to_datetime(list_issued)
    assert p1.revoked_at == ns_to_datetime(issued)
    late = by_seq[late_seq]
    assert isinstance(late, ev.RevokedCredentialAdmission)
    assert late.basis == "blacklisted" and "B1" in late.detail
    assert late.credential_id == "R2" and not late.certain
    assert late.revoked_after == ns_to_datetime(list_issued)
    assert r2_seq not in by_seq  # before the blacklisting: not revoked then


async def test_only_admissions_count(env: Env) -> None:
    """Denials, exits, and confirmations no guard confirmed are not admissions."""
    clock = env.clock
    start = now_dt(clock) - timedelta(hours=1)
    creds: list[Credential] = [permit("P1", PLATE, start)]
    assert (
        await env.downlink.receive_allowlist(snapshot(env.central, 1, creds, clock.wall_ns()))
    ).applied
    revoked_ns = clock.wall_ns() + SECOND
    clock.advance(60)

    def decided(verdict: str, direction: Direction = Direction.ENTRY) -> ev.AccessDecided:
        return ev.AccessDecided(
            lane="in-1",
            direction=direction,
            plate_read=PLATE,
            plate=PLATE,
            matched_plate=PLATE,
            match=MatchKind.EXACT,
            verdict=verdict,
            reasons=(),
            category=VehicleCategory.ORDINARY,
            credential_kind="permit",
            credential_id="P1",
            allowlist_version=1,
        )

    await env.log.append(decided("deny"))
    await env.log.append(decided("allow", Direction.EXIT))
    await env.log.append(decided("confirm"))  # the guard refused it
    confirmed = await env.log.append(decided("confirm"))
    await env.log.append(
        ev.VehiclePassed(
            lane="in-1",
            plate=PLATE,
            direction=Direction.ENTRY,
            category=VehicleCategory.ORDINARY,
            decision_seq=confirmed,
        )
    )
    removal = delta(env.central, 1, 2, revoked_ns, removals=((CredentialKind.PERMIT, "P1"),))
    assert (await env.downlink.receive_allowlist(removal)).reported == 1
    [(_, report)] = env.events("admission.revoked-credential")
    assert report.decision_seq == confirmed  # type: ignore[attr-defined]


async def test_prompt_update_reports_nothing(env: Env) -> None:
    """Online: an admission before central's change is not a revoked admission."""
    clock = env.clock
    start = now_dt(clock) - timedelta(hours=1)
    creds: list[Credential] = [permit("P1", PLATE, start)]
    assert (
        await env.downlink.receive_allowlist(snapshot(env.central, 1, creds, clock.wall_ns()))
    ).applied
    clock.advance(60)
    await admit(env, PLATE)
    clock.advance(60)
    removal = delta(env.central, 1, 2, clock.wall_ns(), removals=((CredentialKind.PERMIT, "P1"),))
    clock.advance(0.2)
    outcome = await env.downlink.receive_allowlist(removal)
    assert outcome.applied and outcome.reported == 0
    assert env.events("admission.revoked-credential") == []


# ------------------------------------------------------------------------------ end to end


async def test_signed_command_and_allowlist_over_the_real_broker(
    env: Env, mosquitto_broker: Broker
) -> None:
    broker = mosquitto_broker
    topics = Topics(SITE, GATE)
    now = env.clock.wall_ns()
    forged_cmd, forged = command(env.central, "open-lane", now, lane="in-1")
    forged = flip(forged)
    cmd, genuine = command(env.central, "open-lane", now, lane="in-1")
    creds: list[Credential] = [permit("P1", PLATE, now_dt(env.clock))]
    publication = snapshot(env.central, 9, creds, now)

    async with (
        broker.client(GATE, tls=True, identifier="gate-a-downlink") as gate,
        broker.client("central", tls=True) as central,
    ):
        await gate.subscribe(topics.commands, qos=1)
        await gate.subscribe(topics.allowlist, qos=1)
        await central.publish(topics.commands, forged, qos=1)
        await central.publish(topics.allowlist, publication, qos=1)
        await central.publish(topics.commands, genuine, qos=1)
        # The harness routes as the uplink does, to the downlink's topic handlers.
        handlers: dict[str, Handler] = {
            topics.commands: env.downlink.on_command,
            topics.allowlist: env.downlink.on_allowlist,
        }
        handled = 0
        async with asyncio.timeout(WAIT):
            async for message in gate.messages:
                assert isinstance(message.payload, bytes)
                await handlers[message.topic.value](message.payload)
                handled += 1
                if handled == 3:
                    break

    assert env.control.calls == [
        ("open", "in-1", "central:duty-officer-li", "fire engine escort", [cmd.id])
    ]
    assert env.service.view.version == 9
    updated = env.last("allowlist.updated")
    assert isinstance(updated, ev.AllowListUpdated) and updated.version == 9
    refused = env.last("command.refused")
    assert isinstance(refused, ev.CommandRefused)
    assert (refused.code, refused.command_id) == ("forged", forged_cmd.id)
    assert forged_cmd.id != cmd.id


# ------------------------------------------------------------------------------ tampered list


async def test_a_tampered_list_asks_for_a_snapshot_and_a_valid_one_of_its_version_restores_it(
    env: Env,
) -> None:
    start = now_dt(env.clock) - timedelta(hours=1)
    blacklisted = BlacklistEntry(
        id="B1",
        plate=PLATE,
        reason=BlacklistReason.SPEEDING,
        source="park-security",
        valid_from=start,
    )
    creds: list[Credential] = [registration("R1", PLATE, start), blacklisted]
    issued = env.clock.wall_ns()
    retained = snapshot(env.central, 3, creds, issued)
    assert (await env.downlink.receive_allowlist(retained)).applied
    await env.downlink.on_connected()
    assert env.requests == []  # a sound list asks nothing

    conn = sqlite3.connect(env.path)
    conn.execute("UPDATE allowlist_entry SET plate = '苏E12346' WHERE id = 'B1'")
    conn.commit()
    conn.close()
    env.service = await AllowListService.open(env.log)  # the daemon restarting
    env.downlink = env.new_downlink()
    assert env.service.view.tampered
    _, decided = await admit(env, PLATE)
    assert decided.verdict == "deny" and "allowlist-tampered" in decided.reasons

    await env.downlink.on_connected()
    assert [r.have_version for r in env.requests] == [3]
    requested = env.last("allowlist.snapshot-requested")
    assert isinstance(requested, ev.SnapshotRequested)
    assert "integrity" in requested.reason
    # An older publication (issued before the list the gate holds: no news) never restores.
    older = snapshot(env.central, 2, creds, issued - MINUTE)
    outcome = await env.downlink.receive_allowlist(older)
    assert not outcome.applied and outcome.code == "redelivered"
    assert env.service.view.tampered

    # The retained snapshot of the same version, delivered again at the next connect.
    outcome = await env.downlink.receive_allowlist(retained)
    assert outcome.applied
    assert not env.service.view.tampered and env.service.view.version == 3
    _, decided = await admit(env, PLATE)
    assert "allowlist-tampered" not in decided.reasons
    await env.downlink.on_connected()
    assert len(env.requests) == 1
