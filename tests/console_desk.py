"""A desk for testing the console without a gate: a plain :class:`GateDesk` that shows a
given view, publishes the views a test hands it, and records every request it is asked."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

from edgegate.console.desk import (
    SUPERVISOR_ACTIONS,
    DecisionView,
    DeskAction,
    DeskOutcome,
    DeskRequest,
    GateView,
    LaneView,
    PendingView,
    Role,
)

T0 = 1_795_000_000 * 10**9


def pending_decision(seq: int = 42) -> DecisionView:
    return DecisionView(
        seq=seq,
        at_ns=T0,
        plate="苏E1234S",
        verdict="confirm",
        reasons=("fuzzy-match", "fuzzy-match-needs-confirmation"),
        explanation="read 苏E1234S, one confusable character from registered 苏E12345",
        confidence=0.91,
        colour="yellow",
        matched_plate="苏E12345",
        credential="registration:R-0042",
    )


def sample_view(*, pending: bool = True, version: int = 1, mode: str = "normal") -> GateView:
    decision = pending_decision()
    in_lane = LaneView(
        lane="in-1",
        direction="entry",
        state="awaiting-guard" if pending else "idle",
        arming=pending,
        safety=False,
        exit=False,
        has_exit_loop=True,
        arm="down",
        held=False,
        evacuation=False,
        faults=(),
        pending=PendingView(decision, T0, T0 + 120 * 10**9) if pending else None,
        recent=(decision,),
    )
    out_lane = LaneView(
        lane="out-1",
        direction="exit",
        state="idle",
        arming=False,
        safety=False,
        exit=False,
        has_exit_loop=False,
        arm="down",
        held=False,
        evacuation=True,
        faults=("plc-2: timeout: no answer within 500 ms",),
        pending=None,
        recent=(),
    )
    return GateView("gate-7", "ordinary", mode, version, (in_lane, out_lane))


class RecordingDesk:
    """Shows ``view``; ``publish`` a new one; ``requests`` holds what was asked. Confirm,
    refuse and correct clear the pending vehicle (as a gate would, in a new view)."""

    def __init__(self, view: GateView | None = None) -> None:
        self._view = view if view is not None else sample_view()
        self.requests: list[DeskRequest] = []
        self._readers: list[asyncio.Event] = []

    def view(self) -> GateView:
        return self._view

    def publish(self, view: GateView) -> None:
        self._view = view
        for wake in self._readers:
            wake.set()

    async def watch(self) -> AsyncIterator[GateView]:
        wake = asyncio.Event()  # one flag per reader: a slow one sees only the newest view
        self._readers.append(wake)
        try:
            while True:
                await wake.wait()
                wake.clear()
                yield self._view
        finally:
            self._readers.remove(wake)

    @property
    def readers(self) -> int:
        return len(self._readers)

    async def act(self, request: DeskRequest) -> DeskOutcome:
        self.requests.append(request)
        if request.action in SUPERVISOR_ACTIONS and request.role is not Role.SUPERVISOR:
            return DeskOutcome(False, "forbidden", "supervisors only")
        if request.action in (DeskAction.CONFIRM, DeskAction.REFUSE, DeskAction.CORRECT):
            lanes = tuple(
                dataclasses.replace(lane, pending=None, state="opening")
                if lane.lane == request.lane
                else lane
                for lane in self._view.lanes
            )
            view = dataclasses.replace(self._view, lanes=lanes, version=self._view.version + 1)
            self.publish(view)
        return DeskOutcome(True, "ok", seq=1000 + len(self.requests))
