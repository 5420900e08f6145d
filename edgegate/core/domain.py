"""Domain vocabulary shared by the core, the shell and the configuration.

All instants are timezone-aware ``datetime`` values in UTC. Local time (the gate's zone,
Asia/Shanghai by default) matters only when parsing or displaying windows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Protocol, TypedDict


class GateKind(enum.StrEnum):
    COMPREHENSIVE = "comprehensive"  # 综合卡口
    ORDINARY = "ordinary"  # 普通卡口
    EMERGENCY = "emergency"  # 应急卡口


class Direction(enum.StrEnum):
    ENTRY = "entry"
    EXIT = "exit"


class VehicleCategory(enum.StrEnum):
    HAZMAT = "hazmat"  # dangerous goods transport
    HAZWASTE = "hazwaste"  # hazardous waste transport
    ENGINEERING = "engineering"
    ORDINARY = "ordinary"
    EMERGENCY = "emergency"  # emergency rescue

    @property
    def dangerous(self) -> bool:
        """Hazmat and hazwaste: need appointments and never pass on a fuzzy match alone."""
        return self in (VehicleCategory.HAZMAT, VehicleCategory.HAZWASTE)


class PlateColour(enum.StrEnum):
    BLUE = "blue"
    YELLOW = "yellow"  # large vehicles
    GREEN = "green"  # new-energy small vehicles
    YELLOW_GREEN = "yellow-green"  # new-energy large vehicles
    WHITE = "white"  # police, military, armed police
    BLACK = "black"  # foreign, Hong Kong / Macao
    UNKNOWN = "unknown"


class HolderType(enum.StrEnum):
    """Who a registration belongs to."""

    COMPANY = "company"  # a tenant company's vehicle
    DEPARTMENT = "department"  # park management, fire brigade, security...
    COMMUTER = "commuter"  # an employee's private car


class BlacklistReason(enum.StrEnum):
    SPEEDING = "speeding"
    ILLEGAL_PARKING = "illegal-parking"
    OVERSTAY = "overstay"
    FORGED_PERMIT = "forged-permit"
    SAFETY_VIOLATION = "safety-violation"
    OTHER = "other"


class MatchKind(enum.StrEnum):
    """How a read was matched to the allow-list."""

    EXACT = "exact"
    FUZZY = "fuzzy"  # one OCR-confusable substitution away
    NONE = "none"


class CredentialKind(enum.StrEnum):
    REGISTRATION = "registration"
    PERMIT = "permit"
    APPOINTMENT = "appointment"
    BLACKLIST = "blacklist"


def _within(now: datetime, start: datetime, end: datetime | None) -> bool:
    """Windows are half-open: ``start <= now < end``; no end means open-ended."""
    return start <= now and (end is None or now < end)


class _ValidFromUntil:
    """Valid from ``valid_from`` until ``valid_until`` (half-open; no end: open-ended)."""

    __slots__ = ()
    valid_from: datetime
    valid_until: datetime | None

    def valid_at(self, now: datetime) -> bool:
        return _within(now, self.valid_from, self.valid_until)


@dataclass(frozen=True, slots=True, kw_only=True)
class _VehicleCredential:
    """The fields registrations, permits and appointments start with."""

    id: str
    plate: str
    colour: PlateColour = PlateColour.UNKNOWN
    category: VehicleCategory  # an appointment's is HAZMAT or HAZWASTE


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration(_VehicleCredential, _ValidFromUntil):
    """A registered vehicle: passes while its registration is valid."""

    holder: HolderType
    organisation: str  # company or department name; the employee's employer for commuters
    valid_from: datetime
    valid_until: datetime | None = None
    gates: frozenset[str] = frozenset()  # empty: every gate of the park

    kind: ClassVar[CredentialKind] = CredentialKind.REGISTRATION


@dataclass(frozen=True, slots=True, kw_only=True)
class TemporaryPermit(_VehicleCredential, _ValidFromUntil):
    """A visitor or one-off delivery: passes inside its window, at its gates."""

    visitor: str  # driver or visiting company
    host: str  # who in the park invited the vehicle
    purpose: str = ""
    valid_from: datetime
    valid_until: datetime
    gates: frozenset[str] = frozenset()  # empty: every gate of the park

    kind: ClassVar[CredentialKind] = CredentialKind.PERMIT


@dataclass(frozen=True, slots=True, kw_only=True)
class Appointment(_VehicleCredential):
    """A hazmat or hazwaste appointment (预约), consumed by the entry it admits."""

    window_start: datetime
    window_end: datetime
    destination: str  # destination company
    un_number: str  # four digits, e.g. "1203" (gasoline)
    hazard_class: str  # "3", "2.1", "6.1", ...
    waybill: str  # e-waybill number
    gates: frozenset[str] = frozenset()  # gates it may use; empty: every comprehensive gate
    consumed: bool = False

    kind: ClassVar[CredentialKind] = CredentialKind.APPOINTMENT

    def valid_at(self, now: datetime) -> bool:
        return not self.consumed and _within(now, self.window_start, self.window_end)


@dataclass(frozen=True, slots=True, kw_only=True)
class BlacklistEntry:
    """A refused plate, with where the listing came from and for how long."""

    id: str
    plate: str
    reason: BlacklistReason
    detail: str = ""
    source: str  # e.g. "park-security", "traffic-police", "central"
    valid_from: datetime
    valid_until: datetime | None = None

    kind: ClassVar[CredentialKind] = CredentialKind.BLACKLIST

    def valid_at(self, now: datetime) -> bool:
        return _within(now, self.valid_from, self.valid_until)


Credential = Registration | TemporaryPermit | Appointment | BlacklistEntry


class VehicleFields(TypedDict):
    """What registrations, permits and appointments all carry, besides their category."""

    id: str
    plate: str
    colour: PlateColour
    gates: frozenset[str]


@dataclass(frozen=True, slots=True)
class Credentials:
    """Everything the allow-list holds for one normalised plate."""

    plate: str
    registrations: tuple[Registration, ...] = ()
    permits: tuple[TemporaryPermit, ...] = ()
    appointments: tuple[Appointment, ...] = ()
    blacklist: tuple[BlacklistEntry, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.registrations or self.permits or self.appointments or self.blacklist)

    def all(self) -> tuple[Credential, ...]:
        return (*self.registrations, *self.permits, *self.appointments, *self.blacklist)


@dataclass(frozen=True, slots=True)
class FuzzyMatch:
    """A plate in the allow-list one OCR-confusable substitution away from the read."""

    credentials: Credentials
    position: int  # index in the normalised plate where the substitution applies
    read_char: str
    list_char: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InsideElsewhere:
    """Central saw the plate enter the park at ``gate`` at ``entered_at`` and not leave yet
    (its park-wide deltas say so): at another gate's entry it is "already inside"."""

    gate: str
    entered_at: datetime


class AllowListView(Protocol):
    """What the policy needs from the allow-list projection. Pure reads, no I/O."""

    @property
    def version(self) -> int: ...

    @property
    def updated_at(self) -> datetime | None:
        """When the list was last brought up to date (import, snapshot or delta)."""
        ...

    def exact(self, plate: str) -> Credentials:
        """Credentials of the normalised plate; empty ``Credentials`` when none."""
        ...

    def fuzzy(self, plate: str) -> list[FuzzyMatch]:
        """Plates one confusable substitution away that have credentials."""
        ...

    @property
    def tampered(self) -> bool:
        """Whether the stored list failed its integrity check (what it holds may be false)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PlateRead:
    """One plate as a reader reported it."""

    plate: str  # as read (not yet normalised)
    colour: PlateColour = PlateColour.UNKNOWN
    confidence: float = 1.0  # 0..1
    reader: str = ""
    image_ref: str = ""
    raw: bytes = b""
    read_at: datetime | None = None
