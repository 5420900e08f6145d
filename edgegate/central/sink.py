"""The central sink: stores every gate's event batches from MQTT, then acks them.

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
  statuses on subscribe): the latest per gate is kept in ``statuses``; a change between
  online and offline is logged.
- **Requests** (shared): snapshot requests are logged, kept in ``requests`` and handed to the
  ``on_request`` callback (e.g. an allow-list publisher).

Session and delivery. The sink speaks MQTT 3.1.1 with ``clean_session=False`` and a stable
client id per instance (``--client-id``; default ``edgegate-sink-{hostname}-{group}``), so
its subscriptions and the QoS 1 batches sent to it while it is down stay queued in the
broker (the production broker keeps such a session ``persistent_client_expiration`` = 14
days) and are delivered when it reconnects. Two instances must not share a client id (they
would take the session from each other). An instance retired for good leaves its share of a
shared subscription queued in its session until that expires; the gates resend those
batches after their ack timeout, so nothing is lost, only delayed.

Back-pressure. A QoS 1 message is acknowledged to the broker (PUBACK, in the order received)
only after its group is committed (stored or dead-lettered). The broker sends a client at
most ``max_inflight_messages`` unacknowledged messages (production: 100) and keeps the rest
queued in the session, so when the store lags the backlog waits in the broker and in the
gates' own logs, not in this process: the messages in hand are bounded by that window times
a message's size (the gates' ``batch_max_bytes``). paho and aiomqtt would otherwise PUBACK
and queue every message on arrival, without bound. Caveat: mosquitto 2.0.11 keeps the window
only until the first PUBACK and then sends its whole queue for the client, so with that
broker the bound holds while the store is stalled, not while it is merely slow. Messages
in hand when a session ends are dropped unacknowledged; the broker delivers them again.
QoS 0 messages (no gate sends events at QoS 0, nothing bounds them) beyond
``max_qos0_queued`` waiting are discarded and counted. Only this sink's ``ack`` (sent after
the commit) advances a gate's cursor; the gate
resends everything not acked after a timeout, and the store is idempotent by (gate, seq).

The store failing (``StoreError``) drops the connection (so later batches wait in the broker
session instead of being taken and dropped), and the sink reconnects once the store answers
again; the group in hand is not acked and will be resent by the gates. Connection losses
are retried with capped, jittered exponential backoff; nothing here ever gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from edgegate.central.store import AsyncStore, Batch, CentralStore, StoreError, open_store
from edgegate.clock import SystemClock
from edgegate.core.clock import Clock
from edgegate.observability import get_logger
from edgegate.sync.mqtt_sockets import close_leaked_sockets
from edgegate.sync.protocol import (
    Ack,
    EventBatch,
    ProtocolError,
    SnapshotRequest,
    Status,
    Topics,
    check_id,
    decode_batch,
    decode_request,
    decode_status,
    encode_ack,
    parse_topic,
)

log = get_logger("central.sink")

DEFAULT_GROUP = "sinks"
DEFAULT_DSN = "sqlite:///central.db"
DEFAULT_USERNAME = "central"
_NS = 1_000_000_000
_STABLE_SESSION_S = 10.0
"""A session that lasted this long resets the reconnect backoff (a connection dropped at
once, e.g. by another instance using the same client id, keeps backing off)."""


# ------------------------------------------------------------------------------ broker


class BrokerUrlError(ValueError):
    """A broker URL or TLS setting that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where and how central connects: ``mqtt://host[:1883]`` or ``mqtts://host[:8883]``."""

    host: str
    port: int
    tls: bool
    username: str | None = DEFAULT_USERNAME
    password: str | None = None
    ca_file: Path | None = None
    """CA certificate(s) to verify the broker with (TLS only); None: the system's CAs."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        username: str | None = DEFAULT_USERNAME,
        password: str | None = None,
        ca_file: Path | str | None = None,
    ) -> BrokerSettings:
        """Settings for ``url``; ``BrokerUrlError`` naming the problem otherwise."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise BrokerUrlError(f"broker URL {url!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("mqtt", "mqtts"):
            raise BrokerUrlError(
                f"broker URL {url!r}: use mqtt://HOST:PORT or mqtts://HOST:PORT (TLS)"
            )
        if not parts.hostname:
            raise BrokerUrlError(f"broker URL {url!r} names no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise BrokerUrlError(f"broker URL {url!r}: only scheme, host and port are allowed")
        if parts.username is not None or parts.password is not None:
            raise BrokerUrlError(
                f"broker URL {url!r}: give the user with --username and the password "
                "with --password-file, not in the URL"
            )
        tls = scheme == "mqtts"
        ca = Path(ca_file) if ca_file is not None else None
        if ca is not None and not tls:
            raise BrokerUrlError(f"a CA file was given but broker URL {url!r} is not mqtts://")
        if ca is not None and not ca.is_file():
            raise BrokerUrlError(f"CA file {ca} does not exist or is not a file")
        return cls(
            host=parts.hostname,
            port=port if port is not None else (8883 if tls else 1883),
            tls=tls,
            username=username,
            password=password,
            ca_file=ca,
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def client(
        self, *, identifier: str | None, clean_session: bool, **kwargs: Any
    ) -> aiomqtt.Client:
        """An unconnected aiomqtt client (MQTT 3.1.1); call inside a running event loop."""
        tls_params = None
        if self.tls:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=str(self.ca_file) if self.ca_file is not None else None
            )
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=identifier,
            clean_session=clean_session,
            tls_params=tls_params,
            **kwargs,
        )


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
    the broker's inflight window, see the module docstring)."""

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
    connects: int = 0
    store_failures: int = 0
    qos0_discarded: int = 0
    """QoS 0 messages discarded because ``max_qos0_queued`` were waiting."""
    peak_in_hand: int = 0
    """The most messages held at once: received (also those waiting in aiomqtt) and not yet
    acknowledged to the broker. Bounded by the broker's inflight window (back-pressure)."""


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
    heads = {
        r.gate: store.head(r.gate)[0]
        for r in refused
        if r.kind == "events" and r.gate is not None and r.gate not in gates
    }
    return _GroupOutcome(items, results, refused, heads)


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
    ) -> None:
        self.options = options
        self.client_id = options.client_id or default_client_id(options.group)
        self.counters = SinkCounters()
        self.statuses: dict[str, Status] = {}
        """The latest status of each gate (from the retained ``status`` topics)."""
        self.requests: deque[tuple[str, SnapshotRequest]] = deque(maxlen=1000)
        """The latest snapshot requests as ``(site, request)``."""
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
        self._taken = 0  # messages taken from aiomqtt this session and not yet PUBACKed
        self._room = asyncio.Event()
        """Set when the inbox has room (the reader waits for it)."""
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
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
        self._task = asyncio.create_task(self._run(), name=f"sink {self.client_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Store and ack what was received, disconnect, close the store. Idempotent."""
        self._stop.set()
        self._wake.set()
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
        opts = self.options
        client = opts.broker.client(
            identifier=self.client_id,
            clean_session=False,
            keepalive=opts.keepalive,
            timeout=opts.timeout,
            queue_type=self._queue_type(),
        )
        _paho(client).manual_ack_set(True)  # PUBACK after the commit: see "Back-pressure"
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self._stop.is_set():
            problem: str | None = None
            connected = False
            subscribed_at: float | None = None
            try:
                # The store first: connecting makes the broker hand over queued batches,
                # which are lost to the broker (PUBACKed) if they cannot be stored.
                await self._load_heads()
                async with client:
                    connected = True
                    self.counters.connects += 1
                    log.info(
                        "sink_connected",
                        broker=opts.broker.url,
                        client_id=self.client_id,
                        group=opts.group,
                    )
                    await self._subscribe(client)
                    subscribed_at = loop.time()
                    await self._session(client)
            except aiomqtt.MqttError as exc:
                close_leaked_sockets(exc)
                problem = f"broker {opts.broker.url}: {exc}"
                event = "sink_disconnected" if connected else "sink_connect_failed"
                log.warning(event, broker=opts.broker.url, error=str(exc))
            except StoreError as exc:
                self.counters.store_failures += 1
                problem = f"store: {exc}"
                log.error("sink_store_failed", error=str(exc))
            except _Stopped:
                pass
            except Exception as exc:  # a bug: log it, back off, carry on (never a crash loop)
                problem = f"internal error: {exc!r}"
                log.exception("sink_internal_error", error=repr(exc))
            finally:
                self._ready.clear()
            if self._stop.is_set():
                break
            if subscribed_at is not None and loop.time() - subscribed_at >= _STABLE_SESSION_S:
                attempt = 0  # a session that held for a while: start the backoff again
            delay = min(opts.backoff_max, opts.backoff_initial * 2 ** min(attempt, 30))
            delay *= random.uniform(0.5, 1.0)
            attempt += 1
            log.info("sink_reconnecting", retry_in_s=round(delay, 3), reason=problem)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()
        # aiomqtt cancels its housekeeping task from a socket callback, one loop turn after
        # the disconnect: let it end, so a stopped sink leaves no task behind.
        misc = getattr(client, "_misc_task", None)
        if isinstance(misc, asyncio.Task) and not misc.done():
            await asyncio.wait({misc}, timeout=1.0)
        log.info("sink_stopped", client_id=self.client_id, **self._counter_fields())

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
        codes = await client.subscribe(topics)
        refused = [
            t for (t, _), code in zip(topics, codes, strict=False) if _subscribe_failed(code)
        ]
        if refused:
            raise aiomqtt.MqttError(
                f"the broker refused the subscription to {', '.join(refused)} "
                "(check the ACL of user central)"
            )
        self._ready.set()
        log.info("sink_subscribed", topics=[t for t, _ in topics])

    async def _session(self, client: aiomqtt.Client) -> None:
        """Two stages: while the store thread commits group N (then its acks go out), the
        next group is decoded; groups are committed and acked strictly in order."""
        # Left from a session that ended: never acknowledged, the broker delivers them again
        # (their packet ids belong to the old connection).
        self._inbox.clear()
        self._taken = 0
        self._room.set()
        reader = asyncio.create_task(self._read(client), name="sink reader")
        committing: asyncio.Task[None] | None = None
        try:
            while True:
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
            # Stopping: what aiomqtt already acknowledged to the broker is stored and
            # acked before leaving (the rest stays queued in the broker session).
            if committing is not None:
                running = committing
                committing = None
                await running
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
            while len(client.messages):
                self._inbox.append(await anext(client.messages))
                self._taken += 1
            while self._inbox:
                await self._commit(client, await self._prepare(self._take_group()))
            raise _Stopped
        finally:
            # A commit cut short here still completes on the store's thread; it is only not
            # acked, and the gate's resend of it is stored idempotently.
            tasks = [t for t in (reader, committing) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            limit = self.options.max_inbox_messages
            async for message in client.messages:
                self._inbox.append(message)
                self._taken += 1
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
            elif kind == "requests":
                bad = self._on_request_message(site, gate, payload)
                if bad is not None:
                    refused.append(_Refused(site, gate, topic, payload, bad, kind="requests"))
            else:  # not subscribed to; a broker misrouting is still no reason to crash
                reason = f"unexpected topic kind {kind!r}"
                refused.append(_Refused(site, gate, topic, payload, reason, kind="topic"))
        if not raws:
            return _Prepared([], refused, messages)
        pending, bad_batches = await asyncio.to_thread(_decode_all, raws)
        return _Prepared(pending, refused + bad_batches, messages)

    async def _commit(self, client: aiomqtt.Client, prepared: _Prepared) -> None:
        """Store a prepared group (with the parked batches due again), then ack it."""
        pending = self._take_parked() + prepared.pending
        refused = prepared.refused
        if not pending and not refused:
            self._puback(client, prepared.messages)
            return
        outcome = await self.store.run(lambda s: _store_group(s, pending, refused))
        self._puback(client, prepared.messages)
        await self._after_commit(client, outcome)

    def _puback(self, client: aiomqtt.Client, messages: list[aiomqtt.Message]) -> None:
        """Acknowledge ``messages`` to the broker, in the order they were received."""
        paho = _paho(client)
        for message in messages:
            if message.qos > 0:
                paho.ack(message.mid, message.qos)
        self._taken -= len(messages)

    def _queue_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """aiomqtt's incoming queue: QoS 1 messages are bounded by the broker's inflight
        window (they are PUBACKed once stored); QoS 0 ones beyond ``max_qos0_queued``
        waiting are discarded here, as nothing else bounds them."""
        sink = self
        counters = self.counters
        cap = self.options.max_qos0_queued

        class IncomingQueue(asyncio.Queue[aiomqtt.Message]):
            qos0 = 0

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
                in_hand = sink._taken + self.qsize()
                counters.peak_in_hand = max(counters.peak_in_hand, in_hand)

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

        async with self._progress:
            self._progress.notify_all()
        if acks:
            sent = await asyncio.gather(
                *(
                    client.publish(Topics(self._sites[a.gate], a.gate).ack, encode_ack(a), qos=1)
                    for a in acks
                ),
                return_exceptions=True,
            )
            failed = [e for e in sent if isinstance(e, BaseException)]
            if failed:
                raise failed[0]
            c.acks += len(acks)
            log.debug("acked", acks=[(a.gate, a.seq, a.resend_from) for a in acks])

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
        log.info(
            "snapshot_requested",
            site=site,
            gate=gate,
            have_version=request.have_version,
            reason=request.reason,
        )
        if self._on_request is not None:
            task = asyncio.create_task(self._call_back(site, request))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)
        return None

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


def _paho(client: aiomqtt.Client) -> Any:
    """The paho client inside aiomqtt (2.x keeps it in ``_client``): aiomqtt has no manual
    acknowledgement of its own."""
    paho = getattr(client, "_client", None)
    if paho is None or not hasattr(paho, "manual_ack_set") or not hasattr(paho, "ack"):
        raise RuntimeError("aiomqtt without a paho client supporting manual acks")
    return paho


def _payload(message: aiomqtt.Message) -> bytes:
    p = message.payload
    if isinstance(p, bytes):
        return p
    if isinstance(p, bytearray):
        return bytes(p)
    return b"" if p is None else str(p).encode()


def _subscribe_failed(code: object) -> bool:
    if isinstance(code, int):
        return code >= 0x80
    return bool(getattr(code, "is_failure", False))


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
    "BrokerSettings",
    "BrokerUrlError",
    "RequestCallback",
    "Sink",
    "SinkCounters",
    "SinkOptions",
    "close_leaked_sockets",
    "default_client_id",
    "sink_options",
]
