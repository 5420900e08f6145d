"""Overstays to the blacklist: proposals in central's store (SQLite and PostgreSQL), and
``edgegate central blacklist`` publishing an approval through a real mosquitto to a gate's
downlink, which applies the delta and then refuses the plate."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from edgegate.central.store import CentralStore, open_store
from edgegate.central.store.blacklist import APPROVED, DISMISSED, OPEN, ProposalError
from edgegate.cli.main import main
from edgegate.core import events as ev
from edgegate.core.codec import datetime_to_ns
from edgegate.core.domain import Credential, Direction
from edgegate.sync.protocol import Status
from edgegate.sync.signing import (
    KIND_ALLOWLIST,
    decode_publication,
    delta_changes,
    load_public_key,
    open_signed,
)
from tests import test_central_store as central_store_tests
from tests import test_downlink
from tests.services.mosquitto import Broker
from tests.test_central_park import T0, C, edgegate, park_logs, race, said
from tests.test_cli_central import SITE, body, broker_args, cli, listening, receive
from tests.test_downlink import Env, admit, permit, snapshot

pytestmark = pytest.mark.timeout(120)

dsn = central_store_tests.dsn
store = central_store_tests.store
env = test_downlink.env

LIMITS = {C.HAZMAT: timedelta(hours=6), C.ENGINEERING: timedelta(hours=1)}
AT_3H = datetime_to_ns(T0 + timedelta(hours=3))


def stored_park(store: CentralStore) -> None:
    """Gate A (list version 7) and B: 苏E00002 (hazmat, permit ended at 2h) and 苏E00004
    (engineering, entered at 0h04) are inside; 苏E00001 left at B, 苏E00003 at A."""
    a, b = park_logs()
    store.store_batch("gate-a", a.rows)
    store.store_batch("gate-b", b.rows)


def test_a_stay_past_its_limit_becomes_one_proposal(store: CentralStore) -> None:
    stored_park(store)
    assert store.propose_blacklist(datetime_to_ns(T0 + timedelta(minutes=30)), LIMITS) == ([], 0)
    created, left = store.propose_blacklist(AT_3H, LIMITS)
    assert left == 0 and len(created) == 2
    found = store.blacklist_proposals()
    assert [(p.plate, p.limit, p.state) for p in found] == [
        ("苏E00004", "dwell-limit", OPEN),
        ("苏E00002", "permit-end", OPEN),
    ]
    hazmat = found[1]
    assert (hazmat.gate, hazmat.seq, hazmat.category) == ("gate-a", 3, C.HAZMAT)
    assert hazmat.entered_at_ns == datetime_to_ns(T0 + timedelta(minutes=2))
    assert hazmat.deadline_ns == datetime_to_ns(T0 + timedelta(hours=2))
    assert hazmat.dwell_ns == AT_3H - hazmat.entered_at_ns
    assert not hazmat.left and hazmat.publications == ()

    # Recomputed later: no new proposal, the dwell brought up to date.
    later = AT_3H + 3600 * 10**9
    assert store.propose_blacklist(later, LIMITS) == ([], 0)
    assert store.blacklist_proposals(ids=[hazmat.id])[0].dwell_ns == later - hazmat.entered_at_ns
    assert [p.id for p in store.blacklist_proposals(state=OPEN)] == created


def test_a_vehicle_that_leaves_keeps_its_proposal_marked_as_left(store: CentralStore) -> None:
    stored_park(store)
    store.propose_blacklist(AT_3H, LIMITS)
    _, b = park_logs()
    left_at = T0 + timedelta(hours=4)
    b.passed("苏E00002", Direction.EXIT, left_at, C.HAZMAT)
    store.store_batch("gate-b", b.rows)
    assert store.propose_blacklist(AT_3H + 7200 * 10**9, LIMITS) == ([], 1)
    hazmat = next(p for p in store.blacklist_proposals() if p.plate == "苏E00002")
    assert hazmat.left and hazmat.state == OPEN
    assert (hazmat.left_at_ns, hazmat.left_gate) == (datetime_to_ns(left_at), "gate-b")
    assert hazmat.dwell_ns == datetime_to_ns(left_at) - hazmat.entered_at_ns
    # Still decidable; a new stay of the same plate is a new proposal.
    store.decide_blacklist(hazmat.id, DISMISSED, operator="wang.li", reason="left meanwhile")
    b.passed("苏E00002", Direction.ENTRY, left_at + timedelta(minutes=1), C.HAZMAT)
    store.store_batch("gate-b", b.rows)
    created, _ = store.propose_blacklist(datetime_to_ns(left_at + timedelta(hours=7)), LIMITS)
    [again] = store.blacklist_proposals(ids=created)
    assert (again.plate, again.gate, again.state) == ("苏E00002", "gate-b", OPEN)


def test_decisions_are_recorded_once_with_versions_per_gate(store: CentralStore) -> None:
    stored_park(store)
    first, second = store.propose_blacklist(AT_3H, LIMITS)[0]
    with pytest.raises(ProposalError, match="no proposal 99"):
        store.decide_blacklist(99, APPROVED, operator="wang.li", reason="r")

    dismissed = store.decide_blacklist(first, DISMISSED, operator="li.na", reason="on site task")
    assert (dismissed.state, dismissed.operator, dismissed.reason) == (
        DISMISSED,
        "li.na",
        "on site task",
    )
    assert dismissed.decided_at_ns is not None and dismissed.publications == ()
    with pytest.raises(ProposalError, match=r"already dismissed by li\.na"):
        store.decide_blacklist(first, APPROVED, operator="wang.li", reason="r")

    approved = store.decide_blacklist(second, APPROVED, operator="wang.li", reason="2h over")
    # Gate A reported list version 7, gate B none: each gets the delta on its own version.
    assert [(p.gate, p.base_version, p.version) for p in approved.pending] == [
        ("gate-a", 7, 8),
        ("gate-b", 0, 1),
    ]
    with pytest.raises(ProposalError, match=r"already approved by wang\.li"):
        store.decide_blacklist(second, DISMISSED, operator="li.na", reason="r")
    store.blacklist_published(second, ["gate-a"])
    [pending] = store.blacklist_proposals(ids=[second])[0].pending
    assert pending.gate == "gate-b"

    # The next delta builds on what central published, or on a newer version a gate reports.
    store.note_status(
        Status("gate-b", "online", head_seq=9, synced_seq=9, allowlist_version=12, at_ns=1)
    )
    _, b = park_logs()
    b.passed("苏E00009", Direction.ENTRY, T0, C.HAZMAT)
    store.store_batch("gate-b", b.rows)
    [third] = store.propose_blacklist(AT_3H + 6 * 3600 * 10**9, LIMITS)[0]
    decided = store.decide_blacklist(third, APPROVED, operator="wang.li", reason="r")
    assert [(p.gate, p.base_version, p.version) for p in decided.publications] == [
        ("gate-a", 8, 9),
        ("gate-b", 12, 13),
    ]


def test_racing_operators_decide_once_and_never_share_a_version(postgres_dsn: str) -> None:
    """Operators on two connections at once: a proposal is decided by exactly one of them,
    and two approvals give each gate two different versions."""
    a, b = park_logs()
    b.passed("苏E00009", Direction.ENTRY, T0, C.HAZMAT)
    with open_store(postgres_dsn) as s:
        s.store_batch("gate-a", a.rows)
        s.store_batch("gate-b", b.rows)
        first, second, third = s.propose_blacklist(AT_3H + 4 * 3600 * 10**9, LIMITS)[0]
    outcomes: list[str] = []

    def decide(state: str, proposal: int) -> Callable[[CentralStore], None]:
        def work(s: CentralStore) -> None:
            try:
                s.decide_blacklist(proposal, state, operator=f"op-{state}", reason="race")
                outcomes.append(state)
            except ProposalError:
                outcomes.append("refused")

        return work

    for s in race(postgres_dsn, decide(APPROVED, first), decide(DISMISSED, first)):
        s.close()
    [winner] = [o for o in outcomes if o != "refused"]
    assert len(outcomes) == 2 and "refused" in outcomes
    for s in race(postgres_dsn, decide(APPROVED, second), decide(APPROVED, third)):
        s.close()
    with open_store(postgres_dsn) as s:
        [p] = s.blacklist_proposals(ids=[first])
        assert (p.state, p.operator) == (winner, f"op-{winner}")
        versions = [
            (u.gate, u.version)
            for q in s.blacklist_proposals(ids=[second, third])
            for u in q.publications
        ]
    n = 1 if winner == APPROVED else 0  # the first approval took a version of each gate
    assert sorted(versions) == [
        ("gate-a", 8 + n),
        ("gate-a", 9 + n),
        ("gate-b", 1 + n),
        ("gate-b", 2 + n),
    ]


def test_automatic_approval_per_category(store: CentralStore) -> None:
    stored_park(store)
    created, _ = store.propose_blacklist(AT_3H, LIMITS, auto_approve=[C.HAZMAT], gates=["gate-a"])
    by_plate = {p.plate: p for p in store.blacklist_proposals(ids=created)}
    hazmat = by_plate["苏E00002"]
    assert (hazmat.state, hazmat.operator) == (APPROVED, "auto")
    assert [(p.gate, p.version) for p in hazmat.pending] == [("gate-a", 8)]
    assert by_plate["苏E00004"].state == OPEN


# --- the command, through a real mosquitto to a gate's downlink -------------------------------


async def test_approve_publishes_a_delta_the_gate_applies_then_it_refuses_the_plate(
    mosquitto_broker: Broker,
    tmp_path: Path,
    dsn: str,
    env: Env,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with open_store(dsn) as s:
        stored_park(s)
    plate = "苏E00002"
    # The gate holds list version 7 with a permit for the plate: it admits it.
    env.clock.advance((time.time_ns() - env.clock.wall_ns()) / 1e9 + 1)  # the gate's now
    creds: list[Credential] = [permit("P1", plate, T0 - timedelta(days=1), hours=24 * 365)]
    issued = env.clock.wall_ns()
    assert (await env.downlink.receive_allowlist(snapshot(env.central, 7, creds, issued))).applied
    _, before = await admit(env, plate)
    assert str(before.verdict) == "allow"

    assert await cli("central", "blacklist", "propose", "--store", dsn) == 0
    assert "2 new proposals" in capsys.readouterr().out
    assert await cli("central", "blacklist", "list", "--store", dsn, "--json") == 0
    listed = json.loads(capsys.readouterr().out)["proposals"]
    hazmat = next(p for p in listed if p["plate"] == plate)
    engineering = next(p for p in listed if p["plate"] != plate)
    assert (hazmat["state"], hazmat["entry_gate"], hazmat["entry_seq"]) == ("open", "gate-a", 3)
    assert (hazmat["limit"], hazmat["category"]) == ("permit-end", "hazmat")

    publishing = [
        "--store",
        dsn,
        "--key",
        str(tmp_path / "central.key"),
        "--site",
        SITE,
        "--gate",
        "gate-a",
        *broker_args(mosquitto_broker, tmp_path),
    ]
    async with listening(mosquitto_broker, "gate-a", "allowlist") as live:
        rc = await cli(
            "central",
            "blacklist",
            "approve",
            str(hazmat["id"]),
            "--operator",
            "wang.li",
            "--reason",
            "2 h past the permit",
            *publishing,
        )
        assert rc == 0
        message = await receive(live)
        out = capsys.readouterr().out
        assert f"proposal {hazmat['id']} ({plate}) approved by wang.li" in out
        assert "gate-a (7 -> 8)" in out

        # A dismissal publishes nothing: the next message is the second approval's.
        assert (
            await cli(
                "central",
                "blacklist",
                "dismiss",
                str(engineering["id"]),
                "--operator",
                "li.na",
                "--reason",
                "contractor on a night shift",
                "--store",
                dsn,
            )
            == 0
        )
        assert "proposal 2 (苏E00004) dismissed by li.na" in capsys.readouterr().out
        assert not message.retain
        outcome = await env.downlink.receive_allowlist(body(message))
        assert outcome.applied and env.service.view.version == 8
        assert live.empty()

    publication = decode_publication(
        open_signed(body(message), KIND_ALLOWLIST, env.central.public_key())
    )
    [entry] = delta_changes(publication.content).upserts
    assert (entry.id, entry.plate) == (f"BL-OVERSTAY-{hazmat['id']}", plate)
    _, after = await admit(env, plate)
    assert str(after.verdict) == "deny" and "blacklisted" in after.reasons
    updated = env.last("allowlist.updated")
    assert isinstance(updated, ev.AllowListUpdated) and updated.version == 8

    assert await cli("central", "blacklist", "list", "--store", dsn, "--json") == 0
    decided = {p["id"]: p for p in json.loads(capsys.readouterr().out)["proposals"]}
    approval = decided[hazmat["id"]]
    assert (approval["operator"], approval["reason"]) == ("wang.li", "2 h past the permit")
    [published] = approval["publications"]
    assert (published["gate"], published["version"]) == ("gate-a", 8)
    assert published["published_at"] is not None
    assert decided[engineering["id"]]["state"] == "dismissed"
    assert decided[engineering["id"]]["publications"] == []
    # Kept with the operator's publications, byte for byte as published (sent again as is
    # when the gate asks for a snapshot).
    with open_store(dsn) as s:
        [kept] = s.allowlist_publications("gate-a")
    assert (kept.version, kept.kind, kept.base_version) == (8, "delta", 7)
    assert kept.payload == body(message)
    assert kept.recorded_by == f"wang.li (blacklist approval #{hazmat['id']})"

    # Decided once: a second decision is refused, nothing recorded or published.
    ran = edgegate(
        "central", "blacklist", "dismiss", str(hazmat["id"]), "--operator", "x", "--reason", "y",
        "--store", dsn,
    )  # fmt: skip
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert said(ran.stderr) == [
        f"edgegate central blacklist dismiss: proposal {hazmat['id']} was already approved by "
        "wang.li (2 h past the permit); a decision cannot be changed"
    ]


def keyed_park(tmp_path: Path) -> str:
    """A SQLite store holding ``stored_park`` (its DSN), and central's keys in tmp/keys."""
    db = f"sqlite:///{tmp_path / 'central.db'}"
    with open_store(db) as s:
        stored_park(s)
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 0
    return db


async def test_an_unreachable_broker_leaves_the_approval_recorded_and_publishable(
    mosquitto_broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = keyed_park(tmp_path)
    with open_store(db) as s:
        [first, _] = s.propose_blacklist(AT_3H, LIMITS)[0]
    key = ["--key", str(tmp_path / "keys" / "central.key"), "--site", SITE, "--store", db]
    good = broker_args(mosquitto_broker, tmp_path)
    bad = [*good]
    bad[1] = "mqtts://127.0.0.1:1"
    rc = await cli(
        "central", "blacklist", "approve", str(first), "--operator", "wang.li", "--reason", "r",
        *key, *bad, "--timeout", "3",
    )  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "the approval is recorded but was not published" in err
    assert f"edgegate central blacklist publish {first}" in err
    with open_store(db) as s:
        [p] = s.blacklist_proposals(ids=[first])
    assert p.state == APPROVED and [u.gate for u in p.pending] == ["gate-a", "gate-b"]

    async with listening(mosquitto_broker, "gate-b", "allowlist") as live:
        assert await cli("central", "blacklist", "publish", str(first), *key, *good) == 0
        message = await receive(live)
    public = load_public_key(tmp_path / "keys" / "central.pub")
    publication = decode_publication(open_signed(body(message), KIND_ALLOWLIST, public))
    assert (publication.base_version, publication.version) == (0, 1)
    with open_store(db) as s:
        assert s.blacklist_proposals(ids=[first])[0].pending == ()


async def test_automatic_approval_from_the_command_is_published_at_once(
    mosquitto_broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = keyed_park(tmp_path)
    async with listening(mosquitto_broker, "gate-b", "allowlist") as live:
        rc = await cli(
            "central", "blacklist", "propose", "--store", db, "--auto-approve", "hazmat",
            "--key", str(tmp_path / "keys" / "central.key"), "--site", SITE, "--gate", "gate-b",
            *broker_args(mosquitto_broker, tmp_path),
        )  # fmt: skip
        assert rc == 0
        message = await receive(live)
    out = capsys.readouterr().out
    assert "2 new proposals, #1 苏E00002 (approved), #2 苏E00004 (open)" in out
    assert "to gate-b (0 -> 1)" in out
    public = load_public_key(tmp_path / "keys" / "central.pub")
    publication = decode_publication(open_signed(body(message), KIND_ALLOWLIST, public))
    [entry] = delta_changes(publication.content).upserts
    assert entry.plate == "苏E00002" and "approved by auto" in entry.detail  # type: ignore[union-attr]

    assert await cli("central", "blacklist", "list", "--store", db, "--timezone", "UTC") == 0
    table = capsys.readouterr().out
    assert "苏E00002" in table and "approved" in table and "auto" in table
    assert "gate-a seq 3" in table and "permit-end 2026-11-28 10:00:00" in table
    assert await cli("central", "blacklist", "list", "--store", db, "--state", "dismissed") == 0
    assert "no proposals dismissed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["approve", "x", "--operator", "a", "--reason", "b"],
            "proposal id 'x': expected a number",
        ),
        (["dismiss", "1", "--operator", "a", "--reason", " "], "--reason: must not be empty"),
        (["approve", "1", "--operator", "a", "--reason", "b"], "publishing needs --key, --site"),
        (["dismiss", "7", "--operator", "a", "--reason", "b"], "no proposal 7"),
        (["propose", "--dwell-limit", "hazmat=soon"], "--dwell-limit 'hazmat=soon'"),
        (["propose", "--auto-approve", "tanker"], "--auto-approve 'tanker': expected one of"),
        (["propose", "--auto-approve", "hazmat"], "publishing needs --key, --site, --broker"),
        (["list", "--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_input_is_named(tmp_path: Path, argv: list[str], message: str) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    with open_store(db):
        pass
    ran = edgegate("central", "blacklist", *argv, "--store", db)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert any(message in line for line in said(ran.stderr)), ran.stderr
