"""Allow-list benchmark: load time, lookup latency, delta time and memory at park scale.

    python bench/allowlist.py [--json] [--entries N] [--seed S]

Generates N realistic credentials (default 1,000,000), writes them with ``store.write_snapshot``
into a temporary SQLite database (WAL, synchronous=FULL), then measures in a fresh
subprocess, so the generator's memory does not count:

- ``load_s``: ``store.load`` from a freshly opened connection;
- ``rss_mb``: peak RSS (VmHWM) of that process right after the load;
- ``exact_p99_us`` / ``fuzzy_p99_us``: per-call latency of ``exact`` / ``fuzzy`` (normalising
  and decoding included) over a mix of hits and misses;
- ``delta_10k_s``: ``write_delta`` of 10,000 upserts and removals in one transaction, its
  commit, and ``apply_delta`` in memory.

For information it also reports the snapshot's cost: ``snapshot_prepare_s``
(``store.prepare_snapshot``, outside any transaction) and ``snapshot_write_s`` (the
``write_snapshot`` transaction and its commit, which holds the database's write lock), and two
baselines measured in the same process, to tell a slow machine from slow code (the machines
are noisy: compare a figure with its baseline within a run):

- ``baseline_scan_s``: reading the same rows ``store.load`` reads, with the same query, doing
  nothing with them (``load_s`` is this plus building the index and checking the seal);
- ``baseline_get_p99_us``: the same timed loop as ``exact`` over the same reads, each a plain
  ``dict.get`` of the plate's UTF-8 bytes in a dict of every listed plate (the timer's and the
  memory's share of ``exact_p99_us``).

Targets: 1M entries in <= 400 MB RSS, load <= 5 s, exact p99 <= 50 us (a plate frame alone
takes about 30 ms on a 9,600-baud line), fuzzy p99 <= 1 ms, 10k delta <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgegate.allowlist import store
from edgegate.core.domain import (
    Appointment,
    BlacklistEntry,
    BlacklistReason,
    Credential,
    CredentialKind,
    HolderType,
    PlateColour,
    Registration,
    TemporaryPermit,
    VehicleCategory,
)
from edgegate.core.plates import PROVINCES, confusable_variants

TARGETS = {
    "load_s": 5.0,
    "rss_mb": 400.0,
    "exact_p99_us": 50.0,
    "fuzzy_p99_us": 1000.0,
    "delta_10k_s": 1.0,
}

#: Share of each kind among the credentials.
MIX = {
    CredentialKind.REGISTRATION: 0.80,
    CredentialKind.PERMIT: 0.10,
    CredentialKind.APPOINTMENT: 0.07,
    CredentialKind.BLACKLIST: 0.03,
}
ID_PREFIX = {
    CredentialKind.REGISTRATION: "REG",
    CredentialKind.PERMIT: "PMT",
    CredentialKind.APPOINTMENT: "APT",
    CredentialKind.BLACKLIST: "BLK",
}

_SERIAL = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
_DIGITS = "0123456789"
_CITIES = ["南京", "苏州", "连云港", "泰兴", "常州", "宁波", "上海", "惠州", "大连", "天津"]
_TRADES = ["石化", "化工", "新材料", "精细化工", "物流", "危险品运输", "环保科技", "气体"]
_SUFFIXES = ["有限公司", "股份有限公司", "集团有限公司"]
_DEPARTMENTS = ["园区管委会", "消防救援大队", "安监局", "园区保安部", "环境监测站"]
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英"
_FAMILY = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_PURPOSES = ["送货", "设备检修", "参观", "施工", "取样", ""]
_UN = [("1203", "3"), ("1005", "2.3"), ("1017", "2.3"), ("1830", "8"), ("1789", "8"),
       ("1075", "2.1"), ("1230", "3"), ("2814", "6.2"), ("1547", "6.1"), ("3077", "9")]  # fmt: skip
_GATES = ["G1", "G2", "G3", "G4", "G5"]
_PERMIT_CATEGORIES = (VehicleCategory.ORDINARY, VehicleCategory.ENGINEERING)
_TWO_YEARS = timedelta(days=730)
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class Counts:
    registration: int
    permit: int
    appointment: int
    blacklist: int

    def of(self, kind: CredentialKind) -> int:
        count: int = getattr(self, kind.value)
        return count


def _expand(weighted: dict[_V, int]) -> list[_V]:
    """A list in which picking uniformly follows the weights (fast weighted choice)."""
    return [value for value, weight in weighted.items() for _ in range(weight)]


class Generator:
    """Deterministic, realistic credentials for a park of the given size."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.rand = self.rng.random
        self.now = datetime(2026, 6, 1, tzinfo=UTC)
        self.days = {d: self.now + timedelta(days=d) for d in range(-900, 31)}
        self.orgs = [
            f"{c}{t}{s}" for c in _CITIES for t in _TRADES for s in _SUFFIXES
        ] + _DEPARTMENTS
        self.plates: list[str] = []
        self.provinces = ["苏"] * 55 + list(PROVINCES) * 2  # a Jiangsu park: mostly local
        self.reg_categories = _expand(
            {VehicleCategory.ORDINARY: 70, VehicleCategory.ENGINEERING: 12,
             VehicleCategory.HAZMAT: 12, VehicleCategory.HAZWASTE: 4,
             VehicleCategory.EMERGENCY: 2}
        )  # fmt: skip
        self.holders = _expand({HolderType.COMPANY: 60, HolderType.DEPARTMENT: 5,
                                HolderType.COMMUTER: 35})  # fmt: skip
        self.reasons = _expand(dict(zip(BlacklistReason, [30, 25, 15, 5, 15, 10], strict=True)))
        self.gate_sets: list[frozenset[str]] = [frozenset()] * 14 + [
            frozenset(self.rng.sample(_GATES, self.rng.randint(1, 3))) for _ in range(6)
        ]

    def pick(self, seq: Sequence[_V]) -> _V:
        return seq[int(self.rand() * len(seq))]

    def chars(self, alphabet: str, n: int) -> str:
        rand = self.rand
        size = len(alphabet)
        return "".join([alphabet[int(rand() * size)] for _ in range(n)])

    def plate(self) -> tuple[str, PlateColour]:
        head = self.pick(self.provinces) + self.pick("ABCDEFGHJKLMN")
        roll = self.rand()
        if roll < 0.12:
            return head + self.pick("DF") + self.chars(_DIGITS, 5), PlateColour.GREEN
        if roll < 0.14:
            return head + self.pick("DF") + self.chars(_DIGITS, 5), PlateColour.YELLOW_GREEN
        if roll < 0.18:
            return head + self.chars(_SERIAL, 4) + "挂", PlateColour.YELLOW  # trailers
        if roll < 0.30:
            return head + self.chars(_SERIAL, 5), PlateColour.YELLOW
        return head + self.chars(_SERIAL, 2) + self.chars(_DIGITS, 3), PlateColour.BLUE

    def new_plate(self) -> tuple[str, PlateColour]:
        plate, colour = self.plate()
        self.plates.append(plate)
        return plate, colour

    def known_or_new(self, share_known: float) -> tuple[str, PlateColour]:
        if self.plates and self.rand() < share_known:
            return self.pick(self.plates), PlateColour.UNKNOWN
        return self.new_plate()

    def person(self) -> str:
        return self.pick(_FAMILY) + self.chars(_GIVEN, 2)

    def day(self, back: int, ahead: int) -> datetime:
        return self.days[int(self.rand() * (back + ahead + 1)) - back]

    def credential(self, kind: CredentialKind, index: int) -> Credential:
        id_ = f"{ID_PREFIX[kind]}-{index:08d}"
        if kind is CredentialKind.REGISTRATION:
            plate, colour = self.new_plate()
            start = self.day(900, 0)
            return Registration(
                id=id_,
                plate=plate,
                colour=colour,
                category=self.pick(self.reg_categories),
                holder=self.pick(self.holders),
                organisation=self.pick(self.orgs),
                valid_from=start,
                valid_until=None if self.rand() < 0.3 else start + _TWO_YEARS,
                gates=self.pick(self.gate_sets),
            )
        if kind is CredentialKind.PERMIT:
            plate, colour = self.known_or_new(0.05)
            start = self.day(10, 30)
            return TemporaryPermit(
                id=id_,
                plate=plate,
                colour=colour,
                category=self.pick(_PERMIT_CATEGORIES),
                visitor=self.person(),
                host=self.pick(self.orgs),
                purpose=self.pick(_PURPOSES),
                valid_from=start,
                valid_until=start + timedelta(days=1 + int(self.rand() * 14)),
                gates=self.pick(self.gate_sets),
            )
        if kind is CredentialKind.APPOINTMENT:
            plate, colour = self.known_or_new(0.5)
            start = self.day(3, 14) + timedelta(hours=int(self.rand() * 12))
            un_number, hazard_class = self.pick(_UN)
            return Appointment(
                id=id_,
                plate=plate,
                colour=PlateColour.YELLOW if colour is PlateColour.UNKNOWN else colour,
                category=VehicleCategory.HAZMAT if self.rand() < 0.8 else VehicleCategory.HAZWASTE,
                window_start=start,
                window_end=start + timedelta(hours=self.pick((8, 12, 24))),
                destination=self.pick(self.orgs),
                un_number=un_number,
                hazard_class=hazard_class,
                waybill=f"WB{int(self.rand() * 10**13):013d}",
                gates=self.pick(self.gate_sets[14:]),
                consumed=self.rand() < 0.1,
            )
        plate, _ = self.known_or_new(0.3)
        start = self.day(400, 0)
        return BlacklistEntry(
            id=id_,
            plate=plate,
            reason=self.pick(self.reasons),
            detail=self.pick(("", "多次超速", "未按规定路线行驶", "伪造通行证")),
            source=self.pick(("park-security", "traffic-police", "central")),
            valid_from=start,
            valid_until=None if self.rand() < 0.4 else start + timedelta(days=180),
        )


def counts_for(entries: int) -> Counts:
    n = {kind: int(entries * share) for kind, share in MIX.items()}
    n[CredentialKind.REGISTRATION] += entries - sum(n.values())
    return Counts(*(n[kind] for kind in CredentialKind))


def generate(gen: Generator, counts: Counts) -> list[Credential]:
    entries: list[Credential] = []
    for kind in CredentialKind:
        entries.extend(gen.credential(kind, i) for i in range(counts.of(kind)))
    return entries


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def build_db(path: Path, entries: int, seed: int) -> dict[str, float]:
    """Write the generated snapshot; return how long preparing and writing it took."""
    counts = counts_for(entries)
    credentials = generate(Generator(seed), counts)
    conn = connect(path)
    store.create_tables(conn)
    conn.commit()
    t0 = time.perf_counter()
    prepared = store.prepare_snapshot(credentials)
    t1 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    store.write_snapshot(conn, prepared, 1, datetime.now(UTC), "bench")
    conn.commit()
    t2 = time.perf_counter()
    conn.close()
    return {"snapshot_prepare_s": round(t1 - t0, 3), "snapshot_write_s": round(t2 - t1, 3)}


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def p(values: list[int], q: float) -> float:
    values.sort()
    return values[min(len(values) - 1, int(len(values) * q))] / 1000


def sample_plates(
    conn: sqlite3.Connection, counts: Counts, rng: random.Random, n: int
) -> list[str]:
    plates: list[str] = []
    kinds = list(CredentialKind)
    weights = [counts.of(k) for k in kinds]
    for kind in rng.choices(kinds, weights=weights, k=n):
        id_ = f"{ID_PREFIX[kind]}-{rng.randrange(counts.of(kind)):08d}"
        row = conn.execute(
            "SELECT plate FROM allowlist_entry WHERE kind = ? AND id = ?", (kind.value, id_)
        ).fetchone()
        plates.append(row[0])
    return plates


def measure(path: Path, entries: int, seed: int) -> dict[str, float]:
    """Runs in a fresh process: everything after building the database."""
    counts = counts_for(entries)
    conn = connect(path)
    t0 = time.perf_counter()
    allowlist = store.load(conn)
    load_s = time.perf_counter() - t0
    rss_mb = peak_rss_mb()
    assert len(allowlist) == entries, (len(allowlist), entries)

    t0 = time.perf_counter()
    scanned = sum(1 for _ in conn.execute(store._LOAD_SQL))
    baseline_scan_s = time.perf_counter() - t0
    assert scanned == entries, (scanned, entries)

    rng = random.Random(seed + 1)
    gen = Generator(seed + 2)
    hits = sample_plates(conn, counts, rng, 60_000)
    misses = [gen.plate()[0] for _ in range(60_000)]
    reads = hits + misses
    rng.shuffle(reads)
    exact_ns: list[int] = []
    clock = time.perf_counter_ns
    found = 0
    for plate in reads:
        t = clock()
        result = allowlist.exact(plate)
        exact_ns.append(clock() - t)
        found += not result.empty
    assert found >= len(hits)

    listed = {
        plate: b"" for (plate,) in conn.execute("SELECT CAST(plate AS BLOB) FROM allowlist_entry")
    }
    get_ns: list[int] = []
    for plate in reads:
        t = clock()
        listed.get(plate.encode())
        get_ns.append(clock() - t)
    del listed

    # Fuzzy reads: a listed plate with one confusable character misread, or a random plate.
    fuzzy_reads = []
    for plate in hits[:10_000]:
        variants = list(confusable_variants(plate))
        fuzzy_reads.append(rng.choice(variants)[0] if variants else plate)
    fuzzy_reads += misses[:10_000]
    rng.shuffle(fuzzy_reads)
    fuzzy_ns: list[int] = []
    for plate in fuzzy_reads:
        t = clock()
        allowlist.fuzzy(plate)
        fuzzy_ns.append(clock() - t)

    upserts: list[Credential] = [
        gen.credential(CredentialKind.REGISTRATION, counts.registration + i) for i in range(4_000)
    ]
    for kind, n in ((CredentialKind.PERMIT, 2_000), (CredentialKind.APPOINTMENT, 1_000)):
        upserts += [gen.credential(kind, i) for i in rng.sample(range(counts.of(kind)), n)]
    removals = [
        (CredentialKind.REGISTRATION, f"REG-{i:08d}")
        for i in rng.sample(range(counts.registration), 3_000)
    ]
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    store.write_delta(conn, upserts, removals, 2, datetime.now(UTC), "bench")
    t1 = time.perf_counter()
    conn.commit()
    t2 = time.perf_counter()
    allowlist.apply_delta(upserts, removals, 2, datetime.now(UTC))
    t3 = time.perf_counter()
    assert len(allowlist) == entries + 4_000 - 3_000
    conn.close()

    return {
        "entries": entries,
        "load_s": round(load_s, 3),
        "baseline_scan_s": round(baseline_scan_s, 3),
        "rss_mb": round(rss_mb, 1),
        "exact_p50_us": p(exact_ns, 0.50),
        "exact_p99_us": p(exact_ns, 0.99),
        "exact_lookups": len(exact_ns),
        "baseline_get_p99_us": p(get_ns, 0.99),
        "fuzzy_p50_us": p(fuzzy_ns, 0.50),
        "fuzzy_p99_us": p(fuzzy_ns, 0.99),
        "fuzzy_lookups": len(fuzzy_ns),
        "delta_10k_s": round(t3 - t0, 3),
        "delta_write_s": round(t1 - t0, 3),
        "delta_commit_s": round(t2 - t1, 3),
        "delta_apply_s": round(t3 - t2, 3),
        "db_mb": round(path.stat().st_size / 2**20, 1),
    }


def report(result: dict[str, Any]) -> str:
    lines = [f"allow-list benchmark, {result['entries']:,} entries"]
    for key, value in result.items():
        if key in ("entries", "ok"):
            continue
        target = TARGETS.get(key)
        if target is None:
            shown = f"{value:>12,}" if isinstance(value, int) else f"{value:>12,.3f}"
            lines.append(f"  {key:<20} {shown}")
        else:
            verdict = "ok" if value <= target else "OVER"
            lines.append(f"  {key:<20} {value:>12,.3f}   target <= {target:<8g} {verdict}")
    lines.append("all targets met" if result["ok"] else "SOME TARGETS MISSED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.entries, args.seed)))
        return 0

    with tempfile.TemporaryDirectory(prefix="edgegate-bench-") as tmp:
        path = Path(tmp) / "allowlist.db"
        t0 = time.perf_counter()
        build = build_db(path, args.entries, args.seed)
        build["build_s"] = round(time.perf_counter() - t0, 3)
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(path), "--entries", str(args.entries),
             "--seed", str(args.seed)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    result: dict[str, Any] = json.loads(child.stdout) | build
    result["ok"] = all(result[key] <= target for key, target in TARGETS.items())
    print(json.dumps(result) if args.json else report(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
