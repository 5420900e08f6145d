"""The dashboard's settings (``edgegate central web``'s options), its roles, and where an
approval is published."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgegate.allowlist.importer import DEFAULT_TIMEZONE
from edgegate.central.sink import BrokerSettings
from edgegate.core.domain import VehicleCategory
from edgegate.core.rules import DEFAULT_DWELL_LIMITS
from edgegate.web import ServerLimits


class DashboardRole(enum.StrEnum):
    VIEWER = "viewer"  # sees every page
    OPERATOR = "operator"  # also approves and dismisses blacklist proposals


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """Sessions and lock-out (as the console's), live polling, display."""

    session_idle_s: float = 8 * 3600
    max_sessions: int = 1024
    max_sessions_per_account: int = 16
    """An account's next login ends its own least recently used session beyond this."""
    max_failed_logins: int = 5
    failed_login_window_s: float = 15 * 60
    lockout_s: float = 15 * 60
    poll_s: float = 0.2
    """How often the poller reads the store's change marks."""
    heartbeat_s: float = 15.0
    stale_s: float = 300.0
    """An online gate not heard from for this long is listed as stale."""
    timezone: str = DEFAULT_TIMEZONE
    dwell_limits: Mapping[VehicleCategory, timedelta | None] = field(
        default_factory=lambda: dict(DEFAULT_DWELL_LIMITS)
    )
    server_names: tuple[str, ...] = ()
    """Host names (or addresses) the control room's browsers use for this server, besides
    the address a connection came in on (and ``localhost`` on loopback). A request naming
    another ``Host`` is refused, and a form must come from one of them (``Origin``), so a
    page from elsewhere cannot reach the dashboard by DNS rebinding."""
    max_connections: int = 256
    max_unauthenticated: int = 64
    """Connections not (yet) logged in, from all addresses; the rest is kept for logged-in
    users (see :class:`~edgegate.web.ServerLimits` ``max_pending``)."""
    max_unauthenticated_per_address: int = 8
    max_streams: int = 128
    max_streams_per_session: int = 4
    """A session's next ``/live`` stream ends its oldest beyond this (newest wins)."""

    def __post_init__(self) -> None:
        room = self.max_connections - self.max_unauthenticated
        if not 1 <= self.max_unauthenticated < self.max_connections:
            raise ValueError(
                f"max_unauthenticated ({self.max_unauthenticated}) must be >= 1 and below "
                f"max_connections ({self.max_connections})"
            )
        if not 1 <= self.max_streams <= room:
            raise ValueError(
                f"max_streams ({self.max_streams}) must be >= 1 and at most max_connections "
                f"- max_unauthenticated ({room}): the live streams must fit in what is kept "
                f"for logged-in users"
            )
        if self.max_streams_per_session < 1:
            raise ValueError("max_streams_per_session must be >= 1")

    def server_limits(self) -> ServerLimits:
        """The HTTP server's limits for these settings."""
        return ServerLimits(
            max_connections=self.max_connections,
            max_pending=self.max_unauthenticated,
            max_pending_per_peer=self.max_unauthenticated_per_address,
        )


@dataclass(frozen=True, slots=True)
class Publishing:
    """Where and how an approval's signed deltas are published (``--key``, ``--site``,
    ``--broker``); without it the dashboard can dismiss but not approve."""

    site: str
    key: Ed25519PrivateKey
    broker: BrokerSettings
    timeout: float = 10.0
    gates: tuple[str, ...] | None = None
