"""Park-wide projections of the stored events: who is inside, and each gate's state.

Kept in the eventsourcing style: each projection has a tracking position per gate (the last
seq of that gate it has applied, in ``projection_positions``), and the events a batch stores
are applied in the SAME transaction that stores them and advances the position. A commit
therefore holds the events, their effect and the position together, or none of them: each
event is applied exactly once, whatever the redeliveries, crashes or number of sinks.

Concurrency: the transaction that applies a gate's events has that gate's head row locked
(``CentralStore``), and it locks the gate's position rows too (``SELECT … FOR UPDATE`` on
PostgreSQL; SQLite has one writer) before reading them, so a rebuild or a second sink
cannot apply the same events meanwhile. Positions are locked in gate order, after the heads,
like the heads themselves: two sinks cannot deadlock on them.

Presence is one row per plate (``park_vehicles``), set by the plate's latest movement by
(gate wall time, gate, seq): an entry at one gate makes it inside, an exit at any gate makes
it outside. Because the latest movement wins, gates whose events arrive late or in another
order (a gate offline for a day) give the same rows: the projection does not depend on the
order in which gates are applied, which is what lets sinks share gates and a rebuild equal
the live rows. The update is one atomic upsert whose ``WHERE`` keeps the later movement.

A projected event that cannot be decoded (a type version newer than this software) is
skipped and reported to the caller (it dead-letters a note); the position passes it, and a
rebuild after upgrading applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from edgegate.central.store.model import Where
from edgegate.core.codec import datetime_to_ns, ns_to_datetime
from edgegate.core.domain import Direction, VehicleCategory
from edgegate.core.events import (
    AllowListUpdated,
    DeviceFault,
    DeviceRecovered,
    EventDecodeError,
    ModeChanged,
    VehiclePassed,
)
from edgegate.core.events import decode as decode_event
from edgegate.core.presence import Stay, overstays
from edgegate.log.chain import Row
from edgegate.sync.protocol import Status

PRESENCE = "presence"
GATES = "gates"
PROJECTIONS = (PRESENCE, GATES)
"""The projections, each with a position per gate."""

_PAGE = 10_000
_IN_CHUNK = 500  # gates per ``IN (…)`` list

_PRESENCE_TYPES = frozenset({VehiclePassed.TYPE})
_GATE_TYPES = frozenset(
    {ModeChanged.TYPE, DeviceFault.TYPE, DeviceRecovered.TYPE, AllowListUpdated.TYPE}
)

_ENSURE_POSITION = (
    "INSERT INTO projection_positions (projection, gate, seq) VALUES (?, ?, 0)"
    " ON CONFLICT (projection, gate) DO NOTHING"
)
_SET_POSITION = "UPDATE projection_positions SET seq = ? WHERE projection = ? AND gate = ?"
# The latest movement of a plate wins, by (wall time, gate, seq): see the module docstring.
_MOVE_INTO = (
    "INSERT INTO park_vehicles (plate, inside, category, gate, seq, at_ns, lane, credential_id,"
    " permit_until_ns, unauthorised) "
)
_MOVE_UPSERT = (
    " ON CONFLICT (plate) DO UPDATE SET inside = excluded.inside,"
    " category = excluded.category, gate = excluded.gate, seq = excluded.seq,"
    " at_ns = excluded.at_ns, lane = excluded.lane, credential_id = excluded.credential_id,"
    " permit_until_ns = excluded.permit_until_ns, unauthorised = excluded.unauthorised"
    " WHERE (park_vehicles.at_ns, park_vehicles.gate, park_vehicles.seq)"
    " < (excluded.at_ns, excluded.gate, excluded.seq)"
)
_MOVE = _MOVE_INTO + "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" + _MOVE_UPSERT
# PostgreSQL: a group's movements are copied into a temporary table and upserted from it in
# one statement, in plate order (the order the rows are locked in).
_MOVES_TABLE = "park_moves"
_MOVES_COLUMNS = (
    "plate TEXT, inside BIGINT, category TEXT, gate TEXT, seq BIGINT, at_ns BIGINT, lane TEXT,"
    " credential_id TEXT, permit_until_ns BIGINT, unauthorised BIGINT"
)
_MOVES_TYPES = ("text", "int8", "text", "text", "int8", "int8", "text", "text", "int8", "int8")
_MOVE_FROM_TABLE = _MOVE_INTO + f"SELECT * FROM {_MOVES_TABLE} ORDER BY plate" + _MOVE_UPSERT
# Only the rows the upsert inserted or updated come back: a movement older than the plate's
# stored one changes nothing, so it is not reported.
_MOVED_RETURNING = " RETURNING plate, inside, gate, at_ns"
_GATE_LAST = (
    "INSERT INTO park_gates (gate, last_seq, last_at_ns, events) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (gate) DO UPDATE SET last_seq = excluded.last_seq,"
    " last_at_ns = excluded.last_at_ns, events = park_gates.events + excluded.events"
)
_SELECT_ROWS = (
    "SELECT seq, wall_ns, mono_ns, boot_id, type, lane, version, data, prev_hash, hash"
    " FROM gate_events WHERE gate = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
)
_TABLES = ("park_vehicles", "park_gate_faults", "park_gates", "projection_positions")

_DANGER_ORDER = "CASE category WHEN 'hazmat' THEN 0 WHEN 'hazwaste' THEN 1 ELSE 2 END, at_ns, plate"
_CATEGORY = {c.value: c for c in VehicleCategory}  # a dict, not the enum's call: per row
_INSIDE_COLUMNS = (
    "plate, category, gate, seq, at_ns, lane, credential_id, permit_until_ns, unauthorised"
)


class Tx(Protocol):
    """What the projections need of the store, inside its transaction."""

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""

    @property
    def for_update(self) -> str:
        """`` FOR UPDATE`` where the backend locks rows read in a transaction, else empty."""

    def _exec(self, sql: str, params: Sequence[object] = ()) -> None: ...

    def _exec_many(self, sql: str, params: Sequence[Sequence[object]]) -> None: ...

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def _fill_temp(
        self, table: str, columns: str, types: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> None: ...


_Move = tuple[str, int, str | None, str, int, int, str | None, str | None, int | None, int]
"""``_MOVE``'s parameters: plate, inside, category, gate, seq, at_ns, lane, credential,
permit end, unauthorised."""


@dataclass(frozen=True, slots=True)
class Moved:
    """A plate whose presence a commit changed: its movement at ``gate`` is now its latest."""

    plate: str
    inside: bool
    gate: str
    at_ns: int


Problem = Callable[[str, int, bytes, str], None]
"""Called with (gate, seq, payload, reason) for a projected event that cannot be decoded."""


# --- what the queries give ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VehicleInside:
    """A vehicle inside the park: its latest movement is an entry."""

    plate: str
    category: VehicleCategory | None
    entry_gate: str
    entry_seq: int
    entered_at_ns: int
    lane: str | None
    credential_id: str | None
    permit_until_ns: int | None
    unauthorised: bool

    @property
    def dangerous(self) -> bool:
        return self.category is not None and self.category.dangerous


@dataclass(frozen=True, slots=True)
class ParkOverstay:
    """A vehicle inside past the earlier of its permit end and its category's dwell limit."""

    vehicle: VehicleInside
    limit: str  # "permit-end" | "dwell-limit"
    deadline_ns: int
    exceeded_ns: int


@dataclass(frozen=True, slots=True)
class FaultedDevice:
    device: str
    code: str
    message: str
    seq: int
    since_ns: int


@dataclass(frozen=True, slots=True)
class GateState:
    """A gate as central knows it: what is stored, what its events say, what it reported.

    ``stored_seq``: the head of the stored copy. ``last_seq`` / ``last_event_at_ns``: the
    last projected event (0 / None before any). ``status``: its latest retained status
    (``state`` "online" or "offline", ``head_seq`` its log's head), None if never seen.
    """

    gate: str
    stored_seq: int
    stored_at_ns: int
    last_seq: int
    last_event_at_ns: int | None
    mode: str | None
    mode_at_ns: int | None
    allowlist_version: int | None
    allowlist_at_ns: int | None
    faults: tuple[FaultedDevice, ...]
    state: str | None
    head_seq: int | None
    synced_seq: int | None
    status_allowlist_version: int | None
    status_at_ns: int | None

    @property
    def online(self) -> bool:
        return self.state == "online"

    @property
    def lag(self) -> int | None:
        """Events the gate reported holding that central has not stored (None: unknown)."""
        return None if self.head_seq is None else max(0, self.head_seq - self.stored_seq)


# --- applying events ------------------------------------------------------------------------


def apply(
    tx: Tx,
    stored: Mapping[str, Sequence[Row]],
    on_problem: Problem,
    passes: dict[tuple[str, int], object] | None = None,
    moved: list[Moved] | None = None,
) -> None:
    """Apply each gate's rows just stored (consecutive, seq order) to every projection, each
    from its position on: rows it already holds are skipped, rows between its position and
    the first of the gate's rows (stored before it existed) are read first. If given,
    ``passes`` receives the ``vehicle.passed`` events decoded, by (gate, seq) (None:
    undecodable), so that the park chain need not decode them again, and ``moved`` the plates
    whose presence changed (the park chain reports them)."""
    moves: list[_Move] = []
    advanced: list[tuple[int, str, str]] = []
    gates = sorted(g for g, rows in stored.items() if rows)
    positions = _lock_positions(tx, gates)
    for gate in gates:
        rows = stored[gate]
        first, last = rows[0][0], rows[-1][0]
        for projection in PROJECTIONS:
            position = positions[projection, gate]
            if position >= last:
                continue
            if position < first - 1:
                for page in _stored(tx, gate, position, first - 1):
                    _apply_one(tx, projection, gate, page, on_problem, moves)
            new = [r for r in rows if r[0] > position]
            _apply_one(tx, projection, gate, new, on_problem, moves, passes)
            advanced.append((last, projection, gate))
    if advanced:
        tx._exec_many(_SET_POSITION, advanced)
    _move_all(tx, moves, moved)


def _move_all(tx: Tx, moves: list[_Move], moved: list[Moved] | None = None) -> None:
    """Upsert each plate's latest of ``moves`` (on PostgreSQL in one statement); the plates
    whose row changed go to ``moved`` if given.

    Only the latest movement of a plate counts, whatever the order (see the module
    docstring), so the others are dropped first: one statement may not update a row twice.
    Plates' rows are locked in plate order: two sinks moving the same plates (one from each
    gate) wait for each other instead of deadlocking."""
    latest: dict[str, _Move] = {}
    for m in moves:
        held = latest.get(m[0])
        if held is None or (held[5], held[3], held[4]) < (m[5], m[3], m[4]):
            latest[m[0]] = m
    rows = [latest[plate] for plate in sorted(latest)]
    if not rows:
        return
    if tx.backend == "postgresql":
        tx._fill_temp(_MOVES_TABLE, _MOVES_COLUMNS, _MOVES_TYPES, rows)
        if moved is None:
            tx._exec(_MOVE_FROM_TABLE)
        else:
            changed = tx._query(_MOVE_FROM_TABLE + _MOVED_RETURNING)
            moved.extend(Moved(str(p), int(i) == 1, str(g), int(at)) for p, i, g, at in changed)
    else:
        tx._exec_many(_MOVE, rows)
        if moved is not None:
            moved.extend(_won(tx, rows))


def _won(tx: Tx, rows: list[_Move]) -> list[Moved]:
    """The plates of ``rows`` whose stored row is now the movement upserted (SQLite: its
    ``executemany`` returns no rows; PostgreSQL has the upsert return them)."""
    ours = {r[0]: (r[3], r[4]) for r in rows}
    plates = list(ours)
    out: list[Moved] = []
    for i in range(0, len(plates), _IN_CHUNK):
        where = Where()
        where.among("plate", plates[i : i + _IN_CHUNK])
        sql = f"SELECT plate, inside, gate, seq, at_ns FROM park_vehicles{where.sql()}"
        for plate, inside, gate, seq, at_ns in tx._query(sql, where.params):
            if ours[plate] == (gate, seq):
                out.append(Moved(str(plate), int(inside) == 1, str(gate), int(at_ns)))
    return out


def rebuild(tx: Tx, heads: Mapping[str, int], on_problem: Problem) -> int:
    """Inside a transaction holding every gate's head lock: drop every projection and apply
    each gate's stored events up to its head again. Returns the events read."""
    for table in _TABLES:
        tx._exec(f"DELETE FROM {table}")
    read = 0
    for gate, head in sorted(heads.items()):
        for projection in PROJECTIONS:
            tx._exec(_ENSURE_POSITION, (projection, gate))
            for page in _stored(tx, gate, 0, head):
                _apply_one(tx, projection, gate, page, on_problem)
                if projection == PRESENCE:
                    read += len(page)
            tx._exec(_SET_POSITION, (head, projection, gate))
    return read


def _lock_positions(tx: Tx, gates: list[str]) -> dict[tuple[str, str], int]:
    """Create missing positions of ``gates`` (sorted), lock and read them, in gate order
    like the heads (two sinks cannot deadlock on them), a few statements for all."""
    tx._exec_many(_ENSURE_POSITION, [(p, g) for g in gates for p in PROJECTIONS])
    out: dict[tuple[str, str], int] = {}
    for i in range(0, len(gates), _IN_CHUNK):
        where = Where()
        where.among("gate", gates[i : i + _IN_CHUNK])
        for projection, gate, seq in tx._query(
            "SELECT projection, gate, seq FROM projection_positions"
            f"{where.sql()} ORDER BY gate, projection{tx.for_update}",
            where.params,
        ):
            out[str(projection), str(gate)] = int(seq)
    return out


def _stored(tx: Tx, gate: str, after: int, until: int) -> Iterable[list[Row]]:
    while after < until:
        page = [tuple(r) for r in tx._query(_SELECT_ROWS, (gate, after, until, _PAGE))]
        if not page:
            return
        yield page
        after = int(page[-1][0])


def _apply_one(
    tx: Tx,
    projection: str,
    gate: str,
    rows: Sequence[Row],
    on_problem: Problem,
    moves: list[_Move] | None = None,
    passes: dict[tuple[str, int], object] | None = None,
) -> None:
    """Apply ``rows`` to ``projection``; presence movements go to ``moves`` and decoded
    passes to ``passes`` if given."""
    if not rows:
        return
    if projection == PRESENCE:
        for row in rows:
            if row[4] in _PRESENCE_TYPES:
                event = _decode(gate, row, on_problem)
                if passes is not None:
                    passes[gate, row[0]] = event
                if isinstance(event, VehiclePassed):
                    move = _move(gate, row, event)
                    if moves is None:
                        tx._exec(_MOVE, move)
                    else:
                        moves.append(move)
        return
    last = rows[-1]
    tx._exec(_GATE_LAST, (gate, last[0], last[1], len(rows)))
    for row in rows:
        if row[4] in _GATE_TYPES:
            _gate_event(tx, gate, row, _decode(gate, row, on_problem))


def _decode(gate: str, row: Row, on_problem: Problem) -> object:
    try:
        return decode_event(row[4], row[6], bytes(row[7]), row[5])
    except EventDecodeError as exc:
        on_problem(gate, row[0], bytes(row[7]), f"projection of seq {row[0]} skipped: {exc}")
        return None


def _move(gate: str, row: Row, event: VehiclePassed) -> _Move:
    until = None if event.permit_until is None else datetime_to_ns(event.permit_until)
    return (
        event.plate,
        1 if event.direction is Direction.ENTRY else 0,
        None if event.category is None else str(event.category),
        gate,
        row[0],
        row[1],
        row[5],
        event.credential_id,
        until,
        1 if event.unauthorised else 0,
    )


def _gate_event(tx: Tx, gate: str, row: Row, event: object) -> None:
    seq, at = row[0], row[1]
    if isinstance(event, ModeChanged):
        tx._exec(
            "UPDATE park_gates SET mode = ?, mode_at_ns = ? WHERE gate = ?",
            (str(event.mode), at, gate),
        )
    elif isinstance(event, AllowListUpdated):
        tx._exec(
            "UPDATE park_gates SET allowlist_version = ?, allowlist_at_ns = ? WHERE gate = ?",
            (event.version, at, gate),
        )
    elif isinstance(event, DeviceFault):
        # The first fault of an outage marks its start; later ones only update the reason.
        tx._exec(
            "INSERT INTO park_gate_faults (gate, device, code, message, seq, since_ns)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (gate, device) DO UPDATE SET"
            " code = excluded.code, message = excluded.message",
            (gate, event.device, event.code, event.message, seq, at),
        )
    elif isinstance(event, DeviceRecovered):
        tx._exec("DELETE FROM park_gate_faults WHERE gate = ? AND device = ?", (gate, event.device))


# --- queries --------------------------------------------------------------------------------


def presence(
    tx: Tx,
    *,
    categories: Iterable[VehicleCategory] | None = None,
    gate: str | None = None,
    plate: str | None = None,
    limit: int | None = None,
) -> list[VehicleInside]:
    """Vehicles inside: hazmat, then hazwaste, then the others, each longest inside first."""
    where = Where()
    where.add("inside = 1")
    if categories is not None and not where.among("category", (str(c) for c in categories)):
        return []
    if gate is not None:
        where.add("gate = ?", gate)
    if plate is not None:
        where.add("plate = ?", plate)
    sql = f"SELECT {_INSIDE_COLUMNS} FROM park_vehicles{where.sql()} ORDER BY {_DANGER_ORDER}"
    params = where.params
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [_inside(r) for r in tx._query(sql, params)]


def inside_counts(tx: Tx) -> dict[VehicleCategory | None, int]:
    """How many vehicles are inside, by category (None: a category the gate did not know)."""
    rows = tx._query("SELECT category, COUNT(*) FROM park_vehicles WHERE inside = 1 GROUP BY 1")
    return {None if c is None else _CATEGORY[c]: int(n) for c, n in rows}


def _inside(r: tuple[Any, ...]) -> VehicleInside:
    plate, category, gate, seq, at, lane, cred, until, unauth = r
    return VehicleInside(
        str(plate),
        None if category is None else _CATEGORY[category],
        str(gate),
        int(seq),
        int(at),
        None if lane is None else str(lane),
        None if cred is None else str(cred),
        None if until is None else int(until),
        bool(unauth),
    )


def park_overstays(
    inside: Sequence[VehicleInside],
    now_ns: int,
    dwell_limits: Mapping[VehicleCategory, timedelta | None],
) -> list[ParkOverstay]:
    """Of ``inside``, those past their deadline at ``now_ns``, longest overdue first (the
    gates' own rule, :func:`edgegate.core.presence.overstays`, on the entry's wall time)."""
    by_key = {(v.plate, v.entry_seq): v for v in inside}
    stays = [
        Stay(
            plate=v.plate,
            category=v.category,
            entered_at=ns_to_datetime(v.entered_at_ns),
            entry_seq=v.entry_seq,
            permit_until=None if v.permit_until_ns is None else ns_to_datetime(v.permit_until_ns),
        )
        for v in inside
    ]
    return [
        ParkOverstay(
            by_key[o.stay.key],
            str(o.limit),
            datetime_to_ns(o.deadline),
            o.exceeded_by // timedelta(microseconds=1) * 1000,
        )
        for o in overstays(stays, ns_to_datetime(now_ns), dwell_limits)
    ]


def gate_states(tx: Tx) -> list[GateState]:
    """Every gate central has heard of (stored events or a status), by gate id."""
    heads = {
        str(g): (int(s), int(at))
        for g, s, at in tx._query("SELECT gate, seq, updated_at_ns FROM gate_heads")
    }
    projected = {
        str(r[0]): r[1:]
        for r in tx._query(
            "SELECT gate, last_seq, last_at_ns, mode, mode_at_ns, allowlist_version,"
            " allowlist_at_ns FROM park_gates"
        )
    }
    statuses = {
        str(r[0]): r[1:]
        for r in tx._query(
            "SELECT gate, state, head_seq, synced_seq, allowlist_version, at_ns FROM gate_status"
        )
    }
    faults: dict[str, list[FaultedDevice]] = {}
    for g, device, code, message, seq, since in tx._query(
        "SELECT gate, device, code, message, seq, since_ns FROM park_gate_faults"
        " ORDER BY gate, device"
    ):
        faults.setdefault(str(g), []).append(
            FaultedDevice(str(device), str(code), str(message), int(seq), int(since))
        )
    states = []
    for gate in sorted(heads.keys() | statuses.keys()):
        stored, stored_at = heads.get(gate, (0, 0))
        p = projected.get(gate, (0, None, None, None, None, None))
        s = statuses.get(gate, (None, None, None, None, None))
        states.append(
            GateState(
                gate,
                stored,
                stored_at,
                int(p[0]),
                _opt_int(p[1]),
                None if p[2] is None else str(p[2]),
                _opt_int(p[3]),
                _opt_int(p[4]),
                _opt_int(p[5]),
                tuple(faults.get(gate, ())),
                None if s[0] is None else str(s[0]),
                _opt_int(s[1]),
                _opt_int(s[2]),
                _opt_int(s[3]),
                _opt_int(s[4]),
            )
        )
    return states


def _opt_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def note_status(tx: Tx, status: Status, noted_at_ns: int) -> None:
    """Keep a gate's latest status (by the gate's ``at_ns``; an older one changes nothing)."""
    st = status
    tx._exec(
        "INSERT INTO gate_status (gate, state, head_seq, synced_seq, allowlist_version, at_ns,"
        " noted_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gate) DO UPDATE SET"
        " state = excluded.state, head_seq = excluded.head_seq,"
        " synced_seq = excluded.synced_seq, allowlist_version = excluded.allowlist_version,"
        " at_ns = excluded.at_ns, noted_at_ns = excluded.noted_at_ns"
        " WHERE gate_status.at_ns <= excluded.at_ns",
        (
            st.gate,
            st.state,
            st.head_seq,
            st.synced_seq,
            st.allowlist_version,
            st.at_ns,
            noted_at_ns,
        ),
    )
