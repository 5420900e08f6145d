"""``edgegate central web``: the control room's dashboard over central's store.

(Over 600 lines: the request handlers share the session, CSRF, origin and error-page
plumbing below; the pages' HTML is in :mod:`.pages`, the words in :mod:`.i18n`, the live
updates in :mod:`.live`, the settings in :mod:`.settings`.)

Routes (every answer carries the Content-Security-Policy ``default-src 'self'``):

- ``GET /login``, ``POST /login``, ``POST /logout``; ``GET /static/NAME`` (our own assets);
- pages: ``/`` the park now, ``/gates``, ``/roll-call``, ``/events`` (search),
  ``/proposals`` (overstays and blacklist proposals), ``/reviews``, ``/dead-letters``; a
  request with ``X-Fragment: 1`` gets only the page's ``#content`` (the live refresh);
- ``POST /proposals/ID`` an operator's decision (``decision`` approve|dismiss, ``reason``);
- ``GET /live`` Server-Sent Events: ``event: change`` with ``{"positions": {gate: seq},
  "marks": [...], "at_ns"}`` at once and whenever the store changes.

Accounts (``viewer``, ``operator``), sessions, CSRF and the login lock-out are the guard
console's (:mod:`edgegate.console.accounts`, :mod:`edgegate.console.sessions`). A page needs a
session (else ``/login``): nothing unauthenticated sees a plate. A POST needs the session's
CSRF token (form field ``csrf``) and an ``Origin`` that is this server's; deciding needs the
``operator`` role (403). Every login, refusal, logout and decision is logged with who did it
before it takes effect; a decision is then recorded in the store with the operator's name
before its delta is published, the same way as ``edgegate central blacklist approve``
(:func:`edgegate.central.blacklist.publish_approval`).

Live updates (:mod:`edgegate.central.dashboard.live`): one poller reads
:meth:`CentralStore.change_marks` (two small reads) every ``poll_s`` on a connection of its
own and wakes every open ``/live`` stream on a change; the positions say which seq of each
gate the pushed state reflects, so a client can measure a gate's commit to its screen.
Store calls of the pages run on another connection's thread.
"""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from aiohttp import web
from yarl import URL

from edgegate.central import blacklist as bl
from edgegate.central import publish as pub
from edgegate.central.api import ApiLimits, event_query, scan_events
from edgegate.central.dashboard import i18n, pages
from edgegate.central.dashboard.live import LiveChanges
from edgegate.central.dashboard.pages import View
from edgegate.central.dashboard.settings import DashboardRole, DashboardSettings, Publishing
from edgegate.central.store import AsyncStore, CentralStore, GateState, StoreError, open_store
from edgegate.central.store.blacklist import APPROVED, DISMISSED, Proposal, ProposalError
from edgegate.clock import SystemClock
from edgegate.console.accounts import AccountStore
from edgegate.console.sessions import LoginThrottle, Session, SessionStore, revoked
from edgegate.core.clock import Clock
from edgegate.core.domain import VehicleCategory
from edgegate.hosts import is_loopback
from edgegate.observability import get_logger
from edgegate.web import (
    PAGE_HEADERS,
    HttpError,
    HttpServer,
    authenticated,
    on_lost,
    peer_host,
)

log = get_logger("central.dashboard")
T = TypeVar("T")

COOKIE = "edgegate_dashboard"
LANG_COOKIE = "edgegate_lang"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
MAX_FORM = 16 * 1024
MAX_NAME = 64
MAX_PASSWORD = 1024
MAX_REASON = 500
MAX_INSIDE_SHOWN = 1000
MAX_ROLL_CALL = 20_000  # the whole park: a roll call is never cut short
_PROPOSAL_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only (str.isdigit takes any script's)
# Invisible characters and ones that reorder what is displayed (U+202E...): a reason must read
# as it was recorded.
_HIDDEN = frozenset(("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"))


_Render = Callable[[web.Request, View], Awaitable[str]]


class _Refused(Exception):
    """A request answered with an error page: status and what is wrong (``message``, in
    English, for the log; ``key`` and ``values`` its words in :mod:`i18n`, ``err.KEY``)."""

    def __init__(self, status: int, message: str, key: str | None = None, **values: object):
        super().__init__(message)
        self.status = status
        self.message = message
        self.key = key
        self.values = values


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _assets() -> dict[str, tuple[bytes, str]]:
    found = {}
    for item in resources.files("edgegate.central.dashboard").joinpath("static").iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in _TYPES:
            found[item.name] = (item.read_bytes(), _TYPES[suffix])
    return found


def _printable(value: str, limit: int) -> str:
    return "".join(c if c.isprintable() else "?" for c in value[:limit])


def reason_text(value: object) -> str:
    """A decision's reason, checked (``_Refused`` 400 naming what is wrong)."""
    if not isinstance(value, str) or not value.strip():
        raise _Refused(400, "reason: say why (it is recorded with the decision)", "reason-empty")
    value = value.strip()
    if len(value) > MAX_REASON:
        raise _Refused(400, f"reason: at most {MAX_REASON} characters", "reason-long", n=MAX_REASON)
    hidden = next((c for c in value if unicodedata.category(c) in _HIDDEN), None)
    if hidden is not None:
        raise _Refused(
            400,
            f"reason: contains a control, invisible or text-direction character "
            f"(U+{ord(hidden):04X}): type it again without it",
            "reason-hidden",
            code=f"U+{ord(hidden):04X}",
        )
    return value


def proposal_number(text: str) -> int | None:
    """A proposal number (ASCII digits, positive, bounded), or None."""
    if _PROPOSAL_ID.fullmatch(text) is None or int(text) == 0:
        return None
    return int(text)


class Dashboard:
    """The dashboard over two store connections (pages and actions; the change poller):
    :meth:`open`, :meth:`mount` on a server, :meth:`aclose` after the server stops."""

    def __init__(
        self,
        store: CentralStore,
        watch_store: CentralStore,
        accounts: AccountStore,
        *,
        settings: DashboardSettings | None = None,
        clock: Clock | None = None,
        publishing: Publishing | None = None,
    ) -> None:
        self.settings = settings or DashboardSettings()
        self.clock = clock if clock is not None else SystemClock()
        self.store = AsyncStore(store)
        self.watch_store = AsyncStore(watch_store)
        self.accounts = accounts
        self.publishing = publishing
        self.zone = ZoneInfo(self.settings.timezone)
        s = self.settings
        self.sessions = SessionStore(
            self.clock.mono_ns,
            _ns(s.session_idle_s),
            s.max_sessions,
            max_per_account=s.max_sessions_per_account,
        )
        self.throttle = LoginThrottle(
            self.clock.mono_ns,
            max_failures=s.max_failed_logins,
            window_ns=_ns(s.failed_login_window_s),
            lockout_ns=_ns(s.lockout_s),
        )
        self.assets = _assets()
        self.changes = LiveChanges(self.watch_store, self.settings, self.clock)

    @classmethod
    async def open(cls, dsn: str, accounts: AccountStore, **kwargs: Any) -> Dashboard:
        """Open ``dsn`` twice (``StoreError``): pages and actions, and the change poller
        (read-only)."""

        def connect() -> tuple[CentralStore, CentralStore]:
            store = open_store(dsn)
            try:
                watch = open_store(dsn)
            except BaseException:
                store.close()
                raise
            try:
                return store, watch.read_only()
            except BaseException:
                store.close()
                watch.close()
                raise

        store, watch = await asyncio.to_thread(connect)
        return cls(store, watch, accounts, **kwargs)

    async def aclose(self) -> None:
        await self.changes.stop()
        await self.store.aclose()
        await self.watch_store.aclose()

    def mount(self, server: HttpServer) -> web.Application:
        """Serve the dashboard at ``/`` of ``server`` (before it starts)."""
        app = web.Application(client_max_size=MAX_FORM)
        r = app.router
        r.add_get("/login", self.login_page)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_get("/static/{name}", self.static)
        r.add_get("/live", self.live)
        r.add_get("/", self._page("park", self._park, live=True))
        r.add_get("/gates", self._page("gates", self._gates, live=True))
        r.add_get("/roll-call", self._page("roll-call", self._roll_call, live=True))
        r.add_get("/events", self._page("events", self._events, live=False))
        r.add_get("/proposals", self._page("proposals", self._proposals, live=True))
        r.add_post("/proposals/{id}", self.decide)
        r.add_get("/reviews", self._page("reviews", self._reviews, live=True))
        r.add_get("/dead-letters", self._page("dead-letters", self._dead_letters, live=True))
        r.add_route("*", "/{tail:.*}", self.not_found)
        app.middlewares.append(self._host_check)
        app.on_response_prepare.append(self._headers)
        app.on_startup.append(self.changes.start)
        # On the server's shutdown: end the open streams (the pages reconnect).
        app.on_shutdown.append(self.changes.stop)
        server.mount("/", app)
        return app

    # -- plumbing -------------------------------------------------------------------------

    @staticmethod
    async def _headers(_request: web.Request, resp: web.StreamResponse) -> None:
        for name, value in PAGE_HEADERS.items():
            resp.headers.setdefault(name, value)

    def _lang(self, request: web.Request) -> str:
        lang = request.query.get("lang") or request.cookies.get(LANG_COOKIE, i18n.DEFAULT)
        return lang if lang in i18n.LANGS else i18n.DEFAULT

    def _error(
        self,
        request: web.Request,
        status: int,
        message: str,
        key: str | None = None,
        values: Mapping[str, object] | None = None,
    ) -> web.Response:
        """An error page: ``key``'s words (``err.KEY``) in the page's language, with the
        English ``message`` beside on a Chinese page; ``message`` alone without a key (the
        park API's parameter checks, which lead with the field)."""
        log.warning(
            "dashboard_refused",
            peer=peer_host(request),
            method=request.method,
            path=request.path[:80],
            status=status,
            error=message,
        )
        lang = self._lang(request)
        said = None if key is None else i18n.text(lang, "err." + key, **(values or {}))
        body = pages.error(lang, status, said or message, None if said == message else message)
        return web.Response(status=status, text=body, content_type="text/html", charset="utf-8")

    def _refused(self, request: web.Request, exc: _Refused | HttpError) -> web.Response:
        if isinstance(exc, _Refused):
            return self._error(request, exc.status, exc.message, exc.key, exc.values)
        return self._error(request, exc.status, exc.message, "query", {"detail": exc.message})

    @staticmethod
    def _redirect(location: str) -> web.Response:
        return web.Response(status=303, headers={"Location": location})

    def _ours(self, request: web.Request, url: str) -> bool:
        """Whether ``url`` (``scheme://host[:port]``) names this server: a configured name
        or the address the connection came in on, with the port it came in on."""
        sockname = (
            None if request.transport is None else request.transport.get_extra_info("sockname")
        )
        if not isinstance(sockname, tuple) or len(sockname) < 2:
            return False
        address, port = str(sockname[0]).lower().removeprefix("::ffff:"), int(sockname[1])
        scheme = "https" if request.secure else "http"
        try:
            parsed = URL(url)
            if parsed.scheme != scheme or parsed.path not in ("", "/") or parsed.user:
                return False
            host, url_port = (parsed.host or "").lower().rstrip("."), parsed.port
        except (ValueError, TypeError):
            return False
        names = {n.lower() for n in self.settings.server_names} | {address}
        if is_loopback(address):
            names.add("localhost")
        return host in names and url_port == port

    def _known_host(self, request: web.Request) -> bool:
        host = request.headers.get("Host")
        scheme = "https" if request.secure else "http"
        return host is not None and self._ours(request, f"{scheme}://{host}")

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        return origin is not None and self._known_host(request) and self._ours(request, origin)

    @web.middleware
    async def _host_check(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not self._known_host(request):
            host = request.headers.get("Host", "")
            return self._error(
                request,
                421,
                f"Host: {host[:60]!r} is not a name of this dashboard (its names are set "
                "with --server-name)",
                "host",
                {"host": repr(host[:60])},
            )
        return await handler(request)

    def _session(self, request: web.Request, *, touch: bool = True) -> Session | None:
        """The request's live session; one whose account was removed or changed is ended."""
        session = self.sessions.get(request.cookies.get(COOKIE), touch=touch)
        if session is not None and revoked(session, self.accounts):
            name = session.account
            self.sessions.end_where(
                lambda s: s.account == name and revoked(s, self.accounts), "account-changed"
            )
            session = None
        if session is not None:
            authenticated(request)
        self._log_ended()
        return session

    def _log_ended(self) -> None:
        for ended in self.sessions.take_ended():
            s = ended.session
            log.info("dashboard_logout", account=s.account, address=s.address, reason=ended.reason)

    async def _read(self, fn: Callable[[CentralStore], T]) -> T:
        try:
            return await self.store.run(fn)
        except StoreError as exc:
            log.error("dashboard_store_failed", error=str(exc))
            raise _Refused(503, f"the store cannot be read now: {exc}", "store") from None

    async def _form(self, request: web.Request) -> Mapping[str, str]:
        if (request.content_length or 0) > MAX_FORM:
            raise _Refused(413, f"form larger than {MAX_FORM} bytes", "form-large", n=MAX_FORM)
        try:
            async with asyncio.timeout(10.0):
                form = await request.post()
        except TimeoutError:
            raise _Refused(408, "form not received in time", "form-slow") from None
        except (ValueError, web.HTTPException):
            raise _Refused(400, "the form cannot be read", "form-bad") from None
        return {k: v for k, v in form.items() if isinstance(v, str)}

    async def _posting(self, request: web.Request) -> tuple[Session, Mapping[str, str]]:
        """A state-changing request's session and form: logged in, from this server's page,
        with the session's CSRF token."""
        session = self._session(request)
        if session is None:
            raise _Refused(401, "log in first", "login-first")
        if not self._same_origin(request):
            raise _Refused(403, "the request is not from this dashboard (Origin)", "origin")
        form = await self._form(request)
        if not session.csrf_ok(form.get("csrf")):
            raise _Refused(
                403, "missing or wrong CSRF token: reload the page and try again", "csrf"
            )
        return session, form

    # -- login ----------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        if "lang" in request.query:
            try:
                return self._switch(request)
            except _Refused as exc:
                return self._refused(request, exc)
        if self._session(request, touch=False) is not None:
            return self._redirect("/")
        body = pages.login(self._lang(request), request.query.get("error"))
        return web.Response(text=body, content_type="text/html", charset="utf-8")

    async def login(self, request: web.Request) -> web.StreamResponse:
        address = peer_host(request)
        if not self._same_origin(request):
            return self._error(
                request, 403, "the login is not from this dashboard (Origin)", "origin"
            )
        try:
            form = await self._form(request)
        except _Refused as exc:
            return self._refused(request, exc)
        name, password = form.get("account", "").strip(), form.get("password", "")
        sized = 0 < len(name) <= MAX_NAME and len(password) <= MAX_PASSWORD
        shown, key = _printable(name, MAX_NAME), name[:MAX_NAME]
        if self.throttle.locked(key, address):
            log.warning(
                "dashboard_login_refused", account=shown, address=address, reason="locked-out"
            )
            return self._redirect("/login?error=locked")
        account = None
        if sized:
            with self.throttle.attempt(key, address):
                account = await self.accounts.authenticate(name, password)
        if account is None:
            self.throttle.failed(key, address)
            reason = "bad-credentials" if sized else "bad-request"
            log.warning("dashboard_login_refused", account=shown, address=address, reason=reason)
            return self._redirect("/login?error=refused")
        log.info("dashboard_login", account=account.name, role=account.role.value, address=address)
        self.throttle.succeeded(name, address)
        session = self.sessions.create(
            account.name, account.role, address, credential=account.password_hash
        )
        self._log_ended()
        response = self._redirect("/")
        response.set_cookie(
            COOKIE, session.id, httponly=True, samesite="Strict", path="/", secure=request.secure
        )
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        try:
            session, _ = await self._posting(request)
        except _Refused as exc:
            return self._refused(request, exc)
        log.info(
            "dashboard_logout", account=session.account, address=peer_host(request), reason="logout"
        )
        self.sessions.end(session)
        response = self._redirect("/login")
        response.del_cookie(COOKIE, path="/")
        return response

    def _switch(self, request: web.Request) -> web.Response:
        """``?lang=`` on any page: remember the language, show the page without it."""
        lang = request.query["lang"]
        if lang not in i18n.LANGS:
            raise _Refused(
                400,
                f"lang: {lang[:20]!r} is not one of {', '.join(i18n.LANGS)}",
                "lang",
                value=repr(lang[:20]),
                langs=", ".join(i18n.LANGS),
            )
        rest = request.rel_url.without_query_params("lang")
        response = self._redirect(str(rest))
        response.set_cookie(
            LANG_COOKIE, lang, samesite="Strict", path="/", max_age=10 * 365 * 86400
        )
        return response

    async def static(self, request: web.Request) -> web.StreamResponse:
        found = self.assets.get(request.match_info["name"])
        if found is None:
            name = repr(request.match_info["name"][:60])
            return self._error(request, 404, f"no such file {name}", "no-file", {"name": name})
        body, ctype = found
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        if self._session(request, touch=False) is None:
            return self._redirect("/login")
        path = repr(request.path[:60])
        return self._error(request, 404, f"no such page {path}", "no-page", {"path": path})

    # -- pages ----------------------------------------------------------------------------

    def _page(
        self, name: str, render: _Render, *, live: bool
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                if "lang" in request.query:
                    return self._switch(request)
                session = self._session(request)
                if session is None:
                    return self._redirect("/login")
                view = View(
                    self._lang(request),
                    self.zone,
                    self.clock.wall_ns(),
                    session.account,
                    session.role.value,
                    session.csrf,
                )
                content = await render(request, view)
            except _Refused as exc:
                return self._refused(request, exc)
            except HttpError as exc:  # the park API's parameter checks
                return self._refused(request, exc)
            if request.headers.get("X-Fragment") == "1":
                return web.Response(text=content, content_type="text/html", charset="utf-8")
            body = pages.page(view, name, content, live=live, query=request.query)
            return web.Response(text=body, content_type="text/html", charset="utf-8")

        return handler

    async def _overdue(self, inside: list[Any], now: int) -> dict[str, Any]:
        from edgegate.central.store.projections import park_overstays

        return {o.vehicle.plate: o for o in park_overstays(inside, now, self.settings.dwell_limits)}

    async def _park(self, request: web.Request, v: View) -> str:
        # Counted by the store, listed up to MAX_INSIDE_SHOWN (hazmat first): the page's
        # figures hold for the whole park without reading every vehicle inside.
        def read(
            s: CentralStore,
        ) -> tuple[list[GateState], dict[VehicleCategory | None, int], list[Any]]:
            return s.gate_states(), s.inside_counts(), s.presence(limit=MAX_INSIDE_SHOWN)

        states, counts, inside = await self._read(read)
        overdue = await self._overdue(inside, v.now_ns)
        return pages.park(v, states, inside, counts, overdue)

    async def _gates(self, request: web.Request, v: View) -> str:
        states = await self._read(lambda s: s.gate_states())
        return pages.gates(v, states, _ns(self.settings.stale_s))

    async def _roll_call(self, request: web.Request, v: View) -> str:
        def read(s: CentralStore) -> tuple[list[GateState], list[Any]]:
            return s.gate_states(), s.presence(limit=MAX_ROLL_CALL)

        states, inside = await self._read(read)
        return pages.roll_call(v, states, inside, await self._overdue(inside, v.now_ns))

    async def _events(self, request: web.Request, v: View) -> str:
        allowed = ("plate", "gate", "type", "from", "to", "cursor")
        unknown = sorted(set(request.query) - set(allowed))
        if unknown:
            raise _Refused(
                400,
                f"{unknown[0][:40]}: unknown search field (use {', '.join(allowed)})",
                "unknown-field",
                name=unknown[0][:40],
                fields=", ".join(allowed),
            )
        form = {k: request.query[k].strip() for k in allowed if request.query.get(k, "").strip()}
        params = dict(form)
        for name in ("from", "to"):
            if name in params:
                params[name] = self._with_zone(name, params[name])
        states = await self._read(lambda s: s.gate_states())
        if not form:
            return pages.events(v, states, form, None, None, 0)
        query = event_query(params)
        limits = ApiLimits()
        found, cursor, scanned = await self._read(lambda s: scan_events(s, query, limits))
        return pages.events(v, states, form, found, cursor, scanned)

    def _with_zone(self, name: str, value: str) -> str:
        """A ``datetime-local`` value (no offset) is a time in the dashboard's zone."""
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise _Refused(
                400,
                f"{name}: {value[:40]!r} is not a date and time, e.g. 2026-05-01T08:00",
                "not-a-time",
                name=name,
                value=repr(value[:40]),
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.zone)
        return when.isoformat()

    async def _proposals(self, request: web.Request, v: View) -> str:
        now = v.now_ns

        def read(s: CentralStore) -> tuple[list[GateState], list[Any], list[Proposal]]:
            return (
                s.gate_states(),
                s.overstays(now, self.settings.dwell_limits),
                s.blacklist_proposals(),
            )

        states, overstays, found = await self._read(read)
        operator = v.role == DashboardRole.OPERATOR.value
        done = request.query.get("done")
        flash = None
        done_id = None if done is None else proposal_number(done)
        if done_id is not None:
            decided = next((p for p in found if p.id == done_id), None)
            if decided is not None and decided.state != "open":
                flash = i18n.text(
                    v.lang,
                    "decided",
                    id=decided.id,
                    plate=decided.plate,
                    state=i18n.text(v.lang, "prop." + decided.state),
                )
        return pages.proposals(v, states, overstays, found, operator, flash)

    async def _reviews(self, request: web.Request, v: View) -> str:
        def read(s: CentralStore) -> tuple[list[GateState], list[Any]]:
            return s.gate_states(), s.admission_reviews()

        states, found = await self._read(read)
        return pages.reviews(v, states, found)

    async def _dead_letters(self, request: web.Request, v: View) -> str:
        def read(s: CentralStore) -> tuple[list[GateState], list[Any], list[Any]]:
            return s.gate_states(), s.dead_letters(limit=1000), s.dead_letter_drops()

        states, found, drops = await self._read(read)
        return pages.dead_letters(v, states, found, drops)

    # -- decisions ------------------------------------------------------------------------

    async def decide(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._decide(request)
        except _Refused as exc:
            return self._refused(request, exc)

    async def _decide(self, request: web.Request) -> web.StreamResponse:
        session, form = await self._posting(request)
        if session.role is not DashboardRole.OPERATOR:
            raise _Refused(
                403, "only an operator may decide proposals (this account is a viewer)", "viewer"
            )
        raw_id = request.match_info["id"]
        proposal_id = proposal_number(raw_id)
        if proposal_id is None:
            shown = repr(raw_id[:20])
            raise _Refused(
                400, f"proposal {shown}: expected a proposal number", "proposal-id", value=shown
            )
        decision = form.get("decision")
        states = {"approve": APPROVED, "dismiss": DISMISSED}
        if decision not in states:
            raise _Refused(400, "decision: expected approve or dismiss", "decision")
        reason = reason_text(form.get("reason"))
        publishing = self.publishing
        if decision == "approve" and publishing is None:
            raise _Refused(
                503,
                "this dashboard cannot publish approvals (started without --key, --site and "
                "--broker): dismiss here, or approve with `edgegate central blacklist approve`",
                "cannot-publish",
            )
        operator = f"dashboard:{session.account}"
        # Who asked, before anything is done.
        log.info(
            "dashboard_decision",
            account=session.account,
            address=peer_host(request),
            proposal=proposal_id,
            decision=states[decision],
            reason=reason,
        )
        gates = None if publishing is None else publishing.gates
        try:
            decided = await self.store.run(
                lambda s: s.decide_blacklist(
                    proposal_id, states[decision], operator=operator, reason=reason, gates=gates
                )
            )
        except ProposalError as exc:
            raise _Refused(409, str(exc), "conflict", detail=str(exc)) from None
        except StoreError as exc:
            log.error("dashboard_store_failed", error=str(exc))
            raise _Refused(
                503, f"the decision could not be recorded: {exc}", "not-recorded"
            ) from None
        bl.log_decision(decided)
        if decided.state == APPROVED and publishing is not None:
            problem = await self._publish(decided, publishing)
            if problem is not None:
                raise _Refused(
                    502,
                    f"proposal {decided.id} is approved (recorded) but was not published: "
                    f"{problem}; publish it with `edgegate central blacklist publish "
                    f"{decided.id}`",
                    "not-published",
                    id=decided.id,
                    problem=problem,
                )
        return self._redirect(f"/proposals?done={decided.id}")

    async def _publish(self, proposal: Proposal, publishing: Publishing) -> str | None:
        """Record, send, note as published (:func:`bl.publish_approval`'s steps). The broker
        is waited for on a worker thread, never on the store's: the pages read meanwhile."""
        pending = proposal.pending
        try:
            out = await self.store.run(
                lambda s: bl.record_approval(
                    s, proposal, site=publishing.site, key=publishing.key, now_ns=time.time_ns()
                )
            )
            if out:
                # A loop of its own in a worker thread (as the CLI does): the MQTT client
                # may leave a task behind when the broker times out.
                send = pub.publish(publishing.broker, out, timeout=publishing.timeout)
                await asyncio.to_thread(asyncio.run, send)
                gates = [p.gate for p in pending]
                await self.store.run(lambda s: s.blacklist_published(proposal.id, gates))
        except (pub.PublishError, StoreError) as exc:
            log.error("blacklist_publish_failed", proposal=proposal.id, error=str(exc))
            return str(exc)
        bl.log_published(proposal, pending, publishing.site)
        return None

    # -- live updates ---------------------------------------------------------------------

    async def live(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        if session is None:
            return self._error(request, 401, "log in first", "login-first")
        stream = self.changes.open(session.id)
        if stream is None:
            return self._error(request, 503, "too many live connections: retrying", "streams")
        on_lost(request, lambda: self.changes.end(stream, "gone"))

        def live() -> bool:
            alive = self.sessions.get(session.id, touch=False) is not None
            return alive and not revoked(session, self.accounts)

        return await self.changes.serve(request, stream, live)
