"""A PostgreSQL server for the central benchmarks: Debian's binaries (``/usr/lib/postgresql/
<major>/bin``, or ``$EDGEGATE_PG_BIN``), a fresh cluster in a temporary folder, listening on
127.0.0.1 only with trust auth, ``fsync`` on; started and stopped by the benchmark itself.
Under root the server runs as the ``postgres`` OS user (PostgreSQL refuses root)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench._broker import free_port


def _bin_dir() -> Path:
    if os.environ.get("EDGEGATE_PG_BIN"):
        return Path(os.environ["EDGEGATE_PG_BIN"])
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").exists()]
    if not found:
        raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


class Postgres:
    """``start()`` a cluster, ``dsn()`` to reach it, ``stop()`` and remove it."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.bin = _bin_dir()
        self.base = Path(tempfile.mkdtemp(prefix="edgegate-bench-pg-"))
        self.port = 0
        self.settings = settings or {}
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as, *args], cwd=self.base, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            log = self.base / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}{tail}")

    def start(self) -> None:
        data = self.base / "data"
        self._run(
            str(self.bin / "initdb"),
            *("-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8"),
            *("--locale=C", "--no-sync", "--no-instructions"),
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.base}'",
            "fsync": "on",
            "max_connections": "100",
            **self.settings,
        }
        with (data / "postgresql.conf").open("a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        self.port = free_port()
        self._run(
            str(self.bin / "pg_ctl"),
            *("-D", str(data), "-l", str(self.base / "server.log")),
            *("-o", f"-p {self.port}", "-w", "-t", "60", "start"),
        )

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def pid(self) -> int:
        """The postmaster's process id."""
        return int((self.base / "data" / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        if self.port:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-m", "fast", "stop")
            self.port = 0
        shutil.rmtree(self.base, ignore_errors=True)
