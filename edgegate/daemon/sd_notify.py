"""systemd's notify protocol without libsystemd: one datagram per message to ``NOTIFY_SOCKET``.

``NOTIFY_SOCKET`` is a filesystem path or, starting with ``@``, a Linux abstract socket name.
Without it (not started by systemd, or ``Type=`` is not ``notify``) nothing is sent. The
watchdog is on when ``WATCHDOG_USEC`` is set and ``WATCHDOG_PID``, if set, is this process.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from edgegate.observability import get_logger

log = get_logger("sd_notify")


class Notifier:
    """Sends ``KEY=value`` lines to systemd; a no-op without a notify socket.

    Sending never raises and never blocks: systemd gone or its socket full costs a message,
    never the daemon (the watchdog then notices on its own)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        #: The watchdog period systemd enforces, in microseconds (None: no watchdog).
        self.watchdog_usec = watchdog_usec
        self._failing = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd's environment describes (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        return cls(address, _watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half of systemd's period (None: no watchdog)."""
        if self.address is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6

    def send(self, **fields: str) -> bool:
        """Send one message of ``KEY=value`` lines (``send(READY="1", STATUS="...")``);
        True if it was handed to the socket."""
        if self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            # A newline would start another assignment: STATUS= is one line.
            lines.append(f"{key}={' '.join(value.splitlines())}")
        data = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        try:
            # A socket per message, as libsystemd does: nothing to close, nothing inherited.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(data, _sockaddr(self.address))
        except OSError as exc:
            if not self._failing:  # once per outage
                log.warning("sd_notify_failed", socket=self.address, error=repr(exc))
            self._failing = True
            return False
        if self._failing:
            log.info("sd_notify_recovered", socket=self.address)
        self._failing = False
        return True


def _sockaddr(address: str) -> str | bytes:
    if address.startswith("@"):
        return b"\0" + address[1:].encode()  # abstract namespace
    return address


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """``WATCHDOG_USEC`` if it is meant for this process (``WATCHDOG_PID`` unset or ours)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    return usec if usec > 0 else None


__all__ = ["Notifier"]
