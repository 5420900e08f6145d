"""The gate's pull API: central fetches events over HTTP instead of (or besides) MQTT.
Mounted at ``/v1`` on the daemon's HTTP server (:mod:`edgegate.web`), which carries the
connection-level protections (head deadline, connection caps, size limits); what is the
API's own is here: its token and limits, the endpoints and their encodings (the bearer-token
check, its throttle and content negotiation are :mod:`edgegate.sync.bearer_api`'s).

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
least one event). Every ``/v1`` answer past the token carries ``X-Edgegate-Gate`` (the gate
id) and, when the log was read, ``X-Edgegate-Head`` (its last seq, read after the rows: never
below the last one). Errors are JSON ``{"error": "..."}`` naming what is wrong: 400 bad parameter,
401 missing or wrong token (with ``WWW-Authenticate: Bearer``), 404 unknown path, 405 not
GET, 406 no acceptable encoding, 410 ``after`` is below what the gate keeps (``[log.retention]``
removed it; the body adds ``first_seq``, the first event kept), 413 a request body, 429 too
many bad tokens from this
address (with ``Retry-After``), 500 the log could not be read; the server adds its own
(400, 408, 414, 431, 503, 505: see :mod:`edgegate.web.server`).

Lock-out resistance. The token is checked before the path and method (a guard the server
runs before routing), so a client without it learns nothing about paths; a 401 closes the
connection, so only a client holding the token keeps a connection alive, and a request
with the token marks its connection authenticated (no longer counted in the server's
per-address cap on pending connections). After ``max_auth_failures`` 401s from one address
within ``auth_window``, that address gets 429 on every new connection, unread, for
``auth_pause``: the pause is per address, so a client sharing an address with an attacker
(NAT) is paused with it.

The log is read through its own ``LogReader`` (the active file, sealed segments and archives
as one log) on one worker thread; the log is WAL, so reading never blocks the gate's writer.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import sqlite3
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from edgegate.clock import SystemClock
from edgegate.core.clock import Clock
from edgegate.log.chain import Row
from edgegate.log.eventlog import GateMismatchError, LogError
from edgegate.log.reader import LogGapError, LogGoneError, LogReader
from edgegate.observability import get_logger
from edgegate.sync.bearer_api import (
    AuthThrottle,
    bearer_token,
    check_token,
    negotiate,
    query_params,
    uint_param,
    wrong_token,
)
from edgegate.sync.protocol import (
    INT64_MAX,
    MAX_BATCH_EVENTS,
    EventBatch,
    ProtocolError,
    check_id,
    encode_batch,
)
from edgegate.web import (
    JSON,
    HttpError,
    HttpServer,
    ServerLimits,
    authenticated,
    error_response,
    peer_host,
    show,
)

# The bearer-token helpers are also importable from here (central's park API does).
__all__ = [
    "DEFAULT_LIMIT",
    "EVENTS_PATH",
    "GATE_HEADER",
    "HEAD_HEADER",
    "HEAD_PATH",
    "MAX_LIMIT",
    "MSGPACK",
    "MSGPACK_ALT",
    "NDJSON",
    "PREFIX",
    "AuthThrottle",
    "PullApi",
    "PullApiServer",
    "PullLimits",
    "bearer_token",
    "check_token",
    "decode_ndjson",
    "encode_ndjson",
    "negotiate",
    "query_params",
    "uint_param",
    "wrong_token",
]

log = get_logger("pull_api")
T = TypeVar("T")

PREFIX = "/v1"
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


@dataclass(frozen=True, slots=True)
class PullLimits:
    """The pull API's own limits (the connection ones are :class:`ServerLimits`)."""

    max_auth_failures: int = 10
    """401s from one address within ``auth_window`` that start its pause."""
    auth_window: float = 60.0
    auth_pause: float = 60.0
    """How long an address that sent too many bad tokens gets 429 on every connection."""
    max_tracked_peers: int = 4096
    """Addresses whose 401s are remembered (the oldest are forgotten first)."""
    max_limit: int = MAX_LIMIT
    default_limit: int = DEFAULT_LIMIT
    max_page_bytes: int = 8 << 20
    """Event data per page; a page holds at least one event whatever its size."""

    def __post_init__(self) -> None:
        if not 1 <= self.default_limit <= self.max_limit <= MAX_BATCH_EVENTS:
            raise ValueError(f"limits: need 1 <= default_limit <= max_limit <= {MAX_BATCH_EVENTS}")
        for name in ("max_auth_failures", "max_tracked_peers"):
            if getattr(self, name) < 1:
                raise ValueError(f"limits: {name} must be >= 1")
        for name in ("auth_window", "auth_pause"):
            if not getattr(self, name) > 0:
                raise ValueError(f"limits: {name} must be > 0")


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


# --------------------------------------------------------------------------- the API


class PullApi:
    """One gate's log as ``/v1/events`` and ``/v1/head``, to mount on an :class:`HttpServer`.

    :meth:`open` the log before serving, :meth:`aclose` after (idempotent)."""

    def __init__(
        self,
        log_path: Path,
        gate_id: str,
        token: str,
        *,
        limits: PullLimits | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.log_path = Path(log_path)
        self.gate_id = check_id(gate_id, "gate id")
        self._token = check_token(token).encode("ascii")
        self.limits = limits or PullLimits()
        self._reader: LogReader | None = None
        self._executor: ThreadPoolExecutor | None = None
        lim = self.limits
        self._throttle = AuthThrottle(
            lim.max_auth_failures,
            lim.auth_window,
            lim.auth_pause,
            clock if clock is not None else SystemClock(),
            lim.max_tracked_peers,
        )

    def __repr__(self) -> str:  # never shows the token
        return f"PullApi(gate={self.gate_id!r}, log={str(self.log_path)!r})"

    async def open(self) -> None:
        """Open the log read-only: ``LogError`` if the file is not this gate's log."""
        if self._executor is not None:
            raise RuntimeError("pull API already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pull-api")
        try:
            self._reader = await self._in_thread(self._open_log)
        except BaseException:
            await self._release()
            raise

    async def aclose(self) -> None:
        """Close the log connection. Idempotent."""
        await self._release()

    def mount(self, server: HttpServer) -> None:
        """Serve this API at ``/v1`` on ``server``: the token checked before routing, paused
        addresses refused on connecting."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        server.mount(PREFIX, app, guard=self._guard)
        server.add_peer_check(self._paused)

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
        conn, self._reader = self._reader, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=False)

    def _open_log(self) -> LogReader:
        if not self.log_path.exists():
            raise LogError(f"no log file at {self.log_path}")
        reader = LogReader(self.log_path, live=True)
        if reader.gate_id != self.gate_id:
            reader.close()
            raise GateMismatchError(
                f"{self.log_path} belongs to gate {reader.gate_id!r}, not {self.gate_id!r}"
            )
        return reader

    def _read_page(self, after: int, limit: int) -> tuple[int, bytes, list[Row]]:
        """Up to ``limit`` contiguous rows after ``after`` (across the log's segments and
        archives), then the head (read after them: never below the last row).
        ``LogGoneError`` if ``after + 1`` was removed by the retention."""
        reader = self._reader
        if reader is None:
            raise LogError("the pull API is closed")
        budget = self.limits.max_page_bytes
        rows: list[Row] = []
        size = 0
        for row in reader.rows(after, limit):
            # Stop before a gap: a batch is contiguous; the next page starts at the gap,
            # where central sees (and reports) it.
            if rows and row[0] != rows[-1][0] + 1:
                break
            size += len(row[7]) + _ROW_OVERHEAD
            if rows and size > budget:
                break
            rows.append(row)
        head_seq, head_hash = reader.head()
        return head_seq, head_hash, rows

    def _events_body(self, after: int, limit: int, media: str) -> tuple[int, list[Row], bytes]:
        head_seq, _, rows = self._read_page(after, limit)
        if not rows:
            return head_seq, rows, b""
        if media == NDJSON:
            return head_seq, rows, encode_ndjson(rows)
        return head_seq, rows, encode_batch(EventBatch.of(self.gate_id, rows))

    def _head(self) -> tuple[int, bytes]:
        reader = self._reader
        if reader is None:
            raise LogError("the pull API is closed")
        return reader.head()

    # -- admission ------------------------------------------------------------------------

    def _paused(self, host: str) -> HttpError | None:
        return self._throttle.refusal(host)

    async def _guard(self, request: web.Request) -> None:
        started = time.monotonic()
        try:
            if request.content_length or request.can_read_body:
                raise HttpError(413, "request bodies are not accepted", close=True)
            self._authorize(request)
        except HttpError as exc:
            if exc.status == 401 and self._throttle.failed(peer_host(request)):
                log.warning(
                    "pull_api_peer_paused",
                    peer=peer_host(request),
                    failures=self.limits.max_auth_failures,
                    pause_s=self.limits.auth_pause,
                )
            self._log(request, exc.status, 0, 0, started, exc.message)
            raise
        authenticated(request)  # shown the token: no longer counted against its address

    def _authorize(self, request: web.Request) -> None:
        given = bearer_token(request, "edgegate")
        # Constant time: the comparison reveals nothing about how much of a guess matched.
        if not hmac.compare_digest(given, self._token):
            raise wrong_token("edgegate")

    # -- answering ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        gate = [(GATE_HEADER, self.gate_id)]
        try:
            resp, rows = await self._answer(request, gate)
        except HttpError as exc:
            resp, rows = error_response(exc, gate), 0
            self._log(request, exc.status, 0, resp.content_length or 0, started, exc.message)
        else:
            self._log(request, resp.status, rows, resp.content_length or 0, started, None)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def _answer(
        self, request: web.Request, gate: list[tuple[str, str]]
    ) -> tuple[web.Response, int]:
        path = request.path
        if path not in (EVENTS_PATH, HEAD_PATH):
            raise HttpError(404, f"no such path {show(path)} (try {EVENTS_PATH}, {HEAD_PATH})")
        if request.method != "GET":
            raise HttpError(
                405,
                f"method {request.method} not allowed: GET only",
                headers=[("Allow", "GET")],
            )
        query = request.rel_url.raw_query_string
        if path == HEAD_PATH:
            return await self._answer_head(request, query, gate), 0
        return await self._answer_events(request, query, gate)

    def _negotiate(self, request: web.Request, offers: Sequence[str]) -> str:
        values = request.headers.getall("Accept", None)
        accept = None if values is None else ", ".join(values)
        media = negotiate(accept, offers)
        if media is None:
            raise HttpError(
                406,
                f"cannot produce {show(accept or '', 80)}: offered {', '.join(offers)}",
            )
        return media

    def _params(self, query: str, allowed: Sequence[str]) -> dict[str, str]:
        return query_params(query, allowed)

    async def _answer_head(
        self, request: web.Request, query: str, gate: list[tuple[str, str]]
    ) -> web.Response:
        media = self._negotiate(request, _HEAD_OFFERS)
        self._params(query, ())
        try:
            seq, digest = await self._in_thread(self._head)
        except (sqlite3.Error, LogError) as exc:
            raise HttpError(500, f"cannot read the log: {exc}") from exc
        body = json.dumps({"gate": self.gate_id, "seq": seq, "hash": digest.hex()}).encode()
        resp = web.Response(status=200, body=body + b"\n", content_type=media)
        _add(resp, [*gate, (HEAD_HEADER, str(seq))])
        return resp

    async def _answer_events(
        self, request: web.Request, query: str, gate: list[tuple[str, str]]
    ) -> tuple[web.Response, int]:
        media = self._negotiate(request, _EVENT_OFFERS)
        params = self._params(query, ("after", "limit"))
        lim = self.limits
        after = uint_param(params.get("after", "0"), "after", 0, INT64_MAX)
        limit = uint_param(params.get("limit", str(lim.default_limit)), "limit", 1, lim.max_limit)
        try:
            head_seq, rows, body = await self._in_thread(self._events_body, after, limit, media)
        except LogGoneError as exc:
            # Not an HttpError: the body names where the kept log starts, for the client.
            message = f"{exc}: ask from after={exc.first_seq - 1}"
            resp = web.json_response(
                {"error": message, "first_seq": exc.first_seq}, status=410, dumps=json.dumps
            )
            _add(resp, gate)
            return resp, 0
        except LogGapError as exc:
            raise HttpError(500, f"cannot read the log: {exc}") from exc
        except (sqlite3.Error, LogError, ProtocolError) as exc:
            # The detail (file paths) stays in the gate's own log.
            log.error("pull_api_log_unreadable", after=after, error=str(exc))
            raise HttpError(500, "cannot read the log: see the gate's log") from exc
        headers = [*gate, (HEAD_HEADER, str(head_seq)), ("Vary", "Accept")]
        if not rows:
            resp = web.Response(status=204)
        else:
            resp = web.Response(status=200, body=body, content_type=media)
        _add(resp, headers)
        return resp, len(rows)

    def _log(
        self,
        request: web.Request,
        status: int,
        rows: int,
        size: int,
        started: float,
        error: str | None,
    ) -> None:
        # The path only: never the query string or headers (the token lives there).
        fields: dict[str, Any] = {
            "gate": self.gate_id,
            "peer": peer_host(request),
            "method": request.method,
            "path": show(request.path, 80)[1:-1],
            "status": status,
            "rows": rows,
            "bytes": size,
            "ms": round((time.monotonic() - started) * 1000, 1),
        }
        if error is not None:
            fields["error"] = error
        if status >= 500:
            log.error("pull_api_request", **fields)
        elif status >= 400:
            log.warning("pull_api_request", **fields)
        else:
            log.info("pull_api_request", **fields)


def _add(resp: web.StreamResponse, headers: Sequence[tuple[str, str]]) -> None:
    for name, value in headers:
        resp.headers[name] = value


class PullApiServer:
    """The pull API alone on an :class:`HttpServer` of its own at ``host:port`` (``port`` 0:
    any free port), for tools and tests; the daemon mounts :class:`PullApi` on its one server.

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
        limits: PullLimits | None = None,
        server_limits: ServerLimits | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.api = PullApi(log_path, gate_id, token, limits=limits, clock=clock)
        self.http = HttpServer(host, port, ssl_context=ssl_context, limits=server_limits)
        self.api.mount(self.http)

    def __repr__(self) -> str:  # never shows the token
        return f"PullApiServer(gate={self.api.gate_id!r}, {self.http.host}:{self.http.port})"

    @property
    def port(self) -> int:
        return self.http.port

    async def start(self) -> int:
        """Open the log read-only, bind, serve; return the bound port. ``LogError`` if the
        file is not this gate's log, ``OSError`` if the address cannot be bound."""
        await self.api.open()
        try:
            return await self.http.start()
        except BaseException:
            await self.api.aclose()
            raise

    async def aclose(self) -> None:
        """Stop serving, end open connections, close the log connection. Idempotent."""
        await self.http.aclose()
        await self.api.aclose()

    async def __aenter__(self) -> PullApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
