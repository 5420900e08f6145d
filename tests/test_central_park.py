"""Central's park projections on SQLite and a real PostgreSQL: presence across gates, gate
state, exactly-once application under redelivery and racing stores, rebuild equals live."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgegate.central.store import CentralStore, open_store, projections
from edgegate.central.store.postgres import PostgresStore
from edgegate.core import events as ev
from edgegate.core.codec import datetime_to_ns
from edgegate.core.domain import Direction, VehicleCategory
from edgegate.log.chain import GENESIS_HASH, Row
from edgegate.sync.protocol import Status
from tests import test_central_store as central_store_tests
from tests.chains import hashed_row

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
C = VehicleCategory


class GateLog:
    """A gate's log made by hand: real events, correctly chained, at given wall times."""

    def __init__(self, gate: str) -> None:
        self.gate = gate
        self.rows: list[Row] = []

    def add(self, event: ev.Event, at: datetime) -> Row:
        prev = self.rows[-1][9] if self.rows else GENESIS_HASH
        seq = len(self.rows) + 1
        row = hashed_row(
            prev,
            self.gate,
            seq,
            datetime_to_ns(at),
            seq * 1000,
            "boot-1",
            event.TYPE,
            event.lane,
            event.VERSION,
            ev.encode(event),
        )
        self.rows.append(row)
        return row

    def passed(
        self,
        plate: str,
        direction: Direction,
        at: datetime,
        category: VehicleCategory | None = C.ORDINARY,
        permit_until: datetime | None = None,
    ) -> Row:
        lane = "in-1" if direction is Direction.ENTRY else "out-1"
        event = ev.VehiclePassed(
            lane=lane,
            plate=plate,
            direction=direction,
            category=category,
            credential_id=f"cred-{plate}",
            permit_until=permit_until,
        )
        return self.add(event, at)


def park_logs() -> tuple[GateLog, GateLog]:
    """Gate A and B: four vehicles enter at A; two leave at B, one at A; faults, a mode, a
    list version along the way."""
    a, b = GateLog("gate-a"), GateLog("gate-b")
    a.add(
        ev.AllowListUpdated(
            kind=ev.AllowListUpdateKind.SNAPSHOT,
            version=7,
            previous_version=0,
            source="central",
            upserted=4,
            removed=0,
            entries=4,
            content_hash="x" * 64,
        ),
        T0,
    )
    a.passed("苏E00001", Direction.ENTRY, T0 + timedelta(minutes=1), C.ORDINARY)
    a.passed(
        "苏E00002",
        Direction.ENTRY,
        T0 + timedelta(minutes=2),
        C.HAZMAT,
        permit_until=T0 + timedelta(hours=2),
    )
    a.passed("苏E00003", Direction.ENTRY, T0 + timedelta(minutes=3), C.HAZWASTE)
    a.add(ev.DeviceFault(device="plc-1", code="timeout", message="no answer"), T0)
    a.passed("苏E00004", Direction.ENTRY, T0 + timedelta(minutes=4), C.ENGINEERING)
    b.add(
        ev.ModeChanged(
            mode=ev.GateMode.INCIDENT,
            previous=ev.GateMode.NORMAL,
            source=ev.ModeSource.CENTRAL,
            operator="ops",
            reason="drill",
        ),
        T0 + timedelta(minutes=5),
    )
    b.passed("苏E00001", Direction.EXIT, T0 + timedelta(minutes=10), None)
    b.add(ev.DeviceFault(device="cam-out-1", code="timeout", message="silent"), T0)
    b.add(ev.DeviceRecovered(device="cam-out-1", down_ms=500), T0 + timedelta(minutes=11))
    a.passed("苏E00003", Direction.EXIT, T0 + timedelta(minutes=12), C.HAZWASTE)
    return a, b


# The central store tests' fixtures: every test runs on SQLite and on PostgreSQL.
dsn = central_store_tests.dsn
store = central_store_tests.store


def race(dsn: str, *work: Callable[[CentralStore], object]) -> list[CentralStore]:
    """Run each of ``work`` on a store of its own (a connection, as a sink has), all at once;
    return the stores (open: the caller closes them)."""
    stores = [open_store(dsn) for _ in work]
    barrier = threading.Barrier(len(work))
    errors: list[BaseException] = []

    def run(s: CentralStore, fn: Callable[[CentralStore], object]) -> None:
        try:
            barrier.wait()
            fn(s)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in zip(stores, work, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return stores


def snapshot(store: CentralStore) -> tuple[object, ...]:
    """Everything the projections hold, comparable between stores."""
    states = [(*vars_of(g)[:2], *vars_of(g)[3:]) for g in store.gate_states()]
    return (store.presence(), states, store.projection_positions())


def vars_of(obj: object) -> tuple[object, ...]:
    return tuple(getattr(obj, f) for f in obj.__slots__)  # type: ignore[attr-defined]


def plates(store: CentralStore, **filters: object) -> list[str]:
    return [v.plate for v in store.presence(**filters)]  # type: ignore[arg-type]


def test_entry_at_one_gate_exit_at_another(store: CentralStore) -> None:
    a, b = park_logs()
    store.store_batch("gate-a", a.rows[:5])
    assert plates(store) == ["苏E00002", "苏E00003", "苏E00001"]
    store.store_batch("gate-b", b.rows)
    store.store_batch("gate-a", a.rows[5:])

    inside = store.presence()
    # Hazmat first, then hazwaste (left), then the others by entry time.
    assert [v.plate for v in inside] == ["苏E00002", "苏E00004"]
    hazmat = inside[0]
    assert hazmat.category is C.HAZMAT and hazmat.dangerous
    assert (hazmat.entry_gate, hazmat.entry_seq, hazmat.lane) == ("gate-a", 3, "in-1")
    assert hazmat.entered_at_ns == datetime_to_ns(T0 + timedelta(minutes=2))
    assert hazmat.permit_until_ns == datetime_to_ns(T0 + timedelta(hours=2))
    assert hazmat.credential_id == "cred-苏E00002"
    assert plates(store, categories=[C.HAZMAT, C.HAZWASTE]) == ["苏E00002"]
    assert plates(store, categories=[]) == []
    assert plates(store, gate="gate-b") == []
    assert plates(store, plate="苏E00004") == ["苏E00004"]
    assert plates(store, limit=1) == ["苏E00002"]

    states = {g.gate: g for g in store.gate_states()}
    ga, gb = states["gate-a"], states["gate-b"]
    assert (ga.stored_seq, ga.last_seq, ga.allowlist_version, ga.mode) == (7, 7, 7, None)
    assert ga.last_event_at_ns == a.rows[-1][1]
    assert [(f.device, f.code, f.seq) for f in ga.faults] == [("plc-1", "timeout", 5)]
    assert (gb.mode, gb.faults, gb.allowlist_version) == ("incident", (), None)
    assert gb.state is None and not gb.online and gb.lag is None


def test_a_page_of_presence_reads_the_index_in_its_order(store: CentralStore) -> None:
    """Presence's ORDER BY is its index's (migration 8): a page (the park API's) reads the
    first rows of the index instead of sorting every vehicle inside."""
    sql = (
        f"SELECT {projections._INSIDE_COLUMNS} FROM park_vehicles WHERE inside = 1"
        f" ORDER BY {projections._DANGER_ORDER} LIMIT 1000"
    )

    def plan() -> str:
        if store.backend == "postgresql":
            # A sort made dear: the plan sorts only if the index cannot give the order.
            store._exec("SET LOCAL enable_sort = off")
            store._exec("SET LOCAL enable_seqscan = off")
        rows = store._query(
            ("EXPLAIN QUERY PLAN " if store.backend == "sqlite" else "EXPLAIN ") + sql
        )
        return "\n".join(str(r[-1]) for r in rows)

    found = store._run(plan, write=True)
    assert "park_vehicles_presence" in found, found
    assert "TEMP B-TREE" not in found and "Sort" not in found, found


def test_an_exit_stored_before_its_entry_still_wins(store: CentralStore) -> None:
    """Gate A was offline: its entry arrives after gate B's later exit."""
    a, b = GateLog("gate-a"), GateLog("gate-b")
    a.passed("苏E00009", Direction.ENTRY, T0)
    b.passed("苏E00009", Direction.EXIT, T0 + timedelta(minutes=5))
    store.store_batch("gate-b", b.rows)
    store.store_batch("gate-a", a.rows)
    assert store.presence() == []
    a.passed("苏E00009", Direction.ENTRY, T0 + timedelta(minutes=9))
    store.store_batch("gate-a", a.rows)
    assert [(v.plate, v.entry_seq) for v in store.presence()] == [("苏E00009", 2)]


def test_one_transaction_moving_a_plate_several_times_keeps_its_latest(
    store: CentralStore,
) -> None:
    """The movements of a group are upserted together: a plate's latest one wins, whatever
    the order of the gates in the group."""
    a, b = GateLog("gate-a"), GateLog("gate-b")
    a.passed("苏E00007", Direction.ENTRY, T0, C.HAZMAT, permit_until=T0 + timedelta(hours=1))
    a.passed("苏E00008", Direction.ENTRY, T0 + timedelta(minutes=1), None)
    b.passed("苏E00007", Direction.EXIT, T0 + timedelta(minutes=5))
    a.passed("苏E00007", Direction.ENTRY, T0 + timedelta(minutes=9), C.ORDINARY)
    b.passed("苏E00008", Direction.EXIT, T0 + timedelta(minutes=2))
    store.store_batches([("gate-b", b.rows), ("gate-a", a.rows)])
    inside = store.presence()
    assert [(v.plate, v.entry_gate, v.entry_seq, v.category) for v in inside] == [
        ("苏E00007", "gate-a", 3, C.ORDINARY)
    ]
    assert inside[0].permit_until_ns is None


def test_redelivered_batches_are_not_applied_twice(store: CentralStore) -> None:
    a, b = park_logs()
    store.store_batch("gate-a", a.rows[:4])
    once = snapshot(store)
    for _ in range(3):
        assert store.store_batch("gate-a", a.rows[:4]).stored == 0
        assert store.store_batch("gate-a", a.rows[2:4]).stored == 0
    assert snapshot(store) == once
    # Overlapping: only the new rows are applied.
    store.store_batch("gate-a", a.rows[2:])
    store.store_batches([("gate-b", b.rows), ("gate-b", b.rows), ("gate-a", a.rows)])
    states = {g.gate: g for g in store.gate_states()}
    positions = store.projection_positions()
    for log in (a, b):
        assert positions[("presence", log.gate)] == len(log.rows)
        assert positions[("gates", log.gate)] == len(log.rows)
        assert states[log.gate].last_seq == len(log.rows)
    assert events_projected(store) == {"gate-a": len(a.rows), "gate-b": len(b.rows)}


def events_projected(store: CentralStore) -> dict[str, int]:
    """Per gate, the events the gates projection counted: one each if applied exactly once."""
    rows = store._run(lambda: store._query("SELECT gate, events FROM park_gates"), write=False)
    return {str(g): int(n) for g, n in rows}


def test_rebuild_equals_live(store: CentralStore) -> None:
    a, b = park_logs()
    for i in range(0, len(a.rows), 3):
        store.store_batch("gate-a", a.rows[: i + 3])
        store.store_batch("gate-b", b.rows[: i + 2])
    live = snapshot(store)
    assert store.presence()  # something to compare
    assert store.rebuild_projections() == len(a.rows) + len(b.rows)
    assert snapshot(store) == live
    assert events_projected(store) == {"gate-a": len(a.rows), "gate-b": len(b.rows)}
    # And the projections go on from the rebuilt positions.
    a.passed("苏E00005", Direction.ENTRY, T0 + timedelta(hours=1), C.HAZMAT)
    store.store_batch("gate-a", a.rows)
    assert plates(store) == ["苏E00002", "苏E00005", "苏E00004"]


def test_events_stored_before_the_projections_are_caught_up(store: CentralStore) -> None:
    """Positions behind the head (a store migrated with events in it): the next batch of the
    gate applies the stored events first."""
    a, _ = park_logs()
    store.store_batch("gate-a", a.rows[:5])
    store._run(
        lambda: [
            store._exec(f"DELETE FROM {t}")
            for t in ("park_vehicles", "park_gates", "park_gate_faults", "projection_positions")
        ],
        write=True,
    )
    assert store.presence() == []
    store.store_batch("gate-a", a.rows)
    assert plates(store) == ["苏E00002", "苏E00001", "苏E00004"]  # 01 left at gate B
    assert events_projected(store) == {"gate-a": len(a.rows)}


def test_overstays_against_permit_end_and_dwell_limit(store: CentralStore) -> None:
    a, _ = park_logs()
    store.store_batch("gate-a", a.rows)
    limits = {C.HAZMAT: timedelta(hours=6), C.ENGINEERING: timedelta(hours=1)}
    assert store.overstays(datetime_to_ns(T0 + timedelta(minutes=30)), limits) == []
    found = store.overstays(datetime_to_ns(T0 + timedelta(hours=3)), limits)
    # The hazmat's permit ended at 2h; the engineering vehicle's hour ended at 1h04.
    assert [(o.vehicle.plate, o.limit) for o in found] == [
        ("苏E00004", "dwell-limit"),
        ("苏E00002", "permit-end"),
    ]
    assert found[1].deadline_ns == datetime_to_ns(T0 + timedelta(hours=2))
    assert found[1].exceeded_ns == 3600 * 10**9


def test_gate_status_keeps_the_latest(store: CentralStore) -> None:
    store.note_status(
        Status("gate-c", "online", head_seq=9, synced_seq=4, allowlist_version=3, at_ns=2000)
    )
    store.note_status(
        Status("gate-c", "offline", head_seq=1, synced_seq=1, allowlist_version=1, at_ns=1000)
    )
    [state] = store.gate_states()
    assert (state.gate, state.online, state.head_seq, state.synced_seq) == ("gate-c", True, 9, 4)
    assert (state.stored_seq, state.lag, state.status_allowlist_version) == (0, 9, 3)
    store.note_status(
        Status("gate-c", "offline", head_seq=9, synced_seq=9, allowlist_version=3, at_ns=3000)
    )
    assert not store.gate_states()[0].online


def test_two_stores_racing_on_one_gate_apply_each_event_once(postgres_dsn: str) -> None:
    """Two sinks (two connections) store overlapping batches of the same gates at once."""
    logs = [GateLog(f"gate-{i}") for i in range(3)]
    for n in range(60):
        for i, log in enumerate(logs):
            direction = Direction.ENTRY if n % 2 == 0 else Direction.EXIT
            at = T0 + timedelta(seconds=n * 10 + i)
            log.passed(f"苏E{n // 2:05d}", direction, at, C.HAZMAT)

    def sink(offset: int) -> Callable[[CentralStore], None]:
        def work(s: CentralStore) -> None:
            for end in range(4 + offset, 61, 4):
                s.store_batches([(log.gate, log.rows[max(0, end - 9) : end]) for log in logs])

        return work

    stores = race(postgres_dsn, sink(0), sink(1))
    try:
        for s in stores:
            s.store_batches([(log.gate, log.rows) for log in logs])
        assert events_projected(stores[0]) == {log.gate: 60 for log in logs}
        positions = stores[1].projection_positions()
        assert set(positions.values()) == {60}
        assert stores[0].presence() == []  # every vehicle left again
        live = snapshot(stores[0])
        stores[1].rebuild_projections()
        assert snapshot(stores[0]) == live
    finally:
        for s in stores:
            s.close()


# --- the commands -----------------------------------------------------------------------------


def edgegate(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgegate", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def said(err: str) -> list[str]:
    """What stderr says to a person: its lines that are not JSON log records."""
    return [line for line in err.splitlines() if line and not line.startswith("{")]


def test_roll_call_gates_and_rebuild_commands(store: CentralStore, dsn: str) -> None:
    a, b = park_logs()
    store.store_batch("gate-a", a.rows)
    store.store_batch("gate-b", b.rows)
    store.note_status(
        Status(
            "gate-b", "online", head_seq=9, synced_seq=4, allowlist_version=7, at_ns=b.rows[-1][1]
        )
    )

    ran = edgegate("central", "roll-call", "--store", dsn, "--json")
    assert ran.returncode == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert (doc["inside"], doc["hazmat"], doc["hazwaste"]) == (2, 1, 0)
    first = doc["vehicles"][0]
    assert (first["plate"], first["category"], first["entry_gate"]) == (
        "苏E00002",
        "hazmat",
        "gate-a",
    )
    assert first["entered_at"] == "2026-11-28T08:02:00+00:00"
    assert first["overdue"]["limit"] == "permit-end"  # its permit ended on 28 November
    assert [v["plate"] for v in doc["vehicles"]] == ["苏E00002", "苏E00004"]

    ran = edgegate("central", "roll-call", "--db", dsn, "--timezone", "UTC", "--gate", "gate-a")
    assert ran.returncode == 0, ran.stderr
    text = ran.stdout
    assert "2 inside, 1 hazmat" in text
    assert text.index("苏E00002") < text.index("苏E00004")
    assert "2026-11-28 08:02:00" in text and "past permit-end" in text

    ran = edgegate("central", "roll-call", "--store", dsn, "--category", "hazwaste")
    assert ran.returncode == 0 and "nobody inside" in ran.stdout

    ran = edgegate("central", "gates", "--store", dsn, "--json")
    assert ran.returncode == 0, ran.stderr
    gates = json.loads(ran.stdout)["gates"]
    assert [(g["gate"], g["online"]) for g in gates] == [("gate-a", False), ("gate-b", True)]
    ga, gb = gates
    assert (ga["synced_seq"], ga["allowlist_version"], ga["mode"]) == (7, 7, None)
    assert [f["device"] for f in ga["faulted_devices"]] == ["plc-1"]
    assert (gb["synced_seq"], gb["head_seq"], gb["lag"], gb["mode"]) == (4, 9, 5, "incident")
    assert gb["last_seen"] == "2026-11-28T08:11:00+00:00"

    ran = edgegate("central", "gates", "--store", dsn, "--timezone", "UTC")
    assert ran.returncode == 0, ran.stderr
    assert "plc-1 (timeout)" in ran.stdout and "incident" in ran.stdout
    assert ran.stdout.index("gate-a") < ran.stdout.index("gate-b")  # offline first

    before = snapshot(store)
    ran = edgegate("central", "rebuild-projections", "--store", dsn)
    assert ran.returncode == 0, ran.stderr
    assert "from 11 events of 2 gates" in ran.stdout
    assert snapshot(store) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["roll-call", "--category", "tanker"], "--category 'tanker': expected one of hazmat"),
        (["roll-call", "--dwell-limit", "hazmat"], "expected CATEGORY=DURATION"),
        (["roll-call", "--dwell-limit", "hazmat=-1h"], "--dwell-limit 'hazmat=-1h'"),
        (["gates", "--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, argv: list[str], message: str) -> None:
    with open_store(f"sqlite:///{tmp_path / 'c.db'}"):
        pass
    ran = edgegate("central", *argv, "--store", f"sqlite:///{tmp_path / 'c.db'}")
    assert ran.returncode == 2
    assert "Traceback" not in ran.stderr
    assert any(message in line for line in said(ran.stderr)), ran.stderr


@pytest.mark.parametrize("command", ["roll-call", "gates", "rebuild-projections"])
def test_a_missing_or_unreachable_store_is_named(tmp_path: Path, command: str) -> None:
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    ran = edgegate("central", command, "--store", missing)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert said(ran.stderr) == [
        f"edgegate central {command}: no store at {missing} "
        "(the --db of `edgegate central run`; it makes the file)"
    ]
    assert not (tmp_path / "none.db").exists()
    ran = edgegate("central", command, "--store", "postgresql://u:secret@127.0.0.1:1/db")
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert "secret" not in ran.stderr and said(ran.stderr)


def test_two_stores_moving_the_same_plates_from_two_gates(postgres_dsn: str) -> None:
    """Each store takes one gate (as two sinks sharing the gates do); the same vehicles go in
    at one gate and out at the other, so both transactions update the same plates' rows."""
    a, b = GateLog("gate-a"), GateLog("gate-b")
    for n in range(120):
        plate = f"苏E{n % 15:05d}"
        at = T0 + timedelta(seconds=n)
        (a if n % 2 else b).passed(plate, Direction.ENTRY if n % 3 else Direction.EXIT, at)

    def sink(log: GateLog) -> Callable[[CentralStore], None]:
        def work(s: CentralStore) -> None:
            for end in range(2, len(log.rows) + 2, 2):
                s.store_batch(log.gate, log.rows[:end])

        return work

    stores = race(postgres_dsn, sink(a), sink(b))
    try:
        live = snapshot(stores[0])
        assert events_projected(stores[0]) == {"gate-a": 60, "gate-b": 60}
        assert stores[0].presence()
        stores[1].rebuild_projections()
        assert snapshot(stores[0]) == live
    finally:
        for s in stores:
            s.close()


def test_movements_are_copied_again_after_a_rollback_or_a_new_connection(
    postgres_dsn: str,
) -> None:
    """PostgreSQL copies a group's movements into a temporary table: one made by a rolled
    back transaction, or lost with its connection, is made again by the next group."""
    a, b = GateLog("gate-a"), GateLog("gate-b")
    a.passed("苏E00001", Direction.ENTRY, T0)
    a.passed("苏E00002", Direction.ENTRY, T0 + timedelta(minutes=1))
    b.passed("苏E00001", Direction.EXIT, T0 + timedelta(minutes=2))

    def copied_then_failed(store: CentralStore) -> None:
        with store._transaction():
            store._fill_temp("park_moves", "plate TEXT", ["text"], [("苏E00009",)])
            raise RuntimeError("the group fails after its movements were copied")

    with open_store(postgres_dsn) as store:
        with pytest.raises(RuntimeError, match="the group fails"):
            copied_then_failed(store)
        store.store_batch("gate-a", a.rows[:1])
        assert isinstance(store, PostgresStore)
        store._conn.close()  # the next group runs on a new connection
        store.store_batch("gate-a", a.rows[1:])
        store.store_batch("gate-b", b.rows)
        assert [v.plate for v in store.presence()] == ["苏E00002"]
