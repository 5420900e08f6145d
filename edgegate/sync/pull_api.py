"""The gate's pull API: central fetches events over HTTP/1.1 instead of (or besides) MQTT.
The HTTP/1.1 framing is :mod:`edgegate.sync.http1`; what stays here (~700 lines) is one
server whose lock-out resistance runs through admission, serving and answering alike.

Endpoints (GET only, every one behind ``Authorization: Bearer <token>``)::

    /v1/events?after=SEQ&limit=N   events with seq > SEQ in seq order, at most N
    /v1/head                       {"gate", "seq", "hash"} of the log's last event (JSON)

``after`` defaults to 0 and ``limit`` to 1000 (1..10,000). A page may hold fewer than
``limit`` events: it stops at ``max_page_bytes`` of event data and before a gap in the log,
so a client asks again with ``after`` = the last seq it got and stops only on ``204``.

Encodings of ``/v1/events``, chosen by ``Accept`` (absent, ``*/*`` or ``application/*``
gives msgpack; nothing acceptable gives ``406``):

- ``application/x-msgpack`` (or ``application/msgpack``): exactly the MQTT ``events``
  payload, ``encode_batch(EventBatch.of(gate, rows))``; read it with ``decode_batch``.
- ``application/x-ndjson``: one JSON object per event and line with ``seq, wall_ns,
  mono_ns, boot_id, type, lane, version, data, prev_hash, hash``; ``data`` in base64,
  the hashes in lowercase hex.

No event after ``after`` is ``204 No Content`` in either encoding (an ``EventBatch`` holds at
least one event). Every ``/v1`` answer carries ``X-Edgegate-Gate`` (the gate id) and, when
the log was read, ``X-Edgegate-Head`` (its last seq, read in the same snapshot as the rows).
Errors are JSON ``{"error": "..."}`` naming what is wrong: 400 bad request or parameter,
401 missing or wrong token (with ``WWW-Authenticate: Bearer``), 404 unknown path, 405 not
GET, 406 no acceptable encoding, 408 request head too slow, 413 a request body,
414 request line too long, 429 too many bad tokens from this address (with ``Retry-After``),
431 header section too large, 500 the log could not be read, 503 too many connections,
505 not HTTP/1.x.

Lock-out resistance. The token is checked before the path and method, so a client without
it learns nothing about paths; a 401 closes the connection, so only a client holding the
token keeps a connection alive. A request head must arrive within ``header_timeout`` of
the connection opening. Connections that have not yet made an authenticated request are
capped per peer address (``max_pending_per_peer``), so a few hosts holding half-open
connections cannot fill the server; connections that have authenticated are not counted
against that cap, so a puller behind the same address keeps its kept-alive connection.
After ``max_auth_failures`` 401s from one address within ``auth_window``, that address
gets 429 on every new connection, unread, for ``auth_pause``: the pause is per address,
so a client sharing an address with an attacker (NAT) is paused with it.

The log is read through its own read-only connection on one worker thread; the log is WAL,
so reading never blocks the gate's writer.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import re
import sqlite3
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from edgegate.clock import SystemClock
from edgegate.core.clock import Clock
from edgegate.log.chain import Row
from edgegate.log.eventlog import GateMismatchError, LogError, connect, read_head
from edgegate.log.queries import rows_after
from edgegate.observability import get_logger
from edgegate.sync.http1 import (
    JSON,
    Eof,
    HttpError,
    Request,
    Response,
    error_response,
    peer_host,
    peer_name,
    read_request,
    send,
    show,
    shut,
    uint_param,
)
from edgegate.sync.http1 import negotiate as negotiate  # re-exported
from edgegate.sync.protocol import (
    INT64_MAX,
    MAX_BATCH_EVENTS,
    EventBatch,
    ProtocolError,
    check_id,
    encode_batch,
)

log = get_logger("pull_api")
T = TypeVar("T")

MSGPACK = "application/x-msgpack"
MSGPACK_ALT = "application/msgpack"
NDJSON = "application/x-ndjson"
EVENTS_PATH = "/v1/events"
HEAD_PATH = "/v1/head"
DEFAULT_LIMIT = 1000
MAX_LIMIT = MAX_BATCH_EVENTS
GATE_HEADER = "X-Edgegate-Gate"
HEAD_HEADER = "X-Edgegate-Head"

_EVENT_OFFERS = (MSGPACK, MSGPACK_ALT, NDJSON)
_HEAD_OFFERS = (JSON,)
_ROW_OVERHEAD = 120  # bytes an event costs in a page besides its data (envelope, hashes)
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one client may cost the gate. Sizes in bytes, times in seconds."""

    max_request_line: int = 8192
    max_header_bytes: int = 16384
    """The whole header section after the request line."""
    max_headers: int = 64
    header_timeout: float = 5.0
    """To receive the first request's head from the connection's opening, whatever trickles
    in meanwhile (a slowloris cannot hold a connection open)."""
    idle_timeout: float = 15.0
    """Until the next request's head is in, on a kept-alive connection (which has shown
    the token: a 401 closes the connection)."""
    write_timeout: float = 60.0
    max_connections: int = 32
    max_pending_per_peer: int = 8
    """Connections from one address that have not (yet) made an authenticated request."""
    max_auth_failures: int = 10
    """401s from one address within ``auth_window`` that start its pause."""
    auth_window: float = 60.0
    auth_pause: float = 60.0
    """How long an address that sent too many bad tokens gets 429 on every connection."""
    max_tracked_peers: int = 4096
    """Addresses whose 401s are remembered (the oldest are forgotten first)."""
    max_requests_per_connection: int = 1000
    max_limit: int = MAX_LIMIT
    default_limit: int = DEFAULT_LIMIT
    max_page_bytes: int = 8 << 20
    """Event data per page; a page holds at least one event whatever its size."""
    linger: float = 1.0
    """After the last response: how long unread input is drained before closing, so the
    kernel does not reset the connection and destroy the response in flight."""

    def __post_init__(self) -> None:
        if not 1 <= self.default_limit <= self.max_limit <= MAX_BATCH_EVENTS:
            raise ValueError(f"limits: need 1 <= default_limit <= max_limit <= {MAX_BATCH_EVENTS}")
        counts = ("max_connections", "max_pending_per_peer", "max_auth_failures")
        for name in (*counts, "max_tracked_peers"):
            if getattr(self, name) < 1:
                raise ValueError(f"limits: {name} must be >= 1")
        for name in ("header_timeout", "idle_timeout", "auth_window", "auth_pause"):
            if not getattr(self, name) > 0:
                raise ValueError(f"limits: {name} must be > 0")


class AuthThrottle:
    """Counts 401s per peer address and pauses an address that sends too many.

    ``failed(peer)`` after each 401: True when it starts the peer's pause (``max_failures``
    within ``window`` seconds). ``paused(peer)`` gives the seconds of pause left (0: none).
    At most ``max_peers`` addresses are remembered; the least recently failed is forgotten
    first, so a spray of addresses costs bounded memory (and forgets, not pauses, the rest).
    """

    def __init__(
        self, max_failures: int, window: float, pause: float, clock: Clock, max_peers: int
    ) -> None:
        self._max = max_failures
        self._window_ns = int(window * 1e9)
        self._pause_ns = int(pause * 1e9)
        self._clock = clock
        self._max_peers = max_peers
        # peer -> (failures, first failure of the window, paused until); insertion order is
        # the order of the last failure.
        self._peers: dict[str, tuple[int, int, int]] = {}

    def paused(self, peer: str) -> float:
        entry = self._peers.get(peer)
        if entry is None:
            return 0.0
        left = entry[2] - self._clock.mono_ns()
        return left / 1e9 if left > 0 else 0.0

    def failed(self, peer: str) -> bool:
        now = self._clock.mono_ns()
        count, since, until = self._peers.pop(peer, (0, now, 0))
        if now - since > self._window_ns:
            count, since = 0, now
        count += 1
        started = False
        if count >= self._max and until <= now:
            until, count, since, started = now + self._pause_ns, 0, now, True
        self._peers[peer] = (count, since, until)
        while len(self._peers) > self._max_peers:
            del self._peers[next(iter(self._peers))]
        return started


@dataclass(slots=True)
class _Connection:
    peer: str
    """``host:port``, for logs."""
    host: str
    """The peer address, which caps and throttles count by."""
    pending: bool = True
    """No authenticated request yet: counted in its peer's ``max_pending_per_peer``."""


def check_token(token: str) -> str:
    """``token`` if usable as a bearer token (RFC 6750 ``b64token``), else ``ValueError``."""
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise ValueError(
            "token: must be a non-empty string of letters, digits and -._~+/ (then any '=')"
        )
    return token


# --------------------------------------------------------------------------- encodings


def encode_ndjson(rows: Sequence[Row]) -> bytes:
    """One JSON object per event and line; ``data`` base64, hashes lowercase hex."""
    b64 = base64.b64encode
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    lines = [
        dumps(
            {
                "seq": s,
                "wall_ns": w,
                "mono_ns": m,
                "boot_id": b,
                "type": t,
                "lane": la,
                "version": v,
                "data": b64(d).decode("ascii"),
                "prev_hash": p.hex(),
                "hash": h.hex(),
            }
        )
        for s, w, m, b, t, la, v, d, p, h in rows
    ]
    lines.append("")
    return "\n".join(lines).encode()


def decode_ndjson(body: bytes) -> list[Row]:
    """The rows of an NDJSON page (for tools and tests). Raises ``ProtocolError``."""
    rows: list[Row] = []
    for i, line in enumerate(body.decode().splitlines()):
        if not line:
            continue
        try:
            d = json.loads(line)
            rows.append(
                (
                    int(d["seq"]),
                    int(d["wall_ns"]),
                    int(d["mono_ns"]),
                    str(d["boot_id"]),
                    str(d["type"]),
                    None if d["lane"] is None else str(d["lane"]),
                    int(d["version"]),
                    base64.b64decode(d["data"], validate=True),
                    bytes.fromhex(d["prev_hash"]),
                    bytes.fromhex(d["hash"]),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"ndjson line {i + 1}: {exc}") from exc
    return rows


# --------------------------------------------------------------------------- the server


class PullApiServer:
    """Serves one gate's log at ``host:port`` (``port`` 0: any free port).

    ``ssl_context`` (a server context) makes it HTTPS. Use ``async with`` or ``start()`` /
    ``aclose()``; ``port`` holds the bound port once started.
    """

    def __init__(
        self,
        log_path: Path,
        gate_id: str,
        host: str,
        port: int,
        token: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limits: HttpLimits | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.log_path = Path(log_path)
        self.gate_id = check_id(gate_id, "gate id")
        self.host = host
        self.port = port
        self._token = check_token(token).encode("ascii")
        self._ssl = ssl_context
        self.limits = limits or HttpLimits()
        self._server: asyncio.Server | None = None
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._admitted = 0
        self._pending: dict[str, int] = {}
        """Per peer address: admitted connections with no authenticated request yet."""
        lim = self.limits
        self._throttle = AuthThrottle(
            lim.max_auth_failures,
            lim.auth_window,
            lim.auth_pause,
            clock if clock is not None else SystemClock(),
            lim.max_tracked_peers,
        )

    def __repr__(self) -> str:  # never shows the token
        return f"PullApiServer(gate={self.gate_id!r}, {self.host}:{self.port})"

    async def start(self) -> int:
        """Open the log read-only, bind, serve; return the bound port. ``LogError`` if the
        file is not this gate's log, ``OSError`` if the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("pull API already started")
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pull-api")
        try:
            self._conn = await self._in_thread(self._open_log)
            lim = self.limits
            self._server = await asyncio.start_server(
                self._on_connection,
                self.host,
                self.port,
                ssl=self._ssl,
                limit=max(lim.max_request_line, lim.max_header_bytes) + 2,
            )
        except BaseException:
            await self._release()
            raise
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("pull_api_listening", gate=self.gate_id, host=self.host, port=self.port)
        return self.port

    async def aclose(self) -> None:
        """Stop listening, end open connections, close the log connection. Idempotent."""
        self._closing = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
            log.info("pull_api_closed", gate=self.gate_id)
        await self._release()

    async def __aenter__(self) -> PullApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the log ------------------------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        executor = self._executor
        if executor is None:
            raise LogError("the pull API is closed")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    async def _release(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=False)

    def _open_log(self) -> sqlite3.Connection:
        if not self.log_path.exists():
            raise LogError(f"no log file at {self.log_path}")
        try:
            conn = connect(self.log_path, readonly=True)
        except sqlite3.Error as exc:
            raise LogError(f"cannot open {self.log_path} read-only: {exc}") from exc
        try:
            row = conn.execute("SELECT value FROM log_meta WHERE key = 'gate_id'").fetchone()
        except sqlite3.Error as exc:
            conn.close()
            raise LogError(f"{self.log_path} is not an edgegate log: {exc}") from exc
        if row is None or str(row[0]) != self.gate_id:
            conn.close()
            owner = "no gate" if row is None else f"gate {str(row[0])!r}"
            raise GateMismatchError(f"{self.log_path} belongs to {owner}, not {self.gate_id!r}")
        return conn

    def _read_page(self, after: int, limit: int) -> tuple[int, bytes, list[Row]]:
        """Head and up to ``limit`` contiguous rows after ``after``, in one read snapshot."""
        conn = self._conn
        if conn is None:
            raise LogError("the pull API is closed")
        budget = self.limits.max_page_bytes
        conn.execute("BEGIN")
        try:
            head_seq, head_hash = read_head(conn)
            cur = rows_after(conn, after, limit)
            rows: list[Row] = []
            size = 0
            for row in cur:
                # Stop before a gap: a batch is contiguous; the next page starts at the gap,
                # where central sees (and reports) it.
                if rows and row[0] != rows[-1][0] + 1:
                    break
                size += len(row[7]) + _ROW_OVERHEAD
                if rows and size > budget:
                    break
                rows.append(row)
            cur.close()
        finally:
            conn.execute("COMMIT")
        return head_seq, head_hash, rows

    def _events_body(self, after: int, limit: int, media: str) -> tuple[int, list[Row], bytes]:
        head_seq, _, rows = self._read_page(after, limit)
        if not rows:
            return head_seq, rows, b""
        if media == NDJSON:
            return head_seq, rows, encode_ndjson(rows)
        return head_seq, rows, encode_batch(EventBatch.of(self.gate_id, rows))

    def _head(self) -> tuple[int, bytes]:
        conn = self._conn
        if conn is None:
            raise LogError("the pull API is closed")
        return read_head(conn)

    # -- connections --------------------------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = peer_name(writer)
        try:
            linger = await self._admit(reader, writer, peer)
            await shut(reader, writer, linger, self.limits.linger)
        except asyncio.CancelledError:
            writer.close()
            raise
        except (ConnectionError, TimeoutError) as exc:  # the client vanished or stalled
            log.info("pull_api_client_gone", peer=peer, error=repr(exc))
            writer.close()
        except Exception as exc:  # a bug or a dead socket: drop this connection only
            log.error("pull_api_connection_failed", peer=peer, error=repr(exc))
            writer.close()
        finally:
            self._tasks.discard(task)

    async def _admit(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> bool:
        """Refuse the connection unread (paused peer, too many connections) or serve it."""
        lim = self.limits
        host = peer_host(writer)
        refusal: HttpError | None = None
        if self._closing:
            refusal = HttpError(503, "shutting down")
        elif (pause := self._throttle.paused(host)) > 0:
            refusal = HttpError(
                429,
                "too many bad tokens from this address",
                headers=[("Retry-After", str(max(1, round(pause))))],
            )
        elif self._admitted >= lim.max_connections:
            refusal = HttpError(503, "too many connections", headers=[("Retry-After", "1")])
        elif self._pending.get(host, 0) >= lim.max_pending_per_peer:
            refusal = HttpError(
                503,
                "too many unauthenticated connections from this address",
                headers=[("Retry-After", "1")],
            )
        if refusal is not None:
            # Logged at debug only: a flood of refused connections must not flood the log.
            log.debug("pull_api_refused", peer=peer, status=refusal.status, error=refusal.message)
            await self._send(writer, error_response(refusal), keep_alive=False)
            return True
        self._admitted += 1
        self._pending[host] = self._pending.get(host, 0) + 1
        conn = _Connection(peer, host)
        try:
            return await self._serve(reader, writer, conn)
        finally:
            self._admitted -= 1
            if conn.pending:
                self._unpend(host)

    def _unpend(self, host: str) -> None:
        n = self._pending.get(host, 0) - 1
        if n > 0:
            self._pending[host] = n
        else:
            self._pending.pop(host, None)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Connection
    ) -> bool:
        """Answer requests until the connection should close; True to linger before."""
        lim = self.limits
        peer = conn.peer
        served = 0
        while True:
            timeout = lim.header_timeout if served == 0 else lim.idle_timeout
            started = time.monotonic()
            try:
                request = await asyncio.wait_for(
                    read_request(
                        reader, lim.max_request_line, lim.max_header_bytes, lim.max_headers
                    ),
                    timeout,
                )
            except Eof:
                return False
            except TimeoutError:
                log.info("pull_api_timeout", peer=peer, after_requests=served)
                if served == 0:
                    slow = HttpError(408, "request head not received in time", close=True)
                    await self._send(writer, error_response(slow), keep_alive=False)
                return True
            except HttpError as exc:
                response = error_response(exc)
                await self._send(writer, response, keep_alive=False)
                self._log(None, None, response, peer, started)
                return True
            served += 1
            try:
                response = await self._answer(request)
            except HttpError as exc:
                response = error_response(exc)
            if response.status == 401:
                if self._throttle.failed(conn.host):
                    log.warning(
                        "pull_api_peer_paused",
                        peer=conn.host,
                        failures=lim.max_auth_failures,
                        pause_s=lim.auth_pause,
                    )
            elif conn.pending:
                conn.pending = False  # shown the token: no longer counted against its peer
                self._unpend(conn.host)
            keep = (
                request.keep_alive
                and not response.close
                and served < lim.max_requests_per_connection
                and not self._closing
            )
            await self._send(writer, response, keep_alive=keep)
            self._log(request.method, request.target, response, peer, started)
            if not keep:
                return True

    async def _send(
        self, writer: asyncio.StreamWriter, resp: Response, *, keep_alive: bool
    ) -> None:
        await send(writer, resp, keep_alive=keep_alive, write_timeout=self.limits.write_timeout)

    def _log(
        self,
        method: str | None,
        target: str | None,
        resp: Response,
        peer: str,
        started: float,
    ) -> None:
        # The path only: never the query string or headers (the token lives there).
        path = None if target is None else show(urlsplit(target).path, 80)[1:-1]
        fields: dict[str, Any] = {
            "gate": self.gate_id,
            "peer": peer,
            "method": method,
            "path": path,
            "status": resp.status,
            "rows": resp.rows,
            "bytes": len(resp.body),
        }
        if started:
            fields["ms"] = round((time.monotonic() - started) * 1000, 1)
        if resp.error is not None:
            fields["error"] = resp.error
        if resp.status >= 500:
            log.error("pull_api_request", **fields)
        elif resp.status >= 400:
            log.warning("pull_api_request", **fields)
        else:
            log.info("pull_api_request", **fields)

    # -- answering ----------------------------------------------------------------------

    async def _answer(self, request: Request) -> Response:
        # The token first: without it, a client learns nothing about paths or methods.
        self._authorize(request)
        target = request.target
        if target.startswith("/"):
            path, _, query = target.partition("?")
        elif target.startswith(("http://", "https://")):
            parts = urlsplit(target)
            path, query = parts.path or "/", parts.query
        else:
            raise HttpError(400, f"malformed request target {show(target)}", close=True)
        path = path.partition("#")[0]
        if path not in (EVENTS_PATH, HEAD_PATH):
            raise HttpError(404, f"no such path {show(path)} (try {EVENTS_PATH}, {HEAD_PATH})")
        if request.method != "GET":
            raise HttpError(
                405,
                f"method {request.method} not allowed: GET only",
                headers=[("Allow", "GET")],
            )
        gate = [(GATE_HEADER, self.gate_id)]
        try:
            if path == HEAD_PATH:
                return await self._answer_head(request, query, gate)
            return await self._answer_events(request, query, gate)
        except HttpError as exc:
            return error_response(exc, gate)

    def _authorize(self, request: Request) -> None:
        # Every 401 closes the connection: only a client holding the token keeps one open.
        challenge = 'Bearer realm="edgegate"'
        values = request.headers.get("authorization", [])
        if not values:
            raise HttpError(
                401,
                "missing bearer token",
                headers=[("WWW-Authenticate", challenge)],
                close=True,
            )
        scheme, _, given = values[0].partition(" ")
        bad = [("WWW-Authenticate", f'{challenge}, error="invalid_token"')]
        if len(values) > 1 or scheme.lower() != "bearer":
            raise HttpError(
                401, "expected one 'Authorization: Bearer <token>'", headers=bad, close=True
            )
        # Constant time: the comparison reveals nothing about how much of a guess matched.
        if not hmac.compare_digest(given.strip().encode("latin-1"), self._token):
            raise HttpError(401, "wrong bearer token", headers=bad, close=True)

    def _negotiate(self, request: Request, offers: Sequence[str]) -> str:
        values = request.headers.get("accept")
        accept = None if values is None else ", ".join(values)
        media = negotiate(accept, offers)
        if media is None:
            raise HttpError(
                406,
                f"cannot produce {show(accept or '', 80)}: offered {', '.join(offers)}",
            )
        return media

    def _params(self, query: str, allowed: Sequence[str]) -> dict[str, str]:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=8)
        except ValueError as exc:
            raise HttpError(400, f"malformed query string: {exc}") from exc
        params: dict[str, str] = {}
        for name, value in pairs:
            if name not in allowed:
                known = ", ".join(allowed) if allowed else "none"
                raise HttpError(400, f"unknown parameter {show(name)} (known: {known})")
            if name in params:
                raise HttpError(400, f"{name}: given more than once")
            params[name] = value
        return params

    async def _answer_head(
        self, request: Request, query: str, gate: list[tuple[str, str]]
    ) -> Response:
        media = self._negotiate(request, _HEAD_OFFERS)
        self._params(query, ())
        try:
            seq, digest = await self._in_thread(self._head)
        except (sqlite3.Error, LogError) as exc:
            raise HttpError(500, f"cannot read the log: {exc}") from exc
        body = json.dumps({"gate": self.gate_id, "seq": seq, "hash": digest.hex()}).encode()
        return Response(200, body + b"\n", media, [*gate, (HEAD_HEADER, str(seq))])

    async def _answer_events(
        self, request: Request, query: str, gate: list[tuple[str, str]]
    ) -> Response:
        media = self._negotiate(request, _EVENT_OFFERS)
        params = self._params(query, ("after", "limit"))
        lim = self.limits
        after = uint_param(params.get("after", "0"), "after", 0, INT64_MAX)
        limit = uint_param(params.get("limit", str(lim.default_limit)), "limit", 1, lim.max_limit)
        try:
            head_seq, rows, body = await self._in_thread(self._events_body, after, limit, media)
        except (sqlite3.Error, LogError, ProtocolError) as exc:
            raise HttpError(500, f"cannot read the log: {exc}") from exc
        headers = [*gate, (HEAD_HEADER, str(head_seq)), ("Vary", "Accept")]
        if not rows:
            return Response(204, b"", None, headers)
        return Response(200, body, media, headers, rows=len(rows))
