"""The real daemon on a stored allow-list changed behind its back: one flipped byte of a
blacklisted plate, made with plain sqlite3 between two runs of the gate."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgegate.core.domain import HolderType, Registration, VehicleCategory
from edgegate.core.events import (
    AccessDecided,
    AllowListTampered,
    BarrierCommand,
    BarrierCommanded,
    DaemonStarted,
    Loop,
    VehicleBackedOut,
)
from edgegate.core.lane import LaneState
from tests.eventually import eventually
from tests.gate_harness import ALLOWED, BLACKLISTED, RunningGate, one_lane_config

pytestmark = pytest.mark.timeout(60)


def _flip_plate_byte(db: Path, kind: str, id_: str) -> str:
    conn = sqlite3.connect(db)
    (plate,) = conn.execute(
        "SELECT CAST(plate AS BLOB) FROM allowlist_entry WHERE kind = ? AND id = ?", (kind, id_)
    ).fetchone()
    flipped = bytes(plate[:-1]) + bytes([plate[-1] ^ 1])
    conn.execute(
        "UPDATE allowlist_entry SET plate = CAST(? AS TEXT) WHERE kind = ? AND id = ?",
        (flipped, kind, id_),
    )
    conn.commit()
    conn.close()
    return flipped.decode()


async def test_a_flipped_byte_of_a_blacklisted_plate_is_logged_and_every_entry_needs_a_guard(
    tmp_path: Path,
) -> None:
    config = one_lane_config(tmp_path)
    async with RunningGate(config) as g:
        # The blacklisted car also holds a registration: only the blacklist keeps it out.
        assert g.gate.allowlist is not None
        holder = Registration(
            id="REG-BL",
            plate=BLACKLISTED,
            category=VehicleCategory.ORDINARY,
            holder=HolderType.COMPANY,
            organisation="扬子石化有限公司",
            valid_from=datetime(2020, 1, 1, tzinfo=UTC),
        )
        await g.gate.allowlist.apply_delta([holder], [], source="e2e")
    assert _flip_plate_byte(config.log_file, "blacklist", "BL-1") == "苏E99998"

    async with RunningGate(config, demo_allowlist=False) as g:
        log, road, runner = g.log, g.road(), g.gate.lanes["l1"]
        (tampered,) = log.of(AllowListTampered)
        assert (tampered.event.credential_kind, tampered.event.credential_id) == (
            "blacklist",
            "BL-1",
        )
        assert tampered.event.plate == "苏E99998"
        assert "plate column '苏E99998'" in tampered.event.problem
        assert tampered.seq < log.of(DaemonStarted)[-1].seq  # checked as the daemon starts

        head = log.head
        await road.arrive(BLACKLISTED)
        decided = await log.wait_for(AccessDecided, lane="l1", after=head)
        assert decided.event.verdict == "deny"
        assert {"blacklisted", "allowlist-tampered"} <= set(decided.event.reasons)
        await road.set(Loop.ARMING, False)
        await log.wait_for(VehicleBackedOut, lane="l1", after=head)

        head = log.head
        await road.arrive(ALLOWED)
        decided = await log.wait_for(AccessDecided, lane="l1", after=head)
        assert decided.event.verdict == "confirm"
        assert "allowlist-tampered" in decided.event.reasons
        await eventually(
            lambda: runner.state is LaneState.AWAITING_GUARD, "the lane awaiting a guard"
        )
        assert log.of(BarrierCommanded, after=head, where=_opens) == []
        await road.set(Loop.ARMING, False)
        await eventually(lambda: runner.state is LaneState.IDLE, "the lane idle again")
    assert g.plc().commands == []


def _opens(event: BarrierCommanded) -> bool:
    return event.command is BarrierCommand.OPEN
