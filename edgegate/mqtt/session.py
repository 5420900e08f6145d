"""One MQTT session, used by the gate's uplink and central's sink.

- :class:`BrokerSettings`: where and how to connect (``mqtt://`` / ``mqtts://`` URLs, user,
  password, CA, client certificate), the TLS context and the ``aiomqtt.Client`` factory.
- :class:`MqttSession`: connect, run the caller's session body, disconnect, back off
  (:class:`edgegate.backoff.Backoff`), again, until stopped; every attempt leaves no socket
  or task behind.
- :func:`subscribe` and :func:`publish`: bounded by ``asyncio.timeout``, not by aiomqtt's own
  timeouts: those use ``asyncio.wait_for``, which in Python 3.11 can swallow a cancellation
  that arrives as the awaited reply does, leaving a task running after it was cancelled.

Whether a client is made afresh for each attempt or one client is re-entered is the caller's
choice (its ``new_client`` factory). aiomqtt's documented pattern re-enters one client; the
uplink needs a fresh one per attempt (see ``edgegate.sync.uplink``), the sink re-enters one.

Every access to a private attribute of aiomqtt or paho-mqtt is in the last section of this
module ("Reaching into aiomqtt and paho"), and pyproject pins the versions it was read
against.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as mqtt

from edgegate.backoff import Backoff

# ------------------------------------------------------------------------------ the broker


class BrokerUrlError(ValueError):
    """A broker URL or TLS setting that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where and how to connect: ``mqtt://host[:1883]`` or ``mqtts://host[:8883]``."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    """CA certificate(s) to verify the broker with (TLS only); None: the system's CAs."""
    client_cert: Path | None = None
    client_key: Path | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        username: str | None = None,
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

    def with_password(self, password: str | None) -> BrokerSettings:
        return replace(self, password=password)

    def tls_context(self) -> ssl.SSLContext:
        """A client context as paho's ``tls_set`` makes it (TLS 1.2+, the broker's certificate
        and host name verified), whose sockets close themselves when the handshake fails.

        Reads the CA and certificate files (blocking); ``OSError``/``ssl.SSLError`` if it
        cannot.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.client_cert is not None:
            context.load_cert_chain(
                str(self.client_cert),
                None if self.client_key is None else str(self.client_key),
            )
        if self.ca_file is not None:
            context.load_verify_locations(str(self.ca_file))
        else:
            context.load_default_certs()
        # paho 2.2 leaves the socket of a failed TLS handshake open (``_ssl_wrap_socket``
        # raises without closing it) and aiomqtt re-raises without closing it either; the
        # socket class is the supported hook (``SSLContext.sslsocket_class``) to close it.
        context.sslsocket_class = _HandshakeClosingSocket
        return context

    def client(
        self,
        *,
        identifier: str | None,
        clean_session: bool | None = None,
        tls_context: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> aiomqtt.Client:
        """An unconnected aiomqtt client; call inside a running event loop.

        ``tls_context`` defaults to :meth:`tls_context` (read here, blocking: prefer
        :func:`new_client` in a loop that must not wait for a disk). Other keyword arguments
        go to ``aiomqtt.Client`` (protocol, will, keepalive, timeout...). A CA or key that
        cannot be read raises ``aiomqtt.MqttError`` naming it.
        """
        if self.tls and tls_context is None:
            tls_context = _load_tls(self)
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=identifier,
            clean_session=clean_session,
            tls_context=tls_context if self.tls else None,
            **kwargs,
        )


class _HandshakeClosingSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _load_tls(settings: BrokerSettings) -> ssl.SSLContext:
    try:
        return settings.tls_context()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise aiomqtt.MqttError(str(exc)) from None


async def new_client(settings: BrokerSettings, **kwargs: Any) -> aiomqtt.Client:
    """:meth:`BrokerSettings.client`, with the TLS files read on a worker thread."""
    context = await asyncio.to_thread(_load_tls, settings) if settings.tls else None
    return settings.client(tls_context=context, **kwargs)


# ------------------------------------------------------------------------------ requests


def is_failure(code: object) -> bool:
    """A SUBACK/CONNACK reason code (MQTT 5 ``ReasonCode`` or a 3.1.1 int) that refuses."""
    if isinstance(code, int):
        return code >= 0x80
    return bool(getattr(code, "is_failure", False))


async def subscribe(
    client: aiomqtt.Client, topics: Sequence[tuple[str, int]], seconds: float
) -> list[tuple[str, object]]:
    """Subscribe to ``topics`` (``(filter, qos)``) in one SUBSCRIBE; the ``(filter, code)``
    the broker refused. ``aiomqtt.MqttError`` if there is no SUBACK within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            codes = await client.subscribe(list(topics), timeout=math.inf)
    except TimeoutError:
        raise aiomqtt.MqttError(f"no answer to the subscribe within {seconds:g} s") from None
    return [(t, c) for (t, _), c in zip(topics, codes, strict=False) if is_failure(c)]


async def publish(
    client: aiomqtt.Client,
    topic: str,
    payload: bytes,
    seconds: float,
    qos: int = 1,
    retain: bool = False,
) -> None:
    """``client.publish``, waiting at most ``seconds`` for the PUBACK (``TimeoutError``)."""
    async with asyncio.timeout(seconds):
        await client.publish(topic, payload, qos=qos, retain=retain, timeout=math.inf)


def describe(exc: BaseException) -> str:
    """An exception and its cause, in one line (aiomqtt puts paho's reason in the cause)."""
    cause = exc.__cause__
    text = str(exc) or type(exc).__name__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text


# ------------------------------------------------------------------------------ the loop


@dataclass(slots=True)
class Attempt:
    """What one connection attempt came to, for the caller's ``failed`` handler."""

    connected: bool = False
    """The broker accepted the connection (CONNACK)."""
    held_at: float | None = None
    """Loop time at which the session body called :meth:`MqttSession.held`, if it did."""


@dataclass(eq=False, slots=True)
class MqttSession:
    """Connect, run the session body, disconnect, back off, again, until ``stop`` is set.

    - ``new_client()`` makes (or returns) the client of each attempt; an exception from it is
      a failed attempt like any other.
    - ``body(client)`` runs while connected; it returns to end the connection (e.g. on stop)
      or raises to drop it.
    - ``failed(exc, attempt)`` is told why an attempt ended (never with ``CancelledError``);
      it logs. The loop itself never raises but ``CancelledError``.
    - The backoff restarts after a connection the body declared held (:meth:`held`) for at
      least ``stable_after`` seconds: a connection dropped at once keeps backing off.
    - ``connect_timeout`` bounds the CONNACK with ``asyncio.timeout`` (use it with a fresh
      client per attempt: a cancelled ``__aenter__`` leaves an aiomqtt client locked);
      None leaves it to the client's own ``timeout``.
    """

    new_client: Callable[[], Awaitable[aiomqtt.Client]]
    body: Callable[[aiomqtt.Client], Awaitable[None]]
    failed: Callable[[Exception, Attempt], None]
    _: KW_ONLY
    backoff: Backoff
    stop: asyncio.Event
    connect_timeout: float | None
    disconnect_timeout: float
    stable_after: float = 0.0
    retrying: Callable[[float], None] | None = None
    _attempt: Attempt = field(default_factory=Attempt, init=False)

    def held(self) -> None:
        """The body says: this connection is set up (subscribed, announced)."""
        self._attempt.held_at = asyncio.get_running_loop().time()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            attempt = self._attempt = Attempt()
            try:
                await self._once(attempt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed(exc, attempt)
            if self.stop.is_set():
                return
            if attempt.held_at is not None and loop.time() - attempt.held_at >= self.stable_after:
                self.backoff.reset()
            delay = self.backoff.next()
            if self.retrying is not None:
                self.retrying(delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stop.wait()

    async def _once(self, attempt: Attempt) -> None:
        client = await self.new_client()
        try:
            if self.connect_timeout is None:
                await client.__aenter__()
            else:
                async with asyncio.timeout(self.connect_timeout):
                    await client.__aenter__()
            attempt.connected = True
            try:
                await self.body(client)
            finally:
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    async with asyncio.timeout(self.disconnect_timeout):
                        await client.__aexit__(None, None, None)
        finally:
            await release(client)


# ------------------------------------------------------------------------------ reaching into
# aiomqtt and paho
#
# aiomqtt 2.5 has no manual acknowledgement (https://github.com/empicano/aiomqtt/issues/345,
# open; paho has it), no way to stop reading a socket, and no clean-up of a connect that
# got no CONNACK. What follows uses aiomqtt 2.5's ``Client._client`` (the paho client),
# ``Client._disconnected`` (the future that ends the message stream) and ``Client._misc_task``,
# and paho 2.2's ``Client._sock_recv`` (every socket read goes through it) and
# ``Client._sock_close``; pyproject pins both minor versions, and :func:`paho_client` checks
# they are there, so another version fails at start rather than reading without bound.

_PAHO_NEEDS = ("manual_ack_set", "ack", "publish", "loop_read", "socket", "_sock_recv")


def paho_client(client: aiomqtt.Client) -> Any:
    """The paho client inside ``client``; ``RuntimeError`` for an unsupported version."""
    paho = getattr(client, "_client", None)
    missing = [n for n in _PAHO_NEEDS if not hasattr(paho, n)]
    if not isinstance(getattr(client, "_disconnected", None), asyncio.Future):
        missing.append("aiomqtt Client._disconnected")
    if missing:
        raise RuntimeError(f"unsupported aiomqtt/paho version: no {', '.join(missing)}")
    return paho


def enable_manual_ack(client: aiomqtt.Client) -> None:
    """QoS 1 messages are PUBACKed only by :func:`puback` (paho's public ``manual_ack``)."""
    paho_client(client).manual_ack_set(True)


def puback(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    if message.qos > 0:
        paho_client(client).ack(message.mid, message.qos)


def publish_nowait(
    client: aiomqtt.Client, topic: str, payload: bytes, qos: int = 1, retain: bool = False
) -> mqtt.MQTTMessageInfo:
    """Queue a message without waiting for its PUBACK (which cannot arrive while reading
    is paused); ``aiomqtt.MqttCodeError`` if paho refuses it (e.g. not connected). The
    returned info's ``is_published()`` turns true once the PUBACK has been read."""
    info: mqtt.MQTTMessageInfo = paho_client(client).publish(topic, payload, qos, retain)
    if info.rc != 0:
        raise aiomqtt.MqttCodeError(info.rc, f"could not publish to {topic}")
    return info


async def release(client: aiomqtt.Client) -> None:
    """Leave nothing of a finished connection attempt behind: aiomqtt 2.5 neither closes
    paho's socket when the CONNACK never comes (e.g. the broker resets the connection while
    it restarts) nor waits for its keepalive task. Looked up defensively: without these
    attributes this only tidies up less."""
    paho = getattr(client, "_client", None)
    if paho is not None and paho.socket() is not None:
        close = getattr(paho, "_sock_close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
    task = getattr(client, "_misc_task", None)
    if isinstance(task, asyncio.Task) and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class PausableReader:
    """Reads a client's socket in place of aiomqtt's reader, and can stop between packets.

    aiomqtt reads paho's socket whenever it is readable and queues every message, with no
    way to stop. Installed on a client before it connects, this swaps aiomqtt's reader for
    its own on each new socket; :meth:`pause` removes that reader and makes paho's next
    ``_sock_recv`` refuse to read, so paho's parser stops at a packet boundary; TCP flow
    control then stops the broker. ``on_new_socket`` runs (in the loop) when a connection's
    socket opens, before anything is read from it.
    """

    def __init__(self, client: aiomqtt.Client, on_new_socket: Callable[[], None]) -> None:
        self.paused = False
        self._client = client
        self._paho = paho = paho_client(client)
        self._on_new_socket = on_new_socket
        self._sock: Any = None
        loop = asyncio.get_running_loop()
        aiomqtt_open = paho.on_socket_open
        recv = paho._sock_recv

        def on_socket_open(c: Any, userdata: Any, sock: Any) -> None:
            # On paho's connect thread, before CONNECT is sent: aiomqtt schedules its reader
            # (and its keepalive task); ours is scheduled after it, so it replaces it before
            # anything is read.
            aiomqtt_open(c, userdata, sock)
            loop.call_soon_threadsafe(self._socket_opened, sock)

        def sock_recv(bufsize: int) -> bytes:
            if self.paused:  # stops paho's read loop at a packet boundary (see pause)
                raise BlockingIOError
            data: bytes = recv(bufsize)
            return data

        paho.on_socket_open = on_socket_open
        paho._sock_recv = sock_recv

    def _socket_opened(self, sock: Any) -> None:
        fd = sock.fileno()
        if fd < 0 or self._paho.socket() is not sock:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        loop.add_reader(fd, self._on_readable)
        self._sock = sock
        self.paused = False
        self._on_new_socket()

    def _on_readable(self) -> None:
        """aiomqtt's reader, but it stops when paused."""
        paho = self._paho
        try:
            while not self.paused:
                paho.loop_read()
                sock = paho.socket()
                # TLS may hold decrypted bytes the selector cannot see.
                if not isinstance(sock, ssl.SSLSocket) or sock.pending() <= 0:
                    break
        except Exception as exc:  # as aiomqtt: a read error ends the connection
            disconnected = self._client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)

    def pause(self) -> None:
        """Read nothing more until :meth:`resume`. Call between two packets (from code that
        runs on a received message or later), so paho's parser is at a packet boundary."""
        self.paused = True
        sock = self._sock
        if sock is not None and sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(sock.fileno())

    def resume(self) -> None:
        self.paused = False
        sock = self._sock
        if sock is None or self._paho.socket() is not sock or sock.fileno() < 0:
            return  # that connection is gone; the next one starts reading afresh
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._on_readable)
        loop.call_soon(self._on_readable)  # bytes already decrypted


__all__ = [
    "Attempt",
    "BrokerSettings",
    "BrokerUrlError",
    "MqttSession",
    "PausableReader",
    "describe",
    "enable_manual_ack",
    "is_failure",
    "new_client",
    "paho_client",
    "puback",
    "publish",
    "publish_nowait",
    "release",
    "subscribe",
]
