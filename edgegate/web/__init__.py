"""The daemon's one HTTP server (aiohttp): TLS, per-peer limits and the deadlines that keep
slow or hostile clients from holding it; the pull API and the console mount their routes."""

from edgegate.web.server import (
    JSON,
    PAGE_CSP,
    PAGE_HEADERS,
    Guard,
    HttpError,
    HttpServer,
    PeerCheck,
    ServerLimits,
    authenticated,
    error_response,
    on_lost,
    peer_host,
    show,
)

__all__ = [
    "JSON",
    "PAGE_CSP",
    "PAGE_HEADERS",
    "Guard",
    "HttpError",
    "HttpServer",
    "PeerCheck",
    "ServerLimits",
    "authenticated",
    "error_response",
    "on_lost",
    "peer_host",
    "show",
]
