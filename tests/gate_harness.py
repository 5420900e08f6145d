"""Helpers for end-to-end tests of the whole gate: the real daemon (:class:`Gate`), its real
Modbus and serial drivers, and real peers (PLC simulators speaking Modbus on 127.0.0.1 or a
pty, plate-reader simulators on ptys). Tests observe the gate only from the outside: its
event log, read through :class:`LogReader`, and what the PLC simulators received.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Generic, SupportsIndex, TypeVar

from edgegate.config import GateConfig, parse_config
from edgegate.core.clock import Clock
from edgegate.core.domain import PlateColour
from edgegate.core.events import BarrierCommand, Event, Loop, StopReason
from edgegate.daemon.gate import DRAIN_TIMEOUT_S, Gate
from edgegate.log import EventLog, LogReader, StoredEvent
from edgegate.sim.demo import demo_allowlist
from edgegate.sim.plate_reader import PlateReaderSimulator
from edgegate.sim.plc import PlcSimulator
from tests.eventually import eventually

E = TypeVar("E", bound=Event)

ALLOWED = "苏E12345"  # REG-1 of the demo allow-list: an ordinary commuter, blue plate
REFUSED = "浙B5Z661"  # in no list: a non-park vehicle
BLACKLISTED = "苏E99999"

#: Short lane timings (the configuration's lower bounds where they have one).
FAST_TIMINGS: dict[str, str] = {
    "plate_wait": "1s",
    "plate_early": "2s",
    "open_travel": "1s",
    "close_travel": "1s",
    "pass_timeout": "5s",
    "close_delay": "200ms",
    "duplicate_read_window": "0s",
}
ARM_TRAVEL = "300ms"  # simulated arm travel


# --- configuration ----------------------------------------------------------------------------


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _table(header: str, fields: Mapping[str, object]) -> str:
    return "\n".join([header, *(f"{k} = {_value(v)}" for k, v in fields.items())]) + "\n"


def sim_plc(**fields: object) -> dict[str, object]:
    return {"type": "simulated-plc", "travel_time": ARM_TRAVEL, **fields}


def sim_reader(**fields: object) -> dict[str, object]:
    return {"type": "simulated-plate-reader", **fields}


def tcp_plc(port: int, **fields: object) -> dict[str, object]:
    return {
        "type": "modbus-tcp",
        "host": "127.0.0.1",
        "port": port,
        "profile": "barrier-plc-generic",
        "poll_hz": 20.0,
        "timeout": "300ms",
        "reconnect_max": "500ms",
        **fields,
    }


def rtu_plc(port: str, **fields: object) -> dict[str, object]:
    return {
        "type": "modbus-rtu",
        "port": port,
        "baudrate": 115200,
        "profile": "barrier-plc-generic",
        "poll_hz": 20.0,
        "timeout": "300ms",
        "reconnect_max": "500ms",
        **fields,
    }


def serial_reader(port: str, **fields: object) -> dict[str, object]:
    return {
        "type": "serial-plate-reader",
        "port": port,
        "profile": "plate-reader-generic",
        **fields,
    }


def lane(
    lane_id: str, direction: str, reader: str, plc: str, **fields: object
) -> dict[str, object]:
    return {
        "id": lane_id,
        "direction": direction,
        "plate_reader": reader,
        "barrier": plc,
        **fields,
    }


def gate_toml(
    log_path: Path,
    devices: Mapping[str, Mapping[str, object]],
    lanes: Iterable[Mapping[str, object]],
    *,
    timings: Mapping[str, str] | None = None,
    policy: Mapping[str, object] | None = None,
    gate: Mapping[str, object] | None = None,
) -> str:
    """A comprehensive gate with the given devices and lanes, fast timings by default
    (``gate``: ``[gate]`` fields replacing the defaults, such as ``id`` and ``site``)."""
    parts = [
        _table(
            "[gate]",
            {
                "id": "e2e-gate",
                "name": "End-to-end test gate",
                "kind": "comprehensive",
                "site": "test",
                **(gate or {}),
            },
        ),
        _table("[policy]", {"on_stale_allowlist": "note", "min_confidence": 0.5, **(policy or {})}),
        _table("[log]", {"path": str(log_path)}),
        _table("[timings]", {**FAST_TIMINGS, **(timings or {})}),
    ]
    parts += [_table(f"[devices.{name}]", fields) for name, fields in devices.items()]
    parts += [_table("[[lanes]]", fields) for fields in lanes]
    return "\n".join(parts)


def gate_config(
    tmp_path: Path,
    devices: Mapping[str, Mapping[str, object]],
    lanes: Iterable[Mapping[str, object]],
    *,
    timings: Mapping[str, str] | None = None,
) -> GateConfig:
    """:func:`gate_toml` parsed as ``edgegate run`` would, its log at ``tmp_path/gate.db``."""
    text = gate_toml(tmp_path / "gate.db", devices, lanes, timings=timings)
    return parse_config(text, source="<e2e>", base_dir=tmp_path)


def one_lane_config(tmp_path: Path, direction: str = "entry", **lane_fields: object) -> GateConfig:
    """One lane, ``l1``, with a simulated PLC ``plc`` and a simulated reader ``cam``."""
    return gate_config(
        tmp_path,
        {"plc": sim_plc(), "cam": sim_reader()},
        [lane("l1", direction, "cam", "plc", **lane_fields)],
    )


# --- the event log, from the outside ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Logged(Generic[E]):
    """A stored event and its decoded form."""

    stored: StoredEvent
    event: E

    @property
    def seq(self) -> int:
        return self.stored.seq

    @property
    def mono(self) -> float:
        """Monotonic seconds when it was appended (comparable with the simulators' times)."""
        return self.stored.mono_ns / 1e9


class LogView:
    """The gate's log file through a read-only :class:`LogReader` (as a technician sees it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader = LogReader(path)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> LogView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stored(self, after: int = 0) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        while True:
            batch = self.reader.read(after=after, limit=1000)
            if not batch:
                return out
            out += batch
            after = batch[-1].seq

    def all(self, after: int = 0) -> list[Logged[Event]]:
        return [Logged(s, s.event()) for s in self.stored(after)]

    def of(
        self,
        kind: type[E],
        *,
        lane: str | None = None,
        after: int = 0,
        where: Callable[[E], bool] | None = None,
    ) -> list[Logged[E]]:
        """Every logged ``kind`` (of ``lane``, after seq ``after``, matching ``where``)."""
        found: list[Logged[E]] = []
        for stored in self.stored(after):
            if stored.type != kind.TYPE or (lane is not None and stored.lane != lane):
                continue
            event = stored.event()
            assert isinstance(event, kind)
            if where is None or where(event):
                found.append(Logged(stored, event))
        return found

    def types(self, *, lane: str | None = None, after: int = 0) -> list[str]:
        return [s.type for s in self.stored(after) if lane is None or s.lane == lane]

    @property
    def head(self) -> int:
        return self.reader.head()[0]

    async def wait_for(
        self,
        kind: type[E],
        *,
        lane: str | None = None,
        after: int = 0,
        where: Callable[[E], bool] | None = None,
        within: float = 3.0,
    ) -> Logged[E]:
        """The first ``kind`` logged after seq ``after`` that matches; fails after ``within``."""
        found: list[Logged[E]] = []

        def logged() -> bool:
            found[:] = self.of(kind, lane=lane, after=after, where=where)
            return bool(found)

        await eventually(
            logged,
            lambda: f"{kind.TYPE} (lane {lane}) after seq {after}; log: {self.types(after=after)}",
            within=within,
        )
        return found[0]

    def verify_ok(self) -> None:
        report = self.reader.verify()
        assert report.ok, report
        assert report.head_seq == self.head


# --- the PLC simulator's side -----------------------------------------------------------------


class CommandTrail(list[tuple[float, BarrierCommand]]):
    """Replaces :attr:`PlcSimulator.commands`; also notes, for each command the PLC takes,
    the seq of the gate log's last COMMITTED event at that instant (log-then-act)."""

    def __init__(self, sim: PlcSimulator, event_log: EventLog) -> None:
        super().__init__(sim.commands)
        self._event_log = event_log
        #: The committed log head when each command arrived (-1: before the trail existed).
        self.heads: list[int] = [-1] * len(self)
        sim.commands = self

    def append(self, item: tuple[float, BarrierCommand], /) -> None:
        super().append(item)
        self.heads.append(self._event_log.head[0])

    def of(self, command: BarrierCommand, after: float = 0.0) -> list[tuple[int, float]]:
        """(index, time) of every ``command`` taken at or after monotonic ``after``."""
        return [(i, t) for i, (t, c) in enumerate(self) if c is command and t >= after]

    def head_at(self, index: SupportsIndex) -> int:
        return self.heads[index]

    async def wait(
        self, command: BarrierCommand, *, after: float = 0.0, within: float = 3.0
    ) -> tuple[int, float]:
        """The first ``command`` taken at or after ``after``: (index, monotonic time)."""
        await eventually(
            lambda: bool(self.of(command, after)),
            lambda: f"{command} taken by the PLC; it took {list(self)}",
            within=within,
            every=0.01,
        )
        return self.of(command, after)[0]


async def wait_position(sim: PlcSimulator, position: float, within: float = 3.0) -> None:
    await eventually(
        lambda: sim.position == position,
        lambda: f"the arm at {position} (it is at {sim.position})",
        within=within,
    )


async def wait_until(
    predicate: Callable[[], bool], what: str, within: float = 3.0, every: float = 0.02
) -> None:
    """:func:`tests.eventually.eventually` under its older name (test_uplink uses it)."""
    await eventually(predicate, what, within=within, every=every)


# --- the road -------------------------------------------------------------------------------


@dataclass
class Road:
    """A lane's loops on its PLC simulator and its plate reader: a driver's moves, one by one.

    Each step lasts ``step`` seconds, several PLC polls, so the gate sees every change: these
    sleeps pace the vehicle; they wait for nothing."""

    plc: PlcSimulator
    reader: PlateReaderSimulator
    step: float = 0.15

    async def arrive(self, plate: str | None, colour: PlateColour = PlateColour.BLUE) -> None:
        self.plc.set_loop(Loop.ARMING, True)
        await asyncio.sleep(self.step)
        if plate is not None:
            await self.reader.send_read(plate, colour, 0.95)

    async def set(self, loop: Loop, occupied: bool) -> None:
        self.plc.set_loop(loop, occupied)
        await asyncio.sleep(self.step)

    async def cross(self) -> None:
        """From the arming loop under the open arm, over the exit loop, out of the lane."""
        await self.set(Loop.SAFETY, True)
        await self.set(Loop.ARMING, False)
        await self.set(Loop.EXIT, True)
        await self.set(Loop.SAFETY, False)
        await self.set(Loop.EXIT, False)

    async def drive_through(self, plate: str, within: float = 3.0) -> None:
        """A vehicle arrives, waits for the arm to be fully up, and drives through."""
        await self.arrive(plate)
        await wait_position(self.plc, 1.0, within)
        await self.cross()


# --- the daemon -----------------------------------------------------------------------------


class RunningGate:
    """``async with RunningGate(config) as g``: the daemon running in this event loop, the
    demo allow-list loaded (unless ``demo_allowlist`` is False: the list it has); on leaving,
    a graceful stop (and the daemon's own errors). ``clock``, ``clock_synchronised``: the
    daemon's (default: the system's)."""

    def __init__(
        self,
        config: GateConfig,
        *,
        demo_allowlist: bool = True,
        clock: Clock | None = None,
        clock_synchronised: Callable[[], bool | None] | None = None,
    ) -> None:
        self.config = config
        self.demo_allowlist = demo_allowlist
        self.gate = Gate(config, config_path="<e2e>")
        if clock is not None:
            self.gate.clock = clock
        if clock_synchronised is not None:
            self.gate.probes = dataclasses.replace(
                self.gate.probes, clock_synchronised=clock_synchronised
            )
        self.stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log: LogView | None = None

    @property
    def log(self) -> LogView:
        assert self._log is not None
        return self._log

    @property
    def event_log(self) -> EventLog:
        assert self.gate.event_log is not None
        return self.gate.event_log

    @property
    def task(self) -> asyncio.Task[None]:
        assert self._task is not None
        return self._task

    def plc(self, name: str = "plc") -> PlcSimulator:
        return self.gate.sims.plcs[name]

    def reader(self, name: str = "cam") -> PlateReaderSimulator:
        return self.gate.sims.readers[name]

    def road(self, lane_id: str = "l1") -> Road:
        cfg = self.config.lane(lane_id)
        return Road(self.plc(cfg.barrier), self.reader(cfg.plate_reader))

    def trail(self, plc: PlcSimulator | str = "plc") -> CommandTrail:
        sim = self.plc(plc) if isinstance(plc, str) else plc
        if isinstance(sim.commands, CommandTrail):
            return sim.commands
        return CommandTrail(sim, self.event_log)

    async def __aenter__(self) -> RunningGate:
        self._task = asyncio.create_task(self.gate.run(self.stop, reason=StopReason.REQUESTED))
        started = asyncio.create_task(self.gate.started.wait())
        await asyncio.wait({self._task, started}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            await asyncio.gather(started, return_exceptions=True)
            if self._task.done():
                self._task.result()  # the daemon's own error
            await self._shutdown()
            raise AssertionError("the gate did not start within 10 s")
        try:
            assert self.gate.allowlist is not None
            if self.demo_allowlist:
                now = datetime.now(UTC).replace(microsecond=0)
                await self.gate.allowlist.replace(demo_allowlist(now), source="e2e")
            self._log = LogView(self.config.log_file)
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def _shutdown(self) -> None:
        self.stop.set()
        task = self.task
        try:
            async with asyncio.timeout(15):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise AssertionError("the gate did not stop within 15 s") from None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        began = time.monotonic()
        try:
            await self._shutdown()
        finally:
            if self._log is not None:
                self._log.close()
        if exc is None:
            # A lane still mid-cycle holds the stop up to DRAIN_TIMEOUT_S, then is abandoned
            # with its arm wherever it is: every test ends with its lanes at rest.
            assert time.monotonic() - began < DRAIN_TIMEOUT_S, "a lane timed out draining"
            check_stopped_log(self.config.log_file)


def check_stopped_log(path: Path) -> None:
    """A stopped gate's log: the chain verifies and ``daemon.stopped`` is the last event."""
    with LogView(path) as view:
        view.verify_ok()
        assert view.stored()[-1].type == "daemon.stopped", view.types()[-5:]
