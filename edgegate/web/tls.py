"""The server side of TLS for an :class:`~edgegate.web.server.HttpServer`."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path


async def server_tls(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """A server context with the certificate chain (PEM, with any intermediates) and its key,
    or None for plain HTTP (either file missing); ``OSError``/``ssl.SSLError`` if they
    cannot be loaded."""
    if cert_file is None or key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    await asyncio.to_thread(context.load_cert_chain, cert_file, key_file)
    return context
