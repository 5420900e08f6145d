"""Signed central -> gate messages: Ed25519 keys, the signed envelope, allow-list publications
and commands, and the gate's guard against expired or replayed commands. Pure apart from the
key-file readers; no clock reads (callers pass ``now_ns``).

Envelope (msgpack map)::

    {v: 1, kind: str, key_id: str, body: bytes, sig: bytes}

``sig`` is the Ed25519 signature of ``b"edgegate-signed-v1\\0" + kind + b"\\0" + body``: the
kind is signed, so an allow-list publication cannot be replayed as a command, nor one kind of
message read as another. ``key_id`` only picks the key among those a gate trusts.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgpack
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgegate.allowlist.importer import Delta
from edgegate.core import credential_codec as codec
from edgegate.core.domain import Credential, CredentialKind
from edgegate.sync.protocol import INT64_MAX, ProtocolError, check_id

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
    try:
        doc = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_SIGNED_BODY,
            max_str_len=256,
            max_array_len=16,
            max_map_len=8,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SignatureError(
            "malformed", f"not a signed envelope: not valid msgpack ({exc})"
        ) from exc
    if type(doc) is not dict:
        raise SignatureError("malformed", "not a signed envelope: not a msgpack map")
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


def _int(value: object, field: str, lo: int, hi: int = INT64_MAX) -> int:
    if type(value) is not int:
        raise ProtocolError(f"{field}: expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ProtocolError(f"{field}: {value} is outside {lo}..{hi}")
    return value


def _str(value: object, field: str, max_len: int, *, empty: bool = False) -> str:
    if type(value) is not str:
        raise ProtocolError(f"{field}: expected a string, got {type(value).__name__}")
    if not empty and not value.strip():
        raise ProtocolError(f"{field}: must not be empty")
    if len(value) > max_len:
        raise ProtocolError(f"{field}: {len(value)} characters, at most {max_len} allowed")
    return value


def _unpack_map(
    body: bytes, what: str, keys: frozenset[str], *, max_bin_len: int = 0
) -> dict[str, Any]:
    try:
        doc = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_bin_len,
            max_str_len=4096,
            max_array_len=0,
            max_map_len=16,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"{what}: not valid msgpack ({exc})") from exc
    if type(doc) is not dict:
        raise ProtocolError(f"{what}: expected a msgpack map")
    missing = keys - doc.keys()
    if missing:
        raise ProtocolError(f"{what}: missing {', '.join(sorted(missing))}")
    extra = doc.keys() - keys
    if extra:
        raise ProtocolError(f"{what}: unknown field {', '.join(sorted(map(repr, extra)))}")
    return doc


# ------------------------------------------------------------------------------ allow-list

PublicationKind = Literal["snapshot", "delta"]
Disposition = Literal["apply", "stale", "gap"]

_KIND_VALUES = {k.value: k for k in CredentialKind}
_PUBLICATION_KEYS = frozenset({"kind", "version", "base_version", "issued_at_ns", "content"})


@dataclass(frozen=True, slots=True)
class AllowListPublication:
    """A versioned allow-list update from central (the body of a ``allowlist`` envelope).

    ``content`` holds credentials in ``edgegate.core.credential_codec``'s encoding:

    - snapshot: a msgpack array of credential encodings (a codec ``group``, any length);
      see ``encode_snapshot_content`` / ``snapshot_entries``.
    - delta: a msgpack map ``{"upsert": bin(snapshot-style array), "remove": [[kind, id],
      ...]}``; see ``encode_delta_content`` / ``delta_changes``.

    A delta applies only on ``base_version`` and yields ``version``; a snapshot has no base.
    """

    kind: PublicationKind
    version: int
    base_version: int | None
    issued_at_ns: int
    content: bytes

    def __post_init__(self) -> None:
        if self.kind not in ("snapshot", "delta"):
            raise ProtocolError(f"kind: expected 'snapshot' or 'delta', got {self.kind!r}")
        _int(self.version, "version", 1)
        if self.kind == "snapshot":
            if self.base_version is not None:
                raise ProtocolError("base_version: a snapshot has none")
        else:
            if self.base_version is None:
                raise ProtocolError("base_version: a delta needs the version it applies on")
            _int(self.base_version, "base_version", 0, self.version - 1)
        _int(self.issued_at_ns, "issued_at_ns", 0)
        if type(self.content) is not bytes:
            raise ProtocolError(f"content: expected bytes, got {type(self.content).__name__}")

    def disposition(self, current_version: int) -> Disposition:
        """What a gate at ``current_version`` does with this: ``apply`` it, refuse it as
        ``stale`` (not newer than what it has), or ask for a snapshot (``gap``: a delta not
        based on the gate's version)."""
        if self.version <= current_version:
            return "stale"
        if self.kind == "snapshot" or self.base_version == current_version:
            return "apply"
        return "gap"


def encode_publication(publication: AllowListPublication) -> bytes:
    p = publication
    return msgpack.Packer(use_bin_type=True).pack(
        {
            "kind": p.kind,
            "version": p.version,
            "base_version": p.base_version,
            "issued_at_ns": p.issued_at_ns,
            "content": p.content,
        }
    )


def decode_publication(body: bytes) -> AllowListPublication:
    """The publication in ``body`` (checked; the content is checked by ``snapshot_entries`` /
    ``delta_changes``), else ``ProtocolError``."""
    doc = _unpack_map(
        body, "allow-list publication", _PUBLICATION_KEYS, max_bin_len=MAX_SIGNED_BODY
    )
    kind = doc["kind"]
    if kind not in ("snapshot", "delta"):
        raise ProtocolError(f"kind: expected 'snapshot' or 'delta', got {kind!r}")
    return AllowListPublication(
        kind, doc["version"], doc["base_version"], doc["issued_at_ns"], doc["content"]
    )


_EMPTY_ARRAY = b"\x90"


def encode_snapshot_content(credentials: Iterable[Credential]) -> bytes:
    """The content of a snapshot (``CodecError`` for a credential the codec cannot encode)."""
    return codec.group([codec.encode(c) for c in credentials])


def snapshot_entries(content: bytes) -> list[Credential]:
    """The credentials of a snapshot's content, else ``ProtocolError``."""
    if content == _EMPTY_ARRAY:
        return []
    # A group is an array whose elements are arrays; is_group tells it from a lone credential.
    if len(content) < 2 or not (0x90 <= content[0] <= 0x9F or content[0] in (0xDC, 0xDD)):
        raise ProtocolError("content: expected an array of credentials")
    if not codec.is_group(content):
        raise ProtocolError("content: expected an array of credentials")
    try:
        return codec.decode_all(content)
    except codec.CodecError as exc:
        raise ProtocolError(f"content: {exc}") from exc


def encode_delta_content(
    upserts: Iterable[Credential], removals: Iterable[tuple[CredentialKind, str]]
) -> bytes:
    """The content of a delta."""
    return msgpack.Packer(use_bin_type=True).pack(
        {
            "upsert": encode_snapshot_content(upserts),
            "remove": [[str(kind.value), id_] for kind, id_ in removals],
        }
    )


def delta_changes(content: bytes) -> Delta:
    """The upserts and removals of a delta's content (what ``AllowListService.apply_delta``
    takes), else ``ProtocolError``."""
    try:
        doc = msgpack.unpackb(
            content,
            raw=False,
            strict_map_key=True,
            max_map_len=2,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"delta content: not valid msgpack ({exc})") from exc
    if type(doc) is not dict or doc.keys() != {"upsert", "remove"}:
        raise ProtocolError('delta content: expected a map {"upsert": ..., "remove": [...]}')
    upsert, remove = doc["upsert"], doc["remove"]
    if type(upsert) is not bytes:
        raise ProtocolError("delta content: upsert is not bytes")
    if type(remove) is not list:
        raise ProtocolError("delta content: remove is not an array")
    removals: list[tuple[CredentialKind, str]] = []
    for i, item in enumerate(remove):
        if type(item) is not list or len(item) != 2:
            raise ProtocolError(f"delta content: remove[{i}] is not [kind, id]")
        kind = _KIND_VALUES.get(item[0]) if type(item[0]) is str else None
        if kind is None:
            raise ProtocolError(f"delta content: remove[{i}]: unknown kind {item[0]!r}")
        if type(item[1]) is not str or not item[1]:
            raise ProtocolError(f"delta content: remove[{i}]: id is not a non-empty string")
        removals.append((kind, item[1]))
    return Delta(snapshot_entries(upsert), removals)


# ------------------------------------------------------------------------------ commands

CommandAction = Literal[
    "open-lane", "open-lane-once", "release-lane", "incident-on", "incident-off"
]
_ACTIONS: dict[object, CommandAction] = {
    "open-lane": "open-lane",
    "open-lane-once": "open-lane-once",
    "release-lane": "release-lane",
    "incident-on": "incident-on",
    "incident-off": "incident-off",
}
LANE_ACTIONS: frozenset[CommandAction] = frozenset({"open-lane", "open-lane-once", "release-lane"})
"""Actions on one lane (the command names it); the others apply to the whole gate."""
_OPENING_ACTIONS = frozenset({"open-lane", "open-lane-once"})
MAX_COMMAND_LIFETIME_NS = 3600 * 10**9
"""The longest a command may stay valid (``expires_at_ns - issued_at_ns``)."""
_COMMAND_ID = re.compile(r"[0-9a-f]{32}")
_COMMAND_KEYS = frozenset(
    {"id", "gate", "action", "lane", "reason", "operator", "issued_at_ns", "expires_at_ns"}
)
_MAX_REASON = 500
_MAX_OPERATOR = 64


@dataclass(frozen=True, slots=True)
class SignedCommand:
    """An operator's command to one gate (the body of a ``command`` envelope).

    ``id``: 32 lowercase hex digits (a uuid4), unique. ``open-lane`` (open and hold),
    ``open-lane-once`` (open for one vehicle) and ``release-lane`` (end a hold) name a
    ``lane``; the two openings need a non-empty ``reason``; incident mode is gate-wide (no
    lane). Valid from ``issued_at_ns``
    until (excluding) ``expires_at_ns``, at most ``MAX_COMMAND_LIFETIME_NS`` later.
    """

    id: str
    gate: str
    action: CommandAction
    lane: str | None
    reason: str
    operator: str
    issued_at_ns: int
    expires_at_ns: int

    def __post_init__(self) -> None:
        if type(self.id) is not str or not _COMMAND_ID.fullmatch(self.id):
            raise ProtocolError(f"id: {self.id!r} is not 32 lowercase hex digits")
        check_id(self.gate, "gate")
        if not isinstance(self.action, str) or self.action not in _ACTIONS:
            raise ProtocolError(
                f"action: {self.action!r} is not one of {', '.join(map(repr, _ACTIONS))}"
            )
        if self.action in LANE_ACTIONS:
            if self.lane is None:
                raise ProtocolError(f"lane: {self.action} needs the lane it acts on")
            check_id(self.lane, "lane")
            _str(self.reason, "reason", _MAX_REASON, empty=self.action not in _OPENING_ACTIONS)
        else:
            if self.lane is not None:
                raise ProtocolError(f"lane: {self.action} applies to the whole gate, not a lane")
            _str(self.reason, "reason", _MAX_REASON, empty=True)
        _str(self.operator, "operator", _MAX_OPERATOR)
        issued = _int(self.issued_at_ns, "issued_at_ns", 0)
        expires = _int(self.expires_at_ns, "expires_at_ns", 0)
        if expires <= issued:
            raise ProtocolError("expires_at_ns: not after issued_at_ns")
        if expires - issued > MAX_COMMAND_LIFETIME_NS:
            raise ProtocolError(
                f"expires_at_ns: lifetime {(expires - issued) / 1e9:.0f} s exceeds "
                f"{MAX_COMMAND_LIFETIME_NS // 10**9} s"
            )

    @classmethod
    def create(
        cls,
        gate: str,
        action: CommandAction,
        *,
        lane: str | None = None,
        reason: str = "",
        operator: str,
        now_ns: int,
        lifetime_ns: int = 300 * 10**9,
    ) -> SignedCommand:
        """A new command with a fresh uuid4 id, valid from ``now_ns`` for ``lifetime_ns``."""
        return cls(
            uuid.uuid4().hex, gate, action, lane, reason, operator, now_ns, now_ns + lifetime_ns
        )


def encode_command(command: SignedCommand) -> bytes:
    c = command
    return msgpack.Packer(use_bin_type=True).pack(
        {
            "id": c.id,
            "gate": c.gate,
            "action": c.action,
            "lane": c.lane,
            "reason": c.reason,
            "operator": c.operator,
            "issued_at_ns": c.issued_at_ns,
            "expires_at_ns": c.expires_at_ns,
        }
    )


def decode_command(body: bytes) -> SignedCommand:
    """The command in ``body`` (checked), else ``ProtocolError``."""
    doc = _unpack_map(body, "command", _COMMAND_KEYS)
    action = _ACTIONS.get(doc["action"]) if type(doc["action"]) is str else None
    if action is None:
        raise ProtocolError(
            f"action: {doc['action']!r} is not one of {', '.join(map(repr, _ACTIONS))}"
        )
    return SignedCommand(
        doc["id"],
        doc["gate"],
        action,
        doc["lane"],
        doc["reason"],
        doc["operator"],
        doc["issued_at_ns"],
        doc["expires_at_ns"],
    )


RefusalCode = Literal[
    "unsigned", "forged", "expired", "replayed", "wrong-gate", "malformed", "not-yet-valid"
]
_SIGNATURE_REFUSALS: dict[SignatureCode, RefusalCode] = {
    "malformed": "malformed",
    "unsigned": "unsigned",
    "wrong-kind": "malformed",
    "unknown-key": "forged",
    "forged": "forged",
}


class CommandRefused(Exception):
    """A command the gate will not carry out; ``code`` is the short reason for the log."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: RefusalCode = code
        self.message = message

    @classmethod
    def from_error(cls, error: ProtocolError) -> CommandRefused:
        """The refusal for a payload that failed to open or decode: unknown-key counts as
        ``forged``, a wrong kind or a bad body as ``malformed``."""
        code = _SIGNATURE_REFUSALS[error.code] if isinstance(error, SignatureError) else "malformed"
        return cls(code, str(error))


DEFAULT_SKEW_NS = 30 * 10**9


class CommandGuard:
    """Refuses commands for another gate, expired, issued in the future (beyond ``skew_ns``
    of clock difference) or already seen. Pure: the caller passes ``now_ns``.

    Ids are remembered until their command's expiry plus ``skew_ns``, then forgotten; a
    command whose expiry is at or before the latest time forgotten up to is refused as
    expired, so a clock stepping back cannot make a forgotten id acceptable again. Memory is
    bounded by the commands issued within one lifetime. The memory does not survive a
    restart: the gate rebuilds it with ``remember`` from the commands in its log.
    """

    __slots__ = ("_by_expiry", "_horizon_ns", "_seen", "skew_ns")

    def __init__(self, *, skew_ns: int = DEFAULT_SKEW_NS) -> None:
        self.skew_ns = skew_ns
        self._seen: dict[str, int] = {}
        self._by_expiry: list[tuple[int, str]] = []
        self._horizon_ns = -1  # every id expiring at or before this has been forgotten

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, command: SignedCommand, gate_id: str, now_ns: int) -> None:
        """Accept ``command`` (and remember its id) or raise ``CommandRefused``."""
        self._prune(now_ns)
        if command.gate != gate_id:
            raise CommandRefused(
                "wrong-gate", f"command {command.id} is for gate {command.gate!r}, not {gate_id!r}"
            )
        if now_ns >= command.expires_at_ns:
            ago = (now_ns - command.expires_at_ns) / 1e9
            raise CommandRefused(
                "expired", f"command {command.id} expired {ago:.1f} s ago by this gate's clock"
            )
        if command.expires_at_ns <= self._horizon_ns:
            # The gate's clock stepped back: ids expiring this early are already forgotten.
            raise CommandRefused(
                "expired",
                f"command {command.id} expires before commands this gate no longer remembers "
                "(its clock stepped back)",
            )
        if command.issued_at_ns > now_ns + self.skew_ns:
            ahead = (command.issued_at_ns - now_ns) / 1e9
            raise CommandRefused(
                "not-yet-valid",
                f"command {command.id} issued {ahead:.1f} s in the future by this gate's clock "
                f"(allowed skew {self.skew_ns / 1e9:.0f} s)",
            )
        if command.id in self._seen:
            raise CommandRefused("replayed", f"command {command.id} was already received")
        self.remember(command.id, command.expires_at_ns)

    def remember(self, command_id: str, expires_at_ns: int) -> None:
        """Count ``command_id`` as seen (a command accepted, or read back from the log)."""
        if command_id not in self._seen and expires_at_ns > self._horizon_ns:
            self._seen[command_id] = expires_at_ns
            heapq.heappush(self._by_expiry, (expires_at_ns, command_id))

    def accept(
        self,
        payload: bytes,
        public_key: Ed25519PublicKey | Iterable[Ed25519PublicKey],
        gate_id: str,
        now_ns: int,
    ) -> SignedCommand:
        """Open, decode and check a ``commands`` payload; every refusal is ``CommandRefused``."""
        try:
            command = decode_command(open_signed(payload, KIND_COMMAND, public_key))
        except ProtocolError as exc:
            raise CommandRefused.from_error(exc) from exc
        self.check(command, gate_id, now_ns)
        return command

    def _prune(self, now_ns: int) -> None:
        horizon = now_ns - self.skew_ns
        if horizon <= self._horizon_ns:
            return
        self._horizon_ns = horizon
        heap = self._by_expiry
        while heap and heap[0][0] <= horizon:
            _, command_id = heapq.heappop(heap)
            del self._seen[command_id]
