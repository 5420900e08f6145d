"""``replay what-if``: the log's decisions taken again; ``--as-recorded`` reproduces them."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edgegate.cli.main import main
from edgegate.core.codec import ns_to_datetime
from edgegate.core.events import AccessDecided
from edgegate.log.reader import LogReader
from tests.replay_logs import (
    CASES,
    RECORDED_CONFIG,
    ROOT,
    central_copy,
    fresh_demo_log,
    recorded,
    samples_log,
)


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_demo_log(tmp_path_factory.mktemp("demo"))


def _what_if(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["replay", "what-if", *args, "--json"])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return code, report


@pytest.mark.parametrize("case", CASES)
def test_as_recorded_reproduces_every_decision_of_the_recorded_incidents(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = recorded(case, tmp_path)
    code, report = _what_if(capsys, str(db), "--as-recorded", "-c", str(RECORDED_CONFIG))
    assert code == 0, report
    assert report["decisions"] == report["reproduced"] == 8
    assert report["differing"] == [] and report["skipped"] == []
    # Said plainly: these decisions did not record their credentials; the file's list is used.
    notes = " ".join(report["notes"])
    assert "allow-list stored in the gate's file" in notes and "before v4" in notes


def test_as_recorded_reproduces_every_decision_of_a_fresh_daemon_log(
    demo_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LogReader(demo_db) as reader:
        versions = {e.version for e in reader.read(limit=100_000) if e.type == "access.decided"}
    assert versions == {AccessDecided.VERSION}  # the current version
    code, report = _what_if(capsys, str(demo_db), "--as-recorded")
    assert code == 0, report
    assert report["decisions"] == report["reproduced"]
    assert report["decisions"] >= 2
    assert report["notes"] == [
        f"credentials: those recorded in each decision ({report['decisions']} decisions, v4)",
        "rules: those recorded in each decision (v4)",
    ]


def test_an_old_log_without_the_rules_is_named_not_guessed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = recorded("morning-shift", tmp_path)
    code, report = _what_if(capsys, str(db), "--as-recorded")
    assert code == 1
    assert report["reproduced"] == 0 and len(report["skipped"]) == 8
    assert "give the configuration (-c)" in report["skipped"][0]["why"]


def test_another_allowlist_changes_the_decisions_it_should(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = recorded("morning-shift", tmp_path)
    lines = (ROOT / "config" / "allowlist-example.csv").read_text("utf-8").splitlines()
    without = [line for line in lines if not line.startswith("registration,REG-0001,")]
    assert len(without) == len(lines) - 1
    other = tmp_path / "without-reg-0001.csv"
    other.write_text("\n".join(without) + "\n", "utf-8")
    code, report = _what_if(capsys, str(db), "--allowlist", str(other), "-c", str(RECORDED_CONFIG))
    assert code == 0
    changed = report["changed"]
    assert [(c["seq"], c["change"]) for c in changed] == [(13, "allow → deny")]
    assert changed[0]["new"]["reasons"] == ["no-credential"]
    assert changed[0]["old"]["reasons"] == ["registration-valid"]
    assert report["summary"] == {"allow → deny": 1, "same": 7}


def test_another_configuration_changes_the_decisions_it_should(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = recorded("morning-shift", tmp_path)
    text = RECORDED_CONFIG.read_text("utf-8").replace('kind = "comprehensive"', 'kind = "ordinary"')
    config = tmp_path / "ordinary.toml"
    config.write_text(text, "utf-8")
    code, report = _what_if(capsys, str(db), "-c", str(config))
    assert code == 0, report
    # The hazmat tanker's entry and exit: an ordinary gate never passes hazmat.
    by_seq = {c["seq"]: c for c in report["changed"]}
    assert by_seq[43]["change"] == "allow → deny"
    assert "category-not-admitted" in by_seq[43]["new"]["reasons"]
    assert by_seq[76]["change"] == "allow → deny"


def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = recorded("morning-shift", tmp_path)
    for args in (
        [str(tmp_path / "missing.db")],
        [str(db), "--from", "yesterday"],
        [str(db), "--as-recorded", "--allowlist", str(tmp_path / "x.csv")],
        [str(db), "--allowlist", str(tmp_path / "absent.csv")],
        [str(db), "--tz", "Mars/Olympus"],
    ):
        assert main(["replay", "what-if", *args]) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_as_recorded_on_centrals_copy_of_a_fresh_log_reproduces_every_decision(
    demo_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, gate = central_copy(demo_db, tmp_path)
    code, from_file = _what_if(capsys, str(demo_db), "--as-recorded")
    assert code == 0
    code, report = _what_if(capsys, "--central", dsn, "--gate", gate, "--as-recorded")
    assert code == 0, report
    assert report["decisions"] == report["reproduced"] == from_file["decisions"] >= 2
    assert report["differing"] == [] and report["skipped"] == []


def test_decisions_before_v4_on_centrals_copy_are_skipped_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, gate = central_copy(recorded("morning-shift", tmp_path), tmp_path)
    args = ("--central", dsn, "--gate", gate, "--as-recorded", "-c", str(RECORDED_CONFIG))
    code, report = _what_if(capsys, *args)
    assert code == 1
    assert report["reproduced"] == 0 and len(report["skipped"]) == 8
    assert all(
        "central's copy holds no allow-list: give --allowlist or read the gate's file" in s["why"]
        for s in report["skipped"]
    )
    # With another allow-list given, central's copy is enough.
    lines = (ROOT / "config" / "allowlist-example.csv").read_text("utf-8")
    other = tmp_path / "list.csv"
    other.write_text(lines, "utf-8")
    code, report = _what_if(
        capsys,
        "--central",
        dsn,
        "--gate",
        gate,
        "--allowlist",
        str(other),
        "-c",
        str(RECORDED_CONFIG),
    )
    assert code == 0 and report["skipped"] == [] and report["decisions"] == 8


def test_from_and_to_are_read_in_the_recorded_zone_unless_tz(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "urumqi.db"
    asyncio.run(samples_log(db, "Asia/Urumqi"))  # UTC+6, two hours behind Shanghai
    with LogReader(db) as reader:
        first = next(e for e in reader.read(limit=1000) if e.type == "access.decided")
    until = ns_to_datetime(first.wall_ns) + timedelta(seconds=1)
    local = until.astimezone(ZoneInfo("Asia/Urumqi")).replace(tzinfo=None).isoformat()
    args = (str(db), "--allowlist", str(ROOT / "config" / "allowlist-example.csv"))
    _, report = _what_if(capsys, *args, "--to", local)
    assert report["decisions"] >= 1
    # The same wall-clock time in Shanghai is two hours earlier: no decision before it.
    _, report = _what_if(capsys, *args, "--to", local, "--tz", "Asia/Shanghai")
    assert report["decisions"] == 0
