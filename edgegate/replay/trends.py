"""What settles only at the end of a log, from small per-event records the incidents pass
keeps: arm travel times per lane and day (slow arms, and the trend an arm getting slower
shows), and plates not read per reader and hour."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

from edgegate.replay.findings import CAP, AddFinding, Limits


def _day(wall_ns: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(wall_ns / 1e9, tz).date().isoformat()


def travel_findings(
    by_lane: dict[tuple[str, str], list[tuple[int, int, int, int]]],
    tz: ZoneInfo,
    limits: Limits,
    add: AddFinding,
) -> None:
    """Slow arms and each lane's arm travel trend, from ``by_lane``: per (lane, direction),
    (wall_ns, travel ms, command seq, limit switch seq) of each travel; days in ``tz``."""
    limit = limits.slow_travel_ms
    for (lane, way), travels in sorted(by_lane.items()):
        by_day: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
        for t in travels:
            by_day[_day(t[0], tz)].append(t)
        medians: list[tuple[str, float]] = []
        proof: list[int] = []
        for day, items in sorted(by_day.items()):
            ms = [t[1] for t in items]
            medians.append((day, float(statistics.median(ms))))
            mid = sorted(items, key=lambda t: t[1])[len(items) // 2]
            proof += [mid[2], mid[3]]
            slow = [t for t in items if t[1] > limit]
            if slow:
                worst = max(slow, key=lambda t: t[1])
                seqs = [s for t in slow[: CAP // 2] for s in (t[2], t[3])]
                add(
                    "slow-arm",
                    "warning",
                    lane,
                    slow[0][0],
                    seqs,
                    f"the arm took more than {limit} ms to {way} {len(slow)} times on "
                    f"{day} (worst {worst[1]} ms, seqs {worst[2]}→{worst[3]})",
                    direction=way,
                    day=day,
                    count=len(slow),
                    worst_ms=worst[1],
                    median_ms=statistics.median(ms),
                )
        slope = _slope(medians)
        worse = slope is not None and len(medians) >= 3 and slope >= limits.trend_ms_per_day
        trend = (
            "one day only, no trend"
            if slope is None
            else f"{'slower' if slope > 0 else 'faster'} by {abs(slope):.0f} ms a day"
        )
        add(
            "arm-travel",
            "warning" if worse else "info",
            lane,
            travels[0][0],
            proof[:CAP],
            f"{way}: median {medians[-1][1]:.0f} ms on {medians[-1][0]} over "
            f"{len(travels)} travels, {trend}" + ("; the arm needs maintenance" if worse else ""),
            direction=way,
            travels=len(travels),
            daily_median_ms=[{"day": day, "median_ms": m} for day, m in medians],
            slope_ms_per_day=None if slope is None else round(slope, 2),
        )


def not_read_findings(
    not_read: list[tuple[str | None, int, int]],
    readers: dict[str, str],
    tz: ZoneInfo,
    limits: Limits,
    add: AddFinding,
) -> None:
    """Plates not read per reader and hour (in ``tz``), from ``not_read``: (lane, wall_ns, seq)
    of each vehicle that waited with no plate; ``readers``: each lane's reader."""
    groups: dict[tuple[str | None, str], list[tuple[int, int]]] = defaultdict(list)
    for lane, wall_ns, seq in not_read:
        start = datetime.fromtimestamp(wall_ns / 1e9, tz)
        groups[(lane, start.replace(minute=0, second=0, microsecond=0).isoformat())].append(
            (wall_ns, seq)
        )
    for (lane, hour), items in groups.items():
        reader = readers.get(lane or "", f"lane {lane}'s reader")
        n = len(items)
        add(
            "plates-not-read",
            "warning" if n >= limits.not_read_warning else "notice",
            lane,
            items[0][0],
            [seq for _, seq in items[:CAP]],
            f"{n} vehicle{'s' if n > 1 else ''} waited with no plate read by {reader} "
            f"in the hour from {hour}",
            reader=reader,
            hour=hour,
            count=n,
        )


def _slope(points: list[tuple[str, float]]) -> float | None:
    """Least-squares slope of daily medians in ms a day (days counted from the first)."""
    if len(points) < 2:
        return None
    first = datetime.fromisoformat(points[0][0])
    xs = [(datetime.fromisoformat(day) - first).days for day, _ in points]
    ys = [m for _, m in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
