"""Kept only for ``tests/test_broker_security.py``, whose bare aiomqtt client (TLS set up by
aiomqtt's ``tls_params``) leaks the socket of a failed handshake. edgegate's own clients do
not need it: ``edgegate.mqtt.session.BrokerSettings.tls_context`` closes that socket itself.
Remove this module with that test's import."""

from __future__ import annotations

import socket


def close_leaked_sockets(exc: BaseException | None) -> None:
    """Close the sockets referenced by the frames of ``exc``'s traceback (and its causes)."""
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
