"""A mosquitto for the sync benchmarks: 127.0.0.1 only, password users, the production ACL and
queue limits (``config/mosquitto/``), started and stopped by the benchmark itself."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def policy_lines() -> list[str]:
    """The production broker's queue limits (as tests/services/mosquitto.py copies them)."""
    keep = ("max_queued_messages", "max_queued_bytes", "max_inflight_messages", "max_packet")
    text = (ROOT / "config" / "mosquitto" / "mosquitto.conf").read_text()
    return [line.strip() for line in text.splitlines() if line.strip().startswith(keep)]


class Mosquitto:
    """A mosquitto on 127.0.0.1 with users ``central`` and ``gates``, the production ACL (with
    ``site``: each gate reads that site's park chain, as ``central trial-broker`` writes it)."""

    def __init__(self, workdir: Path, gates: Iterable[str], site: str | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.users = {u: secrets.token_urlsafe(16) for u in ("central", *gates)}
        self.site = site
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        passwd = self.workdir / "passwd"
        passwd.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
        passwd.chmod(0o600)
        subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
        acl = self.workdir / "acl"
        shutil.copy(ROOT / "config" / "mosquitto" / "acl", acl)
        if self.site is not None:
            with acl.open("a") as f:
                for user in self.users.keys() - {"central"}:
                    f.write(f"\nuser {user}\ntopic read edgegate/v1/{self.site}/park\n")
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {acl}",
            "persistence false",
            "set_tcp_nodelay true",
            *policy_lines(),
            f"listener {self.port} 127.0.0.1",
            "log_dest stderr",
            "log_type error",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # to read the password file
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def central_run(self, dsn: str, client_id: str, *extra: str) -> list[str]:
        """The command line of ``edgegate central run`` on this broker as user ``central``
        (its password in a file in the work folder), storing into ``dsn``."""
        password_file = self.workdir / "central.pass"
        password_file.write_text(self.users["central"])
        return [
            *(sys.executable, "-m", "edgegate", "central", "run"),
            *("--broker", f"mqtt://127.0.0.1:{self.port}", "--password-file", str(password_file)),
            *("--db", dsn, "--client-id", client_id, *extra),
        ]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
