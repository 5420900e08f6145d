"""Allow-list persistence: codec round trips, snapshots, deltas, consumption, integrity."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgegate.allowlist import store
from edgegate.core import credential_codec as codec
from edgegate.core.allowlist import AllowList, AllowListError
from edgegate.core.domain import (
    Appointment,
    BlacklistEntry,
    BlacklistReason,
    Credential,
    CredentialKind,
    HolderType,
    PlateColour,
    Registration,
    TemporaryPermit,
    VehicleCategory,
)
from edgegate.log.schema import MIGRATIONS, migrate
from tests.test_allowlist_index import T0, appt, black, permit, reg


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "gate.db")
    connection.execute("PRAGMA journal_mode=WAL")
    store.create_tables(connection)
    connection.commit()
    yield connection
    connection.close()


def snapshot(
    conn: sqlite3.Connection, entries: list[Credential], version: int = 1
) -> store.AllowListState:
    conn.execute("BEGIN IMMEDIATE")
    state = store.write_snapshot(conn, entries, version, T0, "central")
    conn.commit()
    return state


def contents(allowlist: AllowList) -> list[Credential]:
    return sorted(allowlist, key=lambda c: (c.kind, c.id))


# --- codec ---------------------------------------------------------------------------------

_instants = st.integers(0, 4_102_444_800).map(lambda s: datetime.fromtimestamp(s, UTC))
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_gates = st.frozensets(st.text("G123456789", min_size=1, max_size=3), max_size=4)
_plates = st.sampled_from(["苏E12345", "沪AD12345", "京A1234挂", "粤B8888学"])

credentials = st.one_of(
    st.builds(
        Registration,
        id=_text,
        plate=_plates,
        colour=st.sampled_from(PlateColour),
        category=st.sampled_from(VehicleCategory),
        holder=st.sampled_from(HolderType),
        organisation=_text,
        valid_from=_instants,
        valid_until=st.none() | _instants,
        gates=_gates,
    ),
    st.builds(
        TemporaryPermit,
        id=_text,
        plate=_plates,
        colour=st.sampled_from(PlateColour),
        category=st.sampled_from(VehicleCategory),
        visitor=_text,
        host=_text,
        purpose=_text,
        valid_from=_instants,
        valid_until=_instants,
        gates=_gates,
    ),
    st.builds(
        Appointment,
        id=_text,
        plate=_plates,
        colour=st.sampled_from(PlateColour),
        category=st.sampled_from(VehicleCategory),
        window_start=_instants,
        window_end=_instants,
        destination=_text,
        un_number=st.text("0123456789", min_size=4, max_size=4),
        hazard_class=st.sampled_from(["3", "2.1", "6.1", "4.3", "8"]),
        waybill=_text,
        gates=_gates,
        consumed=st.booleans(),
    ),
    st.builds(
        BlacklistEntry,
        id=_text,
        plate=_plates,
        reason=st.sampled_from(BlacklistReason),
        detail=_text,
        source=_text,
        valid_from=_instants,
        valid_until=st.none() | _instants,
    ),
)


@settings(max_examples=300)
@given(credentials)
def test_codec_round_trips_exactly(credential: Credential) -> None:
    data = codec.encode(credential)
    decoded = codec.decode(data)
    assert decoded == credential
    assert type(decoded) is type(credential)
    assert codec.encode(decoded) == data  # canonical
    assert codec.kind_and_id(data) == (credential.kind.value, credential.id)


@dataclasses.dataclass(frozen=True, slots=True)
class _Point:
    x: int
    y: str = "b"


@dataclasses.dataclass(frozen=True, slots=True)
class _Point3(_Point):  # slots of its own beside its base's: another layout
    z: float = 0.0


@dataclasses.dataclass(frozen=True)
class _Plain:
    x: int
    y: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Checked:
    x: int
    y: str

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x < 0")


@pytest.mark.parametrize(
    ("cls", "values"),
    [(_Point, (1, "a")), (_Point3, (1, "a", 2.5)), (_Plain, (1, "a")), (_Checked, (1, "a"))],
)
def test_positional_constructor_builds_the_frozen_instance_init_would(
    cls: type[Any], values: tuple[Any, ...]
) -> None:
    built = codec.positional_constructor(cls)(*values)
    expected = cls(*values)
    assert type(built) is cls
    assert built == expected and hash(built) == hash(expected) and repr(built) == repr(expected)
    assert copy.deepcopy(built) == expected and dataclasses.astuple(built) == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.x = 5


def test_positional_constructor_keeps_post_init_checks() -> None:
    with pytest.raises(ValueError, match="x < 0"):
        codec.positional_constructor(_Checked)(-1, "a")


@pytest.mark.parametrize("credential", [reg(), permit(), appt(), black()])
def test_decoded_credentials_are_their_classes_and_stay_frozen(credential: Credential) -> None:
    decoded = codec.decode(codec.encode(credential))
    assert type(decoded) is type(credential) and decoded == credential
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.plate = "X"  # type: ignore[misc]


def test_decoded_gate_sets_are_shared_and_gates_must_be_strings() -> None:
    a = codec.decode(codec.encode(reg("REG-1", gates=frozenset({"G2", "G1"}))))
    b = codec.decode(codec.encode(permit("TMP-1", gates=frozenset({"G1", "G2"}))))
    assert isinstance(a, Registration) and isinstance(b, TemporaryPermit)
    assert a.gates == frozenset({"G1", "G2"}) and a.gates is b.gates
    fields = msgpack.unpackb(codec.encode(reg("REG-2", gates=frozenset({"G1"}))))
    for bad in ({"G1": True}, "G1", [1], [True], ["G1", 2]):
        fields[-1] = bad
        with pytest.raises(codec.CodecError, match="not an encoded credential"):
            codec.decode(msgpack.packb(fields))


def test_gates_that_are_not_a_list_are_refused_even_when_falsy() -> None:
    """No gates means every gate: only an empty list may say so, not nil, 0 or ''."""
    fields = msgpack.unpackb(codec.encode(reg("REG-2")))
    decoded = codec.decode(msgpack.packb(fields))
    assert fields[-1] == [] and isinstance(decoded, Registration) and decoded.gates == frozenset()
    bad: object
    for bad in (None, 0, "", False, {}):
        fields[-1] = bad
        with pytest.raises(codec.CodecError, match="not an encoded credential"):
            codec.decode(msgpack.packb(fields))


def test_codec_is_compact_and_canonical() -> None:
    a = reg(gates=frozenset({"G3", "G1", "G2"}))
    b = reg(gates=frozenset({"G2", "G1", "G3"}))
    assert codec.encode(a) == codec.encode(b)
    fields = msgpack.unpackb(codec.encode(a))
    assert fields[:6] == ["registration", "R1", "苏E12345", "unknown", "ordinary", "company"]
    assert fields[7] == int(T0.timestamp())
    assert fields[9] == ["G1", "G2", "G3"]
    assert b"organisation" not in codec.encode(a)  # positional: no field names


def test_codec_keeps_the_instant_across_time_zones() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 6, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    decoded = codec.decode(codec.encode(reg(valid_from=local)))
    assert isinstance(decoded, Registration)
    assert decoded.valid_from == datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    assert decoded.valid_from.tzinfo is UTC


@pytest.mark.parametrize(
    ("credential", "message"),
    [
        (reg(valid_from=datetime(2026, 1, 1)), "valid_from: naive"),
        (permit(valid_until=T0 + timedelta(milliseconds=1)), "valid_until: .* fractional"),
        (appt(window_end=datetime(2026, 1, 1)), "window_end: naive"),
    ],
)
def test_codec_refuses_what_would_not_round_trip(credential: Credential, message: str) -> None:
    with pytest.raises(codec.CodecError, match=message):
        codec.encode(credential)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb(42),
        msgpack.packb([]),
        msgpack.packb(["registration", "R1"]),
        msgpack.packb(["lorry", "R1", "苏E12345"]),
        codec.encode(reg())[:-3],
        codec.encode(reg()) + b"\x00",
        msgpack.packb(["blacklist", "B1", "苏E12345", "bored", "", "x", 0, None]),
    ],
)
def test_codec_refuses_garbage(data: bytes) -> None:
    with pytest.raises(codec.CodecError):
        codec.decode(data)


# --- store ---------------------------------------------------------------------------------


def test_create_tables_is_idempotent(conn: sqlite3.Connection) -> None:
    store.create_tables(conn)
    store.create_tables(conn)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"allowlist_entry", "allowlist_state"} <= tables
    assert store.read_state(conn) is None
    empty = store.load(conn)
    assert (len(empty), empty.version, empty.updated_at) == (0, 0, None)


def test_snapshot_round_trip(conn: sqlite3.Connection) -> None:
    entries: list[Credential] = [
        reg(),
        reg("中-7", "苏E54321"),
        reg("a10", "苏E11111"),
        reg("a9", "苏E11112"),
        reg("B", "苏E11113"),
        permit(),
        appt(consumed=True),
        appt("A2", "苏E1234挂"),
        black("B1", "沪AD12345", valid_until=T0 + timedelta(days=30)),
    ]
    state = snapshot(conn, entries, version=5)
    assert state == store.read_state(conn)
    assert (state.version, state.updated_at, state.source) == (5, T0, "central")
    assert state.content_hash is not None

    fresh = sqlite3.connect(conn.execute("PRAGMA database_list").fetchone()[2])
    loaded = store.load(fresh)
    assert contents(loaded) == sorted(entries, key=lambda c: (c.kind, c.id))
    assert (loaded.version, loaded.updated_at) == (5, T0)
    assert loaded.content_hash == state.content_hash
    assert loaded.exact("苏E12345").permits == (permit(),)
    assert loaded.exact("苏E12345").registrations == (reg(),)
    assert not fresh.in_transaction
    fresh.close()


def _term(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest(), "little")


def test_the_seal_sums_the_hashes_of_every_column_of_every_entry_and_the_state(
    conn: sqlite3.Connection,
) -> None:
    entries: list[Credential] = [reg("b"), reg("a", "苏E54321"), black("z"), permit("中")]
    state = snapshot(conn, entries)
    rows = [
        f"{len(c.kind.value)}:{c.kind.value}{len(c.id.encode()) + 1}:{c.kind.value[0]}{c.id}"
        f"{len(c.plate.encode())}:{c.plate}".encode()
        + codec.encode(c)
        for c in entries
    ]
    ns = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    total = sum(map(_term, rows)) + _term(f"state:1:{ns}:central".encode())
    expected = (total % (1 << 256)).to_bytes(32, "little")
    assert state.content_hash == expected
    assert store.load(conn).content_hash == expected
    assert store.verify(conn) is None


def test_the_seal_kept_up_to_date_equals_the_seal_computed_afresh(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    snapshot(conn, [reg(), appt(), black(), permit()], version=1)
    conn.execute("BEGIN IMMEDIATE")
    store.set_appointment_consumed(conn, "A1", True)
    store.write_delta(
        conn,
        [reg(plate="苏E54321"), appt(waybill="WB2"), reg("R2", "苏E22222")],
        [(CredentialKind.PERMIT, "P1")],
        2,
        T0 + timedelta(hours=1),
        "central:k1",
    )
    conn.commit()
    kept = store.read_state(conn)
    assert kept is not None and kept.content_hash is not None
    other = sqlite3.connect(tmp_path / "other.db")
    store.create_tables(other)
    other.execute("BEGIN")
    fresh = store.write_snapshot(
        other,
        [reg(plate="苏E54321"), appt(waybill="WB2", consumed=True), reg("R2", "苏E22222"), black()],
        2,
        T0 + timedelta(hours=1),
        "central:k1",
    )
    other.commit()
    other.close()
    assert kept.content_hash == fresh.content_hash


def test_load_reads_in_key_order_without_sorting(conn: sqlite3.Connection) -> None:
    plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + store._LOAD_SQL))
    assert "TEMP B-TREE" not in plan


def test_snapshot_replaces_everything_and_plates_are_normalised(
    conn: sqlite3.Connection,
) -> None:
    snapshot(conn, [reg(), reg("R2", "苏E54321")], version=1)
    snapshot(conn, [permit(plate="苏e 1234o")], version=2)
    rows = conn.execute("SELECT kind, id, plate FROM allowlist_entry").fetchall()
    assert rows == [("permit", "P1", "苏E12340")]
    loaded = store.load(conn)
    assert contents(loaded) == [permit(plate="苏E12340")]
    assert conn.execute("SELECT count(*) FROM allowlist_state").fetchone() == (1,)
    assert _secondary_indexes(conn) == set()  # lookups by plate are in memory


def test_writes_need_the_callers_transaction(conn: sqlite3.Connection) -> None:
    assert not conn.in_transaction
    with pytest.raises(store.StoreError, match="transaction"):
        store.write_snapshot(conn, [reg()], 1, T0, "central")
    with pytest.raises(store.StoreError, match="transaction"):
        store.write_delta(conn, [reg()], [], 1, T0, "central")
    with pytest.raises(store.StoreError, match="transaction"):
        store.set_appointment_consumed(conn, "A1", True)


def test_writes_never_commit(conn: sqlite3.Connection, tmp_path: Path) -> None:
    snapshot(conn, [reg()], version=1)
    other = sqlite3.connect(tmp_path / "gate.db")
    conn.execute("BEGIN IMMEDIATE")
    store.write_snapshot(conn, [appt()], 2, T0, "central")
    store.write_delta(conn, [permit()], [], 3, T0, "central")
    store.set_appointment_consumed(conn, "A1", True)
    assert conn.in_transaction
    assert store.read_state(other) == snapshot_state_v1(other)
    assert contents(store.load(other)) == [reg()]
    conn.rollback()
    assert contents(store.load(conn)) == [reg()]
    assert store.load(conn).version == 1
    other.close()


def snapshot_state_v1(conn: sqlite3.Connection) -> store.AllowListState:
    state = store.read_state(conn)
    assert state is not None
    assert state.version == 1
    return state


def test_failed_snapshot_leaves_the_table_and_the_callers_work(
    conn: sqlite3.Connection,
) -> None:
    snapshot(conn, [reg(), appt()], version=1)
    conn.execute("CREATE TABLE event (n INTEGER)")
    conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO event VALUES (1)")
    with pytest.raises(AllowListError, match="invalid plate"):
        store.write_snapshot(conn, [permit(), reg("R9", "苏E1")], 2, T0, "central")
    with pytest.raises(AllowListError, match="given twice"):
        store.write_snapshot(conn, [permit(), permit()], 2, T0, "central")
    conn.commit()
    assert conn.execute("SELECT n FROM event").fetchall() == [(1,)]
    loaded = store.load(conn)
    assert contents(loaded) == [appt(), reg()]
    assert loaded.version == 1


def test_delta_round_trip_matches_the_in_memory_delta(conn: sqlite3.Connection) -> None:
    initial: list[Credential] = [reg(), reg("R2", "苏E54321"), black(), appt()]
    snapshot(conn, initial, version=1)
    memory = AllowList.from_credentials(initial, version=1, updated_at=T0)
    upserts: list[Credential] = [permit(), reg("R2", "苏E11111"), appt(waybill="WB9")]
    removals = [(CredentialKind.BLACKLIST, "B1")]
    later = T0 + timedelta(hours=1, microseconds=7)

    conn.execute("BEGIN IMMEDIATE")
    state = store.write_delta(conn, upserts, removals, 2, later, "central")
    conn.commit()
    memory.apply_delta(upserts, removals, 2, later)

    assert (state.version, state.updated_at, state.source) == (2, later, "central")
    assert state.content_hash is not None  # the seal, brought up to date
    assert store.read_state(conn) == state
    loaded = store.load(conn)
    assert contents(loaded) == contents(memory)
    assert (loaded.version, loaded.updated_at) == (2, later)
    assert loaded.exact("苏E54321").empty
    assert loaded.content_hash is not None


@pytest.mark.parametrize(
    ("upserts", "removals", "version", "message"),
    [
        ([permit()], [(CredentialKind.REGISTRATION, "nope")], 2, "not in the allow-list"),
        ([permit()], [], 1, "not newer than 1"),
        ([reg()], [(CredentialKind.REGISTRATION, "R1")], 2, "both upserted and removed"),
        ([permit(), permit()], [], 2, "given twice"),
        ([permit(plate="苏")], [], 2, "invalid plate"),
        ([permit(valid_from=datetime(2026, 1, 1))], [], 2, "naive"),
    ],
)
def test_bad_delta_writes_nothing(
    conn: sqlite3.Connection,
    upserts: list[Credential],
    removals: list[tuple[CredentialKind, str]],
    version: int,
    message: str,
) -> None:
    before = snapshot(conn, [reg(), appt()], version=1)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(AllowListError, match=message):
        store.write_delta(conn, upserts, removals, version, T0, "central")
    conn.commit()
    assert store.read_state(conn) == before
    assert contents(store.load(conn)) == [appt(), reg()]


def test_consumption_is_stored_and_survives_upserts(conn: sqlite3.Connection) -> None:
    snapshot(conn, [appt(), reg()], version=1)
    conn.execute("BEGIN IMMEDIATE")
    assert store.set_appointment_consumed(conn, "A1", True) == appt(consumed=True)
    conn.commit()
    state = store.read_state(conn)
    assert state is not None
    assert state.content_hash is not None  # the seal counts the consumption
    assert store.verify(conn) is None
    assert store.load(conn).exact("苏E12345").appointments == (appt(consumed=True),)

    conn.execute("BEGIN IMMEDIATE")
    store.write_delta(conn, [appt(waybill="WB2")], [], 2, T0, "central")
    conn.commit()
    assert store.load(conn).exact("苏E12345").appointments == (appt(waybill="WB2", consumed=True),)
    snapshot(conn, [appt()], version=3)
    assert store.load(conn).exact("苏E12345").appointments == (appt(consumed=True),)

    conn.execute("BEGIN IMMEDIATE")
    assert store.set_appointment_consumed(conn, "A1", False) == appt()
    conn.commit()
    assert store.load(conn).exact("苏E12345").appointments == (appt(),)


def test_consuming_an_unknown_appointment_is_an_error(conn: sqlite3.Connection) -> None:
    snapshot(conn, [reg()], version=1)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(AllowListError, match="unknown appointment 'R1'"):
        store.set_appointment_consumed(conn, "R1", True)
    conn.rollback()


def test_store_and_memory_stay_in_step_through_consumption(conn: sqlite3.Connection) -> None:
    snapshot(conn, [appt()], version=1)
    memory = store.load(conn)
    conn.execute("BEGIN IMMEDIATE")
    store.set_appointment_consumed(conn, "A1", True)
    conn.commit()
    memory.consume_appointment("A1")
    snapshot(conn, [appt(), reg()], version=2)
    memory.replace([appt(), reg()], 2, T0)
    assert contents(store.load(conn)) == contents(memory)


def test_load_refuses_a_table_changed_behind_its_back(conn: sqlite3.Connection) -> None:
    snapshot(conn, [reg(), appt()], version=1)
    conn.execute(
        "INSERT INTO allowlist_entry VALUES ('registration', 'X', '苏E99999', ?)",
        (codec.encode(reg("X", "苏E99999")),),
    )
    conn.commit()
    with pytest.raises(store.StoreError, match="changed outside edgegate"):
        store.load(conn)


def test_updated_at_may_be_absent(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")
    written = store.write_snapshot(conn, [reg()], 1, None, "import:lists.csv")
    conn.commit()
    assert written.updated_at is None
    assert store.read_state(conn) == written
    assert store.load(conn).updated_at is None


def test_a_thousand_entries_round_trip(conn: sqlite3.Connection) -> None:
    entries: list[Credential] = [reg(f"R{i:04d}", f"苏E{i:05d}") for i in range(1000)]
    entries += [appt(f"A{i}", f"苏E{i:05d}") for i in range(0, 1000, 7)]
    state = snapshot(conn, entries, version=9)
    loaded = store.load(conn)
    assert len(loaded) == len(entries)
    assert loaded.content_hash == state.content_hash
    assert loaded.exact("苏E00007").appointments == (appt("A7", "苏E00007"),)
    assert loaded.fuzzy("苏E0000S")[0].credentials.plate == "苏E00005"


@pytest.mark.parametrize("write", ["snapshot", "delta", "consume"])
def test_a_write_failing_midway_undoes_itself_but_not_the_callers_work(
    conn: sqlite3.Connection, write: str
) -> None:
    snapshot(conn, [reg(), appt()], version=1)
    conn.execute("CREATE TABLE event (n INTEGER)")
    # The state row is written last: failing there means the entries were already changed.
    conn.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE ON allowlist_state"
        " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    conn.commit()
    writes: dict[str, Callable[[], object]] = {
        "snapshot": lambda: store.write_snapshot(conn, [permit()], 2, T0, "central"),
        "delta": lambda: store.write_delta(
            conn, [permit()], [(CredentialKind.REGISTRATION, "R1")], 2, T0, "central"
        ),
        "consume": lambda: store.set_appointment_consumed(conn, "A1", True),
    }
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO event VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        writes[write]()
    assert conn.in_transaction
    conn.commit()
    assert conn.execute("SELECT n FROM event").fetchall() == [(1,)]
    conn.execute("DROP TRIGGER refuse")
    loaded = store.load(conn)
    assert contents(loaded) == [appt(), reg()]
    assert loaded.version == 1


def test_prepared_snapshot_writes_the_same(conn: sqlite3.Connection) -> None:
    entries: list[Credential] = [reg("R2"), appt(), permit(plate="苏e12345"), black()]
    plain = snapshot(conn, entries, version=1)
    conn.execute("BEGIN IMMEDIATE")
    store.set_appointment_consumed(conn, "A1", True)
    conn.commit()

    prepared = store.prepare_snapshot(entries)  # no transaction, no connection needed
    conn.execute("BEGIN IMMEDIATE")
    state = store.write_snapshot(conn, prepared, 2, T0, "central")
    conn.commit()
    expected: list[Credential] = [appt(consumed=True), black(), permit(), reg("R2")]
    assert contents(store.load(conn)) == expected
    assert state.content_hash != plain.content_hash  # A1 is consumed now
    with pytest.raises(AllowListError, match="invalid plate"):
        store.prepare_snapshot([reg(plate="苏E")])


@pytest.mark.parametrize("count", [2, 3, 15, 16, 17, 300])
def test_groups_of_encodings(count: int) -> None:
    encodings = [codec.encode(reg(f"R{i:03d}")) for i in range(count)]
    grouped = codec.group(encodings)
    assert codec.is_group(grouped)
    assert not any(codec.is_group(e) for e in encodings)
    assert codec.split(grouped) == encodings
    assert codec.decode_all(grouped) == [reg(f"R{i:03d}") for i in range(count)]
    assert codec.decode_all(encodings[0]) == [reg("R000")]
    built = encodings[0]
    for e in encodings[1:]:
        built = codec.grouped_with(built, e)
    assert built == grouped
    assert msgpack.unpackb(grouped) == [msgpack.unpackb(e) for e in encodings]


# --- staged snapshots ----------------------------------------------------------------------


def staged_snapshot(
    conn: sqlite3.Connection,
    entries: list[Credential],
    version: int,
    *,
    chunk: int = 2,
    consumed: set[str] | None = None,
) -> store.AllowListState:
    """Stage ``entries`` a few rows per transaction, as the service does, then swap them in."""
    prepared = store.prepare_snapshot(entries)
    conn.execute("BEGIN IMMEDIATE")
    store.start_staging(conn)
    conn.commit()
    for start in range(0, len(prepared.rows), chunk):
        conn.execute("BEGIN IMMEDIATE")
        store.stage_rows(conn, prepared.rows[start : start + chunk])
        conn.commit()
    staged = store.StagedSnapshot(len(prepared.rows), store.rows_hash(prepared.rows))
    conn.execute("BEGIN IMMEDIATE")
    state = store.swap_in_staged(conn, staged, version, T0, "central", consumed)
    conn.commit()
    while True:
        conn.execute("BEGIN IMMEDIATE")
        done = store.clear_retired(conn, rows=2)
        conn.commit()
        if done:
            return state


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _secondary_indexes(conn: sqlite3.Connection) -> set[str]:
    return {r[1] for r in conn.execute("PRAGMA index_list(allowlist_entry)") if r[3] != "pk"}


def test_migration_3_drops_the_plate_index_of_older_files(tmp_path: Path) -> None:
    older = sqlite3.connect(tmp_path / "gate.db", isolation_level=None)
    assert migrate(older, MIGRATIONS[:2]) == 2
    assert _secondary_indexes(older) == {"allowlist_entry_plate"}
    assert migrate(older, MIGRATIONS[:3]) == 3
    assert _secondary_indexes(older) == set()
    older.close()


def test_nothing_staged_is_visible_before_the_swap(conn: sqlite3.Connection) -> None:
    snapshot(conn, [reg()], version=1)
    prepared = store.prepare_snapshot([permit(), black()])
    conn.execute("BEGIN IMMEDIATE")
    store.start_staging(conn)
    store.stage_rows(conn, prepared.rows)
    conn.commit()
    loaded = store.load(conn)
    assert contents(loaded) == [reg()] and loaded.version == 1


@pytest.mark.parametrize("narrowed", [False, True])
def test_consumed_appointments_stay_consumed_across_a_staged_snapshot(
    conn: sqlite3.Connection, narrowed: bool
) -> None:
    snapshot(conn, [appt(), appt("A2", "苏E1234挂"), reg()], version=1)
    conn.execute("BEGIN IMMEDIATE")
    store.set_appointment_consumed(conn, "A1", True)
    conn.commit()
    assert store.consumed_appointments(conn) == {"A1"}
    consumed = {"A1", "A2", "gone"} if narrowed else None
    state = staged_snapshot(
        conn, [appt(waybill="WB2"), appt("A2", "苏E1234挂")], 2, consumed=consumed
    )
    loaded = store.load(conn)
    assert loaded.exact("苏E12345").appointments == (appt(waybill="WB2", consumed=True),)
    assert loaded.exact("苏E1234挂").appointments == (appt("A2", "苏E1234挂"),)
    assert state.content_hash is not None  # the seal counts the consumption kept
    assert store.verify(conn) is None
    assert loaded.content_hash == state.content_hash


def test_swap_refuses_a_missing_or_incomplete_staging_table(conn: sqlite3.Connection) -> None:
    snapshot(conn, [reg()], version=1)
    prepared = store.prepare_snapshot([permit(), black()])
    staged = store.StagedSnapshot(len(prepared.rows), store.rows_hash(prepared.rows))
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(store.StoreError, match="no staged snapshot"):
        store.swap_in_staged(conn, staged, 2, T0, "central")
    store.start_staging(conn)
    store.stage_rows(conn, prepared.rows[:1])
    with pytest.raises(store.StoreError, match="holds 1 entries, the snapshot has 2"):
        store.swap_in_staged(conn, staged, 2, T0, "central")
    conn.commit()
    loaded = store.load(conn)
    assert contents(loaded) == [reg()] and loaded.version == 1


def test_a_staging_table_left_by_a_crash_is_replaced(conn: sqlite3.Connection) -> None:
    snapshot(conn, [reg()], version=1)
    conn.execute("BEGIN IMMEDIATE")
    store.start_staging(conn)
    store.stage_rows(conn, store.prepare_snapshot([black()]).rows)
    conn.commit()  # ... and the process died here
    staged_snapshot(conn, [permit()], version=2)
    assert contents(store.load(conn)) == [permit()]
    assert _tables(conn) == {"allowlist_entry", "allowlist_state"}


# --- tampering -----------------------------------------------------------------------------


def _flip_last_byte(conn: sqlite3.Connection, column: str, kind: str, id_: str) -> str:
    """Flip the lowest bit of the column's last byte with plain SQL; the new value, as text."""
    (value,) = conn.execute(
        f"SELECT CAST({column} AS BLOB) FROM allowlist_entry WHERE kind = ? AND id = ?",
        (kind, id_),
    ).fetchone()
    flipped = bytes(value[:-1]) + bytes([value[-1] ^ 1])
    cast = "TEXT" if column == "plate" else "BLOB"
    conn.execute(
        f"UPDATE allowlist_entry SET {column} = CAST(? AS {cast}) WHERE kind = ? AND id = ?",
        (flipped, kind, id_),
    )
    conn.commit()
    return flipped.decode(errors="replace")


def test_one_flipped_byte_of_a_blacklisted_plate_is_found_and_named(
    conn: sqlite3.Connection,
) -> None:
    snapshot(conn, [reg(plate="苏E99999"), black("B1", "苏E99999"), reg("R2", "苏E54321")])
    flipped = _flip_last_byte(conn, "plate", "blacklist", "B1")
    assert flipped == "苏E99998"

    found = store.verify(conn)
    assert found == store.Tampering(
        "plate column '苏E99998' is not the entry's plate '苏E99999'", "blacklist", "B1", "苏E99998"
    )
    with pytest.raises(store.AllowListTamperedError) as info:
        store.load(conn)
    assert info.value.finding == found
    assert "blacklist 'B1' (plate '苏E99998')" in str(info.value)
    # What a gate runs on meanwhile: each entry as its own data says, the blacklist entry
    # under its plate again.
    salvaged, left_out = store.salvage(conn)
    assert left_out == []
    assert salvaged.exact("苏E99999").blacklist == (black("B1", "苏E99999"),)
    assert salvaged.exact("苏E99998").empty


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        # The data's last byte (a blacklist's open end, msgpack nil) turned into another value.
        ("UPDATE allowlist_entry SET data = data || x'00' WHERE id = 'B1'", "B1"),
        ("UPDATE allowlist_entry SET kind = 'registration' WHERE id = 'B1'", "B1"),
        ("UPDATE allowlist_entry SET id = 'B2' WHERE id = 'B1'", "B2"),
        ("DELETE FROM allowlist_entry WHERE id = 'B1'", None),
        ("UPDATE allowlist_state SET version = 7", None),
        ("UPDATE allowlist_state SET updated_at_ns = updated_at_ns + 86400000000000", None),
        ("UPDATE allowlist_state SET content_hash = NULL", None),
        ("DELETE FROM allowlist_state", None),
    ],
)
def test_every_edit_of_what_lookups_use_is_caught(
    conn: sqlite3.Connection, edit: str, named: str | None
) -> None:
    snapshot(conn, [reg(plate="苏E99999"), black("B1", "苏E99999")])
    assert store.verify(conn) is None
    conn.execute(edit)
    conn.commit()
    found = store.verify(conn)
    assert found is not None
    assert found.id == named, found
    with pytest.raises(store.AllowListTamperedError):
        store.load(conn)


def test_a_consumption_is_sealed_and_undoing_it_by_hand_is_caught(
    conn: sqlite3.Connection,
) -> None:
    snapshot(conn, [appt(), reg()])
    conn.execute("BEGIN IMMEDIATE")
    store.set_appointment_consumed(conn, "A1", True)
    conn.commit()
    assert store.verify(conn) is None
    assert store.load(conn).exact("苏E12345").appointments == (appt(consumed=True),)

    conn.execute(
        "UPDATE allowlist_entry SET data = ? WHERE kind = 'appointment' AND id = 'A1'",
        (codec.encode(appt()),),
    )
    conn.commit()
    found = store.verify(conn)
    assert found is not None and "do not match the seal" in found.problem
    with pytest.raises(store.AllowListTamperedError):
        store.load(conn)


def test_a_tampered_seal_stays_wrong_through_deltas_and_a_snapshot_restores_it(
    conn: sqlite3.Connection,
) -> None:
    snapshot(conn, [reg(plate="苏E99999"), black("B1", "苏E99999"), appt()])
    _flip_last_byte(conn, "plate", "blacklist", "B1")
    conn.execute("BEGIN IMMEDIATE")
    store.write_delta(conn, [reg("R2", "苏E22222")], [], 2, T0, "central")
    store.set_appointment_consumed(conn, "A1", True)
    conn.commit()
    assert store.verify(conn) is not None
    snapshot(conn, [reg(plate="苏E99999"), black("B1", "苏E99999"), appt()], version=3)
    assert store.verify(conn) is None
    assert store.load(conn).exact("苏E99999").blacklist == (black("B1", "苏E99999"),)


def test_undecodable_data_is_named_and_left_out_of_the_salvage(conn: sqlite3.Connection) -> None:
    snapshot(conn, [reg(), black("B1", "苏E99999")])
    conn.execute("UPDATE allowlist_entry SET data = x'c1' WHERE id = 'R1'")
    conn.commit()
    found = store.verify(conn)
    assert found is not None and (found.kind, found.id) == ("registration", "R1")
    assert "does not hold a valid credential" in found.problem
    salvaged, left_out = store.salvage(conn)
    assert [(t.kind, t.id) for t in left_out] == [("registration", "R1")]
    assert len(salvaged) == 1 and salvaged.exact("苏E99999").blacklist
