"""The daemon's HTTP server built from ``[http]``, with what is mounted on it: the pull API
at ``/v1`` when ``[sync.pull_api]`` is configured, the guard's console at ``/`` when
``[console]`` is, and always ``/metrics``, ``/healthz`` and ``/readyz`` (with
``[health].token_file``, behind its bearer token)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from edgegate.config import GateConfig
from edgegate.config.models import HttpSettings
from edgegate.console.accounts import AccountsError, AccountStore
from edgegate.console.app import MAX_BODY, Console, add_console_routes
from edgegate.console.desk import GateDesk
from edgegate.core.clock import Clock
from edgegate.log import EventLog
from edgegate.observability import get_logger
from edgegate.sync.pull_api import PullApi, PullLimits
from edgegate.web import HttpServer, ServerLimits
from edgegate.web.monitoring import Monitoring, read_token
from edgegate.web.tls import server_tls as tls_context

if TYPE_CHECKING:
    from edgegate.daemon.health import GateHealth
    from edgegate.daemon.metrics import GateMetrics

log = get_logger("gate.web")


def server_limits(http: HttpSettings) -> ServerLimits:
    return ServerLimits(
        header_timeout=http.header_timeout.total_seconds(),
        max_connections=http.max_connections,
        max_pending_per_peer=http.max_pending_per_peer,
    )


async def server_tls(config: GateConfig, http: HttpSettings) -> ssl.SSLContext | None:
    """The server TLS context of ``[http]`` (None: plain HTTP); ``OSError``/``ssl.SSLError``
    if the certificate or key cannot be loaded."""
    if http.tls_cert_file is None or http.tls_key_file is None:
        return None
    resolve = config.resolve_path
    return await tls_context(resolve(http.tls_cert_file), resolve(http.tls_key_file))


@dataclass
class GateWeb:
    """The gate's HTTP server and its parts; :meth:`start` after the log is open."""

    config: GateConfig
    event_log: EventLog  # the pull API reads it; the console's login events are appended to it
    clock: Clock
    desk: GateDesk | None = None  # the console is served only with a desk and [console]
    health: GateHealth | None = None  # with metrics: /metrics, /healthz, /readyz
    metrics: GateMetrics | None = None
    server: HttpServer | None = None
    pull_api: PullApi | None = None
    console: Console | None = None
    problem: str | None = None  # why the server is not serving, when it could not start
    _parts: list[PullApi] = field(default_factory=list)

    async def start(self) -> None:
        """Build and start the server from ``[http]`` (nothing without it). A part that cannot
        start (unreadable token) is logged and left out; a server that cannot start (bad
        certificate, address in use) is logged and the gate runs on without it."""
        config, http = self.config, self.config.http
        if http is None:
            return
        try:
            tls = await server_tls(config, http)
        except (OSError, ssl.SSLError) as exc:
            self.problem = f"TLS certificate or key: {exc}"
            log.error("http_disabled", key="http", problem=self.problem)
            return
        server = HttpServer(http.bind, http.port, ssl_context=tls, limits=server_limits(http))
        await self._mount_pull_api(server)
        await self._mount_monitoring(server)
        self._mount_console(server)
        try:
            await server.start()
        except OSError as exc:
            self.problem = f"cannot listen on {http.url}: {exc}"
            log.error("http_disabled", key="http", problem=self.problem)
            await self._close_parts()
            return
        self.server = server
        log.info(
            "http_serving",
            url=server.url,
            pull_api=self.pull_api is not None,
            console=self.console is not None,
        )

    def _mount_console(self, server: HttpServer) -> None:
        settings = self.config.console
        if settings is None or self.desk is None:
            return
        path = self.config.resolve_path(settings.accounts_file)
        try:
            accounts = AccountStore.open(path, self.clock.mono_ns)
        except AccountsError as exc:
            log.error("console_disabled", key="console.accounts_file", problem=str(exc))
            return
        if not accounts.names():
            log.warning(
                "console_has_no_accounts",
                accounts_file=str(path),
                hint="add one with: edgegate accounts add NAME --role guard --config ...",
            )
        app = web.Application(client_max_size=MAX_BODY)
        self.console = add_console_routes(
            app, self.desk, accounts, settings, self.clock, self.event_log.append
        )
        server.mount("/", app)

    async def _mount_monitoring(self, server: HttpServer) -> None:
        """``/metrics``, ``/healthz``, ``/readyz``; with a token file that cannot be read,
        none of them (they are never served open when a token was asked for)."""
        health, metrics = self.health, self.metrics
        if health is None or metrics is None:
            return
        settings = self.config.health
        token = None
        if settings is not None and settings.token_file is not None:
            path = self.config.resolve_path(settings.token_file)
            try:
                token = read_token(await asyncio.to_thread(path.read_text))
            except (OSError, ValueError) as exc:
                problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                log.error(
                    "monitoring_disabled", key="health.token_file", problem=f"{path}: {problem}"
                )
                return
        gate_id = self.config.gate.id
        Monitoring(
            metrics=metrics.render,
            readiness=health.readiness,
            alive=lambda: {"gate": gate_id},
            token=token,
        ).mount(server)

    async def _mount_pull_api(self, server: HttpServer) -> None:
        sync = self.config.sync
        if sync is None or sync.pull_api is None:
            return
        pa = sync.pull_api
        try:
            token_path = self.config.resolve_path(pa.token_file)
            token = (await asyncio.to_thread(token_path.read_text)).strip()
            limits = PullLimits(
                max_auth_failures=pa.max_auth_failures,
                auth_pause=pa.auth_pause.total_seconds(),
            )
            api = PullApi(
                self.event_log.path, self.config.gate.id, token, limits=limits, clock=self.clock
            )
            await api.open()
        except (OSError, ValueError) as exc:
            log.error("pull_api_disabled", key="sync.pull_api", problem=str(exc))
            return
        api.mount(server)
        self.pull_api = api
        self._parts.append(api)

    async def aclose(self) -> None:
        """Stop the server, then close what the parts hold. Idempotent."""
        server, self.server = self.server, None
        if server is not None:
            await server.aclose()
        await self._close_parts()

    async def _close_parts(self) -> None:
        parts, self._parts = self._parts, []
        for part in parts:
            await part.aclose()
