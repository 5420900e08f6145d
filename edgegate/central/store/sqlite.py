"""The central store in one SQLite file (``sqlite:///path``)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import sqlite3
from collections.abc import Sequence
from typing import Any

from edgegate import migrations
from edgegate.central.store.base import ENSURE_HEAD, EVENT_COLUMNS, CentralStore
from edgegate.central.store.checks import BOOT_IDS
from edgegate.central.store.model import DeadLetterLimits, StoreError
from edgegate.central.store.schema import migrations_for, newer_error
from edgegate.log.chain import GENESIS_HASH, Row

_SQLITE_CHUNK = 128  # most rows per INSERT statement (a power of two, see _sqlite_insert)


def _sha256(value: bytes | None) -> bytes | None:
    """SQL ``edgegate_sha256(blob)`` for the SQLite migration (SQLite has no SHA-256)."""
    return None if value is None else hashlib.sha256(value).digest()


def _sqlite_chunk(variable_limit: int) -> int:
    """Most rows per INSERT under SQLite's parameter limit (32766 since 3.32, 999 before)."""
    n = _SQLITE_CHUNK
    while n > 1 and 3 + 9 * n > variable_limit:
        n //= 2
    return n


@functools.cache
def _sqlite_insert(n: int, one_boot: bool) -> str:
    """``INSERT`` of ``n`` chained rows with numbered parameters.

    ``?1`` is the gate, ``?2`` received_at_ns, ``?3`` the first row's prev_hash, ``?4`` the
    boot_id of every row if ``one_boot``; then per row seq, wall_ns, mono_ns, (boot_id,) type,
    lane, version, data, hash. A row's prev_hash is the previous row's hash parameter: the
    rows are verified, so the two are equal, and one blob fewer per row is bound (each bound
    text or blob is copied by SQLite). Sizes are powers of two so that few distinct
    statements exist; each is compiled once and kept in the connection's statement cache.
    """
    values = []
    prev = 3
    p = 5 if one_boot else 4
    for _ in range(n):
        if one_boot:
            s, w, m, b, t, la, v, d, h = p, p + 1, p + 2, 4, p + 3, p + 4, p + 5, p + 6, p + 7
            p += 8
        else:
            s, w, m, b, t, la, v, d, h = range(p, p + 9)
            p += 9
        values.append(f"(?1,?{s},?{w},?{m},?{b},?{t},?{la},?{v},?{d},?{prev},?{h},?2)")
        prev = h
    return f"INSERT INTO gate_events ({EVENT_COLUMNS}) VALUES {','.join(values)}"


class SqliteStore(CentralStore):
    """One SQLite file in WAL mode with ``synchronous=FULL``: a commit survives power loss."""

    backend = "sqlite"

    def __init__(self, path: str, *, dead_letters: DeadLetterLimits | None = None) -> None:
        super().__init__(f"sqlite:///{path}", dead_letters)
        self.path = path
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.description}: {exc}") from exc
        self._conn = conn
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.create_function("edgegate_sha256", 1, _sha256, deterministic=True)
            # Only takes effect on a new, empty file (before WAL mode is set): 8 KiB pages
            # hold more ~330-byte events per page than 4 KiB (fewer splits, ~3% fewer
            # instructions per stored event).
            conn.execute("PRAGMA page_size = 8192")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if path != ":memory:" and str(mode).lower() != "wal":
                raise StoreError(f"{self.description}: cannot use WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: keeps the PK B-tree hot
            self._chunk = _sqlite_chunk(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
            self._migrate()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open {self.description}: {exc}") from exc
            raise

    def _migrate(self) -> None:
        migrations.migrate(
            migrations.SqliteDb(self._conn),
            migrations_for(self.backend),
            newer=newer_error(self.description),
        )

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        # IMMEDIATE takes the write lock up front: the head we read stays ours until COMMIT;
        # rolled back on any error, a failed COMMIT too.
        return migrations.SqliteDb(self._conn).transaction()

    def _exec(self, sql: str, params: Sequence[object] = ()) -> None:
        self._conn.execute(sql, params)

    def _exec_many(self, sql: str, params: Sequence[Sequence[object]]) -> None:
        self._conn.executemany(sql, params)

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def _read_only(self) -> None:
        self._conn.execute("PRAGMA query_only = ON")

    def _insert_events(
        self, batches: Sequence[tuple[str, Sequence[Row]]], received_at_ns: int
    ) -> None:
        for gate, rows in batches:
            self._insert_gate(gate, rows, received_at_ns)

    def _insert_gate(self, gate: str, rows: Sequence[Row], received_at_ns: int) -> None:
        # Blobs as bytearray: sqlite3 binds bytearray directly but sends bytes through its
        # adapter lookup first, which costs far more than the copy.
        ba = bytearray
        execute = self._conn.execute
        total = len(rows)
        boot = rows[0][3]
        one_boot = list(map(BOOT_IDS, rows)).count(boot) == total  # the usual case
        start = 0
        while start < total:
            n = min(self._chunk, 1 << ((total - start).bit_length() - 1))
            chunk = rows[start : start + n]
            params: list[object] = [gate, received_at_ns, ba(chunk[0][8])]
            extend = params.extend
            if one_boot:
                params.append(boot)
                for s, w, m, _b, t, la, v, d, _p, h in chunk:
                    extend((s, w, m, t, la, v, ba(d), ba(h)))
            else:
                for s, w, m, b, t, la, v, d, _p, h in chunk:
                    extend((s, w, m, b, t, la, v, ba(d), ba(h)))
            execute(_sqlite_insert(n, one_boot), params)
            start += n

    def _lock_heads(self, gates: list[str], now_ns: int) -> dict[str, tuple[int, bytes]]:
        conn = self._conn
        conn.executemany(ENSURE_HEAD, [(g, GENESIS_HASH, now_ns) for g in gates])
        heads: dict[str, tuple[int, bytes]] = {}
        for gate in gates:
            seq, digest = conn.execute(
                "SELECT seq, hash FROM gate_heads WHERE gate = ?", (gate,)
            ).fetchone()
            heads[gate] = (int(seq), bytes(digest))
        return heads

    def _retryable(self, exc: BaseException) -> bool:
        return False  # busy_timeout already waited for the other writer

    def _db_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    def _close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._conn.close()
