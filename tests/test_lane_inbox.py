"""A lane's inbox: safety inputs first, both queues bounded."""

from __future__ import annotations

import asyncio

from edgegate.core.events import DeviceFault, FrameRejected, ManualActionKind, PlateRead
from edgegate.core.lane import IncidentHold, Manual
from edgegate.daemon.inbox import LaneInbox
from edgegate.devices.base import PlcInputs

Item = PlcInputs | PlateRead | FrameRejected | DeviceFault | Manual | IncidentHold


def inputs(arming: bool, safety: bool = False, device: str = "plc") -> PlcInputs:
    return PlcInputs(device, False, True, False, arming, safety, None)


def read(plate: str) -> PlateRead:
    return PlateRead(plate=plate, confidence=0.9, reader="cam")


def rejected(n: int) -> FrameRejected:
    return FrameRejected(device="cam", reason=f"#{n}", data=b"$")


def drain(inbox: LaneInbox[Item]) -> list[Item]:
    out: list[Item] = []
    while (item := inbox.get_nowait()) is not None:
        out.append(item)
    return out


def test_safety_inputs_are_taken_before_any_reader_traffic() -> None:
    inbox: LaneInbox[Item] = LaneInbox()
    for n in range(10):
        inbox.put(rejected(n))
    inbox.put(read("苏E12345"))
    inbox.put(inputs(True))
    inbox.put(DeviceFault(device="plc", code="timeout", message="no answer"))
    inbox.put(inputs(True, safety=True))
    got = drain(inbox)
    assert got[:3] == [
        inputs(True),
        DeviceFault(device="plc", code="timeout", message="no answer"),
        inputs(True, safety=True),
    ]
    assert got[3:] == [*(rejected(n) for n in range(10)), read("苏E12345")]


def test_the_reader_queue_keeps_the_newest_items() -> None:
    inbox: LaneInbox[Item] = LaneInbox(reader_capacity=4)
    for n in range(100):
        inbox.put(rejected(n))
    inbox.put(read("苏E12345"))
    assert inbox.reader_pending == 4
    assert drain(inbox) == [rejected(97), rejected(98), rejected(99), read("苏E12345")]
    assert inbox.dropped == 97


def test_a_full_urgent_queue_keeps_every_change_it_can_and_the_latest_state() -> None:
    inbox: LaneInbox[Item] = LaneInbox(urgent_capacity=3)
    hold = IncidentHold(True)
    inbox.put(inputs(True))
    inbox.put(hold)
    inbox.put(inputs(False))
    inbox.put(inputs(True, safety=True))  # full: replaces the newest PLC state
    assert drain(inbox) == [inputs(True), hold, inputs(True, safety=True)]
    assert inbox.replaced == 1 and inbox.lost == 0


def test_a_full_urgent_queue_makes_room_for_an_operator_from_superseded_states() -> None:
    inbox: LaneInbox[Item] = LaneInbox(urgent_capacity=3)
    inbox.put(inputs(True))
    inbox.put(inputs(False))
    inbox.put(inputs(True, safety=True))
    manual = Manual(ManualActionKind.OPEN, "guard-1", "escort")
    inbox.put(manual)  # the oldest state, superseded by later ones, gives way
    assert drain(inbox) == [inputs(False), inputs(True, safety=True), manual]
    assert inbox.replaced == 1 and inbox.lost == 0


def test_a_queue_full_of_one_off_items_loses_the_new_one_and_counts_it() -> None:
    inbox: LaneInbox[Item] = LaneInbox(urgent_capacity=2)
    inbox.put(IncidentHold(True))
    inbox.put(Manual(ManualActionKind.OPEN, "guard-1", "escort"))
    inbox.put(inputs(True))
    assert inbox.lost == 1 and inbox.urgent_pending == 2


async def test_get_waits_for_an_item() -> None:
    inbox: LaneInbox[Item] = LaneInbox()
    waiter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    inbox.put(read("苏E12345"))
    inbox.put(inputs(True))
    assert await asyncio.wait_for(waiter, 1.0) == inputs(True)
    assert await asyncio.wait_for(inbox.get(), 1.0) == read("苏E12345")
