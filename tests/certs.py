"""A test certificate authority: a CA, a server certificate for 127.0.0.1/localhost signed by
it, and an unrelated CA a client must refuse. Used by the mosquitto fixture and the pull API's
HTTPS tests."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgegate.central.trial import certificate_builder, key_usage

HOST = "127.0.0.1"


@dataclass(frozen=True)
class PKI:
    """The files :func:`make_pki` writes."""

    directory: Path
    ca_path: Path
    ca_key_path: Path
    server_cert_path: Path
    server_key_path: Path
    wrong_ca_path: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, *, ca: bool
) -> x509.CertificateBuilder:
    """A 30-day certificate of ``key`` for ``subject``: a CA's, or an end entity's."""
    return (
        certificate_builder(subject, issuer, key, days=30)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(key_usage(ca=ca), critical=True)
    )


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    return _certificate(name, key, name, ca=True).sign(key, hashes.SHA256()), key


def make_server_cert(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate for localhost and 127.0.0.1 signed by ``ca``, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address(HOST))]
    cert = (
        _certificate(_name("localhost"), key, ca.subject, ca=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def make_pki(directory: Path) -> PKI:
    """Write a test CA, a server cert/key for 127.0.0.1 and a wrong CA into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = make_ca("edgegate test CA")
    server, server_key = make_server_cert(ca, ca_key)
    wrong_ca, _ = make_ca("edgegate wrong CA")
    pki = PKI(
        directory=directory,
        ca_path=directory / "ca.crt",
        ca_key_path=directory / "ca.key",
        server_cert_path=directory / "server.crt",
        server_key_path=directory / "server.key",
        wrong_ca_path=directory / "wrong-ca.crt",
    )
    pki.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    pki.wrong_ca_path.write_bytes(wrong_ca.public_bytes(serialization.Encoding.PEM))
    for path, key in ((pki.ca_key_path, ca_key), (pki.server_key_path, server_key)):
        path.write_bytes(_pem_key(key))
        path.chmod(0o600)
    return pki
