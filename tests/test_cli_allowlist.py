"""``edgegate allowlist import|lookup`` and the allow-list service, as an operator uses them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from edgegate.allowlist.service import AllowListService, load_from_file
from edgegate.cli.main import main
from edgegate.core.domain import Appointment, CredentialKind, Registration
from edgegate.log import EventLog, LogReader, LogWriteError

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "type,id,plate,colour,category,holder,organisation,visitor,host,purpose,valid_from,"
    "valid_until,gates,window_start,window_end,destination,un_number,hazard_class,waybill,"
    "reason,detail,source\n"
)
GOOD = HEADER + (
    "registration,REG-1,苏E12345,blue,ordinary,commuter,Yangzi Petrochemical,,,,2026-01-01,"
    "2026-12-31,,,,,,,,,,\n"
    "appointment,APT-1,苏E6G789,yellow,hazmat,,,,,,,,fengxiang-road,2026-11-28,2026-11-28,"
    "Yangzi Petrochemical,1203,3,EW20261128001,,,\n"
    "blacklist,BL-1,苏E99999,,,,,,,,2026-11-01,,,,,,,,,speeding,82 km/h,park-security\n"
    "permit,PER-1,皖A12345,blue,ordinary,,,Hefei Valves,Zhang Wei,pumps,2026-11-28,2026-11-28,"
    "liyuan-road-west,,,,,,,,,\n"
)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "list.csv").write_text(GOOD, encoding="utf-8")
    return tmp_path


def test_import_then_lookup(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = files / "g.db"
    rc = main(["allowlist", "import", str(db), str(files / "list.csv"), "--gate", "fengxiang-road"])
    assert rc == 0
    assert "version 0 -> 1, 4 upserted" in capsys.readouterr().out
    with LogReader(db) as reader:
        (stored,) = reader.read()
        assert stored.type == "allowlist.updated"
        assert reader.verify().ok
    rc = main(
        [
            "allowlist",
            "lookup",
            str(db),
            "苏E 6G789",
            "--at",
            "2026-11-28 10:00",
            "--gate",
            "fengxiang-road",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exact"][0]["id"] == "APT-1"
    assert out["by_gate_kind"]["comprehensive/entry"]["verdict"] == "allow"
    assert out["by_gate_kind"]["ordinary/entry"]["verdict"] == "deny"


def test_lookup_fuzzy_with_config(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = files / "g.db"
    main(["allowlist", "import", str(db), str(files / "list.csv"), "--gate", "fengxiang-road"])
    capsys.readouterr()
    config = ROOT / "config" / "fengxiang-road.toml"
    rc = main(
        [
            "allowlist",
            "lookup",
            str(db),
            "苏E6G7B9",
            "--at",
            "2026-11-28T10:00:00+08:00",
            "-c",
            str(config),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exact"] == []
    assert out["fuzzy"][0]["plate"] == "苏E6G789"
    entry = out["configured_gate"]["entry"]
    assert entry["verdict"] == "confirm"
    assert "fuzzy-dangerous-needs-confirmation" in entry["reasons"]
    assert entry["explanation"].startswith(
        "matched only fuzzily: read 苏E6G7B9, the allow-list has 苏E6G789 (B read where it "
        "has 8, character 6)"
    )
    assert "credential appointment APT-1;" in entry["explanation"]
    rc = main(
        ["allowlist", "lookup", str(db), "苏E6G7B9", "--at", "2026-11-28 10:00", "-c", str(config)]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "fuzzy: 苏E6G789 (B→8 at 5)" in text
    assert "credential appointment APT-1; a guard must confirm" in " ".join(text.split())
    assert "fengxiang-road" in text


def test_bad_file_imports_nothing_and_names_every_line(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = files / "g.db"
    main(["allowlist", "import", str(db), str(files / "list.csv"), "--gate", "fengxiang-road"])
    capsys.readouterr()
    bad = files / "bad.csv"
    bad.write_text(
        HEADER
        + "registration,REG-2,XX12345,blue,ordinary,commuter,Acme,,,,2026-01-01,,,,,,,,,,,\n"
        + "registration,REG-3,苏E22222,blue,ordinary,commuter,Acme,,,,2026-13-01,,,,,,,,,,,\n"
        + "registration,REG-4,苏E33333,blue,ordinary,commuter,Acme,,,,2026-01-01,,,,,,,,,,,\n",
        encoding="utf-8",
    )
    assert main(["allowlist", "import", str(db), str(bad), "--gate", "fengxiang-road"]) == 2
    err = capsys.readouterr().err
    assert "line 2: plate:" in err
    assert "line 3: valid_from:" in err
    assert "line 4" not in err
    assert load_from_file(str(db)).version == 1  # unchanged
    with LogReader(db) as reader:
        assert reader.head()[0] == 1  # no event for the refused file


def test_delta_import(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = files / "g.db"
    main(["allowlist", "import", str(db), str(files / "list.csv"), "--gate", "fengxiang-road"])
    delta = files / "delta.json"
    delta.write_text(
        json.dumps(
            {
                "upsert": [
                    {
                        "type": "registration",
                        "id": "REG-9",
                        "plate": "苏E55555",
                        "category": "engineering",
                        "holder": "company",
                        "organisation": "Build Co",
                        "valid_from": "2026-11-01",
                    }
                ],
                "remove": [{"type": "blacklist", "id": "BL-1"}],
            }
        ),
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["allowlist", "import", str(db), str(delta), "--delta"]) == 0
    assert "version 1 -> 2, 1 upserted, 1 removed, 4 entries now" in capsys.readouterr().out
    allowlist = load_from_file(str(db))
    assert allowlist.version == 2
    assert allowlist.get(CredentialKind.BLACKLIST, "BL-1") is None
    assert allowlist.get(CredentialKind.REGISTRATION, "REG-9") is not None
    # Removing it again: refused, nothing changes.
    assert main(["allowlist", "import", str(db), str(delta), "--delta"]) == 2
    assert "not in the allow-list" in capsys.readouterr().err
    assert load_from_file(str(db)).version == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["allowlist", "import", "{db}", "{dir}/absent.csv", "--gate", "g"], "cannot read"),
        (["allowlist", "import", "{db}", "{dir}/list.txt", "--gate", "g"], "unknown format"),
        (["allowlist", "import", "{db}", "{dir}/list.csv"], "name its gate with --gate"),
        (
            [
                "allowlist",
                "import",
                "{db}",
                "{dir}/list.csv",
                "--gate",
                "g",
                "--timezone",
                "Mars/Olympus",
            ],
            "unknown time zone",
        ),
        (["allowlist", "lookup", "{db}", "苏E12345"], "no log file"),
    ],
)
def test_usage_errors_exit_2(
    files: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (files / "list.txt").write_text("x", encoding="utf-8")
    args = [a.format(db=files / "new.db", dir=files) for a in argv]
    assert main(args) == 2
    assert message in capsys.readouterr().err


async def test_failed_commit_changes_neither_rows_nor_memory(tmp_path: Path) -> None:
    from edgegate.allowlist import importer

    entries = importer.parse_csv(GOOD.encode())
    async with await EventLog.open(tmp_path / "g.db", gate_id="g") as log:
        service = await AllowListService.open(log)
        await service.replace(entries[:2], source="test")
        before = service.view
        pages = await log.run_in_writer(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await log.run_in_writer(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
        registration = entries[0]
        assert isinstance(registration, Registration)
        many = [
            dataclasses.replace(registration, id=f"R{i}", organisation="x" * 2000)
            for i in range(300)
        ]
        with pytest.raises(LogWriteError):
            await service.replace(many, source="test")
        assert service.view is before
        assert service.view.version == 1
    assert load_from_file(str(tmp_path / "g.db")).version == 1
    with LogReader(tmp_path / "g.db") as reader:
        assert reader.head()[0] == 1


async def test_consumption_is_logged_and_survives_reload(tmp_path: Path) -> None:
    from edgegate.allowlist import importer
    from edgegate.core.domain import Direction, VehicleCategory
    from edgegate.core.events import VehiclePassed

    entries = importer.parse_csv(GOOD.encode())
    db = tmp_path / "g.db"
    async with await EventLog.open(db, gate_id="fengxiang-road") as log:
        service = await AllowListService.open(log)
        await service.replace(entries, source="test")
        passed = VehiclePassed(
            lane="in-1",
            plate="苏E6G789",
            direction=Direction.ENTRY,
            category=VehicleCategory.HAZMAT,
            credential_id="APT-1",
        )
        await service.append_with_consumption(passed, "APT-1", consumed=True)
        appt = service.view.get(CredentialKind.APPOINTMENT, "APT-1")
        assert isinstance(appt, Appointment)
        assert appt.consumed
        # A new snapshot from central does not resurrect a consumed appointment.
        await service.replace(entries, source="central")
        appt = service.view.get(CredentialKind.APPOINTMENT, "APT-1")
        assert isinstance(appt, Appointment)
        assert appt.consumed
    reloaded = await asyncio.to_thread(load_from_file, str(db))
    appt = reloaded.get(CredentialKind.APPOINTMENT, "APT-1")
    assert isinstance(appt, Appointment)
    assert appt.consumed
    conn = sqlite3.connect(db)
    types = [r[0] for r in conn.execute("SELECT type FROM events ORDER BY seq")]
    conn.close()
    assert types == ["allowlist.updated", "vehicle.passed", "allowlist.updated"]


@pytest.mark.parametrize("delta", [False, True])
@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("4", "version 4 is not newer than the current version 5"),
        ("5", "version 5 is not newer than the current version 5"),
        ("-1", "version -1 is not newer than the current version 5"),
        (
            str(2**63),
            f"version {2**63} is above the largest allowed ({2**63 - 1}); the current version is 5",
        ),
        ("9" * 30, "is above the largest allowed"),
    ],
)
def test_import_versions_only_move_forward(
    files: Path, version: str, why: str, delta: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    db = files / "g.db"
    listfile = str(files / "list.csv")
    assert main(["allowlist", "import", str(db), listfile, "--gate", "g", "--version", "5"]) == 0
    change = files / "delta.json"
    change.write_text(json.dumps({"upsert": [], "remove": [{"type": "blacklist", "id": "BL-1"}]}))
    argv = ["allowlist", "import", str(db), str(change if delta else listfile)]
    capsys.readouterr()
    assert main([*argv, *(["--delta"] if delta else []), "--version", version]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("{")]  # not JSON logs
    assert len(lines) == 1, err
    assert why in lines[0]
    assert "Traceback" not in err
    assert load_from_file(str(db)).version == 5
    with LogReader(db) as reader:
        assert reader.head()[0] == 1  # nothing logged for the refused version


def test_import_refuses_a_version_before_creating_a_log(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = files / "new.db"
    argv = ["allowlist", "import", str(db), str(files / "list.csv"), "--gate", "g"]
    assert main([*argv, "--version", "-3"]) == 2
    assert "version -3 is not newer than the current version 0" in capsys.readouterr().err
    assert not db.exists()
    assert main([*argv, "--version", str(2**63 - 1)]) == 0
    # The next default version would be past the largest: refused, not a traceback.
    assert main(argv) == 2
    assert f"version {2**63} is above the largest allowed" in capsys.readouterr().err
    assert load_from_file(str(db)).version == 2**63 - 1


async def test_service_refuses_versions_that_do_not_move_forward(tmp_path: Path) -> None:
    from edgegate.allowlist import importer
    from edgegate.allowlist.service import VersionError

    entries = importer.parse_csv(GOOD.encode())
    async with await EventLog.open(tmp_path / "g.db", gate_id="g") as log:
        service = await AllowListService.open(log)
        await service.replace(entries, source="test", version=7)
        for bad in (7, 6, 0, -1, 2**63):
            with pytest.raises(VersionError) as refused:
                await service.replace(entries, source="test", version=bad)
            assert (refused.value.version, refused.value.current) == (bad, 7)
            with pytest.raises(VersionError):
                await service.apply_delta(entries[:1], [], source="test", version=bad)
        assert service.view.version == 7
    with LogReader(tmp_path / "g.db") as reader:
        assert reader.head()[0] == 1


LU_YU = HEADER + (
    "registration,REG-1,鲁A12345,blue,ordinary,commuter,Qilu Chemicals,,,,2026-01-01,"
    "2026-12-31,,,,,,,,,,\n"
    "blacklist,BL-1,豫B99999,,,,,,,,2026-11-01,,,,,,,,,speeding,82 km/h,park-security\n"
)


def test_import_gbk_file_with_only_lu_and_yu_plates(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listfile = files / "lu-yu.csv"
    listfile.write_bytes(LU_YU.encode("gbk"))
    db = files / "g.db"
    argv = ["allowlist", "import", str(db), str(listfile), "--gate", "g"]
    assert main([*argv, "--encoding", "utf-8"]) == 2
    assert "first character must be a province abbreviation" in capsys.readouterr().err
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        f"read {listfile} as GBK (2 of its 2 plates are valid so, 0 if read as UTF-8); "
        "it is also valid UTF-8 text: give --encoding utf-8 if that is meant"
    ) in out
    assert "version 0 -> 1, 2 upserted" in out
    assert main([*argv, "--encoding", "gbk"]) == 0
    assert "also valid" not in capsys.readouterr().out
    assert main(["allowlist", "lookup", str(db), "豫B99999", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in found["exact"]] == ["BL-1"]
    assert found["by_gate_kind"]["ordinary/entry"]["verdict"] == "deny"
