"""The allow-list service over a real event log: staged snapshots do not hold up lanes."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from edgegate.allowlist import service as service_module
from edgegate.allowlist.service import AllowListService
from edgegate.core import events as ev
from edgegate.core.domain import Credential
from edgegate.log import EventLog, LogReader
from tests.eventually import eventually
from tests.test_allowlist_index import appt, black, reg


def _loop_event() -> ev.LoopChanged:
    return ev.LoopChanged(lane="in-1", loop=ev.Loop.ARMING, occupied=True, source="plc-1")


def _registrations(n: int) -> list[Credential]:
    return [reg(f"R{i:05d}", f"苏E{i:05d}") for i in range(n)]


async def _staging_started(log: EventLog) -> None:
    conn = sqlite3.connect(f"file:{log.path}?mode=ro", uri=True)

    def staging() -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE name = 'allowlist_entry_staging'"
        return conn.execute(query).fetchone() is not None

    try:
        await eventually(staging, "the snapshot staging", within=10.0, every=0.002)
    finally:
        conn.close()


async def test_events_are_committed_while_a_snapshot_is_staged(event_log: EventLog) -> None:
    service = await AllowListService.open(event_log, stage_rows=10)
    replacing = asyncio.create_task(service.replace(_registrations(3_000), source="central"))
    await _staging_started(event_log)
    seq = await event_log.append(_loop_event())
    assert not replacing.done()  # a lane's event did not wait for the whole list
    assert service.view.version == 0  # nor did the old list change under it
    result = await replacing
    assert result.seq > seq and result.entries == 3_000
    assert len(service.view) == 3_000 and service.view.version == 1
    with LogReader(event_log.path) as reader:
        assert reader.verify().ok
        snapshots = [s for s in reader.read(limit=10_000) if s.type == "allowlist.updated"]
    assert [s.seq for s in snapshots] == [result.seq]


async def test_an_appointment_consumed_during_staging_stays_consumed(
    event_log: EventLog,
) -> None:
    service = await AllowListService.open(event_log, stage_rows=10)
    await service.replace([appt(), reg()], source="central")
    replacing = asyncio.create_task(
        service.replace([appt(waybill="WB2"), *_registrations(2_000)], source="central")
    )
    await _staging_started(event_log)
    await service.append_with_consumption(_loop_event(), "A1", consumed=True)
    assert not replacing.done()
    await replacing
    assert service.view.exact("苏E12345").appointments == (appt(waybill="WB2", consumed=True),)
    reloaded = await AllowListService.open(event_log)
    assert reloaded.view.exact("苏E12345").appointments == (appt(waybill="WB2", consumed=True),)


async def test_snapshots_and_deltas_apply_in_the_order_asked(event_log: EventLog) -> None:
    service = await AllowListService.open(event_log, stage_rows=10)
    first = asyncio.create_task(service.replace(_registrations(500), source="central"))
    delta = asyncio.create_task(service.apply_delta([reg("X1", "苏E99999")], [], source="central"))
    second = asyncio.create_task(service.replace(_registrations(3), source="central"))
    results = await asyncio.gather(first, delta, second)
    assert [r.version for r in results] == [1, 2, 3]
    assert len(service.view) == 3 and service.view.version == 3
    with sqlite3.connect(event_log.path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not {"allowlist_entry_staging", "allowlist_entry_retired"} & tables


async def test_an_appointment_consumed_after_the_scan_of_consumed_ones_stays_consumed(
    event_log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap also checks appointments consumed after its scan and before its commit."""
    service = await AllowListService.open(event_log, stage_rows=10)
    await service.replace([appt(), reg()], source="central")
    loop = asyncio.get_running_loop()
    scan = service_module._consumed_in_file

    def scan_then_consume(path: str) -> set[str]:
        found = scan(path)
        consume = service.append_with_consumption(_loop_event(), "A1", consumed=True)
        asyncio.run_coroutine_threadsafe(consume, loop).result(timeout=10)
        return found

    monkeypatch.setattr(service_module, "_consumed_in_file", scan_then_consume)
    await service.replace([appt(waybill="WB2")], source="central")
    assert service.view.exact("苏E12345").appointments == (appt(waybill="WB2", consumed=True),)


def _flip_blacklisted_plate(path: object, id_: str) -> None:
    """Flip one bit of the last byte of a blacklist entry's stored plate, with plain SQL."""
    conn = sqlite3.connect(str(path))
    (plate,) = conn.execute(
        "SELECT CAST(plate AS BLOB) FROM allowlist_entry WHERE kind = 'blacklist' AND id = ?",
        (id_,),
    ).fetchone()
    flipped = bytes(plate[:-1]) + bytes([plate[-1] ^ 1])
    conn.execute(
        "UPDATE allowlist_entry SET plate = CAST(? AS TEXT) WHERE kind = 'blacklist' AND id = ?",
        (flipped, id_),
    )
    conn.commit()
    conn.close()


def _tampered_events(log: EventLog) -> list[ev.AllowListTampered]:
    with LogReader(log.path) as reader:
        found = [s.event() for s in reader.read(limit=10_000) if s.type == "allowlist.tampered"]
    return [e for e in found if isinstance(e, ev.AllowListTampered)]


async def test_a_tampered_list_is_logged_held_as_its_data_says_and_marked_until_a_snapshot(
    event_log: EventLog,
) -> None:
    entries: list[Credential] = [
        reg(plate="苏E99999"),
        black("B1", "苏E99999"),
        reg("R2", "苏E54321"),
        appt(),
    ]
    service = await AllowListService.open(event_log)
    await service.replace(entries, source="central")
    await service.append_with_consumption(_loop_event(), "A1", consumed=True)
    reopened = await AllowListService.open(event_log)
    assert not reopened.view.tampered  # a consumption keeps the list verifiable
    assert _tampered_events(event_log) == []

    _flip_blacklisted_plate(event_log.path, "B1")
    tampered = await AllowListService.open(event_log)
    assert tampered.view.tampered
    (logged,) = _tampered_events(event_log)
    assert (logged.credential_kind, logged.credential_id, logged.plate) == (
        "blacklist",
        "B1",
        "苏E99998",
    )
    assert "plate column" in logged.problem
    assert (logged.version, logged.entries, logged.left_out) == (1, 4, 0)
    # The entry is indexed under the plate its own data names, so the blacklist holds.
    assert tampered.view.exact("苏E99999").blacklist == (black("B1", "苏E99999"),)
    assert tampered.view.exact("苏E12345").appointments == (appt(consumed=True),)

    await tampered.apply_delta([reg("R3", "苏E33333")], [], source="central")
    assert tampered.view.tampered  # a delta does not vouch for the rest of the list
    await tampered.replace(entries, source="central")
    assert not tampered.view.tampered
    assert not (await AllowListService.open(event_log)).view.tampered
    assert len(_tampered_events(event_log)) == 1
