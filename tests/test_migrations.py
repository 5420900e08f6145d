"""The one migration runner (edgegate.migrations) on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from edgegate import migrations
from edgegate.central.store.postgres import PostgresMigrationDb
from edgegate.migrations import Migration, MigrationDb

BACKENDS = ["sqlite", "postgres"]

ONE = Migration(1, "first", "CREATE TABLE a (x INTEGER NOT NULL); INSERT INTO a VALUES (1);")
TWO = Migration(2, "second", "CREATE TABLE b (y INTEGER); INSERT INTO a VALUES (2);")
THREE = Migration(3, "third", "ALTER TABLE b ADD COLUMN z INTEGER;")


class TooNew(Exception):
    pass


def too_new(version: int, known: int) -> TooNew:
    return TooNew(f"version {version} is newer than {known}")


Connect = Callable[[], AbstractContextManager[MigrationDb]]


@pytest.fixture(params=BACKENDS)
def connect(request: pytest.FixtureRequest, tmp_path: Path) -> Connect:
    """Opens a new connection to one test database, as a ``MigrationDb``."""
    if request.param == "sqlite":
        path = tmp_path / "m.db"

        @contextmanager
        def sqlite_db() -> Iterator[MigrationDb]:
            with closing(sqlite3.connect(path, isolation_level=None, timeout=30)) as conn:
                yield migrations.SqliteDb(conn)

        return sqlite_db
    dsn = str(request.getfixturevalue("postgres_dsn"))

    @contextmanager
    def postgres_db() -> Iterator[MigrationDb]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            yield PostgresMigrationDb(conn)

    return postgres_db


def ledger(db: MigrationDb) -> list[tuple[int, str, int]]:
    rows = []
    for version in range(1, migrations.current_version(db) + 1):
        name = db.scalar("SELECT name FROM schema_migrations WHERE version = ?", (version,))
        at = db.scalar("SELECT applied_at_ns FROM schema_migrations WHERE version = ?", (version,))
        if name is not None:
            rows.append((version, str(name), int(at)))
    return rows


def test_applies_each_migration_once_in_order_and_records_it(connect: Connect) -> None:
    with connect() as db:
        assert migrations.migrate(db, [ONE, TWO], newer=too_new, clock=lambda: 42) == 2
        assert ledger(db) == [(1, "first", 42), (2, "second", 42)]
        assert db.scalar("SELECT COUNT(*) FROM a") == 2
        # Again, and with one more: only the new one runs.
        assert migrations.migrate(db, [ONE, TWO], newer=too_new, clock=lambda: 43) == 2
        assert migrations.migrate(db, [ONE, TWO, THREE], newer=too_new, clock=lambda: 44) == 3
        assert ledger(db) == [(1, "first", 42), (2, "second", 42), (3, "third", 44)]
        assert db.scalar("SELECT COUNT(*) FROM a") == 2


def test_a_failing_migration_leaves_nothing_of_itself(connect: Connect) -> None:
    broken = Migration(2, "broken", "CREATE TABLE b (y INTEGER); INSERT INTO nowhere VALUES (1);")
    with connect() as db:
        migrations.migrate(db, [ONE], newer=too_new)
    with connect() as db, pytest.raises((sqlite3.Error, psycopg.Error), match="nowhere"):
        migrations.migrate(db, [ONE, broken], newer=too_new)
    with connect() as db:
        assert migrations.current_version(db) == 1
        assert not db.table_exists("b")
        assert migrations.migrate(db, [ONE, TWO], newer=too_new) == 2
        assert db.table_exists("b")


def test_a_newer_database_is_refused_and_left_alone(connect: Connect) -> None:
    with connect() as db:
        migrations.migrate(db, [ONE, TWO, THREE], newer=too_new)
    with connect() as db, pytest.raises(TooNew, match="version 3 is newer than 1"):
        migrations.migrate(db, [ONE], newer=too_new)
    with connect() as db:
        assert [v for v, _, _ in ledger(db)] == [1, 2, 3]


def test_current_version_of_a_database_without_a_ledger_writes_nothing(connect: Connect) -> None:
    with connect() as db:
        assert migrations.current_version(db) == 0
        assert not db.table_exists(migrations.LEDGER)
        assert migrations.migrate(db, [], newer=too_new) == 0
        assert db.table_exists(migrations.LEDGER)


def test_scripts_keep_trigger_and_function_bodies_whole(connect: Connect) -> None:
    with connect() as db:
        body = (
            "CREATE TRIGGER a_fixed BEFORE UPDATE ON a\n"
            "BEGIN SELECT RAISE(ABORT, 'a is fixed; really'); END;\n"
            if isinstance(db, migrations.SqliteDb)
            else "CREATE FUNCTION a_fixed() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN RAISE EXCEPTION 'a is fixed; really'; END $$;\n"
            "CREATE TRIGGER a_fixed BEFORE UPDATE ON a FOR EACH ROW"
            " EXECUTE FUNCTION a_fixed();\n"
        )
        migrations.migrate(db, [ONE, Migration(2, "trigger", body)], newer=too_new)
        with pytest.raises((sqlite3.Error, psycopg.Error), match="a is fixed; really"):
            db.execute("UPDATE a SET x = 3")


class Lockstep:
    """A real ``MigrationDb`` whose first transaction (the runner's version check) ends at a
    barrier: every migrator has read the version before any of them migrates."""

    def __init__(self, db: MigrationDb, barrier: threading.Barrier) -> None:
        self.db, self.barrier, self.checked = db, barrier, False

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.db.transaction():
            yield
        if not self.checked:
            self.checked = True
            self.barrier.wait(timeout=60)

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self.db.execute(sql, params)

    def scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        return self.db.scalar(sql, params)

    def script(self, sql: str) -> None:
        self.db.script(sql)

    def table_exists(self, name: str) -> bool:
        return self.db.table_exists(name)


def test_concurrent_migrators_apply_each_migration_exactly_once(connect: Connect) -> None:
    # CREATE TABLE without IF NOT EXISTS: a migration run twice would fail.
    steps = [Migration(v, f"m{v}", f"CREATE TABLE t{v} (x INTEGER);") for v in range(1, 6)]
    errors: list[BaseException] = []
    checked = threading.Barrier(4)

    def migrator() -> None:
        try:
            with connect() as db:
                assert migrations.migrate(Lockstep(db, checked), steps, newer=too_new) == 5
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrator) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    with connect() as db:
        assert [v for v, _, _ in ledger(db)] == [1, 2, 3, 4, 5]
        assert db.scalar("SELECT COUNT(*) FROM schema_migrations") == 5
