"""The server side of TLS for an :class:`~edgegate.web.server.HttpServer`."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization


class TlsFileError(ssl.SSLError):
    """A certificate or key that cannot be used, naming the file and what is wrong."""

    def __str__(self) -> str:
        return str(self.args[0])


async def server_tls(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """A server context with the certificate chain (PEM, with any intermediates) and its key,
    or None for plain HTTP (either file missing); ``OSError`` if a file cannot be read,
    :class:`TlsFileError` (an ``ssl.SSLError``) naming the file and the problem if its
    content is not usable."""
    if cert_file is None or key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # No passphrase: OpenSSL would otherwise ask for one on the terminal.
        await asyncio.to_thread(context.load_cert_chain, cert_file, key_file, lambda: b"")
    except ssl.SSLError as exc:
        # OpenSSL says only "[SSL] PEM lib": find out which file and what.
        problem = await asyncio.to_thread(_diagnose, cert_file, key_file)
        raise TlsFileError(problem or f"{cert_file}, {key_file}: {exc}") from None
    return context


def _diagnose(cert_file: Path, key_file: Path) -> str | None:
    try:
        cert = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    except ValueError:
        return (
            f"{cert_file}: not a PEM certificate (expected -----BEGIN CERTIFICATE-----; "
            "is it the key, or DER?)"
        )
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except TypeError:
        return f"{key_file}: the key is protected by a passphrase (give it unencrypted, mode 0600)"
    except (ValueError, UnsupportedAlgorithm):
        return (
            f"{key_file}: not a PEM private key (expected -----BEGIN PRIVATE KEY-----; "
            "is it the certificate, or DER?)"
        )
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, raw) != key.public_key().public_bytes(der, raw):
        return f"{key_file}: not the key of the certificate in {cert_file}"
    return None
