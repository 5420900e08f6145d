"""Fixtures: a real mosquitto broker on 127.0.0.1 (TLS with a CA made in the test, passwords, ACL).

The broker's ACL is ``config/mosquitto/acl`` verbatim and its global policy lines (everything
above the first ``listener`` in ``config/mosquitto/mosquitto.conf`` except paths and logging)
are copied from the production example, so the example is what the tests exercise.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import pytest

from tests.certs import PKI, make_pki
from tests.eventually import eventually, eventually_blocking

HOST = "127.0.0.1"
CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "mosquitto"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"

# Production settings the test broker replaces with its own (paths, logging, autosave).
_OVERRIDDEN_KEYS = frozenset(
    {
        "user",
        "pid_file",
        "password_file",
        "acl_file",
        "persistence_location",
        "persistence_file",
        "autosave_interval",
        "autosave_on_changes",
        "log_dest",
        "log_type",
        "connection_messages",
        "log_timestamp",
        "log_timestamp_format",
        "include_dir",
    }
)


def production_acl() -> str:
    """The production ACL text (``config/mosquitto/acl``)."""
    return (CONFIG_DIR / "acl").read_text()


def production_policy_lines() -> list[str]:
    """Global lines of the production config above the first ``listener``, minus paths/logs."""
    lines: list[str] = []
    for raw in (CONFIG_DIR / "mosquitto.conf").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key = line.split()[0]
        if key == "listener":
            break
        if key not in _OVERRIDDEN_KEYS:
            lines.append(line)
    return lines


# ------------------------------------------------------------------------------------ broker


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class BrokerStartError(RuntimeError):
    """mosquitto did not come up; the message carries the log tail."""


@dataclass
class Broker:
    """One mosquitto process on 127.0.0.1 with a TLS and a plain listener.

    Ports, users, ACL and the persistence directory stay the same across ``stop``/``kill``
    and ``start``, so QoS 1 sessions survive a restart (up to the last autosave on SIGKILL).
    """

    workdir: Path
    pki: PKI
    host: str = HOST
    tls_port: int = 0
    plain_port: int = 0
    users: dict[str, str] = field(default_factory=dict)
    autosave_interval: int = 1
    autosave_on_changes: bool = False
    extra_acl: str = ""
    extra_config: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    # ---- paths
    @property
    def ca_path(self) -> Path:
        return self.pki.ca_path

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def acl_path(self) -> Path:
        return self.workdir / "acl"

    @property
    def passwd_path(self) -> Path:
        return self.workdir / "passwd"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    # ---- users / files
    def add_user(
        self, name: str, password: str | None = None, *, acl_lines: Iterable[str] = ()
    ) -> str:
        """Add (or change) a user; gate users need no ``acl_lines`` (the pattern ACL covers them).

        ``acl_lines`` (``topic read …``) are added in a ``user`` block after the production ACL.
        A running broker reloads its password file and ACL. Returns the password.
        """
        if not name or any(c in name for c in "/+#:"):
            raise ValueError(f"bad MQTT user name {name!r}")
        password = password if password is not None else secrets.token_urlsafe(18)
        self.users[name] = password
        lines = list(acl_lines)
        if lines:
            self.extra_acl += f"\nuser {name}\n" + "".join(f"{line}\n" for line in lines)
        self._write_files()
        if self.running:
            self.reload()
        return password

    def add_gate(self, gate_id: str) -> str:
        """Add a gate user (username = gate id); returns its password."""
        return self.add_user(gate_id)

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.passwd_path.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
        self.passwd_path.chmod(0o600)
        subprocess.run(
            [MOSQUITTO_PASSWD, "-U", str(self.passwd_path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.acl_path.write_text(production_acl() + "\n# --- test-only\n" + self.extra_acl)
        self.config_path.write_text(self._render_config())

    def _render_config(self) -> str:
        head = [
            "# Generated by tests/services/mosquitto.py from config/mosquitto/mosquitto.conf",
            *production_policy_lines(),
            "",
            "user root",
            f"password_file {self.passwd_path}",
            f"acl_file {self.acl_path}",
            f"persistence_location {self.data_dir}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {self.autosave_interval}",
            f"autosave_on_changes {'true' if self.autosave_on_changes else 'false'}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
            self.extra_config,
            "",
            f"listener {self.plain_port} {self.host}",
            "socket_domain ipv4",
            "protocol mqtt",
            "",
            f"listener {self.tls_port} {self.host}",
            "socket_domain ipv4",
            "protocol mqtt",
            f"cafile {self.pki.ca_path}",
            f"certfile {self.pki.server_cert_path}",
            f"keyfile {self.pki.server_key_path}",
        ]
        return "\n".join(head) + "\n"

    # ---- process control
    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto (new free ports on the first start) and wait until it listens."""
        if self.running:
            return
        first = self.tls_port == 0
        for attempt in range(3):
            if first:
                self.tls_port, self.plain_port = free_port(), free_port()
                while self.plain_port == self.tls_port:
                    self.plain_port = free_port()
            self._write_files()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [MOSQUITTO, "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=self.workdir,
                )
            try:
                self.wait_ready(timeout)
                return
            except BrokerStartError:
                self.kill()
                text = self.log_path.read_bytes()[offset:].decode(errors="replace")
                if first and "in use" in text and attempt < 2:
                    continue  # another process took the port between probe and bind
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, predicate: Callable[[], bool], what: str, timeout: float, every: float) -> None:
        """:func:`eventually_blocking` for the broker: ``BrokerStartError`` with the log's tail
        if mosquitto exits meanwhile or ``what`` is not so within ``timeout``."""

        def check() -> bool:
            if not self.running:
                raise BrokerStartError(f"mosquitto exited\n{self.log_tail()}")
            return predicate()

        try:
            eventually_blocking(check, what, within=timeout, every=every)
        except AssertionError as exc:
            raise BrokerStartError(f"{exc}\n{self.log_tail()}") from None

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll until the plain listener accepts TCP and the TLS listener completes a handshake."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_path))

        def accepts(port: int, tls: bool) -> bool:
            try:
                with socket.create_connection((self.host, port), timeout=1.0) as sock:
                    if tls:
                        with context.wrap_socket(sock, server_hostname=self.host):
                            pass
            except OSError:
                return False
            return True

        self._wait(lambda: accepts(self.plain_port, False), "mosquitto accepting", timeout, 0.01)
        self._wait(lambda: accepts(self.tls_port, True), "mosquitto accepting TLS", timeout, 0.01)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL if it hangs."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: a crash; only what the last autosave wrote survives."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._proc = None

    def restart(self, *, hard: bool = False, timeout: float = 10.0) -> None:
        """Stop (or with ``hard``, SIGKILL) and start again on the same ports."""
        if hard:
            self.kill()
        else:
            self.stop(timeout)
        self.start(timeout)

    def save(self, timeout: float = 10.0) -> None:
        """Make a running broker write its persistence file now (SIGUSR1) and wait for it."""
        proc = self._proc
        if proc is None or not self.running:
            return
        db = self.data_dir / "mosquitto.db"

        def stamp() -> tuple[int, int] | None:
            try:
                st = db.stat()
            except FileNotFoundError:
                return None
            return st.st_ino, st.st_mtime_ns

        before = stamp()
        proc.send_signal(signal.SIGUSR1)
        # mosquitto writes mosquitto.db.new, then renames it
        self._wait(lambda: stamp() != before, "mosquitto saved", timeout, 0.005)

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP: reload passwords and ACL; returns once the broker has reloaded."""
        proc = self._proc
        if proc is None or not self.running:
            return
        before = self.log_path.read_bytes().count(b"Reloading config.")
        proc.send_signal(signal.SIGHUP)
        # The reload runs in the same loop iteration right after this line is logged, so any
        # connection made after seeing it is authenticated against the new files.
        self._wait(
            lambda: self.log_path.read_bytes().count(b"Reloading config.") > before,
            "mosquitto reloaded",
            timeout,
            0.01,
        )

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def arestart(self, *, hard: bool = False) -> None:
        await asyncio.to_thread(self.restart, hard=hard)

    def log_text(self) -> str:
        """The whole broker log (all runs of this broker)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_for_log(self, text: str, *, count: int = 1, within: float = 15.0) -> None:
        """Wait until ``text`` occurs ``count`` times in the log."""
        await eventually(
            lambda: self.log_text().count(text) >= count,
            lambda: f"{text!r} {count} times in the broker log\n{self.log_tail()}",
            within=within,
            every=0.01,
        )

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # ---- clients
    def client(
        self,
        user: str | None,
        *,
        tls: bool = False,
        password: str | None = None,
        ca_path: Path | None = None,
        identifier: str | None = None,
        **kwargs: Any,
    ) -> aiomqtt.Client:
        """An (unconnected) aiomqtt client for ``user`` on the TLS or plain listener.

        ``password`` defaults to the user's; ``ca_path`` to the test CA. Other keyword
        arguments go to ``aiomqtt.Client``. Call from inside a running event loop.
        """
        if password is None and user is not None:
            password = self.users.get(user)
        tls_params = None
        if tls:
            tls_params = aiomqtt.TLSParameters(ca_certs=str(ca_path or self.pki.ca_path))
        return aiomqtt.Client(
            hostname=self.host,
            port=self.tls_port if tls else self.plain_port,
            username=user,
            password=password,
            identifier=identifier,
            tls_params=tls_params,
            **kwargs,
        )


class BrokerFactory(Protocol):
    def __call__(
        self,
        users: Iterable[str] = ...,
        *,
        start: bool = ...,
        autosave_interval: int = ...,
        autosave_on_changes: bool = ...,
        extra_config: str = ...,
    ) -> Broker: ...


DEFAULT_USERS = ("central", "gate-a", "gate-b")


@pytest.fixture(scope="session")
def broker_pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """Test CA, server cert for 127.0.0.1/localhost, and a wrong CA (session-wide)."""
    return make_pki(tmp_path_factory.mktemp("mosquitto-pki"))


@pytest.fixture
def make_broker(
    broker_pki: PKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerFactory]:
    """Factory for brokers (users get random passwords); every broker is killed at teardown."""
    brokers: list[Broker] = []

    def factory(
        users: Iterable[str] = DEFAULT_USERS,
        *,
        start: bool = True,
        autosave_interval: int = 1,
        autosave_on_changes: bool = False,
        extra_config: str = "",
    ) -> Broker:
        broker = Broker(
            workdir=tmp_path_factory.mktemp("mosquitto"),
            pki=broker_pki,
            users={u: secrets.token_urlsafe(18) for u in users},
            autosave_interval=autosave_interval,
            autosave_on_changes=autosave_on_changes,
            extra_config=extra_config,
        )
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield factory
    for broker in brokers:
        broker.kill()


@pytest.fixture
def mosquitto_broker(make_broker: BrokerFactory) -> Broker:
    """A started broker with users ``central``, ``gate-a`` and ``gate-b``."""
    return make_broker()
