"""Socket hygiene around aiomqtt/paho-mqtt connects, shared by the gate and central."""

from __future__ import annotations

import socket


def close_leaked_sockets(exc: BaseException | None) -> None:
    """Close sockets left open by a failed connect (paho-mqtt 2.2 leaves the socket of a
    failed TLS handshake open; aiomqtt re-raises without closing it): a process retrying
    against a broker with the wrong CA would otherwise leak a descriptor per attempt."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                if isinstance(value, socket.socket):
                    value.close()
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
