"""Signed downlink: keys, envelopes, allow-list publications, commands and the command guard."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgegate.core import credential_codec as codec
from edgegate.core.allowlist import AllowList
from edgegate.core.domain import (
    Appointment,
    BlacklistEntry,
    BlacklistReason,
    Credential,
    CredentialKind,
    HolderType,
    PlateColour,
    Registration,
    VehicleCategory,
)
from edgegate.sync.protocol import ProtocolError
from edgegate.sync.signing import (
    KIND_ALLOWLIST,
    KIND_COMMAND,
    MAX_COMMAND_LIFETIME_NS,
    AllowListPublication,
    CommandGuard,
    CommandRefused,
    KeyLoadError,
    SignatureError,
    SignedCommand,
    decode_command,
    decode_publication,
    delta_changes,
    encode_command,
    encode_delta_content,
    encode_publication,
    encode_snapshot_content,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    open_signed,
    sign,
    snapshot_entries,
)

GATE = "fengxiang-road"
T0 = datetime(2026, 6, 1, tzinfo=UTC)
NOW = 1_780_000_000 * 10**9
SECOND = 10**9

CENTRAL = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
PUB = CENTRAL.public_key()


def pack(doc: object) -> bytes:
    return msgpack.packb(doc, use_bin_type=True)


def unpack(payload: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = msgpack.unpackb(payload)
    return doc


def refusal_code(payload: bytes, kind: str = KIND_ALLOWLIST) -> str:
    with pytest.raises(SignatureError) as info:
        open_signed(payload, kind, PUB)
    return info.value.code


# ------------------------------------------------------------------------------ keys


def test_generated_keys_load_and_have_a_stable_id(tmp_path: Path) -> None:
    private_pem, public_pem = generate_keypair()
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    (tmp_path / "k.key").write_bytes(private_pem)
    (tmp_path / "k.pub").write_bytes(public_pem)
    private = load_private_key(tmp_path / "k.key")
    public = load_public_key(tmp_path / "k.pub")
    kid = key_id(public)
    assert len(kid) == 16
    assert int(kid, 16) >= 0
    assert key_id(private.public_key()) == kid
    assert key_id(load_public_key(public_pem)) == kid
    assert key_id(load_public_key(public_pem.decode())) == kid
    assert key_id(load_public_key(str(tmp_path / "k.pub"))) == kid
    assert key_id(OTHER.public_key()) != key_id(PUB)
    body = b"hello"
    assert open_signed(sign("x", body, private), "x", public) == body


def test_key_loading_refuses_other_things(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.key").write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec_pub = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "junk").write_bytes(b"not a key")
    with pytest.raises(KeyLoadError, match="not an Ed25519 private key"):
        load_private_key(tmp_path / "ec.key")
    with pytest.raises(KeyLoadError, match="not an Ed25519 public key"):
        load_public_key(ec_pub)
    with pytest.raises(KeyLoadError, match="not an unencrypted PEM private key"):
        load_private_key(tmp_path / "junk")
    with pytest.raises(KeyLoadError, match="junk: not a PEM public key"):
        load_public_key(tmp_path / "junk")
    _, public_pem = generate_keypair()
    (tmp_path / "swapped.key").write_bytes(public_pem)
    with pytest.raises(KeyLoadError):
        load_private_key(tmp_path / "swapped.key")


# ------------------------------------------------------------------------------ envelope


def test_envelope_round_trip() -> None:
    body = b"\x00\x01 any bytes \xff"
    payload = sign(KIND_ALLOWLIST, body, CENTRAL)
    doc = unpack(payload)
    assert set(doc) == {"v", "kind", "key_id", "body", "sig"}
    assert doc["v"] == 1
    assert doc["key_id"] == key_id(PUB)
    assert len(doc["sig"]) == 64
    assert open_signed(payload, KIND_ALLOWLIST, PUB) == body


def test_any_of_several_trusted_keys() -> None:
    payload = sign(KIND_COMMAND, b"b", OTHER)
    assert open_signed(payload, KIND_COMMAND, [PUB, OTHER.public_key()]) == b"b"
    with pytest.raises(SignatureError, match="trusted: none") as info:
        open_signed(payload, KIND_COMMAND, [])
    assert info.value.code == "unknown-key"


def _tampered(field: str, change: Callable[[Any], Any]) -> bytes:
    doc = unpack(sign(KIND_ALLOWLIST, b"version 5 of the list", CENTRAL))
    doc[field] = change(doc[field])
    return pack(doc)


def _flip(data: bytes, at: int = 0) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def test_forged_body_or_signature_is_refused() -> None:
    assert refusal_code(_tampered("body", _flip)) == "forged"
    assert refusal_code(_tampered("body", lambda b: b + b"!")) == "forged"
    assert refusal_code(_tampered("sig", _flip)) == "forged"
    assert refusal_code(_tampered("sig", lambda s: _flip(s, 63))) == "forged"


def test_signed_by_another_key_is_refused() -> None:
    other = sign(KIND_ALLOWLIST, b"b", OTHER)
    assert refusal_code(other) == "unknown-key"
    # Claiming the trusted key's id does not help.
    doc = unpack(other)
    doc["key_id"] = key_id(PUB)
    with pytest.raises(SignatureError, match="forged: the signature does not verify") as info:
        open_signed(pack(doc), KIND_ALLOWLIST, PUB)
    assert info.value.code == "forged"


def test_kind_is_signed() -> None:
    payload = sign(KIND_ALLOWLIST, b"b", CENTRAL)
    with pytest.raises(SignatureError, match="'allowlist' message where 'command'") as info:
        open_signed(payload, KIND_COMMAND, PUB)
    assert info.value.code == "wrong-kind"
    # Relabelling the kind breaks the signature.
    doc = unpack(payload)
    doc["kind"] = KIND_COMMAND
    assert refusal_code(pack(doc), KIND_COMMAND) == "forged"


@pytest.mark.parametrize(
    "payload",
    [
        pack({"v": 1, "kind": KIND_ALLOWLIST, "key_id": "0" * 16, "body": b"b"}),
        pack({"v": 1, "kind": KIND_ALLOWLIST, "key_id": "0" * 16, "body": b"b", "sig": b""}),
        pack({"v": 1, "kind": KIND_ALLOWLIST, "key_id": "0" * 16, "body": b"b", "sig": None}),
        pack({"kind": "delta", "version": 7, "content": b""}),  # a bare publication
    ],
)
def test_unsigned_is_refused(payload: bytes) -> None:
    with pytest.raises(SignatureError, match="unsigned: the message carries no signature") as info:
        open_signed(payload, KIND_ALLOWLIST, PUB)
    assert info.value.code == "unsigned"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "not valid msgpack"),
        (b"\x93\x01\x02", "not valid msgpack"),  # truncated
        (pack([1, 2, 3]), "not a msgpack map"),
        (_tampered("v", lambda v: 2), "version 2, expected 1"),
        (_tampered("v", lambda v: True), "version True"),
        (_tampered("kind", lambda k: 5), "kind is not a non-empty string"),
        (_tampered("key_id", lambda k: b"k"), "key_id is not a string"),
        (_tampered("body", lambda b: "text"), "body is not bytes"),
        (_tampered("sig", lambda s: s[:63]), "sig is not 64 bytes"),
        (_tampered("sig", lambda s: s.hex()), "sig is not 64 bytes"),
        (pack({**unpack(sign(KIND_ALLOWLIST, b"b", CENTRAL)), "x": 1}), "unknown field 'x'"),
    ],
)
def test_malformed_envelope_is_refused(payload: bytes, problem: str) -> None:
    with pytest.raises(SignatureError, match=problem) as info:
        open_signed(payload, KIND_ALLOWLIST, PUB)
    assert info.value.code == "malformed"
    assert isinstance(info.value, ProtocolError)


@given(st.binary(max_size=300))
@settings(max_examples=400)
def test_random_bytes_raise_only_signature_error(payload: bytes) -> None:
    with contextlib.suppress(SignatureError):
        open_signed(payload, KIND_ALLOWLIST, PUB)


envelope_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=80)
    | st.sampled_from([KIND_ALLOWLIST, KIND_COMMAND, key_id(PUB), 1]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["v", "kind", "key_id", "body", "sig"]) | st.text(max_size=4),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@given(envelope_values)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_random_envelopes_raise_only_signature_error(value: object) -> None:
    with contextlib.suppress(SignatureError):
        open_signed(pack(value), KIND_ALLOWLIST, PUB)


@given(st.data())
@settings(max_examples=300)
def test_corrupted_envelope_never_yields_another_body(data: st.DataObject) -> None:
    body = b"allow-list version 9"
    payload = bytearray(sign(KIND_ALLOWLIST, body, CENTRAL))
    at = data.draw(st.integers(0, len(payload) - 1))
    payload[at] ^= data.draw(st.integers(1, 255))
    try:
        opened = open_signed(bytes(payload), KIND_ALLOWLIST, PUB)
    except SignatureError:
        return
    assert opened == body  # only a change msgpack ignores could get through


# ------------------------------------------------------------------------------ allow-list


def registration(id_: str, plate: str = "苏E12345") -> Registration:
    return Registration(
        id=id_,
        plate=plate,
        category=VehicleCategory.ORDINARY,
        holder=HolderType.COMPANY,
        organisation="扬子石化有限公司",
        valid_from=T0,
        gates=frozenset({GATE}),
    )


def credentials(n: int) -> list[Credential]:
    out: list[Credential] = [registration(f"R{i}", f"苏E{10000 + i}") for i in range(n)]
    out.append(
        Appointment(
            id="A1",
            plate="苏E77777",
            colour=PlateColour.YELLOW,
            category=VehicleCategory.HAZMAT,
            window_start=T0,
            window_end=T0 + timedelta(hours=4),
            destination="扬子石化",
            un_number="1203",
            hazard_class="3",
            waybill="WB1",
        )
    )
    out.append(
        BlacklistEntry(
            id="B1",
            plate="苏A00001",
            reason=BlacklistReason.SPEEDING,
            source="park-security",
            valid_from=T0,
        )
    )
    return out


@pytest.mark.parametrize("n", [0, 1, 20])  # 20: past msgpack's 15-element short array
def test_snapshot_content_round_trip(n: int) -> None:
    entries = credentials(n)
    content = encode_snapshot_content(entries)
    assert snapshot_entries(content) == entries
    assert snapshot_entries(encode_snapshot_content([])) == []


def test_snapshot_feeds_the_allowlist() -> None:
    entries = credentials(3)
    pub = AllowListPublication("snapshot", 4, None, NOW, encode_snapshot_content(entries))
    opened = decode_publication(open_signed(sign_pub(pub), KIND_ALLOWLIST, PUB))
    assert opened == pub
    allowlist = AllowList.from_credentials(snapshot_entries(opened.content), opened.version)
    assert len(allowlist) == len(entries)
    assert allowlist.version == 4


def test_delta_feeds_the_allowlist() -> None:
    allowlist = AllowList.from_credentials(credentials(3), 4)
    changed = dataclasses.replace(registration("R0", "苏E10000"), organisation="新公司")
    content = encode_delta_content(
        [changed, registration("R9", "苏E99999")], [(CredentialKind.BLACKLIST, "B1")]
    )
    pub = AllowListPublication("delta", 5, 4, NOW, content)
    opened = decode_publication(open_signed(sign_pub(pub), KIND_ALLOWLIST, PUB))
    assert opened.disposition(allowlist.version) == "apply"
    delta = delta_changes(opened.content)
    assert delta.upserts == [changed, registration("R9", "苏E99999")]
    assert delta.removals == [(CredentialKind.BLACKLIST, "B1")]
    allowlist.apply_delta(delta.upserts, delta.removals, opened.version, None)
    assert allowlist.version == 5
    assert allowlist.get(CredentialKind.BLACKLIST, "B1") is None
    assert allowlist.get(CredentialKind.REGISTRATION, "R0") == changed


def sign_pub(pub: AllowListPublication) -> bytes:
    return sign(KIND_ALLOWLIST, encode_publication(pub), CENTRAL)


@pytest.mark.parametrize(
    ("kind", "version", "base", "current", "expected"),
    [
        ("snapshot", 5, None, 4, "apply"),
        ("snapshot", 5, None, 0, "apply"),
        ("snapshot", 5, None, 5, "stale"),
        ("snapshot", 5, None, 9, "stale"),
        ("delta", 5, 4, 4, "apply"),
        ("delta", 5, 4, 5, "stale"),
        ("delta", 5, 4, 7, "stale"),
        ("delta", 5, 4, 3, "gap"),
        ("delta", 8, 5, 6, "gap"),  # overlaps what the gate has: cannot apply
    ],
)
def test_disposition(
    kind: Any, version: int, base: int | None, current: int, expected: str
) -> None:
    assert AllowListPublication(kind, version, base, NOW, b"\x90").disposition(current) == expected


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"kind": "patch"}, "kind: expected 'snapshot' or 'delta', got 'patch'"),
        ({"kind": "snapshot", "base_version": 3}, "base_version: a snapshot has none"),
        ({"base_version": None}, "base_version: a delta needs the version it applies on"),
        ({"base_version": 7}, r"base_version: 7 is outside 0\.\.6"),
        ({"version": 0, "base_version": 0}, r"version: 0 is outside"),
        ({"version": "7"}, "version: expected an integer, got str"),
        ({"issued_at_ns": -1}, "issued_at_ns: -1 is outside"),
        ({"content": "text"}, "content: expected bytes, got str"),
        ({"extra": 1}, "unknown field 'extra'"),
    ],
)
def test_malformed_publication(changes: dict[str, Any], problem: str) -> None:
    doc: dict[str, Any] = {
        "kind": "delta",
        "version": 7,
        "base_version": 6,
        "issued_at_ns": NOW,
        "content": b"\x90",
    }
    doc.update(changes)
    with pytest.raises(ProtocolError, match=problem):
        decode_publication(pack(doc))
    with pytest.raises(ProtocolError, match="allow-list publication: missing content"):
        decode_publication(pack({k: v for k, v in doc.items() if k != "content"}))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "expected an array of credentials"),
        (b"\x91", "expected an array of credentials"),
        (codec.encode(registration("R1")), "expected an array of credentials"),  # lone credential
        (pack([[1, 2]]), "content: unknown credential kind 1"),
        (pack([["registration", "R1"]]), "content: not an encoded credential"),
        (pack({"a": 1}), "expected an array of credentials"),
        (encode_snapshot_content(credentials(1)) + b"\x00", "content: not an encoded credential"),
    ],
)
def test_bad_snapshot_content(content: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        snapshot_entries(content)


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ([], 'expected a map {"upsert"'),
        ({"upsert": b"\x90"}, 'expected a map {"upsert"'),
        ({"upsert": [], "remove": []}, "upsert is not bytes"),
        ({"upsert": b"\x90", "remove": {}}, "remove is not an array"),
        ({"upsert": b"\x90", "remove": [["registration"]]}, r"remove\[0\] is not \[kind, id\]"),
        ({"upsert": b"\x90", "remove": [["car", "R1"]]}, r"remove\[0\]: unknown kind 'car'"),
        ({"upsert": b"\x90", "remove": [["permit", ""]]}, r"remove\[0\]: id is not a non-empty"),
        ({"upsert": b"\x91\x01", "remove": []}, "expected an array of credentials"),
        ({"upsert": b"\x91\x92\x01\x02", "remove": []}, "unknown credential kind 1"),
    ],
)
def test_bad_delta_content(doc: object, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        delta_changes(pack(doc))


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_random_bodies_raise_only_protocol_error(payload: bytes) -> None:
    decoders: list[Callable[[bytes], object]] = [
        decode_publication,
        decode_command,
        snapshot_entries,
        delta_changes,
    ]
    for decode in decoders:
        with contextlib.suppress(ProtocolError):
            decode(payload)


content_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.sampled_from([k.value for k in CredentialKind] + ["blue", "ordinary", "company"]),
    lambda children: st.lists(children, max_size=14),
    max_leaves=40,
)


@given(st.lists(content_values, max_size=4))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_random_snapshot_content_raises_only_protocol_error(value: list[object]) -> None:
    with contextlib.suppress(ProtocolError):
        snapshot_entries(pack(value))


# ------------------------------------------------------------------------------ commands


def command(**changes: Any) -> SignedCommand:
    fields: dict[str, Any] = {
        "id": "0123456789abcdef0123456789abcdef",
        "gate": GATE,
        "action": "open-lane",
        "lane": "in-1",
        "reason": "fire brigade drill",
        "operator": "wang.lei",
        "issued_at_ns": NOW,
        "expires_at_ns": NOW + 60 * SECOND,
    }
    fields.update(changes)
    return SignedCommand(**fields)


def test_command_round_trip() -> None:
    for cmd in (command(), command(action="incident-on", lane=None, reason="")):
        assert decode_command(encode_command(cmd)) == cmd
    created = SignedCommand.create(GATE, "incident-off", operator="li", now_ns=NOW)
    assert len(created.id) == 32
    assert created.expires_at_ns - created.issued_at_ns == 300 * SECOND
    assert created.id != SignedCommand.create(GATE, "incident-off", operator="li", now_ns=NOW).id


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"id": "not-a-uuid"}, "id: 'not-a-uuid' is not 32 lowercase hex digits"),
        ({"id": "0123456789ABCDEF0123456789ABCDEF"}, "is not 32 lowercase hex digits"),
        ({"gate": "a/b"}, "gate: .* contains '/'"),
        ({"action": "self-destruct"}, "action: 'self-destruct' is not one of"),
        ({"lane": None}, "lane: open-lane needs the lane it acts on"),
        ({"reason": "  "}, "reason: must not be empty"),
        ({"reason": "x" * 501}, "reason: 501 characters"),
        ({"operator": ""}, "operator: must not be empty"),
        ({"action": "incident-on"}, "lane: incident-on applies to the whole gate"),
        ({"expires_at_ns": NOW}, "expires_at_ns: not after issued_at_ns"),
        ({"expires_at_ns": NOW + MAX_COMMAND_LIFETIME_NS + 1}, "lifetime 3600 s exceeds 3600 s"),
        ({"issued_at_ns": -1}, "issued_at_ns: -1 is outside"),
        ({"issued_at_ns": float(NOW)}, "issued_at_ns: expected an integer"),
    ],
)
def test_malformed_command(changes: dict[str, Any], problem: str) -> None:
    doc = dataclasses.asdict(command())
    doc.update(changes)
    with pytest.raises(ProtocolError, match=problem):
        decode_command(pack(doc))


def test_command_missing_field() -> None:
    doc = dataclasses.asdict(command())
    del doc["expires_at_ns"]
    with pytest.raises(ProtocolError, match="command: missing expires_at_ns"):
        decode_command(pack(doc))


def refused(guard: CommandGuard, cmd: SignedCommand, now_ns: int, gate: str = GATE) -> str:
    with pytest.raises(CommandRefused) as info:
        guard.check(cmd, gate, now_ns)
    return info.value.code


def test_guard_accepts_once_then_refuses_replay() -> None:
    guard = CommandGuard()
    cmd = command()
    guard.check(cmd, GATE, NOW + SECOND)
    assert refused(guard, cmd, NOW + 2 * SECOND) == "replayed"
    # Another id at the same time is fine.
    guard.check(command(id="f" * 32), GATE, NOW + 2 * SECOND)


def test_guard_refusals() -> None:
    guard = CommandGuard(skew_ns=30 * SECOND)
    assert refused(guard, command(), NOW, gate="other-gate") == "wrong-gate"
    assert refused(guard, command(), NOW - 31 * SECOND) == "not-yet-valid"
    guard.check(command(), GATE, NOW - 29 * SECOND)  # within the allowed skew
    assert refused(CommandGuard(), command(), NOW + 60 * SECOND) == "expired"
    assert refused(CommandGuard(), command(), NOW + 3600 * SECOND) == "expired"
    # Refused commands were not remembered; the accepted one was.
    assert len(guard) == 1


def test_guard_forgets_expired_ids_but_still_refuses_them() -> None:
    guard = CommandGuard(skew_ns=10 * SECOND)
    for i in range(5):
        guard.check(command(id=f"{i:032x}", expires_at_ns=NOW + (i + 1) * SECOND), GATE, NOW)
    assert len(guard) == 5
    guard.check(command(id="a" * 32, expires_at_ns=NOW + 600 * SECOND), GATE, NOW + 13 * SECOND)
    assert len(guard) == 3  # expiries 1 s..3 s are past now - skew; 4 s, 5 s are kept
    # A forgotten id replayed later is expired, never accepted.
    assert refused(
        guard, command(id=f"{0:032x}", expires_at_ns=NOW + SECOND), NOW + 20 * SECOND
    ) == ("expired")


def test_guard_clock_stepping_back_cannot_revive_a_forgotten_id() -> None:
    guard = CommandGuard(skew_ns=10 * SECOND)
    cmd = command(expires_at_ns=NOW + 60 * SECOND)
    guard.check(cmd, GATE, NOW)
    guard.check(command(id="b" * 32, expires_at_ns=NOW + 3000 * SECOND), GATE, NOW + 2000 * SECOND)
    assert len(guard) == 1  # cmd forgotten
    # The clock steps back into cmd's validity: it is still refused.
    with pytest.raises(CommandRefused, match="clock stepped back") as info:
        guard.check(cmd, GATE, NOW + 30 * SECOND)
    assert info.value.code == "expired"


def test_guard_remembers_ids_read_back_after_restart() -> None:
    guard = CommandGuard()
    cmd = command()
    guard.remember(cmd.id, cmd.expires_at_ns)
    assert refused(guard, cmd, NOW + SECOND) == "replayed"


def test_accept_opens_checks_and_refuses_with_codes() -> None:
    guard = CommandGuard()
    cmd = command()
    payload = sign(KIND_COMMAND, encode_command(cmd), CENTRAL)
    assert guard.accept(payload, PUB, GATE, NOW) == cmd

    def code(payload: bytes) -> str:
        with pytest.raises(CommandRefused) as info:
            guard.accept(payload, PUB, GATE, NOW)
        return info.value.code

    assert code(payload) == "replayed"
    fresh = encode_command(command(id="c" * 32))
    doc = unpack(sign(KIND_COMMAND, fresh, CENTRAL))
    assert code(pack({k: v for k, v in doc.items() if k != "sig"})) == "unsigned"
    assert code(pack({**doc, "body": _flip(doc["body"], 5)})) == "forged"
    assert code(sign(KIND_COMMAND, fresh, OTHER)) == "forged"  # unknown key
    assert code(sign(KIND_ALLOWLIST, fresh, CENTRAL)) == "malformed"  # wrong kind
    assert code(sign(KIND_COMMAND, b"\x80", CENTRAL)) == "malformed"
    assert code(b"\xc1garbage") == "malformed"
    late = pack({**dataclasses.asdict(command(id="d" * 32)), "expires_at_ns": NOW})
    assert code(sign(KIND_COMMAND, late, CENTRAL)) == "malformed"  # expires == issued
    expired = encode_command(command(id="d" * 32, expires_at_ns=NOW - 1, issued_at_ns=NOW - 100))
    assert code(sign(KIND_COMMAND, expired, CENTRAL)) == "expired"
    # None of the refused ids was remembered.
    assert len(guard) == 1
