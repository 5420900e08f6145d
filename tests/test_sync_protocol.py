"""The sync wire format: topics, event batches, acks, status, requests."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgegate.log.chain import GENESIS_HASH, ChainVerifier, Row
from edgegate.sync.protocol import (
    INT64_MAX,
    MAX_BATCH_EVENTS,
    Ack,
    EventBatch,
    ProtocolError,
    SnapshotRequest,
    Status,
    Topics,
    decode_ack,
    decode_batch,
    decode_request,
    decode_status,
    encode_ack,
    encode_batch,
    encode_request,
    encode_status,
    parse_topic,
)
from tests.chains import hashed_row, make_chain

GATE = "fengxiang-road"


def batch_doc(rows: list[Row]) -> dict[str, Any]:
    return {
        "gate": GATE,
        "from_seq": rows[0][0],
        "to_seq": rows[-1][0],
        "prev_hash": rows[0][8],
        "events": [list(r) for r in rows],
    }


def pack(doc: object) -> bytes:
    return msgpack.packb(doc, use_bin_type=True)


# ------------------------------------------------------------------------------ topics


def test_topics_of_a_gate() -> None:
    t = Topics("chem-park", GATE)
    assert t.events == "edgegate/v1/chem-park/fengxiang-road/events"
    assert t.ack == "edgegate/v1/chem-park/fengxiang-road/ack"
    assert t.status == "edgegate/v1/chem-park/fengxiang-road/status"
    assert t.allowlist == "edgegate/v1/chem-park/fengxiang-road/allowlist"
    assert t.commands == "edgegate/v1/chem-park/fengxiang-road/commands"
    assert t.requests == "edgegate/v1/chem-park/fengxiang-road/requests"
    for topic in (t.events, t.ack, t.status, t.allowlist, t.commands, t.requests):
        site, gate, kind = parse_topic(topic)
        assert (site, gate) == ("chem-park", GATE)
        assert topic.endswith("/" + kind)


def test_central_filters() -> None:
    assert Topics.shared_events("sink") == "$share/sink/edgegate/v1/+/+/events"
    assert Topics.shared_requests("sink") == "$share/sink/edgegate/v1/+/+/requests"
    assert Topics.shared_status("sink") == "$share/sink/edgegate/v1/+/+/status"
    assert Topics.central_filter("status") == "edgegate/v1/+/+/status"
    with pytest.raises(ProtocolError, match="group"):
        Topics.shared_events("a/b")


@pytest.mark.parametrize(
    ("site", "gate", "problem"),
    [
        ("", GATE, "site: must not be empty"),
        ("chem/park", GATE, "site: .* contains '/'"),
        ("chem-park", "g+", "gate: .* contains '\\+'"),
        ("chem-park", "g#", "gate: .* contains '#'"),
        ("chem-park", "g\x00", "gate: .* contains"),
        ("chem-park", "g" * 65, "gate: 65 characters, at most 64"),
    ],
)
def test_topics_refuse_bad_ids(site: str, gate: str, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        Topics(site, gate)


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("edgegate/v1/chem-park/g1", "is not edgegate/v1/"),
        ("edgegate/v1/chem-park/g1/events/x", "is not edgegate/v1/"),
        ("edgegate/v2/chem-park/g1/events", "is not edgegate/v1/"),
        ("edgegate/v1/+/g1/events", "site: .* contains '\\+'"),
        ("edgegate/v1/chem-park//events", "gate: must not be empty"),
        ("edgegate/v1/chem-park/g1/secrets", "unknown kind 'secrets'"),
        ("$share/sink/edgegate/v1/+/+/events", "is not edgegate/v1/"),
    ],
)
def test_parse_topic_refuses(topic: str, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        parse_topic(topic)


# ------------------------------------------------------------------------------ batches


def test_batch_round_trip_and_chain_verifies() -> None:
    rows = make_chain(GATE, 50)
    batch = EventBatch.of(GATE, rows)
    decoded = decode_batch(encode_batch(batch))
    assert decoded == batch
    assert decoded.events == tuple(rows)
    assert all(type(e) is tuple for e in decoded.events)
    assert ChainVerifier(GATE).feed(decoded.events) is None


def test_batch_after_the_first_chains_from_its_predecessor() -> None:
    rows = make_chain(GATE, 30)
    first, second = EventBatch.of(GATE, rows[:10]), EventBatch.of(GATE, rows[10:])
    assert (second.from_seq, second.to_seq, second.prev_hash) == (11, 30, rows[9][9])
    verifier = ChainVerifier(GATE)
    for b in (first, second):
        assert verifier.feed(decode_batch(encode_batch(b)).events) is None
    assert verifier.last_seq == 30


def test_encode_refuses_inconsistent_batch() -> None:
    rows = make_chain(GATE, 5)
    with pytest.raises(ProtocolError, match="does not match its 5 events"):
        encode_batch(EventBatch(GATE, 1, 6, GENESIS_HASH, tuple(rows)))
    with pytest.raises(ProtocolError, match="at least one event"):
        encode_batch(EventBatch(GATE, 1, 0, GENESIS_HASH, ()))
    with pytest.raises(ProtocolError, match="at least one event"):
        EventBatch.of(GATE, [])


def _set(path: tuple[Any, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        del doc[key]

    return mutate


def _swap_events(doc: dict[str, Any]) -> None:
    ev = doc["events"]
    ev[1], ev[2] = ev[2], ev[1]


def _drop_event(doc: dict[str, Any]) -> None:
    del doc["events"][2]
    doc["to_seq"] -= 1


def _break_link(doc: dict[str, Any]) -> None:
    doc["events"][3][8] = bytes(32)


BAD_BATCHES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("missing field", _delete("prev_hash"), "event batch: missing prev_hash"),
    ("unknown field", _set(("extra",), 1), "event batch: unknown field 'extra'"),
    ("gate not str", _set(("gate",), 7), "gate: expected a string, got integer 7"),
    ("gate with slash", _set(("gate",), "a/b"), "gate: .* contains '/'"),
    ("from_seq zero", _set(("from_seq",), 0), "from_seq: 0 is below 1"),
    ("from_seq bool", _set(("from_seq",), True), "from_seq: expected an integer, got a boolean"),
    ("to_seq before from", _set(("to_seq",), 0), "to_seq: 0 is below 1"),
    ("prev_hash short", _set(("prev_hash",), b"\x00" * 31), "prev_hash: expected 32 bytes, got 31"),
    ("prev_hash str", _set(("prev_hash",), "00" * 32), "prev_hash: expected 32 bytes, got string"),
    ("events not array", _set(("events",), {"a": 1}), "events: expected an array, got a map"),
    ("events empty", _set(("events",), []), "events: empty"),
    ("count mismatch", _set(("to_seq",), 9), "events: 6 events for seq 1..9"),
    ("event not array", _set(("events", 2), 5), r"events\[2\]: expected an array of 10 fields"),
    (
        "event too short",
        _set(("events", 2), [3, 1, 2, "b", "t", None, 1, b"", bytes(32)]),
        r"events\[2\]: expected an array of 10 fields",
    ),
    ("seq out of order", _swap_events, r"events\[1\]: seq 3, expected 2"),
    ("seq gap", _drop_event, r"events\[2\]: seq 4, expected 3"),
    ("seq as str", _set(("events", 0, 0), "1"), r"events\[0\]\.seq: expected an integer"),
    ("wall_ns float", _set(("events", 1, 1), 1.5), r"events\[1\] \(seq 2\)\.wall_ns: expected an"),
    ("wall_ns > int64", _set(("events", 1, 1), INT64_MAX + 1), r"\(seq 2\)\.wall_ns: .* is above"),
    ("mono_ns nil", _set(("events", 4, 2), None), r"\(seq 5\)\.mono_ns: expected an integer"),
    ("boot_id bytes", _set(("events", 0, 3), b"b"), r"\(seq 1\)\.boot_id: expected a string"),
    ("type empty", _set(("events", 0, 4), ""), r"\(seq 1\)\.type: must not be empty"),
    ("lane int", _set(("events", 0, 5), 1), r"\(seq 1\)\.lane: expected a string or nil"),
    ("version negative", _set(("events", 0, 6), -1), r"\(seq 1\)\.version: -1 is below 0"),
    ("data str", _set(("events", 5, 7), "x"), r"\(seq 6\)\.data: expected bytes"),
    ("prev_hash 33", _set(("events", 3, 8), bytes(33)), r"\(seq 4\)\.prev_hash: expected 32 bytes"),
    ("hash short", _set(("events", 2, 9), b"\x01"), r"\(seq 3\)\.hash: expected 32 bytes, got 1"),
    ("broken link", _break_link, r"\(seq 4\)\.prev_hash: does not match the hash of seq 3"),
    (
        "first event off batch",
        _set(("prev_hash",), b"\x07" * 32),
        r"\(seq 1\)\.prev_hash: does not match the batch's prev_hash",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "problem"), [(m, p) for _, m, p in BAD_BATCHES], ids=[n for n, _, _ in BAD_BATCHES]
)
def test_malformed_batch_names_the_problem(
    mutate: Callable[[dict[str, Any]], None], problem: str
) -> None:
    doc = batch_doc(make_chain(GATE, 6))
    mutate(doc)
    with pytest.raises(ProtocolError, match=problem):
        decode_batch(pack(doc))


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "not valid msgpack"),
        (b"\xc1", "not valid msgpack"),
        (pack([1, 2]), "expected a msgpack map, got an array of 2"),
        (pack({"gate": GATE}) + b"\x00", "not valid msgpack"),  # trailing data
        (pack({1: 2}), "not valid msgpack"),  # non-string key
        (msgpack.packb(msgpack.ExtType(1, b"x")), "not valid msgpack"),
    ],
)
def test_batch_that_is_not_a_map(payload: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode_batch(payload)


def test_batch_size_limit() -> None:
    rows = make_chain(GATE, 12)
    payload = encode_batch(EventBatch.of(GATE, rows))
    assert decode_batch(payload, max_events=12).to_seq == 12
    with pytest.raises(ProtocolError, match=r"12 exceeds max_array_len\(11\)"):
        decode_batch(payload, max_events=11)
    with pytest.raises(ProtocolError, match=f"at most {MAX_BATCH_EVENTS} allowed"):
        encode_batch(EventBatch.of(GATE, make_chain(GATE, MAX_BATCH_EVENTS + 1)))


def test_batch_data_limit() -> None:
    rows = make_chain(GATE, 1)
    seq, wall, mono, boot, type_, lane, version, _, prev, _ = rows[0]
    data = bytes((1 << 20) + 1)
    big = hashed_row(prev, GATE, seq, wall, mono, boot, type_, lane, version, data)
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        decode_batch(encode_batch(EventBatch.of(GATE, [big])))


# ------------------------------------------------------------------------ ack, status, requests


@pytest.mark.parametrize("ack", [Ack(GATE, 0), Ack(GATE, 41), Ack(GATE, 41, resend_from=42)])
def test_ack_round_trip(ack: Ack) -> None:
    assert decode_ack(encode_ack(ack)) == ack


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"seq": 1}, "ack: missing gate"),
        ({"gate": GATE, "seq": -1}, "seq: -1 is below 0"),
        ({"gate": GATE, "seq": "5"}, "seq: expected an integer"),
        ({"gate": GATE, "seq": 5, "resend_from": 7}, "resend_from: 7 is above 6"),
        ({"gate": GATE, "seq": 5, "resend_from": 0}, "resend_from: 0 is below 1"),
        ({"gate": GATE, "seq": 5, "stored": True}, "ack: unknown field 'stored'"),
        ({"gate": GATE, "seq": 1 << 63}, "seq: .* is above"),
    ],
)
def test_malformed_ack(doc: dict[str, Any], problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode_ack(pack(doc))


def test_status_round_trip_and_will() -> None:
    status = Status(GATE, "online", 120, 100, 7, 1_764_000_000_000_000_000)
    assert decode_status(encode_status(status)) == status
    will = decode_status(encode_status(status.offline()))
    assert will.state == "offline"
    assert (will.head_seq, will.synced_seq, will.allowlist_version) == (120, 100, 7)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"state": "dead"}, "state: expected 'online' or 'offline', got 'dead'"),
        ({"state": ["online"]}, "state: expected 'online' or 'offline'"),
        ({"synced_seq": 121}, "synced_seq: 121 is above 120"),
        ({"head_seq": -5}, "head_seq: -5 is below 0"),
        ({"allowlist_version": None}, "allowlist_version: expected an integer, got nil"),
        ({"at_ns": 1.0}, "at_ns: expected an integer"),
        ({"gate": ""}, "gate: must not be empty"),
    ],
)
def test_malformed_status(changes: dict[str, Any], problem: str) -> None:
    doc: dict[str, Any] = {
        "gate": GATE,
        "state": "online",
        "head_seq": 120,
        "synced_seq": 100,
        "allowlist_version": 7,
        "at_ns": 1,
    }
    doc.update(changes)
    with pytest.raises(ProtocolError, match=re.escape(problem)):
        decode_status(pack(doc))


def test_request_round_trip() -> None:
    request = SnapshotRequest(GATE, 4, "version gap: have 4, delta 6->7")
    assert decode_request(encode_request(request)) == request


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"type": "reboot", "gate": GATE}, "unknown type 'reboot'"),
        ({"gate": GATE, "have_version": 1, "reason": "x"}, "unknown type None"),
        ({"type": "snapshot", "gate": GATE, "have_version": 1}, "missing reason"),
        ({"type": "snapshot", "gate": GATE, "have_version": 1, "reason": " "}, "reason: must not"),
        ({"type": "snapshot", "gate": GATE, "have_version": -1, "reason": "x"}, "have_version"),
    ],
)
def test_malformed_request(doc: dict[str, Any], problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode_request(pack(doc))


# ------------------------------------------------------------------------------ garbage

DECODERS: list[Callable[[bytes], object]] = [
    decode_batch,
    decode_ack,
    decode_status,
    decode_request,
]

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | st.sampled_from(["gate", "seq", "events", GATE, "online", "snapshot"]),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(
            st.sampled_from(
                ["gate", "seq", "from_seq", "to_seq", "prev_hash", "events", "state", "type", "x"]
            )
            | st.text(max_size=5),
            children,
            max_size=7,
        )
    ),
    max_leaves=30,
)


@given(st.binary(max_size=300))
@settings(max_examples=400)
def test_random_bytes_raise_only_protocol_error(payload: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(ProtocolError):
            decode(payload)


@given(msgpack_values)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_random_msgpack_raises_only_protocol_error(value: object) -> None:
    payload = pack(value)
    for decode in DECODERS:
        with contextlib.suppress(ProtocolError):
            decode(payload)


@given(st.data())
@settings(max_examples=300)
def test_corrupted_batch_decodes_soundly_or_raises_protocol_error(data: st.DataObject) -> None:
    rows = make_chain(GATE, 4)
    payload = bytearray(encode_batch(EventBatch.of(GATE, rows)))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(payload) - 1))
        payload[at] = data.draw(st.integers(0, 255))
    try:
        batch = decode_batch(bytes(payload))
    except ProtocolError:
        return
    # Whatever got through is structurally sound: contiguous and linked.
    assert [e[0] for e in batch.events] == list(range(batch.from_seq, batch.to_seq + 1))
    prev = batch.prev_hash
    for e in batch.events:
        assert e[8] == prev
        prev = e[9]
