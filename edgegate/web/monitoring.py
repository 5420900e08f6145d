"""What a fleet's monitoring asks a server: ``/metrics`` (Prometheus text), ``/healthz`` (the
process answers) and ``/readyz`` (it does its job), at those exact paths of an
:class:`~edgegate.web.server.HttpServer`, beside whatever else is mounted on it.

None of them shows a plate or changes anything. With a ``token`` each asks for
``Authorization: Bearer <token>`` (401 otherwise); without, anyone who reaches the server's
address may read them: bind the server to an address only the monitoring network reaches.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from edgegate.web.server import JSON, HttpError, HttpServer, authenticated

__all__ = ["Monitoring", "json_response", "read_token"]

Readiness = Callable[[], tuple[bool, Mapping[str, Any]]]
"""``(ready, body)``: whether the service is ready, and the JSON body that says why."""


def read_token(text: str) -> str:
    """The bearer token of a token file's text (its one line); ``ValueError`` if empty."""
    token = text.strip()
    if not token:
        raise ValueError("the token file is empty")
    if any(c.isspace() for c in token):
        raise ValueError("the token file holds more than one word")
    return token


@dataclass
class Monitoring:
    """The monitoring endpoints over the callables that produce their answers."""

    metrics: Callable[[], bytes]
    """The exposition, built when scraped."""
    readiness: Readiness
    alive: Callable[[], Mapping[str, Any]] = dict
    token: str | None = None

    def mount(self, server: HttpServer) -> None:
        server.add_get("/metrics", self._metrics)
        server.add_get("/healthz", self._healthz)
        server.add_get("/readyz", self._readyz)

    def _check(self, request: web.Request) -> None:
        if self.token is None:
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            problem = "a bearer token is required (Authorization: Bearer <token>)"
        # surrogateescape: aiohttp decodes a header's non-UTF-8 bytes to lone surrogates.
        elif not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), self.token.encode()
        ):
            problem = "wrong bearer token"
        else:
            authenticated(request)
            return
        raise HttpError(
            401, problem, headers=[("WWW-Authenticate", 'Bearer realm="edgegate monitoring"')]
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        self._check(request)
        return web.Response(
            body=self.metrics(),
            # The text format every Prometheus since 2.0 reads (Debian 12 has 2.42).
            headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Cache-Control": "no-store"},
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        self._check(request)
        return json_response(200, {"alive": True, **self.alive()})

    async def _readyz(self, request: web.Request) -> web.Response:
        self._check(request)
        ready, body = self.readiness()
        return json_response(200 if ready else 503, body)


def json_response(status: int, body: Mapping[str, Any]) -> web.Response:
    """``body`` as JSON (UTF-8, keys sorted), never cached."""
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False, sort_keys=True).encode() + b"\n",
        content_type=JSON,
        headers={"Cache-Control": "no-store"},
    )
