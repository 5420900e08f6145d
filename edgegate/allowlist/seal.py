"""The seal of a stored allow-list (see :mod:`edgegate.allowlist.store`): the sum modulo
2**256 of the SHA-256 of every entry's canonical bytes and of the state's, kept up to date by
each write from what it changes alone, and the check that names the first bad entry when the
table no longer matches it."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgpack

from edgegate.core import credential_codec as codec
from edgegate.core.allowlist import AllowListError, check_credential
from edgegate.core.domain import Appointment, Credential
from edgegate.log import queries

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
_MODULUS = 1 << 256

Row = tuple[str, str, str, bytes]  # kind, id, normalised plate, codec bytes


@dataclass(frozen=True, slots=True)
class Tampering:
    """What ``verify`` found wrong with a stored list: the first bad entry when one can be
    named (``kind``, ``id``, ``plate`` as stored), and the problem."""

    problem: str
    kind: str | None = None
    id: str | None = None
    plate: str | None = None

    def __str__(self) -> str:
        if self.kind is None:
            return self.problem
        return f"{self.kind} {self.id!r} (plate {self.plate!r}): {self.problem}"

    def described(self) -> str:
        """``changed outside edgegate: ...``, naming the first bad entry when there is one."""
        first = "" if self.kind is None else "first bad entry: "
        return f"changed outside edgegate: {first}{self}"


def rows_hash(rows: Iterable[Row]) -> bytes:
    """The order-independent hash of encoded rows (their part of the seal, 32 bytes)."""
    return to_seal(rows_total(rows))


def row_bytes(kind: str, id_: str, plate: str, data: bytes) -> bytes:
    """The canonical bytes of one stored entry that the seal hashes: ``_row_bytes`` of its
    kind, id key (``core.allowlist.id_key``), plate and data."""
    k = kind.encode()
    return _row_bytes(k, k[:1] + id_.encode(), plate.encode(), data)


def _row_bytes(kind: bytes, id_key: bytes, plate: bytes, data: bytes) -> bytes:
    """Each of kind, id key and plate as its length in decimal, a colon and its bytes; then
    the data."""
    return b"%d:%b%d:%b%d:%b%b" % (len(kind), kind, len(id_key), id_key, len(plate), plate, data)


class RowsSum:
    """A ``core.allowlist.Digest`` summing the terms of the rows' canonical bytes (``total``);
    its digest is the seal of those rows with the state whose ``state_term`` is given."""

    __slots__ = ("state_term", "total")

    def __init__(self, state_term: int = 0) -> None:
        self.total = 0
        self.state_term = state_term

    def update(self, kind: bytes, id_key: bytes, plate_key: bytes, encoded: bytes, /) -> None:
        data = _row_bytes(kind, id_key, plate_key, encoded)
        self.total += int.from_bytes(hashlib.sha256(data).digest(), "little")

    def digest(self) -> bytes:
        return to_seal(self.total + self.state_term)


def table_total(conn: sqlite3.Connection) -> int:
    """The sum of the terms of every stored entry."""
    rows = RowsSum()
    update = rows.update
    for kind, id_key, plate, data in conn.execute(
        "SELECT CAST(kind AS BLOB), CAST(substr(kind, 1, 1) || id AS BLOB),"
        " CAST(plate AS BLOB), CAST(data AS BLOB) FROM allowlist_entry"
    ):
        update(kind, id_key, plate, data)
    return rows.total


def term(row: Row) -> int:
    return int.from_bytes(hashlib.sha256(row_bytes(*row)).digest(), "little")


def rows_total(rows: Iterable[Row]) -> int:
    return sum(map(term, rows))


def ns(updated_at: datetime | None) -> int | None:
    if updated_at is None:
        return None
    return (updated_at - EPOCH) // MICROSECOND * 1000


def state_term(version: int, updated_at_ns: int | None, source: str) -> int:
    text = f"state:{version}:{'-' if updated_at_ns is None else updated_at_ns}:{source}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest(), "little")


def to_seal(total: int) -> bytes:
    return (total % _MODULUS).to_bytes(32, "little")


def is_seal(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == 32


def seal_of(rows_total: int, version: int, updated_at: datetime | None, source: str) -> bytes:
    return to_seal(rows_total + state_term(version, ns(updated_at), source))


def resealed(
    conn: sqlite3.Connection,
    rows_change: int,
    version: int,
    updated_at: datetime | None,
    source: str,
) -> bytes | None:
    """The seal after a change of the rows' total by ``rows_change`` and a new state. An
    empty file starts from zero; a missing seal stays missing (what it covered is unknown)."""
    row = conn.execute(
        "SELECT version, updated_at_ns, source, content_hash FROM allowlist_state"
        " WHERE singleton = 1"
    ).fetchone()
    if row is None:
        rows_total = 0
    elif is_seal(row[3]):
        rows_total = int.from_bytes(row[3], "little") - state_term(row[0], row[1], row[2])
    else:
        return None
    return seal_of(rows_total + rows_change, version, updated_at, source)


def check_seal(conn: sqlite3.Connection, rows_total: int) -> Tampering | None:
    """None if the rows (whose terms sum to ``rows_total``) and the state match the seal;
    else the first bad entry ``first_bad_entry`` can name, or what is wrong overall."""
    state = conn.execute(
        "SELECT version, updated_at_ns, source, content_hash FROM allowlist_state"
        " WHERE singleton = 1"
    ).fetchone()
    count = conn.execute("SELECT COUNT(*) FROM allowlist_entry").fetchone()[0]
    if state is None:
        if count == 0:
            return None  # no list was ever stored
        overall = f"{count} entries are stored without an allow-list state (deleted)"
    elif not is_seal(state[3]):
        overall = "the allow-list state has no seal (content_hash missing or malformed)"
    else:
        try:
            expected = to_seal(rows_total + state_term(int(state[0]), state[1], str(state[2])))
        except (TypeError, ValueError):
            expected = None
        if expected == state[3]:
            return None
        overall = (
            "the entries or the allow-list state (version, update time, source) do not match"
            " the seal: changed, added or removed outside edgegate"
        )
    return first_bad_entry(conn) or Tampering(overall)


def decode_row(
    kind: str, id_: str, plate: str, data: bytes
) -> tuple[Credential | None, str | None]:
    """The credential a stored row's data holds (None if unreadable) and what is wrong with
    the row, if anything."""
    try:
        credential = check_credential(codec.decode(data))
    except (codec.CodecError, AllowListError) as exc:
        return None, f"data does not hold a valid credential ({exc})"
    if (credential.kind.value, credential.id) != (kind, id_):
        return credential, (
            f"stored as {kind} {id_!r} but its data is {credential.kind} {credential.id!r}"
        )
    if credential.plate != plate:
        return credential, f"plate column {plate!r} is not the entry's plate {credential.plate!r}"
    return credential, None


def first_bad_entry(conn: sqlite3.Connection) -> Tampering | None:
    """The first entry, in (kind, id) order, that contradicts itself or the log: data that
    does not decode or names another kind, id or plate than its columns, or an appointment
    stored unconsumed that a vehicle.passed in the log consumed. None if every entry is
    consistent (an edit that kept an entry consistent, or a deleted entry)."""
    consumed = consumed_in_log(conn)
    for kind, id_, plate, data in conn.execute(
        "SELECT kind, id, plate, CAST(data AS BLOB) FROM allowlist_entry ORDER BY kind, id"
    ):
        credential, problem = decode_row(str(kind), str(id_), str(plate), bytes(data))
        if problem is not None:
            return Tampering(problem, str(kind), str(id_), str(plate))
        if (
            isinstance(credential, Appointment)
            and not credential.consumed
            and credential.id in consumed
        ):
            seq = consumed[credential.id]
            return Tampering(
                f"stored as not consumed, but the log's vehicle.passed seq {seq} consumed it",
                str(kind),
                str(id_),
                str(plate),
            )
    return None


def consumed_in_log(conn: sqlite3.Connection) -> dict[str, int]:
    """Appointment id -> seq of the ``vehicle.passed`` that consumed it (entries whose
    ``access.decided`` names an appointment to consume). Empty if the file has no event log."""
    if not queries.has_events(conn):
        return {}
    consuming: dict[int, str] = {}
    out: dict[str, int] = {}
    for seq, _, type_, _, _, data in queries.of_types(conn, ("access.decided", "vehicle.passed")):
        try:
            fields = msgpack.unpackb(data, raw=False)
        except Exception:  # a damaged event is the chain verifier's finding, not this one's
            fields = None
        if not isinstance(fields, dict):
            continue
        if type_ == "access.decided":
            appointment = fields.get("consumed_appointment")
            if isinstance(appointment, str):
                consuming[int(seq)] = appointment
        else:
            decision = fields.get("decision_seq")
            appointment = consuming.get(decision) if isinstance(decision, int) else None
            if appointment is not None:
                out.setdefault(appointment, int(seq))
    return out
