"""The decision's trace (what the policy looked at) and ``replay why``'s explanation."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgegate.cli.main import main
from edgegate.core import events as ev
from edgegate.core.allowlist import AllowList
from edgegate.core.domain import (
    BlacklistEntry,
    BlacklistReason,
    Direction,
    GateKind,
    HolderType,
    MatchKind,
    PlateColour,
    PlateRead,
    Registration,
    TemporaryPermit,
    VehicleCategory,
)
from edgegate.core.policy import decide
from edgegate.core.rules import GateRules
from edgegate.log.reader import LogReader
from tests.replay_logs import central_copy, fresh_demo_log, recorded, samples_log

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _list() -> AllowList:
    return AllowList.from_credentials(
        [
            Registration(
                id="REG-1",
                plate="苏E12345",
                colour=PlateColour.BLUE,
                category=VehicleCategory.ORDINARY,
                holder=HolderType.COMPANY,
                organisation="Acme",
                valid_from=NOW - 30 * DAY,
                valid_until=NOW - DAY,
            ),
            TemporaryPermit(
                id="PER-1",
                plate="苏E12345",
                category=VehicleCategory.ORDINARY,
                visitor="v",
                host="h",
                valid_from=NOW - DAY,
                valid_until=NOW + DAY,
                gates=frozenset({"G1"}),
            ),
            BlacklistEntry(
                id="BL-1",
                plate="苏E12345",
                reason=BlacklistReason.SPEEDING,
                source="park-security",
                valid_from=NOW - 60 * DAY,
                valid_until=NOW - 40 * DAY,
            ),
            Registration(
                id="REG-2",
                plate="苏E99999",
                category=VehicleCategory.ORDINARY,
                holder=HolderType.COMPANY,
                organisation="Other",
                valid_from=NOW - DAY,
            ),
        ],
        version=7,
        updated_at=NOW - timedelta(hours=1),
    )


def test_a_decision_traces_the_read_candidates_credentials_and_rules() -> None:
    rules = GateRules.for_kind("G1", GateKind.ORDINARY, min_confidence=0.5)
    read = PlateRead(plate="苏e 1234s", colour=PlateColour.BLUE, confidence=0.9)
    decision = decide(rules, Direction.ENTRY, read, _list(), NOW)
    trace = decision.trace
    assert trace is not None
    assert trace.normalised == ("separators removed", "upper-cased")
    assert trace.candidates == (
        ev.TracedCandidate(
            plate="苏E12345", match=MatchKind.FUZZY, position=6, read_char="S", list_char="5"
        ),
    )
    # Only the candidate plate's credentials, each with the outcome of its checks.
    assert [(c.kind, c.id, c.checks) for c in trace.credentials] == [
        ("registration", "REG-1", ("registration-expired",)),
        ("permit", "PER-1", ("permit-valid",)),
        ("blacklist", "BL-1", ("blacklist-not-in-force",)),
    ]
    assert trace.credentials[1].gates == ("G1",)
    assert (trace.colour, trace.confidence, trace.decided_at) == (PlateColour.BLUE, 0.9, NOW)
    assert trace.rules.gate_kind is GateKind.ORDINARY
    assert trace.rules.admits == (
        VehicleCategory.ENGINEERING,
        VehicleCategory.ORDINARY,
        VehicleCategory.EMERGENCY,
    )
    assert (trace.rules.fuzzy_matching, trace.rules.min_confidence) == ("confirm", 0.5)
    assert trace.allowlist_updated_at == NOW - timedelta(hours=1)
    # The event carries it and it survives the stored form.
    event = decision.to_event(
        direction=Direction.ENTRY, plate_read=read.plate, lane="in-1", read_seq=3
    )
    assert ev.decode(ev.AccessDecided.TYPE, 4, ev.encode(event), "in-1") == event
    assert event.trace == trace


# --- replay why ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_demo_log(tmp_path_factory.mktemp("demo"))


def _why(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["replay", "why", *args, "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def test_an_old_decision_is_explained_saying_what_was_not_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = recorded("morning-shift", tmp_path)
    why = _why(capsys, str(db), "43")
    assert (why["verdict"], why["event_version"], why["trace_recorded"]) == ("allow", 1, False)
    steps = {s["title"]: s for s in why["steps"]}
    assert steps["the read"]["outcome"] == "read '苏E6G789', normalised to '苏E6G789'"
    assert "colour yellow, confidence 0.95 (from its read)" in steps["the read"]["details"]
    assert not steps["credentials considered"]["recorded"]
    assert "appointment APT-20261128-0007" in steps["credentials considered"]["details"][0]
    assert steps["rule 3, hazmat/hazwaste appointment"]["outcome"] == "appointment-valid"
    assert steps["verdict"]["outcome"] == "allow (category hazmat, entry)"
    followed = [(s["title"], s["outcome"]) for s in why["followed"]]
    assert followed == [
        ("command it caused", "barrier open (access-allowed)"),
        ("PLC confirmed", "the arm is up (up limit switch made)"),
        ("the vehicle", "passed (entry)"),
    ]
    # Times in the gate's zone.
    assert "+08:00" in why["followed"][0]["details"][0]


def test_what_followed_goes_on_past_the_next_vehicle_while_the_log_names_this_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The recorded incident: 皖A8K302 (decision 94) reversed away while the arm rose; the lane
    # decided on the next car (108) and the pass and the tailgate were put on decision 94.
    db = recorded("arm-left-up-after-back-out", tmp_path)
    why = _why(capsys, str(db), "94")
    followed = [(s["title"], s["outcome"]) for s in why["followed"]]
    assert followed == [
        ("command it caused", "barrier open (access-allowed)"),
        ("PLC confirmed", "the arm is up (up limit switch made)"),
        (
            "the lane",
            "decided on the next vehicle (苏ED35826, seq 108) before this vehicle was seen "
            "passing or backing out",
        ),
        ("the lane", "tailgate suspected: exit loop occupied twice on one opening"),
        ("the vehicle", "passed (entry)"),
    ]


def test_a_v4_decision_is_explained_from_its_trace(
    demo_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LogReader(demo_db) as reader:
        seqs = [e.seq for e in reader.read(limit=100_000) if e.type == "access.decided"]
    why = _why(capsys, str(demo_db), str(seqs[0]))
    assert why["trace_recorded"] and why["event_version"] == ev.AccessDecided.VERSION
    assert all(s["recorded"] for s in why["steps"])
    titles = [s["title"] for s in why["steps"]]
    assert titles[:3] == ["the read", "candidates on the allow-list", titles[2]]
    assert titles[2].startswith("credential ")
    credential = why["steps"][2]
    assert credential["outcome"].endswith("admits") or "not" in credential["outcome"]
    assert any(d.startswith("valid ") or d.startswith("window ") for d in credential["details"])
    staleness = next(s for s in why["steps"] if s["title"] == "allow-list staleness")
    assert "allowlist_max_age" in staleness["details"][0]
    assert why["followed"], why


def test_the_decision_is_found_by_plate_and_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = recorded("morning-shift", tmp_path)
    why = _why(capsys, str(db), "--plate", "苏E99999", "--at", "2026-11-28T20:00")
    assert why["seq"] == 68 and why["verdict"] == "deny"
    rule1 = next(s for s in why["steps"] if s["title"] == "rule 1, blacklist")
    assert rule1["outcome"] == "blacklisted"


def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = recorded("morning-shift", tmp_path)
    for args in (
        [str(db), "12"],  # a plate.read, not a decision
        [str(db), "99999"],
        [str(db)],
        [str(db), "--plate", "苏E99999", "--at", "noon"],
        [str(db), "--plate", "苏E99999", "--at", "2020-01-01T00:00"],
        [str(tmp_path / "missing.db"), "1"],
    ):
        assert main(["replay", "why", *args]) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_a_decision_is_explained_from_centrals_copy_as_from_the_file(
    demo_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, gate = central_copy(demo_db, tmp_path)
    with LogReader(demo_db) as reader:
        seqs = [e.seq for e in reader.read(limit=100_000) if e.type == "access.decided"]
    for seq in (seqs[0], seqs[-1]):
        from_file = _why(capsys, str(demo_db), str(seq))
        from_central = _why(capsys, "--central", dsn, "--gate", gate, str(seq))
        assert from_central == from_file
        assert from_central["trace_recorded"] and from_central["seq"] == seq


def test_times_are_shown_in_the_recorded_zone_unless_tz(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "urumqi.db"
    asyncio.run(samples_log(db, "Asia/Urumqi"))
    dsn, gate = central_copy(db, tmp_path)
    with LogReader(db) as reader:
        seq = next(e.seq for e in reader.read(limit=1000) if e.type == "access.decided")
    for source in ([str(db)], ["--central", dsn, "--gate", gate]):
        assert main(["replay", "why", *source, str(seq)]) == 0
        header = capsys.readouterr().out.splitlines()[0]
        assert header.startswith(f"Decision seq {seq}") and "+06:00" in header, header
        assert main(["replay", "why", *source, str(seq), "--tz", "UTC"]) == 0
        assert "+00:00" in capsys.readouterr().out.splitlines()[0]
