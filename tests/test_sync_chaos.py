"""Chaos: the gate appends while the broker is killed and restarted and the sink is killed
mid-batch; at the end central holds every event exactly once, in order, chained, and the
gate's cursor equals its head.

Real peers throughout: a mosquitto broker (SIGKILL, so only what its last autosave wrote
survives), ``edgegate central run`` as a subprocess on SQLite (SIGKILL while it stores), and
the gate's real event log and uplink in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from edgegate.central.store import open_store
from edgegate.core import events as ev
from edgegate.core.domain import PlateColour
from edgegate.log import EventLog
from edgegate.log.chain import GENESIS_HASH, ChainVerifier
from edgegate.sync.uplink import Uplink, UplinkOptions
from tests.eventually import eventually_blocking
from tests.services.mosquitto import Broker, BrokerFactory

GATE = "gate-a"
SITE = "park-1"
EVENTS = 100_000
BROKER_KILLS = 10


def _event(i: int) -> ev.PlateRead:
    return ev.PlateRead(
        lane=f"in-{i % 2}",
        plate=f"苏E{i % 100000:05d}",
        colour=PlateColour.BLUE,
        confidence=0.9,
        reader="cam-1",
        image_ref=f"img/{i:08d}.jpg",
        raw=i.to_bytes(4, "big"),
    )


class SinkProcess:
    """``edgegate central run`` in its own process, killable with SIGKILL."""

    def __init__(self, broker: Broker, db: Path, workdir: Path) -> None:
        self.broker = broker
        self.db = db
        self.password_file = workdir / "central.pass"
        self.password_file.write_text(broker.users["central"])
        self.log_path = workdir / "sink.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgegate",
                    "central",
                    "run",
                    "--broker",
                    f"mqtt://127.0.0.1:{self.broker.plain_port}",
                    "--password-file",
                    str(self.password_file),
                    "--db",
                    f"sqlite:///{self.db}",
                    "--client-id",
                    "chaos-sink",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _central_head(db: Path) -> int:
    """The sink's stored head for the gate, read like any other reader would (WAL)."""
    if not db.exists():
        return 0
    with contextlib.closing(open_store(f"sqlite:///{db}")) as store:
        return store.head(GATE)[0]


def _wait_head_moves(db: Path, timeout: float) -> None:
    before = _central_head(db)
    eventually_blocking(
        lambda: _central_head(db) != before, "the sink storing", within=timeout, every=0.005
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_every_event_reaches_central_once_through_broker_and_sink_crashes(
    make_broker: BrokerFactory, tmp_path: Path
) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    seed = rng.getrandbits(32)
    rng.seed(seed)
    broker = make_broker(users=("central", GATE), autosave_interval=1)
    db = tmp_path / "central.db"
    sink = SinkProcess(broker, db, tmp_path)
    sink.start()
    options = UplinkOptions(
        gate=GATE,
        site=SITE,
        host="127.0.0.1",
        port=broker.plain_port,
        username=GATE,
        password=broker.users[GATE],
        reconnect_initial=0.05,
        reconnect_max=0.5,
        ack_timeout=2.0,
        connect_timeout=3.0,
        batch_max_events=2000,
        max_inflight_events=8000,
    )
    log_path = tmp_path / "gate.db"
    broker_kills = 0
    kills_at: list[int] = []  # the gate's head at each kill
    sink_killed_mid_batch = False
    try:
        async with await EventLog.open(log_path, gate_id=GATE) as log, Uplink(log, options) as up:

            async def produce() -> None:
                # Bursts of appends with pauses, so crashes land at busy and quiet moments.
                # At least EVENTS, and on until a burst begun after the last crash is over
                # (one begun before it may have been committed whole before the kill).
                in_flight: deque[asyncio.Future[int]] = deque()
                i = 0
                while True:
                    crashes_over = chaos_done.is_set()
                    burst = rng.randint(100, 3000)
                    for _ in range(burst):
                        if len(in_flight) >= 256:
                            await in_flight.popleft()
                        in_flight.append(log.submit(_event(i)))
                        i += 1
                    if crashes_over and i >= EVENTS:
                        break
                    # About 10,000 events/s: the appending outlasts the crashes below.
                    await asyncio.sleep(rng.uniform(0.05, 0.25))
                for fut in in_flight:
                    await fut

            chaos_done = asyncio.Event()

            async def chaos() -> None:
                nonlocal broker_kills, sink_killed_mid_batch
                for n in range(BROKER_KILLS):
                    await asyncio.sleep(rng.uniform(0.2, 0.8))
                    broker.kill()
                    broker_kills += 1
                    kills_at.append(log.head[0])
                    await asyncio.sleep(rng.uniform(0.0, 0.5))
                    await asyncio.to_thread(broker.start)
                    if n == BROKER_KILLS // 2:
                        # Kill the sink while it stores: wait for its head to move, then
                        # SIGKILL at once (a batch is being received, stored or acked).
                        await asyncio.to_thread(_wait_head_moves, db, 60.0)
                        sink.kill()
                        sink_killed_mid_batch = True
                        kills_at.append(log.head[0])
                        await asyncio.sleep(rng.uniform(0.1, 1.0))
                        sink.start()
                chaos_done.set()

            await asyncio.gather(produce(), chaos())
            head_seq, head_hash = log.head
            assert head_seq >= EVENTS
            try:
                async with asyncio.timeout(240):
                    await up.wait_synced(head_seq)
            except TimeoutError:
                pytest.fail(
                    f"seed {seed}: cursor {up.synced_seq} never reached head {head_seq}; "
                    f"sink log:\n{sink.log_tail()}\nbroker log:\n{broker.log_tail()}"
                )
            assert up.synced_seq == head_seq
    finally:
        sink.stop()

    assert broker_kills == BROKER_KILLS
    assert sink_killed_mid_batch and sink.starts == 2
    assert all(0 < at < head_seq for at in kills_at), f"crashes not while appending: {kills_at}"
    with contextlib.closing(open_store(f"sqlite:///{db}")) as store:
        assert store.head(GATE) == (head_seq, head_hash), f"seed {seed}"
        assert store.count(GATE) == head_seq  # (gate, seq) is the key: once each
        assert store.verify(GATE) is None
        verifier = ChainVerifier(GATE, 0, GENESIS_HASH)
        assert verifier.feed(store.events(GATE, after=0)) is None  # in order, unbroken
        assert verifier.last_seq == head_seq
        assert store.dead_letters(GATE) == []
