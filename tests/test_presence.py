"""Tests of the presence projection and overstay detection (edgegate.core.presence)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from edgegate.core.domain import CredentialKind, VehicleCategory
from edgegate.core.policy import CredentialRef
from edgegate.core.presence import Overstay, OverstayLimit, Presence, Stay, overstays
from edgegate.core.rules import DEFAULT_DWELL_LIMITS

C = VehicleCategory
T0 = datetime(2024, 6, 1, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)
S = timedelta(seconds=1)
LIMITS: Mapping[VehicleCategory, timedelta | None] = DEFAULT_DWELL_LIMITS  # hazmat 6 h
APPT = CredentialRef(CredentialKind.APPOINTMENT, "A1")


def test_entry_then_exit_pairs() -> None:
    p = Presence()
    assert p.enter("粤A12345", C.HAZMAT, T0, APPT, None, 10) is None
    assert "粤A12345" in p
    assert len(p) == 1

    stay = p.leave("粤A12345", T0 + 2 * H, 17)

    assert stay == Stay(
        plate="粤A12345",
        category=C.HAZMAT,
        entered_at=T0,
        entry_seq=10,
        credential=APPT,
        permit_until=None,
        left_at=T0 + 2 * H,
        exit_seq=17,
    )
    assert "粤A12345" not in p
    assert len(p) == 0
    assert p.unpaired_exits == 0


def test_pairing_is_per_plate() -> None:
    p = Presence()
    p.enter("粤A11111", C.ORDINARY, T0, None, None, 1)
    p.enter("粤A22222", C.ORDINARY, T0 + S, None, None, 2)
    left = p.leave("粤A22222", T0 + H, 3)
    assert left is not None
    assert left.entry_seq == 2
    assert [s.plate for s in p.inside()] == ["粤A11111"]


def test_unpaired_exit_is_recorded_not_raised() -> None:
    p = Presence()
    p.enter("粤A11111", C.ORDINARY, T0, None, None, 1)
    assert p.leave("粤B99999", T0 + H, 2) is None
    assert p.unpaired_exits == 1
    assert len(p) == 1
    # The second exit of the same vehicle is unpaired too.
    assert p.leave("粤A11111", T0 + 2 * H, 3) is not None
    assert p.leave("粤A11111", T0 + 3 * H, 4) is None
    assert p.unpaired_exits == 2


def test_second_entry_replaces_the_stay_and_reports_a_missed_exit() -> None:
    p = Presence()
    p.enter("粤A11111", C.HAZMAT, T0, APPT, None, 1)
    missed = p.enter("粤A11111", C.ENGINEERING, T0 + 5 * H, None, None, 9)
    assert missed is not None
    assert (missed.entry_seq, missed.category, missed.left_at) == (1, C.HAZMAT, None)
    assert p.missed_exits == 1
    assert len(p) == 1
    current = p.get("粤A11111")
    assert current is not None
    assert (current.entry_seq, current.category) == (9, C.ENGINEERING)


def test_inside_lists_earliest_entry_first() -> None:
    p = Presence()
    p.enter("粤A33333", C.ORDINARY, T0 + 2 * H, None, None, 3)
    p.enter("粤A11111", C.ORDINARY, T0, None, None, 1)
    p.enter("粤A22222", C.ORDINARY, T0 + H, None, None, 2)
    assert [s.plate for s in p.inside()] == ["粤A11111", "粤A22222", "粤A33333"]
    assert [s.plate for s in p] == ["粤A11111", "粤A22222", "粤A33333"]


def _stay(
    category: VehicleCategory | None,
    permit_until: datetime | None = None,
    *,
    plate: str = "粤A12345",
    seq: int = 1,
) -> Stay:
    return Stay(
        plate=plate, category=category, entered_at=T0, entry_seq=seq, permit_until=permit_until
    )


# (category, permit end, now, expected limit or None, exceeded by)
OVERSTAY_TABLE = [
    ("hazmat-within-dwell", C.HAZMAT, None, T0 + 6 * H - S, None, None),
    ("hazmat-at-dwell-limit", C.HAZMAT, None, T0 + 6 * H, None, None),
    ("hazmat-past-dwell-limit", C.HAZMAT, None, T0 + 6 * H + S, OverstayLimit.DWELL_LIMIT, S),
    ("hazwaste-past-dwell-limit", C.HAZWASTE, None, T0 + 8 * H, OverstayLimit.DWELL_LIMIT,
     2 * H),
    ("engineering-12h", C.ENGINEERING, None, T0 + 13 * H, OverstayLimit.DWELL_LIMIT, H),
    ("engineering-within-12h", C.ENGINEERING, None, T0 + 11 * H, None, None),
    ("ordinary-no-limit", C.ORDINARY, None, T0 + 1000 * H, None, None),
    ("emergency-no-limit", C.EMERGENCY, None, T0 + 1000 * H, None, None),
    ("unknown-category-no-limit", None, None, T0 + 1000 * H, None, None),
    ("ordinary-past-permit", C.ORDINARY, T0 + 4 * H, T0 + 5 * H, OverstayLimit.PERMIT_END, H),
    ("ordinary-at-permit-end", C.ORDINARY, T0 + 4 * H, T0 + 4 * H, None, None),
    ("unknown-category-past-permit", None, T0 + H, T0 + 2 * H, OverstayLimit.PERMIT_END, H),
    ("permit-earlier-than-dwell", C.HAZMAT, T0 + 2 * H, T0 + 3 * H,
     OverstayLimit.PERMIT_END, H),
    ("dwell-earlier-than-permit", C.HAZMAT, T0 + 24 * H, T0 + 7 * H,
     OverstayLimit.DWELL_LIMIT, H),
    ("both-at-once-reports-permit", C.HAZMAT, T0 + 6 * H, T0 + 6 * H + S,
     OverstayLimit.PERMIT_END, S),
    ("permit-past-before-dwell-even-later", C.HAZMAT, T0 + 2 * H, T0 + 10 * H,
     OverstayLimit.PERMIT_END, 8 * H),
]  # fmt: skip


@pytest.mark.parametrize(
    ("category", "permit_until", "now", "limit", "exceeded_by"),
    [pytest.param(*row[1:], id=str(row[0])) for row in OVERSTAY_TABLE],
)
def test_overstay_limits(
    category: VehicleCategory | None,
    permit_until: datetime | None,
    now: datetime,
    limit: OverstayLimit | None,
    exceeded_by: timedelta | None,
) -> None:
    found = overstays([_stay(category, permit_until)], now, LIMITS)
    if limit is None:
        assert found == []
    else:
        (o,) = found
        assert o.limit is limit
        assert o.exceeded_by == exceeded_by
        assert o.deadline == now - exceeded_by


def test_custom_dwell_limits_and_missing_category() -> None:
    limits = {C.ORDINARY: 2 * H}  # other categories absent: no limit
    stays = [_stay(C.ORDINARY, plate="粤A11111"), _stay(C.HAZMAT, plate="粤A22222", seq=2)]
    found = overstays(stays, T0 + 3 * H, limits)
    assert [(o.stay.plate, o.limit, o.exceeded_by) for o in found] == [
        ("粤A11111", OverstayLimit.DWELL_LIMIT, H)
    ]


def test_closed_stays_never_overstay() -> None:
    closed = Stay(plate="粤A12345", category=C.HAZMAT, entered_at=T0, entry_seq=1, left_at=T0)
    assert overstays([closed], T0 + 100 * H, LIMITS) == []


def test_overstays_longest_overdue_first() -> None:
    p = Presence()
    p.enter("粤A11111", C.HAZMAT, T0 + H, None, None, 1)
    p.enter("粤A22222", C.HAZMAT, T0, None, None, 2)
    p.enter("粤A33333", C.ORDINARY, T0, None, T0 + 7 * H, 3)
    found = p.overstays(T0 + 8 * H, LIMITS)
    assert [(o.stay.plate, o.exceeded_by) for o in found] == [
        ("粤A22222", 2 * H),
        ("粤A11111", H),
        ("粤A33333", H),
    ]


def test_overstay_is_reported_once_per_stay() -> None:
    p = Presence()
    p.enter("粤A11111", C.HAZMAT, T0, APPT, None, 1)
    (o,) = p.overstays(T0 + 7 * H, LIMITS)
    p.mark_reported(o)
    assert p.overstays(T0 + 8 * H, LIMITS) == []
    assert overstays(p, T0 + 9 * H, LIMITS) == []
    # A new stay of the same vehicle is a new overstay.
    p.leave("粤A11111", T0 + 10 * H, 2)
    p.enter("粤A11111", C.HAZMAT, T0 + 11 * H, APPT, None, 3)
    (again,) = p.overstays(T0 + 18 * H, LIMITS)
    assert again.stay.entry_seq == 3


def test_reported_is_forgotten_when_the_stay_is_replaced() -> None:
    p = Presence()
    p.enter("粤A11111", C.HAZMAT, T0, None, None, 1)
    p.mark_reported(("粤A11111", 1))
    assert p.reported == {("粤A11111", 1)}
    p.enter("粤A11111", C.HAZMAT, T0 + H, None, None, 2)
    assert p.reported == frozenset()
    assert len(p.overstays(T0 + 8 * H, LIMITS)) == 1


def test_marking_an_unknown_stay_is_ignored() -> None:
    p = Presence()
    p.enter("粤A11111", C.HAZMAT, T0, None, None, 1)
    p.mark_reported(("粤A11111", 99))  # an older stay of the same plate
    p.mark_reported(("粤B00000", 1))
    assert p.reported == frozenset()
    assert len(p.overstays(T0 + 8 * H, LIMITS)) == 1


def test_overstays_with_an_explicit_reported_set() -> None:
    stays = [_stay(C.HAZMAT, plate="粤A11111", seq=1), _stay(C.HAZMAT, plate="粤A22222", seq=2)]
    found = overstays(stays, T0 + 7 * H, LIMITS, reported={("粤A11111", 1)})
    assert [o.key for o in found] == [("粤A22222", 2)]


def test_overstay_carries_its_stay() -> None:
    stay = _stay(C.HAZMAT)
    (o,) = overstays([stay], T0 + 7 * H, LIMITS)
    assert o == Overstay(
        stay=stay, limit=OverstayLimit.DWELL_LIMIT, deadline=T0 + 6 * H, exceeded_by=H
    )


# --- time inside across a wall-clock step -------------------------------------------------------

BOOT = "boot-1"
NS = 1_000_000_000


def test_a_wall_clock_step_forward_creates_no_dwell_overstay() -> None:
    p = Presence()
    p.enter("粤A11111", C.HAZMAT, T0, APPT, None, 1, (BOOT, 100 * NS))
    # Two hours later by the monotonic clock, the wall clock is set 8 hours ahead.
    now = T0 + 10 * H
    assert p.overstays(now, LIMITS, mono=(BOOT, (100 + 2 * 3600) * NS)) == []
    # By the wall clock alone it would have overstayed by 4 hours.
    assert p.overstays(now, LIMITS) != []
    # Six hours and a second inside by the monotonic clock: it has overstayed, by a second.
    (late,) = p.overstays(now, LIMITS, mono=(BOOT, (100 + 6 * 3600 + 1) * NS))
    assert late.limit is OverstayLimit.DWELL_LIMIT
    assert late.exceeded_by == S and late.deadline == now - S


def test_a_wall_clock_step_back_hides_no_dwell_overstay() -> None:
    p = Presence()
    p.enter("粤A11111", C.HAZMAT, T0, APPT, None, 1, (BOOT, 100 * NS))
    now = T0 + 4 * H  # seven hours inside, the wall clock set three hours back
    (late,) = p.overstays(now, LIMITS, mono=(BOOT, (100 + 7 * 3600) * NS))
    assert late.exceeded_by == H
    assert p.overstays(now, LIMITS) == []  # what the wall clock alone would have hidden


def test_across_a_reboot_time_inside_is_on_the_wall_clock() -> None:
    p = Presence()
    p.enter("粤A11111", C.HAZMAT, T0, APPT, None, 1, (BOOT, 100 * NS))
    # Another boot: its monotonic clock says nothing about the entry.
    (late,) = p.overstays(T0 + 7 * H, LIMITS, mono=("boot-2", 5 * NS))
    assert late.exceeded_by == H and late.deadline == T0 + 6 * H


def test_a_permit_end_is_a_calendar_instant_on_the_wall_clock() -> None:
    p = Presence()
    p.enter("粤A11111", C.ORDINARY, T0, None, T0 + H, 1, (BOOT, 100 * NS))
    (late,) = p.overstays(T0 + 2 * H, LIMITS, mono=(BOOT, 101 * NS))
    assert late.limit is OverstayLimit.PERMIT_END and late.deadline == T0 + H
