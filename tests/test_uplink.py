"""The gate's uplink against a real mosquitto, with central's real sink or a hand-driven peer.

The real sink (``edgegate.central.sink``) is central in the ordinary cases. The cases central
produces only by accident (a lost batch, a missing ack, a bogus ack) use ``Peer``: a test
double of the *remote* side that stores with the real central store and acks — or does not —
as the test says.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import structlog

from edgegate.central.sink import Sink, sink_options
from edgegate.central.store import AsyncStore, CentralStore, open_store
from edgegate.config import parse_config
from edgegate.core.events import DaemonStarted, DaemonStopped, Loop, LoopChanged
from edgegate.log import EventLog
from edgegate.log.eventlog import connect
from edgegate.sync.cursor import CURSOR_NAME, CursorError, read_cursor, write_cursor
from edgegate.sync.protocol import (
    Ack,
    EventBatch,
    Status,
    Topics,
    decode_batch,
    decode_status,
    encode_ack,
    parse_topic,
)
from edgegate.sync.uplink import Uplink, UplinkNotConnected, UplinkOptions
from tests.eventually import eventually
from tests.gate_harness import RunningGate, gate_toml, lane, sim_plc, sim_reader, wait_until
from tests.services.mosquitto import Broker, free_port

pytestmark = pytest.mark.timeout(120)

SITE = "site-1"
GATE = "gate-a"
TOPICS = Topics(SITE, GATE)
WAIT = 30.0


# ------------------------------------------------------------------------------ helpers


@pytest.fixture
async def gate_log(tmp_path: Path) -> AsyncIterator[EventLog]:
    log = await EventLog.open(tmp_path / "gate.db", gate_id=GATE)
    try:
        yield log
    finally:
        await log.aclose()


async def append_events(log: EventLog, n: int) -> int:
    """Append ``n`` small events; return the head."""
    pending: list[asyncio.Future[int]] = []
    for i in range(n):
        event = LoopChanged(lane="in-1", loop=Loop.SAFETY, occupied=bool(i & 1), source="plc-1")
        pending.append(log.submit(event))
        if len(pending) >= 5000:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    return log.head[0]


def options(broker: Broker, *, tls: bool = False, **kw: Any) -> UplinkOptions:
    values: dict[str, Any] = {
        "gate": GATE,
        "site": SITE,
        "host": broker.host,
        "port": broker.tls_port if tls else broker.plain_port,
        "tls": tls,
        "password": broker.users[GATE],
        "ca_file": broker.ca_path if tls else None,
        "reconnect_initial": 0.05,
        "reconnect_max": 0.5,
        "stop_flush_timeout": 5.0,
    }
    values.update(kw)
    return UplinkOptions(**values)


@contextlib.asynccontextmanager
async def central_sink(broker: Broker, tmp_path: Path) -> AsyncIterator[Sink]:
    opts = sink_options(
        f"mqtt://{broker.host}:{broker.plain_port}",
        dsn=f"sqlite:///{tmp_path}/central.db",
        password=broker.users["central"],
        client_id="test-sink",
        backoff_initial=0.05,
        backoff_max=0.5,
    )
    async with Sink(opts) as sink:
        await sink.wait_ready(10)
        yield sink


def _state(store: CentralStore) -> tuple[int, int, object]:
    return store.count(GATE), store.head(GATE)[0], store.verify(GATE)


async def central_state(sink: Sink) -> tuple[int, int, object]:
    """(count, head seq, chain fault) of gate-a at central."""
    return await sink.store.run(_state)


def stored_cursor(path: Path) -> int:
    conn = connect(path, readonly=True)
    try:
        return read_cursor(conn)
    finally:
        conn.close()


class Peer:
    """Central, driven by the test: decodes each batch, lets ``drop`` decide whether it is
    lost (neither stored nor acked), stores the rest with the real store and acks."""

    def __init__(self, broker: Broker, tmp_path: Path) -> None:
        self.broker = broker
        self.store = AsyncStore(open_store(f"sqlite:///{tmp_path}/central.db"))
        self.received: list[tuple[int, int]] = []
        self.dropped: list[tuple[int, int]] = []
        self.drop: Callable[[EventBatch], bool] = lambda batch: False
        self.client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Peer:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.store.aclose()

    async def _run(self) -> None:
        async with self.broker.client("central", identifier="test-peer") as client:
            self.client = client
            await client.subscribe("edgegate/v1/+/+/events", qos=1)
            self._ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                site, gate, _ = parse_topic(message.topic.value)
                batch = decode_batch(message.payload)
                span = (batch.from_seq, batch.to_seq)
                self.received.append(span)
                if self.drop(batch):
                    self.dropped.append(span)
                    continue
                result = await self.store.store_batch(gate, batch.events)
                ack = Ack(gate, result.acked_seq, result.resend_from)
                await client.publish(Topics(site, gate).ack, encode_ack(ack), qos=1)

    async def state(self) -> tuple[int, int, object]:
        """(count, head seq, chain fault) of gate-a at central."""
        return await self.store.run(_state)

    async def send_ack(self, payload: bytes) -> None:
        assert self.client is not None
        await self.client.publish(TOPICS.ack, payload, qos=1)


async def retained_status(broker: Broker) -> Status:
    async with broker.client("central") as client:
        await client.subscribe(TOPICS.status, qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                return decode_status(message.payload)
    raise AssertionError("no status")


# ------------------------------------------------------------------------------ pure parts


async def test_cursor_moves_forward_only_and_never_above_head(event_log: EventLog) -> None:
    head = await append_events(event_log, 10)
    assert await event_log.run_in_writer(read_cursor) == 0
    assert await event_log.run_in_writer(lambda c: write_cursor(c, 7)) == 7
    assert await event_log.run_in_writer(lambda c: write_cursor(c, 3)) == 7  # not back
    with pytest.raises(CursorError, match="above the log's head 10"):
        await event_log.run_in_writer(lambda c: write_cursor(c, head + 1))
    assert await event_log.run_in_writer(read_cursor) == 7
    conn = connect(event_log.path, readonly=True)
    try:
        rows = conn.execute("SELECT name, seq FROM projection_position").fetchall()
    finally:
        conn.close()
    assert rows == [(CURSOR_NAME, 7)]


def test_options_from_config(tmp_path: Path) -> None:
    text = gate_toml(
        tmp_path / "gate.db",
        {"plc": sim_plc(), "cam": sim_reader()},
        [lane("l1", "entry", "cam", "plc")],
    )
    text += (
        '\n[sync]\nbroker = "mqtts://127.0.0.1:18883"\npassword_file = "secrets/mqtt"\n'
        'ca_file = "/etc/edgegate/ca.crt"\ncentral_public_key = "central.pub"\n'
        'batch_max_events = 2000\nbatch_max_bytes = "1MiB"\nreconnect_max = "10s"\n'
    )
    config = parse_config(text, base_dir=tmp_path)
    opts = UplinkOptions.from_config(config)
    assert (opts.gate, opts.site, opts.username) == ("e2e-gate", "test", "e2e-gate")
    assert (opts.host, opts.port, opts.tls) == ("127.0.0.1", 18883, True)
    assert opts.password is None
    assert opts.password_file == tmp_path / "secrets/mqtt"
    assert opts.ca_file == Path("/etc/edgegate/ca.crt")
    assert (opts.batch_max_events, opts.batch_max_bytes) == (2000, 1 << 20)
    assert (opts.reconnect_max, opts.keepalive, opts.ack_timeout) == (10.0, 30.0, 10.0)
    assert opts.identifier == "edgegate-e2e-gate"


# ------------------------------------------------------------------------------ delivery


async def test_backlog_is_delivered_exactly_once(
    mosquitto_broker: Broker, gate_log: EventLog, tmp_path: Path
) -> None:
    head = await append_events(gate_log, 30_000)
    async with central_sink(mosquitto_broker, tmp_path) as sink:
        uplink = Uplink(gate_log, options(mosquitto_broker, batch_max_events=2000))
        async with uplink:
            async with asyncio.timeout(WAIT):
                await uplink.wait_synced(head)
            assert uplink.connected.is_set()
            count, central_head, fault = await central_state(sink)
            status = await retained_status(mosquitto_broker)
        assert (count, central_head, fault) == (head, head, None)
        assert sink.counters.duplicates == 0
        assert uplink.batches_sent == head // 2000
        assert uplink.resends == 0
    assert uplink.synced_seq == head
    assert stored_cursor(gate_log.path) == head
    assert (status.state, status.head_seq) == ("online", head)
    after = await retained_status(mosquitto_broker)
    assert (after.state, after.head_seq, after.synced_seq) == ("offline", head, head)


async def test_a_row_edited_into_text_reaches_central_as_bytes_and_is_named(
    mosquitto_broker: Broker, gate_log: EventLog, tmp_path: Path
) -> None:
    """``||`` stores text; the uplink still sends the bytes and central's hash check names the
    seq (not a malformed batch refused whole)."""
    await append_events(gate_log, 12)
    conn = sqlite3.connect(gate_log.path)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET data = X'00' || substr(data, 2) WHERE seq = 6")
    conn.commit()
    conn.close()
    async with (
        central_sink(mosquitto_broker, tmp_path) as sink,
        Uplink(gate_log, options(mosquitto_broker)),
    ):
        await wait_until(lambda: sink.counters.dead_letters > 0, "dead-lettered", WAIT)
        count, central_head, fault = await central_state(sink)
        dead = await sink.store.run(lambda s: s.dead_letters(GATE))
    assert (count, central_head, fault) == (5, 5, None)
    assert "seq 6" in dead[0].reason and "hash does not match" in dead[0].reason


async def test_a_restarted_uplink_resumes_from_its_stored_cursor(
    mosquitto_broker: Broker, gate_log: EventLog, tmp_path: Path
) -> None:
    first = await append_events(gate_log, 10_000)
    async with central_sink(mosquitto_broker, tmp_path) as sink:
        async with Uplink(gate_log, options(mosquitto_broker)) as uplink:
            async with asyncio.timeout(WAIT):
                await uplink.wait_synced(first)
        assert stored_cursor(gate_log.path) == first
        head = await append_events(gate_log, 10_000)
        again = Uplink(gate_log, options(mosquitto_broker))
        async with again:
            async with asyncio.timeout(WAIT):
                await again.wait_synced(head)
        count, central_head, fault = await central_state(sink)
    assert (count, central_head, fault) == (head, head, None)
    # Only the new events were sent: nothing acknowledged before the restart went again.
    assert again.events_sent == head - first
    assert sink.counters.duplicates == 0


async def test_an_uplink_cancelled_mid_stream_resends_at_most_a_window(
    mosquitto_broker: Broker, gate_log: EventLog, tmp_path: Path
) -> None:
    head = await append_events(gate_log, 40_000)
    opts = options(mosquitto_broker, batch_max_events=1000, max_inflight_events=4000)
    async with central_sink(mosquitto_broker, tmp_path) as sink:
        first = Uplink(gate_log, opts)
        task = first.start()
        async with asyncio.timeout(WAIT):
            await first.wait_synced(10_000)
        task.cancel()  # no flush, no offline status: as abrupt as it gets in-process
        await asyncio.gather(task, return_exceptions=True)
        resumed_from = stored_cursor(gate_log.path)
        assert first.acked_seq - resumed_from <= opts.max_inflight_events
        async with Uplink(gate_log, opts) as again:
            async with asyncio.timeout(WAIT):
                await again.wait_synced(head)
        count, central_head, fault = await central_state(sink)
    assert (count, central_head, fault) == (head, head, None)
    # Acks queued in the broker session while it was away may let it skip some of these.
    assert again.events_sent <= head - resumed_from
    # What central got twice is bounded by the window in flight when the first one stopped.
    assert sink.counters.duplicates <= opts.max_inflight_events


async def test_broker_killed_and_restarted_mid_stream(
    mosquitto_broker: Broker, gate_log: EventLog, tmp_path: Path
) -> None:
    broker = mosquitto_broker
    head = await append_events(gate_log, 60_000)
    async with central_sink(broker, tmp_path) as sink:
        uplink = Uplink(gate_log, options(broker, batch_max_events=1000, ack_timeout=2.0))
        async with uplink:
            for _ in range(3):
                target = min(head, uplink.synced_seq + 5000)
                async with asyncio.timeout(WAIT):
                    await uplink.wait_synced(target)
                await broker.arestart(hard=True)
                await append_events(gate_log, 1000)  # the gate goes on meanwhile
            head = gate_log.head[0]
            async with asyncio.timeout(WAIT):
                await uplink.wait_synced(head)
            count, central_head, fault = await central_state(sink)
        assert uplink.connects >= 4
    assert (count, central_head, fault) == (head, head, None)
    assert stored_cursor(gate_log.path) == head


async def test_resend_from_rewinds_the_sender(
    mosquitto_broker: Broker, gate_log: EventLog, tmp_path: Path
) -> None:
    head = await append_events(gate_log, 5000)
    async with Peer(mosquitto_broker, tmp_path) as peer:
        lost: set[int] = set()

        def lose_second_batch_once(batch: EventBatch) -> bool:
            if batch.from_seq == 1001 and 1001 not in lost:
                lost.add(1001)
                return True
            return False

        peer.drop = lose_second_batch_once
        # A long ack timeout: only central's resend_from can bring the lost batch back in time.
        uplink = Uplink(gate_log, options(mosquitto_broker, batch_max_events=1000, ack_timeout=60))
        async with uplink:
            async with asyncio.timeout(WAIT):
                await uplink.wait_synced(head)
        assert peer.dropped == [(1001, 2000)]
        assert peer.received.count((1001, 2000)) == 2
        assert uplink.resends >= 1
        assert await peer.state() == (head, head, None)


async def test_no_ack_means_a_resend_after_the_timeout(
    mosquitto_broker: Broker, gate_log: EventLog, tmp_path: Path
) -> None:
    head = await append_events(gate_log, 300)
    async with Peer(mosquitto_broker, tmp_path) as peer:
        peer.drop = lambda batch: not peer.dropped  # the first delivery vanishes
        uplink = Uplink(gate_log, options(mosquitto_broker, ack_timeout=1.0))
        started = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            async with uplink:
                async with asyncio.timeout(WAIT):
                    await uplink.wait_synced(head)
        took = time.monotonic() - started
        assert peer.received == [(1, head), (1, head)]
        assert 1.0 <= took < 10
        assert [e["event"] for e in logs].count("uplink_ack_timeout") == 1
        assert await peer.state() == (head, head, None)


async def test_bogus_acks_are_logged_and_ignored(
    mosquitto_broker: Broker, gate_log: EventLog, tmp_path: Path
) -> None:
    head = await append_events(gate_log, 100)
    async with Peer(mosquitto_broker, tmp_path) as peer:
        with structlog.testing.capture_logs() as logs:
            async with Uplink(gate_log, options(mosquitto_broker)) as uplink:
                async with asyncio.timeout(WAIT):
                    await uplink.wait_synced(head)
                await peer.send_ack(encode_ack(Ack(GATE, head + 1000)))  # above the head
                await peer.send_ack(b"\x93not an ack")
                await peer.send_ack(encode_ack(Ack("gate-b", 5)))
                await peer.send_ack(encode_ack(Ack(GATE, 10)))  # stale: ignored quietly
                # Still working: new events are sent and acknowledged.
                head = await append_events(gate_log, 10)
                async with asyncio.timeout(WAIT):
                    await uplink.wait_synced(head)
                assert uplink.acked_seq == head
    events = {e["event"]: e for e in logs}
    assert events["uplink_ack_above_head"]["seq"] == 1100
    assert events["uplink_ack_above_head"]["log_level"] == "error"
    assert "not valid msgpack" in events["uplink_ack_malformed"]["error"]
    assert events["uplink_ack_wrong_gate"]["ack_gate"] == "gate-b"
    assert stored_cursor(gate_log.path) == head


async def test_events_appended_while_connected_arrive_promptly(
    mosquitto_broker: Broker, gate_log: EventLog, tmp_path: Path
) -> None:
    async with (
        central_sink(mosquitto_broker, tmp_path) as sink,
        Uplink(gate_log, options(mosquitto_broker)) as uplink,
    ):
        async with asyncio.timeout(10):
            await uplink.connected.wait()
        delays = []
        for _ in range(10):
            seq = await append_events(gate_log, 1)
            started = time.monotonic()
            await sink.wait_head(GATE, seq, 5)
            delays.append(time.monotonic() - started)
            await asyncio.sleep(0.2)  # paces the test: the uplink is idle again before the next
    # Poll interval 50 ms + publish + store + ack: well under a second even on a busy host.
    assert statistics.median(delays) < 0.5, delays


async def test_tls_with_the_ca_and_refusal_of_a_wrong_ca(
    mosquitto_broker: Broker, gate_log: EventLog, tmp_path: Path
) -> None:
    head = await append_events(gate_log, 500)
    wrong = Uplink(gate_log, options(mosquitto_broker, tls=True, ca_file=tmp_path / "none.crt"))
    wrong_ca = options(mosquitto_broker, tls=True, ca_file=mosquitto_broker.pki.wrong_ca_path)
    with structlog.testing.capture_logs() as logs:

        def unreachable(because: str) -> bool:
            states = [
                (e["state"], e.get("detail", "")) for e in logs if e["event"] == "uplink_state"
            ]
            return any(s == "unreachable" and because in d for s, d in states)

        async with wrong, Uplink(gate_log, wrong_ca) as refused:
            await eventually(
                lambda: unreachable("CERTIFICATE_VERIFY_FAILED"), "wrong CA", within=WAIT
            )
            await eventually(lambda: unreachable("No such file"), "missing CA", within=WAIT)
            assert not wrong.connected.is_set()
            assert not refused.connected.is_set()
    async with central_sink(mosquitto_broker, tmp_path) as sink:
        async with Uplink(gate_log, options(mosquitto_broker, tls=True)) as uplink:
            async with asyncio.timeout(WAIT):
                await uplink.wait_synced(head)
        assert (await central_state(sink))[:2] == (head, head)


async def test_wrong_password_retries_quietly_and_the_gate_goes_on(
    mosquitto_broker: Broker, gate_log: EventLog, tmp_path: Path
) -> None:
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("not-the-password\n")
    opts = options(mosquitto_broker, password=None, password_file=password_file, reconnect_max=0.3)
    uplink = Uplink(gate_log, opts)
    with structlog.testing.capture_logs() as logs:
        async with uplink:

            def refusals() -> int:
                return mosquitto_broker.log_text().count("not authorised")

            await eventually(lambda: refusals() >= 1, "refused", within=WAIT)
            # The gate's log is unaffected: appends stay fast while the uplink retries.
            started = time.monotonic()
            await append_events(gate_log, 200)
            assert time.monotonic() - started < 2.0
            await eventually(lambda: refusals() >= 4, "refused 4 times", within=WAIT)
            assert not uplink.connected.is_set()  # kept retrying ...
            # ... and, once the secret is right, connects without a restart.
            password_file.write_text(mosquitto_broker.users[GATE] + "\n")
            async with asyncio.timeout(10):
                await uplink.connected.wait()
    states = [e for e in logs if e["event"] == "uplink_state"]
    refused = [e for e in states if e["state"] == "refused"]
    assert len(refused) == 1, states  # logged once, not per retry
    assert refused[0]["log_level"] == "error"
    assert [e["state"] for e in states] == ["refused", "connected", "stopped"]


async def test_downlink_handlers_share_the_connection(
    mosquitto_broker: Broker, gate_log: EventLog
) -> None:
    got: list[bytes] = []
    arrived = asyncio.Event()

    async def on_command(payload: bytes) -> None:
        if payload == b"boom":
            raise ValueError("handler bug")
        got.append(payload)
        arrived.set()

    hooks: list[str] = []

    async def on_connect() -> None:
        hooks.append("connected")

    uplink = Uplink(gate_log, options(mosquitto_broker))
    uplink.add_subscription(uplink.topics.commands, on_command)
    uplink.add_connect_hook(on_connect)
    with pytest.raises(ValueError, match="already subscribed"):
        uplink.add_subscription(uplink.topics.ack, on_command)
    with pytest.raises(UplinkNotConnected):
        await uplink.publish(uplink.topics.requests, b"x")
    async with (
        mosquitto_broker.client("central") as central,
        uplink,
    ):
        await central.subscribe(TOPICS.requests, qos=1)
        async with asyncio.timeout(10):
            await uplink.connected.wait()
            await central.publish(TOPICS.commands, b"boom", qos=1)
            await central.publish(TOPICS.commands, b"open lane 1", qos=1)
            await arrived.wait()
            await uplink.publish(uplink.topics.requests, b"snapshot please")
            async for message in central.messages:
                assert message.payload == b"snapshot please"
                break
    assert got == [b"open lane 1"]
    assert hooks == ["connected"]


# ------------------------------------------------------------------------------ the daemon


def sync_gate_config(tmp_path: Path, broker_port: int) -> Any:
    (tmp_path / "mqtt-password").write_text("x")
    text = gate_toml(
        tmp_path / "gate.db",
        {"plc": sim_plc(), "cam": sim_reader()},
        [lane("l1", "entry", "cam", "plc")],
    )
    text += (
        f'\n[sync]\nbroker = "mqtt://127.0.0.1:{broker_port}"\n'
        'password_file = "mqtt-password"\ncentral_public_key = "central.pub"\n'
        'reconnect_max = "1s"\n'
    )
    (tmp_path / "central.pub").write_text("not checked by the uplink")
    return parse_config(text, base_dir=tmp_path)


async def test_the_gate_daemon_syncs_its_log(mosquitto_broker: Broker, tmp_path: Path) -> None:
    password = mosquitto_broker.add_gate("e2e-gate")
    config = sync_gate_config(tmp_path, mosquitto_broker.plain_port)
    (tmp_path / "mqtt-password").write_text(password)
    async with central_sink(mosquitto_broker, tmp_path) as sink:
        async with RunningGate(config) as g:
            uplink = g.gate.uplink
            assert uplink is not None
            head = g.event_log.head[0]
            async with asyncio.timeout(WAIT):
                await uplink.wait_synced(head)
        # On stop, daemon.stopped is handed over before the log closes.
        events = await sink.store.run(lambda s: list(s.events("e2e-gate")))
        log_head = stored_cursor(config.log_file)
    types = [row[4] for row in events]
    assert types[0] == DaemonStarted.TYPE
    assert types[-1] == DaemonStopped.TYPE
    assert log_head == len(events)


async def test_the_gate_runs_while_the_broker_is_unreachable(tmp_path: Path) -> None:
    config = sync_gate_config(tmp_path, free_port())  # nobody listens there
    async with RunningGate(config) as g:
        uplink = g.gate.uplink
        assert uplink is not None
        await eventually(lambda: uplink.state == "unreachable", "unreachable", within=WAIT)
        assert not uplink.connected.is_set()
        seq = await g.event_log.append(
            LoopChanged(lane="l1", loop=Loop.ARMING, occupied=True, source="test")
        )
        assert seq > 0
    assert stored_cursor(config.log_file) == 0
