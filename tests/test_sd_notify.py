"""systemd's notify protocol against a real datagram socket as ``NOTIFY_SOCKET`` (a path and
an abstract name): READY=1 once the lanes and the HTTP server run, STATUS= kept current,
WATCHDOG=1 at half of WATCHDOG_USEC and only while the log writer answers, STOPPING=1 at
SIGTERM — in-process (:class:`RunningGate`) and from a real ``edgegate run``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgegate.config import parse_config
from edgegate.core.events import DaemonStopped, GateMode, StopReason
from edgegate.daemon.sd_notify import Notifier
from edgegate.daemon.status import GateStatus, SyncStatus
from edgegate.log import EventLog
from tests.eventually import eventually
from tests.gate_harness import RunningGate, gate_toml, lane, sim_plc, sim_reader
from tests.services.mosquitto import free_port
from tests.test_gate_e2e import edgegate_run, exit_code

pytestmark = pytest.mark.timeout(60)


class NotifySocket:
    """systemd's side: a bound ``AF_UNIX`` datagram socket; every message as (monotonic time
    of receipt, its ``KEY=value`` fields)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.on_message: Callable[[dict[str, str]], None] | None = None

    def drain(self) -> list[tuple[float, dict[str, str]]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), fields))
            if self.on_message is not None:
                self.on_message(fields)

    @contextlib.contextmanager
    def watched(self) -> Iterator[None]:
        """Drain as soon as a message arrives, from this event loop (``on_message`` then
        sees the daemon as it was when it sent)."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self.drain)
        try:
            yield
        finally:
            loop.remove_reader(self.sock.fileno())

    def times(self, key: str) -> list[float]:
        return [at for at, fields in self.drain() if key in fields]

    def values(self, key: str) -> list[str]:
        return [fields[key] for _, fields in self.drain() if key in fields]


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    address = str(tmp_path / "notify") if request.param == "path" else f"@eg-{uuid.uuid4().hex}"
    listener = NotifySocket(address)
    yield listener
    listener.sock.close()


def gate_text(tmp_path: Path, *, http_port: int | None = None) -> str:
    text = gate_toml(
        tmp_path / "gate.db",
        {"plc": sim_plc(), "cam": sim_reader()},
        [lane("l1", "entry", "cam", "plc")],
    )
    if http_port is not None:
        text += f'\n[http]\nbind = "127.0.0.1"\nport = {http_port}\n'
    return text


def running_gate(
    tmp_path: Path, notifier: Notifier, *, http_port: int | None = None
) -> RunningGate:
    config = parse_config(gate_text(tmp_path, http_port=http_port), base_dir=tmp_path)
    running = RunningGate(config, clock_synchronised=lambda: True)
    running.gate.notifier = notifier
    return running


# --- the protocol -----------------------------------------------------------------------------


def test_without_a_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.send(READY="1") is False


def test_the_watchdog_is_ours_only_for_our_pid() -> None:
    base = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_environ(base).watchdog_interval == 15.0
    mine = {**base, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environ(mine).watchdog_interval == 15.0
    assert Notifier.from_environ({**base, "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier.from_environ({**base, "WATCHDOG_USEC": "soon"}).watchdog_interval is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "@x"}).watchdog_interval is None


def test_a_message_reaches_the_socket_one_status_line(notify_socket: NotifySocket) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": notify_socket.address})
    assert notifier.send(READY="1", STATUS="lanes: in-1 idle\nWATCHDOG=1")
    assert notify_socket.drain()[-1][1] == {"READY": "1", "STATUS": "lanes: in-1 idle WATCHDOG=1"}


def test_a_missing_socket_costs_the_message_only(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    assert notifier.send(READY="1") is False
    assert notifier.send(STATUS="again") is False


def test_the_status_line_puts_problems_first() -> None:
    quiet = GateStatus(GateMode.NORMAL, {"in-1": "idle", "out-1": "open"}, {})
    assert quiet.line() == "lanes: in-1 idle, out-1 open | normal"
    busy = GateStatus(
        GateMode.INCIDENT,
        {"in-1": "fault"},
        {"plc-1": "offline", "cam-1": "offline", "cam-2": "no-data", "cam-3": "offline"},
        SyncStatus("connecting", 120, 45),
        log_problem="disk full",
    )
    assert busy.line() == (
        "INCIDENT | log not writable: disk full | faulted: cam-1 (offline), cam-2 (no-data), "
        "cam-3 (offline) and 1 more | lanes: in-1 fault | sync: 120 behind for 45 s (connecting)"
    )
    synced = GateStatus(GateMode.NORMAL, {}, {}, SyncStatus("connected", 0))
    assert synced.line() == "lanes: none | normal | sync: up to date"


async def test_a_no_op_job_does_not_clear_the_write_problem(tmp_path: Path) -> None:
    """The watchdog's probe commits an empty transaction, which succeeds even on a full
    disk: only a committed event says the log is writable again."""
    async with await EventLog.open(tmp_path / "gate.db", gate_id="g") as elog:
        elog.write_problem = "disk full"
        await elog.run_in_writer(lambda _conn: None)
        assert elog.write_problem == "disk full"
        await elog.append(DaemonStopped(reason=StopReason.REQUESTED))
        assert elog.write_problem is None


# --- the daemon -------------------------------------------------------------------------------


async def test_ready_once_the_lanes_and_the_http_server_run(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    port = free_port()
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": notify_socket.address})
    running = running_gate(tmp_path, notifier, http_port=port)
    seen_at_ready: list[str] = []

    def at_ready(fields: dict[str, str]) -> None:
        if fields.get("READY") != "1":
            return
        gate = running.gate
        seen_at_ready.append(f"started={gate.started.is_set()}")
        # The kernel accepts on a listening socket even while this loop is busy here.
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            seen_at_ready.append("http listening")

    notify_socket.on_message = at_ready
    with notify_socket.watched():
        async with running:
            await eventually(lambda: bool(notify_socket.values("READY")), "READY=1 sent")
            assert seen_at_ready == ["started=True", "http listening"]
            first = notify_socket.messages[0][1]
            assert first["READY"] == "1"
            assert "lanes: l1 " in first["STATUS"]


async def test_status_follows_a_device_fault_at_most_once_a_second(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": notify_socket.address})
    async with running_gate(tmp_path, notifier) as g:
        await eventually(lambda: "l1 idle" in "".join(notify_socket.values("STATUS")), "idle")
        await g.plc().stop()  # the PLC goes offline
        await eventually(
            lambda: any("faulted: plc (" in s for s in notify_socket.values("STATUS")),
            lambda: f"the fault in STATUS=: {notify_socket.values('STATUS')}",
            within=10,
        )
        await g.plc().start()
        await eventually(
            lambda: "faulted" not in notify_socket.values("STATUS")[-1],
            lambda: f"the fault gone from STATUS=: {notify_socket.values('STATUS')}",
            within=10,
        )
    updates = [at for at, fields in notify_socket.messages if set(fields) == {"STATUS"}]
    gaps = [b - a for a, b in itertools.pairwise(updates)]
    assert len(updates) >= 2
    assert min(gaps, default=1.0) >= 0.9, gaps
    assert notify_socket.values("STOPPING") == ["1"]


async def test_watchdog_pings_stop_while_the_writer_is_stuck(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    half = 0.5
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": str(int(2 * half * 1e6))}
    async with running_gate(tmp_path, Notifier.from_environ(env)) as g:
        await eventually(lambda: len(notify_socket.times("WATCHDOG")) >= 4, "4 pings", within=10)
        pings = notify_socket.times("WATCHDOG")
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # Not faster than half the period (the pace), well inside the period (the deadline).
        assert all(0.9 * half <= gap < 1.8 * half for gap in gaps), gaps

        release = threading.Event()
        stuck = asyncio.ensure_future(g.event_log.run_in_writer(lambda _c: release.wait(30)))
        await asyncio.sleep(0.1)  # the writer takes the job
        before = len(notify_socket.times("WATCHDOG"))
        await asyncio.sleep(4 * half)  # time enough for pings that must not come
        # One probe may have come back just before the writer took the job.
        assert len(notify_socket.times("WATCHDOG")) <= before + 1
        release.set()
        await stuck
        stopped_at = len(notify_socket.times("WATCHDOG"))
        await eventually(
            lambda: len(notify_socket.times("WATCHDOG")) >= stopped_at + 2, "pings resumed"
        )


async def test_edgegate_run_tells_systemd(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """A real ``edgegate run``: READY=1 with its STATUS=, WATCHDOG=1 with WATCHDOG_USEC set,
    STOPPING=1 at SIGTERM, exit 0."""
    config = tmp_path / "gate.toml"
    config.write_text(gate_text(tmp_path, http_port=free_port()), encoding="utf-8")
    env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "1000000"}
    async with edgegate_run(config, env=env) as proc:
        await eventually(lambda: bool(notify_socket.values("READY")), "READY=1", within=10)
        await eventually(lambda: len(notify_socket.times("WATCHDOG")) >= 2, "pings", within=10)
        assert "lanes: l1 " in notify_socket.values("STATUS")[0]
        assert not notify_socket.values("STOPPING")
        proc.send_signal(signal.SIGTERM)
        assert await exit_code(proc, config) == 0
    assert notify_socket.values("STOPPING") == ["1"]
    first = notify_socket.messages[0][1]
    assert first["READY"] == "1"
