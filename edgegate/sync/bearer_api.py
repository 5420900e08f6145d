"""What an HTTP API behind a bearer token needs besides its endpoints, shared by the gate's
pull API (:mod:`edgegate.sync.pull_api`) and central's park API (``edgegate.central.api``):
the token read from its header and checked for form, the per-address throttle of bad tokens,
content negotiation, and strict query parameters. Every refusal is an :class:`HttpError`
naming what is wrong."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import parse_qsl

from aiohttp import web

from edgegate.core.clock import Clock
from edgegate.web import HttpError, show

__all__ = [
    "AuthThrottle",
    "bearer_token",
    "check_token",
    "negotiate",
    "query_params",
    "uint_param",
    "wrong_token",
]

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
_UINT_RE = re.compile(r"[0-9]{1,19}")


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

    def refusal(self, peer: str) -> HttpError | None:
        """The ``429`` a new connection from a paused ``peer`` gets (None: not paused)."""
        pause = self.paused(peer)
        if pause <= 0:
            return None
        return HttpError(
            429,
            "too many bad tokens from this address",
            headers=[("Retry-After", str(max(1, round(pause))))],
            close=True,
        )

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


def bearer_token(request: web.Request, realm: str) -> bytes:
    """The token of the request's one ``Authorization: Bearer`` header, as bytes (aiohttp
    decodes header values as UTF-8, with surrogate escapes for other bytes); a ``401`` that
    closes the connection when there is none: only a client holding a token keeps one open."""
    challenge = f'Bearer realm="{realm}"'
    values = request.headers.getall("Authorization", [])
    if not values:
        raise HttpError(
            401, "missing bearer token", headers=[("WWW-Authenticate", challenge)], close=True
        )
    scheme, _, given = values[0].partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer":
        raise HttpError(
            401,
            "expected one 'Authorization: Bearer <token>'",
            headers=[("WWW-Authenticate", f'{challenge}, error="invalid_token"')],
            close=True,
        )
    return given.strip().encode("utf-8", "surrogateescape")


def wrong_token(realm: str) -> HttpError:
    """The ``401`` for a bearer token that is not the (or a) valid one."""
    challenge = f'Bearer realm="{realm}", error="invalid_token"'
    return HttpError(
        401, "wrong bearer token", headers=[("WWW-Authenticate", challenge)], close=True
    )


def check_token(token: str) -> str:
    """``token`` if usable as a bearer token (RFC 6750 ``b64token``), else ``ValueError``."""
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise ValueError(
            "token: must be a non-empty string of letters, digits and -._~+/ (then any '=')"
        )
    return token


def negotiate(accept: str | None, offers: Sequence[str]) -> str | None:
    """The offer the ``Accept`` value prefers (highest q, then the order of ``offers``), or
    None if it accepts none. An absent or empty ``Accept`` accepts the first offer."""
    if accept is None or not accept.strip():
        return offers[0]
    ranges: list[tuple[str, str, float]] = []
    for part in accept.split(","):
        items = part.split(";")
        media = items[0].strip().lower()
        if "/" not in media:
            continue  # not a media range: ignored
        main, _, sub = media.partition("/")
        q = 1.0
        for param in items[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            ranges.append((main.strip(), sub.strip(), q))
    best: str | None = None
    best_q = 0.0
    for offer in offers:
        o_main, _, o_sub = offer.partition("/")
        specificity, q = -1, 0.0
        for main, sub, rq in ranges:
            if main == o_main and sub == o_sub:
                s = 2
            elif main == o_main and sub == "*":
                s = 1
            elif main == "*" and sub == "*":
                s = 0
            else:
                continue
            if s > specificity:
                specificity, q = s, rq
        if q > best_q:
            best, best_q = offer, q
    return best


def query_params(query: str, allowed: Sequence[str], max_fields: int = 8) -> dict[str, str]:
    """The parameters of a raw query string; ``400`` for an unknown or repeated one."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=max_fields)
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


def uint_param(value: str, name: str, lo: int, hi: int) -> int:
    if not _UINT_RE.fullmatch(value) or not lo <= int(value) <= hi:
        raise HttpError(400, f"{name}: expected a whole number {lo}..{hi}, got {show(value)}")
    return int(value)
