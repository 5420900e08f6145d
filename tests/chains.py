"""Stored event rows made by hand, hashed with the real chain function, as a gate's log holds
them and its uplink sends them."""

from __future__ import annotations

import msgpack

from edgegate.log.chain import GENESIS_HASH, Row, event_hash
from edgegate.sync.protocol import EventBatch, encode_batch

WALL_NS = 1_700_000_000_000_000_000  # the wall clock at seq 0 of a made chain
MONO_NS = 5_000


def hashed_row(
    prev: bytes,
    gate: str,
    seq: int,
    wall_ns: int,
    mono_ns: int,
    boot_id: str,
    type_name: str,
    lane: str | None,
    version: int,
    data: bytes,
) -> Row:
    """One stored row with these fields, chained from ``prev`` by its correct hash."""
    digest = event_hash(prev, gate, seq, wall_ns, mono_ns, boot_id, type_name, lane, version, data)
    return (seq, wall_ns, mono_ns, boot_id, type_name, lane, version, data, prev, digest)


def make_chain(
    gate: str,
    n: int,
    *,
    start: int = 1,
    prev: bytes = GENESIS_HASH,
    salt: str = "",
    reboot_at: int | None = None,
) -> list[Row]:
    """``n`` correctly hashed rows of ``gate`` from seq ``start``, chained from ``prev``.

    Every third row has no lane; the payload carries a non-ASCII plate and ``salt`` (another
    salt: another history of the same seqs). From seq ``reboot_at`` on, the rows carry another
    boot id."""
    rows: list[Row] = []
    for seq in range(start, start + n):
        boot = "boot-2" if reboot_at is not None and seq >= reboot_at else "boot-1"
        lane = None if seq % 3 == 0 else f"in-{seq % 2}"
        data = msgpack.packb({"n": seq, "plate": "苏E12345", "salt": salt})
        row = hashed_row(
            prev, gate, seq, WALL_NS + seq * 1000, MONO_NS + seq, boot, "test.event", lane, 1, data
        )
        rows.append(row)
        prev = row[9]
    return rows


def batch_payload(gate: str, rows: list[Row]) -> bytes:
    """``rows`` as one events message of ``gate`` on the wire."""
    return encode_batch(EventBatch.of(gate, rows))
