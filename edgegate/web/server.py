"""The daemon's one HTTP server, on ``aiohttp.web``, with the lock-out protections aiohttp
lacks. Parts (the pull API at ``/v1``, the console at ``/``) mount ``web.Application``\\ s.

(Over 600 lines: the per-connection protocol (``_Connection``) and the server keep the
admission state together (connection counts, pending connections per address, the oldest
idle one to close); splitting them would spread one set of counters over two modules.)

Protections, all per connection and decided when it is accepted (``_Connection``):

- ``max_connections`` in all; beyond it a new connection gets ``503`` unread.
- ``max_pending_per_peer``: connections from one address that have not yet made an
  authenticated request; a mounted part marks a request authenticated with
  :func:`authenticated` (a bearer token, a session cookie), and its connection no longer
  counts, so a client behind an attacker's address keeps its kept-alive connection.
- ``max_pending`` (optional): such connections from all addresses together, below
  ``max_connections`` so that the rest is room only authenticated connections fill. When it
  (or ``max_connections``) is reached, the oldest unauthenticated connection not in the
  middle of a request (idle between requests, or still to send one) is closed to make room:
  hosts holding idle connections open cannot lock logged-in users out.
- Peer checks (:meth:`HttpServer.add_peer_check`): a part may refuse an address outright,
  e.g. ``429`` for one that sent too many bad tokens.
- ``header_timeout``: the first request head must be in within that time of the connection
  opening, whatever trickles in meanwhile (``408``, then closed): a slowloris cannot hold a
  connection.
- ``write_timeout``: a client that reads nothing of a response for that long is dropped.
- Request line, header field and header count limits (``414``, ``431``); request bodies above
  ``max_body`` (``413``); HTTP/1.1 without ``Host`` (``400``).

A guard (:meth:`HttpServer.mount` ``guard=``) runs before routing for every path under its
prefix: the pull API checks its token there, so a client without it learns nothing about
paths or methods. Errors are JSON ``{"error": ...}``; a client never sees a traceback.
Refusals close the connection after a short linger (half-close, discard input) so the
kernel does not reset it and destroy the answer in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from edgegate.observability import get_logger

log = get_logger("http")

JSON = "application/json"
SERVER_NAME = "edgegate"

Guard = Callable[[web.Request], Awaitable[None]]
"""Runs before routing for a mount's paths; raises :class:`HttpError` to refuse."""
PeerCheck = Callable[[str], "HttpError | None"]
"""Given a peer address, the refusal for a new connection from it, or None."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpError(Exception):
    """A request answered with an error status; ``close`` ends the connection after it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)
        self.close = close


def error_response(exc: HttpError, extra: Sequence[tuple[str, str]] = ()) -> web.Response:
    """The JSON answer ``{"error": message}`` for ``exc``, with its and ``extra`` headers."""
    resp = web.Response(
        status=exc.status,
        body=json.dumps({"error": exc.message}, ensure_ascii=False).encode() + b"\n",
        content_type=JSON,
    )
    for name, value in (*exc.headers, *extra):
        resp.headers[name] = value
    if exc.close:
        resp.force_close()
        resp.headers["Connection"] = "close"  # also where HTTP/1.0 would not say it
    return resp


def show(value: str, n: int = 40) -> str:
    """``value`` quoted and cut to ``n`` characters, for error messages and logs."""
    return repr(value[:n] + ("…" if len(value) > n else ""))


def authenticated(request: web.BaseRequest) -> None:
    """Mark ``request``'s connection authenticated: no longer counted against its peer's
    ``max_pending_per_peer``."""
    conn = request.protocol
    if isinstance(conn, _Connection):
        conn.authenticated()


def on_lost(request: web.BaseRequest, callback: Callable[[], None]) -> None:
    """Call ``callback`` (once) when ``request``'s connection is lost: a long answer (a
    stream) learns at once that its client went away, not at its next write."""
    conn = request.protocol
    if isinstance(conn, _Connection) and conn.transport is not None:
        conn.on_lost.append(callback)
    else:
        asyncio.get_running_loop().call_soon(callback)


def peer_host(request: web.BaseRequest) -> str:
    """The client's address (what caps and pauses count by)."""
    conn = request.protocol
    return conn.host if isinstance(conn, _Connection) else str(request.remote)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one client may cost the server. Sizes in bytes, times in seconds."""

    max_request_line: int = 8192
    max_field_size: int = 16384
    """One header field line."""
    max_headers: int = 64
    max_body: int = 64 * 1024
    """Request bodies (the console's forms); the pull API takes none."""
    header_timeout: float = 5.0
    """To receive the first request's head from the connection's opening."""
    idle_timeout: float = 15.0
    """Until the next request on a kept-alive connection."""
    write_timeout: float = 60.0
    """A client that reads nothing of a response for this long is dropped."""
    max_connections: int = 32
    max_pending_per_peer: int = 8
    """Connections from one address that have not (yet) made an authenticated request."""
    max_pending: int | None = None
    """Such connections in all (None: only ``max_connections`` caps them); at the cap the
    oldest idle one makes room."""
    max_requests_per_connection: int = 1000
    linger: float = 1.0
    """After a refusal: how long unread input is drained before closing."""

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_pending_per_peer", "max_requests_per_connection"):
            if getattr(self, name) < 1:
                raise ValueError(f"limits: {name} must be >= 1")
        if self.max_pending is not None and not 1 <= self.max_pending < self.max_connections:
            raise ValueError("limits: max_pending must be >= 1 and below max_connections")
        for name in ("header_timeout", "idle_timeout", "write_timeout", "linger"):
            if not getattr(self, name) > 0:
                raise ValueError(f"limits: {name} must be > 0")


def _raw_error(exc: HttpError) -> bytes:
    """A whole ``Connection: close`` answer, for a connection refused before aiohttp reads it."""
    body = json.dumps({"error": exc.message}, ensure_ascii=False).encode() + b"\n"
    lines = [
        f"HTTP/1.1 {exc.status} {HTTPStatus(exc.status).phrase}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Server: {SERVER_NAME}",
        "Cache-Control: no-store",
        f"Content-Type: {JSON}",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in exc.headers),
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _parse_error(exc: BaseException | None, limits: ServerLimits) -> HttpError:
    """What to answer a request aiohttp's parser refused."""
    text = str(getattr(exc, "message", "") or exc or "bad request")
    if isinstance(exc, http_exceptions.LineTooLong):
        # aiohttp names the limit it hit: the request line's, or a header field's.
        if exc.args[1:2] == (limits.max_request_line,):
            return HttpError(414, "request line longer than allowed", close=True)
        return HttpError(431, "header field longer than allowed", close=True)
    if "too many headers" in text.lower():
        return HttpError(431, f"more than {limits.max_headers} header fields", close=True)
    return HttpError(400, f"malformed request: {text[:200]}", close=True)


#: The headers every page we serve to a person carries: our own assets only, no framing,
#: no sniffing, nothing cached (pages show plates).
PAGE_CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
PAGE_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "Content-Security-Policy": PAGE_CSP,
        "X-Content-Type-Options": "nosniff",
        # not no-referrer: with it, Chromium sends "Origin: null" on a login form's POST
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
)


class _Connection(RequestHandler):
    """aiohttp's protocol for one connection, admitted (or refused) when it is accepted."""

    def __init__(self, owner: HttpServer, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.owner = owner
        self.host = ""
        self.peer = ""
        self.pending = False
        self._admitted = False
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None
        self._stalled: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._raw: asyncio.Transport | None = None
        self.on_lost: list[Callable[[], None]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        info = transport.get_extra_info("peername")
        if isinstance(info, tuple) and len(info) >= 2:
            self.host, self.peer = str(info[0]), f"{info[0]}:{info[1]}"
        else:
            self.host = self.peer = str(info)
        self._raw = transport
        refusal = self.owner._admit(self)
        if refusal is not None:
            # Logged at debug only: a flood of refused connections must not flood the log.
            log.debug("http_refused", peer=self.peer, status=refusal.status, error=refusal.message)
            self._refuse(transport, refusal)
            return
        self._admitted = self.pending = True
        super().connection_made(transport)
        self._deadline = self._loop.call_later(self.owner.limits.header_timeout, self._too_slow)

    def authenticated(self) -> None:
        if self.pending:
            self.pending = False
            self.owner._unpend(self.host)
            self.owner._unauthenticated.pop(self, None)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: discard what the client still sends
        super().data_received(data)
        if self._deadline is not None and self._request_count:
            self._deadline.cancel()
            self._deadline = None

    def eof_received(self) -> None:
        if self._refused and self._raw is not None:
            self._raw.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._deadline, self._stalled, self._linger):
            if timer is not None:
                timer.cancel()
        if self._raw is not None:
            self.owner._lingering.discard(self._raw)
        self._raw = None
        if self._admitted:
            self._admitted = False
            self.owner._release(self)
            super().connection_lost(exc)
        callbacks, self.on_lost = self.on_lost, []
        for callback in callbacks:
            callback()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled = self._loop.call_later(self.owner.limits.write_timeout, self._dead)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _dead(self) -> None:
        log.info("http_client_stalled", peer=self.peer)
        self._stalled = None
        self.force_close()

    @property
    def busy(self) -> bool:
        """Whether a request is being answered now."""
        return self._request_in_progress

    def _too_slow(self) -> None:
        self._deadline = None
        transport = self._raw
        if transport is None or self._request_count:
            return
        log.info("http_timeout", peer=self.peer, after_requests=0)
        # No request is being answered: the 408 can go straight to the socket. Then stop
        # parsing and end aiohttp's wait for a request.
        self._force_close = True
        if self._waiter is not None:
            self._waiter.cancel()
        self._refuse(transport, HttpError(408, "request head not received in time", close=True))

    def _refuse(self, transport: asyncio.Transport, refusal: HttpError) -> None:
        self._refused = True
        with contextlib.suppress(OSError, RuntimeError):
            transport.write(_raw_error(refusal))
            if transport.can_write_eof():
                # Half-close, then discard input until the client closes or the linger ends:
                # closing with unread input makes the kernel send RST, which can destroy the
                # answer in flight.
                transport.write_eof()
                self._linger = self._loop.call_later(self.owner.limits.linger, transport.close)
                self.owner._lingering.add(transport)
                return
        transport.close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 500:
            log.error("http_handler_failed", peer=self.peer, error=repr(exc))
            err = HttpError(500, "internal error", close=True)
        elif isinstance(exc, http_exceptions.HttpProcessingError):
            err = _parse_error(exc, self.owner.limits)
        else:
            err = HttpError(status, message or HTTPStatus(status).phrase, close=True)
        self.owner._log_request(None, None, err.status, self.peer, 0.0, err.message)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer was already under way")
        resp = error_response(err)
        # Not through the application (no on_response_prepare): say it all here.
        resp.headers["Server"] = SERVER_NAME
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        pass  # handle_error logs: never a traceback per malformed request


@dataclass(slots=True)
class _Mount:
    prefix: str
    app: web.Application
    guard: Guard | None


class HttpServer:
    """Serves the mounted applications at ``host:port`` (``port`` 0: any free port).

    ``ssl_context`` (a server context) makes it HTTPS. :meth:`mount` before :meth:`start`;
    then ``port`` holds the bound port. :meth:`aclose` stops it (idempotent).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.limits = limits or ServerLimits()
        self._mounts: list[_Mount] = []
        self._routes: list[tuple[str, Handler]] = []
        self._peer_checks: list[PeerCheck] = []
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._closing = False
        self._admitted: set[_Connection] = set()
        # Refused connections still discarding input: closed at the latest by aclose.
        self._lingering: set[asyncio.Transport] = set()
        self._pending: dict[str, int] = {}
        self._unauthenticated: dict[_Connection, None] = {}  # oldest first
        self.accepted = 0
        """Connections admitted since the start (for tests and benchmarks)."""

    def __repr__(self) -> str:
        return f"HttpServer({self.host}:{self.port}, tls={self.ssl_context is not None})"

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections admitted and open now."""
        return len(self._admitted)

    def mount(self, prefix: str, app: web.Application, *, guard: Guard | None = None) -> None:
        """Serve ``app`` under ``prefix`` (``"/v1"``; ``"/"`` for everything no other mount
        takes). ``guard`` runs before routing for every path under ``prefix``."""
        if self._runner is not None:
            raise RuntimeError("mount before start()")
        prefix = "/" + prefix.strip("/")
        if any(m.prefix == prefix for m in self._mounts):
            raise ValueError(f"{prefix} is mounted already")
        self._mounts.append(_Mount(prefix, app, guard))

    def add_get(self, path: str, handler: Handler) -> None:
        """Serve ``GET`` (and ``HEAD``) of exactly ``path`` (``/metrics``) beside the mounts,
        before :meth:`start`; the handler checks its own credentials."""
        if self._runner is not None:
            raise RuntimeError("add routes before start()")
        self._routes.append((path, handler))

    def add_peer_check(self, check: PeerCheck) -> None:
        """Refuse new connections from an address while ``check(address)`` gives an error."""
        self._peer_checks.append(check)

    async def start(self) -> int:
        """Bind and serve; the bound port. ``OSError`` if the address cannot be bound."""
        if self._runner is not None:
            raise RuntimeError("the HTTP server is started already")
        self._closing = False
        lim = self.limits
        # The part mounted at "/" is the root application (aiohttp mounts sub-applications
        # under a prefix only), the others its sub-applications; this server's checks come
        # first in its middlewares, so they run for every path.
        top = next((m.app for m in self._mounts if m.prefix == "/"), None)
        root = top if top is not None else web.Application(client_max_size=lim.max_body)
        root.middlewares.insert(0, self._middleware)
        root.on_response_prepare.append(self._on_prepare)
        for m in self._mounts:
            if m.prefix != "/":
                root.add_subapp(m.prefix, m.app)
        for path, handler in self._routes:
            root.router.add_get(path, handler)
        runner = web.AppRunner(root, handle_signals=False, access_log=None, shutdown_timeout=2)
        await runner.setup()
        manager = runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()

        def protocol() -> _Connection:
            return _Connection(
                self,
                manager,
                loop=loop,
                keepalive_timeout=lim.idle_timeout,
                access_log=None,
                max_line_size=lim.max_request_line,
                max_field_size=lim.max_field_size,
                max_headers=lim.max_headers,
                lingering_time=lim.linger,
            )

        try:
            self._server = await loop.create_server(
                protocol, self.host, self.port, ssl=self.ssl_context, reuse_address=True
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("http_listening", host=self.host, port=self.port, tls=self.ssl_context is not None)
        return self.port

    async def aclose(self) -> None:
        """Stop listening, end open connections, run the applications' cleanup. Idempotent."""
        self._closing = True
        server, self._server = self._server, None
        runner, self._runner = self._runner, None
        if server is not None:
            server.close()
        if runner is not None:
            await runner.cleanup()
        if server is not None:
            for conn in list(self._admitted):
                conn.force_close()
            for transport in list(self._lingering):
                transport.close()
            self._lingering.clear()
            await server.wait_closed()
            log.info("http_closed", host=self.host, port=self.port)

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- connections ----------------------------------------------------------------------

    def _admit(self, conn: _Connection) -> HttpError | None:
        lim = self.limits
        if self._closing:
            return HttpError(503, "shutting down", close=True)
        for check in self._peer_checks:
            refusal = check(conn.host)
            if refusal is not None:
                return refusal
        retry = [("Retry-After", "1")]
        if self._pending.get(conn.host, 0) >= lim.max_pending_per_peer:
            return HttpError(
                503, "too many unauthenticated connections from this address", headers=retry
            )
        if lim.max_pending is not None and (
            len(self._admitted) >= lim.max_connections
            or len(self._unauthenticated) >= lim.max_pending
        ):
            self._make_room()
        if len(self._admitted) >= lim.max_connections:
            return HttpError(503, "too many connections", headers=retry)
        if lim.max_pending is not None and len(self._unauthenticated) >= lim.max_pending:
            return HttpError(503, "too many unauthenticated connections", headers=retry)
        self._admitted.add(conn)
        self._unauthenticated[conn] = None
        self.accepted += 1
        self._pending[conn.host] = self._pending.get(conn.host, 0) + 1
        return None

    def _make_room(self) -> None:
        """Close the oldest unauthenticated connection not answering a request now."""
        idle = next((c for c in self._unauthenticated if not c.busy), None)
        if idle is not None:
            log.debug("http_displaced", peer=idle.peer)
            idle.force_close()
            self._release(idle)

    def _release(self, conn: _Connection) -> None:
        self._admitted.discard(conn)
        if conn.pending:
            conn.pending = False
            self._unpend(conn.host)
            self._unauthenticated.pop(conn, None)

    def _unpend(self, host: str) -> None:
        n = self._pending.get(host, 0) - 1
        if n > 0:
            self._pending[host] = n
        else:
            self._pending.pop(host, None)

    # -- requests -------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        try:
            self._check_head(request)
        except HttpError as exc:
            return self._failed(request, exc, started)
        try:
            path = request.path
            # The guard of the most specific mount whose prefix holds the path.
            for m in sorted(self._mounts, key=lambda m: -len(m.prefix)):
                if m.prefix == "/" or path == m.prefix or path.startswith(m.prefix + "/"):
                    if m.guard is not None:
                        await m.guard(request)
                    break
            return await handler(request)
        except HttpError as exc:
            return error_response(exc)  # a mounted part's answer: it logs its own
        except web.HTTPException as exc:
            if exc.status < 400:
                raise  # a redirect or a success a handler raised
            message = str(exc.reason)
            if exc.status == 404:
                message = f"no such path {show(request.path)}"
            failure = HttpError(exc.status, message, headers=_kept(exc.headers))
            return self._failed(request, failure, started)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as exc:  # a bug: this request fails, the server serves on
            log.error("http_handler_failed", path=show(request.path, 80), error=repr(exc))
            return self._failed(request, HttpError(500, "internal error"), started)

    def _failed(self, request: web.Request, exc: HttpError, started: float) -> web.Response:
        self._log_request(
            request.method, request.path, exc.status, _peer(request), started, exc.message
        )
        return error_response(exc)

    def _check_head(self, request: web.Request) -> None:
        headers = request.headers
        if request.version.major != 1:
            if request.version < (1, 0):  # no version at all: aiohttp calls it HTTP/0.9
                raise HttpError(400, "malformed request line: no HTTP version", close=True)
            raise HttpError(
                505, f"HTTP/{request.version.major} not supported: HTTP/1.x only", close=True
            )
        if request.version >= (1, 1) and "Host" not in headers:
            raise HttpError(400, "missing Host header (required by HTTP/1.1)", close=True)
        if len(headers.getall("Host", ())) > 1:
            raise HttpError(400, "header Host: sent more than once", close=True)
        length = request.content_length
        if "Transfer-Encoding" in headers or (length is not None and length > self.limits.max_body):
            raise HttpError(
                413, f"request body larger than {self.limits.max_body} bytes", close=True
            )

    async def _on_prepare(self, request: web.Request, resp: web.StreamResponse) -> None:
        resp.headers["Server"] = SERVER_NAME
        conn = request.protocol
        if self._closing or (
            isinstance(conn, _Connection)
            and conn._request_count >= self.limits.max_requests_per_connection
        ):
            resp.force_close()
        keep = resp.keep_alive if resp.keep_alive is not None else request.keep_alive
        if keep and request.version == (1, 1):
            resp.headers.setdefault("Connection", "keep-alive")

    def _log_request(
        self,
        method: str | None,
        path: str | None,
        status: int,
        peer: str,
        started: float,
        error: str | None,
    ) -> None:
        fields: dict[str, Any] = {
            "peer": peer,
            "method": method,
            "path": None if path is None else show(path, 80)[1:-1],
            "status": status,
        }
        if started:
            fields["ms"] = round((time.monotonic() - started) * 1000, 1)
        if error is not None:
            fields["error"] = error
        (log.error if status >= 500 else log.warning)("http_request", **fields)


def _peer(request: web.BaseRequest) -> str:
    conn = request.protocol
    return conn.peer if isinstance(conn, _Connection) else str(request.remote)


def _kept(headers: Any) -> list[tuple[str, str]]:
    # What an aiohttp error carries that the client needs (Allow on 405).
    return [(k, v) for k, v in headers.items() if k in ("Allow", "Retry-After")]
