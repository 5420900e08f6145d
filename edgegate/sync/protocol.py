"""The MQTT wire format between a gate and central: topics and msgpack payloads. Pure: no I/O.
One module (over 600 lines) because the payloads share their field checks and are read as
one specification.

Topics live under ``edgegate/v1/{site}/{gate}/``::

    events     gate -> central   EventBatch, QoS 1
    ack        central -> gate   Ack: highest seq stored durably (and where to resend from)
    status     gate -> central   Status, retained, last will = the same with state "offline"
    allowlist  central -> gate   signed AllowListPublication (see ``signing``)
    commands   central -> gate   signed SignedCommand (see ``signing``)
    requests   gate -> central   SnapshotRequest, ParkResendRequest

and one per site, ``edgegate/v1/{site}/park`` (central -> the site's gates: the signed park
chain, see ``edgegate.sync.park``).

Every decoder validates the whole payload and raises ``ProtocolError`` (a ``ValueError``) with
a message naming the field or seq that is wrong; nothing else escapes on malformed input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import msgpack

from edgegate.log.chain import Row

TOPIC_ROOT = "edgegate/v1"
TopicKind = Literal["events", "ack", "status", "allowlist", "commands", "requests"]
TOPIC_KINDS: tuple[TopicKind, ...] = (
    "events",
    "ack",
    "status",
    "allowlist",
    "commands",
    "requests",
)
_KINDS: dict[str, TopicKind] = {k: k for k in TOPIC_KINDS}

MAX_ID_LEN = 64
"""Longest site, gate or shared-subscription group id (characters)."""
MAX_BATCH_EVENTS = 10_000
"""Most events one batch may carry (a decoder's default limit)."""
MAX_EVENT_DATA = 1 << 20
"""Largest ``data`` of one event (bytes)."""
HASH_LEN = 32
INT64_MAX = (1 << 63) - 1
"""SQLite's integers are signed 64-bit: no wire integer may exceed this."""

_T = TypeVar("_T")
_MAX_EVENT_TEXT = 1024  # boot_id, type, lane
_MAX_REASON = 256


class ProtocolError(ValueError):
    """A malformed payload or topic; the message names what is wrong."""


# ------------------------------------------------------------------------------ ids, topics


def check_id(value: object, what: str) -> str:
    """``value`` if it is a usable site/gate/group id: a non-empty string of at most 64
    characters without ``/``, ``+``, ``#`` or control characters (MQTT topic level rules)."""
    if type(value) is not str:
        raise ProtocolError(f"{what}: expected a string, got {_describe(value)}")
    if not value:
        raise ProtocolError(f"{what}: must not be empty")
    if len(value) > MAX_ID_LEN:
        raise ProtocolError(f"{what}: {len(value)} characters, at most {MAX_ID_LEN} allowed")
    for c in value:
        if c in "/+#" or c < " " or c == "\x7f":
            raise ProtocolError(f"{what}: {value!r} contains {c!r}, not allowed in a topic level")
    return value


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one gate. Raises ``ProtocolError`` for an unusable site or gate id."""

    site: str
    gate: str

    def __post_init__(self) -> None:
        check_id(self.site, "site")
        check_id(self.gate, "gate")

    def _topic(self, kind: TopicKind) -> str:
        return f"{TOPIC_ROOT}/{self.site}/{self.gate}/{kind}"

    @property
    def events(self) -> str:
        return self._topic("events")

    @property
    def ack(self) -> str:
        return self._topic("ack")

    @property
    def status(self) -> str:
        return self._topic("status")

    @property
    def allowlist(self) -> str:
        return self._topic("allowlist")

    @property
    def commands(self) -> str:
        return self._topic("commands")

    @property
    def requests(self) -> str:
        return self._topic("requests")

    @staticmethod
    def central_filter(kind: TopicKind, group: str | None = None) -> str:
        """Central's filter for ``kind`` from every gate of every site, as an MQTT 5 shared
        subscription ``$share/{group}/...`` when ``group`` is given (the sink instances of one
        group share the messages)."""
        if kind not in _KINDS:
            raise ProtocolError(f"unknown topic kind {kind!r}")
        plain = f"{TOPIC_ROOT}/+/+/{kind}"
        return plain if group is None else f"$share/{check_id(group, 'group')}/{plain}"

    @staticmethod
    def shared_events(group: str) -> str:
        return Topics.central_filter("events", group)

    @staticmethod
    def shared_requests(group: str) -> str:
        return Topics.central_filter("requests", group)

    @staticmethod
    def shared_status(group: str) -> str:
        """Note: brokers do not deliver retained messages to a new shared subscription; a
        consumer that needs every gate's last status on start subscribes to
        ``central_filter("status")`` without a group."""
        return Topics.central_filter("status", group)


def parse_topic(topic: str) -> tuple[str, str, TopicKind]:
    """``(site, gate, kind)`` of a concrete edgegate topic, else ``ProtocolError``."""
    if type(topic) is not str:
        raise ProtocolError(f"topic: expected a string, got {_describe(topic)}")
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        raise ProtocolError(f"topic {topic!r} is not {TOPIC_ROOT}/{{site}}/{{gate}}/{{kind}}")
    site = check_id(parts[2], f"topic {topic!r}: site")
    gate = check_id(parts[3], f"topic {topic!r}: gate")
    kind = _KINDS.get(parts[4])
    if kind is None:
        raise ProtocolError(f"topic {topic!r}: unknown kind {parts[4]!r}")
    return site, gate, kind


# ------------------------------------------------------------------------------ event batches


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Events ``from_seq..to_seq`` (contiguous) of a gate, as stored rows; ``prev_hash`` is the
    hash the first event chains from. Built unchecked: ``decode_batch`` does the checking."""

    gate: str
    from_seq: int
    to_seq: int
    prev_hash: bytes
    events: tuple[Row, ...]

    @classmethod
    def of(cls, gate: str, rows: Sequence[Row]) -> EventBatch:
        """The batch of consecutive stored ``rows`` (at least one)."""
        if not rows:
            raise ProtocolError("a batch needs at least one event")
        return cls(gate, rows[0][0], rows[-1][0], rows[0][8], tuple(rows))


class DecodedEvents(tuple[Row, ...]):
    """The events of a batch that ``decode_batch`` checked (only it makes these).

    A plain tuple otherwise; the type tells a consumer such as the central store that every
    field already has its type and range, the seqs are contiguous from at least 1 and each
    ``prev_hash`` links to the previous event's hash, so it need not check them again. Text
    may still contain NUL characters (the wire allows them). Event hashes are NOT proven.
    """

    __slots__ = ()


_BATCH_KEYS = frozenset({"gate", "from_seq", "to_seq", "prev_hash", "events"})


def encode_batch(batch: EventBatch) -> bytes:
    """The msgpack map ``{gate, from_seq, to_seq, prev_hash, events}``, each event the array
    of its row. Checks only what is O(1) (count and end seqs); the receiver checks the rest."""
    events = batch.events
    n = len(events)
    if n == 0:
        raise ProtocolError("a batch needs at least one event")
    if n > MAX_BATCH_EVENTS:
        raise ProtocolError(f"batch of {n} events, at most {MAX_BATCH_EVENTS} allowed")
    if (
        batch.to_seq - batch.from_seq + 1 != n
        or events[0][0] != batch.from_seq
        or events[-1][0] != batch.to_seq
    ):
        raise ProtocolError(
            f"batch seq {batch.from_seq}..{batch.to_seq} does not match its {n} events "
            f"(seq {events[0][0]}..{events[-1][0]})"
        )
    doc = {
        "gate": batch.gate,
        "from_seq": batch.from_seq,
        "to_seq": batch.to_seq,
        "prev_hash": batch.prev_hash,
        "events": events,
    }
    try:
        # A Packer per call: module-level ones are not thread-safe. Tuples pack as arrays.
        return msgpack.Packer(use_bin_type=True).pack(doc)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode batch: {exc}") from exc


def decode_batch(payload: bytes, *, max_events: int = MAX_BATCH_EVENTS) -> EventBatch:
    """The batch in ``payload``, fully checked: field types and ranges, 32-byte hashes, seqs
    contiguous ``from_seq..to_seq``, the first event chaining from ``prev_hash`` and each
    next one from the previous event's hash, at most ``max_events`` events.

    It does not recompute event hashes (that needs the gate id and is ``ChainVerifier``'s
    job, which central runs on what it stores). The events come as ``DecodedEvents``.
    """
    doc = _unpack(
        payload,
        "event batch",
        use_list=False,
        max_bin_len=max(MAX_EVENT_DATA, HASH_LEN),
        max_str_len=_MAX_EVENT_TEXT,
        max_array_len=max(max_events, 10),
        max_map_len=16,
    )
    _check_keys(doc, "event batch", _BATCH_KEYS)
    gate = check_id(doc["gate"], "gate")
    from_seq = _int(doc["from_seq"], "from_seq", 1)
    to_seq = _int(doc["to_seq"], "to_seq", from_seq)
    prev_hash = _hash(doc["prev_hash"], "prev_hash")
    events = doc["events"]
    if type(events) is not tuple:
        raise ProtocolError(f"events: expected an array, got {_describe(events)}")
    n = len(events)
    if n == 0:
        raise ProtocolError("events: empty (a batch carries at least one event)")
    if n > max_events:
        raise ProtocolError(f"events: {n} events, at most {max_events} allowed")
    if n != to_seq - from_seq + 1:
        raise ProtocolError(
            f"events: {n} events for seq {from_seq}..{to_seq} ({to_seq - from_seq + 1} expected)"
        )
    _check_events(events, from_seq, prev_hash)
    return EventBatch(gate, from_seq, to_seq, prev_hash, DecodedEvents(events))


def _check_events(events: tuple[Any, ...], seq: int, prev: bytes) -> None:
    # Hot loop (a million events per sync): one combined test per event, and only on failure
    # the slow search for the field to name. `p == prev` also checks p's type and length.
    i64 = INT64_MAX
    max_data = MAX_EVENT_DATA
    for i, ev in enumerate(events):
        if type(ev) is not tuple or len(ev) != 10:
            raise ProtocolError(
                f"events[{i}]: expected an array of 10 fields "
                "(seq, wall_ns, mono_ns, boot_id, type, lane, version, data, prev_hash, hash), "
                f"got {_describe(ev)}"
            )
        s, wall, mono, boot, typ, lane, version, data, p, h = ev
        if not (
            s == seq
            and type(s) is int
            and p == prev
            and type(wall) is int
            and wall <= i64
            and type(mono) is int
            and mono <= i64
            and type(boot) is str
            and type(typ) is str
            and typ
            and (lane is None or type(lane) is str)
            and type(version) is int
            and 0 <= version <= i64
            and type(data) is bytes
            and len(data) <= max_data
            and type(h) is bytes
            and len(h) == HASH_LEN
        ):
            raise ProtocolError(_event_problem(i, ev, seq, prev))
        prev = h
        seq += 1


def _event_problem(i: int, ev: tuple[Any, ...], seq: int, prev: bytes) -> str:
    s, wall, mono, boot, typ, lane, version, data, p, h = ev
    where = f"events[{i}] (seq {seq})"
    if type(s) is not int:
        return f"events[{i}].seq: expected an integer, got {_describe(s)}"
    if s != seq:
        return f"events[{i}]: seq {s}, expected {seq} (seqs must be contiguous)"
    checks: list[tuple[str, str | None]] = [
        ("wall_ns", _int_problem(wall, -INT64_MAX - 1)),
        ("mono_ns", _int_problem(mono, -INT64_MAX - 1)),
        ("boot_id", None if type(boot) is str else f"expected a string, got {_describe(boot)}"),
        ("type", _type_problem(typ)),
        (
            "lane",
            None
            if lane is None or type(lane) is str
            else f"expected a string or nil, got {_describe(lane)}",
        ),
        ("version", _int_problem(version, 0)),
        ("data", _data_problem(data)),
        ("prev_hash", _hash_problem(p)),
        ("hash", _hash_problem(h)),
    ]
    for name, problem in checks:
        if problem is not None:
            return f"{where}.{name}: {problem}"
    first = "the batch's prev_hash" if i == 0 else f"the hash of seq {seq - 1}"
    if p != prev:
        return f"{where}.prev_hash: does not match {first}"
    return f"{where}: invalid event"  # unreachable: every failing condition is named above


def _type_problem(value: object) -> str | None:
    if type(value) is not str:
        return f"expected a string, got {_describe(value)}"
    return None if value else "must not be empty"


def _data_problem(value: object) -> str | None:
    if type(value) is not bytes:
        return f"expected bytes, got {_describe(value)}"
    if len(value) > MAX_EVENT_DATA:
        return f"{len(value)} bytes, at most {MAX_EVENT_DATA} allowed"
    return None


def _hash_problem(value: object) -> str | None:
    if type(value) is not bytes:
        return f"expected {HASH_LEN} bytes, got {_describe(value)}"
    if len(value) != HASH_LEN:
        return f"expected {HASH_LEN} bytes, got {len(value)}"
    return None


# ------------------------------------------------------------------------------ ack


@dataclass(frozen=True, slots=True)
class Ack:
    """Central -> gate: ``seq`` is the highest seq central has stored durably with every seq
    before it; ``resend_from`` (at most ``seq + 1``) asks the gate to send again from there,
    set when central saw a gap."""

    gate: str
    seq: int
    resend_from: int | None = None

    def __post_init__(self) -> None:
        check_id(self.gate, "gate")
        _int(self.seq, "seq", 0)
        if self.resend_from is not None:
            _int(self.resend_from, "resend_from", 1, self.seq + 1)


def encode_ack(ack: Ack) -> bytes:
    return _pack({"gate": ack.gate, "seq": ack.seq, "resend_from": ack.resend_from})


def decode_ack(payload: bytes) -> Ack:
    doc = _unpack_small(payload, "ack")
    _check_keys(doc, "ack", frozenset({"gate", "seq"}), frozenset({"resend_from"}))
    return _build(Ack, doc["gate"], doc["seq"], doc.get("resend_from"))


# ------------------------------------------------------------------------------ status

StatusState = Literal["online", "offline"]
_STATES: dict[object, StatusState] = {"online": "online", "offline": "offline"}


@dataclass(frozen=True, slots=True)
class Status:
    """Gate -> central, retained. ``head_seq`` is the last seq in the gate's log,
    ``synced_seq`` the last acknowledged by central, ``at_ns`` wall-clock time (UTC, ns)."""

    gate: str
    state: StatusState
    head_seq: int
    synced_seq: int
    allowlist_version: int
    at_ns: int

    def __post_init__(self) -> None:
        check_id(self.gate, "gate")
        if not isinstance(self.state, str) or self.state not in _STATES:
            raise ProtocolError(f"state: expected 'online' or 'offline', got {self.state!r}")
        _int(self.head_seq, "head_seq", 0)
        _int(self.synced_seq, "synced_seq", 0, self.head_seq)
        _int(self.allowlist_version, "allowlist_version", 0)
        _int(self.at_ns, "at_ns", 0)

    def offline(self) -> Status:
        """This status as the last will: the same figures, state ``offline``."""
        return replace(self, state="offline")


_STATUS_KEYS = frozenset({"gate", "state", "head_seq", "synced_seq", "allowlist_version", "at_ns"})


def encode_status(status: Status) -> bytes:
    return _pack(
        {
            "gate": status.gate,
            "state": status.state,
            "head_seq": status.head_seq,
            "synced_seq": status.synced_seq,
            "allowlist_version": status.allowlist_version,
            "at_ns": status.at_ns,
        }
    )


def decode_status(payload: bytes) -> Status:
    doc = _unpack_small(payload, "status")
    _check_keys(doc, "status", _STATUS_KEYS)
    state = _STATES.get(doc["state"]) if isinstance(doc["state"], str) else None
    if state is None:
        raise ProtocolError(f"state: expected 'online' or 'offline', got {doc['state']!r}")
    return _build(
        Status,
        doc["gate"],
        state,
        doc["head_seq"],
        doc["synced_seq"],
        doc["allowlist_version"],
        doc["at_ns"],
    )


# ------------------------------------------------------------------------------ requests


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Gate -> central: send me a full allow-list snapshot. ``have_version`` is the gate's
    current version, ``reason`` a short text (e.g. ``version gap: have 4, delta 6->7``)."""

    gate: str
    have_version: int
    reason: str

    def __post_init__(self) -> None:
        check_id(self.gate, "gate")
        _int(self.have_version, "have_version", 0)
        _text(self.reason, "reason", _MAX_REASON)


@dataclass(frozen=True, slots=True)
class ParkResendRequest:
    """Gate -> central: publish the site's park messages again from ``from_seq`` (a gap, or
    a restart: ``since_ns`` asks also for every kept message recorded since then, to
    rebuild the gate's memory of vehicles inside; 0: none)."""

    gate: str
    from_seq: int
    since_ns: int
    reason: str

    def __post_init__(self) -> None:
        check_id(self.gate, "gate")
        _int(self.from_seq, "from_seq", 1)
        _int(self.since_ns, "since_ns", 0)
        _text(self.reason, "reason", _MAX_REASON)


Request = SnapshotRequest | ParkResendRequest
"""Every gate -> central request (the map's ``type`` tells them apart)."""

_REQUEST_KEYS = frozenset({"type", "gate", "have_version", "reason"})
_PARK_REQUEST_KEYS = frozenset({"type", "gate", "from_seq", "since_ns", "reason"})


def encode_request(request: Request) -> bytes:
    if isinstance(request, ParkResendRequest):
        return _pack(
            {
                "type": "park-resend",
                "gate": request.gate,
                "from_seq": request.from_seq,
                "since_ns": request.since_ns,
                "reason": request.reason,
            }
        )
    return _pack(
        {
            "type": "snapshot",
            "gate": request.gate,
            "have_version": request.have_version,
            "reason": request.reason,
        }
    )


def decode_request(payload: bytes) -> Request:
    doc = _unpack_small(payload, "request")
    kind = doc.get("type")
    if kind == "park-resend":
        _check_keys(doc, "park resend request", _PARK_REQUEST_KEYS)
        return _build(
            ParkResendRequest, doc["gate"], doc["from_seq"], doc["since_ns"], doc["reason"]
        )
    if kind != "snapshot":
        raise ProtocolError(f"request: unknown type {kind!r} (known: 'snapshot', 'park-resend')")
    _check_keys(doc, "snapshot request", _REQUEST_KEYS)
    return _build(SnapshotRequest, doc["gate"], doc["have_version"], doc["reason"])


# ------------------------------------------------------------------------------ helpers


def _describe(value: object) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, str):
        return f"string {value[:40]!r}" + ("…" if len(value) > 40 else "")
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    if isinstance(value, (tuple, list)):
        return f"an array of {len(value)}"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


def _int_problem(value: object, lo: int, hi: int = INT64_MAX) -> str | None:
    if type(value) is not int:
        return f"expected an integer, got {_describe(value)}"
    if value < lo:
        return f"{value} is below {lo}"
    if value > hi:
        return f"{value} is above {hi}"
    return None


def _int(value: object, field: str, lo: int, hi: int = INT64_MAX) -> int:
    problem = _int_problem(value, lo, hi)
    if problem is not None:
        raise ProtocolError(f"{field}: {problem}")
    assert type(value) is int
    return value


def _hash(value: object, field: str) -> bytes:
    problem = _hash_problem(value)
    if problem is not None:
        raise ProtocolError(f"{field}: {problem}")
    assert type(value) is bytes
    return value


def _text(value: object, field: str, max_len: int) -> str:
    if type(value) is not str:
        raise ProtocolError(f"{field}: expected a string, got {_describe(value)}")
    if not value.strip():
        raise ProtocolError(f"{field}: must not be empty")
    if len(value) > max_len:
        raise ProtocolError(f"{field}: {len(value)} characters, at most {max_len} allowed")
    return value


def _pack(doc: dict[str, Any]) -> bytes:
    try:
        return msgpack.Packer(use_bin_type=True).pack(doc)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode: {exc}") from exc


def _unpack(
    payload: bytes,
    what: str,
    *,
    use_list: bool,
    max_bin_len: int,
    max_str_len: int,
    max_array_len: int,
    max_map_len: int,
) -> dict[str, Any]:
    """The msgpack map in ``payload`` (exactly one value), within the given limits."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{what}: expected bytes, got {_describe(payload)}")
    return load_map(
        payload,
        lambda exc: ProtocolError(f"{what}: not valid msgpack: {exc}"),
        lambda doc: ProtocolError(f"{what}: expected a msgpack map, got {_describe(doc)}"),
        use_list=use_list,
        max_bin_len=max_bin_len,
        max_str_len=max_str_len,
        max_array_len=max_array_len,
        max_map_len=max_map_len,
    )


def load_map(
    data: bytes,
    invalid: Callable[[Exception], Exception],
    not_a_map: Callable[[object], Exception],
    *,
    use_list: bool = True,
    max_bin_len: int,
    max_str_len: int,
    max_array_len: int,
    max_map_len: int,
) -> dict[Any, Any]:
    """The one msgpack map in ``data`` within msgpack's length limits (no ext types); else
    ``invalid(error)`` is raised (not msgpack, over a limit, trailing data), or
    ``not_a_map(value)`` for another value."""
    try:
        doc = msgpack.unpackb(
            data,
            raw=False,
            use_list=use_list,
            strict_map_key=True,
            max_bin_len=max_bin_len,
            max_str_len=max_str_len,
            max_array_len=max_array_len,
            max_map_len=max_map_len,
            max_ext_len=0,
        )
    # msgpack's format, limit, depth and trailing-data errors are ValueErrors (UTF-8 errors
    # too); an unhashable map key is a TypeError.
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise invalid(exc) from exc
    if type(doc) is not dict:
        raise not_a_map(doc)
    return doc


def _unpack_small(payload: bytes, what: str) -> dict[str, Any]:
    return _unpack(
        payload,
        what,
        use_list=True,
        max_bin_len=0,
        max_str_len=4 * _MAX_REASON,
        max_array_len=16,
        max_map_len=16,
    )


def _check_keys(
    doc: dict[str, Any], what: str, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> None:
    keys = doc.keys()
    missing = required - keys
    if missing:
        raise ProtocolError(f"{what}: missing {', '.join(sorted(missing))}")
    extra = keys - required - optional
    if extra:
        raise ProtocolError(f"{what}: unknown field {', '.join(sorted(map(repr, extra)))}")


def _build(cls: Callable[..., _T], *values: Any) -> _T:
    """``cls(*values)``; its ``__post_init__`` raises ``ProtocolError`` on bad values."""
    try:
        return cls(*values)
    except ProtocolError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. comparisons between unexpected types
        raise ProtocolError(str(exc)) from exc
