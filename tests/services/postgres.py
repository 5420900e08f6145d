"""Fixtures: a real PostgreSQL server on 127.0.0.1, started for the test session.

``postgres_server`` (session) runs ``initdb`` and ``pg_ctl`` from the Debian package
(``/usr/lib/postgresql/<major>/bin``, or ``$EDGEGATE_PG_BIN``) in a temporary directory,
listening on 127.0.0.1 on a free port with its socket in that directory and trust auth.
PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` OS user.
``postgres_dsn`` (function) gives each test a fresh database, dropped afterwards.
A server that cannot start fails the tests that need it, with the end of its log.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

HOST = "127.0.0.1"
SUPERUSER = "postgres"


@dataclass(frozen=True, slots=True)
class PostgresServer:
    host: str
    port: int
    user: str
    data_dir: Path
    log_file: Path

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"


def _bin_dir() -> Path:
    override = os.environ.get("EDGEGATE_PG_BIN")
    if override:
        return Path(override)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for c in candidates:
        if (c / "pg_ctl").exists():
            return c
    pytest.fail(
        "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin "
        "(apt-get install postgresql, or set EDGEGATE_PG_BIN)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = _bin_dir()
    as_root = os.geteuid() == 0
    # Not pytest's tmp_path: its parent is 0700 root, which the postgres user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="edgegate-pg-"))
    data = base / "data"
    log_file = base / "server.log"
    prefix: list[str] = []
    if as_root:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            pytest.fail("running as root, and there is no 'postgres' OS user to run the server")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=base,
        )

    started = False
    try:
        init = run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '{HOST}'\n"
                f"unix_socket_directories = '{base}'\n"
                "fsync = on\n"
                "max_connections = 100\n"
            )
        port = 0
        failure = ""
        for _ in range(3):  # the free port may be taken between probing and binding it
            port = _free_port()
            start = run(
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log_file),
                "-o",
                f"-p {port}",
                "-w",
                "-t",
                "60",
                "start",
            )
            if start.returncode == 0:
                started = True
                break
            failure = f"pg_ctl start failed ({start.returncode}):\n{start.stdout}\n{start.stderr}"
        if not started:
            pytest.fail(f"{failure}\n--- server log ---\n{_tail(log_file)}")
        server = PostgresServer(HOST, port, SUPERUSER, data, log_file)
        try:
            with psycopg.connect(server.dsn(), connect_timeout=10) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            pytest.fail(f"PostgreSQL started but refuses connections: {exc}\n{_tail(log_file)}")
        yield server
    finally:
        if started:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A DSN of a fresh, empty database on ``postgres_server``, dropped after the test."""
    name = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield postgres_server.dsn(name)
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
        # FORCE ends connections a failed test left open.
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(params=["sqlite", "postgres"])
def central_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A DSN of an empty central store, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central.db'}"
    return str(request.getfixturevalue("postgres_dsn"))
