"""Central's park: many gates' events into two sinks on PostgreSQL, and the park's presence.

    python bench/central_park.py [--json] [--quick] [--gates N] [--events-per-gate N]
                                 [--inside N] [--batch N] [--queries N]

Real peers on 127.0.0.1, started by the benchmark: a PostgreSQL cluster of its own (``fsync``
on), a mosquitto broker (a password per gate and for central, the production ACL and queue
limits, plain listener) and two (``--sinks``) ``edgegate central run`` processes on the
same database,
sharing the gates' batches (one shared subscription, a client id each). The gates are
simulated in this process: each has its own MQTT connection as its own user, publishes its
retained status, then its events as the gate's uplink does (hash-chained batches of
``--batch`` events encoded by ``edgegate.sync.protocol``, at QoS 1, at most 8 batches and
40,000 events unacknowledged, resending from where an ack's ``resend_from`` or an ack timeout
says). The events are a gate's realistic mix: per vehicle a loop change, the plate read, the
decision, the barrier command and the passage (entries and exits at other gates, hazmat,
hazwaste, engineering and ordinary vehicles), device faults and recoveries, the gate's start,
allow-list and mode, so that the park projections have their real work to do.

- ``ingest_eps``: events stored and acknowledged per second, end to end: from the gates
  starting to publish (all connected) until every gate holds central's ack of its last event.
  Afterwards the store is checked: every event stored once, every head right, and the
  vehicles inside as the events say;
- ``baseline_broker_eps``: the same payloads through the same broker from the same gate
  connections to as many subscribers (one shared subscription) that store nothing, measured
  in the same run before the sinks start;
- ``cpu_*_s``: CPU seconds used during the ingest by the sinks, PostgreSQL (all its
  processes), mosquitto and this process (the gates);
- ``presence_query_p99_ms``: what a user of presence asks, with ``--inside`` vehicles
  inside (20,000 by default; after a ``VACUUM ANALYZE`` of the ingest's rows): the park
  API's ``GET /api/v1/presence`` (its default page of 1,000 vehicles, hazmat first, each
  with its overstay, and the count) from an HTTP client, ``--queries`` times;
  ``presence_all_p99_ms``: the whole list, ``CentralStore.presence()`` (every vehicle
  inside as objects, as the dashboard's park view and roll call read it);
  ``presence_page_p99_ms``: the store's first 1,000 (``limit=1000``);
  ``baseline_presence_sql_p99_ms``: the whole list's SELECT through psycopg, rows not
  turned into objects, same run;
- ``dashboard_update_p99_ms``: ``edgegate central web`` on the same store, one viewer
  logged in on ``/live``; then a new gate joins and sends its events one per batch
  (``--live`` passages): from each batch's publication (right after the gate's commit)
  until a ``change`` on ``/live`` says the pushed state reflects it (docs/dashboard.md);
- ``consumption_to_refusal_p99_s``: the sinks run with ``--park-key`` (park-wide
  consumption on: the site's signed park chain; ``--no-park-entry``: off, not measured).
  Gate B is a real ``edgegate run`` of the site (one entry lane on a PLC simulator over
  Modbus and a plate-reader simulator on a pty), pinning central's key and the park key,
  its allow-list (an appointment per gate A vehicle) published by ``edgegate central
  publish-allowlist``. Simulated gate A then enters ``--consumptions`` hazmat and hazwaste
  vehicles on those appointments, one at a time, a batch per passage: from the publication
  of the batch holding the entry (``vehicle.passed``, which makes central publish the
  consumption) until B's log has the ``park.consumed`` naming it (and gate A as where it
  was used) committed (read from outside, polled every 2 ms), in s. Each batch waits for
  central's ack before the next. The first entry is not counted (B catching up with the
  park chain of the ingest). Finally a read of the last vehicle's plate at B:
  ``refused_at_b`` is B's decision, which must not admit it (``appointment-consumed``).

Targets: ``ingest_eps`` >= 100,000 (200 gates), ``presence_query_p99_ms`` <= 50 (20,000
inside), ``dashboard_update_p99_ms`` <= 1,000. ``--quick``: a smoke run of a few gates in
seconds (tests/test_bench_central_park.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import cycle
from pathlib import Path

import aiohttp
import aiomqtt
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._broker import Mosquitto, free_port
from bench._gate_fixture import (
    SimLaneDevices,
    gate_config_toml,
    percentile,
    start_daemon,
    start_lanes,
    stop_lanes,
)
from bench._postgres import Postgres
from bench.daemon_idle import stop_process
from edgegate.central.dashboard import DashboardRole
from edgegate.central.store import open_store
from edgegate.console.accounts import Account, hash_password, write_accounts
from edgegate.core import events as ev
from edgegate.core.domain import Direction, MatchKind, PlateColour, VehicleCategory
from edgegate.log import LogError, LogReader
from edgegate.log.chain import GENESIS_HASH, Row, event_hash
from edgegate.observability import configure_logging
from edgegate.sync.envelope import generate_keypair
from edgegate.sync.protocol import (
    EventBatch,
    Status,
    Topics,
    decode_ack,
    decode_batch,
    encode_batch,
    encode_status,
)

SITE = "bench-park"
MAX_INFLIGHT_BATCHES = 8  # the uplink's defaults
MAX_INFLIGHT_EVENTS = 40_000
ACK_TIMEOUT_S = 10.0
PER_PASSAGE = 5  # loop, read, decision, barrier command, passage
PAGE = 1000  # the park API's default page of /presence
API_TOKEN = "bench-" + "x" * 40
MS = 1_000_000


# ------------------------------------------------------------------------------ the gates' events


@dataclass(frozen=True, slots=True)
class Passage:
    at_ns: int
    plate: str
    direction: Direction
    category: VehicleCategory
    credential: str


@dataclass(slots=True)
class GateLog:
    """One simulated gate's history, encoded as the uplink sends it."""

    gate: str
    batches: list[tuple[int, int, bytes]] = field(default_factory=list)  # (from, to, payload)
    head: int = 0

    def batch_from(self, seq: int) -> int:
        """The index of the batch holding ``seq``."""
        for i, (first, last, _) in enumerate(self.batches):
            if first <= seq <= last:
                return i
        raise ValueError(f"{self.gate}: no batch holds seq {seq}")


_PROVINCES = "苏浙沪皖鲁豫赣闽"
DANGEROUS = (VehicleCategory.HAZMAT, VehicleCategory.HAZWASTE)
_CATEGORIES = (
    [VehicleCategory.HAZMAT] * 2
    + [VehicleCategory.HAZWASTE]
    + [VehicleCategory.ENGINEERING] * 2
    + [VehicleCategory.ORDINARY] * 15
)


def plate(v: int) -> str:
    return f"{_PROVINCES[v % len(_PROVINCES)]}E{v // len(_PROVINCES):05d}"


def plan_passages(
    gates: list[str], total_events: int, inside: int, now_ns: int
) -> dict[str, list[Passage]]:
    """Each gate's passages in time order: vehicles enter at one gate and most leave at
    another; ``inside`` of them are still inside at the end."""
    passages = total_events // PER_PASSAGE
    inside = min(inside, passages)
    entries = (passages + inside) // 2
    exits = entries - inside
    span = 10 * 3600 * 10**9  # the entries spread over the last ten hours
    step = span // max(entries, 1)
    start = now_ns - span - 3600 * 10**9
    out: dict[str, list[Passage]] = {g: [] for g in gates}
    n = len(gates)
    for v in range(entries):
        cat = _CATEGORIES[v % len(_CATEGORIES)]
        cred = f"APT-{v:07d}" if cat.dangerous else f"REG-{v:07d}"
        at = start + v * step
        out[gates[v % n]].append(Passage(at, plate(v), Direction.ENTRY, cat, cred))
        if v < exits:
            dwell = (20 + v % 90) * 60 * 10**9
            out[gates[(v * 7 + 3) % n]].append(
                Passage(at + dwell, plate(v), Direction.EXIT, cat, cred)
            )
    for ps in out.values():
        ps.sort(key=lambda p: p.at_ns)
    return out


def passage_events(p: Passage, lane: str, decision_seq: int) -> list[ev.Event]:
    until = datetime.fromtimestamp(p.at_ns / 1e9, UTC) + timedelta(hours=8)
    kind = "appointment" if p.category.dangerous else "registration"
    return [
        ev.LoopChanged(lane=lane, loop=ev.Loop.ARMING, occupied=True, source=f"plc-{lane}"),
        ev.PlateRead(
            lane=lane,
            plate=p.plate,
            colour=PlateColour.YELLOW if p.category.dangerous else PlateColour.BLUE,
            confidence=0.93,
            reader=f"cam-{lane}",
            image_ref=f"img/{decision_seq:08d}.jpg",
            raw=b"\x02" + p.plate.encode() + b"\x01\x5d\x03",
        ),
        ev.AccessDecided(
            lane=lane,
            direction=p.direction,
            plate_read=p.plate,
            plate=p.plate,
            matched_plate=p.plate,
            match=MatchKind.EXACT,
            verdict="allow",
            reasons=("appointment-valid" if p.category.dangerous else "registration-valid",),
            category=p.category,
            credential_kind=kind,
            credential_id=p.credential,
            credential_until=until,
            consumed_appointment=p.credential
            if p.category.dangerous and p.direction is Direction.ENTRY
            else None,
            allowlist_version=3,
            allowlist_age_s=812.5,
            read_seq=decision_seq - 1,
        ),
        ev.BarrierCommanded(
            lane=lane,
            command=ev.BarrierCommand.OPEN,
            reason="access-allowed",
            device=f"plc-{lane}",
            cause_seq=decision_seq,
        ),
        ev.VehiclePassed(
            lane=lane,
            plate=p.plate,
            direction=p.direction,
            category=p.category,
            credential_id=p.credential,
            permit_until=until if p.category.dangerous else None,
            decision_seq=decision_seq,
        ),
    ]


def gate_log(gate: str, passages: list[Passage], batch: int, now_ns: int) -> GateLog:
    """``gate``'s chain: its start, list and mode, its passages, a device fault now and
    then; cut into batches of ``batch`` events and encoded."""
    out = GateLog(gate)
    rows: list[Row] = []
    prev = GENESIS_HASH
    seq = 0
    mono = 1_000_000

    def add(event: ev.Event, wall_ns: int) -> None:
        nonlocal prev, seq, mono
        seq += 1
        mono += 1_000_000
        data = ev.encode(event)
        h = event_hash(
            prev, gate, seq, wall_ns, mono, "boot-1", event.TYPE, event.lane, event.VERSION, data
        )
        rows.append(
            (seq, wall_ns, mono, "boot-1", event.TYPE, event.lane, event.VERSION, data, prev, h)
        )
        prev = h
        if len(rows) == batch:
            flush()

    def flush() -> None:
        if rows:
            out.batches.append((rows[0][0], rows[-1][0], encode_batch(EventBatch.of(gate, rows))))
            rows.clear()

    t0 = passages[0].at_ns - 10**9 if passages else now_ns
    add(
        ev.DaemonStarted(
            software_version="bench",
            config_hash="0" * 64,
            config_path="/etc/edgegate/gate.toml",
            pid=1,
        ),
        t0,
    )
    add(
        ev.AllowListUpdated(
            kind=ev.AllowListUpdateKind.SNAPSHOT,
            version=3,
            previous_version=2,
            source="central",
            upserted=5000,
            removed=0,
            entries=5000,
            content_hash="1" * 64,
        ),
        t0,
    )
    add(
        ev.ModeChanged(
            mode=ev.GateMode.NORMAL,
            previous=ev.GateMode.MAINTENANCE,
            source=ev.ModeSource.LOCAL,
            operator="bench",
        ),
        t0,
    )
    for i, p in enumerate(passages):
        lane = "in-1" if p.direction is Direction.ENTRY else "out-1"
        for k, e in enumerate(passage_events(p, lane, seq + 3)):
            add(e, p.at_ns + k * 10 * MS)
        if i % 200 == 199:
            add(
                ev.DeviceFault(device="cam-in-1", code="timeout", message="no frame for 30 s"),
                p.at_ns + MS,
            )
            if i != len(passages) - 1:
                add(ev.DeviceRecovered(device="cam-in-1", down_ms=4200), p.at_ns + 2 * MS)
    flush()
    out.head = seq
    return out


def build_gates(count: int, events_per_gate: int, inside: int, batch: int) -> list[GateLog]:
    gates = [f"gate-{i:03d}" for i in range(count)]
    now_ns = time.time_ns()
    plan = plan_passages(gates, count * events_per_gate, inside, now_ns)
    return [gate_log(g, plan[g], batch, now_ns) for g in gates]


def expected_inside(logs: list[GateLog]) -> int:
    """Vehicles whose latest passage is an entry (decoded back from the batches)."""
    last: dict[str, tuple[int, bool]] = {}
    for log in logs:
        for _, _, payload in log.batches:
            for row in decode_batch(payload).events:
                if row[4] == ev.VehiclePassed.TYPE:
                    e = ev.decode(row[4], row[6], bytes(row[7]), row[5])
                    assert isinstance(e, ev.VehiclePassed)
                    if e.plate not in last or last[e.plate][0] < row[1]:
                        last[e.plate] = (row[1], e.direction is Direction.ENTRY)
    return sum(1 for _, inside in last.values() if inside)


# ------------------------------------------------------------------------------ the uplinks


@dataclass(slots=True)
class Uplink:
    """One simulated gate's uplink: the window, acks and resends of ``edgegate.sync.uplink``."""

    log: GateLog
    client: aiomqtt.Client
    topics: Topics
    acked: int = 0
    next_batch: int = 0
    resends: int = 0
    timeouts: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def read_acks(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            ack = decode_ack(message.payload)
            self.acked = max(self.acked, ack.seq)
            if ack.resend_from is not None and ack.resend_from <= self.log.head:
                self.resends += 1
                self.next_batch = min(self.next_batch, self.log.batch_from(ack.resend_from))
            self.progress.set()
            if self.acked >= self.log.head:
                return

    def _unacked_batches(self) -> tuple[int, int]:
        sent_to = self.log.batches[self.next_batch - 1][1] if self.next_batch else 0
        first = next(
            (i for i, b in enumerate(self.log.batches) if b[1] > self.acked), len(self.log.batches)
        )
        return self.next_batch - first, sent_to - self.acked

    async def send_all(self) -> None:
        """Publish the batches within the window until central acks the head; no ack for
        the ack timeout (doubled each time, as the uplink does) sends again from the ack."""
        reader = asyncio.create_task(self.read_acks())
        batches = self.log.batches
        loop = asyncio.get_running_loop()
        progress_at = loop.time()
        last_acked = self.acked
        ack_wait = ACK_TIMEOUT_S
        while self.acked < self.log.head:
            if self.acked != last_acked:
                last_acked, progress_at = self.acked, loop.time()
            n_batches, n_events = self._unacked_batches()
            if (
                self.next_batch < len(batches)
                and n_batches < MAX_INFLIGHT_BATCHES
                and n_events < MAX_INFLIGHT_EVENTS
            ):
                payload = batches[self.next_batch][2]
                self.next_batch += 1
                await self.client.publish(self.topics.events, payload, qos=1)
                continue
            self.progress.clear()
            waited = loop.time() - progress_at
            if waited >= ack_wait:
                self.timeouts += 1
                self.next_batch = self.log.batch_from(self.acked + 1)
                progress_at = loop.time()
                ack_wait = min(2 * ack_wait, 300.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), ack_wait - waited)
        await reader


@contextlib.asynccontextmanager
async def gate_clients(
    mq: Mosquitto, logs: list[GateLog], *, ack: bool
) -> AsyncIterator[list[Uplink]]:
    """Every gate connected as itself (subscribed to its acks if ``ack``)."""
    async with contextlib.AsyncExitStack() as stack:
        uplinks: list[Uplink] = []
        for log in logs:
            client = aiomqtt.Client(
                "127.0.0.1",
                mq.port,
                username=log.gate,
                password=mq.users[log.gate],
                identifier=f"edgegate-{log.gate}",
                max_inflight_messages=MAX_INFLIGHT_BATCHES,
                timeout=60,
            )
            await stack.enter_async_context(client)
            topics = Topics(SITE, log.gate)
            if ack:
                await client.subscribe(topics.ack, qos=1)
            uplinks.append(Uplink(log, client, topics))
        yield uplinks


async def ingest(mq: Mosquitto, logs: list[GateLog]) -> tuple[float, int, int]:
    """Every gate's status, then its events until acked; (seconds, resends, timeouts)."""
    async with gate_clients(mq, logs, ack=True) as uplinks:
        for u in uplinks:
            status = Status(u.log.gate, "online", u.log.head, 0, 3, time.time_ns())
            await u.client.publish(u.topics.status, encode_status(status), qos=1, retain=True)
        t = time.perf_counter()
        await asyncio.gather(*(u.send_all() for u in uplinks))
        seconds = time.perf_counter() - t
    return seconds, sum(u.resends for u in uplinks), sum(u.timeouts for u in uplinks)


async def broker_baseline(mq: Mosquitto, logs: list[GateLog], sinks: int) -> float:
    """The same payloads from the same gates to ``sinks`` subscribers storing nothing."""
    expected = sum(len(log.batches) for log in logs)
    received = 0
    done = asyncio.Event()

    async def consume(client: aiomqtt.Client) -> None:
        nonlocal received
        async for _ in client.messages:
            received += 1
            if received == expected:
                done.set()

    async with contextlib.AsyncExitStack() as stack:
        consumers = []
        for i in range(sinks):
            sub = aiomqtt.Client(
                "127.0.0.1",
                mq.port,
                username="central",
                password=mq.users["central"],
                identifier=f"bench-baseline-{i}",
                max_inflight_messages=100,
            )
            await stack.enter_async_context(sub)
            await sub.subscribe(Topics.shared_events("bench-baseline"), qos=1)
            consumers.append(asyncio.create_task(consume(sub)))
        async with gate_clients(mq, logs, ack=False) as uplinks:
            sem_per_gate = MAX_INFLIGHT_BATCHES

            async def send(u: Uplink) -> None:
                sem = asyncio.Semaphore(sem_per_gate)

                async def one(payload: bytes) -> None:
                    async with sem:
                        await u.client.publish(u.topics.events, payload, qos=1)

                async with asyncio.TaskGroup() as tg:
                    for _, _, payload in u.log.batches:
                        await sem.acquire()
                        sem.release()
                        tg.create_task(one(payload))

            t = time.perf_counter()
            await asyncio.gather(*(send(u) for u in uplinks))
            await done.wait()
            seconds = time.perf_counter() - t
        for c in consumers:
            c.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
    return seconds


# ------------------------------------------------------------------------------ central


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the live processes ``pids`` have used so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """``pid`` and its child processes (PostgreSQL's backends)."""
    out = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def write_keys(keys: Path) -> None:
    """Central's key (allow-lists) and its park key (the park chain): ``NAME.key``/``.pub``."""
    keys.mkdir()
    for name in ("central", "park"):
        private, public = generate_keypair()
        (keys / f"{name}.key").write_bytes(private)
        (keys / f"{name}.key").chmod(0o600)
        (keys / f"{name}.pub").write_bytes(public)


def start_sinks(
    mq: Mosquitto, dsn: str, workdir: Path, count: int, *, park_key: Path | None
) -> list[tuple[subprocess.Popen[bytes], int]]:
    """``count`` ``edgegate central run`` on ``dsn``, each with its HTTP server (the first with
    the park API) and, given ``park_key``, the park chain (park-wide consumption on);
    (process, HTTP port) each."""
    tokens = workdir / "api-tokens"
    tokens.write_text(f"bench {API_TOKEN}\n")
    tokens.chmod(0o600)
    out = []
    for i in range(count):
        port = free_port()
        cmd = mq.central_run(dsn, f"bench-sink-{i}", "--http", f"127.0.0.1:{port}")
        if park_key is not None:
            cmd += ["--park-key", str(park_key)]
        if i == 0:
            cmd += ["--api-tokens", str(tokens)]
        log = (workdir / f"sink-{i}.log").open("wb")
        out.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), port))
    for proc, port in out:
        wait_ready(proc, port)
    return out


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float = 60.0) -> None:
    """Until the sink's ``/readyz`` says it is connected and subscribed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"central run exited with {proc.returncode} before it was ready")
        url = f"http://127.0.0.1:{port}/readyz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"central run on port {port} not ready in {timeout} s")


def stop_sinks(sinks: list[tuple[subprocess.Popen[bytes], int]]) -> None:
    """SIGTERM each process, then wait for it (SIGKILL after 30 s)."""
    for proc, _ in sinks:
        proc.send_signal(signal.SIGTERM)
    for proc, _ in sinks:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_store(dsn: str, logs: list[GateLog], inside: int) -> None:
    with contextlib.closing(open_store(dsn)) as store:
        heads = store.heads()
        wrong = [g.gate for g in logs if heads.get(g.gate, (0, b""))[0] != g.head]
        total = store.count()
        found = len(store.presence())
    if wrong or total != sum(g.head for g in logs) or found != inside:
        raise SystemExit(
            f"central holds {total} events (heads wrong for {wrong[:5]}), {found} vehicles"
            f" inside; expected {sum(g.head for g in logs)} events, {inside} inside"
        )


# ------------------------------------------------------------------------------ presence


def timed(fn: object, n: int) -> list[float]:
    assert callable(fn)
    fn()  # warm
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return sorted(out)


def presence_store(dsn: str, n: int) -> tuple[list[float], list[float]]:
    """Every vehicle inside; the first page of them (the park API's default page)."""
    with contextlib.closing(open_store(dsn)) as store:
        return timed(store.presence, n), timed(lambda: store.presence(limit=PAGE), n)


def presence_sql(dsn: str, n: int) -> list[float]:
    sql = (
        "SELECT plate, category, gate, seq, at_ns, lane, credential_id, permit_until_ns,"
        " unauthorised FROM park_vehicles WHERE inside = 1 ORDER BY CASE category WHEN"
        " 'hazmat' THEN 0 WHEN 'hazwaste' THEN 1 ELSE 2 END, at_ns, plate"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        return timed(lambda: conn.execute(sql).fetchall(), n)


async def presence_api(port: int, n: int, inside: int) -> list[float]:
    """The park API's first page of presence (and its count), until its body is read."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    url = f"http://127.0.0.1:{port}/api/v1/presence"
    out = []
    async with aiohttp.ClientSession(headers=headers) as http:
        for i in range(n + 1):
            t = time.perf_counter()
            async with http.get(url) as r:
                body = await r.read()
            if i:
                out.append((time.perf_counter() - t) * 1000)
            if r.status != 200 or json.loads(body)["count"] != min(PAGE, inside):
                raise SystemExit(f"GET /api/v1/presence: {r.status} {body[:500]!r}")
    return sorted(out)


# ------------------------------------------------------------------------------ the dashboard

LIVE_GATE = "gate-live"
VIEWER = "bench-viewer"
VIEWER_PASSWORD = secrets.token_urlsafe(18)  # a fresh one each run


def live_gate(passages: int) -> GateLog:
    """A gate that joins after the ingest: its start, list, mode and ``passages`` entries,
    one event per batch (a gate's live traffic)."""
    now = time.time_ns()
    ps = [
        Passage(now + i * MS, plate(700_000 + i), Direction.ENTRY, cat, f"APT-LIVE-{i:05d}")
        for i, cat in zip(range(passages), cycle(DANGEROUS), strict=False)
    ]
    return gate_log(LIVE_GATE, ps, 1, now)


def start_dashboard(dsn: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``edgegate central web`` on ``dsn`` with one viewer account, once it answers."""
    accounts = workdir / "dashboard-accounts"
    viewer = Account(VIEWER, DashboardRole.VIEWER, hash_password(VIEWER_PASSWORD))
    write_accounts(accounts, {VIEWER: viewer})
    port = free_port()
    cmd = [sys.executable, "-m", "edgegate", "central", "web", "--db", dsn]
    cmd += ["--accounts", str(accounts), "--port", str(port)]
    out = (workdir / "dashboard.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2).close()
            return proc, port
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"central web did not answer on port {port}: see {workdir}/dashboard.log")


async def next_positions(stream: aiohttp.StreamReader) -> dict[str, int]:
    """The positions of the next ``change`` event of a ``/live`` stream."""
    kind = ""
    async for raw in stream:
        line = raw.decode().rstrip("\n")
        if line.startswith("event:"):
            kind = line.partition(":")[2].strip()
        elif line.startswith("data:") and kind == "change":
            positions: dict[str, int] = json.loads(line.partition(":")[2])["positions"]
            return positions
    raise SystemExit("the dashboard's /live stream ended")


async def live_traffic(mq: Mosquitto, port: int, live: GateLog) -> list[float]:
    """Per batch of the live gate: from its publication (right after the gate's commit)
    until a logged-in ``/live`` stream says the pushed state reflects it, in ms."""
    base = f"http://127.0.0.1:{port}"
    jar = aiohttp.CookieJar(unsafe=True)  # keeps cookies of a server named by its IP
    out: list[float] = []
    async with aiohttp.ClientSession(base, cookie_jar=jar, headers={"Origin": base}) as http:
        form = {"account": VIEWER, "password": VIEWER_PASSWORD}
        async with http.post("/login", data=form, allow_redirects=False) as r:
            if r.status != 303:
                raise SystemExit(f"dashboard login refused: {r.status}")
        async with (
            http.get("/live", timeout=aiohttp.ClientTimeout(total=None)) as stream,
            gate_clients(mq, [live], ack=False) as (gate,),
        ):
            await next_positions(stream.content)
            for _, last, payload in live.batches:
                t = time.perf_counter()
                await gate.client.publish(gate.topics.events, payload, qos=1)
                async with asyncio.timeout(30):
                    while (await next_positions(stream.content)).get(LIVE_GATE, 0) < last:
                        pass
                out.append((time.perf_counter() - t) * 1000)
    return sorted(out)


# ------------------------------------------------------------------------ park-wide consumption

GATE_A = "gate-a"
GATE_B = "gate-b"


def consuming_gate(count: int) -> tuple[GateLog, list[Passage]]:
    """Gate A: ``count`` hazmat and hazwaste entries on appointments, a batch per passage
    (what its uplink sends when vehicles come one by one)."""
    now = time.time_ns()
    ps = [
        Passage(now + i * MS, plate(800_000 + i), Direction.ENTRY, cat, f"APT-A-{i:05d}")
        for i, cat in zip(range(count), cycle(DANGEROUS), strict=False)
    ]
    return gate_log(GATE_A, ps, PER_PASSAGE, now), ps


def consumed_in(batch: bytes) -> str | None:
    """The appointment a batch's entry (``vehicle.passed``) consumes, if any: central
    publishes the consumption when it stores the entry."""
    for row in decode_batch(batch).events:
        if row[4] == ev.VehiclePassed.TYPE:
            e = ev.decode(row[4], row[6], bytes(row[7]), row[5])
            assert isinstance(e, ev.VehiclePassed)
            if e.direction is Direction.ENTRY and e.category in DANGEROUS:
                return e.credential_id
    return None


def appointments_csv(path: Path, passages: list[Passage]) -> None:
    """Gate B's allow-list: an appointment for each of gate A's vehicles, valid now."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    window = f"{start.isoformat()},{(start + timedelta(hours=9)).isoformat()}"
    lines = [
        "type,id,plate,colour,category,window_start,window_end,"
        "destination,un_number,hazard_class,waybill"
    ]
    lines += [
        f"appointment,{p.credential},{p.plate},yellow,{p.category.value},{window},"
        f"Bench Chemical,1203,3,WB-{p.credential}"
        for p in passages
    ]
    path.write_text("\n".join(lines) + "\n")


class LogTail:
    """Gate B's log from the outside (a read-only reader): when each appointment's
    ``park.consumed`` was first seen committed, and the decisions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader: LogReader | None = None  # once the gate has created its log
        self.after = 0
        self.consumed: dict[str, float] = {}  # appointment -> perf_counter() when seen
        self.used_at: dict[str, str | None] = {}  # appointment -> the gate B says used it
        self.decisions: list[ev.AccessDecided] = []
        self.types: set[str] = set()

    def poll(self) -> None:
        if self.reader is None:
            if not self.path.exists():
                return
            try:
                self.reader = LogReader(self.path)
            except LogError:  # created, its schema not written yet
                return
        while batch := self.reader.read(after=self.after):
            now = time.perf_counter()
            for stored in batch:
                self.types.add(stored.type)
                e = stored.event()
                if isinstance(e, ev.ParkConsumed):
                    for apt in e.appointments:
                        self.consumed.setdefault(apt, now)
                        self.used_at[apt] = e.gate_of(apt)
                elif isinstance(e, ev.AccessDecided):
                    self.decisions.append(e)
            self.after = batch[-1].seq

    async def until(self, done: Callable[[], bool], what: str, within: float) -> None:
        """Polls every 2 ms (the figures' resolution) until ``done()``."""
        deadline = time.monotonic() + within
        while not done():
            if time.monotonic() > deadline:
                output = (self.path.parent / "daemon.log").read_text(errors="replace")
                raise SystemExit(f"gate B: no {what} in {within} s; its output:\n{output[-3000:]}")
            await asyncio.sleep(0.002)
            self.poll()

    async def consumed_at(self, appointment: str, within: float) -> float:
        """When ``appointment``'s ``park.consumed`` was seen (``perf_counter``)."""
        await self.until(
            lambda: appointment in self.consumed, f"park.consumed of {appointment}", within
        )
        return self.consumed[appointment]


def gate_b_config(mq: Mosquitto, lanes: list[SimLaneDevices], d: Path, keys: Path) -> Path:
    """A real gate, ``gate-b`` of the site: one entry lane on simulators, synced with central,
    pinning the central key (its allow-list) and the park key (the park chain)."""
    password = d / "gate-b.pass"
    password.write_text(mq.users[GATE_B])
    password.chmod(0o600)
    sync = [
        "[sync]",
        f'broker = "mqtt://127.0.0.1:{mq.port}"',
        f"password_file = {str(password)!r}",
        f"central_public_key = {str(keys / 'central.pub')!r}",
        f"park_public_key = {str(keys / 'park.pub')!r}",
        'reconnect_max = "1s"',
    ]
    text = gate_config_toml(lanes, d / "gate-b.db", gate_id=GATE_B, site=SITE)
    config = d / "gate-b.toml"
    config.write_text(text + "\n" + "\n".join(sync) + "\n")
    return config


async def publish_allowlist(mq: Mosquitto, dsn: str, keys: Path, csv: Path) -> None:
    """``edgegate central publish-allowlist`` of ``csv`` to gate B, as an operator does."""
    cmd = [sys.executable, "-m", "edgegate", "central", "publish-allowlist", str(csv)]
    cmd += ["--key", str(keys / "central.key"), "--site", SITE, "--gate", GATE_B]
    cmd += ["--db", dsn, "--operator", "bench", "--broker", f"mqtt://127.0.0.1:{mq.port}"]
    cmd += ["--password-file", str(mq.workdir / "central.pass")]
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, check=False)
    if done.returncode:
        raise SystemExit(f"publish-allowlist: exit {done.returncode}: {done.stderr.decode()}")


async def consumption_to_refusal(
    mq: Mosquitto, dsn: str, d: Path, keys: Path, count: int
) -> tuple[list[float], dict[str, object]]:
    """Gate A's entries on appointments, one at a time; per entry, from the publication of
    the batch holding it until gate B (a real ``edgegate run``) has committed the
    ``park.consumed`` naming its appointment, in s. The first (B catching up on the park
    chain of the ingest) is not counted. Then a read of the last vehicle at B: its decision
    (``refused``) must not admit it."""
    a, passages = consuming_gate(count + 1)
    csv = d / "gate-b-allowlist.csv"
    appointments_csv(csv, passages)
    lanes = await start_lanes(1, d, travel_time=0.3)
    proc = await start_daemon(gate_b_config(mq, lanes, d, keys), d)
    out: list[float] = []
    try:
        tail = LogTail(d / "gate-b.db")
        await tail.until(lambda: "daemon.started" in tail.types, "start", 60)
        await publish_allowlist(mq, dsn, keys, csv)
        await tail.until(lambda: "allowlist.updated" in tail.types, "allow-list", 60)
        async with gate_clients(mq, [a], ack=True) as (up,):
            acks = asyncio.create_task(up.read_acks())
            for _, last, payload in a.batches:
                apt = consumed_in(payload)
                t = time.perf_counter()
                await up.client.publish(up.topics.events, payload, qos=1)
                if apt is not None:
                    seen = await tail.consumed_at(apt, 30)
                    if apt != passages[0].credential:
                        out.append(seen - t)
                # The next batch only once this one is stored: two sinks share the gate's
                # batches and one ahead of its predecessor would be refused for a resend.
                async with asyncio.timeout(30):
                    while up.acked < last:
                        up.progress.clear()
                        await up.progress.wait()
            await acks
        elsewhere = {g for apt, g in tail.used_at.items() if g != GATE_A}
        if elsewhere:
            raise SystemExit(f"gate B's park.consumed name {elsewhere}, not {GATE_A}")
        refused = await read_at_b(lanes[0], tail, passages[-1].plate)
    finally:
        await stop_process(proc)
        await stop_lanes(lanes)
    return sorted(out), refused


async def read_at_b(lane: SimLaneDevices, tail: LogTail, plate_: str) -> dict[str, object]:
    """A vehicle whose appointment was consumed at A arrives at B: B's decision on its read."""
    lane.plc.set_loop(ev.Loop.ARMING, True)
    await asyncio.sleep(0.2)  # several PLC polls: the gate sees the vehicle before its read
    await lane.reader.send_read(plate_, PlateColour.YELLOW, 0.95)
    try:
        await tail.until(
            lambda: any(e.plate_read == plate_ for e in tail.decisions), "decision", 10
        )
    finally:
        lane.plc.set_loop(ev.Loop.ARMING, False)
    decided = next(e for e in tail.decisions if e.plate_read == plate_)
    refused: dict[str, object] = {
        "plate": plate_,
        "verdict": decided.verdict,
        "reasons": list(decided.reasons),
    }
    if decided.verdict == "allow" or "appointment-consumed" not in decided.reasons:
        raise SystemExit(f"gate B did not refuse the consumed appointment: {refused}")
    return refused


# ------------------------------------------------------------------------------ main


def ms(values: list[float], p: float) -> float:
    return round(percentile(values, p), 2)


def sec(values: list[float], p: float) -> float | None:
    return round(percentile(values, p), 3) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 gates, few events")
    parser.add_argument("--gates", type=int, default=200)
    parser.add_argument("--events-per-gate", type=int, default=5000)
    parser.add_argument("--inside", type=int, default=20_000, help="vehicles inside at the end")
    parser.add_argument("--batch", type=int, default=1000, help="events per MQTT batch")
    parser.add_argument("--sinks", type=int, default=2, help="central run instances")
    parser.add_argument(
        "--no-park-entry",
        action="store_true",
        help="sinks without --park-key (no park chain; consumption to refusal not measured)",
    )
    parser.add_argument(
        "--consumptions", type=int, default=200, help="gate A's entries timed until B refuses"
    )
    parser.add_argument("--queries", type=int, default=200, help="presence queries timed")
    parser.add_argument(
        "--live", type=int, default=40, help="the live gate's passages (dashboard updates)"
    )
    args = parser.parse_args()
    if args.quick:
        args.gates, args.events_per_gate, args.inside = 10, 500, 300
        args.queries, args.live, args.consumptions = 20, 2, 5
    if (
        min(args.gates, args.events_per_gate, args.batch, args.queries, args.sinks) < 1
        or min(args.inside, args.live, args.consumptions) < 0
    ):
        parser.error(
            "--gates, --events-per-gate, --batch, --queries, --sinks >= 1;"
            " --inside, --live, --consumptions >= 0"
        )

    configure_logging("warning", stream=sys.stderr)  # the simulators' pymodbus chatter
    t = time.perf_counter()
    logs = build_gates(args.gates, args.events_per_gate, args.inside, args.batch)
    inside = expected_inside(logs)
    build_s = time.perf_counter() - t
    events = sum(g.head for g in logs)
    live = live_gate(args.live)
    pg = Postgres()
    with tempfile.TemporaryDirectory(prefix="edgegate-park-") as tmp:
        d = Path(tmp)
        mq = Mosquitto(d, [g.gate for g in (*logs, live)] + [GATE_A, GATE_B], SITE)
        write_keys(d / "keys")
        park_key = None if args.no_park_entry else d / "keys" / "park.key"
        refusal_s: list[float] = []
        refused: dict[str, object] = {}
        pg.start()
        mq.start()
        sinks: list[tuple[subprocess.Popen[bytes], int]] = []
        dashboard: subprocess.Popen[bytes] | None = None
        try:
            with psycopg.connect(pg.dsn(), autocommit=True) as admin:
                admin.execute("CREATE DATABASE central")
            dsn = pg.dsn("central")
            open_store(dsn).close()  # migrated once, before the sinks race for it
            base_s = asyncio.run(broker_baseline(mq, logs, args.sinks))
            sinks = start_sinks(mq, dsn, d, args.sinks, park_key=park_key)
            procs = {
                "sinks": [p.pid for p, _ in sinks],
                "postgres": children(pg.pid()),
                "mosquitto": [mq.proc.pid] if mq.proc else [],
            }
            cpu_before = {k: cpu_s(v) for k, v in procs.items()}
            own_before = time.process_time()
            seconds, resends, timeouts = asyncio.run(ingest(mq, logs))
            cpu = {f"cpu_{k}_s": round(cpu_s(v) - cpu_before[k], 1) for k, v in procs.items()}
            cpu["cpu_gates_s"] = round(time.process_time() - own_before, 1)
            check_store(dsn, logs, inside)
            with psycopg.connect(dsn, autocommit=True) as conn:
                # What autovacuum would do after the ingest's million rows, done now rather
                # than beside the presence queries: they measure the store, not its cleanup.
                conn.execute("VACUUM ANALYZE")
            store_ms, page_ms = presence_store(dsn, args.queries)
            sql_ms = presence_sql(dsn, args.queries)
            api_ms = asyncio.run(presence_api(sinks[0][1], args.queries, inside))
            dashboard, dash_port = start_dashboard(dsn, d)
            dash_ms = asyncio.run(live_traffic(mq, dash_port, live))
            if park_key is not None and args.consumptions:
                refusal_s, refused = asyncio.run(
                    consumption_to_refusal(mq, dsn, d, d / "keys", args.consumptions)
                )
        finally:
            if dashboard is not None:
                stop_sinks([(dashboard, 0)])
            stop_sinks(sinks)
            mq.stop()
            pg.stop()
    result: dict[str, object] = {
        "gates": args.gates,
        "sinks": args.sinks,
        "events": events,
        "batch_events": args.batch,
        "build_s": round(build_s, 1),
        "ingest_s": round(seconds, 2),
        "ingest_eps": round(events / seconds),
        "baseline_broker_eps": round(events / base_s),
        "ratio": round(base_s / seconds, 3),
        "resend_requests": resends,
        "ack_timeouts": timeouts,
        **cpu,
        "inside": inside,
        "presence_query_p50_ms": ms(api_ms, 50),
        "presence_query_p99_ms": ms(api_ms, 99),
        "presence_page_p99_ms": ms(page_ms, 99),
        "presence_all_p50_ms": ms(store_ms, 50),
        "presence_all_p99_ms": ms(store_ms, 99),
        "baseline_presence_sql_p99_ms": ms(sql_ms, 99),
        "dashboard_updates": len(dash_ms),
        "dashboard_update_p50_ms": ms(dash_ms, 50),
        "dashboard_update_p99_ms": ms(dash_ms, 99),
        "dashboard_update_max_ms": ms(dash_ms, 100),
        "park_entry": not args.no_park_entry,
        "consumptions": len(refusal_s),
        "consumption_to_refusal_p50_s": sec(refusal_s, 50),
        "consumption_to_refusal_p99_s": sec(refusal_s, 99),
        "consumption_to_refusal_max_s": sec(refusal_s, 100),
        "refused_at_b": refused or None,
        "target_ingest_eps": 100_000,
        "target_presence_query_p99_ms": 50,
        "target_consumption_to_refusal_p99_s": 2,
        "target_dashboard_update_p99_ms": 1000,
    }
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for key, value in result.items():
            print(f"{key:>36}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
