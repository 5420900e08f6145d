"""Central keeps every allow-list publication it made, per gate, with versions from one
counter shared by ``publish-allowlist`` and blacklist approvals (SQLite and PostgreSQL), and
its sink answers a gate's snapshot request with the stored snapshot and the deltas after it:
through a real mosquitto to a running gate daemon, after a version gap and after tampering."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgegate.allowlist.importer import Delta
from edgegate.central import publish as pub
from edgegate.central.store import CentralStore, open_store
from edgegate.central.store.blacklist import APPROVED
from edgegate.central.store.publications import DELTA, SNAPSHOT, Publication, VersionClashError
from edgegate.core.domain import CredentialKind
from edgegate.core.events import AllowListUpdated, SnapshotRequested
from edgegate.sync.downlink import Downlink
from edgegate.sync.protocol import Topics
from edgegate.sync.signing import load_private_key
from tests import test_central_store as central_store_tests
from tests.eventually import eventually
from tests.gate_harness import RunningGate
from tests.services.mosquitto import Broker, free_port
from tests.test_allowlist_service import _flip_blacklisted_plate
from tests.test_central_blacklist import AT_3H, LIMITS, stored_park
from tests.test_central_park import race
from tests.test_central_sink import options, running
from tests.test_cli_central import broker_args, cli
from tests.test_sync_daemon import GATE, ROOT, WAIT, _config

pytestmark = pytest.mark.timeout(120)

dsn = central_store_tests.dsn
store = central_store_tests.store

LIST = ROOT / "config" / "allowlist-example.csv"
SITE = "test"  # the gate harness's site


def fake(kind: str, base: int | None = None) -> Callable[[int], tuple[str, int | None, bytes]]:
    """A ``build`` that 'signs' as ``kind@version`` (the store keeps bytes, it checks none)."""
    return lambda v: (kind, base, f"{kind}@{v}".encode())


def test_both_publish_paths_take_versions_from_one_counter(store: CentralStore) -> None:
    stored_park(store)  # gate-a reported list version 7, gate-b nothing yet
    made = store.publish_allowlist(["gate-a", "gate-b"], fake(SNAPSHOT), recorded_by="li.na")
    assert [(p.gate, p.version, p.kind, p.payload) for p in made] == [
        ("gate-a", 8, SNAPSHOT, b"snapshot@8"),
        ("gate-b", 1, SNAPSHOT, b"snapshot@1"),
    ]
    # An approval after it builds on those versions ...
    first = store.propose_blacklist(AT_3H, LIMITS)[0][0]
    approved = store.decide_blacklist(first, APPROVED, operator="wang.li", reason="r")
    assert [(u.gate, u.base_version, u.version) for u in approved.publications] == [
        ("gate-a", 8, 9),
        ("gate-b", 1, 2),
    ]
    # ... and an operator asking for a version a gate was given is refused, nothing taken.
    with pytest.raises(VersionClashError, match="gate gate-a is at allow-list version 9"):
        store.publish_allowlist(["gate-a"], fake(SNAPSHOT), recorded_by="li.na", version=9)
    [delta] = store.publish_allowlist(["gate-a"], fake(DELTA, 9), recorded_by="li.na")
    assert (delta.version, delta.base_version) == (10, 9)
    assert [p.version for p in store.allowlist_publications("gate-a")] == [8, 10]

    # What answers gate-a's snapshot request: the newest snapshot, then the deltas after it.
    store.record_publications([Publication("gate-a", 9, DELTA, 8, b"bl@9", 1, "wang.li")])
    latest = store.latest_publications("gate-a")
    assert [(p.version, p.kind, p.payload) for p in latest] == [
        (8, SNAPSHOT, b"snapshot@8"),
        (9, DELTA, b"bl@9"),
        (10, DELTA, b"delta@10"),
    ]
    assert latest[0].recorded_by == "li.na"
    store.publish_allowlist(["gate-a"], fake(SNAPSHOT), recorded_by="li.na", version=20)
    assert [p.version for p in store.latest_publications("gate-a")] == [20]
    assert store.latest_publications("gate-c") == []


def test_racing_publish_paths_never_share_a_version(postgres_dsn: str) -> None:
    """An operator's publication and an approval at once, on two connections."""
    with open_store(postgres_dsn) as s:
        stored_park(s)
        first = s.propose_blacklist(AT_3H, LIMITS)[0][0]

    def publish(s: CentralStore) -> None:
        s.publish_allowlist(["gate-a", "gate-b"], fake(SNAPSHOT), recorded_by="li.na")

    def approve(s: CentralStore) -> None:
        s.decide_blacklist(first, APPROVED, operator="wang.li", reason="race")

    for s in race(postgres_dsn, publish, approve):
        s.close()
    with open_store(postgres_dsn) as s:
        [p] = s.blacklist_proposals(ids=[first])
        taken = [(u.gate, u.version) for u in p.publications]
        taken += [(u.gate, u.version) for u in s.allowlist_publications()]
    assert sorted(taken) == [("gate-a", 8), ("gate-a", 9), ("gate-b", 1), ("gate-b", 2)]


# ------------------------------------------------------------------------------ through mosquitto


async def _connected(g: RunningGate) -> Downlink:
    assert g.gate.uplink is not None and g.gate.downlink is not None
    async with asyncio.timeout(WAIT):
        await g.gate.uplink.connected.wait()
    return g.gate.downlink


def _version(g: RunningGate) -> int:
    assert g.gate.allowlist is not None
    return g.gate.allowlist.view.version


async def test_a_gate_after_a_gap_gets_the_stored_snapshot_and_deltas_again(
    mosquitto_broker: Broker, tmp_path: Path, dsn: str
) -> None:
    config = _config(tmp_path, mosquitto_broker, free_port(), secrets.token_urlsafe(24))
    publishing = [
        *("--key", str(tmp_path / "central.key"), "--site", SITE, "--gate", GATE),
        *("--db", dsn, "--operator", "li.na", *broker_args(mosquitto_broker, tmp_path)),
    ]
    removals = tmp_path / "removals.json"
    removals.write_text(json.dumps({"remove": [{"type": "registration", "id": "REG-0002"}]}))
    try:
        async with (
            running(options(mosquitto_broker, dsn)) as sink,
            RunningGate(config, demo_allowlist=False) as g,
        ):
            await _connected(g)
            assert await cli("central", "publish-allowlist", str(LIST), *publishing) == 0
            await eventually(lambda: _version(g) == 1, "snapshot 1 applied", within=WAIT)
            # Delta 1 -> 2 is recorded, then lost on its way: the gate never gets it.
            with open_store(dsn) as s:
                [lost] = s.publish_allowlist(
                    [GATE], signed_delta(tmp_path, "REG-0001", 1), recorded_by="x"
                )
            assert lost.version == 2
            # The next delta is 2 -> 3: a gap for the gate, which asks central for a snapshot;
            # the sink answers with snapshot 1 (no news to the gate) and deltas 2 and 3.
            ran = await cli(
                "central", "publish-allowlist", str(removals), "--delta-from", "2", *publishing
            )
            assert ran == 0
            await eventually(lambda: _version(g) == 3, "caught up", within=WAIT)
            assert sink.counters.republished == 1
            [asked] = [x.event for x in g.log.of(SnapshotRequested)]
            assert asked.have_version == 1 and "gap" in asked.reason
            assert [x.event.version for x in g.log.of(AllowListUpdated)] == [1, 2, 3]
            assert g.gate.allowlist is not None
            held = {c.id for c in g.gate.allowlist.view}
            assert "REG-0003" in held and not held & {"REG-0001", "REG-0002"}
    finally:
        await clear_retained(mosquitto_broker)
    with open_store(dsn) as s:
        kept = s.allowlist_publications(GATE)
    assert [(p.version, p.kind, p.base_version) for p in kept] == [
        (1, SNAPSHOT, None),
        (2, DELTA, 1),
        (3, DELTA, 2),
    ]
    assert kept[0].recorded_by == "li.na (publish-allowlist allowlist-example.csv)"


def signed_delta(
    tmp_path: Path, registration: str, base: int
) -> Callable[[int], tuple[str, int | None, bytes]]:
    """A ``build`` of a delta removing ``registration``, signed with central's key."""
    key = load_private_key(tmp_path / "central.key")
    removal = Delta([], [(CredentialKind.REGISTRATION, registration)])

    def build(version: int) -> tuple[str, int | None, bytes]:
        made = pub.delta_publication(
            removal, version=version, base_version=base, now_ns=time.time_ns()
        )
        return DELTA, base, pub.signed_publication(made, key)

    return build


async def clear_retained(broker: Broker) -> None:
    async with broker.client("central") as central:
        await central.publish(Topics(SITE, GATE).allowlist, b"", qos=1, retain=True)


async def test_a_tampered_gate_gets_the_stored_snapshot_again(
    mosquitto_broker: Broker, tmp_path: Path, dsn: str
) -> None:
    config = _config(tmp_path, mosquitto_broker, free_port(), secrets.token_urlsafe(24))
    publishing = [
        *("--key", str(tmp_path / "central.key"), "--site", SITE, "--gate", GATE),
        *("--db", dsn, *broker_args(mosquitto_broker, tmp_path)),
    ]
    try:
        async with RunningGate(config, demo_allowlist=False) as g:
            await _connected(g)
            assert await cli("central", "publish-allowlist", str(LIST), *publishing) == 0
            await eventually(lambda: _version(g) == 1, "snapshot 1 applied", within=WAIT)
        # The broker lost its retained snapshot: only central's record can repair the gate.
        await clear_retained(mosquitto_broker)
        _flip_blacklisted_plate(tmp_path / "gate.db", "BL-0042")
        async with (
            running(options(mosquitto_broker, dsn)) as sink,
            RunningGate(config, demo_allowlist=False) as g,
        ):
            assert g.gate.allowlist is not None and g.gate.allowlist.view.tampered
            await _connected(g)
            await eventually(
                lambda: not g.gate.allowlist.view.tampered,  # type: ignore[union-attr]
                "the stored snapshot replaced the tampered list",
                within=WAIT,
            )
            assert sink.counters.republished == 1
            [asked] = [x.event for x in g.log.of(SnapshotRequested)]
            assert asked.have_version == 1 and "tampered" in asked.reason
            [_, again] = [x.event for x in g.log.of(AllowListUpdated)]
            assert again.version == 1
            assert g.gate.allowlist.view.exact("苏E99999").blacklist
    finally:
        await clear_retained(mosquitto_broker)
