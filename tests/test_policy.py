"""Table-driven tests of the access policy (edgegate.core.policy)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgegate.core.domain import (
    Appointment,
    BlacklistEntry,
    BlacklistReason,
    Credential,
    CredentialKind,
    Credentials,
    Direction,
    FuzzyMatch,
    GateKind,
    HolderType,
    MatchKind,
    PlateColour,
    PlateRead,
    Registration,
    TemporaryPermit,
    VehicleCategory,
)
from edgegate.core.plates import confusable_variants
from edgegate.core.policy import (
    CredentialRef,
    Decision,
    Reason,
    Verdict,
    decide,
    decide_all_kinds,
)
from edgegate.core.rules import ColourMismatchAction, FuzzyMatching, GateRules, StaleAction

C = VehicleCategory
ENTRY, EXIT = Direction.ENTRY, Direction.EXIT
ALLOW, DENY, CONFIRM = Verdict.ALLOW, Verdict.DENY, Verdict.CONFIRM
NOW = datetime(2024, 6, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
DAY = timedelta(days=1)
GATE = "G1"
PLATE = "粤A12345"
NEIGHBOUR = "粤A1234S"  # one 5/S substitution from PLATE


# --- test data -------------------------------------------------------------------------------


@dataclass
class FakeView:
    """A dict-backed allow-list satisfying the ``AllowListView`` protocol."""

    entries: dict[str, Credentials] = field(default_factory=dict)
    version: int = 42
    updated_at: datetime | None = NOW - timedelta(hours=1)
    tampered: bool = False

    def exact(self, plate: str) -> Credentials:
        return self.entries.get(plate, Credentials(plate))

    def fuzzy(self, plate: str) -> list[FuzzyMatch]:
        return [
            FuzzyMatch(self.entries[variant], pos, read_ch, list_ch)
            for variant, pos, read_ch, list_ch in confusable_variants(plate)
            if variant in self.entries
        ]


def view_of(*creds: Credential, updated_at: datetime | None = NOW - timedelta(hours=1)) -> FakeView:
    by_plate: dict[str, list[Credential]] = {}
    for c in creds:
        by_plate.setdefault(c.plate, []).append(c)
    entries = {
        plate: Credentials(
            plate,
            registrations=tuple(c for c in cs if isinstance(c, Registration)),
            permits=tuple(c for c in cs if isinstance(c, TemporaryPermit)),
            appointments=tuple(c for c in cs if isinstance(c, Appointment)),
            blacklist=tuple(c for c in cs if isinstance(c, BlacklistEntry)),
        )
        for plate, cs in by_plate.items()
    }
    return FakeView(entries=entries, updated_at=updated_at)


def _window(state: str) -> tuple[datetime, datetime, frozenset[str]]:
    """(start, end, gates) of a credential in ``state`` as seen at NOW from GATE."""
    return {
        "valid": (NOW - DAY, NOW + DAY, frozenset()),
        "at-gate": (NOW - DAY, NOW + DAY, frozenset({GATE, "G2"})),
        "consumed": (NOW - DAY, NOW + DAY, frozenset()),
        "expired": (NOW - 2 * DAY, NOW - DAY, frozenset()),
        "not-yet-valid": (NOW + DAY, NOW + 2 * DAY, frozenset()),
        "wrong-gate": (NOW - DAY, NOW + DAY, frozenset({"G9"})),
    }[state]


def registration(
    state: str = "valid",
    category: VehicleCategory = C.ORDINARY,
    *,
    plate: str = PLATE,
    colour: PlateColour = PlateColour.UNKNOWN,
    id: str = "R1",
) -> Registration:
    start, end, gates = _window(state)
    return Registration(
        id=id,
        plate=plate,
        colour=colour,
        category=category,
        holder=HolderType.COMPANY,
        organisation="Acme Chemicals",
        valid_from=start,
        valid_until=end,
        gates=gates,
    )


def permit(
    state: str = "valid",
    category: VehicleCategory = C.ORDINARY,
    *,
    plate: str = PLATE,
    colour: PlateColour = PlateColour.UNKNOWN,
    id: str = "P1",
) -> TemporaryPermit:
    start, end, gates = _window(state)
    return TemporaryPermit(
        id=id,
        plate=plate,
        colour=colour,
        category=category,
        visitor="Wang Logistics",
        host="Acme Chemicals",
        valid_from=start,
        valid_until=end,
        gates=gates,
    )


def appointment(
    state: str = "valid",
    category: VehicleCategory = C.HAZMAT,
    *,
    plate: str = PLATE,
    colour: PlateColour = PlateColour.UNKNOWN,
    id: str = "A1",
) -> Appointment:
    start, end, gates = _window(state)
    return Appointment(
        id=id,
        plate=plate,
        colour=colour,
        category=category,
        window_start=start,
        window_end=end,
        destination="Acme Chemicals",
        un_number="1203",
        hazard_class="3",
        waybill="WB-0001",
        gates=gates,
        consumed=state == "consumed",
    )


def blacklist(active: bool = True, *, plate: str = PLATE, id: str = "B1") -> BlacklistEntry:
    return BlacklistEntry(
        id=id,
        plate=plate,
        reason=BlacklistReason.SPEEDING,
        source="park-security",
        valid_from=NOW - DAY if active else NOW - 3 * DAY,
        valid_until=None if active else NOW - 2 * DAY,
    )


def rules_for(kind: GateKind, **kwargs: object) -> GateRules:
    return GateRules.for_kind(GATE, kind, **kwargs)


def read(
    plate: str = PLATE,
    colour: PlateColour = PlateColour.UNKNOWN,
    confidence: float = 0.99,
) -> PlateRead:
    return PlateRead(plate=plate, colour=colour, confidence=confidence)


def codes(decision: Decision) -> tuple[str, ...]:
    return tuple(str(r) for r in decision.reasons)


# --- gate kind x category x direction, with a valid credential --------------------------------

# The credential a vehicle of each category normally holds.
VALID_CREDENTIAL: dict[VehicleCategory, tuple[str, Callable[[], Credential]]] = {
    C.HAZMAT: ("appointment-valid", lambda: appointment("valid", C.HAZMAT)),
    C.HAZWASTE: ("appointment-valid", lambda: appointment("valid", C.HAZWASTE)),
    C.ENGINEERING: ("registration-valid", lambda: registration("valid", C.ENGINEERING)),
    C.ORDINARY: ("permit-valid", lambda: permit("valid", C.ORDINARY)),
    C.EMERGENCY: ("registration-valid", lambda: registration("valid", C.EMERGENCY)),
}

# (kind, category, entry verdict, exit verdict), straight from docs/design.md §1.
ADMISSION_TABLE = [
    (GateKind.COMPREHENSIVE, C.HAZMAT, ALLOW, ALLOW),
    (GateKind.COMPREHENSIVE, C.HAZWASTE, ALLOW, ALLOW),
    (GateKind.COMPREHENSIVE, C.ENGINEERING, ALLOW, ALLOW),
    (GateKind.COMPREHENSIVE, C.ORDINARY, ALLOW, ALLOW),
    (GateKind.COMPREHENSIVE, C.EMERGENCY, ALLOW, ALLOW),
    (GateKind.ORDINARY, C.HAZMAT, DENY, DENY),
    (GateKind.ORDINARY, C.HAZWASTE, DENY, DENY),
    (GateKind.ORDINARY, C.ENGINEERING, ALLOW, ALLOW),
    (GateKind.ORDINARY, C.ORDINARY, ALLOW, ALLOW),
    (GateKind.ORDINARY, C.EMERGENCY, ALLOW, ALLOW),
    (GateKind.EMERGENCY, C.HAZMAT, DENY, DENY),
    (GateKind.EMERGENCY, C.HAZWASTE, DENY, DENY),
    (GateKind.EMERGENCY, C.ENGINEERING, DENY, DENY),
    (GateKind.EMERGENCY, C.ORDINARY, DENY, DENY),
    (GateKind.EMERGENCY, C.EMERGENCY, ALLOW, ALLOW),
]


@pytest.mark.parametrize(
    ("kind", "category", "direction", "expected"),
    [
        pytest.param(kind, cat, d, v, id=f"{kind}-{cat}-{d}-{v}")
        for kind, cat, entry_v, exit_v in ADMISSION_TABLE
        for d, v in ((ENTRY, entry_v), (EXIT, exit_v))
    ],
)
def test_gate_kind_admits_category(
    kind: GateKind, category: VehicleCategory, direction: Direction, expected: Verdict
) -> None:
    valid_code, make = VALID_CREDENTIAL[category]
    d = decide(rules_for(kind), direction, read(), view_of(make()), NOW)
    assert d.verdict is expected
    assert d.category is category
    assert d.match is MatchKind.EXACT
    assert d.matched_plate == PLATE
    if expected is ALLOW:
        assert codes(d) == (valid_code,)
        assert d.credential is not None
    else:
        assert codes(d) == ("category-not-admitted", valid_code)
        assert d.credential is None
        assert d.consume_appointment is None


# --- credential states of non-dangerous vehicles ----------------------------------------------

# (label, credentials, entry verdict, entry reasons, exit verdict, exit reasons, credential id)
ORDINARY_STATES = [
    ("registration-valid", [registration("valid")], ALLOW, ("registration-valid",),
     ALLOW, ("registration-valid",), "R1"),
    ("registration-at-listed-gate", [registration("at-gate")], ALLOW, ("registration-valid",),
     ALLOW, ("registration-valid",), "R1"),
    ("registration-expired", [registration("expired")], DENY, ("registration-expired",),
     ALLOW, ("registration-expired",), "R1"),
    ("registration-not-yet-valid", [registration("not-yet-valid")], DENY,
     ("registration-not-yet-valid",), ALLOW, ("registration-not-yet-valid",), "R1"),
    ("registration-wrong-gate", [registration("wrong-gate")], DENY,
     ("registration-wrong-gate",), ALLOW, ("registration-wrong-gate",), "R1"),
    ("permit-valid", [permit("valid")], ALLOW, ("permit-valid",),
     ALLOW, ("permit-valid",), "P1"),
    ("permit-expired", [permit("expired")], DENY, ("permit-expired",),
     ALLOW, ("permit-expired",), "P1"),
    ("permit-not-yet-valid", [permit("not-yet-valid")], DENY, ("permit-not-yet-valid",),
     ALLOW, ("permit-not-yet-valid",), "P1"),
    ("permit-wrong-gate", [permit("wrong-gate")], DENY, ("permit-wrong-gate",),
     ALLOW, ("permit-wrong-gate",), "P1"),
    ("none", [], DENY, ("no-credential",), CONFIRM, ("exit-unknown-vehicle",), None),
    ("blacklisted-with-registration", [registration("valid"), blacklist()], DENY,
     ("blacklisted", "registration-valid"), ALLOW,
     ("blacklisted-on-exit", "registration-valid"), "R1"),
    ("blacklisted-only", [blacklist()], DENY, ("blacklisted", "no-credential"),
     ALLOW, ("blacklisted-on-exit",), None),
    ("blacklist-lapsed-only", [blacklist(active=False)], DENY, ("no-credential",),
     CONFIRM, ("exit-unknown-vehicle",), None),
    ("blacklist-lapsed-with-registration", [blacklist(active=False), registration()], ALLOW,
     ("registration-valid",), ALLOW, ("registration-valid",), "R1"),
    ("expired-and-valid-registration",
     [registration("expired", id="R0"), registration("valid", id="R1")], ALLOW,
     ("registration-valid",), ALLOW, ("registration-valid",), "R1"),
    ("registration-expired-permit-valid", [registration("expired"), permit("valid")], ALLOW,
     ("registration-expired", "permit-valid"), ALLOW,
     ("registration-expired", "permit-valid"), "P1"),
    ("registration-and-permit-valid", [registration("valid"), permit("valid")], ALLOW,
     ("registration-valid", "permit-valid"), ALLOW,
     ("registration-valid", "permit-valid"), "R1"),
]  # fmt: skip


# Every (gate kind, non-dangerous category) pair the kind admits both ways.
ADMITTED_NON_DANGEROUS = [
    (GateKind.COMPREHENSIVE, C.ENGINEERING),
    (GateKind.COMPREHENSIVE, C.ORDINARY),
    (GateKind.COMPREHENSIVE, C.EMERGENCY),
    (GateKind.ORDINARY, C.ENGINEERING),
    (GateKind.ORDINARY, C.ORDINARY),
    (GateKind.ORDINARY, C.EMERGENCY),
    (GateKind.EMERGENCY, C.EMERGENCY),
]


def _with_category(creds: list[Credential], category: VehicleCategory) -> list[Credential]:
    out: list[Credential] = []
    for c in creds:
        if isinstance(c, Registration | TemporaryPermit):
            c = replace(c, category=category)
        out.append(c)
    return out


@pytest.mark.parametrize(
    ("kind", "category", "direction", "creds", "expected", "reasons", "credential_id"),
    [
        pytest.param(
            kind, cat, d, creds, v, rs, cid if v is not DENY else None,
            id=f"{kind}-{cat}-{label}-{d}",
        )
        for kind, cat in ADMITTED_NON_DANGEROUS
        for label, creds, entry_v, entry_rs, exit_v, exit_rs, cid in ORDINARY_STATES
        for d, v, rs in ((ENTRY, entry_v, entry_rs), (EXIT, exit_v, exit_rs))
    ],
)  # fmt: skip
def test_non_dangerous_credential_states(
    kind: GateKind,
    category: VehicleCategory,
    direction: Direction,
    creds: list[Credential],
    expected: Verdict,
    reasons: tuple[str, ...],
    credential_id: str | None,
) -> None:
    d = decide(rules_for(kind), direction, read(), view_of(*_with_category(creds, category)), NOW)
    assert d.verdict is expected
    assert codes(d) == reasons
    assert (d.credential.id if d.credential else None) == credential_id
    assert d.consume_appointment is None
    known = any(not isinstance(c, BlacklistEntry) for c in creds)
    assert d.category is (category if known else None)


# --- dangerous vehicles: appointment states ---------------------------------------------------

# (label, credentials, entry verdict, entry reasons, exit verdict, exit reasons, credential id)
DANGEROUS_STATES = [
    ("appointment-valid", ["appt:valid"], ALLOW, ("appointment-valid",),
     ALLOW, ("appointment-valid",), "A1"),
    ("appointment-at-listed-gate", ["appt:at-gate"], ALLOW, ("appointment-valid",),
     ALLOW, ("appointment-valid",), "A1"),
    ("appointment-expired", ["appt:expired"], DENY, ("appointment-expired",),
     ALLOW, ("appointment-expired",), "A1"),
    ("appointment-not-yet-valid", ["appt:not-yet-valid"], DENY,
     ("appointment-not-yet-valid",), ALLOW, ("appointment-not-yet-valid",), "A1"),
    ("appointment-consumed", ["appt:consumed"], DENY, ("appointment-consumed",),
     ALLOW, ("appointment-consumed",), "A1"),
    ("appointment-wrong-gate", ["appt:wrong-gate"], DENY, ("appointment-wrong-gate",),
     ALLOW, ("appointment-wrong-gate",), "A1"),
    ("registration-only", ["reg:valid"], DENY, ("appointment-missing", "registration-valid"),
     ALLOW, ("registration-valid",), "R1"),
    ("permit-only", ["permit:valid"], DENY, ("appointment-missing", "permit-valid"),
     ALLOW, ("permit-valid",), "P1"),
    ("consumed-plus-registration", ["appt:consumed", "reg:valid"], DENY,
     ("appointment-consumed", "registration-valid"), ALLOW,
     ("appointment-consumed", "registration-valid"), "R1"),
    ("blacklisted-with-appointment", ["appt:valid", "blacklist"], DENY,
     ("blacklisted", "appointment-valid"), ALLOW,
     ("blacklisted-on-exit", "appointment-valid"), "A1"),
]  # fmt: skip


def _dangerous_creds(specs: list[str], category: VehicleCategory) -> list[Credential]:
    out: list[Credential] = []
    for spec in specs:
        kind, _, state = spec.partition(":")
        if kind == "appt":
            out.append(appointment(state, category))
        elif kind == "reg":
            out.append(registration(state, category))
        elif kind == "permit":
            out.append(permit(state, category))
        else:
            out.append(blacklist())
    return out


@pytest.mark.parametrize(
    ("category", "direction", "specs", "expected", "reasons", "credential_id"),
    [
        pytest.param(
            cat, d, specs, v, rs, cid if v is not DENY else None,
            id=f"comprehensive-{cat}-{label}-{d}",
        )
        for cat in (C.HAZMAT, C.HAZWASTE)
        for label, specs, entry_v, entry_rs, exit_v, exit_rs, cid in DANGEROUS_STATES
        for d, v, rs in ((ENTRY, entry_v, entry_rs), (EXIT, exit_v, exit_rs))
    ],
)  # fmt: skip
def test_dangerous_at_comprehensive_gate(
    category: VehicleCategory,
    direction: Direction,
    specs: list[str],
    expected: Verdict,
    reasons: tuple[str, ...],
    credential_id: str | None,
) -> None:
    view = view_of(*_dangerous_creds(specs, category))
    d = decide(rules_for(GateKind.COMPREHENSIVE), direction, read(), view, NOW)
    assert d.verdict is expected
    assert codes(d) == reasons
    assert d.category is category
    assert (d.credential.id if d.credential else None) == credential_id
    consumes = "A1" if direction is ENTRY and expected is ALLOW else None
    assert d.consume_appointment == consumes


@pytest.mark.parametrize(
    ("category", "direction", "specs"),
    [
        pytest.param(cat, d, specs, id=f"ordinary-gate-{cat}-{label}-{d}")
        for cat in (C.HAZMAT, C.HAZWASTE)
        for label, specs, *_ in DANGEROUS_STATES
        for d in Direction
    ],
)
def test_dangerous_never_pass_an_ordinary_gate(
    category: VehicleCategory, direction: Direction, specs: list[str]
) -> None:
    view = view_of(*_dangerous_creds(specs, category))
    d = decide(rules_for(GateKind.ORDINARY), direction, read(), view, NOW)
    assert d.verdict is DENY
    assert Reason.CATEGORY_NOT_ADMITTED in d.reasons
    assert d.credential is None
    assert d.consume_appointment is None


# --- window boundaries ------------------------------------------------------------------------

US = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("make", "start", "end", "expected", "reason"),
    [
        pytest.param(registration, NOW, NOW + DAY, ALLOW, "registration-valid",
                     id="registration-starts-now"),
        pytest.param(registration, NOW + US, NOW + DAY, DENY, "registration-not-yet-valid",
                     id="registration-starts-in-1us"),
        pytest.param(registration, NOW - DAY, NOW, DENY, "registration-expired",
                     id="registration-ends-now"),
        pytest.param(registration, NOW - DAY, NOW + US, ALLOW, "registration-valid",
                     id="registration-ends-in-1us"),
        pytest.param(registration, NOW - DAY, None, ALLOW, "registration-valid",
                     id="registration-open-ended"),
        pytest.param(permit, NOW, NOW + DAY, ALLOW, "permit-valid", id="permit-starts-now"),
        pytest.param(permit, NOW - DAY, NOW, DENY, "permit-expired", id="permit-ends-now"),
        pytest.param(permit, NOW - DAY, NOW + US, ALLOW, "permit-valid",
                     id="permit-ends-in-1us"),
        pytest.param(appointment, NOW, NOW + DAY, ALLOW, "appointment-valid",
                     id="appointment-starts-now"),
        pytest.param(appointment, NOW + US, NOW + DAY, DENY, "appointment-not-yet-valid",
                     id="appointment-starts-in-1us"),
        pytest.param(appointment, NOW - DAY, NOW, DENY, "appointment-expired",
                     id="appointment-ends-now"),
        pytest.param(appointment, NOW - DAY, NOW + US, ALLOW, "appointment-valid",
                     id="appointment-ends-in-1us"),
    ],
)  # fmt: skip
def test_window_boundaries(
    make: object, start: datetime, end: datetime | None, expected: Verdict, reason: str
) -> None:
    cred: Credential
    if make is appointment:
        assert end is not None
        cred = replace(appointment(), window_start=start, window_end=end)
    elif make is permit:
        assert end is not None
        cred = replace(permit(), valid_from=start, valid_until=end)
    else:
        cred = replace(registration(), valid_from=start, valid_until=end)
    d = decide(rules_for(GateKind.COMPREHENSIVE), ENTRY, read(), view_of(cred), NOW)
    assert d.verdict is expected
    assert codes(d) == (reason,)


@pytest.mark.parametrize(
    ("start", "end", "blacklisted"),
    [
        pytest.param(NOW, None, True, id="starts-now"),
        pytest.param(NOW + US, None, False, id="starts-in-1us"),
        pytest.param(NOW - DAY, NOW, False, id="ended-now"),
        pytest.param(NOW - DAY, NOW + US, True, id="ends-in-1us"),
    ],
)
def test_blacklist_boundaries(start: datetime, end: datetime | None, blacklisted: bool) -> None:
    entry = BlacklistEntry(
        id="B1",
        plate=PLATE,
        reason=BlacklistReason.FORGED_PERMIT,
        source="central",
        valid_from=start,
        valid_until=end,
    )
    d = decide(rules_for(GateKind.ORDINARY), ENTRY, read(), view_of(entry, registration()), NOW)
    assert d.verdict is (DENY if blacklisted else ALLOW)
    assert (Reason.BLACKLISTED in d.reasons) is blacklisted


# --- fuzzy matching ---------------------------------------------------------------------------

# Every ordered confusable pair, substituted at the last serial position.
CONFUSABLE_PAIRS = [("0", "D"), ("0", "Q"), ("D", "Q"), ("8", "B"), ("2", "Z"), ("5", "S"),
                    ("6", "G")]  # fmt: skip


@pytest.mark.parametrize(
    ("read_plate", "list_plate"),
    [
        pytest.param(f"粤A1234{r}", f"粤A1234{lst}", id=f"read-{r}-list-{lst}")
        for a, b in CONFUSABLE_PAIRS
        for r, lst in ((a, b), (b, a))
    ]
    + [
        pytest.param("粤D12345", "粤Q12345", id="authority-letter-D-Q"),
        pytest.param("粤Q12345", "粤D12345", id="authority-letter-Q-D"),
    ],
)
def test_fuzzy_match_each_confusable(read_plate: str, list_plate: str) -> None:
    view = view_of(registration(plate=list_plate))
    d = decide(rules_for(GateKind.ORDINARY), ENTRY, read(read_plate), view, NOW)
    assert d.verdict is CONFIRM  # the default: a guard confirms an entry matched fuzzily
    assert d.match is MatchKind.FUZZY
    assert d.plate == read_plate
    assert d.matched_plate == list_plate
    assert codes(d) == ("fuzzy-match", "fuzzy-match-needs-confirmation", "registration-valid")
    allow = rules_for(GateKind.ORDINARY, fuzzy_matching=FuzzyMatching.ALLOW)
    d = decide(allow, ENTRY, read(read_plate), view, NOW)
    assert d.verdict is ALLOW
    assert codes(d) == ("fuzzy-match", "registration-valid")


@pytest.mark.parametrize(
    ("read_plate", "listed"),
    [
        pytest.param("粤AI2345", PLATE, id="I-read-as-1"),
        pytest.param("粤A1234O", "粤A12340", id="O-read-as-0"),
        pytest.param("粤a12345", PLATE, id="lower-case"),
        pytest.param("粤 A·123 45", PLATE, id="separators"),
        pytest.param("粤Ａ１２３４５", PLATE, id="full-width"),
    ],
)
def test_normalisation_matches_exactly(read_plate: str, listed: str) -> None:
    view = view_of(registration(plate=listed))
    d = decide(rules_for(GateKind.ORDINARY), ENTRY, read(read_plate), view, NOW)
    assert d.match is MatchKind.EXACT
    assert d.plate == listed
    assert d.verdict is ALLOW


def test_position_one_only_substitutes_letters() -> None:
    # "粤B..." and "粤8..." differ by a confusable pair, but an authority letter is never a digit.
    view = view_of(registration(plate="粤812345"))
    d = decide(rules_for(GateKind.ORDINARY), ENTRY, read("粤B12345"), view, NOW)
    assert d.match is MatchKind.NONE
    assert d.verdict is DENY


HAZ = "粤A1234S"
BAD = "粤A1Z345"  # also one substitution from PLATE (2/Z)

# With fuzzy_matching = "allow": (label, credentials, kind, entry verdict, entry reasons, exit
# verdict, exit reasons). "confirm" differs only where an entry would be allowed.
FUZZY_TABLE = [
    ("ordinary-valid", [registration(plate=HAZ)], GateKind.ORDINARY,
     ALLOW, ("fuzzy-match", "registration-valid"),
     ALLOW, ("fuzzy-match", "registration-valid")),
    ("ordinary-expired", [registration("expired", plate=HAZ)], GateKind.ORDINARY,
     DENY, ("fuzzy-match", "registration-expired"),
     ALLOW, ("fuzzy-match", "registration-expired")),
    ("ordinary-at-emergency-gate", [registration(plate=HAZ)], GateKind.EMERGENCY,
     DENY, ("fuzzy-match", "category-not-admitted", "registration-valid"),
     CONFIRM, ("fuzzy-match", "category-not-admitted", "registration-valid")),
    ("hazmat-valid", [appointment(plate=HAZ)], GateKind.COMPREHENSIVE,
     CONFIRM, ("fuzzy-match", "fuzzy-dangerous-needs-confirmation", "appointment-valid"),
     CONFIRM, ("fuzzy-match", "fuzzy-dangerous-needs-confirmation", "appointment-valid")),
    ("hazwaste-valid", [appointment(category=C.HAZWASTE, plate=HAZ)], GateKind.COMPREHENSIVE,
     CONFIRM, ("fuzzy-match", "fuzzy-dangerous-needs-confirmation", "appointment-valid"),
     CONFIRM, ("fuzzy-match", "fuzzy-dangerous-needs-confirmation", "appointment-valid")),
    ("hazmat-expired", [appointment("expired", plate=HAZ)], GateKind.COMPREHENSIVE,
     DENY, ("fuzzy-match", "appointment-expired"),
     CONFIRM, ("fuzzy-match", "fuzzy-dangerous-needs-confirmation", "appointment-expired")),
    ("hazmat-at-ordinary-gate", [appointment(plate=HAZ)], GateKind.ORDINARY,
     DENY, ("fuzzy-match", "category-not-admitted", "appointment-valid"),
     CONFIRM, ("fuzzy-match", "fuzzy-dangerous-needs-confirmation", "category-not-admitted",
               "appointment-valid")),
    ("blacklisted-registered", [registration(plate=BAD), blacklist(plate=BAD)],
     GateKind.ORDINARY,
     CONFIRM, ("fuzzy-match", "fuzzy-blacklisted", "blacklisted", "registration-valid"),
     CONFIRM, ("fuzzy-match", "fuzzy-blacklisted", "blacklisted-on-exit",
               "registration-valid")),
    ("blacklisted-only", [blacklist(plate=BAD)], GateKind.ORDINARY,
     CONFIRM, ("fuzzy-match", "fuzzy-blacklisted", "blacklisted", "no-credential"),
     CONFIRM, ("fuzzy-match", "fuzzy-blacklisted", "blacklisted-on-exit")),
    ("ambiguous-ordinary", [registration(plate=HAZ), permit(plate=BAD)], GateKind.ORDINARY,
     CONFIRM, ("fuzzy-ambiguous",), CONFIRM, ("fuzzy-ambiguous",)),
    ("ambiguous-dangerous-blacklisted", [appointment(plate=HAZ), blacklist(plate=BAD)],
     GateKind.COMPREHENSIVE,
     CONFIRM, ("fuzzy-ambiguous", "fuzzy-blacklisted", "fuzzy-dangerous-needs-confirmation"),
     CONFIRM, ("fuzzy-ambiguous", "fuzzy-blacklisted", "fuzzy-dangerous-needs-confirmation")),
    ("no-neighbour", [registration(plate="粤B99999")], GateKind.ORDINARY,
     DENY, ("no-credential",), CONFIRM, ("exit-unknown-vehicle",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("creds", "kind", "direction", "expected", "reasons"),
    [
        pytest.param(creds, kind, d, v, rs, id=f"{label}-{d}")
        for label, creds, kind, entry_v, entry_rs, exit_v, exit_rs in FUZZY_TABLE
        for d, v, rs in ((ENTRY, entry_v, entry_rs), (EXIT, exit_v, exit_rs))
    ],
)
def test_fuzzy_outcomes(
    creds: list[Credential],
    kind: GateKind,
    direction: Direction,
    expected: Verdict,
    reasons: tuple[str, ...],
) -> None:
    rules = rules_for(kind, fuzzy_matching=FuzzyMatching.ALLOW)
    d = decide(rules, direction, read(PLATE), view_of(*creds), NOW)
    assert d.verdict is expected
    assert codes(d) == reasons
    plates = {c.plate for c in creds}
    if any(r.startswith("fuzzy-") for r in reasons):
        assert d.match is MatchKind.FUZZY
        assert d.matched_plate == (plates.pop() if len(plates) == 1 else None)
    else:
        assert d.match is MatchKind.NONE
        assert d.matched_plate is None


def test_fuzzy_dangerous_entry_reports_the_appointment_a_confirmation_consumes() -> None:
    view = view_of(appointment(plate=HAZ))
    d = decide(rules_for(GateKind.COMPREHENSIVE), ENTRY, read(PLATE), view, NOW)
    assert d.verdict is CONFIRM
    assert d.consume_appointment == "A1"
    assert d.category is C.HAZMAT


@pytest.mark.parametrize(
    ("creds", "kind", "direction", "allowed", "reasons"),
    [
        pytest.param(creds, kind, d, v, rs, id=f"{label}-{d}")
        for label, creds, kind, entry_v, entry_rs, exit_v, exit_rs in FUZZY_TABLE
        for d, v, rs in ((ENTRY, entry_v, entry_rs), (EXIT, exit_v, exit_rs))
    ],
)
def test_fuzzy_confirm_mode_holds_every_entry_allow_mode_would_admit(
    creds: list[Credential],
    kind: GateKind,
    direction: Direction,
    allowed: Verdict,
    reasons: tuple[str, ...],
) -> None:
    """``confirm`` (the default): an entry matched only fuzzily needs a guard whatever the
    category; everything else, exits included, is decided as with ``allow``."""
    d = decide(rules_for(kind), direction, read(PLATE), view_of(*creds), NOW)
    if direction is ENTRY and allowed is ALLOW:
        assert d.verdict is CONFIRM
        assert codes(d) == (reasons[0], "fuzzy-match-needs-confirmation", *reasons[1:])
        assert d.credential is not None  # the credential a guard checks
    else:
        assert d.verdict is allowed
        assert codes(d) == reasons


def test_fuzzy_reasons_say_in_plain_words_which_credential() -> None:
    view = view_of(registration(plate=NEIGHBOUR, id="REG-7"))
    d = decide(rules_for(GateKind.ORDINARY), ENTRY, read(PLATE), view, NOW)
    assert d.explanation == (
        "matched only fuzzily: read 粤A12345, the allow-list has 粤A1234S (5 read where it "
        "has S, character 7), a well-formed plate that may belong to another vehicle; "
        "credential registration REG-7; a guard must confirm which vehicle this is before it "
        "passes"
    )
    event = d.to_event(direction=ENTRY, plate_read=PLATE, lane="in-1", read_seq=1)
    assert event.explanation == d.explanation
    allow = rules_for(GateKind.ORDINARY, fuzzy_matching=FuzzyMatching.ALLOW)
    assert decide(allow, ENTRY, read(PLATE), view, NOW).explanation.endswith(
        "credential registration REG-7; allowed on it"
    )
    # Refused: no credential admits, so every one the plate holds is named.
    view = view_of(registration("expired", plate=NEIGHBOUR, id="REG-7"), blacklist(plate=NEIGHBOUR))
    d = decide(allow, ENTRY, read(PLATE), view, NOW)
    assert d.verdict is CONFIRM  # fuzzily blacklisted: a guard looks
    assert "credential registration REG-7, blacklist B1;" in d.explanation
    view = view_of(registration(plate=NEIGHBOUR), permit(plate=BAD))
    d = decide(rules_for(GateKind.ORDINARY), ENTRY, read(PLATE), view, NOW)
    assert d.explanation.startswith(
        "the plate read as 粤A12345 is not on the allow-list and matched several listed plates "
        "only fuzzily (粤A1234S, 粤A1Z345)"
    )
    exact = decide(rules_for(GateKind.ORDINARY), ENTRY, read(PLATE), view_of(registration()), NOW)
    assert exact.explanation == ""


@pytest.mark.parametrize("direction", list(Direction))
def test_fuzzy_matching_disabled(direction: Direction) -> None:
    rules = rules_for(GateKind.ORDINARY, fuzzy_matching=FuzzyMatching.OFF)
    d = decide(rules, direction, read(PLATE), view_of(registration(plate=HAZ)), NOW)
    assert d.match is MatchKind.NONE
    assert d.verdict is (DENY if direction is ENTRY else CONFIRM)


@pytest.mark.parametrize(
    ("exact", "expected", "reasons"),
    [
        pytest.param([blacklist()], DENY, ("blacklisted", "no-credential"),
                     id="exact-blacklist-only"),
        pytest.param([registration("expired")], DENY, ("registration-expired",),
                     id="exact-expired-registration"),
        pytest.param([blacklist(active=False)], DENY, ("no-credential",),
                     id="exact-lapsed-blacklist"),
    ],
)  # fmt: skip
def test_any_exact_entry_prevents_fuzzy(
    exact: list[Credential], expected: Verdict, reasons: tuple[str, ...]
) -> None:
    # A registered neighbour must never let a listed plate in.
    view = view_of(*exact, registration(plate=HAZ, id="R-neighbour"))
    d = decide(rules_for(GateKind.ORDINARY), ENTRY, read(PLATE), view, NOW)
    assert d.match is MatchKind.EXACT
    assert d.verdict is expected
    assert codes(d) == reasons


# --- stale allow-list -------------------------------------------------------------------------

MAX_AGE = timedelta(hours=72)
H = timedelta(hours=1)

# (label, action, updated_at, direction, credentials, expected verdict, stale)
STALE_TABLE = [
    ("fresh-confirm-entry", StaleAction.CONFIRM, NOW - H, ENTRY, "valid", ALLOW, False),
    ("exactly-max-age", StaleAction.DENY_ENTRIES, NOW - MAX_AGE, ENTRY, "valid", ALLOW, False),
    ("just-over-note", StaleAction.NOTE, NOW - MAX_AGE - US, ENTRY, "valid", ALLOW, True),
    ("just-over-confirm", StaleAction.CONFIRM, NOW - MAX_AGE - US, ENTRY, "valid",
     CONFIRM, True),
    ("just-over-deny", StaleAction.DENY_ENTRIES, NOW - MAX_AGE - US, ENTRY, "valid",
     DENY, True),
    ("unknown-age-note", StaleAction.NOTE, None, ENTRY, "valid", ALLOW, True),
    ("unknown-age-confirm", StaleAction.CONFIRM, None, ENTRY, "valid", CONFIRM, True),
    ("unknown-age-deny", StaleAction.DENY_ENTRIES, None, ENTRY, "valid", DENY, True),
    ("confirm-keeps-deny", StaleAction.CONFIRM, None, ENTRY, "expired", DENY, True),
    ("deny-turns-confirm-to-deny", StaleAction.DENY_ENTRIES, None, ENTRY, "low-confidence",
     DENY, True),
    ("confirm-exit-unchanged", StaleAction.CONFIRM, None, EXIT, "valid", ALLOW, True),
    ("deny-exit-unchanged", StaleAction.DENY_ENTRIES, None, EXIT, "valid", ALLOW, True),
    ("deny-exit-expired-leaves", StaleAction.DENY_ENTRIES, None, EXIT, "expired", ALLOW, True),
    ("deny-exit-unknown-confirms", StaleAction.DENY_ENTRIES, None, EXIT, "none", CONFIRM, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("action", "updated_at", "direction", "state", "expected", "stale"),
    [pytest.param(*row[1:], id=str(row[0])) for row in STALE_TABLE],
)
def test_stale_allowlist(
    action: StaleAction,
    updated_at: datetime | None,
    direction: Direction,
    state: str,
    expected: Verdict,
    stale: bool,
) -> None:
    rules = rules_for(
        GateKind.ORDINARY, allowlist_max_age=MAX_AGE, on_stale_allowlist=action, min_confidence=0.5
    )
    creds = [] if state == "none" else [registration("expired" if state == "expired" else "valid")]
    r = read(confidence=0.1 if state == "low-confidence" else 0.99)
    d = decide(rules, direction, r, view_of(*creds, updated_at=updated_at), NOW)
    assert d.verdict is expected
    assert d.allowlist_stale is stale
    assert (Reason.ALLOWLIST_STALE in d.reasons) is stale
    assert d.reasons[-1] is Reason.ALLOWLIST_STALE or not stale
    if updated_at is None:
        assert d.allowlist_age_s is None
    else:
        assert d.allowlist_age_s == (NOW - updated_at).total_seconds()


def test_no_max_age_means_never_stale() -> None:
    rules = rules_for(GateKind.ORDINARY, allowlist_max_age=None)
    d = decide(rules, ENTRY, read(), view_of(registration(), updated_at=None), NOW)
    assert d.verdict is ALLOW
    assert not d.allowlist_stale
    assert d.allowlist_age_s is None


# --- colour -----------------------------------------------------------------------------------

BLUE, YELLOW, UNKNOWN = PlateColour.BLUE, PlateColour.YELLOW, PlateColour.UNKNOWN

# (action, read colour, credential colour, direction, expected, mismatch recorded)
COLOUR_TABLE = [
    (ColourMismatchAction.IGNORE, BLUE, YELLOW, ENTRY, ALLOW, False),
    (ColourMismatchAction.NOTE, BLUE, YELLOW, ENTRY, ALLOW, True),
    (ColourMismatchAction.CONFIRM, BLUE, YELLOW, ENTRY, CONFIRM, True),
    (ColourMismatchAction.CONFIRM, BLUE, YELLOW, EXIT, CONFIRM, True),
    (ColourMismatchAction.CONFIRM, YELLOW, YELLOW, ENTRY, ALLOW, False),
    (ColourMismatchAction.CONFIRM, UNKNOWN, YELLOW, ENTRY, ALLOW, False),
    (ColourMismatchAction.CONFIRM, BLUE, UNKNOWN, ENTRY, ALLOW, False),
    (ColourMismatchAction.NOTE, UNKNOWN, UNKNOWN, ENTRY, ALLOW, False),
    (ColourMismatchAction.NOTE, PlateColour.GREEN, PlateColour.YELLOW_GREEN, ENTRY, ALLOW, True),
]


@pytest.mark.parametrize(
    ("action", "read_colour", "cred_colour", "direction", "expected", "mismatch"),
    [
        pytest.param(*row, id=f"{row[0]}-read-{row[1]}-listed-{row[2]}-{row[3]}")
        for row in COLOUR_TABLE
    ],
)
def test_colour_mismatch(
    action: ColourMismatchAction,
    read_colour: PlateColour,
    cred_colour: PlateColour,
    direction: Direction,
    expected: Verdict,
    mismatch: bool,
) -> None:
    rules = rules_for(GateKind.ORDINARY, colour_mismatch=action)
    view = view_of(registration(colour=cred_colour))
    d = decide(rules, direction, read(colour=read_colour), view, NOW)
    assert d.verdict is expected
    assert (Reason.COLOUR_MISMATCH in d.reasons) is mismatch


def test_colour_mismatch_recorded_on_a_refused_entry() -> None:
    rules = rules_for(GateKind.ORDINARY, colour_mismatch=ColourMismatchAction.NOTE)
    view = view_of(registration(colour=YELLOW), blacklist())
    d = decide(rules, ENTRY, read(colour=BLUE), view, NOW)
    assert d.verdict is DENY
    assert codes(d) == ("blacklisted", "registration-valid", "colour-mismatch")


# --- confidence -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("confidence", "state", "direction", "expected", "low"),
    [
        pytest.param(0.79, "valid", ENTRY, CONFIRM, True, id="below-entry"),
        pytest.param(0.79, "valid", EXIT, CONFIRM, True, id="below-exit"),
        pytest.param(0.8, "valid", ENTRY, ALLOW, False, id="at-threshold"),
        pytest.param(0.95, "valid", ENTRY, ALLOW, False, id="above"),
        pytest.param(math.nan, "valid", ENTRY, CONFIRM, True, id="nan"),
        pytest.param(0.1, "expired", ENTRY, DENY, True, id="below-stays-deny"),
        pytest.param(0.1, "none", EXIT, CONFIRM, True, id="below-unknown-exit"),
    ],
)
def test_low_confidence(
    confidence: float, state: str, direction: Direction, expected: Verdict, low: bool
) -> None:
    rules = rules_for(GateKind.ORDINARY, min_confidence=0.8)
    creds = [] if state == "none" else [registration(state)]
    d = decide(rules, direction, read(confidence=confidence), view_of(*creds), NOW)
    assert d.verdict is expected
    assert (Reason.LOW_CONFIDENCE in d.reasons) is low


# --- read format ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "listed", "direction", "expected", "reasons"),
    [
        pytest.param("WJ12345", True, ENTRY, ALLOW, ("plate-invalid-format", "registration-valid"),
                     id="invalid-format-listed"),
        pytest.param("WJ12345", False, ENTRY, DENY, ("plate-invalid-format", "no-credential"),
                     id="invalid-format-unlisted"),
        pytest.param("", False, ENTRY, DENY, ("plate-unreadable", "no-credential"),
                     id="unreadable-entry"),
        pytest.param(" - ", False, EXIT, CONFIRM, ("plate-unreadable", "exit-unknown-vehicle"),
                     id="unreadable-exit"),
    ],
)  # fmt: skip
def test_read_format(
    raw: str, listed: bool, direction: Direction, expected: Verdict, reasons: tuple[str, ...]
) -> None:
    view = view_of(registration(plate="WJ12345")) if listed else view_of()
    d = decide(rules_for(GateKind.ORDINARY), direction, read(raw), view, NOW)
    assert d.verdict is expected
    assert codes(d) == reasons


# --- narrowed permissions and the emergency gate ----------------------------------------------

ALL = frozenset(VehicleCategory)
# A comprehensive gate that lets hazmat out but not in (the park admits it through other gates).
EXIT_ONLY_HAZMAT = {ENTRY: ALL - {C.HAZMAT}, EXIT: ALL}


@pytest.mark.parametrize(
    ("category", "direction", "expected"),
    [
        pytest.param(C.HAZMAT, ENTRY, DENY, id="hazmat-entry"),
        pytest.param(C.HAZMAT, EXIT, ALLOW, id="hazmat-exit"),
        pytest.param(C.HAZWASTE, ENTRY, ALLOW, id="hazwaste-entry"),
        pytest.param(C.HAZWASTE, EXIT, ALLOW, id="hazwaste-exit"),
    ],
)
def test_narrowed_gate(category: VehicleCategory, direction: Direction, expected: Verdict) -> None:
    rules = GateRules(gate_id=GATE, kind=GateKind.COMPREHENSIVE, admits=EXIT_ONLY_HAZMAT)
    d = decide(rules, direction, read(), view_of(appointment(category=category)), NOW)
    assert d.verdict is expected
    assert (Reason.CATEGORY_NOT_ADMITTED in d.reasons) is (expected is DENY)


@pytest.mark.parametrize(
    ("kind", "category"),
    [
        pytest.param(GateKind.ORDINARY, C.HAZMAT, id="ordinary-gate-hazmat"),
        pytest.param(GateKind.ORDINARY, C.HAZWASTE, id="ordinary-gate-hazwaste"),
        pytest.param(GateKind.EMERGENCY, C.ORDINARY, id="emergency-gate-ordinary"),
    ],
)
@pytest.mark.parametrize("direction", list(Direction))
def test_configuration_cannot_widen_the_gate_kind(
    kind: GateKind, category: VehicleCategory, direction: Direction
) -> None:
    rules = GateRules(gate_id=GATE, kind=kind, admits={ENTRY: ALL, EXIT: ALL})
    valid_code, make = VALID_CREDENTIAL[category]
    d = decide(rules, direction, read(), view_of(make()), NOW)
    assert d.verdict is DENY
    assert codes(d) == ("category-not-admitted", valid_code)


def test_missing_direction_in_admits_refuses() -> None:
    rules = GateRules(gate_id=GATE, kind=GateKind.ORDINARY, admits={ENTRY: ALL})
    d = decide(rules, EXIT, read(), view_of(registration()), NOW)
    assert d.verdict is DENY
    assert codes(d) == ("category-not-admitted", "registration-valid")


@pytest.mark.parametrize(
    ("creds", "direction", "expected", "reasons"),
    [
        pytest.param([registration(category=C.EMERGENCY)], ENTRY, ALLOW, ("registration-valid",),
                     id="rescue-entry"),
        pytest.param([registration(category=C.EMERGENCY)], EXIT, ALLOW, ("registration-valid",),
                     id="rescue-exit"),
        pytest.param([registration("expired", C.EMERGENCY)], ENTRY, DENY,
                     ("registration-expired",), id="rescue-expired-entry"),
        pytest.param([registration()], ENTRY, DENY,
                     ("category-not-admitted", "registration-valid"), id="ordinary-entry"),
        pytest.param([registration()], EXIT, DENY,
                     ("category-not-admitted", "registration-valid"), id="ordinary-exit"),
        pytest.param([], ENTRY, DENY, ("no-credential",), id="unknown-entry"),
        pytest.param([], EXIT, CONFIRM, ("exit-unknown-vehicle",), id="unknown-exit"),
    ],
)  # fmt: skip
def test_emergency_gate(
    creds: list[Credential], direction: Direction, expected: Verdict, reasons: tuple[str, ...]
) -> None:
    d = decide(rules_for(GateKind.EMERGENCY), direction, read(), view_of(*creds), NOW)
    assert d.verdict is expected
    assert codes(d) == reasons


# --- category resolution ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("creds", "category", "conflict"),
    [
        pytest.param([registration(category=C.ORDINARY), appointment("consumed")], C.HAZMAT, True,
                     id="ordinary-registration-consumed-hazmat-appointment"),
        pytest.param([registration(category=C.ENGINEERING), permit(category=C.ORDINARY)],
                     C.ENGINEERING, True, id="engineering-over-ordinary"),
        pytest.param([registration(category=C.EMERGENCY), permit(category=C.ORDINARY)],
                     C.ORDINARY, True, id="ordinary-over-emergency"),
        pytest.param([appointment("expired", C.HAZWASTE, id="A0"), appointment("valid", C.HAZMAT)],
                     C.HAZMAT, False, id="usable-appointment-is-todays-load"),
        pytest.param([appointment("expired", C.HAZMAT, id="A0"),
                      appointment("valid", C.HAZWASTE)],
                     C.HAZWASTE, False, id="usable-hazwaste-over-lapsed-hazmat"),
        pytest.param([appointment("expired", C.HAZMAT, id="A0"),
                      appointment("not-yet-valid", C.HAZWASTE)],
                     C.HAZMAT, True, id="lapsed-appointments-all-count"),
        pytest.param([registration(category=C.ENGINEERING), registration(category=C.ENGINEERING,
                      id="R2")], C.ENGINEERING, False, id="agreeing-credentials"),
    ],
)  # fmt: skip
def test_category_resolution(
    creds: list[Credential], category: VehicleCategory, conflict: bool
) -> None:
    d = decide(rules_for(GateKind.COMPREHENSIVE), EXIT, read(), view_of(*creds), NOW)
    assert d.category is category
    assert (Reason.CATEGORY_CONFLICT in d.reasons) is conflict


def test_conflicting_categories_use_the_most_restrictive_at_an_ordinary_gate() -> None:
    view = view_of(registration(category=C.ORDINARY), appointment("consumed"))
    d = decide(rules_for(GateKind.ORDINARY), EXIT, read(), view, NOW)
    assert d.verdict is DENY
    assert codes(d) == (
        "category-conflict",
        "category-not-admitted",
        "appointment-consumed",
        "registration-valid",
    )


def test_dangerous_registration_with_valid_appointment_enters_on_the_appointment() -> None:
    view = view_of(registration(category=C.HAZMAT), appointment())
    d = decide(rules_for(GateKind.COMPREHENSIVE), ENTRY, read(), view, NOW)
    assert d.verdict is ALLOW
    assert d.credential == CredentialRef(CredentialKind.APPOINTMENT, "A1")
    assert codes(d) == ("appointment-valid", "registration-valid")


# --- appointment consumption ------------------------------------------------------------------


def _appt(id: str, end: datetime, *, consumed: bool = False) -> Appointment:
    return replace(appointment(id=id), window_end=end, consumed=consumed)


@pytest.mark.parametrize(
    ("appointments", "direction", "min_conf", "expected", "consumed"),
    [
        pytest.param([_appt("A1", NOW + DAY)], ENTRY, 0.0, ALLOW, "A1", id="entry-allowed"),
        pytest.param([_appt("A1", NOW + DAY)], ENTRY, 1.1, CONFIRM, "A1",
                     id="entry-to-confirm-consumes-when-confirmed"),
        pytest.param([_appt("A1", NOW + DAY)], EXIT, 0.0, ALLOW, None, id="exit-never-consumes"),
        pytest.param([_appt("A1", NOW + 2 * DAY), _appt("A2", NOW + DAY)], ENTRY, 0.0, ALLOW,
                     "A2", id="earliest-ending-first"),
        pytest.param([_appt("A2", NOW + DAY), _appt("A1", NOW + DAY)], ENTRY, 0.0, ALLOW,
                     "A1", id="tie-by-id"),
        pytest.param([_appt("A1", NOW + DAY, consumed=True), _appt("A2", NOW + 2 * DAY)], ENTRY,
                     0.0, ALLOW, "A2", id="skips-consumed"),
    ],
)  # fmt: skip
def test_appointment_consumption(
    appointments: list[Appointment],
    direction: Direction,
    min_conf: float,
    expected: Verdict,
    consumed: str | None,
) -> None:
    rules = rules_for(GateKind.COMPREHENSIVE, min_confidence=min_conf)
    d = decide(rules, direction, read(), view_of(*appointments), NOW)
    assert d.verdict is expected
    assert d.consume_appointment == consumed
    if consumed is not None:
        assert d.credential == CredentialRef(CredentialKind.APPOINTMENT, consumed)


def test_exit_names_the_most_recent_lapsed_credential() -> None:
    old = appointment("expired", id="A-old")
    trip = appointment("consumed", id="A-trip")
    d = decide(rules_for(GateKind.COMPREHENSIVE), EXIT, read(), view_of(old, trip), NOW)
    assert d.verdict is ALLOW
    assert d.credential == CredentialRef(CredentialKind.APPOINTMENT, "A-trip")
    assert d.credential_until == trip.window_end


def test_credential_until_follows_the_credential() -> None:
    open_ended = replace(registration(), valid_until=None)
    d = decide(rules_for(GateKind.ORDINARY), ENTRY, read(), view_of(open_ended), NOW)
    assert (d.verdict, d.credential_until) == (ALLOW, None)
    d = decide(rules_for(GateKind.ORDINARY), ENTRY, read(), view_of(permit()), NOW)
    assert (d.verdict, d.credential_until) == (ALLOW, NOW + DAY)
    d = decide(rules_for(GateKind.ORDINARY), ENTRY, read(), view_of(permit("expired")), NOW)
    assert (d.verdict, d.credential_until) == (DENY, None)


# --- all reasons recorded ---------------------------------------------------------------------


def test_all_reasons_recorded_in_rule_order() -> None:
    rules = rules_for(
        GateKind.ORDINARY,
        colour_mismatch=ColourMismatchAction.NOTE,
        min_confidence=0.9,
        on_stale_allowlist=StaleAction.NOTE,
    )
    view = view_of(
        blacklist(),
        appointment("expired"),
        appointment("wrong-gate", id="A2"),
        registration("valid", C.HAZMAT, colour=YELLOW),
        permit("not-yet-valid", C.ENGINEERING),
        updated_at=None,
    )
    d = decide(rules, ENTRY, read(colour=BLUE, confidence=0.5), view, NOW)
    assert d.verdict is DENY
    assert codes(d) == (
        "blacklisted",
        "category-conflict",
        "category-not-admitted",
        "appointment-expired",
        "appointment-wrong-gate",
        "registration-valid",
        "permit-not-yet-valid",
        "low-confidence",
        "allowlist-stale",
    )
    assert d.category is C.HAZMAT
    assert d.credential is None


def test_all_reasons_recorded_on_exit() -> None:
    rules = rules_for(
        GateKind.ORDINARY,
        colour_mismatch=ColourMismatchAction.NOTE,
        min_confidence=0.9,
        on_stale_allowlist=StaleAction.DENY_ENTRIES,
    )
    view = view_of(
        blacklist(),
        appointment("consumed", colour=YELLOW),
        registration("expired", C.ENGINEERING, colour=YELLOW),
        updated_at=None,
    )
    d = decide(rules, EXIT, read(colour=BLUE, confidence=0.5), view, NOW)
    assert d.verdict is DENY
    assert codes(d) == (
        "blacklisted-on-exit",
        "category-conflict",
        "category-not-admitted",
        "appointment-consumed",
        "registration-expired",
        "colour-mismatch",
        "low-confidence",
        "allowlist-stale",
    )


def test_reason_order_is_declaration_order() -> None:
    view = view_of(registration(colour=YELLOW), updated_at=None)
    rules = rules_for(GateKind.ORDINARY, min_confidence=0.9, on_stale_allowlist=StaleAction.NOTE)
    d = decide(rules, ENTRY, read("WJ12345X", colour=BLUE, confidence=0.1), view, NOW)
    order = list(Reason)
    assert [order.index(r) for r in d.reasons] == sorted(order.index(r) for r in d.reasons)
    assert len(d.reasons) == len(set(d.reasons))


def test_reason_codes_are_kebab_case_and_unique() -> None:
    values = [r.value for r in Reason]
    assert len(values) == len(set(values))
    for v in values:
        assert v == v.lower()
        assert " " not in v
        assert "_" not in v


# --- the decision record ----------------------------------------------------------------------


def test_decision_carries_list_version_and_age() -> None:
    view = view_of(registration())
    d = decide(rules_for(GateKind.ORDINARY), ENTRY, read("粤a12345"), view, NOW)
    assert d.allowlist_version == 42
    assert d.allowlist_age_s == 3600.0
    assert not d.allowlist_stale
    assert d.plate == PLATE
    assert d.credential == CredentialRef(CredentialKind.REGISTRATION, "R1")
    record = d.to_record()
    assert json.loads(json.dumps(record)) == {
        "verdict": "allow",
        "reasons": ["registration-valid"],
        "plate": PLATE,
        "matched_plate": PLATE,
        "match": "exact",
        "category": "ordinary",
        "credential": ["registration", "R1"],
        "credential_until": (NOW + DAY).isoformat(),
        "consume_appointment": None,
        "allowlist_version": 42,
        "allowlist_age_s": 3600.0,
        "allowlist_stale": False,
        "explanation": "",
    }


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(rules_for(GateKind.ORDINARY), ENTRY, read(), view_of(), NOW.replace(tzinfo=None))


def test_decide_all_kinds() -> None:
    result = decide_all_kinds(read(), view_of(appointment()), NOW, GATE)
    assert set(result) == {(k, d) for k in GateKind for d in Direction}
    verdicts = {key: dec.verdict for key, dec in result.items()}
    assert verdicts == {
        (GateKind.COMPREHENSIVE, ENTRY): ALLOW,
        (GateKind.COMPREHENSIVE, EXIT): ALLOW,
        (GateKind.ORDINARY, ENTRY): DENY,
        (GateKind.ORDINARY, EXIT): DENY,
        (GateKind.EMERGENCY, ENTRY): DENY,
        (GateKind.EMERGENCY, EXIT): DENY,
    }
    assert result[(GateKind.COMPREHENSIVE, ENTRY)].consume_appointment == "A1"


# --- invariants over arbitrary allow-lists ----------------------------------------------------

_STATES = ["valid", "at-gate", "expired", "not-yet-valid", "wrong-gate"]


@st.composite
def _credentials(draw: st.DrawFn) -> list[Credential]:
    creds: list[Credential] = []
    for i in range(draw(st.integers(0, 2))):
        creds.append(
            registration(draw(st.sampled_from(_STATES)), draw(st.sampled_from(C)), id=f"R{i}")
        )
    for i in range(draw(st.integers(0, 2))):
        creds.append(permit(draw(st.sampled_from(_STATES)), draw(st.sampled_from(C)), id=f"P{i}"))
    for i in range(draw(st.integers(0, 2))):
        state = draw(st.sampled_from([*_STATES, "consumed"]))
        category = draw(st.sampled_from([C.HAZMAT, C.HAZWASTE]))
        creds.append(appointment(state, category, id=f"A{i}"))
    if draw(st.booleans()):
        creds.append(blacklist(draw(st.booleans())))
    return creds


@settings(max_examples=300, deadline=None)
@given(
    creds=_credentials(),
    kind=st.sampled_from(GateKind),
    direction=st.sampled_from(Direction),
    fuzzy=st.booleans(),
    mode=st.sampled_from(FuzzyMatching),
)
def test_policy_invariants(
    creds: list[Credential],
    kind: GateKind,
    direction: Direction,
    fuzzy: bool,
    mode: FuzzyMatching,
) -> None:
    # With ``fuzzy`` the credentials belong to a neighbour of the read plate.
    if fuzzy:
        creds = [_replate(c, NEIGHBOUR) for c in creds]
    view = view_of(*creds)
    rules = rules_for(kind, fuzzy_matching=mode)
    d = decide(rules, direction, read(), view, NOW)
    active_blacklist = any(isinstance(c, BlacklistEntry) and c.valid_at(NOW) for c in creds)

    if d.verdict is ALLOW:
        assert d.category is None or d.category in rules.admits[direction]
        assert d.credential is not None or (direction is EXIT and active_blacklist)
        if direction is ENTRY:
            assert not active_blacklist
            assert d.credential is not None
            if d.category is not None and d.category.dangerous:
                assert d.match is MatchKind.EXACT
                assert d.credential.kind is CredentialKind.APPOINTMENT
                assert d.consume_appointment == d.credential.id
        if fuzzy:
            assert d.category is not None and not d.category.dangerous
            assert not active_blacklist
            assert mode is FuzzyMatching.ALLOW or direction is EXIT
    if fuzzy and mode is FuzzyMatching.OFF:
        assert d.match is MatchKind.NONE
    assert bool(d.explanation) is (d.match is MatchKind.FUZZY)
    if d.verdict is DENY:
        assert d.credential is None
        assert d.consume_appointment is None
    if direction is EXIT:
        assert d.consume_appointment is None
    if not creds:
        assert d.verdict is (DENY if direction is ENTRY else CONFIRM)
    assert list(d.reasons) == sorted(set(d.reasons), key=list(Reason).index)


def _replate(c: Credential, plate: str) -> Credential:
    return replace(c, plate=plate)
