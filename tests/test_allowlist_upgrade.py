"""A gate upgraded to the seal: its stored list, kept under the old content hash (the entries'
data only, cleared by any consumption), is checked the old way once and sealed, not taken
for a tampered one; one edited before the upgrade is still caught."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

from edgegate.allowlist import store
from edgegate.allowlist.service import AllowListService
from edgegate.cli.main import main
from edgegate.log import EventLog, LogReader

REPLAY = Path(__file__).resolve().parent.parent / "replay" / "morning-shift" / "gate.db"
GATE = "fengxiang-road"


def old_copy(tmp_path: Path, *, with_hash: bool) -> Path:
    """A log written before the seal (schema 2); ``with_hash``: its list still carries the
    old content hash (no consumption since its last snapshot)."""
    path = tmp_path / "gate.db"
    shutil.copyfile(REPLAY, path)
    if with_hash:
        conn = sqlite3.connect(path)
        digest = hashlib.sha256()
        for (data,) in conn.execute("SELECT data FROM allowlist_entry ORDER BY kind, id"):
            digest.update(data)
        conn.execute("UPDATE allowlist_state SET content_hash = ?", (digest.digest(),))
        conn.commit()
        conn.close()
    return path


def tampered_events(path: Path) -> list[str]:
    with LogReader(path) as reader:
        return [s.type for s in reader.read(after=0, limit=100_000) if "tampered" in s.type]


async def test_a_list_stored_before_the_seal_is_checked_once_and_sealed(tmp_path: Path) -> None:
    path = old_copy(tmp_path, with_hash=True)
    assert main(["log", "verify", str(path)]) == 0  # read-only: the old hash, checked
    async with await EventLog.open(path, gate_id=GATE) as log:
        service = await AllowListService.open(log)
        assert not service.view.tampered
        assert (service.view.version, len(service.view)) == (1, 12)
    assert tampered_events(path) == []
    conn = sqlite3.connect(path)
    assert not store.legacy_sealed(conn)
    assert store.verify(conn) is None  # sealed over every column now
    # From now on a flipped plate byte is caught, as on any sealed list.
    conn.execute(
        "UPDATE allowlist_entry SET plate = substr(plate, 1, 6) || 'X' WHERE kind = 'blacklist'"
    )
    conn.commit()
    finding = store.verify(conn)
    conn.close()
    assert finding is not None and finding.kind == "blacklist"


async def test_a_list_whose_old_hash_was_cleared_by_a_consumption_is_sealed(
    tmp_path: Path,
) -> None:
    path = old_copy(tmp_path, with_hash=False)
    async with await EventLog.open(path, gate_id=GATE) as log:
        service = await AllowListService.open(log)
        assert not service.view.tampered
    assert tampered_events(path) == []
    assert main(["log", "verify", str(path)]) == 0


async def test_a_list_edited_before_the_upgrade_is_still_caught(tmp_path: Path) -> None:
    path = old_copy(tmp_path, with_hash=True)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM allowlist_entry WHERE kind = 'blacklist'")
    conn.commit()
    conn.close()
    assert main(["log", "verify", str(path)]) == 1
    async with await EventLog.open(path, gate_id=GATE) as log:
        service = await AllowListService.open(log)
        assert service.view.tampered
    assert tampered_events(path) == ["allowlist.tampered"]
    assert main(["log", "verify", str(path)]) == 1
