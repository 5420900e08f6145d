"""``edgegate replay timeline`` on the recorded morning shift (replay/morning-shift): vehicle
cycles with their outcomes and timings, plates matched with the OCR-confusable rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgegate.cli.main import main

CASE = Path(__file__).resolve().parent.parent / "replay" / "morning-shift" / "gate.db"


def _timeline(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["replay", "timeline", str(CASE), "--json", *args]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def test_cycles_of_the_morning_shift(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _timeline(capsys, "--lane", "in-1")
    cycles = {c["plate"]: c for c in doc["items"] if c["kind"] == "cycle"}
    assert cycles["苏E12345"]["outcome"] == "passed"
    assert cycles["苏E99999"]["outcome"] == "backed-out"
    assert cycles["苏E99999"]["verdicts"] == ["deny"]
    assert cycles["皖A8K302"]["outcome"] == "backed-out"
    assert cycles["苏ED35826"]["flags"] == ["tailgate-suspected"]
    assert cycles[None]["outcome"] == "not-read"
    timings = cycles["苏E6G789"]["timings"]
    assert 900 < timings["arm_rise_ms"] < 1500  # the simulated arm takes about a second
    assert 0 < timings["decision_ms"] < timings["total_ms"]
    assert timings["under_arm_ms"] > 0
    # Faults and the daemon's stop shown in place, between cycles.
    notes = [i["type"] for i in doc["items"] if i["kind"] == "event"]
    assert "device.fault" in notes
    assert "daemon.stopped" in notes
    assert all(c["lane"] == "in-1" for c in cycles.values())


def test_plate_matches_exact_and_one_confusable_away(capsys: pytest.CaptureFixture[str]) -> None:
    exact = _timeline(capsys, "--plate", "苏E6G789")
    assert [(c["plate"], c["plate_match"]) for c in exact["items"]] == [("苏E6G789", "exact")]
    fuzzy = _timeline(capsys, "--plate", "苏E6G7B9")  # 8 read as B
    assert [(c["plate"], c["plate_match"]) for c in fuzzy["items"]] == [("苏E6G789", "fuzzy")]
    assert _timeline(capsys, "--plate", "苏E6G7A9")["items"] == []


def test_type_and_time_filters(capsys: pytest.CaptureFixture[str]) -> None:
    tailgates = _timeline(capsys, "--type", "vehicle.tailgate-suspected")
    assert [c["plate"] for c in tailgates["items"]] == ["苏ED35826"]
    everything = _timeline(capsys)
    cycles = [i for i in everything["items"] if i["kind"] == "cycle"]
    middle = cycles[len(cycles) // 2]["start"]
    later = _timeline(capsys, "--from", middle)
    assert [i for i in later["items"] if i["kind"] == "cycle"] == cycles[len(cycles) // 2 :]


def test_table_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "timeline", str(CASE), "--lane", "in-1"]) == 0
    out = capsys.readouterr().out
    assert "Asia/Shanghai" in out
    assert "tailgate-suspected" in out
    assert "苏ED35826" in out
