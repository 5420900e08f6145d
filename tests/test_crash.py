"""kill -9 at random moments: every seq the log promised is there, gap-free, chained; and at
each point of the retention's sealing, archiving and removing: the log still verifies, and
the next start completes or undoes the step."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgegate.core import events as ev
from edgegate.log import EventLog, LogReader
from edgegate.log.eventlog import connect
from edgegate.log.retention import Retention
from edgegate.log.segments import kept_parts, list_files, segments_dir

ROOT = Path(__file__).resolve().parent.parent


def _run_and_kill(db: Path, producers: int, kill_after: float) -> list[int]:
    """Start the child, SIGKILL it ``kill_after`` s after it is ready, return printed seqs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_child", str(db), str(producers)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.strip() == "ready", first + (proc.stderr.read() if proc.stderr else "")
    lines: list[str] = []
    stdout = proc.stdout

    def collect() -> None:
        for line in stdout:
            lines.append(line)

    reader = threading.Thread(target=collect)
    reader.start()
    time.sleep(kill_after)  # pacing: the power cut comes while the child appends
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join()
    if proc.stderr is not None:
        proc.stderr.close()
    stdout.close()
    # A line cut by the kill mid-write was never fully promised; ignore it.
    return [int(line) for line in lines if line.endswith("\n")]


async def _resume(db: Path, expected: int) -> None:
    async with await EventLog.open(db, gate_id="crash-gate") as log:
        seq = await log.append(ev.DaemonStopped(reason=ev.StopReason.ERROR, detail="resumed"))
        assert seq == expected


@pytest.mark.slow
def test_sigkill_never_loses_an_acknowledged_event(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    trials: int = request.config.getoption("--crash-trials")
    rng = random.Random(int(os.environ.get("EDGEGATE_CRASH_SEED", time.time_ns())))
    db = tmp_path / "crash.db"
    total_promised = 0
    for trial in range(trials):
        producers = rng.choice((1, 4, 16))
        promised = _run_and_kill(db, producers, kill_after=rng.uniform(0.02, 0.4))
        total_promised += len(promised)
        with LogReader(db) as reader:
            report = reader.verify()
            head = reader.head()[0]
        assert report.ok, f"trial {trial}: {report.fault} {report.missing_triggers}"
        assert report.events == head
        if promised:
            assert max(promised) <= head, f"trial {trial}: promised {max(promised)}, head {head}"
        assert len(set(promised)) == len(promised)

        # Appending resumes exactly after the head.
        asyncio.run(_resume(db, head + 1))
    assert total_promised > 0, "the child never acknowledged anything: the test proved nothing"


# --- retention: kill -9 at each point of sealing, archiving and removing -------------------

RETENTION_POINTS = (
    "seal-copied",
    "seal-published",
    "seal-deleting",
    "archive-published",
    "archive-logged",
    "remove-logged",
)


def _run_until_it_kills_itself(db: Path, point: str, nth: int) -> list[int]:
    """Run the retention child until it SIGKILLs itself at ``point``; its printed seqs."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.crash_retention_child", str(db), point, str(nth)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    lines = proc.stdout.splitlines(keepends=True)
    assert lines and lines[0] == "ready\n", proc.stderr[-2000:]
    # The child's own log lines go to stdout too; a seq line is digits only.
    return [int(line) for line in lines[1:] if line.endswith("\n") and line.strip().isdigit()]


def _verified(db: Path) -> tuple[int, int]:
    """(first kept seq, head) of a log that verifies across its segments and archives."""
    with LogReader(db) as reader:
        report = reader.verify()
        head = reader.head()[0]
    assert report.ok, f"{report.fault} {report.missing_triggers}"
    assert report.head_seq == head and report.events == head - report.first_seq + 1
    return report.first_seq, head


async def _recover_and_resume(db: Path, expected: int) -> None:
    """The next start: the retention completes or undoes the interrupted step, appending
    resumes right after the head, and nothing is left half-done on disk."""
    from tests.crash_retention_child import POLICY

    async with await EventLog.open(db, gate_id="crash-gate") as log:
        retention = Retention(log, POLICY, log._clock)
        try:
            await retention.step()
        finally:
            await retention.aclose()
        seq = await log.append(ev.DaemonStopped(reason=ev.StopReason.ERROR, detail="resumed"))
        assert seq > expected or seq == expected
    marks = retention.state.marks
    directory = segments_dir(db)
    names = sorted(p.name for p in directory.iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names
    files = list_files(directory)
    assert files == kept_parts(directory, marks), names  # no file beyond or behind its mark
    assert len({p.first for p in files}) == len(files), names  # one file per range
    conn = connect(db, readonly=True)
    try:
        lowest = conn.execute("SELECT MIN(seq) FROM events").fetchone()[0]
    finally:
        conn.close()
    assert lowest > marks.sealed_through  # every sealed row left the active file


@pytest.mark.slow
@pytest.mark.parametrize("point", RETENTION_POINTS)
def test_sigkill_during_retention_leaves_a_log_that_verifies_and_resumes(
    tmp_path: Path, point: str
) -> None:
    db = tmp_path / "crash.db"
    for nth in (1, 3):  # the first time, and once more on a log that already has parts
        promised = _run_until_it_kills_itself(db, point, nth)
        first, head = _verified(db)
        assert promised and max(promised) <= head
        assert first <= head
        asyncio.run(_recover_and_resume(db, head + 1))
        _verified(db)
