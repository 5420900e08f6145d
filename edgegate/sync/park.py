"""Central's park chain: one signed message per stored commit group per site, on the site's
``park`` topic (``edgegate/v1/{site}/park``), in a per-site sequence. Pure; no clock reads.

A park message says what happened at the site's gates: ``consume`` (appointments consumed
at a gate: one entry per appointment, park-wide; each with the gate that consumed it, which
the other gates log so a refusal can be explained), ``inside`` (plates whose latest movement
is an entry: ``[plate, gate, entered_at_ns]``) and ``left`` (plates that left). It is signed
by central's dedicated park key, with the envelope kind ``park``: a gate pins that key for
park messages only, so the key can never sign an allow-list snapshot, an upsert or a
command a gate would take (those are envelope kinds ``allowlist``/``command``, verified
against the central key only), and a park body holds no field that could carry one.

Body (msgpack map)::

    {site: str, seq: int >= 1, issued_at_ns: int, consume: [[id, gate], ...],
     inside: [[plate, gate, entered_at_ns], ...], left: [plate, ...]}

A ``consume`` item that is a bare id (messages recorded before the gate was carried, still
kept in central's outbox for resends) is taken, its gate unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgegate.sync.envelope import check_int, open_signed, sign
from edgegate.sync.protocol import TOPIC_ROOT, ProtocolError, check_id, load_map

KIND_PARK = "park"
MAX_ITEMS = 5000
"""Changes (consumed ids, inside marks, left plates) one park message carries at most."""
_KEYS = frozenset({"site", "seq", "issued_at_ns", "consume", "inside", "left"})
_MAX_TEXT = 256


def park_topic(site: str) -> str:
    """The site's park topic: central writes it, the site's gates read it."""
    return f"{TOPIC_ROOT}/{check_id(site, 'site')}/park"


@dataclass(frozen=True, slots=True)
class ParkMessage:
    """One park message of ``site``, number ``seq`` of its chain."""

    site: str
    seq: int
    issued_at_ns: int
    consume: Sequence[str] = field(default_factory=tuple)
    inside: Sequence[tuple[str, str, int]] = field(default_factory=tuple)
    left: Sequence[str] = field(default_factory=tuple)
    consumed_at: Mapping[str, str] = field(default_factory=dict)
    """The gate where each of ``consume`` was consumed (an id missing: not known)."""


def encode_park(message: ParkMessage) -> bytes:
    """The signed body of ``message``."""
    return msgpack.Packer(use_bin_type=True).pack(
        {
            "site": message.site,
            "seq": message.seq,
            "issued_at_ns": message.issued_at_ns,
            "consume": [
                [i, message.consumed_at[i]] if i in message.consumed_at else i
                for i in message.consume
            ],
            "inside": [list(i) for i in message.inside],
            "left": list(message.left),
        }
    )


def sign_park(message: ParkMessage, key: Ed25519PrivateKey) -> bytes:
    """The envelope of ``message`` signed with the park key."""
    return sign(KIND_PARK, encode_park(message), key)


def _strings(value: object, what: str) -> list[str]:
    if type(value) is not list:
        raise ProtocolError(f"park message: {what} is not an array")
    for i, item in enumerate(value):
        if type(item) is not str or not item or len(item) > _MAX_TEXT:
            raise ProtocolError(f"park message: {what}[{i}] is not a non-empty string")
    return list(value)


def decode_park(body: bytes) -> ParkMessage:
    """The park message in a verified body, else ``ProtocolError`` naming what is wrong
    (an unknown field, such as ``upsert``, is refused)."""
    doc = load_map(
        body,
        lambda exc: ProtocolError(f"park message: not valid msgpack ({exc})"),
        lambda _: ProtocolError("park message: expected a msgpack map"),
        max_bin_len=0,
        max_str_len=_MAX_TEXT,
        max_array_len=3 * MAX_ITEMS,
        max_map_len=len(_KEYS),
    )
    extra = doc.keys() - _KEYS
    if extra:
        raise ProtocolError(f"park message: unknown field {', '.join(sorted(map(repr, extra)))}")
    missing = _KEYS - doc.keys()
    if missing:
        raise ProtocolError(f"park message: missing {', '.join(sorted(missing))}")
    site = check_id(doc["site"], "park message: site")
    seq = check_int(doc["seq"], "park message: seq", 1)
    issued = check_int(doc["issued_at_ns"], "park message: issued_at_ns", 0)
    consume, consumed_at = _consumptions(doc["consume"])
    left = _strings(doc["left"], "left")
    raw_inside = doc["inside"]
    if type(raw_inside) is not list:
        raise ProtocolError("park message: inside is not an array")
    inside: list[tuple[str, str, int]] = []
    for i, item in enumerate(raw_inside):
        if (
            type(item) is not list
            or len(item) != 3
            or not all(type(x) is str and x for x in item[:2])
            or type(item[2]) is not int
            or not 0 <= item[2] < 2**63
        ):
            raise ProtocolError(f"park message: inside[{i}] is not [plate, gate, entered_at_ns]")
        inside.append((item[0], item[1], item[2]))
    return ParkMessage(site, seq, issued, tuple(consume), tuple(inside), tuple(left), consumed_at)


def _text(value: object) -> bool:
    return type(value) is str and bool(value) and len(value) <= _MAX_TEXT


def _consumptions(value: object) -> tuple[list[str], dict[str, str]]:
    if type(value) is not list:
        raise ProtocolError("park message: consume is not an array")
    ids: list[str] = []
    at: dict[str, str] = {}
    for i, item in enumerate(value):
        if _text(item):
            ids.append(item)
        elif type(item) is list and len(item) == 2 and all(map(_text, item)):
            ids.append(item[0])
            at[item[0]] = item[1]
        else:
            raise ProtocolError(f"park message: consume[{i}] is not [appointment, gate]")
    return ids, at


def open_park(payload: bytes, keys: Ed25519PublicKey | Iterable[Ed25519PublicKey]) -> ParkMessage:
    """The park message in a payload signed (kind ``park``) by one of ``keys``; else
    ``SignatureError`` (envelope, kind, key) or ``ProtocolError`` (body)."""
    return decode_park(open_signed(payload, KIND_PARK, keys))


__all__ = [
    "KIND_PARK",
    "MAX_ITEMS",
    "ParkMessage",
    "decode_park",
    "encode_park",
    "open_park",
    "park_topic",
    "sign_park",
]
