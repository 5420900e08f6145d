"""Central's HTTP server (``edgegate central run --http``): ``/metrics``, ``/healthz`` and
``/readyz`` of the sink, and whatever later parts mount beside them (central's park view):
a part is a function ``part(server, sink)`` appended to :data:`CENTRAL_WEB_PARTS`, called
before the server starts, that mounts its applications or routes on the server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgegate.central.metrics import SinkMetrics
from edgegate.central.sink import Sink
from edgegate.observability import get_logger
from edgegate.web import HttpServer, ServerLimits
from edgegate.web.monitoring import Monitoring
from edgegate.web.tls import server_tls

log = get_logger("central.web")

CentralWebPart = Callable[[HttpServer, Sink], None]

CENTRAL_WEB_PARTS: list[CentralWebPart] = []
"""What central's server serves besides monitoring: each is called with the server (before
it starts) and the sink."""


@dataclass
class CentralWeb:
    """The server at ``bind``:``port``; :meth:`start` once the sink is open. HTTPS with
    both TLS files; ``token``: the bearer token the monitoring endpoints ask for."""

    sink: Sink
    bind: str = "127.0.0.1"
    port: int = 9480
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    token: str | None = None
    limits: ServerLimits = field(default_factory=ServerLimits)
    parts: list[CentralWebPart] = field(default_factory=lambda: list(CENTRAL_WEB_PARTS))
    server: HttpServer | None = None

    async def start(self) -> None:
        """Listen (``OSError`` if the address cannot be bound or the TLS files loaded)."""
        tls = await server_tls(self.tls_cert_file, self.tls_key_file)
        server = HttpServer(self.bind, self.port, ssl_context=tls, limits=self.limits)
        metrics = SinkMetrics(self.sink)
        Monitoring(metrics=metrics.render, readiness=self._readiness, token=self.token).mount(
            server
        )
        for part in self.parts:
            part(server, self.sink)
        await server.start()
        self.server = server
        log.info("central_http_serving", url=server.url, token=self.token is not None)

    def _readiness(self) -> tuple[bool, dict[str, Any]]:
        ready = self.sink.ready
        problem = None if ready else "not connected and subscribed to the broker"
        broker = {"ok": ready, "problem": problem}
        # Park-wide consumption off is a choice made at start (no signing key), not a
        # failure to restart for: said here, it does not make central unready.
        park_entry = {
            "ok": True,
            "enabled": self.sink.park_entry,
            "note": None
            if self.sink.park_entry
            else "park-wide appointment consumption off: central run has no --signing-key",
        }
        return ready, {
            "ready": ready,
            "failing": [] if ready else ["broker"],
            "components": {"broker": broker, "park_entry": park_entry},
        }

    async def aclose(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.aclose()
