"""``edgegate replay timeline``: a source's vehicle cycles and the events between them, narrowed
by time, lane, type and plate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from edgegate.replay.cycles import Cycle, Item, Note, group, match_plate
from edgegate.replay.source import EventFilter, PlateQuery, Progress, Source, plates_of

# Read this far beyond --from/--to so that a cycle crossing a bound is whole (a cycle is
# shown when it starts within the range).
MARGIN = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class TimelineQuery:
    """Cycles starting in ``[start, end)``, on ``lanes``, with an event of ``types``, with a
    plate matching ``plate``; notes likewise (gate-wide notes are kept with ``lanes``)."""

    start: datetime | None = None
    end: datetime | None = None
    lanes: frozenset[str] | None = None
    types: frozenset[str] | None = None
    plate: PlateQuery | None = None

    def _in_time(self, when: datetime) -> bool:
        return (self.start is None or when >= self.start) and (self.end is None or when < self.end)

    def keep(self, item: Item, tz: ZoneInfo) -> bool:
        if isinstance(item, Cycle):
            if not self._in_time(item.start.time(tz)):
                return False
            if self.lanes is not None and item.lane not in self.lanes:
                return False
            if self.types is not None and not any(s.type in self.types for s in item.steps):
                return False
            if self.plate is not None:
                item.plate_match = match_plate(item, self.plate)
                return item.plate_match is not None
            return True
        step = item.step
        if not self._in_time(step.time(tz)):
            return False
        if self.lanes is not None and step.lane is not None and step.lane not in self.lanes:
            return False
        if self.types is not None and step.type not in self.types:
            return False
        if self.plate is not None:
            plates = plates_of(step.event) if step.event is not None else []
            return any(self.plate.match(p) for p in plates)
        return True


def timeline(
    source: Source, query: TimelineQuery, tz: ZoneInfo, *, progress: Progress | None = None
) -> Iterator[Item]:
    """The items ``query`` keeps, in log order. Only the time range (with ``MARGIN``) and the
    lanes narrow what is read; cycles are grouped from whole lanes."""
    rows = EventFilter(
        start=None if query.start is None else query.start - MARGIN,
        end=None if query.end is None else query.end + MARGIN,
    )
    events = source.events(rows, progress=progress)
    if query.lanes is not None:
        lanes = query.lanes
        events = (e for e in events if e.lane is None or e.lane in lanes)
    for item in group(events):
        if query.keep(item, tz):
            yield item


def to_json(gate: str, tz: ZoneInfo, items: list[Item]) -> dict[str, Any]:
    """``{"gate", "timezone", "cycles": n, "items": [Cycle.to_json | Note.to_json, ...]}``."""
    return {
        "gate": gate,
        "timezone": tz.key,
        "cycles": sum(isinstance(i, Cycle) for i in items),
        "items": [i.to_json(tz) for i in items],
    }


__all__ = ["MARGIN", "Cycle", "Item", "Note", "TimelineQuery", "timeline", "to_json"]
