"""The park demo's setting (``edgegate.cli.demo_park``): where it keeps its files, the run's
keys, passwords and tokens, and the local mosquitto it runs with the trial broker's files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path

from edgegate.central.dashboard import DashboardRole
from edgegate.central.trial import TrialPlan
from edgegate.cli.demo import _write_demo_accounts, new_password
from edgegate.console.accounts import Account, AccountsError, hash_password, write_accounts
from edgegate.sim.park import PARK_GATES
from edgegate.sync.signing import generate_keypair

#: The control room dashboard's demo account (an operator).
CONTROL = "control"
#: How long the demo waits for mosquitto to accept TLS.
_BROKER_START_S = 15.0
#: Where mosquitto is looked for besides PATH (Debian installs it in /usr/sbin).
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class ParkError(Exception):
    """The park could not start; the message names what and what to do."""


def find_mosquitto(program: str | None) -> tuple[str | None, str]:
    """(mosquitto's path, None) or (None, why it is not there)."""
    if program is not None:
        found = shutil.which(program)
        return (found, "") if found else (None, f"--mosquitto {program}: no such program")
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    found = shutil.which("mosquitto", path=path)
    return (found, "") if found else (None, "mosquitto is not installed (apt install mosquitto)")


@dataclass(frozen=True, slots=True)
class KeyFiles:
    """A key pair's PEM files: the private key (mode 0600) and the public key."""

    private: Path
    public: Path

    @classmethod
    def named(cls, directory: Path, name: str) -> KeyFiles:
        """``NAME.key`` and ``NAME.pub`` in ``directory``."""
        return cls(directory / f"{name}.key", directory / f"{name}.pub")

    def write_new(self) -> None:
        """Write a new key pair, replacing any there."""
        private_pem, public_pem = generate_keypair()
        _write_secret(self.private, private_pem)
        self.public.write_bytes(public_pem)


@dataclass(frozen=True, slots=True)
class ParkFiles:
    """Where the demo keeps everything, under ``root``."""

    root: Path

    def log(self, gate: str) -> Path:
        return self.root / f"{gate}.db"

    def accounts(self, gate: str) -> Path:
        return self.root / f"{gate}-accounts.txt"

    @property
    def dsn(self) -> str:
        return f"sqlite:///{self.root / 'central.db'}"

    @property
    def master_keys(self) -> KeyFiles:
        """Central's master key pair: it signs the park's allow-list."""
        return KeyFiles.named(self.root / "central", "central")

    @property
    def park_keys(self) -> KeyFiles:
        """The park chain's own key pair, never the master key."""
        return KeyFiles.named(self.root / "central", "park")

    @property
    def pull_token(self) -> Path:
        return self.root / "pull-token"

    @property
    def trial(self) -> Path:
        return self.root / "trial"

    @property
    def dashboard_accounts(self) -> Path:
        return self.root / "central" / "dashboard-accounts.txt"


@dataclass(frozen=True, slots=True)
class ParkSecrets:
    """The run's passwords and tokens: the gates' console accounts, the dashboard's
    operator, the gates' pull API, central's park API."""

    passwords: dict[str, str]
    control: str
    pull: str
    api: str


def prepare(files: ParkFiles, passwords: dict[str, str]) -> ParkSecrets:
    """Make the directory, a new signing key pair, pull token and dashboard account, each
    gate's console accounts (``passwords``)."""
    (files.root / "central").mkdir(parents=True, exist_ok=True)
    files.master_keys.write_new()
    files.park_keys.write_new()
    secrets_ = ParkSecrets(passwords, new_password(), _token(), _token())
    _write_secret(files.pull_token, (secrets_.pull + "\n").encode())
    for gate in PARK_GATES:
        problem = _write_demo_accounts(files.accounts(gate), passwords)
        if problem is not None:
            raise ParkError(f"{gate}: {problem}")
    control = Account(CONTROL, DashboardRole.OPERATOR, hash_password(secrets_.control))
    try:
        write_accounts(files.dashboard_accounts, {CONTROL: control})
    except AccountsError as exc:
        raise ParkError(f"the dashboard's accounts: {exc}") from None
    return secrets_


def _token() -> str:
    return secrets.token_urlsafe(24)


def _write_secret(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------------------------ broker


class Broker:
    """mosquitto with the trial broker's files (``edgegate central trial-broker``), run by
    the demo and stopped with it."""

    def __init__(self, program: str, plan: TrialPlan) -> None:
        self.program = program
        self.plan = plan
        self.url = f"mqtts://127.0.0.1:{plan.port}"
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def log_file(self) -> Path:
        return self.plan.root / "broker" / "mosquitto.log"

    async def start(self) -> str | None:
        """Start mosquitto and wait until it accepts TLS; None, or why it did not."""
        conf = self.plan.root / "broker" / "mosquitto.conf"
        self._proc = await asyncio.create_subprocess_exec(
            self.program,
            "-c",
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        context = ssl.create_default_context(cafile=str(self.plan.root / "ca.crt"))
        loop = asyncio.get_running_loop()
        end = loop.time() + _BROKER_START_S
        while loop.time() < end:
            if self._proc.returncode is not None:
                return f"mosquitto exited at once ({await self._said()})"
            try:
                _, writer = await asyncio.open_connection(
                    "127.0.0.1", self.plan.port, ssl=context, server_hostname="127.0.0.1"
                )
            except (OSError, ssl.SSLError):
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
            return None
        await self.stop()
        return f"mosquitto did not accept TLS on 127.0.0.1:{self.plan.port} within 15 s"

    async def _said(self) -> str:
        """What mosquitto wrote to stderr and its log, in short."""
        err = b""
        if self._proc is not None and self._proc.stderr is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    err = await self._proc.stderr.read()
        text = err.decode("utf-8", "replace").strip()
        with contextlib.suppress(OSError):
            text = (text + " " + self.log_file.read_text(errors="replace")[-300:]).strip()
        return " ".join(text.split())[-300:] or f"see {self.log_file}"

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        except asyncio.CancelledError:  # the demo cut short: never leave mosquitto running
            proc.kill()
            raise
