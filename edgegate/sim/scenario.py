"""Scenarios: vehicles driving through simulated lanes, for the demo, tests and benchmarks.

A vehicle arrives at a lane at a time, with a plate (or none readable) and a behaviour. The
runner plays the road: it occupies and clears the lane's loops on the PLC simulator, sends the
plate frame from the reader simulator, and watches the simulated arm to know when to drive.
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgegate.core.domain import PlateColour
from edgegate.core.events import Loop
from edgegate.sim.plate_reader import PlateReaderSimulator
from edgegate.sim.plc import PlcSimulator


class Behaviour(enum.StrEnum):
    NORMAL = "normal"
    BACKS_OUT = "backs-out"  # pulls up, then reverses away before passing
    TAILGATES = "tailgates"  # follows the previous vehicle through one opening
    STOPS_UNDER_ARM = "stops-under-arm"  # waits on the safety loop for a while
    UNREADABLE = "unreadable"  # the reader never gets the plate


@dataclass(frozen=True, slots=True)
class Vehicle:
    plate: str
    lane: str
    at: float  # seconds from the start of the scenario
    behaviour: Behaviour = Behaviour.NORMAL
    colour: PlateColour = PlateColour.BLUE
    confidence: float = 0.95


@dataclass(frozen=True, slots=True)
class Scenario:
    vehicles: tuple[Vehicle, ...]

    @classmethod
    def load(cls, path: Path) -> Scenario:
        """A JSON file: ``{"vehicles": [{"plate", "lane", "at", "behaviour"?, ...}]}``."""
        doc = json.loads(path.read_text(encoding="utf-8"))
        vehicles = []
        for i, v in enumerate(doc["vehicles"], start=1):
            try:
                vehicles.append(
                    Vehicle(
                        plate=str(v["plate"]),
                        lane=str(v["lane"]),
                        at=float(v["at"]),
                        behaviour=Behaviour(v.get("behaviour", "normal")),
                        colour=PlateColour(v.get("colour", "blue")),
                        confidence=float(v.get("confidence", 0.95)),
                    )
                )
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{path}: vehicle {i}: {exc}") from exc
        return cls(tuple(sorted(vehicles, key=lambda v: v.at)))


@dataclass
class SimLane:
    """The simulators of one lane.

    With ``guard_waiting`` (whether the gate's lane now waits for a guard's answer) a driver
    waits as long as the lane does — the gate gives up after its ``guard_wait`` — and then
    ``after_guard`` more for the arm, so a guard's confirmation lets it pass and a refusal or
    nobody answering sends it back. :meth:`leave` makes drivers waiting for a guard turn
    back at once (the demo is ending). A driver who finds the arm still up from the vehicle
    before waits up to ``settle`` for it to come down before driving up to it: otherwise it
    would drive under an arm that is about to close (a tailgate) instead of being decided;
    an arm that stays up (a held lane) is driven through after that wait."""

    plc: PlcSimulator
    reader: PlateReaderSimulator
    step: float = 0.25  # seconds between two loop changes of a moving vehicle
    patience: float = 6.0  # how long a refused driver waits before backing out
    guard_waiting: Callable[[], bool] | None = None
    after_guard: float = 3.0  # how long a driver looks for the arm after a guard's answer
    settle: float = 1.5  # how long a driver waits for a raised arm to come down first
    _leaving: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def __post_init__(self) -> None:
        self.lock = asyncio.Lock()  # one vehicle at a time on the loops (they queue)
        self.waited_for_guard = False  # whether the current vehicle has waited for a guard

    def leave(self) -> None:
        """Drivers waiting for a guard turn back now instead of waiting out the gate."""
        self._leaving.set()

    async def _arm_up(self, within: float) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while self.plc.position < 1.0:
            now = loop.time()
            if self.guard_waiting is not None and self.guard_waiting():
                self.waited_for_guard = True
                if self._leaving.is_set():
                    return False
                end = max(end, now + self.after_guard)
            elif now >= end:
                return False
            await asyncio.sleep(0.05)
        return True

    async def drive(self, vehicle: Vehicle) -> str:
        """Play one vehicle; returns what happened ("passed", "refused", ...)."""
        async with self.lock:
            return await self._drive(vehicle)

    async def _settled(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            position, waited = self.plc.position, loop.time() - start
            down = position <= 0.0
            held = position >= 1.0 and waited >= self.settle  # it did not start closing
            if down or held or waited >= self.settle + self.patience:
                return
            await asyncio.sleep(0.05)

    async def _drive(self, v: Vehicle) -> str:
        plc, step = self.plc, self.step
        self.waited_for_guard = False
        await self._settled()
        plc.set_loop(Loop.ARMING, True)
        await asyncio.sleep(step)
        if v.behaviour is not Behaviour.UNREADABLE:
            await self.reader.send_read(v.plate, v.colour, v.confidence)
        if v.behaviour is Behaviour.BACKS_OUT:
            await asyncio.sleep(step * 4)
            plc.set_loop(Loop.ARMING, False)
            return "backed-out"
        if not await self._arm_up(self.patience):
            plc.set_loop(Loop.ARMING, False)  # refused (or unread): turn around
            if self.waited_for_guard:
                return "turned back after waiting for a guard"
            return "refused" if v.behaviour is not Behaviour.UNREADABLE else "unread"
        await self._cross(stop_under_arm=v.behaviour is Behaviour.STOPS_UNDER_ARM)
        return "passed"

    async def _cross(self, *, stop_under_arm: bool = False) -> None:
        plc, step = self.plc, self.step
        plc.set_loop(Loop.SAFETY, True)
        await asyncio.sleep(step)
        plc.set_loop(Loop.ARMING, False)
        await asyncio.sleep(step * (12 if stop_under_arm else 1))
        plc.set_loop(Loop.EXIT, True)
        await asyncio.sleep(step)
        plc.set_loop(Loop.SAFETY, False)
        await asyncio.sleep(step)
        plc.set_loop(Loop.EXIT, False)

    async def tailgate(self, first: Vehicle, second: Vehicle) -> str:
        """Two vehicles bumper to bumper through one opening."""
        async with self.lock:
            plc, step = self.plc, self.step
            plc.set_loop(Loop.ARMING, True)
            await asyncio.sleep(step)
            await self.reader.send_read(first.plate, first.colour, first.confidence)
            if not await self._arm_up(self.patience):
                plc.set_loop(Loop.ARMING, False)
                return "refused"
            plc.set_loop(Loop.SAFETY, True)
            await asyncio.sleep(step)
            plc.set_loop(Loop.EXIT, True)
            await asyncio.sleep(step)
            plc.set_loop(Loop.EXIT, False)  # the first is through; the second right behind
            await asyncio.sleep(step / 2)
            plc.set_loop(Loop.ARMING, False)
            plc.set_loop(Loop.EXIT, True)
            await asyncio.sleep(step)
            plc.set_loop(Loop.SAFETY, False)
            await asyncio.sleep(step)
            plc.set_loop(Loop.EXIT, False)
            return "tailgated"


async def play(scenario: Scenario, lanes: dict[str, SimLane], speed: float = 1.0) -> list[str]:
    """Play every vehicle at its time (``speed`` > 1 plays faster); returns outcomes."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    results: list[str] = []

    async def one(v: Vehicle, previous: Vehicle | None) -> None:
        await asyncio.sleep(max(0.0, start + v.at / speed - loop.time()))
        lane = lanes[v.lane]
        if v.behaviour is Behaviour.TAILGATES and previous is not None:
            results.append(f"{previous.plate}+{v.plate}: {await lane.tailgate(previous, v)}")
        else:
            results.append(f"{v.plate}: {await lane.drive(v)}")

    vehicles = list(scenario.vehicles)
    tasks = []
    for i, v in enumerate(vehicles):
        nxt = vehicles[i + 1] if i + 1 < len(vehicles) else None
        if nxt is not None and nxt.behaviour is Behaviour.TAILGATES and nxt.lane == v.lane:
            continue  # played together with the tailgater
        prev = vehicles[i - 1] if v.behaviour is Behaviour.TAILGATES and i > 0 else None
        tasks.append(asyncio.create_task(one(v, prev)))
    await asyncio.gather(*tasks)
    return results
