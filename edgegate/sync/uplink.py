"""The gate's uplink: store-and-forward of the event log to central over MQTT.

(Over 600 lines: the send window, ack handling, resends and the cursor are one state machine
over shared fields; the connection itself lives in ``edgegate.mqtt.session``.)

One MQTT connection per gate (MQTT 5, persistent session: ``clean_start=False`` with a
session expiry, so acks central publishes while the gate is briefly away are queued for it),
with a retained ``status`` and a last will saying ``offline``. The uplink

- sends the log from the synced cursor + 1 in ``EventBatch``es (msgpack, QoS 1), read and
  encoded in a worker thread from a read-only connection, never holding the log's writer;
- keeps a window of a few batches unacknowledged and waits for central's ``ack`` to send
  more: a broker PUBACK proves nothing about storage, only the ack advances the cursor;
- stores the cursor in the log file (``edgegate.sync.cursor``) through
  ``EventLog.run_in_writer``, so it commits in log order, and resumes from it after a restart;
- resends from ``resend_from`` when central asks (a gap), and from the cursor + 1 when no ack
  came for ``ack_timeout`` while batches were unacknowledged (the timeout doubles while
  nothing is acked, up to 5 min, so a sink that is down does not get the window again every
  few seconds); central stores idempotently;
- reconnects with capped, jittered exponential backoff (``edgegate.mqtt.session``, which
  owns the connection), logging state changes (not every retry), and never lets an exception
  escape into the gate.

Why MQTT 5: the session expiry is set by the gate (a 3.1.1 session lives as long as the
broker's ``persistent_client_expiration`` says), and CONNACK/SUBACK reason codes tell a bad
password from a missing ACL entry in the log. The design does not rely on the session: after
every (re)connect it subscribes again and sends from the last ack.

Each connection attempt uses a fresh ``aiomqtt.Client`` (same client id, so the broker keeps
the session): paho re-sends a reused client's unacknowledged QoS 1 messages on reconnect,
which would be stale batches and statuses here, and a fresh client re-reads the password
file and the CA on every attempt (a rotated secret takes effect without a restart).

Other sync parts share the connection: ``add_subscription(topic, handler)`` routes a topic's
messages to ``handler(payload)`` (one worker per subscription, in arrival order; a failing
handler is logged, never fatal), ``add_connect_hook`` runs a coroutine after each connect,
and ``publish`` sends on the current connection. Add subscriptions before ``start()``: the
persistent session may deliver queued messages right after the first connect, and a message
on a topic nobody handles is logged and dropped.

Ack semantics (decided here):

- ``seq`` above the log's head is a protocol violation: logged, ignored.
- ``seq`` at or below the highest ack seen is stale (acks of several sink instances may
  arrive out of order): ignored. The cursor never moves back.
- ``resend_from`` at or below the cursor asks again for events central had acknowledged:
  either a stale gap ack from another sink instance or central lost acknowledged data. The
  uplink cannot tell them apart; it logs a warning and resends from there (harmless when
  stale, required when central lost data). A second request for the same place while the
  resend is under way (within ``ack_timeout``) is not restarted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgegate.backoff import Backoff
from edgegate.core.clock import Clock
from edgegate.log.eventlog import EventLog, LogClosedError
from edgegate.log.reader import LogReader
from edgegate.mqtt.session import (
    Attempt,
    BrokerSettings,
    MqttSession,
    describe,
    new_client,
    publish,
    subscribe,
)
from edgegate.observability import get_logger
from edgegate.sync.cursor import CursorError, read_cursor, write_cursor
from edgegate.sync.protocol import (
    MAX_BATCH_EVENTS,
    EventBatch,
    ProtocolError,
    Status,
    StatusState,
    Topics,
    decode_ack,
    encode_batch,
    encode_status,
)

if TYPE_CHECKING:
    from edgegate.config import GateConfig

log = get_logger("uplink")

Handler = Callable[[bytes], Awaitable[None]]
"""A downlink topic's handler: gets each message's payload, in arrival order."""
ConnectHook = Callable[[], Awaitable[None]]

# Encoded size of an event beyond its data, boot id, type and lane: seq, times, version,
# two hashes and msgpack headers (about 100 bytes); used only to cut an oversized batch.
_EVENT_OVERHEAD: Final = 112
_HANDLER_QUEUE: Final = 1000
_NOT_READ: Final = object()


class UplinkNotConnected(RuntimeError):
    """``publish`` was called while the uplink has no connection."""


class UplinkError(RuntimeError):
    """The log cannot be sent as it is (a bug or a damaged file); the message says why."""


class _CredentialsError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class UplinkOptions:
    """How the uplink connects and sends. Durations in seconds. Build from the gate's
    configuration with :meth:`from_config`; tests set short timeouts directly."""

    gate: str
    site: str
    host: str
    port: int
    tls: bool = False
    username: str | None = None  # default: the gate id
    password: str | None = None
    password_file: Path | None = None  # read at each connection attempt
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    client_id: str | None = None  # default: "edgegate-{gate}"
    keepalive: float = 30.0
    reconnect_initial: float = 0.1
    reconnect_max: float = 30.0
    batch_max_events: int = 5000
    batch_max_bytes: int = 4 * 1024 * 1024
    # Enough unacknowledged to keep a sink's grouped commits (up to 8 MiB) busy while the
    # previous group's ack travels back: a backlog drains at the store's speed.
    max_inflight_batches: int = 8
    max_inflight_events: int = 40_000
    ack_timeout: float = 10.0
    status_interval: float = 30.0
    poll_interval: float = 0.05  # how often the log's head is looked at when idle
    connect_timeout: float = 5.0  # CONNACK and SUBACK (TCP and TLS are set up before)
    publish_timeout: float = 60.0  # backstop: a dead connection is noticed by keepalive
    stop_flush_timeout: float = 2.0  # on stop, wait this long for central to ack the head
    session_expiry: int = 7 * 86_400

    def __post_init__(self) -> None:
        Topics(self.site, self.gate)  # ProtocolError for unusable ids
        if not 1 <= self.batch_max_events <= MAX_BATCH_EVENTS:
            raise ValueError(f"batch_max_events must be 1..{MAX_BATCH_EVENTS}")
        if self.batch_max_bytes < 1024:
            raise ValueError("batch_max_bytes must be at least 1024")
        if self.max_inflight_batches < 1 or self.max_inflight_events < self.batch_max_events:
            raise ValueError("the window must hold at least one full batch")
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")

    @property
    def identifier(self) -> str:
        return self.client_id or f"edgegate-{self.gate}"

    @property
    def broker(self) -> BrokerSettings:
        """Where to connect; the password (file) is read at each attempt."""
        return BrokerSettings(
            host=self.host,
            port=self.port,
            tls=self.tls,
            username=self.username or self.gate,
            password=self.password,
            ca_file=self.ca_file,
            client_cert=self.client_cert,
            client_key=self.client_key,
        )

    @classmethod
    def from_config(cls, config: GateConfig, **overrides: Any) -> UplinkOptions:
        """Options from the ``[sync]`` section (which must be present)."""
        sync = config.sync
        if sync is None:
            raise ValueError("the configuration has no [sync] section")
        address = sync.broker_address

        def path(value: str | None) -> Path | None:
            return None if value is None else config.resolve_path(value)

        values: dict[str, Any] = {
            "gate": config.gate.id,
            "site": config.sync_site,
            "host": address.host,
            "port": address.port,
            "tls": address.tls,
            "username": config.sync_username,
            "password": None if sync.password is None else sync.password.get_secret_value(),
            "password_file": path(sync.password_file),
            "ca_file": path(sync.ca_file),
            "client_cert": path(sync.client_cert),
            "client_key": path(sync.client_key),
            "keepalive": sync.keepalive.total_seconds(),
            "reconnect_max": sync.reconnect_max.total_seconds(),
            "batch_max_events": sync.batch_max_events,
            "batch_max_bytes": sync.batch_max_bytes,
            "max_inflight_events": max(40_000, sync.batch_max_events),
            "ack_timeout": sync.ack_timeout.total_seconds(),
            "status_interval": sync.status_interval.total_seconds(),
        }
        values.update(overrides)
        return cls(**values)


@dataclass(eq=False)
class _Subscription:
    topic: str
    qos: int
    handler: Handler
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(_HANDLER_QUEUE))
    worker: asyncio.Task[None] | None = None


class Uplink:
    """Sends one gate's event log to central; see the module docstring.

    ``run()`` until ``request_stop()`` (or use ``async with uplink:``, which starts it as a
    task and stops it on exit). Never raises into its caller except on cancellation.
    """

    def __init__(
        self,
        event_log: EventLog,
        options: UplinkOptions,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        allowlist_version: Callable[[], int] | None = None,
    ) -> None:
        if clock is None:
            from edgegate.clock import SystemClock

            clock = SystemClock()
        self.options = options
        self.topics = Topics(options.site, options.gate)
        self.connected = asyncio.Event()
        """Set while connected (subscribed and status published)."""
        self.state = "stopped"
        # Counters, for tests, benchmarks and the status line in logs.
        self.batches_sent = 0
        self.events_sent = 0
        self.acks_received = 0
        self.resends = 0
        self.connects = 0

        self._log = event_log
        self._clock = clock
        self._allowlist_version = allowlist_version or (lambda: 0)
        self._subs: list[_Subscription] = []
        self._hooks: list[ConnectHook] = []
        self._stop = asyncio.Event()
        self._mqtt = MqttSession(
            self._new_client,
            self._connected_session,
            self._failed,
            # jitter, not security
            backoff=Backoff(options.reconnect_initial, options.reconnect_max, rng),
            stop=self._stop,
            connect_timeout=options.connect_timeout,
            disconnect_timeout=options.connect_timeout,
        )
        self._task: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()  # connect hooks, late subscribes
        self._client: aiomqtt.Client | None = None

        # Sending state. ``_cursor`` is durable; ``_acked`` the highest ack seen (>= cursor).
        self._cursor = 0
        self._acked = 0
        self._next = 1
        self._gen = 0  # bumped whenever _next jumps: read-ahead of an older gen is stale
        self._inflight: deque[tuple[int, int]] = deque()  # (from_seq, to_seq) not yet acked
        self._progress_at = 0.0  # loop time of the last ack progress (or first unacked send)
        # Doubles after each ack timeout without progress (back to ack_timeout on progress):
        # with central's sink down for hours, resending the window every few seconds would
        # only pile duplicates up in the broker's queue for it.
        self._ack_wait = options.ack_timeout
        self._last_rewind: tuple[int, float] | None = None
        self._wake = asyncio.Event()
        self._cursor_dirty = asyncio.Event()
        self._synced = asyncio.Condition()

        self._read_lock = threading.Lock()
        self._reader: LogReader | None = None

        self._state_key: tuple[str, str] | None = None
        self._quiet_until: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._down_since: float | None = None

    # --- public API -----------------------------------------------------------------------

    @property
    def synced_seq(self) -> int:
        """The durable cursor: every event up to it is stored at central."""
        return self._cursor

    @property
    def acked_seq(self) -> int:
        """The highest ack received (the cursor follows it once written)."""
        return self._acked

    async def wait_synced(self, seq: int) -> None:
        """Return once the durable cursor has reached ``seq``. Bound it with a timeout."""
        async with self._synced:
            await self._synced.wait_for(lambda: self._cursor >= seq)

    def add_subscription(self, topic: str, handler: Handler, *, qos: int = 1) -> None:
        """Route messages on ``topic`` (a filter; wildcards allowed) to ``handler``.

        Subscribed on every connect; added while connected, it is subscribed at once.
        """
        if topic == self.topics.ack or any(s.topic == topic for s in self._subs):
            raise ValueError(f"{topic!r} is already subscribed")
        sub = _Subscription(topic, qos, handler)
        self._subs.append(sub)
        tg = self._tg
        if tg is not None:
            sub.worker = tg.create_task(self._handler_worker(sub))
            client = self._client
            if client is not None and self.connected.is_set():
                task = tg.create_task(self._subscribe_late(client, sub))
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)

    def add_connect_hook(self, hook: ConnectHook) -> None:
        """Run ``hook()`` (as a task) after each successful connect."""
        self._hooks.append(hook)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish on the uplink's connection (returns on the broker's PUBACK for QoS 1).

        ``UplinkNotConnected`` if there is no connection or it fails meanwhile; the caller
        decides whether to try again after the next connect (``add_connect_hook``).
        """
        client = self._client
        if client is None or not self.connected.is_set():
            raise UplinkNotConnected(f"not connected to {self.options.broker.url}")
        try:
            await publish(client, topic, payload, self.options.publish_timeout, qos, retain)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise UplinkNotConnected(f"publish to {topic} failed: {exc!r}") from exc

    def request_stop(self) -> None:
        """Ask ``run()`` to flush briefly, publish ``offline`` and disconnect."""
        self._stop.set()

    def start(self) -> asyncio.Task[None]:
        if self._task is not None:
            raise RuntimeError("the uplink is already started")
        self._task = asyncio.create_task(self.run(), name=f"uplink:{self.options.gate}")
        return self._task

    async def aclose(self) -> None:
        """Stop (see ``request_stop``) and wait for ``run()`` to end."""
        self.request_stop()
        task = self._task
        if task is None:
            return
        grace = self.options.stop_flush_timeout + 2 * self.options.connect_timeout + 5.0
        done, _ = await asyncio.wait([task], timeout=grace)
        if not done:
            log.error("uplink_stop_timeout", gate=self.options.gate, seconds=grace)
            task.cancel()
            await asyncio.wait([task], timeout=5.0)
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("uplink_crashed", gate=self.options.gate, error=repr(task.exception()))

    async def __aenter__(self) -> Uplink:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def run(self) -> None:
        """Connect, send, reconnect, until ``request_stop()``."""
        try:
            stored = await self._log.run_in_writer(read_cursor)
        except LogClosedError as exc:
            log.error("uplink_not_started", gate=self.options.gate, error=str(exc))
            return
        head = self._log.head[0]
        if stored > head:
            log.error("uplink_cursor_above_head", cursor=stored, head=head)
            stored = head
        self._cursor = self._acked = stored
        self._next = stored + 1
        self.state = "connecting"
        log.info(
            "uplink_starting",
            gate=self.options.gate,
            broker=self.options.broker.url,
            cursor=stored,
            head=head,
            backlog=head - stored,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                cursor_task = tg.create_task(self._cursor_writer())
                for sub in self._subs:
                    sub.worker = tg.create_task(self._handler_worker(sub))
                try:
                    await self._mqtt.run()
                finally:
                    cursor_task.cancel()
                    for sub in self._subs:
                        if sub.worker is not None:
                            sub.worker.cancel()
                    for task in list(self._side_tasks):
                        task.cancel()
                await self._write_cursor()  # the last acks, if the writer was mid-way
        finally:
            self._tg = None
            self.connected.clear()
            await asyncio.shield(asyncio.to_thread(self._close_reader))
            self._note_state("stopped", "")

    # --- connection -----------------------------------------------------------------------

    def _failed(self, exc: Exception, attempt: Attempt) -> None:
        """Log why a connection attempt ended, once per state and detail."""
        if isinstance(exc, _CredentialsError):
            self._note_state("credentials-unreadable", str(exc), level="error")
        elif isinstance(exc, MqttConnectError):
            # A refusal (bad password, not authorised) will not fix itself quickly; the
            # backoff grows to its cap and the state is logged once.
            self._note_state("refused", str(exc), level="error")
        elif isinstance(exc, aiomqtt.MqttError | TimeoutError):
            state = "disconnected" if attempt.held_at is not None else "unreachable"
            detail = (
                describe(exc)
                if isinstance(exc, aiomqtt.MqttError)
                else "the broker did not answer in time"
            )
            self._note_state(state, detail, level="warning")
        else:  # a bug: log it, keep the gate running, retry later
            if self._state_key != ("failed", repr(exc)):
                log.exception("uplink_failed", gate=self.options.gate, error=repr(exc))
            self._note_state("failed", repr(exc), level="error")

    async def _password(self) -> str | None:
        opts = self.options
        if opts.password_file is None:
            return opts.password
        try:
            text = await asyncio.to_thread(opts.password_file.read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _CredentialsError(
                f"cannot read password_file {opts.password_file}: {exc}"
            ) from None
        password = text.rstrip("\r\n")
        if not password:
            raise _CredentialsError(f"password_file {opts.password_file} is empty")
        return password

    def _status(self, state: StatusState) -> Status:
        head = self._log.head[0]
        try:
            version = max(0, int(self._allowlist_version()))
        except Exception as exc:
            log.error("uplink_allowlist_version_failed", error=repr(exc))
            version = 0
        return Status(
            gate=self.options.gate,
            state=state,
            head_seq=head,
            synced_seq=min(self._cursor, head),
            allowlist_version=version,
            at_ns=max(0, self._clock.wall_ns()),
        )

    async def _new_client(self) -> aiomqtt.Client:
        """A fresh client for each attempt (same client id, so the broker keeps the session):
        paho re-sends a reused client's unacknowledged QoS 1 messages on reconnect, which
        would be stale batches and statuses here; and a fresh client re-reads the password
        file and the CA (a rotated secret takes effect without a restart) and carries a will
        with the current head."""
        opts = self.options
        settings = opts.broker.with_password(await self._password())
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = opts.session_expiry
        will = aiomqtt.Will(
            self.topics.status, encode_status(self._status("offline")), qos=1, retain=True
        )
        return await new_client(
            settings,
            identifier=opts.identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            clean_start=False,
            properties=properties,
            keepalive=max(1, round(opts.keepalive)),
            # Every wait is bounded with asyncio.timeout instead (see edgegate.mqtt.session).
            timeout=math.inf,
        )

    async def _connected_session(self, client: aiomqtt.Client) -> None:
        opts = self.options
        await self._subscribe_all(client)
        status = encode_status(self._status("online"))
        await publish(client, self.topics.status, status, opts.publish_timeout, 1, True)
        self._mqtt.held()
        try:
            self._on_connected(client)
            await self._session(client)
        finally:
            self._client = None
            self.connected.clear()
            self._down_since = asyncio.get_running_loop().time()

    async def _subscribe_all(self, client: aiomqtt.Client) -> None:
        topics = [(self.topics.ack, 1), *((s.topic, s.qos) for s in self._subs)]
        for topic, code in await subscribe(client, topics, self.options.connect_timeout):
            if topic == self.topics.ack:
                # Without acks nothing can ever be confirmed: treat as a refusal.
                raise MqttConnectError(code)  # type: ignore[arg-type]
            self._throttled_error(
                f"subscribe:{topic}", "uplink_subscribe_refused", topic=topic, code=str(code)
            )

    async def _subscribe_late(self, client: aiomqtt.Client, sub: _Subscription) -> None:
        try:
            refused = await subscribe(client, [(sub.topic, sub.qos)], self.options.connect_timeout)
        except aiomqtt.MqttError as exc:
            log.warning("uplink_subscribe_later", topic=sub.topic, error=str(exc))
            return
        for topic, code in refused:
            log.error("uplink_subscribe_refused", topic=topic, code=str(code))

    def _on_connected(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._client = client
        self.connects += 1
        # Everything not acked is sent again: the previous connection's in-flight batches
        # may or may not have reached central.
        self._next = self._acked + 1
        self._inflight.clear()
        self._gen += 1
        self._progress_at = now
        self._ack_wait = self.options.ack_timeout
        self._last_rewind = None
        outage = None if self._down_since is None else round(now - self._down_since, 3)
        self._down_since = None
        self.connected.set()
        self._note_state(
            "connected",
            "",
            level="info",
            broker=self.options.broker.url,
            synced=self._cursor,
            head=self._log.head[0],
            outage_s=outage,
        )
        tg = self._tg
        if tg is not None:
            for hook in self._hooks:
                task = tg.create_task(self._run_hook(hook))
                self._side_tasks.add(task)
                task.add_done_callback(self._side_tasks.discard)

    async def _run_hook(self, hook: ConnectHook) -> None:
        try:
            await hook()
        except Exception as exc:
            log.exception("uplink_connect_hook_failed", error=repr(exc))

    async def _session(self, client: aiomqtt.Client) -> None:
        tasks = [
            asyncio.create_task(self._receive(client), name="uplink-receive"),
            asyncio.create_task(self._send(client), name="uplink-send"),
            asyncio.create_task(self._status_loop(client), name="uplink-status"),
        ]
        stop = asyncio.create_task(self._stop.wait())
        failed: BaseException | None = None
        try:
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            failed = _first_failure(done)
            if failed is None and stop in done:
                await self._flush(tasks)
                failed = _first_failure(t for t in tasks if t.done())
        finally:
            for task in (*tasks, stop):
                task.cancel()
            ended, stuck = await asyncio.wait([*tasks, stop], timeout=5.0)
            for task in ended:  # retrieve, so none is reported as never retrieved
                if not task.cancelled():
                    task.exception()
            if stuck:  # a cancellation swallowed somewhere: do not hang the gate's shutdown
                log.error("uplink_task_stuck", tasks=sorted(t.get_name() for t in stuck))
        if failed is not None:
            raise failed
        if self._stop.is_set():
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                status = encode_status(self._status("offline"))
                await publish(client, self.topics.status, status, 2.0, 1, True)
            return
        raise aiomqtt.MqttError("connection ended")  # pragma: no cover - tasks never return

    async def _flush(self, tasks: list[asyncio.Task[None]]) -> None:
        """On stop: give central a moment to ack what the log holds now."""
        target = self._log.head[0]
        if self._cursor >= target or self.options.stop_flush_timeout <= 0:
            return
        waiter = asyncio.create_task(self.wait_synced(target))
        try:
            await asyncio.wait(
                [waiter, *tasks],
                timeout=self.options.stop_flush_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        if self._cursor < target:
            log.info("uplink_stop_unsynced", synced=self._cursor, head=target)

    async def _status_loop(self, client: aiomqtt.Client) -> None:
        every = self.options.status_interval
        while True:
            await asyncio.sleep(every)
            status = encode_status(self._status("online"))
            await publish(client, self.topics.status, status, self.options.publish_timeout, 1, True)

    # --- receiving ------------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        ack_topic = self.topics.ack
        async for message in client.messages:
            payload = message.payload
            data = payload if isinstance(payload, bytes) else _as_bytes(payload)
            topic = message.topic.value
            if topic == ack_topic:
                self._on_ack(data)
                continue
            for sub in self._subs:
                if message.topic.matches(sub.topic):
                    try:
                        sub.queue.put_nowait(data)
                    except asyncio.QueueFull:
                        self._throttled_error(
                            f"queue:{sub.topic}",
                            "uplink_handler_overloaded",
                            topic=topic,
                            dropped_bytes=len(data),
                        )
                    break
            else:
                self._throttled_error(f"topic:{topic}", "uplink_unexpected_topic", topic=topic)

    async def _handler_worker(self, sub: _Subscription) -> None:
        while True:
            payload = await sub.queue.get()
            try:
                await sub.handler(payload)
            except Exception as exc:
                log.exception("uplink_handler_failed", topic=sub.topic, error=repr(exc))

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = decode_ack(payload)
        except ProtocolError as exc:
            self._throttled_error("ack-malformed", "uplink_ack_malformed", error=str(exc))
            return
        if ack.gate != self.options.gate:
            self._throttled_error("ack-gate", "uplink_ack_wrong_gate", ack_gate=ack.gate)
            return
        head = self._log.head[0]
        if ack.seq > head:
            # Central cannot have stored what the gate never wrote: a protocol violation.
            self._throttled_error("ack-above-head", "uplink_ack_above_head", seq=ack.seq, head=head)
            return
        self.acks_received += 1
        if ack.seq > self._acked:
            self._acked = ack.seq
            self._progress_at = asyncio.get_running_loop().time()
            self._ack_wait = self.options.ack_timeout
            inflight = self._inflight
            while inflight and inflight[0][1] <= ack.seq:
                inflight.popleft()
            if self._next <= ack.seq:  # central has more than this connection sent
                self._next = ack.seq + 1
                inflight.clear()
                self._gen += 1
            self._cursor_dirty.set()
            self._wake.set()
        if ack.resend_from is not None:
            self._rewind(ack.resend_from, f"central asked (its head {ack.seq})")

    def _rewind(self, seq: int, reason: str, *, force: bool = False) -> None:
        if seq >= self._next:
            return  # not sent yet: it goes out in order anyway
        now = asyncio.get_running_loop().time()
        last = self._last_rewind
        if (
            not force
            and last is not None
            and last[0] <= seq
            and now - last[1] < self.options.ack_timeout
        ):
            return  # already resending from there
        if seq <= self._acked:
            self._throttled_warning(
                "resend-acked",
                "uplink_resend_acknowledged",
                resend_from=seq,
                acked=self._acked,
                note="central asks for events it acknowledged: a stale ack, or central lost data",
            )
        else:
            log.info("uplink_resend", resend_from=seq, sent_to=self._next - 1, reason=reason)
        self.resends += 1
        self._next = seq
        self._inflight.clear()
        self._gen += 1
        self._last_rewind = (seq, now)
        self._progress_at = now
        self._wake.set()

    # --- sending --------------------------------------------------------------------------

    async def _wait_wake(self, seconds: float) -> None:
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if math.isinf(seconds) else seconds):
                    await self._wake.wait()
        self._wake.clear()

    async def _send(self, client: aiomqtt.Client) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        topic = self.topics.events
        ahead: tuple[int, int, asyncio.Task[tuple[bytes, int] | None]] | None = None
        try:
            while True:
                now = loop.time()
                unacked = self._next - 1 - self._acked
                timeout = math.inf
                if unacked > 0:
                    waited = now - self._progress_at
                    if waited >= self._ack_wait:
                        self._throttled_warning(
                            "ack-timeout",
                            "uplink_ack_timeout",
                            seconds=round(waited, 3),
                            acked=self._acked,
                            sent_to=self._next - 1,
                        )
                        self._rewind(self._acked + 1, "no ack in time", force=True)
                        self._ack_wait = min(2 * self._ack_wait, max(opts.ack_timeout, 300.0))
                        continue
                    timeout = self._ack_wait - waited
                if unacked >= opts.max_inflight_events or (
                    len(self._inflight) >= opts.max_inflight_batches
                ):
                    await self._wait_wake(timeout)
                    continue
                head = self._log.head[0]
                if self._next > head:
                    await self._wait_wake(min(opts.poll_interval, timeout))
                    continue
                gen, start = self._gen, self._next
                result: object = _NOT_READ
                if ahead is not None:
                    a_gen, a_start, a_task = ahead
                    ahead = None
                    if (a_gen, a_start) == (gen, start):
                        result = await a_task
                    else:
                        a_task.cancel()
                if result is _NOT_READ:
                    result = await asyncio.to_thread(self._read_batch, start)
                if gen != self._gen:
                    continue  # rewound or skipped ahead while reading
                if result is None:
                    await self._wait_wake(min(opts.poll_interval, timeout))
                    continue
                assert isinstance(result, tuple)
                payload, last = result
                if self._next - 1 <= self._acked:
                    self._progress_at = loop.time()  # the ack clock starts with this batch
                self._next = last + 1
                self._inflight.append((start, last))
                if (
                    last < self._log.head[0]
                    and len(self._inflight) < opts.max_inflight_batches
                    and last - self._acked < opts.max_inflight_events
                ):
                    ahead = (gen, last + 1, asyncio.create_task(self._read_async(last + 1)))
                await publish(client, topic, payload, opts.publish_timeout)
                self.batches_sent += 1
                self.events_sent += last - start + 1
        finally:
            if ahead is not None:
                ahead[2].cancel()
                await asyncio.gather(ahead[2], return_exceptions=True)

    async def _read_async(self, start: int) -> tuple[bytes, int] | None:
        return await asyncio.to_thread(self._read_batch, start)

    def _read_batch(self, start: int) -> tuple[bytes, int] | None:
        """Read and encode the batch starting at ``start`` (worker thread): ``(payload,
        last_seq)``, or None if the log has no event ``start`` yet."""
        opts = self.options
        with self._read_lock:
            reader = self._reader
            if reader is None:
                reader = self._reader = LogReader(self._log.path, live=True)
            # Across sealed segments (never archives: only what central acknowledged is
            # archived). Blobs cast (ROW_COLUMNS): a row edited into text is sent as bytes,
            # and central names its seq.
            rows = reader.rows(start - 1, opts.batch_max_events)
        if not rows:
            return None
        if rows[0][0] != start:
            raise UplinkError(f"the log has no event {start} (next is {rows[0][0]})")
        n = len(rows)
        payload = self._encode(rows, n)
        limit = opts.batch_max_bytes
        while len(payload) > limit and n > 1:
            n = _fit(rows, n, limit)
            payload = self._encode(rows, n)
        return payload, rows[n - 1][0]

    def _encode(self, rows: list[Any], n: int) -> bytes:
        events = tuple(rows[:n]) if n < len(rows) else tuple(rows)
        batch = EventBatch(self.options.gate, events[0][0], events[-1][0], events[0][8], events)
        return encode_batch(batch)

    def _close_reader(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # --- the cursor -----------------------------------------------------------------------

    async def _cursor_writer(self) -> None:
        while True:
            await self._cursor_dirty.wait()
            self._cursor_dirty.clear()
            await self._write_cursor()

    async def _write_cursor(self) -> None:
        target = self._acked
        if target <= self._cursor:
            return
        try:
            stored = await self._log.run_in_writer(functools.partial(write_cursor, seq=target))
        except LogClosedError as exc:
            log.warning("uplink_cursor_not_saved", seq=target, error=str(exc))
            return
        except CursorError as exc:
            log.error("uplink_cursor_refused", seq=target, error=str(exc))
            return
        except Exception as exc:
            log.error("uplink_cursor_write_failed", seq=target, error=repr(exc))
            await asyncio.sleep(1.0)
            self._cursor_dirty.set()
            return
        if stored > self._cursor:
            self._cursor = stored
            async with self._synced:
                self._synced.notify_all()

    # --- logging --------------------------------------------------------------------------

    def _note_state(self, state: str, detail: str, *, level: str = "info", **kw: Any) -> None:
        """Log a change of connection state; the same state and detail again is not logged."""
        key = (state, detail)
        if key == self._state_key:
            return
        self._state_key = key
        self.state = state
        fields = {"gate": self.options.gate, "state": state, **kw}
        if detail:
            fields["detail"] = detail
        if state not in ("connected", "stopped"):
            fields["retrying"] = True
        getattr(log, level)("uplink_state", **fields)

    def _throttled(self, key: str, level: str, event: str, **kw: Any) -> None:
        """Log ``event`` at most once per 10 s per ``key``, with the count suppressed since."""
        now = asyncio.get_running_loop().time()
        if now < self._quiet_until.get(key, 0.0):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._quiet_until[key] = now + 10.0
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            kw["suppressed"] = suppressed
        getattr(log, level)(event, gate=self.options.gate, **kw)

    def _throttled_error(self, key: str, event: str, **kw: Any) -> None:
        self._throttled(key, "error", event, **kw)

    def _throttled_warning(self, key: str, event: str, **kw: Any) -> None:
        self._throttled(key, "warning", event, **kw)


def _fit(rows: list[Any], n: int, limit: int) -> int:
    """How many of the first ``n`` rows fit in ``limit`` bytes (estimate), always fewer than
    ``n`` and at least 1."""
    total = 256
    for i in range(n):
        row = rows[i]
        total += len(row[7]) + len(row[3]) + len(row[4]) + len(row[5] or "") + _EVENT_OVERHEAD
        if total > limit:
            return max(1, min(i, n - 1))
    return max(1, (n * 9) // 10)


def _as_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return b"" if payload is None else str(payload).encode()


def _first_failure(tasks: Any) -> BaseException | None:
    for task in tasks:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            return exc  # type: ignore[no-any-return]
    return None
