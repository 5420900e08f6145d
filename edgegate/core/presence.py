"""Who is inside the park: entries and exits paired per plate, and overstays. Pure.

The projection is fed from the event log in log order; times are parameters, never read.
Plates are the normalised plates the decisions matched (``Decision.matched_plate``).

Pairing rules: an exit closes the plate's open stay; an exit with no open stay is an
*unpaired exit* (the vehicle came in before the log began, through a manual opening, or its
entry read failed) — counted and reported by returning ``None``, never an error. A second
entry while a stay is open means the exit was missed: the new stay replaces the old one,
which ``enter`` returns so the caller can log the missed exit.

A vehicle overstays when ``now`` is strictly past the earlier of its permit end and its entry
plus the category's dwell limit; at the deadline instant it has not yet overstayed. When both
limits fall at the same instant the permit end is reported.

Time inside is measured on the monotonic clock when the entry and ``now`` are of one boot
(``MonoInstant``), so a wall-clock step neither creates nor hides a dwell-limit overstay: the
entry is placed at ``now`` minus the monotonic time elapsed. Across a reboot (or with no
monotonic instant) the wall clock is all there is. A permit end is a calendar instant and is
compared with the wall clock as it reads (docs/design.md §3).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from edgegate.core.domain import VehicleCategory
from edgegate.core.policy import CredentialRef

StayKey = tuple[str, int]
"""Identifies a stay: (plate, seq of its entry event)."""

MonoInstant = tuple[str, int]
"""(boot id, monotonic ns): an instant monotonic times of the same boot can be measured from."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stay:
    """One vehicle's time inside, from an entry to its exit (open while ``left_at`` is None)."""

    plate: str
    category: VehicleCategory | None  # None: an unknown vehicle a guard let in
    entered_at: datetime
    entry_seq: int
    credential: CredentialRef | None = None
    permit_until: datetime | None = None  # end of the credential that admitted it, if any
    left_at: datetime | None = None
    exit_seq: int | None = None
    entered_mono: MonoInstant | None = None  # None: unknown (measured on the wall clock)

    @property
    def key(self) -> StayKey:
        return (self.plate, self.entry_seq)


class OverstayLimit(enum.StrEnum):
    PERMIT_END = "permit-end"
    DWELL_LIMIT = "dwell-limit"


@dataclass(frozen=True, slots=True, kw_only=True)
class Overstay:
    """A vehicle still inside past a limit: which limit, when it fell, and by how much."""

    stay: Stay
    limit: OverstayLimit
    deadline: datetime
    exceeded_by: timedelta

    @property
    def key(self) -> StayKey:
        return self.stay.key


class Presence:
    """The vehicles inside the park, one open stay per plate."""

    def __init__(self) -> None:
        self._stays: dict[str, Stay] = {}
        self._reported: set[StayKey] = set()
        self.unpaired_exits = 0
        self.missed_exits = 0

    def enter(
        self,
        plate: str,
        category: VehicleCategory | None,
        at: datetime,
        credential: CredentialRef | None,
        permit_until: datetime | None,
        seq: int,
        mono: MonoInstant | None = None,
    ) -> Stay | None:
        """Open a stay (``mono``: the entry's monotonic instant). Returns the stay it replaces
        (a missed exit), if there was one."""
        previous = self._stays.get(plate)
        if previous is not None:
            self.missed_exits += 1
            self._reported.discard(previous.key)
        self._stays[plate] = Stay(
            plate=plate,
            category=category,
            entered_at=at,
            entry_seq=seq,
            credential=credential,
            permit_until=permit_until,
            entered_mono=mono,
        )
        return previous

    def leave(self, plate: str, at: datetime, seq: int) -> Stay | None:
        """Close the plate's stay and return it; ``None`` for an unpaired exit."""
        stay = self._stays.pop(plate, None)
        if stay is None:
            self.unpaired_exits += 1
            return None
        self._reported.discard(stay.key)
        return replace(stay, left_at=at, exit_seq=seq)

    def get(self, plate: str) -> Stay | None:
        return self._stays.get(plate)

    def inside(self) -> list[Stay]:
        """Open stays, earliest entry first."""
        return sorted(self._stays.values(), key=lambda s: (s.entered_at, s.entry_seq))

    def __len__(self) -> int:
        return len(self._stays)

    def __contains__(self, plate: object) -> bool:
        return plate in self._stays

    def __iter__(self) -> Iterator[Stay]:
        return iter(self.inside())

    def mark_reported(self, overstay: Overstay | StayKey) -> None:
        """Remember an overstay as reported; ``overstays`` leaves it out until the stay ends."""
        key = overstay.key if isinstance(overstay, Overstay) else overstay
        if key[0] in self._stays and self._stays[key[0]].key == key:
            self._reported.add(key)

    @property
    def reported(self) -> frozenset[StayKey]:
        return frozenset(self._reported)

    def overstays(
        self,
        now: datetime,
        dwell_limits: Mapping[VehicleCategory, timedelta | None],
        *,
        mono: MonoInstant | None = None,
    ) -> list[Overstay]:
        """Overstays not yet marked reported (``mono``: ``now``'s monotonic instant)."""
        return overstays(self, now, dwell_limits, mono=mono)


def entered_as_of(stay: Stay, now: datetime, mono: MonoInstant | None) -> datetime:
    """The entry on ``now``'s wall clock: ``now`` minus the monotonic time elapsed when both
    are of one boot, else the entry's recorded wall time."""
    entered = stay.entered_mono
    if mono is None or entered is None or entered[0] != mono[0]:
        return stay.entered_at
    return now - timedelta(microseconds=(mono[1] - entered[1]) // 1000)


def _deadline(
    stay: Stay,
    dwell_limits: Mapping[VehicleCategory, timedelta | None],
    now: datetime,
    mono: MonoInstant | None,
) -> tuple[datetime, OverstayLimit] | None:
    limits: list[tuple[datetime, OverstayLimit]] = []
    if stay.permit_until is not None:
        limits.append((stay.permit_until, OverstayLimit.PERMIT_END))
    dwell = None if stay.category is None else dwell_limits.get(stay.category)
    if dwell is not None:
        limits.append((entered_as_of(stay, now, mono) + dwell, OverstayLimit.DWELL_LIMIT))
    # min() keeps the first of equal deadlines: the permit end.
    return min(limits, key=lambda limit: limit[0], default=None)


def overstays(
    stays: Presence | Iterable[Stay],
    now: datetime,
    dwell_limits: Mapping[VehicleCategory, timedelta | None],
    reported: Collection[StayKey] = frozenset(),
    *,
    mono: MonoInstant | None = None,
) -> list[Overstay]:
    """Open stays past their deadline at ``now``, longest overdue first. ``mono``: ``now``'s
    monotonic instant, by which time inside is measured for stays of the same boot.

    Stays whose key is in ``reported`` (or marked reported on the ``Presence``) are left out,
    so each overstay is reported once per stay. Closed stays are ignored. A dwell-limit
    deadline is on ``now``'s wall clock (see ``entered_as_of``).
    """
    skip: Collection[StayKey] = reported
    if isinstance(stays, Presence):
        skip = stays.reported | frozenset(reported)
        stays = stays.inside()
    found: list[Overstay] = []
    for stay in stays:
        if stay.left_at is not None or stay.key in skip:
            continue
        limit = _deadline(stay, dwell_limits, now, mono)
        if limit is None:
            continue
        deadline, kind = limit
        if now > deadline:
            found.append(
                Overstay(stay=stay, limit=kind, deadline=deadline, exceeded_by=now - deadline)
            )
    found.sort(key=lambda o: (-o.exceeded_by, o.stay.plate))
    return found
