"""Central -> gate downlink: signed allow-list publications and signed commands.

Everything a gate acts on is signed with central's Ed25519 key (``edgegate.sync.signing``)
and published at QoS 1 on the gate's own topic (the ACL lets a gate read only its own
downlink, so a publication for several gates is published once per gate).

Retained or not:

- A **snapshot** is published *retained*: a gate that comes online for the first time, or
  after losing its broker session, gets the latest full list as soon as it subscribes and
  needs nobody to answer a request. A stale retained snapshot (not newer than what the gate
  holds) is simply not applied.
- A **delta** is *not* retained: it would replace the retained snapshot (a new gate would
  then get a delta it cannot apply), and gates with a persistent session receive the deltas
  published while they were offline from their session queue anyway. A gate that misses one
  sees a version gap and asks for a snapshot.
- A **command** is *not* retained: it is for now, carries an expiry, and a gate that
  connects later must not act on an old one (its guard would refuse it as expired or
  replayed anyway).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgegate.allowlist import importer
from edgegate.central.sink import BrokerSettings
from edgegate.core.credential_codec import CodecError
from edgegate.core.domain import Credential, CredentialKind
from edgegate.observability import get_logger
from edgegate.sync.protocol import ProtocolError, Topics
from edgegate.sync.signing import (
    KIND_ALLOWLIST,
    KIND_COMMAND,
    AllowListPublication,
    KeyLoadError,
    SignedCommand,
    encode_command,
    encode_delta_content,
    encode_publication,
    encode_snapshot_content,
    key_id,
    load_private_key,
    sign,
)

log = get_logger("central.publish")


class PublishError(Exception):
    """Something to publish could not be built or delivered; the message names what."""


# ------------------------------------------------------------------------------ inputs


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Central's private key from ``path``, else ``PublishError`` saying what is wrong."""
    try:
        return load_private_key(path)
    except FileNotFoundError:
        raise PublishError(f"signing key {path}: no such file") from None
    except OSError as exc:
        raise PublishError(f"signing key {path}: cannot read it ({exc.strerror or exc})") from None
    except KeyLoadError as exc:
        hint = ""
        if b"PUBLIC KEY" in _head(path):
            hint = " (this is a public key; sign with the private .key file)"
        raise PublishError(f"signing key {exc}{hint}") from None


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(200)
    except OSError:
        return b""


def signing_key_id(key: Ed25519PrivateKey) -> str:
    return key_id(key.public_key())


def _read(path: Path) -> tuple[bytes, str]:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise PublishError(
            f"{path}: unknown format {suffix or '(none)'!r}: use a .csv or .json file"
        )
    try:
        return path.read_bytes(), suffix
    except OSError as exc:
        raise PublishError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_allowlist(path: Path, tz: str = importer.DEFAULT_TIMEZONE) -> list[Credential]:
    """Every entry of a full allow-list file (CSV or JSON by extension)."""
    return _parse(path, tz, importer.parse_json, importer.parse_csv)


def read_delta(path: Path, tz: str = importer.DEFAULT_TIMEZONE) -> importer.Delta:
    """The changes in a delta file (CSV with an ``op`` column, or JSON upsert/remove)."""
    return _parse(path, tz, importer.parse_json_delta, importer.parse_csv_delta)


_Parsed = TypeVar("_Parsed")


def _parse(
    path: Path,
    tz: str,
    json_parser: Callable[[bytes, str], _Parsed],
    csv_parser: Callable[[bytes, str], _Parsed],
) -> _Parsed:
    data, suffix = _read(path)
    parse = json_parser if suffix == ".json" else csv_parser
    try:
        return parse(data, tz)
    except importer.AllowListInputError as exc:
        raise PublishError(f"{path}: {exc}") from None
    except ValueError as exc:  # an unknown time zone
        raise PublishError(str(exc)) from None


def diff(previous: Iterable[Credential], current: Iterable[Credential]) -> importer.Delta:
    """The delta that turns the list ``previous`` into ``current``: entries new or changed
    in ``current`` are upserts, ``(kind, id)`` only in ``previous`` are removals."""
    before: dict[tuple[CredentialKind, str], Credential] = {(c.kind, c.id): c for c in previous}
    after: dict[tuple[CredentialKind, str], Credential] = {(c.kind, c.id): c for c in current}
    upserts = [c for k, c in after.items() if before.get(k) != c]
    removals = [k for k in before if k not in after]
    return importer.Delta(upserts, removals)


# ------------------------------------------------------------------------------ payloads


def snapshot_publication(
    entries: Sequence[Credential], *, version: int, now_ns: int
) -> AllowListPublication:
    try:
        content = encode_snapshot_content(entries)
        return AllowListPublication("snapshot", version, None, now_ns, content)
    except (CodecError, ProtocolError) as exc:
        raise PublishError(f"cannot build snapshot version {version}: {exc}") from None


def delta_publication(
    delta: importer.Delta, *, version: int, base_version: int, now_ns: int
) -> AllowListPublication:
    if version <= base_version:
        raise PublishError(
            f"--version {version} must be greater than the version the delta applies on "
            f"({base_version})"
        )
    try:
        content = encode_delta_content(delta.upserts, delta.removals)
        return AllowListPublication("delta", version, base_version, now_ns, content)
    except (CodecError, ProtocolError) as exc:
        raise PublishError(f"cannot build delta {base_version} -> {version}: {exc}") from None


def signed_publication(publication: AllowListPublication, key: Ed25519PrivateKey) -> bytes:
    try:
        return sign(KIND_ALLOWLIST, encode_publication(publication), key)
    except ValueError as exc:  # too big
        raise PublishError(f"cannot sign allow-list version {publication.version}: {exc}") from None


def signed_command(command: SignedCommand, key: Ed25519PrivateKey) -> bytes:
    return sign(KIND_COMMAND, encode_command(command), key)


# ------------------------------------------------------------------------------ publishing


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for one gate."""

    site: str
    gate: str
    kind: str  # "allowlist" or "commands"
    payload: bytes
    retain: bool

    @property
    def topic(self) -> str:
        t = Topics(self.site, self.gate)
        return t.allowlist if self.kind == "allowlist" else t.commands


async def publish(
    broker: BrokerSettings,
    messages: Sequence[Outgoing],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - also the MQTT client's own timeout
) -> None:
    """Connect, publish every message at QoS 1 (waiting for each PUBACK), disconnect.

    ``PublishError`` names the broker and what failed (unreachable, refused, timed out);
    messages before the failing one may have been published.
    """
    where = broker.url
    try:
        client = broker.client(
            identifier=f"edgegate-central-publish-{uuid.uuid4().hex[:12]}",
            clean_session=True,
            timeout=timeout,
        )
        async with asyncio.timeout(timeout):
            async with client:
                for m in messages:
                    await client.publish(m.topic, m.payload, qos=1, retain=m.retain)
                    log.info(
                        "published",
                        topic=m.topic,
                        bytes=len(m.payload),
                        retained=m.retain,
                    )
    except TimeoutError:
        raise PublishError(f"broker {where}: no answer within {timeout:g} s") from None
    except aiomqtt.MqttError as exc:
        raise PublishError(f"broker {where}: {_mqtt_problem(exc)}") from None


def _mqtt_problem(exc: aiomqtt.MqttError) -> str:
    text = str(exc)
    lowered = text.lower()
    if "refused" in lowered and "errno" in lowered:
        return f"unreachable ({text})"
    if "not authorized" in lowered or "bad user name or password" in lowered:
        return f"connection refused: {text} (check --username and --password-file)"
    if "certificate" in lowered or "ssl" in lowered:
        return f"TLS failed: {text} (check --ca-file)"
    return text


__all__ = [
    "Outgoing",
    "PublishError",
    "delta_publication",
    "diff",
    "load_signing_key",
    "publish",
    "read_allowlist",
    "read_delta",
    "signed_command",
    "signed_publication",
    "signing_key_id",
    "snapshot_publication",
]
