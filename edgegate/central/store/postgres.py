"""The central store in PostgreSQL (``postgresql://…``), through psycopg 3.

The only module that imports psycopg: it is the ``central`` extra, not installed on a gate PC.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
import psycopg.conninfo
import psycopg.errors
from psycopg.types.string import BytesBinaryDumper

from edgegate import migrations
from edgegate.central.store.base import EVENT_COLUMNS, CentralStore
from edgegate.central.store.dsn import redact
from edgegate.central.store.model import DeadLetterLimits, DsnError, StoreError
from edgegate.central.store.schema import migrations_for, newer_error
from edgegate.log.chain import GENESIS_HASH, Row

_PG_ADVISORY_MIGRATE = 0x6564676567617465  # "edgegate": serialises concurrent migrations
_PG_COPY = f"COPY gate_events ({EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_PG_COPY_TYPES = [
    "text",
    "int8",
    "int8",
    "int8",
    "text",
    "text",
    "text",
    "int8",
    "bytea",
    "bytea",
    "bytea",
    "int8",
]


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


def check_dsn(dsn: str) -> None:
    """Refuse a DSN libpq cannot parse, naming why (``DsnError``)."""
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise DsnError(f"postgresql DSN {redact(dsn)!r} is malformed: {exc}") from None


class PostgresMigrationDb:
    """:class:`edgegate.migrations.MigrationDb` over a psycopg connection in autocommit."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.conn = conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            # Held to the end of the transaction: concurrent openers migrate one at a time.
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_ADVISORY_MIGRATE,))
            yield

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self.conn.execute(_pg(sql), params)

    def scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        row = self.conn.execute(_pg(sql), params).fetchone()
        return None if row is None else row[0]

    def script(self, sql: str) -> None:
        # No parameters: psycopg sends the script as one simple query, $$ bodies intact.
        self.conn.execute(sql)

    def table_exists(self, name: str) -> bool:
        return bool(self.scalar("SELECT to_regclass(?) IS NOT NULL", (name,)))


class PostgresStore(CentralStore):
    """PostgreSQL through psycopg 3; reconnects on the next call after a lost connection."""

    backend = "postgresql"
    for_update = " FOR UPDATE"

    def __init__(self, dsn: str, *, dead_letters: DeadLetterLimits | None = None) -> None:
        super().__init__(redact(dsn), dead_letters)
        self._dsn = dsn
        self._sql_cache: dict[str, str] = {}
        self._readonly = False
        self._conn = self._connect()
        try:
            self._migrate()
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"cannot open {self.description}: {exc}") from exc
            raise

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        options = "-c default_transaction_read_only=on" if self._readonly else ""
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10, options=options)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.description}: {exc}") from exc
        # COPY's ``bytea`` columns are dumped by the dumper last registered for that type,
        # psycopg's DB-API ``Binary`` wrapper's, in Python; bytes need only the C one.
        conn.adapters.register_dumper(bytes, BytesBinaryDumper)
        self._temp_tables: set[str] = set()  # a new connection has none
        return conn

    def _read_only(self) -> None:
        self._readonly = True
        self._live.execute("SET default_transaction_read_only = on")

    @property
    def _live(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _sql(self, sql: str) -> str:
        out = self._sql_cache.get(sql)
        if out is None:
            out = self._sql_cache[sql] = _pg(sql)
        return out

    def _migrate(self) -> None:
        migrations.migrate(
            PostgresMigrationDb(self._conn),
            migrations_for(self.backend),
            newer=newer_error(self.description),
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            with self._live.transaction():
                yield
        except BaseException:
            self._temp_tables.clear()  # made in this transaction: rolled back with it
            raise

    def _exec(self, sql: str, params: Sequence[object] = ()) -> None:
        self._live.execute(self._sql(sql), params)

    def _exec_many(self, sql: str, params: Sequence[Sequence[object]]) -> None:
        # psycopg pipelines executemany: the statements go out without waiting for each reply.
        with self._live.cursor() as cur:
            cur.executemany(self._sql(sql), params)

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._live.execute(self._sql(sql), params).fetchall()

    def _insert_events(
        self, batches: Sequence[tuple[str, Sequence[Row]]], received_at_ns: int
    ) -> None:
        # COPY: one round trip for them all; nothing conflicts, the heads are locked.
        with self._live.cursor() as cur, cur.copy(_PG_COPY) as copy:
            copy.set_types(_PG_COPY_TYPES)
            write = copy.write_row
            for gate, rows in batches:
                for r in rows:
                    write((gate, *r, received_at_ns))

    def _fill_temp(
        self, table: str, columns: str, types: Sequence[str], rows: Iterable[Sequence[object]]
    ) -> None:
        # Array parameters (``unnest``) cost psycopg about 7 µs of Python per row of ten
        # values to bind; COPY, about 0.5.
        conn = self._live
        if table not in self._temp_tables:
            conn.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {table} ({columns}) ON COMMIT DELETE ROWS"
            )
            self._temp_tables.add(table)
        with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(types))
            for row in rows:
                copy.write_row(row)

    def _lock_heads(self, gates: list[str], now_ns: int) -> dict[str, tuple[int, bytes]]:
        conn = self._live
        # Create missing heads, then lock them all, both in gate order: two sinks locking
        # overlapping sets of gates take the locks in the same order and cannot deadlock
        # (a deadlock that happens anyway is retried by _run).
        conn.execute(
            "INSERT INTO gate_heads (gate, seq, hash, updated_at_ns)"
            " SELECT g, 0, %s, %s FROM unnest(%s::text[]) AS g ORDER BY g"
            " ON CONFLICT (gate) DO NOTHING",
            (GENESIS_HASH, now_ns, gates),
        )
        rows = conn.execute(
            "SELECT gate, seq, hash FROM gate_heads WHERE gate = ANY(%s) ORDER BY gate FOR UPDATE",
            (gates,),
        ).fetchall()
        return {str(g): (int(s), bytes(h)) for g, s, h in rows}

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(
            exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
        )

    def _db_error(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error)

    def _close(self) -> None:
        self._conn.close()
