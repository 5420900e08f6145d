"""``edgegate replay verify``: the chain alone, and the gate's log against central's copy
(a store filled by central's own store_batch, as the sink fills it)."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest

from edgegate.central.store import open_store
from edgegate.cli.main import main
from edgegate.log import EventLog, LogReader
from tests.chains import hashed_row
from tests.event_samples import all_samples
from tests.tamper import tampering

GATE = "fengxiang-road"


async def _log_and_central(tmp_path: Path) -> tuple[Path, str]:
    db = tmp_path / "gate.db"
    async with await EventLog.open(db, gate_id=GATE) as log:
        for e in all_samples():
            await log.append(e)
    dsn = f"sqlite:///{tmp_path / 'central.db'}"
    with LogReader(db) as reader, open_store(dsn) as store:
        rows = [list(r) for batch in reader.iter_rows() for r in batch]
        result = store.store_batch(GATE, rows[:-3])  # central has not received the last 3 yet
        assert result.fault is None
    return db, dsn


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["replay", "verify", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


async def test_identical_to_central_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, dsn = await _log_and_central(tmp_path)
    code, out = _verify(capsys, str(db), "--central", dsn)
    assert code == 0
    central = out["central"]
    assert isinstance(central, dict)
    assert central["difference"] is None
    assert central["compared"] == central["head_seq"] == len(all_samples()) - 3


async def test_rewritten_and_rechained_log_passes_alone_but_not_against_central(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, dsn = await _log_and_central(tmp_path)
    # Rewrite seq 5's payload and re-chain everything after it: the chain alone holds.
    with LogReader(db) as reader:
        rows = [r for batch in reader.iter_rows() for r in batch]
    with tampering(db, restore=True) as conn:
        prev = rows[3][9]
        for i, r in enumerate(rows[4:], start=4):
            data = msgpack.packb({**msgpack.unpackb(r[7]), "forged": 1}) if i == 4 else r[7]
            new = hashed_row(prev, GATE, r[0], r[1], r[2], r[3], r[4], r[5], r[6], data)
            conn.execute(
                "UPDATE events SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (new[7], new[8], new[9], r[0]),
            )
            prev = new[9]
    assert main(["replay", "verify", str(db)]) == 0
    capsys.readouterr()
    code, out = _verify(capsys, str(db), "--central", dsn)
    assert code == 1
    central = out["central"]
    assert isinstance(central, dict)
    assert central["difference"] == {
        "seq": 5,
        "problem": "seq 5: data differs between the gate's log and central's copy",
    }


async def test_truncated_log_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, dsn = await _log_and_central(tmp_path)
    n = len(all_samples())
    with tampering(db, restore=True) as conn:
        conn.execute("DELETE FROM events WHERE seq > ?", (n - 6,))
    assert main(["replay", "verify", str(db)]) == 0  # a shorter chain is still a chain
    capsys.readouterr()
    code, out = _verify(capsys, str(db), "--central", dsn)
    assert code == 1
    central = out["central"]
    assert isinstance(central, dict)
    difference = central["difference"]
    assert isinstance(difference, dict)
    assert difference["seq"] == n - 5
    assert "truncated" in str(difference["problem"])


async def test_tampered_payload_names_the_first_bad_seq(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = await _log_and_central(tmp_path)
    with tampering(db, restore=True) as conn:
        conn.execute("UPDATE events SET lane = 'out-9' WHERE seq = 7")
    code, out = _verify(capsys, str(db))
    assert code == 1
    assert out["chain_fault"] == {"seq": 7, "problem": "hash does not match the event's content"}


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: None, "no log file"),
        (lambda p: p.write_bytes(b"not a database at all, just text" * 100), "not an edgegate log"),
    ],
)
def test_unreadable_log_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, says: str
) -> None:
    db = tmp_path / "x.db"
    make(db)  # type: ignore[operator]
    assert main(["replay", "verify", str(db)]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


async def test_unknown_gate_and_bad_dsn_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, dsn = await _log_and_central(tmp_path)
    assert main(["replay", "verify", str(db), "--central", dsn, "--gate", "nowhere"]) == 2
    assert "holds no gate 'nowhere'" in capsys.readouterr().err
    assert main(["replay", "verify", str(db), "--central", "mysql://x/y"]) == 2
    assert "sqlite:///PATH" in capsys.readouterr().err
