"""The park API: JSON for the park's other systems, at ``/api/v1`` on central's HTTP server.

Endpoints (GET only, every one behind ``Authorization: Bearer <token>``; docs/park-api.md)::

    /api/v1/presence   vehicles inside, hazmat first, with their overstay (if any)
    /api/v1/events     stored events by plate (exact and OCR-confusable), time, gate, type
    /api/v1/gates      each gate's state

Tokens come from a file of ``NAME TOKEN`` lines (:func:`read_tokens`); each request is
logged with the name of the token it carried (plates are personal data: who asked for what
is kept). A token is checked before the path (a guard), in constant time against every
token; 401s close the connection and, as on the gate's pull API, too many from one address
pause it (429). Bad parameters get 400 naming the parameter.

The store is read on its own connection (not the sink's), made read-only, on one worker
thread: the event loop never waits for the database. At most ``max_waiting`` requests wait
for it; beyond that a request gets 503.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import os
import re
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from edgegate.central.store import CentralStore, StoreError, VehicleInside, open_store
from edgegate.central.store.projections import GateState, ParkOverstay, park_overstays
from edgegate.clock import SystemClock
from edgegate.core.clock import Clock
from edgegate.core.codec import datetime_to_ns
from edgegate.core.domain import VehicleCategory
from edgegate.core.events import registered_types
from edgegate.core.plates import confusable_variants, normalise
from edgegate.core.rules import DEFAULT_DWELL_LIMITS
from edgegate.log.reader import StoredEvent
from edgegate.log.render import to_json_dict
from edgegate.observability import get_logger
from edgegate.sync.protocol import ProtocolError, check_id
from edgegate.sync.pull_api import (
    AuthThrottle,
    bearer_token,
    check_token,
    query_params,
    uint_param,
    wrong_token,
)
from edgegate.web import HttpError, HttpServer, authenticated, peer_host, show
from edgegate.web.monitoring import json_response

log = get_logger("central.api")
T = TypeVar("T")

PREFIX = "/api/v1"
MIN_TOKEN_CHARS = 16
MAX_PRESENCE = 5000
DEFAULT_PRESENCE = 1000
MAX_EVENTS = 500
DEFAULT_EVENTS = 100

_NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_PLATE_FIELDS = ("plate", "plate_read", "matched_plate")
_PLATE_TYPES = frozenset(
    t
    for t, cls in registered_types().items()
    if any(f.name in _PLATE_FIELDS for f in dataclasses.fields(cls))
)
_ENVELOPE = frozenset({"seq", "type", "lane", "ts", "version"})
_REALM = "edgegate park"
_TOKEN_NAME = web.RequestKey("park_api_token", str)


class TokenFileError(ValueError):
    """A tokens file that cannot be used; the message names the file and the line."""


def read_tokens(path: Path) -> dict[str, str]:
    """The tokens of a tokens file: name -> token.

    One ``NAME TOKEN`` pair per line; blank lines and lines starting with ``#`` are skipped.
    Names (letters, digits, ``_.@-``, up to 64) and tokens (RFC 6750 characters, at least
    16) are unique. The file must not be readable by group or others (``chmod 600``).
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TokenFileError(f"{path}: {detail}") from None
    if os.name == "posix" and stat.S_IMODE(mode) & 0o077:
        raise TokenFileError(
            f"{path}: readable by others (mode {stat.S_IMODE(mode):04o}): chmod 600 {path}"
        )
    tokens: dict[str, str] = {}
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"{path} line {number}"
        if len(words) != 2:
            raise TokenFileError(f"{where}: expected NAME TOKEN, got {len(words)} words")
        name, token = words
        if not _NAME_RE.fullmatch(name):
            raise TokenFileError(
                f"{where}: name {show(name)}: use up to 64 letters, digits and _.@-"
            )
        try:
            check_token(token)
        except ValueError as exc:
            raise TokenFileError(f"{where}: {exc}") from None
        if len(token) < MIN_TOKEN_CHARS:
            raise TokenFileError(f"{where}: token shorter than {MIN_TOKEN_CHARS} characters")
        if name in tokens:
            raise TokenFileError(f"{where}: name {name!r} given twice")
        if token in seen:
            raise TokenFileError(f"{where}: the same token as another name's")
        tokens[name] = token
        seen.add(token)
    if not tokens:
        raise TokenFileError(f"{path}: no tokens (one NAME TOKEN per line)")
    return tokens


@dataclass(frozen=True, slots=True)
class ApiLimits:
    max_auth_failures: int = 10
    """401s from one address within ``auth_window`` seconds that pause it for
    ``auth_pause`` seconds."""
    auth_window: float = 60.0
    auth_pause: float = 60.0
    max_tracked_peers: int = 4096
    max_waiting: int = 32
    """Requests waiting for the store; more get 503."""
    scan_rows: int = 20_000
    """Stored events one ``/events`` request reads at most (it then answers with a cursor)."""
    scan_chunk: int = 2000


class PlateMatcher:
    """A plate and the plates one OCR-confusable character away (``core.plates``)."""

    def __init__(self, plate: str) -> None:
        self.plate = plate
        self._near = {v for v, *_ in confusable_variants(plate)}

    def match(self, event: object) -> str | None:
        """``"exact"``, ``"fuzzy"`` or None for the plates the event names."""
        found = None
        for name in _PLATE_FIELDS:
            value = getattr(event, name, None)
            if not isinstance(value, str) or not value:
                continue
            p = normalise(value)
            if p == self.plate:
                return "exact"
            if p in self._near:
                found = "fuzzy"
        return found


@dataclass(frozen=True, slots=True)
class EventQuery:
    after: tuple[str, int]
    gate: str | None
    types: frozenset[str] | None
    start_ns: int | None
    end_ns: int | None
    plate: PlateMatcher | None
    limit: int


class ParkApi:
    """The API over its own read-only store connection; :meth:`open` before mounting,
    :meth:`aclose` after the server stops."""

    def __init__(
        self,
        store: CentralStore,
        tokens: Mapping[str, str],
        *,
        limits: ApiLimits | None = None,
        clock: Clock | None = None,
        dwell_limits: Mapping[VehicleCategory, timedelta | None] = DEFAULT_DWELL_LIMITS,
    ) -> None:
        if not tokens:
            raise ValueError("the park API needs at least one token")
        self.store = store
        self.limits = limits or ApiLimits()
        self.clock = clock if clock is not None else SystemClock()
        self.dwell_limits = dwell_limits
        # Digests: compared in constant time and of one length whatever the token's.
        self._tokens = [
            (name, hashlib.sha256(check_token(token).encode()).digest())
            for name, token in tokens.items()
        ]
        lim = self.limits
        self._throttle = AuthThrottle(
            lim.max_auth_failures,
            lim.auth_window,
            lim.auth_pause,
            self.clock,
            lim.max_tracked_peers,
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="park-api")
        self._waiting = 0

    @classmethod
    async def open(cls, dsn: str, tokens: Mapping[str, str], **kwargs: Any) -> ParkApi:
        """Open ``dsn`` on a connection of its own, read-only (``StoreError``)."""

        def connect() -> CentralStore:
            store = open_store(dsn)
            try:
                return store.read_only()
            except BaseException:
                store.close()
                raise

        store = await asyncio.to_thread(connect)
        return cls(store, tokens, **kwargs)

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.store.close)
        self._executor.shutdown(wait=True)

    def mount(self, server: HttpServer, *_: object) -> None:
        """Serve at ``/api/v1`` (a central web part: ``mount(server, sink)``)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        server.mount(PREFIX, app, guard=self._guard)
        server.add_peer_check(self._throttle.refusal)

    # -- admission ------------------------------------------------------------------------

    async def _guard(self, request: web.Request) -> None:
        try:
            if request.content_length or request.can_read_body:
                raise HttpError(413, "request bodies are not accepted", close=True)
            request[_TOKEN_NAME] = self._authorize(request)
        except HttpError as exc:
            peer = peer_host(request)
            if exc.status == 401 and self._throttle.failed(peer):
                log.warning("park_api_peer_paused", peer=peer, pause_s=self.limits.auth_pause)
            log.warning(
                "park_api_request",
                token=None,
                peer=peer,
                method=request.method,
                path=show(request.path, 80)[1:-1],
                status=exc.status,
                error=exc.message,
            )
            raise
        authenticated(request)

    def _authorize(self, request: web.Request) -> str:
        digest = hashlib.sha256(bearer_token(request, _REALM)).digest()
        found = None
        for name, expected in self._tokens:  # every one compared: no early exit to time
            if hmac.compare_digest(digest, expected):
                found = name
        if found is None:
            raise wrong_token(_REALM)
        return found

    # -- answering ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        fields: dict[str, Any] = {}
        try:
            body = await self._answer(request, fields)
            resp = json_response(200, body)
        except HttpError as exc:
            resp = json_response(exc.status, {"error": exc.message})
            for name, value in exc.headers:
                resp.headers[name] = value
            fields["error"] = exc.message
        (log.info if resp.status < 400 else log.warning)(
            "park_api_request",
            token=request.get(_TOKEN_NAME),
            peer=peer_host(request),
            method=request.method,
            path=show(request.path, 80)[1:-1],
            status=resp.status,
            ms=round((time.monotonic() - started) * 1000, 1),
            **fields,
        )
        return resp

    async def _answer(self, request: web.Request, fields: dict[str, Any]) -> dict[str, Any]:
        path = request.path
        handlers: dict[str, tuple[Sequence[str], Callable[..., Any]]] = {
            f"{PREFIX}/presence": (("category", "gate", "limit"), self._presence),
            f"{PREFIX}/events": (
                ("plate", "from", "to", "gate", "type", "limit", "cursor"),
                self._events,
            ),
            f"{PREFIX}/gates": ((), self._gates),
        }
        if path not in handlers:
            raise HttpError(404, f"no such path {show(path)} (try {', '.join(handlers)})")
        if request.method != "GET":
            raise HttpError(
                405, f"method {request.method} not allowed: GET only", headers=[("Allow", "GET")]
            )
        allowed, handler = handlers[path]
        params = query_params(request.rel_url.raw_query_string, allowed, max_fields=16)
        fields["params"] = params
        result: dict[str, Any] = await handler(params)
        return result

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        if self._waiting >= self.limits.max_waiting:
            raise HttpError(
                503, "too many requests waiting for the store", headers=[("Retry-After", "1")]
            )
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except StoreError as exc:
            log.error("park_api_store_failed", error=str(exc))
            raise HttpError(
                503, "the store cannot be read now", headers=[("Retry-After", "5")]
            ) from None
        finally:
            self._waiting -= 1

    # /presence

    async def _presence(self, params: dict[str, str]) -> dict[str, Any]:
        categories = _categories(params["category"]) if "category" in params else None
        gate = _gate(params["gate"]) if "gate" in params else None
        limit = uint_param(params.get("limit", str(DEFAULT_PRESENCE)), "limit", 1, MAX_PRESENCE)
        now = self.clock.wall_ns()

        def read() -> tuple[list[VehicleInside], list[ParkOverstay]]:
            inside = self.store.presence(categories=categories, gate=gate, limit=limit + 1)
            # Only the page's overstays: not every vehicle inside read again for them.
            return inside, park_overstays(inside[:limit], now, self.dwell_limits)

        inside, overstays = await self._in_thread(read)
        over = {o.vehicle.plate: o for o in overstays}
        return {
            "generated_at": iso(now),
            "count": min(len(inside), limit),
            "truncated": len(inside) > limit,
            "vehicles": [vehicle_json(v, over.get(v.plate), now) for v in inside[:limit]],
        }

    # /gates

    async def _gates(self, params: dict[str, str]) -> dict[str, Any]:
        states = await self._in_thread(self.store.gate_states)
        now = self.clock.wall_ns()
        return {"generated_at": iso(now), "gates": [gate_json(g) for g in states]}

    # /events

    async def _events(self, params: dict[str, str]) -> dict[str, Any]:
        query = event_query(params)
        page, cursor, scanned = await self._in_thread(
            lambda: scan_events(self.store, query, self.limits)
        )
        return {"events": page, "next_cursor": cursor, "scanned": scanned}


def scan_events(
    store: CentralStore, q: EventQuery, lim: ApiLimits
) -> tuple[list[dict[str, Any]], str | None, int]:
    """A page of the stored events matching ``q`` (as JSON), the cursor after the last event
    read (None: the end), and how many were read: at most ``lim.scan_rows``."""
    types = q.types
    if q.plate is not None:
        types = _PLATE_TYPES if types is None else types & _PLATE_TYPES
    position, scanned, page = q.after, 0, []
    while scanned < lim.scan_rows:
        want = min(lim.scan_chunk, lim.scan_rows - scanned)
        rows = store.find_events(
            position,
            gate=q.gate,
            types=types,
            start_ns=q.start_ns,
            end_ns=q.end_ns,
            limit=want,
        )
        for gate, row in rows:
            scanned += 1
            position = (gate, row[0])
            item = _event_json(gate, StoredEvent.from_row(row), q.plate)
            if item is None:
                continue
            page.append(item)
            if len(page) >= q.limit:
                return page, _cursor(position), scanned
        if len(rows) < want:
            return page, None, scanned
    return page, _cursor(position), scanned


# --- parameters ------------------------------------------------------------------------------


def _categories(text: str) -> list[VehicleCategory]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            out.append(VehicleCategory(part))
        except ValueError:
            known = ", ".join(c.value for c in VehicleCategory)
            raise HttpError(400, f"category: {show(part)} is none of {known}") from None
    if not out:
        raise HttpError(400, "category: empty")
    return out


def _gate(text: str) -> str:
    try:
        return check_id(text, "gate")
    except ProtocolError as exc:
        raise HttpError(400, f"gate: {exc}") from None


def _types(text: str) -> frozenset[str]:
    known = sorted(registered_types())
    out: set[str] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part.endswith(("*", ".")):
            found = [t for t in known if t.startswith(part.rstrip("*"))]
        else:
            found = [part] if part in known else []
        if not found:
            raise HttpError(400, f"type: {show(part)} names no event type")
        out.update(found)
    if not out:
        raise HttpError(400, "type: empty")
    return frozenset(out)


def _time(name: str, text: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise HttpError(
            400, f"{name}: {show(text)} is not an ISO 8601 time, e.g. 2026-05-01T08:00:00+08:00"
        ) from None
    if when.tzinfo is None:
        raise HttpError(400, f"{name}: {show(text)} has no UTC offset (add +08:00 or Z)")
    ns = datetime_to_ns(when)
    if not -(2**63) <= ns < 2**63:  # what a store can hold: 1677-09-21 to 2262-04-11
        raise HttpError(400, f"{name}: {show(text)} is out of range (years 1678 to 2261)")
    return ns


def event_query(params: dict[str, str]) -> EventQuery:
    """The ``/events`` parameters checked (``HttpError`` 400 naming the bad one)."""
    plate = None
    if "plate" in params:
        text = normalise(params["plate"])
        if not text:
            raise HttpError(400, "plate: empty once normalised")
        plate = PlateMatcher(text)
    start = _time("from", params["from"]) if "from" in params else None
    end = _time("to", params["to"]) if "to" in params else None
    if start is not None and end is not None and end <= start:
        raise HttpError(400, "to: must be after from")
    return EventQuery(
        after=_uncursor(params["cursor"]) if "cursor" in params else ("", 0),
        gate=_gate(params["gate"]) if "gate" in params else None,
        types=_types(params["type"]) if "type" in params else None,
        start_ns=start,
        end_ns=end,
        plate=plate,
        limit=uint_param(params.get("limit", str(DEFAULT_EVENTS)), "limit", 1, MAX_EVENTS),
    )


def _cursor(position: tuple[str, int]) -> str:
    raw = json.dumps([position[0], position[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _uncursor(text: str) -> tuple[str, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        gate, seq = json.loads(raw)
        if isinstance(gate, str) and type(seq) is int and 0 <= seq < 2**63:
            return gate, seq
    except (
        binascii.Error,
        ValueError,
        TypeError,
        RecursionError,
    ):  # RecursionError: deeply nested JSON
        pass
    raise HttpError(400, f"cursor: {show(text)} is not a next_cursor of this API")


# --- JSON --------------------------------------------------------------------------------------


def iso(ns: int | None) -> str | None:
    """``ns`` since the epoch as ISO 8601 in UTC, in seconds; None stays None."""
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


def vehicle_json(v: VehicleInside, over: ParkOverstay | None, now: int) -> dict[str, Any]:
    """A vehicle inside, as the API and ``central roll-call --json`` show it."""
    return {
        "plate": v.plate,
        "category": None if v.category is None else v.category.value,
        "hazardous": v.category is not None and v.category.dangerous,
        "entry_gate": v.entry_gate,
        "entry_seq": v.entry_seq,
        "lane": v.lane,
        "entered_at": iso(v.entered_at_ns),
        "inside_s": max(0, now - v.entered_at_ns) // 10**9,
        "credential_id": v.credential_id,
        "permit_until": iso(v.permit_until_ns),
        "unauthorised": v.unauthorised,
        "overdue": None
        if over is None
        else {
            "limit": over.limit,
            "deadline": iso(over.deadline_ns),
            "exceeded_s": over.exceeded_ns // 10**9,
        },
    }


def gate_json(g: GateState) -> dict[str, Any]:
    """A gate's state, as the API and ``central gates --json`` show it."""
    seen = [t for t in (g.status_at_ns, g.last_event_at_ns) if t is not None]
    version = g.allowlist_version if g.allowlist_version is not None else g.status_allowlist_version
    return {
        "gate": g.gate,
        "online": g.online,
        "state": g.state,
        "last_seen": iso(max(seen, default=None)),
        "synced_seq": g.stored_seq,
        "head_seq": g.head_seq,
        "lag": g.lag,
        "last_event_at": iso(g.last_event_at_ns),
        "allowlist_version": version,
        "allowlist_updated_at": iso(g.allowlist_at_ns),
        "mode": g.mode,
        "faulted_devices": [
            {"device": f.device, "code": f.code, "message": f.message, "since": iso(f.since_ns)}
            for f in g.faults
        ],
    }


def _event_json(
    gate: str, stored: StoredEvent, plate: PlateMatcher | None
) -> dict[str, Any] | None:
    match = None
    if plate is not None:
        try:
            match = plate.match(stored.event())
        except Exception:  # an undecodable event names no plate we can match
            return None
        if match is None:
            return None
    decoded = to_json_dict(stored)
    return {
        "gate": gate,
        "seq": stored.seq,
        "type": stored.type,
        "lane": stored.lane,
        "time": iso(stored.wall_ns),
        "wall_ns": stored.wall_ns,
        "version": stored.version,
        "match": match,
        "data": {k: v for k, v in decoded.items() if k not in _ENVELOPE},
    }
