"""Signed central -> gate messages: the envelope and keys (:mod:`edgegate.sync.envelope`),
allow-list publications (here) and commands with the gate's guard against expired or
replayed ones (:mod:`edgegate.sync.commands`); every public name of the three imports from
here. Pure; no clock reads (callers pass ``now_ns``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import msgpack

from edgegate.allowlist.importer import Delta
from edgegate.core import credential_codec as codec
from edgegate.core.domain import Credential, CredentialKind
from edgegate.sync.commands import (
    DEFAULT_SKEW_NS,
    LANE_ACTIONS,
    MAX_COMMAND_LIFETIME_NS,
    CommandAction,
    CommandGuard,
    CommandRefused,
    RefusalCode,
    SignedCommand,
    decode_command,
    encode_command,
)
from edgegate.sync.envelope import (
    ENVELOPE_VERSION,
    KIND_ALLOWLIST,
    KIND_COMMAND,
    MAX_SIGNED_BODY,
    SIGNATURE_LEN,
    SIGNING_CONTEXT,
    KeyLoadError,
    SignatureCode,
    SignatureError,
    check_int,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    open_signed,
    pack_fields,
    public_pem,
    sign,
    unpack_map,
)
from edgegate.sync.protocol import ProtocolError

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
      ...]}`` and, in central's park-wide deltas only, ``"consume": [appointment id, ...]``
      (appointments another gate consumed), ``"inside": [[plate, gate, entered_at_ns],
      ...]`` (vehicles that entered at another gate) and ``"left": [plate, ...]``; see
      ``encode_delta_content`` / ``delta_changes``.

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
        check_int(self.version, "version", 1)
        if self.kind == "snapshot":
            if self.base_version is not None:
                raise ProtocolError("base_version: a snapshot has none")
        else:
            if self.base_version is None:
                raise ProtocolError("base_version: a delta needs the version it applies on")
            check_int(self.base_version, "base_version", 0, self.version - 1)
        check_int(self.issued_at_ns, "issued_at_ns", 0)
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
    return pack_fields(publication)


def decode_publication(body: bytes) -> AllowListPublication:
    """The publication in ``body`` (checked; the content is checked by ``snapshot_entries`` /
    ``delta_changes``), else ``ProtocolError``."""
    doc = unpack_map(body, "allow-list publication", _PUBLICATION_KEYS, max_bin_len=MAX_SIGNED_BODY)
    kind = doc["kind"]
    if kind not in ("snapshot", "delta"):
        raise ProtocolError(f"kind: expected 'snapshot' or 'delta', got {kind!r}")
    return AllowListPublication(
        kind, doc["version"], doc["base_version"], doc["issued_at_ns"], doc["content"]
    )


_EMPTY_ARRAY = b"\x90"
_DELTA_KEYS = frozenset({"upsert", "remove", "consume", "inside", "left"})


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
    upserts: Iterable[Credential],
    removals: Iterable[tuple[CredentialKind, str]],
    consumed: Iterable[str] = (),
    inside: Iterable[tuple[str, str, int]] = (),
    left: Iterable[str] = (),
) -> bytes:
    """The content of a delta (``consume``, ``inside``, ``left`` only when not empty: a
    delta without them is byte for byte what gates before park-wide consumption read)."""
    doc: dict[str, object] = {
        "upsert": encode_snapshot_content(upserts),
        "remove": [[str(kind.value), id_] for kind, id_ in removals],
    }
    for name, items in (
        ("consume", list(consumed)),
        ("inside", [list(i) for i in inside]),
        ("left", list(left)),
    ):
        if items:
            doc[name] = items
    return msgpack.Packer(use_bin_type=True).pack(doc)


def delta_changes(content: bytes) -> Delta:
    """The upserts and removals of a delta's content (what ``AllowListService.apply_delta``
    takes), else ``ProtocolError``."""
    try:
        doc = msgpack.unpackb(
            content,
            raw=False,
            strict_map_key=True,
            max_map_len=len(_DELTA_KEYS),
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"delta content: not valid msgpack ({exc})") from exc
    if type(doc) is not dict or not {"upsert", "remove"} <= doc.keys() <= _DELTA_KEYS:
        raise ProtocolError(
            'delta content: expected a map {"upsert": ..., "remove": [...]} (and "consume",'
            ' "inside", "left")'
        )
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
    consume = doc.get("consume", [])
    if type(consume) is not list or not all(type(i) is str and i for i in consume):
        raise ProtocolError("delta content: consume is not an array of appointment ids")
    left = doc.get("left", [])
    if type(left) is not list or not all(type(i) is str and i for i in left):
        raise ProtocolError("delta content: left is not an array of plates")
    inside: list[tuple[str, str, int]] = []
    raw_inside = doc.get("inside", [])
    if type(raw_inside) is not list:
        raise ProtocolError("delta content: inside is not an array")
    for i, item in enumerate(raw_inside):
        if (
            type(item) is not list
            or len(item) != 3
            or not all(type(x) is str and x for x in item[:2])
            or type(item[2]) is not int
            or not 0 <= item[2] < 2**63
        ):
            raise ProtocolError(f"delta content: inside[{i}] is not [plate, gate, entered_at_ns]")
        inside.append((item[0], item[1], item[2]))
    return Delta(snapshot_entries(upsert), removals, consume, inside, left)


__all__ = [
    "DEFAULT_SKEW_NS",
    "ENVELOPE_VERSION",
    "KIND_ALLOWLIST",
    "KIND_COMMAND",
    "LANE_ACTIONS",
    "MAX_COMMAND_LIFETIME_NS",
    "MAX_SIGNED_BODY",
    "SIGNATURE_LEN",
    "SIGNING_CONTEXT",
    "AllowListPublication",
    "CommandAction",
    "CommandGuard",
    "CommandRefused",
    "Disposition",
    "KeyLoadError",
    "PublicationKind",
    "RefusalCode",
    "SignatureCode",
    "SignatureError",
    "SignedCommand",
    "decode_command",
    "decode_publication",
    "delta_changes",
    "encode_command",
    "encode_delta_content",
    "encode_publication",
    "encode_snapshot_content",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "open_signed",
    "public_pem",
    "sign",
    "snapshot_entries",
]
