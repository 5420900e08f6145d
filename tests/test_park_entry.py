"""One appointment, one entry, park-wide: a consumption stored at central (SQLite and
PostgreSQL) records a signed delta for every other gate in the same transaction, and the
sink publishes it through a real mosquitto to the other gate's downlink, which then refuses
the appointment; an offline gate catches up from the recorded chain; two stores racing never
give a gate one version twice; a delta left unpublished is published by the next sink."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgegate.allowlist.importer import Delta
from edgegate.central.store import CentralStore, open_store
from edgegate.central.store.parkentry import Signer
from edgegate.core import events as ev
from edgegate.core.codec import ns_to_datetime
from edgegate.core.domain import (
    Appointment,
    Credential,
    Credentials,
    Direction,
    FuzzyMatch,
    GateKind,
    InsideElsewhere,
    PlateRead,
    VehicleCategory,
)
from edgegate.core.lane import LaneState
from edgegate.core.policy import decide
from edgegate.core.rules import GateRules
from edgegate.sync.protocol import Topics, encode_request
from edgegate.sync.signing import (
    KIND_ALLOWLIST,
    decode_publication,
    delta_changes,
    open_signed,
)
from tests import test_central_store as central_store_tests
from tests import test_downlink
from tests.eventually import eventually
from tests.gate_harness import ALLOWED, RunningGate, one_lane_config
from tests.services.mosquitto import Broker
from tests.test_central_park import GateLog, race
from tests.test_central_sink import SITE, fake_gate, options, running
from tests.test_cli_central import body, listening, receive
from tests.test_downlink import Env, snapshot

pytestmark = pytest.mark.timeout(120)

dsn = central_store_tests.dsn
store = central_store_tests.store
env = test_downlink.env

TOPIC_B = Topics(SITE, "gate-b").events
PLATE = "苏E70001"


def appointment(id_: str, plate: str, now_ns: int) -> Appointment:
    start = ns_to_datetime(now_ns // 10**9 * 10**9) - timedelta(hours=1)
    return Appointment(
        id=id_,
        plate=plate,
        category=VehicleCategory.HAZMAT,
        window_start=start,
        window_end=start + timedelta(hours=8),
        destination="扬子石化有限公司",
        un_number="1203",
        hazard_class="3",
        waybill=f"WB-{id_}",
    )


def comprehensive(gate: str) -> GateRules:
    return GateRules.for_kind(gate, GateKind.COMPREHENSIVE)


def consumed_at(gate: str, appt: Appointment, now_ns: int, log: GateLog | None = None) -> GateLog:
    """``gate``'s log (``log`` extended): the appointment admits its plate and the vehicle
    passes, as the lane logs it (the pass names the decision that consumes it)."""
    log = log or GateLog(gate)
    at = ns_to_datetime(now_ns)
    decision = decide(
        comprehensive(gate),
        Direction.ENTRY,
        PlateRead(plate=appt.plate),
        _Holding(appt, at),
        at,
    )
    assert decision.consume_appointment == appt.id
    event = decision.to_event(
        direction=Direction.ENTRY, plate_read=appt.plate, lane="in-1", read_seq=None
    )
    decided = log.add(event, at)
    log.add(
        ev.VehiclePassed(
            lane="in-1",
            plate=appt.plate,
            direction=Direction.ENTRY,
            category=VehicleCategory.HAZMAT,
            credential_id=appt.id,
            permit_until=appt.window_end,
            decision_seq=decided[0],
        ),
        at,
    )
    return log


class _Holding:
    """An allow-list view holding one appointment (the consuming gate's)."""

    version = 1
    tampered = False

    def __init__(self, appt: Appointment, at: datetime) -> None:
        self._creds = Credentials(appt.plate, appointments=(appt,))
        self.updated_at = at

    def exact(self, plate: str) -> Credentials:
        return self._creds if plate == self._creds.plate else Credentials(plate)

    def fuzzy(self, plate: str) -> list[FuzzyMatch]:
        return []


def known(s: CentralStore, *gates: str, version: int = 7) -> None:
    """Central has heard of ``gates`` (their status), each at allow-list ``version``."""
    for g in gates:
        s.note_status(
            g, "online", head_seq=0, synced_seq=0, allowlist_version=version, at_ns=time.time_ns()
        )


def opened(payload: bytes, key: Ed25519PrivateKey) -> tuple[int, int | None, Delta]:
    """(version, base version, changes) of a signed delta."""
    pub = decode_publication(open_signed(payload, KIND_ALLOWLIST, key.public_key()))
    return pub.version, pub.base_version, delta_changes(pub.content)


def consumed_ids(payload: bytes, key: Ed25519PrivateKey) -> tuple[int, int | None, list[str]]:
    version, base, changes = opened(payload, key)
    return version, base, changes.consumed


# ------------------------------------------------------------------------------ the store


def test_a_consumption_records_one_delta_per_other_gate_once(
    store: CentralStore, tmp_path: Path
) -> None:
    central = test_downlink._load_key(tmp_path, "central")
    known(store, "gate-a", "gate-b", "gate-c")
    store.park_entry = Signer(central)
    now = time.time_ns() // 10**9 * 10**9  # whole seconds, as the log's times round-trip
    log = consumed_at("gate-b", appointment("APT-1", PLATE, now), now)
    store.store_batch("gate-b", log.rows, source=TOPIC_B)
    made = store.take_park_entry()
    assert [(o.site, o.gate, o.version) for o in made] == [
        (SITE, "gate-a", 8),
        (SITE, "gate-c", 8),
    ]
    for o in made:
        _, _, changes = opened(o.payload, central)
        assert (changes.upserts, changes.removals, changes.left) == ([], [], [])
        assert changes.consumed == ["APT-1"]
        assert changes.inside == [(PLATE, "gate-b", now)]  # entered there, not left
    kept = {(p.gate, p.version): p for p in store.allowlist_publications()}
    assert kept[("gate-a", 8)].payload == made[0].payload
    assert kept[("gate-a", 8)].recorded_by == "park-entry: APT-1 at gate-b seq 2; 1 inside, 0 left"
    assert ("gate-b", 8) not in kept  # the consuming gate knows already
    assert store.park_entry_unpublished() == 2

    # Redelivered: nothing new stored, nothing recorded.
    store.store_batch("gate-b", log.rows, source=TOPIC_B)
    assert store.take_park_entry() == []
    # A pulled batch (not from a topic) publishes nothing.
    pulled = consumed_at("gate-c", appointment("APT-2", "苏E70002", now), now)
    store.store_batch("gate-c", pulled.rows, source="pull")
    assert store.take_park_entry() == []

    assert store.park_entry_pending(time.time_ns() + 1) == made
    store.park_entry_published(made)
    assert store.park_entry_pending(time.time_ns() + 1) == []
    assert store.park_entry_unpublished() == 0


def test_without_a_signing_key_nothing_is_recorded(store: CentralStore) -> None:
    known(store, "gate-a", "gate-b")
    now = time.time_ns()
    store.store_batch(
        "gate-b", consumed_at("gate-b", appointment("APT-1", PLATE, now), now).rows, source=TOPIC_B
    )
    assert store.take_park_entry() == []
    assert store.allowlist_publications() == []


def test_two_stores_racing_never_give_a_gate_one_version_twice(
    postgres_dsn: str, tmp_path: Path
) -> None:
    central = test_downlink._load_key(tmp_path, "central")
    with open_store(postgres_dsn) as s:
        known(s, "gate-a", "gate-b", "gate-c")
    now = time.time_ns()
    logs = {
        g: consumed_at(g, appointment(f"APT-{g}", f"苏E7000{i}", now), now)
        for i, g in enumerate(("gate-a", "gate-b"), start=1)
    }

    def consume(gate: str) -> Callable[[CentralStore], None]:
        def work(s: CentralStore) -> None:
            s.park_entry = Signer(central)
            s.store_batch(gate, logs[gate].rows, source=Topics(SITE, gate).events)

        return work

    stores = race(postgres_dsn, consume("gate-a"), consume("gate-b"))
    for s in stores:
        s.close()
    with open_store(postgres_dsn) as s:
        kept = s.allowlist_publications()
    by_gate: dict[str, list[tuple[int, list[str]]]] = {}
    for p in kept:
        version, base, ids = consumed_ids(p.payload, central)
        assert (version, base) == (p.version, p.version - 1)
        by_gate.setdefault(p.gate, []).append((p.version, ids))
    # gate-c hears of both, under two versions; each consuming gate of the other's.
    assert sorted(by_gate["gate-c"]) in (
        [(8, ["APT-gate-a"]), (9, ["APT-gate-b"])],
        [(8, ["APT-gate-b"]), (9, ["APT-gate-a"])],
    )
    assert by_gate["gate-a"] == [(8, ["APT-gate-b"])]
    assert by_gate["gate-b"] == [(8, ["APT-gate-a"])]


# ------------------------------------------------------------------------------ end to end


async def _holding_appointment(env: Env, *appts: Credential) -> bytes:
    """Gate A (the env's gate) at list version 7 holding ``appts``; the snapshot's bytes."""
    env.clock.advance((time.time_ns() - env.clock.wall_ns()) / 1e9 + 1)  # the gate's now
    issued = env.clock.wall_ns()
    payload = snapshot(env.central, 7, list(appts), issued)
    assert (await env.downlink.receive_allowlist(payload)).applied
    return payload


def admit_at_a(env: Env, plate: str) -> ev.AccessDecided:
    """Gate A's decision on ``plate`` entering now, as its lanes take it."""
    at = ns_to_datetime(env.clock.wall_ns())
    decision = decide(
        comprehensive("gate-a"),
        Direction.ENTRY,
        PlateRead(plate=plate),
        env.service.view,
        at,
        inside=env.service.inside_elsewhere,
    )
    return decision.to_event(
        direction=Direction.ENTRY, plate_read=plate, lane="in-1", read_seq=None
    )


async def test_consumption_at_b_makes_a_refuse_the_appointment(
    mosquitto_broker: Broker, dsn: str, env: Env
) -> None:
    appt = appointment("APT-1", PLATE, time.time_ns())
    await _holding_appointment(env, appt)
    assert str(admit_at_a(env, PLATE).verdict) == "allow"
    with open_store(dsn) as s:
        known(s, "gate-a")
    opts = options(mosquitto_broker, dsn, signing_key=env.central)
    async with (
        running(opts) as sink,
        listening(mosquitto_broker, "gate-a", "allowlist") as live,
        fake_gate(mosquitto_broker, "gate-b") as b,
    ):
        assert sink.park_entry
        now = time.time_ns()
        await b.send(consumed_at("gate-b", appt, now).rows)
        message = await receive(live)
        received_s = (time.time_ns() - now) / 1e9
        assert not message.retain
        outcome = await env.downlink.receive_allowlist(body(message))
        assert outcome.applied and env.service.view.version == 8
        assert sink.counters.park_entry_recorded == 1

        refused = admit_at_a(env, PLATE)
        assert str(refused.verdict) == "deny"
        assert "appointment-consumed" in refused.reasons
        assert "already-inside" in refused.reasons  # and it entered at B
        assert received_s < 10  # generous: the figure is the benchmark's
        updated = env.last("allowlist.updated")
        assert isinstance(updated, ev.AllowListUpdated) and updated.version == 8

        await eventually(lambda: sink.counters.park_entry_published == 1, "marked published")
    with open_store(dsn) as s:
        assert s.park_entry_unpublished() == 0


async def test_an_offline_gate_catches_up_from_the_recorded_chain(
    mosquitto_broker: Broker, dsn: str, env: Env
) -> None:
    first = appointment("APT-1", PLATE, time.time_ns())
    second = appointment("APT-2", "苏E70002", time.time_ns())
    held = await _holding_appointment(env, first, second)
    await env.downlink.receive_allowlist(held)  # redelivered: no news
    # Central published that snapshot (recorded), so it can answer a snapshot request.
    with open_store(dsn) as s:
        known(s, "gate-a")
        s.publish_allowlist(
            ["gate-a"], lambda v: ("snapshot", None, held), recorded_by="ops", version=7
        )
    opts = options(mosquitto_broker, dsn, signing_key=env.central)
    async with running(opts), fake_gate(mosquitto_broker, "gate-b") as b:
        # Gate A is offline (nobody listens on its topic): v8 and v9 go by.
        now = time.time_ns()
        log = consumed_at("gate-b", first, now)
        await b.send(log.rows)
        await b.wait_ack(lambda a: a.seq == 2)
        rows = consumed_at("gate-b", second, now, log).rows
        await b.send(rows[2:])
        await b.wait_ack(lambda a: a.seq == 4)
        # Back online, it sees v9 only (a gap) and asks for a snapshot: central answers
        # with its latest snapshot (v7) and every delta after it.
        async with (
            listening(mosquitto_broker, "gate-a", "allowlist") as live,
            mosquitto_broker.client("gate-a", tls=True) as a,
        ):
            with open_store(dsn) as s:
                nine = [p for p in s.allowlist_publications("gate-a") if p.version == 9]
            gap = await env.downlink.receive_allowlist(nine[0].payload)
            assert gap.code == "gap" and env.requests
            request = env.requests[-1]  # what the downlink asked for
            await a.publish(Topics(SITE, "gate-a").requests, encode_request(request), qos=1)
            versions = []
            while env.service.view.version < 9:
                message = await receive(live)
                outcome = await env.downlink.receive_allowlist(body(message))
                versions.append((outcome.code, env.service.view.version))
    assert versions[-2:] == [("applied", 8), ("applied", 9)]
    for plate in (PLATE, "苏E70002"):
        refused = admit_at_a(env, plate)
        assert "appointment-consumed" in refused.reasons


async def test_a_delta_left_unpublished_is_published_by_the_next_sink(
    mosquitto_broker: Broker, dsn: str, env: Env
) -> None:
    appt = appointment("APT-1", PLATE, time.time_ns())
    await _holding_appointment(env, appt)
    now = time.time_ns()
    # An instance stored the consumption and recorded the delta, then died before publishing.
    with open_store(dsn) as s:
        known(s, "gate-a")
        s.park_entry = Signer(env.central)
        s.store_batch("gate-b", consumed_at("gate-b", appt, now).rows, source=TOPIC_B)
        [left] = s.take_park_entry()
    opts = options(
        mosquitto_broker, dsn, signing_key=env.central, outbox_interval=0.1, outbox_grace=0.0
    )
    async with (
        listening(mosquitto_broker, "gate-a", "allowlist") as live,
        running(opts) as sink,
    ):
        message = await receive(live)
        assert body(message) == left.payload
        assert (await env.downlink.receive_allowlist(body(message))).applied
        await eventually(lambda: sink.counters.park_entry_published == 1, "marked published")
    assert "appointment-consumed" in admit_at_a(env, PLATE).reasons
    with open_store(dsn) as s:
        assert s.park_entry_unpublished() == 0


async def test_without_a_key_the_sink_says_park_wide_consumption_is_off(
    mosquitto_broker: Broker, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(options(mosquitto_broker, dsn)) as sink:
        assert not sink.park_entry
    assert "park_entry_off" in capsys.readouterr().out


async def test_a_vehicle_inside_via_b_is_referred_to_the_guard_at_a_until_it_left(
    mosquitto_broker: Broker, dsn: str, env: Env
) -> None:
    plate = "苏E70003"
    await _holding_appointment(env, test_downlink.registration("REG-3", plate, ns_to_datetime(0)))
    with open_store(dsn) as s:
        known(s, "gate-a")
    opts = options(mosquitto_broker, dsn, signing_key=env.central)
    async with (
        running(opts),
        listening(mosquitto_broker, "gate-a", "allowlist") as live,
        fake_gate(mosquitto_broker, "gate-b") as b,
    ):
        assert str(admit_at_a(env, plate).verdict) == "allow"
        entered = time.time_ns() // 10**9 * 10**9
        log = GateLog("gate-b")
        log.passed(plate, Direction.ENTRY, ns_to_datetime(entered))
        await b.send(log.rows)
        assert (await env.downlink.receive_allowlist(body(await receive(live)))).applied

        referred = admit_at_a(env, plate)
        assert str(referred.verdict) == "confirm"  # a guard decides
        assert "already-inside" in referred.reasons
        when = ns_to_datetime(entered).isoformat(timespec="seconds")
        assert f"enter at gate-b at {when}" in referred.explanation
        assert referred.inside_elsewhere == InsideElsewhere(
            gate="gate-b", entered_at=ns_to_datetime(entered)
        )
        # The event keeps it (access.decided v6): replay sees what the gate saw.
        stored = ev.encode(referred)
        assert ev.decode(referred.TYPE, referred.VERSION, stored, referred.lane) == referred

        log.passed(plate, Direction.EXIT, ns_to_datetime(entered + 60 * 10**9))
        await b.send(log.rows[1:])
        assert (await env.downlink.receive_allowlist(body(await receive(live)))).applied
        again = admit_at_a(env, plate)
        assert str(again.verdict) == "allow" and "already-inside" not in again.reasons


async def test_the_gate_forgets_a_vehicle_that_passes_it_and_keeps_a_bounded_number(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = env.service
    monkeypatch.setattr("edgegate.allowlist.service.MAX_INSIDE", 2)
    issued = env.clock.wall_ns()
    for i, plate in enumerate(("苏E70011", "苏E70012", "苏E70013"), start=1):
        await service.apply_delta(
            [], [], source="central", version=i, updated_at=ns_to_datetime(issued),
            inside=[(plate, "gate-b", issued)],
        )  # fmt: skip
    assert service.inside_elsewhere("苏E70011") is None  # the oldest went first
    assert service.inside_elsewhere("苏E70013") == InsideElsewhere(
        gate="gate-b", entered_at=ns_to_datetime(issued)
    )
    service.passed_here("苏E70013")  # it came through this gate: central's word is old
    assert service.inside_elsewhere("苏E70013") is None
    await service.apply_delta(
        [], [], source="central", version=4, updated_at=ns_to_datetime(issued), left=["苏E70012"]
    )
    assert service.inside_elsewhere("苏E70012") is None


async def test_a_running_gate_waits_for_a_guard_for_a_vehicle_inside_elsewhere(
    tmp_path: Path,
) -> None:
    """The daemon's lane: a commuter central saw enter at gate B is not let in automatically
    but waits for a guard; the PLC gets nothing."""
    async with RunningGate(one_lane_config(tmp_path)) as g:
        service = g.gate.allowlist
        assert service is not None
        entered = time.time_ns() // 10**9 * 10**9 - 3600 * 10**9
        await service.apply_delta(
            [], [], source="central", version=service.view.version + 1,
            inside=[(ALLOWED, "gate-b", entered)],
        )  # fmt: skip
        head = g.log.head
        await g.road().arrive(ALLOWED)
        decided = await g.log.wait_for(ev.AccessDecided, lane="l1", after=head)
        assert decided.event.verdict == "confirm"
        assert "already-inside" in decided.event.reasons
        assert "enter at gate-b" in decided.event.explanation
        await eventually(lambda: g.gate.lanes["l1"].state is LaneState.AWAITING_GUARD)
        assert g.plc().commands == []


async def test_two_sinks_sharing_the_gates_publish_each_consumption_once(
    mosquitto_broker: Broker, dsn: str, env: Env
) -> None:
    """Gate B's passes are split between two sinks on one database: every pass reaches gate A
    in a delta of its own version, none twice under two versions."""
    appts = [appointment(f"APT-{i}", f"苏E7100{i}", time.time_ns()) for i in range(6)]
    await _holding_appointment(env, *appts)
    with open_store(dsn) as s:
        known(s, "gate-a")
    now = time.time_ns()
    log = GateLog("gate-b")
    for appt in appts:
        consumed_at("gate-b", appt, now, log)
    o1 = options(mosquitto_broker, dsn, client_id="sink-1", signing_key=env.central)
    o2 = options(mosquitto_broker, dsn, client_id="sink-2", signing_key=env.central)
    async with (
        running(o1) as s1,
        running(o2) as s2,
        listening(mosquitto_broker, "gate-a", "allowlist") as live,
        fake_gate(mosquitto_broker, "gate-b") as b,
    ):
        for i in range(0, len(log.rows), 2):  # one pass a message
            await b.send(log.rows[i : i + 2])
        await b.wait_ack(lambda a: a.seq == len(log.rows))
        got: dict[int, Delta] = {}
        while sum(len(d.consumed) for d in got.values()) < len(appts):
            version, base, changes = opened(body(await receive(live)), env.central)
            assert version not in got and base == version - 1
            got[version] = changes
        assert s1.counters.batches > 0 and s2.counters.batches > 0  # both stored some
        assert s1.counters.park_entry_recorded + s2.counters.park_entry_recorded == len(got)
    assert sorted(got) == list(range(8, 8 + len(got)))
    consumed = [i for v in sorted(got) for i in got[v].consumed]
    assert sorted(consumed) == sorted(a.id for a in appts)  # each once
    for version in sorted(got):  # applied in version order, the gate refuses them all
        d = got[version]
        await env.service.apply_delta(
            [], [], source="central", version=version, consumed=d.consumed, inside=d.inside
        )
    for appt in appts:
        assert "appointment-consumed" in admit_at_a(env, appt.plate).reasons
