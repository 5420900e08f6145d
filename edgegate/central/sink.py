"""The central sink: stores every gate's event batches from MQTT, then acks them.

(Over 600 lines: reading, grouping, committing, PUBACKs, acks and gap parking share the
byte budget and per-gate heads below; the connection lives in ``edgegate.mqtt.session``.)

``async with Sink(options) as sink:`` connects to the broker as user ``central`` and runs
until the block ends (``edgegate central run`` wraps it). What it does:

- **Events** (``$share/{group}/edgegate/v1/+/+/events``, QoS 1). Several sink instances with
  the same group share the messages; the broker hands each message to one of them. Messages
  that arrived together (up to a size limit) are decoded, checked and stored in ONE
  transaction (``CentralStore.store_batches``, on the store's own thread: the event loop
  never waits for a commit), and only after the commit each gate of the group gets one
  ``Ack(gate, head, resend_from)`` at QoS 1 on its ``ack`` topic.
- **Bad payloads** (not a batch, the batch's gate is not the topic's gate, a broken chain or
  a forged hash) are kept in ``dead_letters`` with the reason, logged, and answered with a
  resend request; the sink goes on with the next message. Nothing is ever raised out of the
  message loop for bad input.
- **Gaps.** A batch that starts above the stored head + 1 is parked for ``gap_wait``
  seconds and retried: with several instances the missing batch is usually in another
  instance's transaction (the broker splits one gate's batches between the instances), and
  one instance may get batches out of order after a resend. Only when the missing events do
  not turn up is the gate asked to ``resend_from`` the first missing seq, at most once per
  ``resend_interval`` per gate for the same seq: a burst of out-of-order batches costs one
  resend, not hundreds.
- **Status** (``edgegate/v1/+/+/status``, not shared, so every instance gets the retained
  statuses on subscribe): the latest per gate is kept in ``statuses`` and in the store
  (``gate_status``, for ``edgegate central gates``); a change between online and offline
  is logged.
- **Requests** (shared, so one instance answers each): a park resend request is answered by
  republishing the site's kept park messages from the one asked for (below). A snapshot
  request is logged, kept in
  ``requests`` and answered from the store's record of central's publications
  (:mod:`edgegate.central.store.publications`): the gate's latest snapshot (retained, as
  when it was first published) and the deltas after it, republished byte for byte as they
  were signed (no key needed). If central never published a snapshot to the gate,
  that is logged as an error and kept as a dead letter saying what to run. It is then also
  handed to the ``on_request`` callback.
- **The park chain** (with ``park_key``, central's dedicated park key, never the master
  key; :mod:`edgegate.central.store.parkentry`): the commit that stores gates' passes
  records one signed park message per site (appointments consumed, vehicles that entered or
  left), numbered in the site's sequence; right after the commit the sink publishes the
  site's unpublished messages up to the new ones, in sequence, on ``edgegate/v1/{site}/park``
  and marks them published once the broker acknowledged them. Every ``outbox_interval`` it
  publishes those any instance left unpublished (after ``outbox_grace``), in sequence, and
  prunes published ones older than ``park_retention``. Without a key it warns at start that
  park-wide consumption is off.

Session and delivery. The sink speaks MQTT 3.1.1 with ``clean_session=False`` and a stable
client id per instance (``--client-id``; default ``edgegate-sink-{hostname}-{group}``), so
its subscriptions and the QoS 1 batches sent to it while it is down stay queued in the
broker (the production broker keeps such a session ``persistent_client_expiration`` = 14
days) and are delivered when it reconnects. Two instances must not share a client id (they
would take the session from each other). An instance retired for good leaves its share of a
shared subscription queued in its session until that expires; the gates resend those
batches after their ack timeout, so nothing is lost, only delayed.

Back-pressure. A QoS 1 message is acknowledged to the broker (PUBACK, in the order received)
only after its group is committed (stored or dead-lettered), and the sink reads its socket
only while the payload bytes it holds (received, not yet committed and PUBACKed) are at
most ``max_inflight_bytes``: beyond, it stops reading until half of that is committed. TCP
flow control then stops the broker, which keeps the rest queued for this client (mosquitto:
up to ``max_queued_messages`` per client; beyond, it drops new messages for this client,
which the gates resend, as their logs keep everything not acked by central). The broker's
inflight window alone is not enough: mosquitto 2.0.11 sends its whole queue after the first
PUBACK. So however big the backlog after an outage, this process holds at most
``max_inflight_bytes`` plus one message of batches. A pause longer than about twice the
``keepalive`` makes paho drop the connection (the broker's PINGRESP is not read while
paused); the sink reconnects and the broker delivers again what was not PUBACKed. Messages
in hand when a connection ends are dropped unacknowledged; the broker delivers them again.
QoS 0 messages (no gate sends events at QoS 0, nothing bounds them) beyond
``max_qos0_queued`` waiting are discarded and counted. Only this sink's ``ack`` (sent after
the commit) advances a gate's cursor; the gate resends everything not acked after a
timeout, and the store is idempotent by (gate, seq). Acks are not waited for (their PUBACK
cannot arrive while reading is paused): a lost ack costs a resend.

The store failing (``StoreError``) drops the connection (so later batches wait in the broker
session instead of being taken and dropped), and the sink reconnects once the store answers
again; the group in hand is not acked and will be resent by the gates. Connection losses
are retried with capped, jittered exponential backoff; nothing here ever gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import random
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgegate.backoff import Backoff
from edgegate.central.store import (
    AsyncStore,
    Batch,
    CentralStore,
    StoreError,
    open_store,
    parkentry,
)
from edgegate.clock import SystemClock
from edgegate.core.clock import Clock
from edgegate.mqtt.session import (
    Attempt,
    BrokerSettings,
    BrokerUrlError,
    MqttSession,
    PausableReader,
    enable_manual_ack,
    new_client,
    puback,
    publish_nowait,
    subscribe,
)
from edgegate.observability import get_logger
from edgegate.sync.park import park_topic
from edgegate.sync.protocol import (
    Ack,
    EventBatch,
    ParkResendRequest,
    ProtocolError,
    Request,
    SnapshotRequest,
    Status,
    Topics,
    check_id,
    decode_batch,
    decode_request,
    decode_status,
    encode_ack,
    encode_request,
    parse_topic,
)
from edgegate.sync.signing import key_id

log = get_logger("central.sink")

DEFAULT_GROUP = "sinks"
DEFAULT_DSN = "sqlite:///central.db"
DEFAULT_USERNAME = "central"
_NS = 1_000_000_000
_CONFIRM_EVERY = 0.1
"""Seconds between two looks for park messages the broker acknowledged."""
_PRUNE_EVERY = 60.0
"""Seconds between two prunings of the park outbox."""
_STABLE_SESSION_S = 10.0
"""A session that lasted this long resets the reconnect backoff (a connection dropped at
once, e.g. by another instance using the same client id, keeps backing off)."""


# ------------------------------------------------------------------------------ broker


def default_client_id(group: str = DEFAULT_GROUP) -> str:
    """``edgegate-sink-{hostname}-{group}``: stable across restarts of one instance."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"edgegate-sink-{host or 'host'}-{group}"


# ------------------------------------------------------------------------------ options


RequestCallback = Callable[[str, SnapshotRequest], "Awaitable[None] | None"]
"""``on_request(site, request)``: sync or async; its exceptions are logged, not raised."""


@dataclass(frozen=True, slots=True)
class SinkOptions:
    broker: BrokerSettings
    dsn: str = DEFAULT_DSN
    group: str = DEFAULT_GROUP
    client_id: str | None = None
    """Stable MQTT client id of this instance (None: ``default_client_id(group)``)."""
    max_group_bytes: int = 8 << 20
    """Payload bytes stored in one transaction at most (a single bigger message still goes)."""
    max_group_messages: int = 1024
    gap_wait: float = 0.5
    """Seconds an out-of-order batch waits for the events before it, before a resend request."""
    gap_retry: float = 0.05
    """Seconds between retries of parked batches while no message arrives."""
    max_parked_events: int = 500_000
    resend_interval: float = 2.0
    """Least seconds between two requests to one gate to resend from the same seq."""
    backoff_initial: float = 0.2
    backoff_max: float = 15.0
    keepalive: int = 30
    timeout: float = 10.0
    """Seconds to wait for the broker's answer to a subscribe or publish."""
    max_inbox_messages: int = 2048
    """Messages taken from aiomqtt and not yet in a group; the reader waits beyond."""
    max_qos0_queued: int = 1000
    """QoS 0 messages waiting to be handled; more are discarded (QoS 1 ones are bounded by
    ``max_inflight_bytes``, see "Back-pressure" in the module docstring)."""
    max_inflight_bytes: int = 32 << 20
    """Payload bytes received and not yet committed; beyond, the sink stops reading from the
    broker until half of them are committed (the broker keeps the rest queued)."""
    park_key: Ed25519PrivateKey | None = None
    """Central's park key (not the master key): with it, each commit of gates' passes is
    published to their site's gates as a signed park message (park-wide consumption);
    None: off, said at start."""
    outbox_interval: float = 2.0
    """Seconds between two looks for park messages left unpublished."""
    outbox_grace: float = 2.0
    """Seconds a park message recorded by another instance may stay unpublished before this
    one publishes it (that instance publishes its own right after its commit)."""
    park_retention: float = 7 * 24 * 3600.0
    """Seconds a published park message is kept for gates that ask for it again."""

    def __post_init__(self) -> None:
        check_id(self.group, "group")
        for name in ("gap_wait", "gap_retry", "resend_interval", "backoff_initial", "timeout"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: must be >= 0")
        if self.backoff_max < self.backoff_initial or self.backoff_max <= 0:
            raise ValueError("backoff_max: must be > 0 and >= backoff_initial")
        if self.max_group_bytes < 1 or self.max_group_messages < 1 or self.keepalive < 5:
            raise ValueError("max_group_bytes, max_group_messages >= 1; keepalive >= 5")
        if self.max_inbox_messages < 1 or self.max_qos0_queued < 1:
            raise ValueError("max_inbox_messages, max_qos0_queued >= 1")
        if self.max_inflight_bytes < 1:
            raise ValueError("max_inflight_bytes: must be >= 1")
        if not (self.outbox_interval > 0 and self.outbox_grace >= 0):
            raise ValueError("outbox_interval: must be > 0; outbox_grace: >= 0")
        if not self.park_retention > 0:
            raise ValueError("park_retention: must be > 0")


@dataclass(slots=True)
class SinkCounters:
    """Running totals since the sink started."""

    messages: int = 0
    batches: int = 0
    """Event batches stored or found already stored (not parked, not refused)."""
    events: int = 0
    """New events stored."""
    duplicates: int = 0
    """Events received again that were already stored."""
    dead_letters: int = 0
    """Payloads or batch parts put in ``dead_letters``."""
    gaps: int = 0
    """Batches parked because events before them were missing."""
    resend_requests: int = 0
    acks: int = 0
    statuses: int = 0
    requests: int = 0
    republished: int = 0
    """Snapshot requests answered with central's recorded publications."""
    connects: int = 0
    store_failures: int = 0
    qos0_discarded: int = 0
    """QoS 0 messages discarded because ``max_qos0_queued`` were waiting."""
    peak_in_hand: int = 0
    """The most messages held at once: received (also those waiting in aiomqtt) and not yet
    acknowledged to the broker."""
    held_bytes: int = 0
    """Payload bytes held now (received, not yet committed and PUBACKed)."""
    peak_held_bytes: int = 0
    """The most payload bytes held at once: at most ``max_inflight_bytes`` + one message."""
    read_pauses: int = 0
    """Times the sink stopped reading from the broker because it held too much."""
    park_entry_recorded: int = 0
    """Park messages this instance's commits recorded (one per site per commit)."""
    park_entry_published: int = 0
    """Park messages published and acknowledged by the broker (also others' left over, and
    resent ones)."""


# ------------------------------------------------------------------------------ internals


@dataclass(slots=True)
class _Pending:
    """A decoded batch on its way to the store (fresh from MQTT, or parked after a gap)."""

    site: str
    batch: EventBatch
    source: str
    fresh: bool
    parked_at_ns: int = 0


@dataclass(frozen=True, slots=True)
class _Refused:
    """A payload that goes to ``dead_letters`` without reaching ``store_batches``."""

    site: str | None
    gate: str | None
    source: str
    payload: bytes
    reason: str
    kind: str = "events"


@dataclass(frozen=True, slots=True)
class _Raw:
    site: str
    gate: str
    topic: str
    payload: bytes


@dataclass(slots=True)
class _GroupOutcome:
    items: list[_Pending]
    results: list[Any]  # StoreResult, in ``items`` order
    refused: list[_Refused]
    heads: dict[str, int] = field(default_factory=dict)
    """Heads of refused messages' gates that had no batch in the group."""
    park_entry: list[parkentry.Outgoing] = field(default_factory=list)
    """Park messages to publish now: each touched site's pending ones up to the new."""


def _decode(raw: _Raw) -> _Pending | _Refused:
    try:
        batch = decode_batch(raw.payload)
    except ProtocolError as exc:
        return _Refused(raw.site, raw.gate, raw.topic, raw.payload, f"malformed event batch: {exc}")
    if batch.gate != raw.gate:
        reason = (
            f"batch of gate {batch.gate!r} published on gate {raw.gate!r}'s topic "
            f"(seq {batch.from_seq}..{batch.to_seq})"
        )
        return _Refused(raw.site, raw.gate, raw.topic, raw.payload, reason)
    return _Pending(raw.site, batch, raw.topic, fresh=True)


def _decode_all(raws: list[_Raw]) -> tuple[list[_Pending], list[_Refused]]:
    pending: list[_Pending] = []
    refused: list[_Refused] = []
    for raw in raws:
        decoded = _decode(raw)
        if isinstance(decoded, _Refused):
            refused.append(decoded)
        else:
            pending.append(decoded)
    return pending, refused


@dataclass(slots=True)
class _Prepared:
    """A group of messages, decoded, ready for the store."""

    pending: list[_Pending]
    refused: list[_Refused]
    messages: list[aiomqtt.Message] = field(default_factory=list)
    """To PUBACK once the group is committed."""
    taken: float = field(default_factory=time.monotonic)
    statuses: list[Status] = field(default_factory=list)
    """Statuses received, to keep in the store."""


def _store_group(
    store: CentralStore, pending: list[_Pending], refused: list[_Refused]
) -> _GroupOutcome:
    """On the store's thread: dead-letter what is refused, store the rest in one transaction."""
    for r in refused:
        store.dead_letter(r.source, r.gate, r.payload, r.reason)
    # Per gate in seq order (stable sort: equal ranges keep arrival order), so batches that
    # arrived out of order within the group, or parked ones, chain on each other.
    items = sorted(pending, key=lambda p: (p.batch.gate, p.batch.from_seq))
    results = (
        store.store_batches([Batch(p.batch.gate, p.batch.events, p.source) for p in items])
        if items
        else []
    )
    gates = {p.batch.gate for p in items}
    made = store.take_park_entry()
    heads = {
        r.gate: store.head(r.gate)[0]
        for r in refused
        if r.kind == "events" and r.gate is not None and r.gate not in gates
    }
    return _GroupOutcome(items, results, refused, heads, made)


def _note_statuses(store: CentralStore, statuses: list[Status]) -> None:
    for st in statuses:
        store.note_status(st)


class _Stopped(Exception):
    pass


# ------------------------------------------------------------------------------ the sink


class Sink:
    """The central sink; see the module docstring. Use as ``async with Sink(options) as s``.

    ``__aenter__`` opens the store (``DsnError``/``StoreError`` if it cannot) and starts
    connecting in the background; ``wait_ready`` waits until subscribed. ``__aexit__``
    finishes the messages already received (stored and acked), then disconnects.
    """

    def __init__(
        self,
        options: SinkOptions,
        *,
        on_request: RequestCallback | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options
        self.client_id = options.client_id or default_client_id(options.group)
        self.counters = SinkCounters()
        self.statuses: dict[str, Status] = {}
        """The latest status of each gate (from the retained ``status`` topics)."""
        self.requests: deque[tuple[str, Request]] = deque(maxlen=1000)
        """The latest requests (snapshot, park resend) as ``(site, request)``."""
        self.stored_events: dict[str, int] = {}
        """New events stored per gate since the start."""
        self.on_acked: Callable[[float], None] | None = None
        """Called once a group's acks are sent, with the seconds since it was taken for
        storing (metrics)."""
        self._on_request = on_request
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._store: AsyncStore | None = None
        self._heads: dict[str, int] = {}
        self._sites: dict[str, str] = {}
        self._progress = asyncio.Condition()
        self._parked: dict[str, list[_Pending]] = {}
        self._parked_events = 0
        self._asked: dict[str, tuple[int, int]] = {}  # gate -> (resend_from, mono_ns)
        self._inbox: deque[aiomqtt.Message] = deque()
        self._incoming: asyncio.Queue[aiomqtt.Message] | None = None  # aiomqtt's queue
        self._held_messages = 0  # received on this connection, not yet PUBACKed
        self._unconfirmed_acks: list[mqtt.MQTTMessageInfo] = []  # no PUBACK read yet
        self._held_bytes = 0  # their payload bytes
        self._client: aiomqtt.Client | None = None  # one client, re-entered on reconnect
        self._reader: PausableReader | None = None  # reads its socket (see "Back-pressure")
        self._backoff = Backoff(options.backoff_initial, options.backoff_max, rng)
        self._mqtt: MqttSession | None = None
        self._problem: str | None = None  # why the last connection attempt ended
        self._room = asyncio.Event()
        """Set when the inbox has room (the reader waits for it)."""
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outbox: asyncio.Task[None] | None = None
        # Park messages published, not yet acknowledged: (messages, paho infos, when), and
        # their (site, seq): not published again by this instance while in flight.
        self._unconfirmed_deltas: list[
            tuple[list[parkentry.Outgoing], list[mqtt.MQTTMessageInfo], float]
        ] = []
        self._in_flight: set[tuple[str, int]] = set()
        self._callbacks: set[asyncio.Task[None]] = set()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def store(self) -> AsyncStore:
        """The store (for reading in tests and tools); only while the sink is open."""
        if self._store is None:
            raise RuntimeError("the sink is not open")
        return self._store

    async def __aenter__(self) -> Sink:
        store = await asyncio.to_thread(open_store, self.options.dsn)
        self._store = AsyncStore(store)
        key = self.options.park_key
        if key is not None:
            store.park_entry = parkentry.Signer(key)
            log.info("park_entry_on", park_key_id=key_id(key.public_key()))
            self._outbox = asyncio.create_task(self._publish_outbox(), name="sink outbox")
        else:
            log.warning(
                "park_entry_off",
                reason="no park key (central run --park-key FILE): an appointment consumed"
                " at one gate still admits at the others until a new list arrives",
            )
        self._task = asyncio.create_task(self._run(), name=f"sink {self.client_id}")
        return self

    @property
    def park_entry(self) -> bool:
        """Whether park-wide consumption is on (the sink was given the park key)."""
        return self.options.park_key is not None

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Store and ack what was received, disconnect, close the store. Idempotent."""
        self._stop.set()
        self._wake.set()
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.cancel()
            await asyncio.gather(outbox, return_exceptions=True)
        task, self._task = self._task, None
        if task is not None:
            # Normally quick (the group in hand is finished); a connect attempt hanging on an
            # unreachable broker is cut short.
            done, _ = await asyncio.wait({task}, timeout=self.options.timeout + 5)
            if not done:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for cb in list(self._callbacks):
            cb.cancel()
        await asyncio.gather(*self._callbacks, return_exceptions=True)
        store, self._store = self._store, None
        if store is not None:
            await store.aclose()

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109 - a test helper
        """Wait until connected and subscribed (``TimeoutError`` after ``timeout`` s)."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def heads(self) -> dict[str, int]:
        """Every gate this instance has stored or heard of, with its stored head."""
        return dict(self._heads)

    def stored_until(self, gate: str) -> int:
        """The highest contiguous seq of ``gate`` this instance knows is stored."""
        return self._heads.get(gate, 0)

    async def wait_head(self, gate: str, seq: int, timeout: float) -> int:  # noqa: ASYNC109
        """Wait until ``stored_until(gate) >= seq``; the head, or ``TimeoutError``."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: self._heads.get(gate, 0) >= seq)
        return self._heads.get(gate, 0)

    # -- connection loop --------------------------------------------------------------------

    async def _run(self) -> None:
        self._mqtt = MqttSession(
            self._connect_client,
            self._session,
            self._failed,
            backoff=self._backoff,
            stop=self._stop,
            # One client, re-entered: its own timeout bounds the CONNACK (see MqttSession).
            connect_timeout=None,
            disconnect_timeout=self.options.timeout,
            stable_after=_STABLE_SESSION_S,
            retrying=self._retrying,
        )
        try:
            await self._mqtt.run()
        finally:
            self._ready.clear()
        log.info("sink_stopped", client_id=self.client_id, **self._counter_fields())

    async def _connect_client(self) -> aiomqtt.Client:
        """The sink's one client (made on first use), after the heads are loaded: connecting
        makes the broker hand over queued batches."""
        self._problem = None
        self._ready.clear()
        await self._load_heads()
        client = self._client
        if client is None:
            opts = self.options
            client = await new_client(
                opts.broker,
                identifier=self.client_id,
                clean_session=False,
                keepalive=opts.keepalive,
                timeout=opts.timeout,
                queue_type=self._queue_type(),
                # Acks are not waited for (see "Back-pressure"): send them all at once.
                max_inflight_messages=4096,
            )
            enable_manual_ack(client)  # PUBACK after the commit: see "Back-pressure"
            self._reader = PausableReader(client, self._socket_opened)
            self._client = client
        return client

    def _failed(self, exc: Exception, attempt: Attempt) -> None:
        self._ready.clear()
        broker = self.options.broker.url
        if isinstance(exc, aiomqtt.MqttError):
            self._problem = f"broker {broker}: {exc}"
            event = "sink_disconnected" if attempt.connected else "sink_connect_failed"
            log.warning(event, broker=broker, error=str(exc))
        elif isinstance(exc, StoreError):
            self.counters.store_failures += 1
            self._problem = f"store: {exc}"
            log.error("sink_store_failed", error=str(exc))
        elif not isinstance(exc, _Stopped):  # a bug: log it, back off, carry on
            self._problem = f"internal error: {exc!r}"
            log.exception("sink_internal_error", error=repr(exc))

    def _retrying(self, delay: float) -> None:
        log.info("sink_reconnecting", retry_in_s=round(delay, 3), reason=self._problem)

    async def _load_heads(self) -> None:
        heads = await self.store.heads()
        async with self._progress:
            for gate, (seq, _) in heads.items():
                if seq > self._heads.get(gate, 0):
                    self._heads[gate] = seq
            self._progress.notify_all()

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        group = self.options.group
        topics = [
            (Topics.shared_events(group), 1),
            (Topics.central_filter("status"), 1),
            (Topics.shared_requests(group), 1),
        ]
        refused = await subscribe(client, topics, self.options.timeout)
        if refused:
            raise aiomqtt.MqttError(
                f"the broker refused the subscription to {', '.join(t for t, _ in refused)} "
                "(check the ACL of user central)"
            )
        assert self._mqtt is not None
        self._mqtt.held()
        self._ready.set()
        log.info("sink_subscribed", topics=[t for t, _ in topics])

    async def _session(self, client: aiomqtt.Client) -> None:
        """Two stages: while the store thread commits group N (then its acks go out), the
        next group is decoded; groups are committed and acked strictly in order.

        Subscribing runs alongside: with a session kept in the broker, queued messages come
        before the SUBACK, and reading may pause until some of them are committed."""
        self.counters.connects += 1
        log.info(
            "sink_connected",
            broker=self.options.broker.url,
            client_id=self.client_id,
            group=self.options.group,
        )
        self._room.set()
        reader = asyncio.create_task(self._read(client), name="sink reader")
        subscribe_task = asyncio.create_task(self._subscribe(client), name="sink subscribe")
        subscribe_task.add_done_callback(lambda _: self._wake.set())
        subscribing: asyncio.Task[None] | None = subscribe_task
        committing: asyncio.Task[None] | None = None
        try:
            while True:
                if subscribing is not None and subscribing.done():
                    done_subscribing, subscribing = subscribing, None
                    done_subscribing.result()  # refused or timed out: a new connection
                if committing is not None and committing.done():
                    done = committing
                    committing = None
                    done.result()  # a failed commit or ack ends the session
                if not self._inbox:
                    if self._stop.is_set():
                        break
                    if reader.done():
                        reader.result()  # raises the MqttError that ended it
                        raise aiomqtt.MqttError("the message stream ended")
                    self._wake.clear()
                    if not self._inbox and not self._stop.is_set() and not reader.done():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(self._retry_delay(committing)):
                                await self._wake.wait()
                        if committing is not None and committing.done():
                            continue
                prepared = await self._prepare(self._take_group())
                if committing is not None:
                    running = committing
                    committing = None
                    await running
                # Every message goes through a commit: that is where it is PUBACKed.
                if prepared.messages or prepared.pending or prepared.refused or self._parked:
                    committing = asyncio.create_task(self._commit(client, prepared))
                    committing.add_done_callback(lambda _: self._wake.set())
            # Stopping: what was received is stored, PUBACKed and acked before leaving;
            # nothing more is read (the rest stays queued in the broker session).
            self._pause()  # resumed no more: _puback checks _stop
            if committing is not None:
                running = committing
                committing = None
                await running
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
            while len(client.messages):
                self._inbox.append(await anext(client.messages))
            while self._inbox:
                await self._commit(client, await self._prepare(self._take_group()))
            await self._confirm_acks()
            raise _Stopped
        finally:
            # A commit cut short here still completes on the store's thread; it is only not
            # acked, and the gate's resend of it is stored idempotently.
            tasks = [t for t in (reader, subscribing, committing) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _confirm_acks(self) -> None:
        """Before disconnecting: read until the broker has PUBACKed the acks sent. Closing
        a socket with unread input makes the kernel send RST, and a broker that had not yet
        read the last acks would lose them (the gates would only resend, but a stopping
        sink should leave nothing to resend). Messages read meanwhile are not PUBACKed and
        stay in the broker's session."""
        waiting = [i for i in self._unconfirmed_acks if not i.is_published()]
        self._unconfirmed_acks = []
        if not waiting or self._reader is None:
            return
        self._reader.resume()
        deadline = time.monotonic() + self.options.timeout

        def wait() -> None:  # paho signals each info's condition from the loop's thread
            for info in waiting:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))

        await asyncio.to_thread(wait)

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            limit = self.options.max_inbox_messages
            async for message in client.messages:
                self._inbox.append(message)
                self._wake.set()
                while len(self._inbox) >= limit:  # the store lags: leave the rest queued
                    self._room.clear()
                    await self._room.wait()
        finally:
            self._wake.set()

    def _retry_delay(self, committing: asyncio.Task[None] | None) -> float | None:
        return self.options.gap_retry if self._parked and committing is None else None

    def _take_group(self) -> list[aiomqtt.Message]:
        opts = self.options
        group: list[aiomqtt.Message] = []
        size = 0
        inbox = self._inbox
        while inbox and len(group) < opts.max_group_messages:
            n = len(_payload(inbox[0]))
            if group and size + n > opts.max_group_bytes:
                break
            group.append(inbox.popleft())
            size += n
        self._room.set()
        return group

    # -- one group of messages --------------------------------------------------------------

    async def _prepare(self, messages: list[aiomqtt.Message]) -> _Prepared:
        """Sort a group by topic: statuses and requests are handled here; event batches
        are decoded on a worker thread (not the store's: that one is committing)."""
        raws: list[_Raw] = []
        refused: list[_Refused] = []
        statuses: list[Status] = []
        for message in messages:
            self.counters.messages += 1
            topic = message.topic.value
            payload = _payload(message)
            try:
                site, gate, kind = parse_topic(topic)
            except ProtocolError as exc:
                refused.append(_Refused(None, None, topic, payload, str(exc), kind="topic"))
                continue
            if kind == "events":
                raws.append(_Raw(site, gate, topic, payload))
            elif kind == "status":
                bad = self._on_status(site, gate, payload, retained=bool(message.retain))
                if bad is not None:
                    refused.append(_Refused(site, gate, topic, payload, bad, kind="status"))
                elif payload and gate in self.statuses:
                    statuses.append(self.statuses[gate])
            elif kind == "requests":
                bad = self._on_request_message(site, gate, payload)
                if bad is not None:
                    refused.append(_Refused(site, gate, topic, payload, bad, kind="requests"))
            else:  # not subscribed to; a broker misrouting is still no reason to crash
                reason = f"unexpected topic kind {kind!r}"
                refused.append(_Refused(site, gate, topic, payload, reason, kind="topic"))
        if not raws:
            return _Prepared([], refused, messages, statuses=statuses)
        pending, bad_batches = await asyncio.to_thread(_decode_all, raws)
        return _Prepared(pending, refused + bad_batches, messages, statuses=statuses)

    async def _commit(self, client: aiomqtt.Client, prepared: _Prepared) -> None:
        """Store a prepared group (with the parked batches due again), then ack it."""
        pending = self._take_parked() + prepared.pending
        refused = prepared.refused
        if prepared.statuses:
            statuses = prepared.statuses
            await self.store.run(lambda s: _note_statuses(s, statuses))
        if not pending and not refused:
            self._puback(client, prepared.messages)
            return
        outcome = await self.store.run(lambda s: _store_group(s, pending, refused))
        self._puback(client, prepared.messages)
        await self._after_commit(client, outcome)
        if self.on_acked is not None and outcome.items:
            self.on_acked(time.monotonic() - prepared.taken)

    def _puback(self, client: aiomqtt.Client, messages: list[aiomqtt.Message]) -> None:
        """Acknowledge ``messages`` to the broker, in the order they were received."""
        for message in messages:
            puback(client, message)
        self._held_messages -= len(messages)
        self._held_bytes -= sum(len(_payload(m)) for m in messages)
        self.counters.held_bytes = self._held_bytes
        reader = self._reader
        if (
            reader is not None
            and reader.paused
            and not self._stop.is_set()  # stopping: read nothing more
            and self._held_bytes <= self.options.max_inflight_bytes // 2
        ):
            reader.resume()

    # -- reading the socket (back-pressure) -------------------------------------------------
    #
    # aiomqtt reads the socket whenever it is readable and queues every message, with no way
    # to stop; the sink's ``PausableReader`` (edgegate.mqtt.session) reads it instead, and
    # ``_pause`` stops it between two packets.

    def _socket_opened(self) -> None:
        # Left from the previous connection: never PUBACKed, the broker delivers them again
        # (their packet ids belong to the old connection).
        self._inbox.clear()
        if self._incoming is not None:
            while not self._incoming.empty():
                self._incoming.get_nowait()
        self._held_messages = self._held_bytes = self.counters.held_bytes = 0

    def _received(self, message: aiomqtt.Message) -> None:
        """A message was queued by aiomqtt (on paho's read, right after its last byte)."""
        self._held_messages += 1
        self._held_bytes += len(_payload(message))
        c = self.counters
        c.held_bytes = self._held_bytes
        c.peak_held_bytes = max(c.peak_held_bytes, self._held_bytes)
        c.peak_in_hand = max(c.peak_in_hand, self._held_messages)
        reader = self._reader
        if (
            self._held_bytes > self.options.max_inflight_bytes
            and reader is not None
            and not reader.paused
        ):
            self.counters.read_pauses += 1
            log.debug("sink_read_paused", held_bytes=self._held_bytes)
            reader.pause()

    def _pause(self) -> None:
        if self._reader is not None:
            self._reader.pause()

    def _queue_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """aiomqtt's incoming queue: QoS 1 messages are bounded by the broker's inflight
        window (they are PUBACKed once stored); QoS 0 ones beyond ``max_qos0_queued``
        waiting are discarded here, as nothing else bounds them."""
        sink = self
        counters = self.counters
        cap = self.options.max_qos0_queued

        class IncomingQueue(asyncio.Queue[aiomqtt.Message]):
            qos0 = 0

            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                sink._incoming = self

            def put_nowait(self, item: aiomqtt.Message) -> None:
                if item.qos == 0:
                    if self.qos0 >= cap:
                        counters.qos0_discarded += 1
                        if counters.qos0_discarded % 1000 == 1:
                            log.warning(
                                "qos0_discarded",
                                topic=item.topic.value,
                                total=counters.qos0_discarded,
                            )
                        return
                    self.qos0 += 1
                super().put_nowait(item)
                sink._received(item)

            def get_nowait(self) -> aiomqtt.Message:
                item = super().get_nowait()
                if item.qos == 0:
                    self.qos0 -= 1
                return item

        return IncomingQueue

    async def _after_commit(self, client: aiomqtt.Client, outcome: _GroupOutcome) -> None:
        now = self._clock.mono_ns()
        before = dict(self._heads)
        fresh: set[str] = set()
        resend: set[str] = set()
        gaps: list[_Pending] = []
        c = self.counters

        for r in outcome.refused:
            c.dead_letters += 1
            log.warning(
                "payload_dead_lettered",
                source=r.source,
                site=r.site,
                gate=r.gate,
                bytes=len(r.payload),
                reason=r.reason,
            )
            if r.kind == "events" and r.gate is not None and r.site is not None:
                self._sites[r.gate] = r.site
                fresh.add(r.gate)
                resend.add(r.gate)
        for gate, seq in outcome.heads.items():
            self._heads[gate] = max(self._heads.get(gate, 0), seq)

        for p, res in zip(outcome.items, outcome.results, strict=True):
            b = p.batch
            gate = b.gate
            self._sites[gate] = p.site
            if p.fresh:
                fresh.add(gate)
            self._heads[gate] = max(self._heads.get(gate, 0), res.acked_seq)
            if res.fault is not None:
                c.dead_letters += 1
                log.warning(
                    "batch_dead_lettered",
                    source=p.source,
                    gate=gate,
                    from_seq=b.from_seq,
                    to_seq=b.to_seq,
                    stored=res.stored,
                    refused=res.dead_lettered,
                    reason=res.fault,
                )
                if res.resend_from is not None:
                    resend.add(gate)
            elif res.resend_from is not None and res.stored == 0:
                gaps.append(p)
                continue
            c.batches += 1
            c.events += res.stored
            self.stored_events[gate] = self.stored_events.get(gate, 0) + res.stored
            c.duplicates += res.duplicates

        for p in gaps:
            self._park_or_give_up(p, now, resend)

        for gate in list(self._parked):
            # Parked batches the head has since passed are done with.
            head = self._heads.get(gate, 0)
            kept = [p for p in self._parked[gate] if p.batch.to_seq > head]
            self._unpark(gate, kept)

        acks: list[Ack] = []
        for gate in sorted(
            fresh | resend | {g for g, s in self._heads.items() if s != before.get(g, 0)}
        ):
            if gate not in self._sites:
                continue
            head = self._heads.get(gate, 0)
            resend_from = None
            if gate in resend and self._may_request(gate, head + 1, now):
                resend_from = head + 1
                c.resend_requests += 1
                self._unpark(gate, [])  # the gate resends them anyway
                log.info(
                    "resend_requested", gate=gate, site=self._sites[gate], resend_from=head + 1
                )
            acks.append(Ack(gate, head, resend_from))

        if outcome.park_entry:
            c.park_entry_recorded += sum(1 for o in outcome.park_entry if o.fresh)
            self._publish_park(client, outcome.park_entry)
        async with self._progress:
            self._progress.notify_all()
        if acks:
            # Queued at once, not waited for: their PUBACK cannot be read while reading is
            # paused, and a lost ack only makes the gate resend (stored idempotently).
            self._unconfirmed_acks = [i for i in self._unconfirmed_acks if not i.is_published()]
            for a in acks:
                self._unconfirmed_acks.append(
                    publish_nowait(client, Topics(self._sites[a.gate], a.gate).ack, encode_ack(a))
                )
            c.acks += len(acks)
            log.debug("acked", acks=[(a.gate, a.seq, a.resend_from) for a in acks])

    # -- the park chain (see edgegate.central.store.parkentry) -----------------------------

    def _publish_park(self, client: aiomqtt.Client, made: list[parkentry.Outgoing]) -> None:
        """Publish park messages at QoS 1 on their site's park topic, in the order given
        (each site's in sequence), skipping those this instance has in flight already (sent
        earlier on this connection, so in order); marked published in the store once the
        broker has acknowledged them (``_publish_outbox`` checks)."""
        fresh = [o for o in made if (o.site, o.seq) not in self._in_flight]
        if not fresh:
            return
        infos = []
        try:
            for o in fresh:
                infos.append(publish_nowait(client, park_topic(o.site), o.payload))
        except aiomqtt.MqttError as exc:  # disconnected: the outbox publishes them later
            log.warning("park_entry_not_published", messages=len(fresh), error=str(exc))
            return
        log.info("park_entry_published", messages=[(o.site, o.seq) for o in fresh])
        self._in_flight.update((o.site, o.seq) for o in fresh)
        self._unconfirmed_deltas.append((fresh, infos, time.monotonic()))

    async def _publish_outbox(self) -> None:
        """Mark park messages the broker acknowledged as published (every
        ``_CONFIRM_EVERY`` s; one not acknowledged within ``timeout`` stays in the outbox),
        every ``outbox_interval`` s publish those left unpublished longer than
        ``outbox_grace`` (by an instance that stopped, or by this one before a disconnect),
        in sequence, and every ``_PRUNE_EVERY`` s prune those past ``park_retention``."""
        opts = self.options
        sweep_at = time.monotonic() + opts.outbox_interval
        prune_at = time.monotonic()
        while True:
            await asyncio.sleep(min(_CONFIRM_EVERY, opts.outbox_interval))
            try:
                await self._confirm_deltas()
                client = self._client
                if time.monotonic() >= prune_at:
                    prune_at = time.monotonic() + _PRUNE_EVERY
                    before = time.time_ns() - int(opts.park_retention * _NS)
                    pruned = await self.store.run(functools.partial(_prune, before=before))
                    if pruned:
                        log.info("park_outbox_pruned", messages=pruned)
                if time.monotonic() < sweep_at or client is None or not self._ready.is_set():
                    continue
                sweep_at = time.monotonic() + opts.outbox_interval
                before = time.time_ns() - int(opts.outbox_grace * _NS)
                left = await self.store.run(functools.partial(_pending, before=before))
            except StoreError as exc:
                log.warning("park_entry_outbox_failed", error=str(exc))
                continue
            except Exception as exc:  # a bug: log it and carry on, as the sink does
                log.exception("park_entry_outbox_internal_error", error=repr(exc))
                continue
            if left:
                log.info("park_entry_republishing", messages=len(left))
                self._publish_park(client, left)

    async def _confirm_deltas(self) -> None:
        done: list[parkentry.Outgoing] = []
        keep = []
        now = time.monotonic()
        for made, infos, at in self._unconfirmed_deltas:
            if all(i.is_published() for i in infos):
                done.extend(made)
            elif now - at < self.options.timeout:
                keep.append((made, infos, at))
            else:  # not acknowledged: the sweep publishes them again
                self._in_flight.difference_update((o.site, o.seq) for o in made)
        self._unconfirmed_deltas = keep
        if done:
            await self.store.run(lambda s: s.park_entry_published(done))
            self._in_flight.difference_update((o.site, o.seq) for o in done)
            self.counters.park_entry_published += len(done)

    async def _answer_park(self, site: str, request: ParkResendRequest) -> None:
        """Republish ``site``'s kept park messages from ``request.from_seq`` (and those
        recorded since ``request.since_ns``), in sequence; every gate of the site sees them
        and takes only what it lacks."""
        try:
            found = await self.store.run(
                lambda s: s.park_resend(site, request.from_seq, request.since_ns)
            )
            client = self._client
            if client is None:
                raise aiomqtt.MqttError("not connected")
            for o in found:
                publish_nowait(client, park_topic(site), o.payload)
            self.counters.republished += 1
            log.info(
                "park_resent",
                site=site,
                gate=request.gate,
                from_seq=request.from_seq,
                since_ns=request.since_ns,
                first=found[0].seq if found else None,
                last=found[-1].seq if found else None,
            )
        except (aiomqtt.MqttError, StoreError) as exc:
            # The gate asks again at its next gap or connect.
            log.error("park_resend_failed", site=site, gate=request.gate, error=str(exc))

    def _park_or_give_up(self, p: _Pending, now: int, resend: set[str]) -> None:
        gate = p.batch.gate
        head = self._heads.get(gate, 0)
        if p.batch.to_seq <= head:
            return
        if p.fresh:
            p.parked_at_ns = now
            p.fresh = False
            self.counters.gaps += 1
            log.debug(
                "batch_parked",
                gate=gate,
                from_seq=p.batch.from_seq,
                to_seq=p.batch.to_seq,
                head=head,
            )
        waited = now - p.parked_at_ns
        n = len(p.batch.events)
        if (
            waited < self.options.gap_wait * _NS
            and self._parked_events + n <= self.options.max_parked_events
        ):
            self._parked.setdefault(gate, []).append(p)
            self._parked_events += n
        else:
            resend.add(gate)

    def _take_parked(self) -> list[_Pending]:
        out = [p for ps in self._parked.values() for p in ps]
        self._parked.clear()
        self._parked_events = 0
        return out

    def _unpark(self, gate: str, keep: list[_Pending]) -> None:
        old = self._parked.pop(gate, [])
        self._parked_events -= sum(len(p.batch.events) for p in old)
        if keep:
            self._parked[gate] = keep
            self._parked_events += sum(len(p.batch.events) for p in keep)

    def _may_request(self, gate: str, seq: int, now: int) -> bool:
        last = self._asked.get(gate)
        if (
            last is not None
            and last[0] == seq
            and now - last[1] < self.options.resend_interval * _NS
        ):
            return False
        self._asked[gate] = (seq, now)
        return True

    # -- status and requests ----------------------------------------------------------------

    def _on_status(self, site: str, gate: str, payload: bytes, *, retained: bool) -> str | None:
        """Track a gate's status; the reason if the payload is refused (to dead-letter)."""
        if not payload:
            return None  # a retained status being cleared
        self.counters.statuses += 1
        try:
            status = decode_status(payload)
            if status.gate != gate:
                raise ProtocolError(f"status of gate {status.gate!r} on gate {gate!r}'s topic")
        except ProtocolError as exc:
            reason = f"malformed status: {exc}"
            log.warning("status_refused", site=site, gate=gate, reason=reason, retained=retained)
            # A retained one comes back on every subscribe: it was kept when it was live.
            return None if retained else reason
        previous = self.statuses.get(gate)
        self.statuses[gate] = status
        if previous is None or previous.state != status.state:
            log.info(
                f"gate_{status.state}",
                site=site,
                gate=gate,
                head_seq=status.head_seq,
                synced_seq=status.synced_seq,
                allowlist_version=status.allowlist_version,
                at_ns=status.at_ns,
            )
        return None

    def _on_request_message(self, site: str, gate: str, payload: bytes) -> str | None:
        try:
            request = decode_request(payload)
            if request.gate != gate:
                raise ProtocolError(f"request of gate {request.gate!r} on gate {gate!r}'s topic")
        except ProtocolError as exc:
            return f"malformed request: {exc}"
        self.counters.requests += 1
        self.requests.append((site, request))
        callbacks: list[Coroutine[Any, Any, None]]
        if isinstance(request, ParkResendRequest):
            event, callbacks = "park_resend_requested", [self._answer_park(site, request)]
        else:
            event, callbacks = "snapshot_requested", [self._answer(site, request)]
            if self._on_request is not None:
                callbacks.append(self._call_back(site, request))
        log.info(event, site=site, **asdict(request))
        for cb in callbacks:
            task = asyncio.create_task(cb)
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)
        return None

    async def _answer(self, site: str, request: SnapshotRequest) -> None:
        """Republish ``request.gate``'s latest recorded snapshot and the deltas after it."""
        gate = request.gate
        try:
            found = await self.store.run(lambda s: s.latest_publications(gate))
            if not found:
                reason = (
                    f"gate {gate} asked for an allow-list snapshot (it has version"
                    f" {request.have_version}: {request.reason}) but central has recorded no"
                    f" snapshot for it: publish one with `edgegate central publish-allowlist"
                    f" LIST.csv --gate {gate} --site {site} --key central.key --db DSN`"
                )
                log.error("snapshot_unavailable", site=site, gate=gate, reason=reason)
                payload = encode_request(request)
                await self.store.dead_letter(Topics(site, gate).requests, gate, payload, reason)
                self.counters.dead_letters += 1
                return
            client = self._client
            if client is None:
                raise aiomqtt.MqttError("not connected")
            topic = Topics(site, gate).allowlist
            for p in found:
                # In order on one connection at QoS 1: the snapshot, then each delta on it.
                publish_nowait(client, topic, p.payload, retain=p.kind == "snapshot")
            self.counters.republished += 1
            log.info(
                "snapshot_republished",
                site=site,
                gate=gate,
                have_version=request.have_version,
                snapshot_version=found[0].version,
                delta_versions=[p.version for p in found[1:]],
                recorded_by=found[0].recorded_by,
            )
        except (aiomqtt.MqttError, StoreError) as exc:
            # The gate asks again after its next connect or gap.
            log.error("snapshot_republish_failed", site=site, gate=gate, error=str(exc))

    async def _call_back(self, site: str, request: SnapshotRequest) -> None:
        assert self._on_request is not None
        try:
            result = self._on_request(site, request)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.exception("request_callback_failed", gate=request.gate, error=str(exc))

    def _counter_fields(self) -> dict[str, int]:
        c = self.counters
        return {
            "messages": c.messages,
            "batches": c.batches,
            "events": c.events,
            "duplicates": c.duplicates,
            "dead_letters": c.dead_letters,
            "resend_requests": c.resend_requests,
        }


def _pending(store: CentralStore, before: int) -> list[parkentry.Outgoing]:
    return store.park_entry_pending(before)


def _prune(store: CentralStore, before: int) -> int:
    return store.park_prune(before)


def _payload(message: aiomqtt.Message) -> bytes:
    p = message.payload
    if isinstance(p, bytes):
        return p
    if isinstance(p, bytearray):
        return bytes(p)
    return b"" if p is None else str(p).encode()


def sink_options(
    broker: str,
    *,
    dsn: str = DEFAULT_DSN,
    username: str | None = DEFAULT_USERNAME,
    password: str | None = None,
    ca_file: Path | str | None = None,
    group: str = DEFAULT_GROUP,
    client_id: str | None = None,
    **kwargs: Any,
) -> SinkOptions:
    """``SinkOptions`` from a broker URL and the ``central run`` settings."""
    settings = BrokerSettings.from_url(
        broker, username=username, password=password, ca_file=ca_file
    )
    return SinkOptions(settings, dsn=dsn, group=group, client_id=client_id, **kwargs)


__all__ = [
    "DEFAULT_DSN",
    "DEFAULT_GROUP",
    "DEFAULT_USERNAME",
    "BrokerSettings",
    "BrokerUrlError",
    "RequestCallback",
    "Sink",
    "SinkCounters",
    "SinkOptions",
    "default_client_id",
    "sink_options",
]
