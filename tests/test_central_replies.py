"""``wait_for_reply``: a gate's answer to a command, read from central's store holding the
gate's real (hash-chained) log rows; time is a clock the test controls."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from edgegate.central.replies import wait_for_reply
from edgegate.central.store import CentralStore, open_store
from edgegate.core.clock import ManualClock
from edgegate.core.events import CommandAccepted, CommandFailed, CommandRefused, Event
from edgegate.log import EventLog, LogReader

GATE = "gate-a"
ID = "0" * 31 + "1"
T = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def accepted(command_id: str = ID) -> CommandAccepted:
    return CommandAccepted(
        lane="in-1",
        command_id=command_id,
        action="open-lane",
        operator="li",
        reason="escort",
        issued_at=T,
        expires_at=T,
        key_id="k",
    )


class FakeTime:
    """A monotonic clock and a sleep that advances it (and stores what the gate logged
    meanwhile)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def store_of(tmp_path: Path, events: list[Event]) -> CentralStore:
    """Central's store holding a gate log of ``events``, uplinked as they are."""
    path = tmp_path / "gate.db"
    async with await EventLog.open(path, gate_id=GATE, clock=ManualClock()) as log:
        for event in events:
            await log.append(event)
    store = open_store(f"sqlite:///{tmp_path / 'central.db'}")
    with LogReader(path) as reader:
        for rows in reader.iter_rows():
            assert store.store_batch(GATE, rows).acked_seq == rows[-1][0]
    return store


async def test_accepted_then_refused_as_replayed_is_accepted(tmp_path: Path) -> None:
    """QoS 1 may deliver the command twice: the first answer counts."""
    replayed = CommandRefused(code="replayed", message="already received", command_id=ID)
    other = CommandFailed(command_id="f" * 32, action="open-lane", code="unknown-lane", message="")
    with await store_of(tmp_path, [accepted("e" * 32), accepted(), replayed, other]) as store:
        t = FakeTime()
        reply = wait_for_reply(store, GATE, ID, after=0, timeout=10, clock=t.clock, sleep=t.sleep)
    assert reply is not None
    assert (reply.outcome, reply.seq) == ("accepted", 2)
    assert t.now >= 1.0  # a command.failed was waited for, briefly


async def test_failed_after_accepted_and_refused_name_the_reason(tmp_path: Path) -> None:
    failed = CommandFailed(command_id=ID, action="open-lane", code="unknown-lane", message="l9")
    with await store_of(tmp_path, [accepted(), failed]) as store:
        t = FakeTime()
        reply = wait_for_reply(store, GATE, ID, after=0, timeout=10, clock=t.clock, sleep=t.sleep)
    assert reply is not None
    assert (reply.outcome, reply.code, reply.message, reply.seq) == (
        "failed",
        "unknown-lane",
        "l9",
        2,
    )
    forged = CommandRefused(code="forged", message="does not verify", command_id=ID)
    (tmp_path / "x").mkdir()
    with await store_of(tmp_path / "x", [forged]) as store:
        reply = wait_for_reply(store, GATE, ID, after=0, timeout=10, clock=t.clock, sleep=t.sleep)
    assert reply is not None
    assert (reply.outcome, reply.code) == ("refused", "forged")


async def test_no_answer_within_the_timeout_is_none(tmp_path: Path) -> None:
    with await store_of(tmp_path, [accepted()]) as store:
        t = FakeTime()
        reply = wait_for_reply(store, GATE, ID, after=1, timeout=5, clock=t.clock, sleep=t.sleep)
    assert reply is None
    assert 5.0 <= t.now < 5.5
