"""The SHA-256 hash chain of a gate's events.

``hash = SHA-256(prev_hash || header || data)`` where ``header`` is the msgpack array
``[gate_id, seq, wall_ns, mono_ns, boot_id, type, lane, version]`` (integers in msgpack's
smallest encoding, strings as str, lane nil when absent) and ``data`` the stored payload.
The first event of a gate chains from 32 zero bytes. Central recomputes the same function.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgpack

GENESIS_HASH = bytes(32)

Pack = Callable[[object], bytes]


def new_pack() -> Pack:
    """A header packer for ``event_hash``; one per thread (msgpack Packers are not thread-safe)."""
    return msgpack.Packer(use_bin_type=True).pack


def event_hash(
    prev_hash: bytes | bytearray,
    gate_id: str,
    seq: int,
    wall_ns: int,
    mono_ns: int,
    boot_id: str,
    type_name: str,
    lane: str | None,
    version: int,
    data: bytes | bytearray,
    pack: Pack = msgpack.packb,
) -> bytes:
    """The chain hash of one event: the only place the formula is written.

    ``pack``: from ``new_pack()``, owned by the calling thread, where the call is on a hot path
    (the log's writer, the verifier): a Packer is reused instead of made per call.
    """
    h = hashlib.sha256(prev_hash)
    h.update(pack((gate_id, seq, wall_ns, mono_ns, boot_id, type_name, lane, version)))
    h.update(data)
    return h.digest()


@dataclass(frozen=True, slots=True)
class ChainFault:
    """The first place a sequence of stored events stops being sound."""

    seq: int
    problem: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.problem}"


Row = tuple[int, int, int, str, str, "str | None", int, bytes, bytes, bytes]
"""(seq, wall_ns, mono_ns, boot_id, type, lane, version, data, prev_hash, hash)"""


class ChainVerifier:
    """Checks rows in seq order: continuity, prev_hash linkage, and each hash.

    Feed rows in order with ``feed``; it returns the first fault or None. Usable on a gate's
    log and on central's copy alike.
    """

    __slots__ = ("count", "gate_id", "last_hash", "last_seq")

    def __init__(self, gate_id: str, after_seq: int = 0, after_hash: bytes = GENESIS_HASH):
        self.gate_id = gate_id
        self.last_seq = after_seq
        self.last_hash = after_hash
        self.count = 0

    def feed(self, rows: Iterable[Row]) -> ChainFault | None:
        gate_id = self.gate_id
        first = expected = self.last_seq + 1
        last_hash = self.last_hash
        pack = new_pack()  # per call: feed may run in any thread
        fault: ChainFault | None = None
        for seq, wall_ns, mono_ns, boot_id, type_name, lane, version, data, prev, stored in rows:
            if seq != expected or prev != last_hash:
                fault = _link_fault(seq, expected)
                break
            digest = event_hash(
                prev, gate_id, seq, wall_ns, mono_ns, boot_id, type_name, lane, version, data, pack
            )
            if digest != stored:
                fault = ChainFault(seq, "hash does not match the event's content")
                break
            last_hash = stored
            expected += 1
        self.count += expected - first
        if fault is not None:
            return fault
        self.last_seq = expected - 1
        self.last_hash = last_hash
        return None


def _link_fault(seq: int, expected: int) -> ChainFault:
    """Why a row with ``seq`` cannot follow (wrong seq, else a prev_hash that does not link)."""
    if seq == expected:
        return ChainFault(seq, "prev_hash does not match the previous event's hash")
    if seq > expected:
        return ChainFault(expected, f"gap: expected seq {expected}, found {seq}")
    return ChainFault(seq, f"out of order: expected seq {expected}, found {seq}")


def verify_to_head(gate_id: str, rows: Iterable[Row], head: tuple[int, bytes]) -> ChainFault | None:
    """The first fault of a copy of ``gate_id``'s chain from genesis that must end exactly at
    ``head`` (seq, hash), as central's store records it; rows above the head are not read
    (stored after the head was read). None when every seq, link and hash holds."""
    head_seq, head_hash = head
    verifier = ChainVerifier(gate_id)
    fault = verifier.feed(itertools.takewhile(lambda r: r[0] <= head_seq, rows))
    if fault is not None:
        return fault
    if verifier.last_seq != head_seq:
        return ChainFault(
            min(verifier.last_seq, head_seq) + 1,
            f"the head says seq {head_seq} but the stored chain ends at {verifier.last_seq}",
        )
    if verifier.last_hash != head_hash:
        return ChainFault(head_seq, "the head's hash differs from the stored event's")
    return None
