"""The guard's console over HTTP: pages, static assets, login, the live view and actions.

Routes (all answers carry ``Content-Security-Policy: default-src 'self'``):

- ``GET /`` the console page (``/login`` without a session); ``GET``/``POST /login``;
  ``POST /logout``; ``GET /static/NAME`` the packaged assets;
- ``GET /api/me`` the account, role and CSRF token; ``GET /api/view`` the gate's view;
  ``GET /api/live`` a WebSocket pushing ``{"type": "view", "now_ns", "view"}`` on every change;
  ``POST /api/actions`` an action for the desk.

``/api/*`` needs a session (401). A state-changing request needs the session's CSRF token in
``X-CSRF-Token`` and an ``Origin`` that is this server's (403); the WebSocket checks the
origin too. Logins, refusals and logouts are logged through ``audit`` before they take effect;
the desk logs the actions itself (log-then-act).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from edgegate.config.models import ConsoleSettings
from edgegate.console.accounts import AccountStore
from edgegate.console.desk import (
    PENDING_ACTIONS,
    SUPERVISOR_ACTIONS,
    DeskAction,
    DeskOutcome,
    DeskRequest,
    GateDesk,
    GateView,
    Role,
    snapshot_to_json,
)
from edgegate.console.sessions import COOKIE, LoginThrottle, Session, SessionStore, revoked
from edgegate.core.clock import Clock
from edgegate.core.events import ConsoleLogin, ConsoleLoginRefused, ConsoleLogout, Event
from edgegate.observability import get_logger
from edgegate.web import PAGE_HEADERS, authenticated

log = get_logger("console")

Audit = Callable[[Event], Awaitable[int]]

_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_TEXT = {".html", ".js", ".css", ".json", ".svg"}
MAX_BODY = 16 * 1024
MAX_REASON = 500
MAX_PLATE = 16
MAX_LANE = 64
MAX_NAME = 64  # an account name as typed, in the log
MAX_PASSWORD = 1024
MAX_SOCKETS = 64
MAX_SOCKETS_PER_SESSION = 4  # a page open in a few tabs; never every connection the server has
BODY_TIMEOUT_S = 10.0  # to receive a request's body once its head is in
#: Actions that need a reason: the guard says why.
REASON_REQUIRED = frozenset(
    {
        DeskAction.REFUSE,
        DeskAction.OPEN_HOLD,
        DeskAction.RELEASE,
        DeskAction.INCIDENT_ON,
        DeskAction.INCIDENT_OFF,
    }
)
_STATUS = {
    "forbidden": 403,
    "invalid": 400,
    "unknown-lane": 404,
    "not-pending": 409,
    "stale": 409,
    "not-held": 409,
    "log-failed": 503,
}
_SESSION_ENDED = 4401  # WebSocket close code: the page goes back to the login page


class BadField(ValueError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.field = name


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def load_assets() -> dict[str, tuple[bytes, str]]:
    """name -> (content, content type) for every file of ``edgegate/console/static``."""
    assets: dict[str, tuple[bytes, str]] = {}
    for item in resources.files("edgegate.console").joinpath("static").iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1] if "." in item.name else ""
        if not item.is_file() or suffix not in _TYPES:
            continue
        ctype = _TYPES[suffix] + ("; charset=utf-8" if suffix in _TEXT else "")
        assets[item.name] = (item.read_bytes(), ctype)
    return assets


def parse_action(body: object) -> dict[str, Any]:
    """The fields of a ``POST /api/actions`` body, checked; :class:`BadField` names the first
    bad one."""
    if not isinstance(body, dict):
        raise BadField("body", "expected a JSON object")
    known = {"action", "lane", "decision_seq", "plate", "reason"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadField(unknown[0], "unknown field")
    raw_action = body.get("action")
    if not isinstance(raw_action, str) or raw_action not in {a.value for a in DeskAction}:
        choices = ", ".join(a.value for a in DeskAction)
        raise BadField("action", f"must be one of {choices}")
    action = DeskAction(raw_action)
    lane = _optional_str(body, "lane", MAX_LANE)
    if action in SUPERVISOR_ACTIONS:
        if lane is not None:
            raise BadField("lane", "incident mode is the gate's, not a lane's: leave it out")
    elif lane is None:
        raise BadField("lane", f"{action.value} needs the lane")
    seq = body.get("decision_seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1):
        raise BadField("decision_seq", "must be a positive whole number")
    if action in PENDING_ACTIONS and seq is None:
        raise BadField("decision_seq", f"{action.value} needs the pending decision's seq")
    plate = _optional_str(body, "plate", MAX_PLATE)
    if action is DeskAction.CORRECT and plate is None:
        raise BadField("plate", "correct needs the plate as the guard reads it")
    if action is not DeskAction.CORRECT and plate is not None:
        raise BadField("plate", f"{action.value} takes no plate")
    reason = _optional_str(body, "reason", MAX_REASON) or ""
    if action in REASON_REQUIRED and not reason:
        raise BadField("reason", f"{action.value} needs a reason")
    return {"action": action, "lane": lane, "decision_seq": seq, "plate": plate, "reason": reason}


def _optional_str(body: Mapping[str, object], name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadField(name, "must be text")
    value = value.strip()
    if len(value) > limit:
        raise BadField(name, f"longer than {limit} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadField(name, "holds control characters")
    return value or None


def _printable(text: str, limit: int) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


_SessionHandler = Callable[["Console", web.Request, Session], Awaitable[web.StreamResponse]]
_Handler = Callable[["Console", web.Request], Awaitable[web.StreamResponse]]


def _signed_in(*, state_changing: bool) -> Callable[[_SessionHandler], _Handler]:
    """A handler that runs with the request's session; without one (or, ``state_changing``,
    without this console's origin and the session's CSRF token) the refusal is the answer."""

    def wrap(handler: _SessionHandler) -> _Handler:
        @functools.wraps(handler)
        async def run(console: Console, request: web.Request) -> web.StreamResponse:
            session = await console._authorised(request, state_changing=state_changing)
            if isinstance(session, web.Response):
                return session
            return await handler(console, request, session)

        return run

    return wrap


class Console:
    """The console's state and handlers; see the module's docstring for the routes."""

    def __init__(
        self,
        desk: GateDesk,
        accounts: AccountStore,
        settings: ConsoleSettings,
        clock: Clock,
        audit: Audit,
    ) -> None:
        self.desk = desk
        self.accounts = accounts
        self.clock = clock
        self.audit = audit
        self.sessions = SessionStore(clock.mono_ns, _ns(settings.session_idle.total_seconds()))
        self.throttle = LoginThrottle(
            clock.mono_ns,
            max_failures=settings.max_failed_logins,
            window_ns=_ns(settings.failed_login_window.total_seconds()),
            lockout_ns=_ns(settings.lockout.total_seconds()),
        )
        self.assets = load_assets()
        self.body_timeout = BODY_TIMEOUT_S
        self._sockets = 0
        self._session_sockets: dict[str, int] = {}
        self._live: set[web.WebSocketResponse] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/login", self.login_page)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/me", self.me)
        app.router.add_get("/api/view", self.view)
        app.router.add_get("/api/live", self.live)
        app.router.add_post("/api/actions", self.actions)
        app.on_shutdown.append(self._going_away)

    # -- helpers ---------------------------------------------------------------------------

    def _asset(self, name: str) -> web.Response:
        found = self.assets.get(name)
        if found is None:
            return self._json({"error": "not-found", "message": f"no asset {name!r}"}, 404)
        body, ctype = found
        return web.Response(body=body, headers={**PAGE_HEADERS, "Content-Type": ctype})

    @staticmethod
    def _json(data: object, status: int = 200) -> web.Response:
        return web.Response(
            text=json.dumps(data, ensure_ascii=False),
            status=status,
            content_type="application/json",
            headers=PAGE_HEADERS,
        )

    @staticmethod
    def _redirect(location: str) -> web.Response:
        return web.Response(status=303, headers={**PAGE_HEADERS, "Location": location})

    @staticmethod
    def _address(request: web.Request) -> str:
        return request.remote or "unknown"

    @staticmethod
    def _same_origin(request: web.Request) -> bool:
        """The request comes from a page of this server: ``Origin`` is our scheme and
        ``Host`` (browsers send it on every POST and WebSocket; a forged cross-site request
        cannot set it)."""
        origin, host = request.headers.get("Origin"), request.headers.get("Host")
        if not origin or not host:
            return False
        scheme = "https" if request.secure else "http"
        return origin.lower() == f"{scheme}://{host}".lower()

    async def _record(self, event: Event) -> int | None:
        try:
            return await self.audit(event)
        except Exception as exc:  # the log is the gate's: its failure must not crash the page
            log.error("console_audit_failed", event_type=event.TYPE, error=str(exc))
            return None

    async def _flush_ended(self) -> None:
        for ended in self.sessions.take_ended():
            s = ended.session
            await self._record(
                ConsoleLogout(account=s.account, address=s.address, reason=ended.reason)
            )

    def _live_session(self, session_id: str | None, *, touch: bool = True) -> Session | None:
        """The live session of ``session_id``; a revoked one is ended (with the others of its
        account that are revoked too: a new password ends every session of the old one)."""
        session = self.sessions.get(session_id, touch=touch)
        if session is not None and revoked(session, self.accounts):
            self.sessions.end_where(
                lambda s: s.account == session.account and revoked(s, self.accounts),
                "account-changed",
            )
            return None
        return session

    async def _session(self, request: web.Request, *, touch: bool = True) -> Session | None:
        """The request's live session, ending it if its account was removed or changed."""
        session = self._live_session(request.cookies.get(COOKIE), touch=touch)
        if session is not None:
            # A logged-in booth's connections (its live WebSocket among them) are not counted
            # against the per-address cap on connections that have not authenticated.
            authenticated(request)
        await self._flush_ended()
        return session

    def _refused(self, status: int, code: str, message: str) -> web.Response:
        return self._json({"ok": False, "code": code, "message": message}, status)

    def _too_slow(self) -> web.Response:
        response = self._refused(408, "too-slow", "request body not received in time")
        response.force_close()
        return response

    async def _authorised(
        self, request: web.Request, *, state_changing: bool
    ) -> Session | web.Response:
        session = await self._session(request)
        if session is None:
            return self._refused(401, "unauthenticated", "log in first")
        if state_changing:
            if not self._same_origin(request):
                return self._refused(403, "bad-origin", "the request is not from this console")
            if not session.csrf_ok(request.headers.get("X-CSRF-Token")):
                return self._refused(403, "bad-csrf-token", "missing or wrong X-CSRF-Token")
        return session

    def _envelope(self, view: GateView) -> dict[str, Any]:
        return {"type": "view", "now_ns": self.clock.wall_ns(), "view": snapshot_to_json(view)}

    # -- pages -----------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        if await self._session(request) is None:
            return self._redirect("/login")
        return self._asset("index.html")

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        if await self._session(request, touch=False) is not None:
            return self._redirect("/")
        return self._asset("login.html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        return self._asset(request.match_info["name"])

    async def login(self, request: web.Request) -> web.StreamResponse:
        address = self._address(request)
        if not self._same_origin(request):
            return self._refused(403, "bad-origin", "the login is not from this console")
        name, password = "", ""
        reason = "bad-request"
        if (request.content_length or 0) <= MAX_BODY:
            with contextlib.suppress(ValueError):
                try:
                    # The server's head deadline ends with the head: a body trickled in
                    # must not hold the connection (and its place under the caps) forever.
                    async with asyncio.timeout(self.body_timeout):
                        form = await request.post()
                except TimeoutError:
                    return self._too_slow()
                raw_name, raw_password = form.get("account"), form.get("password")
                if isinstance(raw_name, str) and isinstance(raw_password, str):
                    name, password = raw_name.strip(), raw_password
                    ok_size = 0 < len(name) <= MAX_NAME and len(password) <= MAX_PASSWORD
                    reason = "bad-credentials" if ok_size else "bad-request"
        shown = _printable(name, MAX_NAME)
        key = name[:MAX_NAME]  # the lock-out remembers bounded names
        if self.throttle.locked(key, address):
            await self._record(
                ConsoleLoginRefused(account=shown, address=address, reason="locked-out")
            )
            return self._redirect("/login?error=locked")
        account = None
        if reason == "bad-credentials":
            with self.throttle.attempt(key, address):
                account = await self.accounts.authenticate(name, password)
        if account is None:
            self.throttle.failed(key, address)
            await self._record(ConsoleLoginRefused(account=shown, address=address, reason=reason))
            return self._redirect("/login?error=refused")
        logged = await self._record(
            ConsoleLogin(account=account.name, role=account.role.value, address=address)
        )
        if logged is None:  # log-then-act: no session the log does not show
            return self._redirect("/login?error=unavailable")
        self.throttle.succeeded(name, address)
        session = self.sessions.create(
            account.name, account.role, address, credential=account.password_hash
        )
        await self._flush_ended()
        response = self._redirect("/")
        response.set_cookie(
            COOKIE,
            session.id,
            httponly=True,
            samesite="Strict",
            path="/",
            secure=request.secure,
        )
        return response

    @_signed_in(state_changing=True)
    async def logout(self, request: web.Request, session: Session) -> web.StreamResponse:
        await self._record(
            ConsoleLogout(account=session.account, address=self._address(request), reason="logout")
        )
        self.sessions.end(session)
        response = self._json({"ok": True, "code": "logged-out"})
        response.del_cookie(COOKIE, path="/")
        return response

    # -- API -------------------------------------------------------------------------------

    @_signed_in(state_changing=False)
    async def me(self, request: web.Request, session: Session) -> web.StreamResponse:
        return self._json(
            {"account": session.account, "role": session.role.value, "csrf_token": session.csrf}
        )

    @_signed_in(state_changing=False)
    async def view(self, request: web.Request, session: Session) -> web.StreamResponse:
        return self._json(self._envelope(self.desk.view()))

    @_signed_in(state_changing=True)
    async def actions(self, request: web.Request, session: Session) -> web.StreamResponse:
        if (request.content_length or 0) > MAX_BODY:
            return self._refused(413, "invalid", f"body: larger than {MAX_BODY} bytes")
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await request.read()
        except TimeoutError:
            return self._too_slow()
        except web.HTTPException:
            return self._refused(413, "invalid", f"body: larger than {MAX_BODY} bytes")
        try:
            fields = parse_action(json.loads(body))
        except BadField as exc:
            return self._refused(400, "invalid", str(exc))
        except RecursionError:
            return self._refused(400, "invalid", "body: nested too deeply")
        except ValueError:
            return self._refused(400, "invalid", "body: not a JSON object")
        if fields["action"] in SUPERVISOR_ACTIONS and session.role is not Role.SUPERVISOR:
            return self._refused(403, "forbidden", "only a supervisor may switch incident mode")
        desk_request = DeskRequest(
            operator=f"console:{session.account}", role=Role(session.role), **fields
        )
        try:
            outcome: DeskOutcome = await self.desk.act(desk_request)
        except Exception as exc:  # the contract says never; a guard still gets an answer
            log.exception("desk_act_failed", action=fields["action"].value)
            return self._refused(500, "error", f"the gate could not take the action: {exc}")
        status = 200 if outcome.ok else _STATUS.get(outcome.code, 409)
        return self._json(
            {
                "ok": outcome.ok,
                "code": outcome.code,
                "message": outcome.message,
                "seq": outcome.seq,
            },
            status,
        )

    @_signed_in(state_changing=False)
    async def live(self, request: web.Request, session: Session) -> web.StreamResponse:
        if not self._same_origin(request):
            return self._refused(403, "bad-origin", "the connection is not from this console")
        if self._sockets >= MAX_SOCKETS:
            return self._refused(503, "busy", "too many console connections")
        if self._session_sockets.get(session.id, 0) >= MAX_SOCKETS_PER_SESSION:
            return self._refused(503, "busy", "this session has too many live connections")
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096)
        await ws.prepare(request)
        self._sockets += 1
        self._session_sockets[session.id] = self._session_sockets.get(session.id, 0) + 1
        self._live.add(ws)
        pusher = asyncio.create_task(self._push(ws, session))
        reader = asyncio.create_task(self._drain(ws))

        def ended() -> None:  # logout, idle or a removed account stop the pushes at once
            pusher.cancel()

        session.on_end.append(ended)
        try:
            await asyncio.wait({pusher, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pusher, reader):
                task.cancel()
            await asyncio.gather(pusher, reader, return_exceptions=True)
            with contextlib.suppress(ValueError):
                session.on_end.remove(ended)
            self._sockets -= 1
            if self._session_sockets[session.id] > 1:
                self._session_sockets[session.id] -= 1
            else:
                del self._session_sockets[session.id]
            self._live.discard(ws)
            await self._flush_ended()  # e.g. ended by _push: its account changed
            live = self.sessions.get(session.id, touch=False) is not None
            code = WSCloseCode.OK if live else _SESSION_ENDED
            await ws.close(code=code, message=b"" if live else b"session ended")
        return ws

    async def _going_away(self, _app: web.Application) -> None:
        """On the server's shutdown: close the live connections (the page shows the gate
        gone and reconnects) rather than leave the server waiting for them, which held the
        daemon's stop for seconds per open console."""
        closing = [
            ws.close(code=WSCloseCode.GOING_AWAY, message=b"gate stopping") for ws in self._live
        ]
        # A browser that does not answer the close is left to the server's shutdown timeout.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await asyncio.gather(*closing, return_exceptions=True)

    async def _push(self, ws: web.WebSocketResponse, session: Session) -> None:
        """The view now, then every change; a slow browser makes ``send`` wait, and the desk
        hands it only the newest view once it is ready again."""
        watcher = self.desk.watch()
        try:
            await ws.send_json(self._envelope(self.desk.view()))
            async for view in watcher:
                if self._live_session(session.id, touch=False) is None:
                    return
                await ws.send_json(self._envelope(view))
        finally:
            aclose = getattr(watcher, "aclose", None)
            if aclose is not None:
                await aclose()

    @staticmethod
    async def _drain(ws: web.WebSocketResponse) -> None:
        """The page sends nothing; reading notices when it goes away."""
        async for msg in ws:
            if msg.type is WSMsgType.ERROR:
                return


def add_console_routes(
    app: web.Application,
    desk: GateDesk,
    accounts: AccountStore,
    settings: ConsoleSettings,
    clock: Clock,
    audit: Audit,
) -> Console:
    """Add the console's routes to ``app`` (the daemon's one server) at ``/``."""
    console = Console(desk, accounts, settings, clock, audit)
    console.add_routes(app)
    return console


CONSOLE = web.AppKey("console", Console)


def console_app(
    desk: GateDesk,
    accounts: AccountStore,
    settings: ConsoleSettings,
    clock: Clock,
    audit: Audit,
) -> web.Application:
    """An application serving only the console (tests, or a server of its own)."""
    app = web.Application(client_max_size=MAX_BODY)
    app[CONSOLE] = add_console_routes(app, desk, accounts, settings, clock, audit)
    return app
