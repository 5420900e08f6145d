"""The central sink against a real mosquitto (TLS, the production ACL) and a real store.

Gates are played by MQTT clients logged in as the gate users: they publish hand-made batches
(hashed with the real chain function) on their events topic and listen on their ack topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiomqtt
import msgpack
import pytest

from edgegate.central.sink import BrokerSettings, BrokerUrlError, Sink, SinkOptions
from edgegate.central.store import CentralStore, open_store, sqlite_path
from edgegate.log.chain import GENESIS_HASH, Row, event_hash
from edgegate.sync.protocol import (
    Ack,
    EventBatch,
    SnapshotRequest,
    Status,
    Topics,
    decode_ack,
    encode_batch,
    encode_request,
    encode_status,
)
from tests.eventually import eventually
from tests.services.mosquitto import Broker, BrokerFactory, production_policy_lines

pytestmark = pytest.mark.timeout(120)

SITE = "site-1"
WAIT = 15.0


# ------------------------------------------------------------------------------ helpers


def make_chain(gate: str, n: int, *, start: int = 1, prev: bytes = GENESIS_HASH) -> list[Row]:
    """``n`` correctly hashed rows of ``gate`` from seq ``start``, chained from ``prev``."""
    rows: list[Row] = []
    for seq in range(start, start + n):
        wall, mono = 1_795_000_000_000_000_000 + seq * 1000, 7_000 + seq
        lane = None if seq % 4 == 0 else "in-1"
        data = msgpack.packb({"seq": seq, "plate": "苏E12345"})
        digest = event_hash(prev, gate, seq, wall, mono, "boot-1", "test.event", lane, 1, data)
        rows.append((seq, wall, mono, "boot-1", "test.event", lane, 1, data, prev, digest))
        prev = digest
    return rows


def payload(gate: str, rows: list[Row]) -> bytes:
    return encode_batch(EventBatch.of(gate, rows))


def settings(broker: Broker, *, tls: bool = True) -> BrokerSettings:
    return BrokerSettings(
        host=broker.host,
        port=broker.tls_port if tls else broker.plain_port,
        tls=tls,
        username="central",
        password=broker.users["central"],
        ca_file=broker.ca_path if tls else None,
    )


def options(broker: Broker, dsn: str, *, client_id: str = "sink-1", **kw: object) -> SinkOptions:
    defaults: dict[str, object] = {"backoff_initial": 0.05, "backoff_max": 0.5, "gap_wait": 0.3}
    defaults.update(kw)
    return SinkOptions(settings(broker), dsn=dsn, client_id=client_id, **defaults)  # type: ignore[arg-type]


@pytest.fixture
def dsn(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'central.db'}"


@contextlib.contextmanager
def reading(dsn: str) -> Iterator[CentralStore]:
    store = open_store(dsn)
    try:
        yield store
    finally:
        store.close()


@dataclass
class FakeGate:
    """A gate's MQTT side: publishes on its topics, collects what central acks."""

    name: str
    client: aiomqtt.Client
    acks: list[Ack] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def topics(self) -> Topics:
        return Topics(SITE, self.name)

    async def send(self, rows: list[Row]) -> None:
        await self.send_raw(payload(self.name, rows))

    async def send_raw(self, data: bytes) -> None:
        await self.client.publish(self.topics.events, data, qos=1)

    async def wait_ack(self, check: Callable[[Ack], bool], within: float = WAIT) -> Ack:
        """The first ack received so far (or later) that passes ``check``."""
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(lambda: any(check(a) for a in self.acks))
        return next(a for a in self.acks if check(a))

    async def _listen(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            ack = decode_ack(message.payload)
            async with self.changed:
                self.acks.append(ack)
                self.changed.notify_all()


@contextlib.asynccontextmanager
async def fake_gate(broker: Broker, name: str = "gate-a") -> AsyncIterator[FakeGate]:
    async with broker.client(name, tls=True) as client:
        gate = FakeGate(name, client)
        await client.subscribe(gate.topics.ack, qos=1)
        listener = asyncio.create_task(gate._listen())
        try:
            yield gate
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener


@contextlib.asynccontextmanager
async def running(opts: SinkOptions, **kw: object) -> AsyncIterator[Sink]:
    async with Sink(opts, **kw) as sink:  # type: ignore[arg-type]
        await sink.wait_ready(WAIT)
        yield sink


# ------------------------------------------------------------------------------ tests


async def test_batches_are_stored_then_acked(mosquitto_broker: Broker, dsn: str) -> None:
    rows = make_chain("gate-a", 300)
    async with running(options(mosquitto_broker, dsn)) as sink, fake_gate(mosquitto_broker) as gate:
        for i in range(0, 300, 100):
            await gate.send(rows[i : i + 100])
        ack = await gate.wait_ack(lambda a: a.seq == 300)
        # The ack came after the commit: another connection sees every event already.
        with reading(dsn) as store:
            assert store.count("gate-a") == 300
            assert store.verify("gate-a") is None
            assert list(store.events("gate-a")) == rows
        assert ack == Ack("gate-a", 300, None)
        assert all(a.resend_from is None for a in gate.acks)
        assert [a.seq for a in gate.acks] == sorted(a.seq for a in gate.acks)
        assert sink.stored_until("gate-a") == 300
        assert await sink.wait_head("gate-a", 300, 1) == 300
        assert (sink.counters.batches, sink.counters.events) == (3, 300)
        assert sink.counters.dead_letters == 0


async def test_a_lagging_store_leaves_the_backlog_in_the_broker(
    mosquitto_broker: Broker, dsn: str
) -> None:
    """Back-pressure: while another writer holds the database (the store stalled), the sink
    holds at most the broker's inflight window of QoS 1 messages (and a bounded number of
    QoS 0 ones); the rest waits in the broker, and everything is stored afterwards."""
    window = next(
        int(line.split()[1])
        for line in production_policy_lines()
        if line.startswith("max_inflight_messages")
    )
    n = 3 * window
    rows = make_chain("gate-a", n)
    opts = options(mosquitto_broker, dsn, max_inbox_messages=8, max_qos0_queued=16)
    async with running(opts) as sink, fake_gate(mosquitto_broker) as gate:
        lock = sqlite3.connect(sqlite_path(dsn), isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            for row in rows:
                await gate.send([row])
            for _ in range(200):  # QoS 0: nothing but the sink's own cap bounds these
                await gate.client.publish(gate.topics.events, b"junk", qos=0)
            await eventually(
                lambda: sink.counters.peak_in_hand >= window, "window full", within=WAIT
            )
            await eventually(
                lambda: sink.counters.qos0_discarded > 0, "QoS 0 discarded", within=WAIT
            )
            stalled_peak = sink.counters.peak_in_hand
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        # Only while stalled: mosquitto 2.0.11 sends its whole queue after the first PUBACK.
        assert window <= stalled_peak <= window + 16 + 8
        await gate.wait_ack(lambda a: a.seq == n, within=60)
        with reading(dsn) as store:
            assert store.count("gate-a") == n


@contextlib.contextmanager
def slow_sqlite(dsn: str, *, hold: float = 0.04, free: float = 0.04) -> Iterator[None]:
    """Another writer takes the database's write lock for ``hold`` s every ``hold + free``
    s: the store's commits wait (slow, not stalled)."""
    stop = threading.Event()

    def interfere() -> None:
        conn = sqlite3.connect(sqlite_path(dsn), isolation_level=None, timeout=30)
        try:
            while not stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                stop.wait(hold)
                conn.execute("ROLLBACK")
                stop.wait(free)
        finally:
            conn.close()

    thread = threading.Thread(target=interfere, name="slow-sqlite")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


async def test_a_slow_store_holds_the_sink_to_its_byte_budget(
    make_broker: BrokerFactory, dsn: str
) -> None:
    """A backlog many times the budget, from 20 gates at once, while the store is slow: the
    sink holds at most ``max_inflight_bytes`` + one message (it stops reading its socket;
    the broker keeps the rest), and every event is stored exactly once."""
    gates = [f"gate-{i:02d}" for i in range(20)]
    broker = make_broker(("central", *gates))
    chains = {g: make_chain(g, 1000) for g in gates}
    batches = {g: [payload(g, chains[g][i : i + 50]) for i in range(0, 1000, 50)] for g in gates}
    biggest = max(len(b) for bs in batches.values() for b in bs)
    total = sum(len(b) for bs in batches.values() for b in bs)
    budget = 128 << 10
    assert total > 20 * budget  # about 2.7 MB
    opts = options(broker, dsn, max_inflight_bytes=budget)
    async with running(opts) as sink, contextlib.AsyncExitStack() as stack:
        fakes = [await stack.enter_async_context(fake_gate(broker, g)) for g in gates]
        with slow_sqlite(dsn):

            async def flood(gate: FakeGate) -> None:
                for data in batches[gate.name]:
                    await gate.send_raw(data)

            await asyncio.gather(*(flood(g) for g in fakes))
            for gate in fakes:
                await gate.wait_ack(lambda a: a.seq == 1000, within=90)
        assert 0 < sink.counters.peak_held_bytes <= budget + biggest
        assert sink.counters.read_pauses > 0
        assert sink.counters.held_bytes == 0
        assert sink.counters.events == 20 * 1000
    with reading(dsn) as store:
        for g in gates:
            assert store.count(g) == 1000
            assert list(store.events(g)) == chains[g]
        assert store.dead_letters() == []


async def test_a_pause_longer_than_keepalive_reconnects_and_loses_nothing(
    mosquitto_broker: Broker, dsn: str
) -> None:
    """Paused (the store stalled), the sink cannot read the broker's PINGRESP: paho drops the
    connection after about twice the keepalive; the sink reconnects once the store answers
    and the broker delivers again what was not PUBACKed. Nothing is lost or stored twice."""
    rows = make_chain("gate-a", 2000)
    batches = [payload("gate-a", rows[i : i + 50]) for i in range(0, 2000, 50)]
    budget = 64 << 10
    opts = options(mosquitto_broker, dsn, max_inflight_bytes=budget, keepalive=5)
    async with running(opts) as sink, fake_gate(mosquitto_broker) as gate:
        lock = sqlite3.connect(sqlite_path(dsn), isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            for data in batches:
                await gate.send_raw(data)
            await eventually(lambda: sink.counters.read_pauses > 0, "reading paused", within=WAIT)
            # paho closes the socket (unread data in it: mosquitto reports a reset or EOF).
            gone = ("Client sink-1 disconnected", "Client sink-1 closed its connection")
            await eventually(
                lambda: any(t in mosquitto_broker.log_text() for t in gone), "dropped", within=30
            )
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        await gate.wait_ack(lambda a: a.seq == 2000, within=60)
        assert sink.counters.connects >= 2
        assert sink.counters.peak_held_bytes <= budget + max(len(b) for b in batches)
    with reading(dsn) as store:
        assert list(store.events("gate-a")) == rows


async def test_duplicate_batch_is_acked_again_and_stored_once(
    mosquitto_broker: Broker, dsn: str
) -> None:
    rows = make_chain("gate-a", 50)
    async with running(options(mosquitto_broker, dsn)) as sink, fake_gate(mosquitto_broker) as gate:
        await gate.send(rows)
        await gate.wait_ack(lambda a: a.seq == 50)
        await gate.send(rows)  # e.g. our first ack was lost and the gate resent
        await gate.send(rows[10:20])
        await eventually(lambda: len(gate.acks) >= 3, "three acks", within=WAIT)
        assert gate.acks == [Ack("gate-a", 50, None)] * 3
        assert sink.counters.duplicates == 60
        with reading(dsn) as store:
            assert store.count("gate-a") == 50
            assert store.dead_letters() == []


async def test_gap_asks_the_gate_to_resend_from_the_first_missing_seq(
    mosquitto_broker: Broker, dsn: str
) -> None:
    rows = make_chain("gate-a", 30)
    async with running(options(mosquitto_broker, dsn)) as sink, fake_gate(mosquitto_broker) as gate:
        await gate.send(rows[:10])
        await gate.wait_ack(lambda a: a.seq == 10)
        await gate.send(rows[20:])  # 11..20 never arrive
        ack = await gate.wait_ack(lambda a: a.resend_from is not None)
        assert ack == Ack("gate-a", 10, resend_from=11)
        assert sink.counters.gaps == 1
        await gate.send(rows[10:20])
        await gate.send(rows[20:])
        await gate.wait_ack(lambda a: a.seq == 30)
        with reading(dsn) as store:
            assert store.count("gate-a") == 30
            assert store.verify("gate-a") is None
            assert store.dead_letters() == []  # a gap is no fault of the payload


async def test_a_burst_of_out_of_order_batches_costs_one_resend(
    mosquitto_broker: Broker, dsn: str
) -> None:
    rows = make_chain("gate-a", 400)
    opts = options(mosquitto_broker, dsn, gap_wait=0.1, resend_interval=60.0)
    async with running(opts) as sink, fake_gate(mosquitto_broker) as gate:
        await gate.send(rows[:10])
        await gate.wait_ack(lambda a: a.seq == 10)
        for i in range(20, 400, 10):  # 38 batches, all after the missing 11..20
            await gate.send(rows[i : i + 10])
        await gate.wait_ack(lambda a: a.resend_from == 11)
        await eventually(lambda: sink.counters.gaps == 38, "38 gaps", within=WAIT)
        # Time for a wrong second resend request (every parked batch has given up by now).
        await asyncio.sleep(0.5)
        assert [a for a in gate.acks if a.resend_from is not None] == [Ack("gate-a", 10, 11)]
        assert sink.counters.resend_requests == 1
        # The gate resends from 11 as asked; everything chains.
        for i in range(10, 400, 50):
            await gate.send(rows[i : i + 50])
        await gate.wait_ack(lambda a: a.seq == 400)
        with reading(dsn) as store:
            assert store.count("gate-a") == 400
            assert store.verify("gate-a") is None


async def test_out_of_order_batches_within_the_wait_are_stored_without_a_resend(
    mosquitto_broker: Broker, dsn: str
) -> None:
    rows = make_chain("gate-a", 40)
    opts = options(mosquitto_broker, dsn, gap_wait=5.0)
    async with running(opts) as sink, fake_gate(mosquitto_broker) as gate:
        await gate.send(rows[20:30])
        await gate.send(rows[30:])
        await eventually(lambda: sink.counters.gaps == 2, "2 gaps", within=WAIT)
        await gate.send(rows[:20])
        await gate.wait_ack(lambda a: a.seq == 40)
        assert all(a.resend_from is None for a in gate.acks)
        assert sink.counters.resend_requests == 0


def _forged(rows: list[Row]) -> list[Row]:
    """``rows`` with seq 3's data changed and its hash kept (and the chain kept intact)."""
    out = list(rows)
    r = out[2]
    out[2] = (*r[:7], b"forged", *r[8:])
    return out


BAD_PAYLOADS: dict[str, tuple[Callable[[list[Row]], bytes], str, int]] = {
    # name: (payload from the valid rows, reason fragment, events stored from it)
    "not msgpack": (lambda rows: b"\xc1 garbage", "malformed event batch: ", 0),
    "not a batch": (lambda rows: msgpack.packb({"gate": "gate-a"}), "malformed event batch", 0),
    "chain broken": (
        lambda rows: msgpack.packb(
            {
                "gate": "gate-a",
                "from_seq": 1,
                "to_seq": 2,
                "prev_hash": GENESIS_HASH,
                "events": [rows[0], rows[2]],
            }
        ),
        "seq 3, expected 2",
        0,
    ),
    "wrong gate": (
        lambda rows: payload("gate-b", make_chain("gate-b", 5)),
        "batch of gate 'gate-b' published on gate 'gate-a'",
        0,
    ),
    "forged hash": (lambda rows: payload("gate-a", _forged(rows)), "seq 3: hash does not", 2),
}


@pytest.mark.parametrize("case", list(BAD_PAYLOADS))
async def test_bad_payload_is_dead_lettered_and_the_sink_goes_on(
    mosquitto_broker: Broker, dsn: str, case: str
) -> None:
    make_payload, reason, stored = BAD_PAYLOADS[case]
    rows = make_chain("gate-a", 5)
    async with running(options(mosquitto_broker, dsn)) as sink, fake_gate(mosquitto_broker) as gate:
        await gate.send_raw(make_payload(rows))
        ack = await gate.wait_ack(lambda a: a.resend_from is not None)
        assert ack == Ack("gate-a", stored, stored + 1)
        with reading(dsn) as store:
            (dead,) = store.dead_letters()
            assert dead.gate == "gate-a"
            assert dead.source == Topics(SITE, "gate-a").events
            assert reason in dead.reason, dead.reason
            assert store.count() == stored
        assert sink.counters.dead_letters == 1
        # Still running: the next valid batch is stored and acked.
        await gate.send(rows)
        await gate.wait_ack(lambda a: a.seq == 5)
        with reading(dsn) as store:
            assert store.count() == 5
            assert store.verify("gate-a") is None


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_two_sinks_split_the_batches_and_store_each_event_once(
    mosquitto_broker: Broker, request: pytest.FixtureRequest, dsn: str, backend: str
) -> None:
    # One shared database, as several instances need (PostgreSQL at scale; one SQLite file
    # serves instances on one machine).
    db = str(request.getfixturevalue("postgres_dsn")) if backend == "postgres" else dsn
    gates = ("gate-a", "gate-b")
    chains = {g: make_chain(g, 1000) for g in gates}
    o1 = options(mosquitto_broker, db, client_id="sink-1")
    o2 = options(mosquitto_broker, db, client_id="sink-2")
    async with running(o1) as s1, running(o2) as s2:
        async with (
            fake_gate(mosquitto_broker, "gate-a") as a,
            fake_gate(mosquitto_broker, "gate-b") as b,
        ):
            for i in range(0, 1000, 50):
                await a.send(chains["gate-a"][i : i + 50])
                await b.send(chains["gate-b"][i : i + 50])
            await a.wait_ack(lambda ack: ack.seq == 1000, 60)
            await b.wait_ack(lambda ack: ack.seq == 1000, 60)
        assert s1.counters.messages > 0 and s2.counters.messages > 0
        assert s1.counters.messages + s2.counters.messages == 40
        assert s1.counters.events + s2.counters.events == 2000
    with reading(db) as store:
        for g in gates:
            assert store.count(g) == 1000
            assert list(store.events(g)) == chains[g]
            assert store.verify(g) is None
        assert store.dead_letters() == []


async def test_batches_queued_while_the_sink_was_down_are_delivered(
    mosquitto_broker: Broker, dsn: str
) -> None:
    rows = make_chain("gate-a", 500)
    opts = options(mosquitto_broker, dsn, client_id="sink-persistent")
    async with running(opts):
        pass  # the broker now holds this instance's session and subscription
    async with fake_gate(mosquitto_broker) as gate:
        for i in range(0, 500, 100):
            await gate.send(rows[i : i + 100])  # PUBACKed by the broker, queued for the sink
        async with running(opts) as sink:
            await gate.wait_ack(lambda a: a.seq == 500)
            assert sink.counters.events == 500
    with reading(dsn) as store:
        assert store.count("gate-a") == 500


async def test_sink_reconnects_after_the_broker_restarts(
    mosquitto_broker: Broker, dsn: str
) -> None:
    rows = make_chain("gate-a", 20)
    async with running(options(mosquitto_broker, dsn)) as sink:
        async with fake_gate(mosquitto_broker) as gate:
            await gate.send(rows[:10])
            await gate.wait_ack(lambda a: a.seq == 10)
        await mosquitto_broker.arestart()
        await sink.wait_ready(WAIT)
        async with fake_gate(mosquitto_broker) as gate:
            await gate.send(rows[10:])
            await gate.wait_ack(lambda a: a.seq == 20)
        assert sink.counters.connects >= 2


async def test_statuses_are_tracked_and_requests_handed_over(
    mosquitto_broker: Broker, dsn: str
) -> None:
    online = Status("gate-a", "online", 10, 8, 3, 1_795_000_000_000_000_000)
    got: list[tuple[str, SnapshotRequest]] = []
    called = asyncio.Event()

    async def on_request(site: str, request: SnapshotRequest) -> None:
        got.append((site, request))
        called.set()

    async with mosquitto_broker.client("gate-a", tls=True) as gate:
        topics = Topics(SITE, "gate-a")
        # Retained before the sink starts: it still learns the status on subscribing.
        await gate.publish(topics.status, encode_status(online), qos=1, retain=True)
        async with running(options(mosquitto_broker, dsn), on_request=on_request) as sink:
            await eventually(lambda: "gate-a" in sink.statuses, "status seen", within=WAIT)
            assert sink.statuses["gate-a"] == online
            await gate.publish(topics.status, encode_status(online.offline()), qos=1, retain=True)
            await eventually(
                lambda: sink.statuses["gate-a"].state == "offline", "offline", within=WAIT
            )
            request = SnapshotRequest("gate-a", 3, "version gap: have 3, delta 5->6")
            await gate.publish(topics.requests, encode_request(request), qos=1)
            async with asyncio.timeout(WAIT):
                await called.wait()
            assert got == [(SITE, request)]
            assert list(sink.requests) == [(SITE, request)]
            # Central never published a snapshot to the gate: a dead letter says what to run.
            await eventually(lambda: sink.counters.dead_letters == 1, "no snapshot", within=WAIT)
            # Garbage on status is kept as a dead letter, and nothing else changes.
            await gate.publish(topics.status, b"\x00", qos=1)
            await eventually(lambda: sink.counters.dead_letters == 2, "dead-lettered", within=WAIT)
            assert sink.statuses["gate-a"].state == "offline"
        await gate.publish(topics.status, b"", qos=1, retain=True)  # clear the retained one
    with reading(dsn) as store:
        (unanswered, dead) = store.dead_letters()
        assert unanswered.source == topics.requests and unanswered.gate == "gate-a"
        assert "central has recorded no snapshot for it" in unanswered.reason
        assert "`edgegate central publish-allowlist LIST.csv --gate gate-a" in unanswered.reason
        assert dead.source == topics.status and "malformed status" in dead.reason
        # Kept in the store too, for `edgegate central gates`.
        (state,) = store.gate_states()
        assert (state.gate, state.state, state.head_seq, state.synced_seq) == (
            "gate-a",
            "offline",
            10,
            8,
        )


async def test_stopping_stores_and_acks_what_was_received(
    mosquitto_broker: Broker, dsn: str
) -> None:
    rows = make_chain("gate-a", 2000)
    async with fake_gate(mosquitto_broker) as gate:
        async with running(options(mosquitto_broker, dsn)) as sink:
            for i in range(0, 2000, 100):
                await gate.send(rows[i : i + 100])
            await eventually(lambda: sink.counters.messages > 0, "a message", within=WAIT)
        stored = sink.stored_until("gate-a")
        assert stored == sink.counters.events > 0
        # Whatever was stored was acked before the sink let go of the connection.
        await gate.wait_ack(lambda a: a.seq == stored, 5)


@pytest.mark.parametrize("problem", ["password", "ca"])
async def test_refused_connection_is_retried_quietly_and_stops_promptly(
    mosquitto_broker: Broker, dsn: str, problem: str
) -> None:
    good = settings(mosquitto_broker)
    bad = (
        replace(good, password="wrong")
        if problem == "password"
        else replace(good, ca_file=mosquitto_broker.pki.wrong_ca_path)
    )
    opts = replace(options(mosquitto_broker, dsn), broker=bad)
    async with Sink(opts) as sink:
        with pytest.raises(TimeoutError):
            await sink.wait_ready(1.0)
        assert sink.counters.connects == 0
    # Nothing leaked (pytest turns an unclosed socket into an error); a good sink connects.
    async with running(options(mosquitto_broker, dsn)) as sink:
        assert sink.counters.connects == 1


def test_broker_urls() -> None:
    s = BrokerSettings.from_url("mqtts://127.0.0.1", password="pw")
    assert (s.host, s.port, s.tls, s.url) == ("127.0.0.1", 8883, True, "mqtts://127.0.0.1:8883")
    assert BrokerSettings.from_url("mqtt://127.0.0.1:1884").port == 1884
    for url, problem in [
        ("http://127.0.0.1", "use mqtt://"),
        ("mqtt://", "names no host"),
        ("mqtt://127.0.0.1:99999", "out of range"),
        ("mqtt://u:p@127.0.0.1", "--password-file"),
        ("mqtt://127.0.0.1/x", "only scheme, host and port"),
    ]:
        with pytest.raises(BrokerUrlError, match=problem):
            BrokerSettings.from_url(url)
    with pytest.raises(BrokerUrlError, match="not mqtts"):
        BrokerSettings.from_url("mqtt://127.0.0.1", ca_file=__file__)


async def test_unusable_store_is_an_error_at_start(
    mosquitto_broker: Broker, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        async with Sink(options(mosquitto_broker, f"sqlite:///{tmp_path}/no/such/dir/c.db")):
            pass
