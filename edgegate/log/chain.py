"""The SHA-256 hash chain of a gate's events.

``hash = SHA-256(prev_hash || header || data)`` where ``header`` is the msgpack array
``[gate_id, seq, wall_ns, mono_ns, boot_id, type, lane, version]`` (integers in msgpack's
smallest encoding, strings as str, lane nil when absent) and ``data`` the stored payload.
The first event of a gate chains from 32 zero bytes. Central recomputes the same function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import msgpack

GENESIS_HASH = bytes(32)

_pack = msgpack.Packer(use_bin_type=True).pack
_sha256 = hashlib.sha256


def event_hash(
    prev_hash: bytes,
    gate_id: str,
    seq: int,
    wall_ns: int,
    mono_ns: int,
    boot_id: str,
    type_name: str,
    lane: str | None,
    version: int,
    data: bytes,
) -> bytes:
    header = _pack((gate_id, seq, wall_ns, mono_ns, boot_id, type_name, lane, version))
    return _sha256(prev_hash + header + data).digest()


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
        seq_expected = self.last_seq + 1
        last_hash = self.last_hash
        for seq, wall_ns, mono_ns, boot_id, type_name, lane, version, data, prev, stored in rows:
            if seq != seq_expected:
                problem = (
                    f"gap: expected seq {seq_expected}, found {seq}"
                    if seq > seq_expected
                    else f"out of order: expected seq {seq_expected}, found {seq}"
                )
                return ChainFault(seq_expected if seq > seq_expected else seq, problem)
            if prev != last_hash:
                return ChainFault(seq, "prev_hash does not match the previous event's hash")
            computed = event_hash(
                prev, gate_id, seq, wall_ns, mono_ns, boot_id, type_name, lane, version, data
            )
            if computed != stored:
                return ChainFault(seq, "hash does not match the event's content")
            last_hash = stored
            seq_expected += 1
            self.count += 1
        self.last_seq = seq_expected - 1
        self.last_hash = last_hash
        return None
