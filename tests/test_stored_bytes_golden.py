"""Golden test of the stored bytes: the recorded gate logs in replay/ were written by earlier
code, and this code must still prove their chain and read every payload, and must write the
very same bytes for what it reads back (events of a current version, allow-list entries)."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgegate.allowlist import store
from edgegate.core import events
from edgegate.log.chain import GENESIS_HASH, ChainFault, ChainVerifier, event_hash, new_pack

REPLAY = Path(__file__).resolve().parent.parent / "replay"
CASES = sorted(p.parent.name for p in REPLAY.glob("*/gate.db"))

# seq -> the case's deliberate damage (see its README.md); every other event must verify.
EDITED = {"tampered-barrier-command": {14}}

_COLUMNS = "seq, wall_ns, mono_ns, boot_id, type, lane, version, data, prev_hash, hash"


@pytest.fixture(params=CASES)
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, sqlite3.Connection]]:
    """(case, connection to a copy of its gate.db): opening a log writes beside it."""
    case: str = request.param
    db = tmp_path / "gate.db"
    shutil.copyfile(REPLAY / case / "gate.db", db)
    conn = sqlite3.connect(db)
    try:
        yield case, conn
    finally:
        conn.close()


def _gate_id(conn: sqlite3.Connection) -> str:
    return str(conn.execute("SELECT value FROM log_meta WHERE key = 'gate_id'").fetchone()[0])


def test_every_event_hash_is_recomputed_from_its_row(log: tuple[str, sqlite3.Connection]) -> None:
    case, conn = log
    gate = _gate_id(conn)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq").fetchall()
    assert rows, case
    mismatched = set()
    prev = GENESIS_HASH
    for expected_seq, row in enumerate(rows, start=1):
        seq, wall, mono, boot, type_name, lane, version, data, prev_hash, stored = row
        assert seq == expected_seq and prev_hash == prev, f"{case}: seq {seq} does not link"
        # Both ways of packing the header: a reused Packer (the writer's) and packb.
        digest = event_hash(prev, gate, seq, wall, mono, boot, type_name, lane, version, data)
        assert digest == event_hash(
            prev, gate, seq, wall, mono, boot, type_name, lane, version, data, new_pack()
        )
        if digest != stored:
            mismatched.add(seq)
        prev = stored
    assert mismatched == EDITED.get(case, set())


def test_the_verifier_agrees(log: tuple[str, sqlite3.Connection]) -> None:
    case, conn = log
    rows = conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq").fetchall()
    fault = ChainVerifier(_gate_id(conn)).feed(rows)
    if case in EDITED:
        first = min(EDITED[case])
        assert fault == ChainFault(first, "hash does not match the event's content")
    else:
        assert fault is None


def test_every_payload_decodes_and_current_ones_encode_to_the_stored_bytes(
    log: tuple[str, sqlite3.Connection],
) -> None:
    case, conn = log
    types = events.registered_types()
    current = 0
    for seq, type_name, version, lane, data in conn.execute(
        "SELECT seq, type, version, lane, data FROM events ORDER BY seq"
    ):
        event = events.decode(type_name, version, data, lane)
        assert type(event) is types[type_name] and event.lane == lane
        if version == types[type_name].VERSION:
            assert events.encode(event) == data, f"{case}: seq {seq} {type_name}"
            current += 1
    assert current > 0


def test_every_allowlist_entry_decodes_and_encodes_to_the_stored_bytes(
    log: tuple[str, sqlite3.Connection],
) -> None:
    case, conn = log
    stored = conn.execute(
        "SELECT kind, id, plate, data FROM allowlist_entry ORDER BY kind, id"
    ).fetchall()
    assert stored, case
    assert store.verify(conn) is None
    allowlist = store.load(conn)
    decoded = list(allowlist)  # every credential decoded from its stored bytes
    assert len(decoded) == len(stored)
    # Encoded again as a snapshot would store them: the very same rows.
    assert store.prepare_snapshot(decoded).rows == stored


def test_there_are_recorded_logs() -> None:
    assert len(CASES) >= 3 and set(EDITED) <= set(CASES)
