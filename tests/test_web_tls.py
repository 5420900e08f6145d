"""The server's TLS files: usable ones give a context; unusable ones an error naming the file
and what is wrong (not OpenSSL's bare ``[SSL] PEM lib``), for the gate and central alike."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from edgegate.web.tls import TlsFileError, server_tls
from tests.certs import make_pki


async def test_unusable_files_are_named_with_what_is_wrong(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    cert, key = pki.server_cert_path, pki.server_key_path
    assert isinstance(await server_tls(cert, key), ssl.SSLContext)
    assert await server_tls(None, key) is None
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    cases = [
        (key, key, f"{key}: not a PEM certificate"),  # the key given as the certificate
        (cert, cert, f"{cert}: not a PEM private key"),
        (cert, pki.ca_key_path, f"{pki.ca_key_path}: not the key of the certificate in {cert}"),
        (cert, locked, f"{locked}: the key is protected by a passphrase"),
    ]
    for cert_file, key_file, message in cases:
        with pytest.raises(TlsFileError) as info:
            await server_tls(cert_file, key_file)
        assert isinstance(info.value, ssl.SSLError)  # what the callers catch
        assert str(info.value).startswith(message), str(info.value)
    with pytest.raises(FileNotFoundError):
        await server_tls(tmp_path / "nope.crt", key)
