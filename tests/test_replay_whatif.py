"""``replay what-if``: the log's decisions taken again; ``--as-recorded`` reproduces them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgegate.cli.main import main
from edgegate.log.reader import LogReader
from tests.replay_logs import CASES, RECORDED_CONFIG, ROOT, fresh_demo_log, recorded


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
    assert versions == {4}
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
