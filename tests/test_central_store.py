"""The central store on SQLite and on a real PostgreSQL: idempotence, gaps, proof, forks."""

from __future__ import annotations

import hashlib
import random
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import msgpack
import psycopg
import pytest

from edgegate.central import store as store_mod
from edgegate.central.store import (
    AsyncStore,
    Batch,
    CentralStore,
    DsnError,
    SchemaError,
    StoreClosedError,
    StoreError,
    StoreResult,
    open_store,
)
from edgegate.central.store import base as store_base
from edgegate.central.store import schema as central_schema
from edgegate.central.store import sqlite as sqlite_backend
from edgegate.core import events as ev
from edgegate.log.chain import GENESIS_HASH, ChainFault, ChainVerifier, Row
from edgegate.log.schema import split_statements
from edgegate.sync.protocol import DecodedEvents, EventBatch, decode_batch, encode_batch
from tests.central_stores import overwrite_event_data, raw_execute
from tests.chains import MONO_NS, WALL_NS, hashed_row, make_chain


def decoded(gate: str, rows: list[Row]) -> DecodedEvents:
    """``rows`` as the sink hands them over: through the wire format and ``decode_batch``."""
    events = decode_batch(encode_batch(EventBatch.of(gate, rows))).events
    assert type(events) is DecodedEvents
    return events


def reforge(row: Row, **changes: object) -> Row:
    """``row`` with fields replaced, its hash left as it was (a forgery)."""
    names = ("seq", "wall_ns", "mono_ns", "boot_id", "type", "lane", "version", "data", "prev")
    values: dict[str, object] = dict(zip(names, row[:9], strict=True))
    values.update(changes)
    return cast(Row, (*values.values(), row[9]))


@pytest.fixture
def dsn(central_dsn: str) -> str:
    return central_dsn


@pytest.fixture
def store(dsn: str) -> Iterator[CentralStore]:
    s = open_store(dsn)
    try:
        yield s
    finally:
        s.close()


# --- the normal path ------------------------------------------------------------------------


def test_stores_a_chain_and_reads_it_back(store: CentralStore) -> None:
    rows = make_chain("g1", 10)
    result = store.store_batch("g1", rows)
    assert result == StoreResult(acked_seq=10, resend_from=None, stored=10, duplicates=0)
    assert list(store.events("g1")) == rows
    assert list(store.events("g1", after=7)) == rows[7:]
    assert list(store.events("g1", after=2, limit=3)) == rows[2:5]
    assert store.head("g1") == (10, rows[-1][9])
    assert store.heads() == {"g1": (10, rows[-1][9])}
    assert store.count("g1") == 10
    assert store.count() == 10
    assert store.verify("g1") is None
    assert store.dead_letters() == []


def test_msgpack_lists_are_accepted(store: CentralStore) -> None:
    rows = make_chain("g1", 5)
    decoded = msgpack.unpackb(msgpack.packb(rows, use_bin_type=True), raw=False)
    assert isinstance(decoded[0], list)
    assert store.store_batch("g1", decoded).stored == 5
    assert list(store.events("g1")) == rows


def test_unknown_gate_and_empty_batch(store: CentralStore) -> None:
    assert store.head("nobody") == (0, GENESIS_HASH)
    assert store.count("nobody") == 0
    assert list(store.events("nobody")) == []
    assert store.verify("nobody") is None
    assert store.store_batch("g1", []) == StoreResult(0, None, 0, 0)


def test_replay_is_idempotent(store: CentralStore) -> None:
    rows = make_chain("g1", 10)
    store.store_batch("g1", rows[:6])
    store.store_batch("g1", rows[6:])
    for batch in (rows, rows[:6], rows[6:], rows[3:4]):
        result = store.store_batch("g1", batch)
        assert result == StoreResult(10, None, 0, len(batch))
    assert store.count("g1") == 10
    assert list(store.events("g1")) == rows
    assert store.dead_letters() == []
    assert store.verify("g1") is None


def test_overlapping_batches_store_only_the_new_rows(store: CentralStore) -> None:
    rows = make_chain("g1", 10)
    assert store.store_batch("g1", rows[:6]) == StoreResult(6, None, 6, 0)
    assert store.store_batch("g1", rows[3:]) == StoreResult(10, None, 4, 3)
    assert list(store.events("g1")) == rows
    assert store.verify("g1") is None


def test_gap_asks_for_a_resend_and_stores_nothing_past_it(store: CentralStore) -> None:
    rows = make_chain("g1", 10)
    assert store.store_batch("g1", rows[2:5]) == StoreResult(0, 1, 0, 0)
    assert store.head("g1") == (0, GENESIS_HASH)
    assert store.store_batch("g1", rows[:5]) == StoreResult(5, None, 5, 0)
    assert store.store_batch("g1", rows[7:]) == StoreResult(5, 6, 0, 0)
    assert [r[0] for r in store.events("g1")] == [1, 2, 3, 4, 5]
    assert store.dead_letters() == []  # a gap is not the payload's fault
    assert store.store_batch("g1", rows[5:]) == StoreResult(10, None, 5, 0)
    assert store.verify("g1") is None


def test_batch_with_duplicates_then_a_gap(store: CentralStore) -> None:
    rows = make_chain("g1", 10)
    store.store_batch("g1", rows[:5])
    result = store.store_batch("g1", [*rows[3:5], *rows[7:]])
    assert result == StoreResult(5, 6, 0, 2)
    assert store.count("g1") == 5


# --- proof: forged rows, broken links, forks ------------------------------------------------


def test_forged_row_stores_the_sound_prefix_and_dead_letters_the_rest(
    store: CentralStore,
) -> None:
    rows = make_chain("g1", 10)
    forged = [*rows[:5], reforge(rows[5], data=b"\x81\xa1n\x00"), *rows[6:]]
    result = store.store_batch("g1", forged, source="edgegate/v1/site/g1/events")
    assert result.acked_seq == 5
    assert result.resend_from == 6
    assert (result.stored, result.duplicates, result.dead_lettered) == (5, 0, 5)
    assert result.fault is not None
    assert "seq 6" in result.fault
    assert list(store.events("g1")) == rows[:5]
    assert store.head("g1") == (5, rows[4][9])
    (dead,) = store.dead_letters()
    assert dead.gate == "g1"
    assert dead.source == "edgegate/v1/site/g1/events"
    assert "seq 6" in dead.reason
    assert "hash" in dead.reason
    kept = msgpack.unpackb(dead.payload, raw=False)
    assert kept["gate"] == "g1"
    assert [r[0] for r in kept["rows"]] == [6, 7, 8, 9, 10]
    # The genuine rows, resent, complete the chain.
    assert store.store_batch("g1", rows[5:]) == StoreResult(10, None, 5, 0)
    assert store.verify("g1") is None


def test_wrong_seq_inside_a_forged_row_is_caught_by_the_hash(store: CentralStore) -> None:
    rows = make_chain("g1", 4)
    store.store_batch("g1", rows[:2])
    result = store.store_batch("g1", [reforge(rows[2], wall_ns=1), rows[3]])
    assert (result.acked_seq, result.resend_from, result.stored) == (2, 3, 0)
    assert result.dead_lettered == 2


def test_broken_prev_hash_link_is_refused(store: CentralStore) -> None:
    rows = make_chain("g1", 6)
    # A chain that is internally sound but does not continue ours from seq 4 on.
    other = make_chain("g1", 3, start=4, prev=b"\x01" * 32)
    store.store_batch("g1", rows[:3])
    result = store.store_batch("g1", other)
    assert (result.acked_seq, result.resend_from, result.stored, result.dead_lettered) == (
        3,
        4,
        0,
        3,
    )
    assert result.fault is not None
    assert "seq 4" in result.fault
    assert "prev_hash" in result.fault
    assert store.count("g1") == 3


def test_gap_inside_a_batch_stores_the_prefix(store: CentralStore) -> None:
    rows = make_chain("g1", 8)
    result = store.store_batch("g1", [*rows[:3], *rows[5:]])
    assert (result.acked_seq, result.resend_from, result.stored) == (3, 4, 3)
    assert result.fault is not None
    assert "seq 4" in result.fault
    assert store.store_batch("g1", rows[3:]) == StoreResult(8, None, 5, 0)
    assert store.verify("g1") is None


def test_fork_is_dead_lettered_and_nothing_is_stored(store: CentralStore) -> None:
    rows = make_chain("g1", 5)
    store.store_batch("g1", rows)
    fork = make_chain("g1", 7, salt="other history")
    result = store.store_batch("g1", fork[3:])
    assert result.acked_seq == 5
    assert result.resend_from is None  # resending cannot heal a fork
    assert (result.stored, result.duplicates, result.dead_lettered) == (0, 2, 4)
    assert result.fault is not None
    assert "fork at seq 4" in result.fault
    assert list(store.events("g1")) == rows
    (dead,) = store.dead_letters("g1")
    assert "fork at seq 4" in dead.reason
    assert [r[0] for r in msgpack.unpackb(dead.payload)["rows"]] == [4, 5, 6, 7]


def test_fork_deep_below_the_head_is_found(store: CentralStore) -> None:
    rows = make_chain("g1", 50)
    store.store_batch("g1", rows)
    replay = list(rows[:20])
    replay[9] = (*rows[9][:9], b"\x02" * 32)  # same content, different hash
    result = store.store_batch("g1", [replay[0], replay[9], replay[19]])  # not contiguous
    assert result.fault is not None
    assert "fork at seq 10" in result.fault
    assert store.count("g1") == 50


def test_malformed_rows_are_dead_lettered_not_raised(store: CentralStore) -> None:
    rows = make_chain("g1", 3)
    bad_batches: list[tuple[object, str]] = [
        ([list(rows[0])[:9]], "9 fields"),
        ([(*rows[0][:1], "x", *rows[0][2:])], "wall_ns is str"),
        ([(*rows[0][:3], "boot\x00", *rows[0][4:])], "NUL"),
        ([(*rows[0][:8], b"short", rows[0][9])], "prev_hash is not 32 bytes"),
        ([(1 << 64, *rows[0][1:])], "out of range"),
        ([(True, *rows[0][1:])], "seq is bool"),
        ([(*rows[0][:3], "\ud800", *rows[0][4:])], "UTF-8"),
        ({"not": "a list"}, "not a list"),
        ([rows[0], 42], "index 1"),
    ]
    for batch, expected in bad_batches:
        result = store.store_batch("g1", batch)  # type: ignore[arg-type]
        assert result.stored == 0
        assert result.fault is not None
        assert expected in result.fault, (expected, result.fault)
        assert result.resend_from == 1
    assert store.count() == 0
    assert len(store.dead_letters()) == len(bad_batches)
    # The gate id itself unusable: dead-lettered without a gate.
    too_long = store.store_batch("g" * 300, rows).fault
    assert too_long is not None
    assert "longer than 256 bytes" in too_long
    assert store.store_batch("", rows).stored == 0
    result = store.store_batch(b"g1", rows)  # type: ignore[arg-type]
    assert result.stored == 0
    assert store.dead_letters()[-1].gate is None
    assert "gate is bytes" in store.dead_letters()[-1].reason
    # And the store still works.
    assert store.store_batch("g1", rows).stored == 3


def test_non_ascii_text_is_stored_exactly(store: CentralStore) -> None:
    gate = "tor-süd"
    prev = GENESIS_HASH
    data = b"\x90"
    row = hashed_row(prev, gate, 1, 10, 20, "böot", "entry.decided", "einfahrt-ä", 1, data)
    assert store.store_batch(gate, [row]).stored == 1
    assert list(store.events(gate)) == [row]
    assert store.verify(gate) is None


# --- decoded batches, bulk inserts, the verifier ---------------------------------------------


def test_decoded_batches_are_stored_and_proven_like_plain_rows(store: CentralStore) -> None:
    rows = make_chain("g1", 700)
    results = store.store_batches(
        [("g1", decoded("g1", rows[:300])), ("g1", decoded("g1", rows[300:]))]
    )
    assert results == [StoreResult(300, None, 300, 0), StoreResult(700, None, 400, 0)]
    assert list(store.events("g1")) == rows
    assert store.verify("g1") is None
    assert store.store_batch("g1", decoded("g1", rows[100:200])) == StoreResult(700, None, 0, 100)
    # Decoding does not prove hashes: the store still does.
    forged = [*make_chain("g1", 2, start=701, prev=rows[-1][9])]
    forged[1] = reforge(forged[1], data=b"\x90")
    result = store.store_batch("g1", decoded("g1", forged))
    assert (result.acked_seq, result.resend_from, result.stored, result.dead_lettered) == (
        701,
        702,
        1,
        1,
    )
    assert result.fault is not None
    assert "seq 702" in result.fault


@pytest.mark.parametrize(("field", "name"), [(3, "boot_id"), (4, "type"), (5, "lane")])
def test_nul_in_decoded_text_is_refused_as_in_plain_rows(
    store: CentralStore, field: int, name: str
) -> None:
    rows = make_chain("g1", 3)
    bad = list(rows[1])
    bad[field] = "x\x00y"
    batch = cast(list[Row], [rows[0], tuple(bad), rows[2]])
    from_decoded = store.store_batch("g1", decoded("g1", batch), source="t")
    from_plain = store.store_batch("g1", batch, source="t")
    assert from_decoded == from_plain
    assert from_decoded.fault == f"malformed row at index 1: {name} contains a NUL character"
    assert (from_decoded.resend_from, from_decoded.dead_lettered) == (1, 3)
    assert store.count() == 0
    first, second = store.dead_letters()
    assert first.payload == second.payload
    assert [r[0] for r in msgpack.unpackb(first.payload)["rows"]] == [1, 2, 3]


def test_bulk_insert_keeps_every_field_across_statement_sizes(store: CentralStore) -> None:
    # SQLite inserts up to 128 rows per statement, then powers of two; a boot id change in
    # a batch takes another statement shape. Every row must come back exactly.
    sizes = [1, 2, 3, 127, 128, 129, 255, 777, 1]
    rows = make_chain("g1", sum(sizes), reboot_at=1000)
    start = 0
    for size in sizes:
        part = rows[start : start + size]
        plain = start % 2 == 0
        result = store.store_batch("g1", part if plain else decoded("g1", part))
        start += size
        assert result == StoreResult(start, None, size, 0)
    assert list(store.events("g1")) == rows
    assert store.verify("g1") is None


def test_sqlite_rows_per_insert_respect_the_parameter_limit(tmp_path: Path) -> None:
    assert sqlite_backend._sqlite_chunk(32766) == 128
    assert sqlite_backend._sqlite_chunk(999) == 64  # SQLite before 3.32
    assert sqlite_backend._sqlite_chunk(1) == 1
    rows = make_chain("g1", 300)
    with open_store(f"sqlite:///{tmp_path / 'c.db'}") as s:
        assert isinstance(s, store_mod.SqliteStore)
        s._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        with pytest.raises(StoreError, match="variable number must be between"):
            s.store_batch("g1", rows)  # 128 rows per statement need 1155 parameters
        assert s.count() == 0
        s._chunk = sqlite_backend._sqlite_chunk(999)
        assert s.store_batch("g1", rows) == StoreResult(300, None, 300, 0)
        assert list(s.events("g1")) == rows


def test_sound_prefix_of_a_large_batch_is_stored_exactly(store: CentralStore) -> None:
    rows = make_chain("g1", 600)
    forged = [*rows[:300], reforge(rows[300], mono_ns=1), *rows[301:]]
    result = store.store_batch("g1", decoded("g1", forged))
    assert (result.acked_seq, result.resend_from, result.stored, result.dead_lettered) == (
        300,
        301,
        300,
        300,
    )
    assert list(store.events("g1")) == rows[:300]
    assert store.store_batch("g1", rows[290:]) == StoreResult(600, None, 300, 10)
    assert store.verify("g1") is None


def test_sqlite_store_made_with_a_without_rowid_table_still_works(tmp_path: Path) -> None:
    """Stores created before gate_events became a rowid table keep working unchanged."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    m = store_mod.MIGRATIONS[0]
    script = m.sql.format(**central_schema._SQLITE_TYPES).replace(
        "PRIMARY KEY (gate, seq)\n        );",
        "PRIMARY KEY (gate, seq)\n        ) WITHOUT ROWID;",
        1,
    )
    assert "WITHOUT ROWID" in script
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in split_statements(script + m.sqlite_extra):
        conn.execute(statement)
    conn.execute(central_schema._MIGRATIONS_TABLE)
    conn.execute("INSERT INTO schema_migrations VALUES (1, ?, 0)", (m.name,))
    conn.close()
    rows = make_chain("g1", 600, reboot_at=300)
    with open_store(f"sqlite:///{path}") as s:
        assert s.store_batch("g1", rows[:400]).stored == 400
        assert s.store_batch("g1", decoded("g1", rows[350:])) == StoreResult(600, None, 200, 50)
        assert list(s.events("g1")) == rows
        assert s.verify("g1") is None
    check = sqlite3.connect(path)
    try:
        (sql,) = check.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'gate_events'"
        ).fetchone()
    finally:
        check.close()
    assert "WITHOUT ROWID" in sql


def test_chain_verifier_faults_and_counts() -> None:
    """The verifier central proves with: the first fault, and the sound prefix counted."""
    rows = make_chain("g1", 6)
    v = ChainVerifier("g1")
    assert v.feed(rows[:2]) is None
    assert (v.last_seq, v.last_hash, v.count) == (2, rows[1][9], 2)
    assert v.feed([rows[2], reforge(rows[3], lane="x"), rows[4]]) == ChainFault(
        4, "hash does not match the event's content"
    )
    # A failed feed counts the rows it proved but leaves the position where it was.
    assert (v.last_seq, v.last_hash, v.count) == (2, rows[1][9], 3)
    cases: list[tuple[list[Row], ChainFault]] = [
        ([rows[3]], ChainFault(3, "gap: expected seq 3, found 4")),
        ([rows[1]], ChainFault(2, "out of order: expected seq 3, found 2")),
        (
            [(*rows[2][:8], b"\x07" * 32, rows[2][9])],
            ChainFault(3, "prev_hash does not match the previous event's hash"),
        ),
        ([rows[2], rows[3], rows[5]], ChainFault(5, "gap: expected seq 5, found 6")),
    ]
    for feed, fault in cases:
        assert ChainVerifier("g1", 2, rows[1][9]).feed(feed) == fault
    assert ChainVerifier("other-gate").feed(rows) == ChainFault(
        1, "hash does not match the event's content"
    )
    assert ChainVerifier("g1", 2, rows[1][9]).feed(iter(rows[2:])) is None


# --- several gates, several batches -----------------------------------------------------------


def test_two_gates_are_independent(store: CentralStore) -> None:
    a, b = make_chain("a", 6), make_chain("b", 4)
    store.store_batch("a", a[:3])
    store.store_batch("b", b)
    assert store.store_batch("a", a[4:]).resend_from == 4  # a's gap is not b's
    # b's row 4 sent as a's: it does not hash as a's (the gate id is in the hash).
    misrouted = store.store_batch("a", b[3:])
    assert (misrouted.stored, misrouted.resend_from, misrouted.dead_lettered) == (0, 4, 1)
    assert store.store_batch("a", a[3:]).stored == 3
    assert store.heads() == {"a": (6, a[-1][9]), "b": (4, b[-1][9])}
    assert store.verify("a") is None
    assert store.verify("b") is None
    assert store.count() == 10


def test_store_batches_in_one_transaction(store: CentralStore) -> None:
    a, b = make_chain("a", 12), make_chain("b", 6)
    forged_b = [*b[3:4], reforge(b[4], lane="x"), b[5]]
    results = store.store_batches(
        [
            ("a", a[:3]),
            Batch("b", b[:3], source="topic/b"),
            ("a", a[3:6]),  # extends the first batch of the same call
            ("a", a[9:]),  # gap
            ("b", forged_b),
            ("a", a[:6]),  # replay of what this very call stored
        ],
        source="topic/default",
    )
    assert results == [
        StoreResult(3, None, 3, 0),
        StoreResult(3, None, 3, 0),
        StoreResult(6, None, 3, 0),
        StoreResult(6, 7, 0, 0),
        StoreResult(4, 5, 1, 0, 2, results[4].fault),
        StoreResult(6, None, 0, 6),
    ]
    assert results[4].fault is not None
    assert "seq 5" in results[4].fault
    assert store.heads() == {"a": (6, a[5][9]), "b": (4, b[3][9])}
    (dead,) = store.dead_letters()
    assert dead.source == "topic/default"
    assert store.store_batches([]) == []


def test_verify_finds_tampering_behind_the_stores_back(dsn: str, store: CentralStore) -> None:
    rows = make_chain("g1", 20)
    store.store_batch("g1", rows)
    assert store.verify("g1") is None
    overwrite_event_data(dsn, "g1", 7)
    fault = store.verify("g1")
    assert fault is not None
    assert fault.seq == 7
    assert "hash" in fault.problem


def test_verify_notices_a_head_that_disagrees(dsn: str, store: CentralStore) -> None:
    rows = make_chain("g1", 5)
    store.store_batch("g1", rows)
    raw_execute(dsn, "UPDATE gate_heads SET seq = 7 WHERE gate = 'g1'")
    fault = store.verify("g1")
    assert fault is not None
    assert "ends at 5" in fault.problem


def test_events_are_append_only(dsn: str, store: CentralStore) -> None:
    store.store_batch("g1", make_chain("g1", 3))
    with pytest.raises((sqlite3.Error, psycopg.Error), match="append-only"):
        raw_execute(dsn, "DELETE FROM gate_events WHERE seq = 2")
    with pytest.raises((sqlite3.Error, psycopg.Error), match="append-only"):
        raw_execute(dsn, "UPDATE gate_events SET seq = 9 WHERE seq = 3")
    assert store.count() == 3


def test_events_iterate_across_pages(store: CentralStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_base, "_PAGE", 7)
    rows = make_chain("g1", 30)
    store.store_batch("g1", rows)
    assert list(store.events("g1")) == rows
    assert list(store.events("g1", after=5, limit=15)) == rows[5:20]
    assert store.verify("g1") is None


# --- dead letters, admission reviews, lifecycle ---------------------------------------------


def test_dead_letter_round_trip(store: CentralStore) -> None:
    first = store.dead_letter("edgegate/v1/s/g9/events", "g9", b"\xc1garbage", "not msgpack")
    second = store.dead_letter("http://127.0.0.1:1/v1/events", None, b"", "no gate\x00here")
    assert second > first
    letters = store.dead_letters()
    assert [(d.id, d.source, d.gate, d.payload) for d in letters] == [
        (first, "edgegate/v1/s/g9/events", "g9", b"\xc1garbage"),
        (second, "http://127.0.0.1:1/v1/events", None, b""),
    ]
    assert letters[0].reason == "not msgpack"
    assert letters[1].reason == "no gate\\x00here"
    assert letters[0].received_at_ns > 0
    assert [d.id for d in store.dead_letters("g9")] == [first]
    assert [d.id for d in store.dead_letters(limit=1)] == [first]


def test_a_dead_letter_keeps_a_prefix_the_size_and_the_sha256(dsn: str) -> None:
    limits = store_mod.DeadLetterLimits(payload_prefix=16, per_gate=10)
    junk = random.Random(7).randbytes(100_000)
    with open_store(dsn, dead_letters=limits) as s:
        big = s.dead_letter("edgegate/v1/s/g1/events", "g1", junk, "malformed event batch")
        small = s.dead_letter("edgegate/v1/s/g1/events", "g1", b"tiny", "x" * 10_000)
        first, second = s.dead_letters("g1")
    assert (first.id, second.id) == (big, small)
    assert first.payload == junk[:16]
    assert (first.payload_size, first.payload_sha256) == (100_000, hashlib.sha256(junk).digest())
    assert first.truncated
    assert (second.payload, second.payload_size, second.truncated) == (b"tiny", 4, False)
    assert second.payload_sha256 == hashlib.sha256(b"tiny").digest()
    assert len(second.reason) == 2000  # a reason is bounded too


def test_rows_refused_by_the_store_are_kept_bounded(dsn: str) -> None:
    """A gate with valid credentials sending three 3 MB forged batches adds three prefixes."""
    with open_store(dsn) as s:
        for i in range(3):
            rows = make_chain("g1", 3, salt=f"{i}")
            forged = [reforge(r, data=b"\x00" * 1_000_000) for r in rows]
            result = s.store_batch("g1", forged, source="edgegate/v1/s/g1/events")
            assert (result.stored, result.dead_lettered) == (0, 3)
        letters = s.dead_letters("g1")
    assert len(letters) == 3
    for letter in letters:
        assert len(letter.payload) == store_mod.DEAD_PAYLOAD_PREFIX
        assert letter.payload_size > 3_000_000
        assert letter.truncated


def test_dead_letters_are_capped_per_gate_and_the_oldest_dropped_are_counted(dsn: str) -> None:
    limits = store_mod.DeadLetterLimits(payload_prefix=8, per_gate=3)
    with open_store(dsn, dead_letters=limits) as s:
        ids = {
            gate: [s.dead_letter("t", gate, b"p" * (10 + i), f"#{i}") for i in range(n)]
            for gate, n in (("g1", 5), ("g2", 2), (None, 4))
        }
        assert s.dead_letter_drops()[0].last_dropped_at_ns > 0
        assert [d.id for d in s.dead_letters("g1")] == ids["g1"][-3:]
        assert [d.id for d in s.dead_letters("g2")] == ids["g2"]
        kept = s.dead_letters()
        assert [d.id for d in kept if d.gate is None] == ids[None][-3:]
        assert [(d.gate, d.letters, d.payload_bytes) for d in s.dead_letter_drops()] == [
            (None, 1, 10),  # the no-gate key sorts first
            ("g1", 2, 10 + 11),
        ]
        s.dead_letter("t", "g1", b"p" * 100, "#5")
        drops = {d.gate: d for d in s.dead_letter_drops()}
        assert (drops["g1"].letters, drops["g1"].payload_bytes) == (3, 10 + 11 + 12)
        assert len(s.dead_letters("g1")) == 3


def test_migration_2_bounds_the_dead_letters_of_an_older_store(dsn: str) -> None:
    """A store written by schema 1 (whole payloads) is migrated: size, SHA-256, prefix."""
    m = store_mod.MIGRATIONS[0]
    junk = bytes(range(256)) * 40  # 10,240 bytes
    sqlite = dsn.startswith("sqlite")
    types = central_schema._SQLITE_TYPES if sqlite else central_schema._POSTGRES_TYPES
    schema = m.sql.format(**types) + (m.sqlite_extra if sqlite else m.postgres_extra)
    raw_execute(
        dsn,
        schema
        + central_schema._MIGRATIONS_TABLE
        + f";\nINSERT INTO schema_migrations VALUES (1, 'one', 0);\n"
        "INSERT INTO dead_letters (received_at_ns, source, gate, payload, reason) VALUES"
        f" (1, 't', 'g1', {'X' if sqlite else ''}'{'' if sqlite else chr(92) + 'x'}{junk.hex()}',"
        " 'old');",
    )
    with open_store(dsn) as s:
        (letter,) = s.dead_letters("g1")
        assert letter.payload == junk[: store_mod.DEAD_PAYLOAD_PREFIX]
        assert letter.payload_size == len(junk)
        assert letter.payload_sha256 == hashlib.sha256(junk).digest()
        assert s.dead_letter_drops() == []


def test_admission_reviews_round_trip(store: CentralStore) -> None:
    kwargs = {
        "plate": "B-EG 123",
        "credential_kind": "badge",
        "credential_id": "c-77",
        "revoked_at_ns": 1_000,
        "decided_at_ns": 2_000,
    }
    assert store.add_admission_review("g1", 42, noted_at_ns=3_000, **kwargs) is True  # type: ignore[arg-type]
    assert store.add_admission_review("g1", 42, noted_at_ns=9_999, **kwargs) is False  # type: ignore[arg-type]
    assert store.add_admission_review("g0", 7, **kwargs) is True  # type: ignore[arg-type]
    reviews = store.admission_reviews()
    assert [(r.gate, r.seq) for r in reviews] == [("g0", 7), ("g1", 42)]
    (mine,) = store.admission_reviews("g1")
    assert mine == store_mod.AdmissionReview(
        "g1", 42, "B-EG 123", "badge", "c-77", 1_000, 2_000, 3_000
    )
    assert reviews[0].noted_at_ns > 3_000


def test_reopen_keeps_everything_and_migrates_once(dsn: str) -> None:
    rows = make_chain("g1", 5)
    with open_store(dsn) as s:
        s.store_batch("g1", rows)
    with open_store(dsn) as s:
        assert list(s.events("g1")) == rows
        assert s.store_batch("g1", rows) == StoreResult(5, None, 0, 5)


def test_newer_schema_is_refused(dsn: str) -> None:
    open_store(dsn).close()
    raw_execute(
        dsn,
        "INSERT INTO schema_migrations (version, name, applied_at_ns) VALUES (99, 'future', 0)",
    )
    with pytest.raises(SchemaError, match="version 99 is newer"):
        open_store(dsn)


def test_closed_store_refuses_calls(store: CentralStore) -> None:
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(StoreClosedError):
        store.store_batch("g1", make_chain("g1", 1))
    with pytest.raises(StoreClosedError):
        store.heads()


async def test_async_store_runs_off_the_event_loop(store: CentralStore) -> None:
    rows = make_chain("g1", 8)
    async with AsyncStore(store) as astore:
        assert (await astore.store_batch("g1", rows[:4])).stored == 4
        results = await astore.store_batches([("g1", rows[4:]), ("g1", rows)])
        assert [r.stored for r in results] == [4, 0]
        assert await astore.head("g1") == (8, rows[-1][9])
        assert await astore.heads() == {"g1": (8, rows[-1][9])}
        assert await astore.dead_letter("t", "g1", b"x", "why") >= 1
        assert await astore.run(lambda s: s.count("g1")) == 8
    assert store.closed


def test_postgres_store_reconnects_after_losing_its_connection(postgres_dsn: str) -> None:
    rows = make_chain("g1", 6)
    with open_store(postgres_dsn) as s:
        s.store_batch("g1", rows[:3])
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StoreError):
            s.store_batch("g1", rows[3:])
        assert s.store_batch("g1", rows[3:]) == StoreResult(6, None, 3, 0)
        assert s.verify("g1") is None


# --- concurrency ------------------------------------------------------------------------------


def _hammer(dsn: str, gate: str, rows: list[Row], seed: int, errors: list[BaseException]) -> None:
    """Send overlapping batches of ``gate`` from a position near the head until all stored."""
    rng = random.Random(seed)
    n = len(rows)
    try:
        with open_store(dsn) as s:
            pos = 1
            while True:
                size = rng.randint(1, 40)
                batch = rows[pos - 1 : pos - 1 + size]
                result = s.store_batch(gate, batch)
                assert result.dead_lettered == 0, result
                if result.acked_seq >= n:
                    return
                # Restart around the head: behind it (duplicates), at it, or past it (a gap).
                pos = max(1, min(n, result.acked_seq + 1 + rng.randint(-15, 3)))
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_writers_of_one_gate_store_each_seq_once(dsn: str, writers: int) -> None:
    open_store(dsn).close()  # migrate before the race
    rows = make_chain("g1", 600)
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_hammer, args=(dsn, "g1", rows, seed, errors))
        for seed in range(writers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    with open_store(dsn) as s:
        assert s.count("g1") == 600
        assert list(s.events("g1")) == rows
        assert s.head("g1") == (600, rows[-1][9])
        assert s.verify("g1") is None
        assert s.dead_letters() == []


def test_concurrent_multi_gate_transactions_do_not_deadlock(dsn: str) -> None:
    """Two writers whose transactions touch the same gates in opposite orders."""
    open_store(dsn).close()
    gates = [f"g{i}" for i in range(6)]
    chains = {g: make_chain(g, 200) for g in gates}
    errors: list[BaseException] = []

    def writer(order: list[str]) -> None:
        try:
            with open_store(dsn) as s:
                for start in range(0, 200, 20):
                    s.store_batches([(g, chains[g][start : start + 20]) for g in order])
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(gates,)),
        threading.Thread(target=writer, args=(gates[::-1],)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    with open_store(dsn) as s:
        for g in gates:
            assert s.head(g) == (200, chains[g][-1][9])
            assert s.verify(g) is None
        assert s.count() == 1200


# --- DSNs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("", "empty store DSN"),
        ("central.db", "no scheme"),
        ("mysql://u@127.0.0.1/db", "unsupported store DSN scheme 'mysql'"),
        ("sqlite://central.db", "three slashes"),
        ("sqlite:///", "names no file"),
        ("sqlite:///x.db?mode=ro", "no query"),
        ("sqlite:////nonexistent-dir-edgegate/x.db", "does not exist"),
        ("postgresql://u:secret@127.0.0.1:5432", "names no database"),
        ("postgresql://u@127.0.0.1:99999/db", "malformed"),
    ],
)
def test_bad_dsns_are_refused_with_the_reason(bad: str, match: str) -> None:
    with pytest.raises(DsnError, match=match) as info:
        open_store(bad)
    assert isinstance(info.value, ValueError)
    assert "secret" not in str(info.value)


def test_sqlite_dsn_naming_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DsnError, match="directory"):
        open_store(f"sqlite:///{tmp_path}")


def test_relative_sqlite_dsn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///central.db") as s:
        assert s.backend == "sqlite"
    assert (tmp_path / "central.db").exists()
    absolute = tmp_path / "x.db"
    assert str(absolute).startswith("/")
    assert store_mod.sqlite_path(f"sqlite:///{absolute}") == str(absolute)  # four slashes


def test_unreachable_postgres_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot connect") as info:
        open_store("postgresql://u:secret@127.0.0.1:1/db")  # nothing listens on port 1
    assert "secret" not in str(info.value)


def test_a_gates_revoked_credential_report_becomes_a_review_row(store: CentralStore) -> None:
    """The gate's ``admission.revoked-credential`` event is stored like any event and, in
    the same transaction, noted as an admission review; replaying the batch adds nothing."""
    report = ev.RevokedCredentialAdmission(
        lane="in-1",
        decision_seq=2,
        plate="苏E12345",
        credential_kind="permit",
        credential_id="TMP-20261128-0031",
        decided_at=datetime(2026, 11, 28, 3, 10, tzinfo=UTC),
        revoked_at=datetime(2026, 11, 28, 3, 0, tzinfo=UTC),
        certain=True,
        basis="removed",
        allowlist_version=19,
    )
    rows = make_chain("g1", 2)
    prev = rows[-1][9]
    data = ev.encode(report)
    wall, mono, boot = WALL_NS + 3_000, MONO_NS + 3, "boot-1"
    rows.append(hashed_row(prev, "g1", 3, wall, mono, boot, report.TYPE, "in-1", 1, data))
    assert store.store_batch("g1", rows).acked_seq == 3
    assert store.store_batch("g1", rows).stored == 0
    (review,) = store.admission_reviews("g1")
    assert (review.gate, review.seq, review.plate, review.credential_id) == (
        "g1",
        2,
        "苏E12345",
        "TMP-20261128-0031",
    )
    assert review.decided_at_ns == 1_795_835_400_000_000_000
    assert review.revoked_at_ns == 1_795_834_800_000_000_000
