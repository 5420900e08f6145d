"""The signed envelope of central -> gate messages, the Ed25519 keys that sign it, and the
checks the signed bodies share. Pure apart from the key-file readers.

Envelope (msgpack map)::

    {v: 1, kind: str, key_id: str, body: bytes, sig: bytes}

``sig`` is the Ed25519 signature of ``b"edgegate-signed-v1\\0" + kind + b"\\0" + body``: the
kind is signed, so an allow-list publication cannot be replayed as a command, nor one kind of
message read as another. ``key_id`` only picks the key among those a gate trusts.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgpack
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgegate.sync.protocol import INT64_MAX, ProtocolError, load_map

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENVELOPE_VERSION = 1
SIGNING_CONTEXT = b"edgegate-signed-v1\0"
KIND_ALLOWLIST = "allowlist"
KIND_COMMAND = "command"
MAX_SIGNED_BODY = 255 << 20
"""Largest body of an envelope (bytes): under MQTT's 256 MiB packet limit."""
SIGNATURE_LEN = 64

SignatureCode = Literal["malformed", "unsigned", "wrong-kind", "unknown-key", "forged"]


class SignatureError(ProtocolError):
    """A payload that is not a validly signed envelope of the expected kind. ``code``: one of
    ``malformed``, ``unsigned``, ``wrong-kind``, ``unknown-key``, ``forged``."""

    def __init__(self, code: SignatureCode, message: str) -> None:
        super().__init__(message)
        self.code: SignatureCode = code


class KeyLoadError(ValueError):
    """A key file or PEM text that is not an Ed25519 key of the expected kind."""


# ------------------------------------------------------------------------------ keys


def generate_keypair() -> tuple[bytes, bytes]:
    """A new key pair as ``(private PEM (PKCS#8, unencrypted), public PEM)``."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return private_pem, public_pem(private.public_key())


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file, else ``KeyLoadError`` (``OSError`` if unreadable)."""
    data = Path(path).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyLoadError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyLoadError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(path_or_pem: str | Path | bytes) -> Ed25519PublicKey:
    """The Ed25519 public key in PEM ``bytes``/text, or in the PEM file at a path; else
    ``KeyLoadError`` (``OSError`` if the file is unreadable)."""
    if isinstance(path_or_pem, bytes):
        data, where = path_or_pem, "public key"
    elif isinstance(path_or_pem, str) and path_or_pem.lstrip().startswith("-----BEGIN"):
        data, where = path_or_pem.encode(), "public key"
    else:
        data, where = Path(path_or_pem).read_bytes(), str(path_or_pem)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyLoadError(f"{where}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyLoadError(f"{where}: not an Ed25519 public key ({type(key).__name__})")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# ------------------------------------------------------------------------------ envelope


def _signed_message(kind: str, body: bytes) -> bytes:
    return SIGNING_CONTEXT + kind.encode() + b"\0" + body


def sign(kind: str, body: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The envelope carrying ``body`` as ``kind``, signed with ``private_key``."""
    if not kind or "\0" in kind:
        raise ValueError(f"kind {kind!r}: must be non-empty, without NUL")
    if len(body) > MAX_SIGNED_BODY:
        raise ValueError(f"body of {len(body)} bytes, at most {MAX_SIGNED_BODY} allowed")
    body = bytes(body)
    doc = {
        "v": ENVELOPE_VERSION,
        "kind": kind,
        "key_id": key_id(private_key.public_key()),
        "body": body,
        "sig": private_key.sign(_signed_message(kind, body)),
    }
    return msgpack.Packer(use_bin_type=True).pack(doc)


def open_signed(
    payload: bytes,
    expected_kind: str,
    public_key: Ed25519PublicKey | Iterable[Ed25519PublicKey],
) -> bytes:
    """The body of an envelope of ``expected_kind`` signed by ``public_key`` (or by one of
    several trusted keys, e.g. during a key rotation); else ``SignatureError``."""
    keys = [public_key] if isinstance(public_key, Ed25519PublicKey) else list(public_key)
    doc = load_map(
        payload,
        lambda exc: SignatureError(
            "malformed", f"not a signed envelope: not valid msgpack ({exc})"
        ),
        lambda _: SignatureError("malformed", "not a signed envelope: not a msgpack map"),
        max_bin_len=MAX_SIGNED_BODY,
        max_str_len=256,
        max_array_len=16,
        max_map_len=8,
    )
    sig = doc.get("sig")
    if sig is None or sig == b"" or sig == "":
        raise SignatureError("unsigned", "unsigned: the message carries no signature")
    extra = doc.keys() - {"v", "kind", "key_id", "body", "sig"}
    if extra:
        fields = ", ".join(sorted(map(repr, extra)))
        raise SignatureError("malformed", f"malformed envelope: unknown field {fields}")
    version = doc.get("v")
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise SignatureError(
            "malformed", f"malformed envelope: version {version!r}, expected {ENVELOPE_VERSION}"
        )
    kind, kid, body = doc.get("kind"), doc.get("key_id"), doc.get("body")
    if type(kind) is not str or not kind:
        raise SignatureError("malformed", "malformed envelope: kind is not a non-empty string")
    if type(kid) is not str:
        raise SignatureError("malformed", "malformed envelope: key_id is not a string")
    if type(body) is not bytes:
        raise SignatureError("malformed", "malformed envelope: body is not bytes")
    if type(sig) is not bytes or len(sig) != SIGNATURE_LEN:
        raise SignatureError("malformed", f"malformed envelope: sig is not {SIGNATURE_LEN} bytes")
    if kind != expected_kind:
        raise SignatureError(
            "wrong-kind", f"wrong kind: a {kind!r} message where {expected_kind!r} was expected"
        )
    key = next((k for k in keys if key_id(k) == kid), None)
    if key is None:
        trusted = ", ".join(key_id(k) for k in keys) or "none"
        raise SignatureError(
            "unknown-key", f"signed with unknown key {kid[:32]!r} (trusted: {trusted})"
        )
    try:
        key.verify(sig, _signed_message(kind, body))
    except InvalidSignature:
        raise SignatureError(
            "forged", f"forged: the signature does not verify with key {kid}"
        ) from None
    return body


# ------------------------------------------------------------------------------ shared checks


def check_int(value: object, field: str, lo: int, hi: int = INT64_MAX) -> int:
    if type(value) is not int:
        raise ProtocolError(f"{field}: expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ProtocolError(f"{field}: {value} is outside {lo}..{hi}")
    return value


def check_str(value: object, field: str, max_len: int, *, empty: bool = False) -> str:
    if type(value) is not str:
        raise ProtocolError(f"{field}: expected a string, got {type(value).__name__}")
    if not empty and not value.strip():
        raise ProtocolError(f"{field}: must not be empty")
    if len(value) > max_len:
        raise ProtocolError(f"{field}: {len(value)} characters, at most {max_len} allowed")
    return value


def pack_fields(record: DataclassInstance) -> bytes:
    """A signed body: the dataclass's fields as a msgpack map, in declaration order (the
    order the wire has always had); ``unpack_map`` reads it back."""
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    return msgpack.Packer(use_bin_type=True).pack(fields)


def unpack_map(
    body: bytes, what: str, keys: frozenset[str], *, max_bin_len: int = 0
) -> dict[str, Any]:
    doc = load_map(
        body,
        lambda exc: ProtocolError(f"{what}: not valid msgpack ({exc})"),
        lambda _: ProtocolError(f"{what}: expected a msgpack map"),
        max_bin_len=max_bin_len,
        max_str_len=4096,
        max_array_len=0,
        max_map_len=16,
    )
    missing = keys - doc.keys()
    if missing:
        raise ProtocolError(f"{what}: missing {', '.join(sorted(missing))}")
    extra = doc.keys() - keys
    if extra:
        raise ProtocolError(f"{what}: unknown field {', '.join(sorted(map(repr, extra)))}")
    return doc
