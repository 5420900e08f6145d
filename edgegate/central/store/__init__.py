"""Central's copy of every gate's event log, in SQLite or PostgreSQL.

``open_store("sqlite:///relative/path.db")`` (``sqlite:////absolute/path.db``) or
``open_store("postgresql://user:pass@host:port/db")`` returns a ``CentralStore``. Both
backends share all logic (``base``) and differ only in SQL dialect, locking and bulk insert
(``sqlite``, ``postgres``); the schema (``schema``) is migrated by :mod:`edgegate.migrations`.
PostgreSQL needs the ``central`` extra (psycopg), imported only when such a DSN is opened.

Contract of ``store_batch`` / ``store_batches`` (what the sink builds on):

- Each batch of a gate's rows is checked against the gate's head (the highest contiguous
  seq stored and its hash), in one transaction that is committed before the call returns:
  the caller may ack ``acked_seq`` as soon as it has the result.
- Rows at or below the head are duplicates (at-least-once delivery); each is compared with
  the stored hash, and a difference (a fork: the gate's history is not ours) dead-letters
  the batch and stores nothing from it.
- A first new seq above head + 1 is a gap: nothing is stored, ``resend_from`` = head + 1.
- New rows are proven with ``ChainVerifier`` (prev_hash links from the head, every SHA-256
  recomputed). The sound prefix is stored; from the first faulty row on, the rows go to
  ``dead_letters`` with a reason naming the seq, and ``resend_from`` asks for them again.
- Replaying any batch changes nothing. Malformed input is dead-lettered, never raised, so a
  bad payload cannot crash-loop the sink; ``StoreError`` means the database itself failed
  (nothing of that call was committed; retry later).
- Dead letters are bounded (``DeadLetterLimits``): a dead letter keeps the payload's size,
  its SHA-256 and only a prefix of it; each gate keeps its newest ``per_gate`` dead letters
  (those of no known gate count as one gate) and the oldest beyond that are deleted and
  tallied in ``dead_letter_drops``. A gate with valid credentials sending junk costs central
  at most ``per_gate`` x (``payload_prefix`` + reason) bytes.
- Rows are checked field by field, except ``decode_batch``'s ``DecodedEvents`` (pass
  ``batch.events`` as they are): decoding checked them already, so only what it lets through
  (NUL in text) is looked for. Every hash is recomputed either way.

Threads and asyncio: the store is synchronous and thread-safe (one connection, one lock:
calls are serialised). An asyncio sink must not call it on the event loop (a commit waits
for fsync); ``AsyncStore`` runs every call on one dedicated thread. Several sink processes
may share one PostgreSQL database: a gate's head row is locked (``SELECT … FOR UPDATE``) for
the transaction that advances it, so two sinks never advance the same gate concurrently.
SQLite serialises writers by itself (``BEGIN IMMEDIATE``); it runs in WAL mode with
``synchronous=FULL`` because an ack promises the events survive a power loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgegate.central.store.async_store import AsyncStore
from edgegate.central.store.base import CentralStore
from edgegate.central.store.dsn import open_store, redact, sqlite_path
from edgegate.central.store.model import (
    DEAD_PAYLOAD_PREFIX,
    AdmissionReview,
    BackendMissingError,
    Batch,
    DeadLetter,
    DeadLetterDrops,
    DeadLetterLimits,
    DsnError,
    RowLike,
    SchemaError,
    StoreClosedError,
    StoreError,
    StoreResult,
)
from edgegate.central.store.projections import (
    FaultedDevice,
    GateState,
    ParkOverstay,
    VehicleInside,
)
from edgegate.central.store.schema import LATEST, MIGRATIONS
from edgegate.central.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from edgegate.central.store.postgres import PostgresStore

__all__ = [
    "DEAD_PAYLOAD_PREFIX",
    "LATEST",
    "MIGRATIONS",
    "AdmissionReview",
    "AsyncStore",
    "BackendMissingError",
    "Batch",
    "CentralStore",
    "DeadLetter",
    "DeadLetterDrops",
    "DeadLetterLimits",
    "DsnError",
    "FaultedDevice",
    "GateState",
    "ParkOverstay",
    "PostgresStore",
    "RowLike",
    "SchemaError",
    "SqliteStore",
    "StoreClosedError",
    "StoreError",
    "StoreResult",
    "VehicleInside",
    "open_store",
    "redact",
    "sqlite_path",
]


def __getattr__(name: str) -> object:
    # PostgresStore on first use only: importing it imports psycopg (the `central` extra).
    if name == "PostgresStore":
        from edgegate.central.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
