"""The access policy: what a gate decides for one plate read. Pure: no I/O, no clock reads.
One module (over 700 lines) because the rules below and the decision's trace share their
checks (``_faults``, the reason codes): the trace records what each rule found, as it found it.

Entries follow docs/design.md §1 in order of precedence:

1. an active blacklist entry refuses;
2. the gate's ``admits[direction]`` must hold the vehicle's category (and so must
   ``KIND_ADMITS`` for the gate's kind: a configuration can narrow, never widen);
3. hazmat and hazwaste need an appointment valid now (half-open window, not consumed, this
   gate in its gates or no gates listed); a registration or permit never admits them;
4. a registration valid now (at this gate when it lists gates) admits;
5. a temporary permit valid now at this gate admits;
6. anything else is refused.

Every rule is evaluated and every finding recorded, even after an earlier rule decided:
the log shows that a refused blacklisted vehicle also held a valid registration.

The vehicle's category comes from its credentials. Lapsed appointments (consumed, expired,
future) count too — a tanker that came in on this morning's appointment is still a tanker on
its way out — unless an appointment usable now exists, whose category is today's load. When
the credentials disagree the most restrictive category wins (hazmat, hazwaste, engineering,
ordinary, emergency) and ``category-conflict`` is recorded.

Exits, decided as a chemical-park gate operator expects — a vehicle is never trapped inside,
but it does not leave through a gate its category may not use:

- the category rule applies unchanged: hazmat and hazwaste never leave through an ordinary
  gate (``category-not-admitted`` → deny, the guard sends them to a comprehensive gate);
- a blacklisted vehicle may leave (``blacklisted-on-exit`` recorded for security);
- credentials need not be valid: expired, consumed, future or other-gate credentials still
  identify a park vehicle; their state is recorded and the exit allowed;
- a plate with no registration, permit or appointment at all (and no active blacklist entry)
  may be an intruder or a misread: ``exit-unknown-vehicle`` → a guard confirms.

Fuzzy matches (one OCR-confusable substitution) are tried only when the exact plate has no
allow-list entry at all — an exact blacklist entry must never be bypassed by a registered
neighbour — and ``rules.fuzzy_matching`` is not ``off``. A fuzzily matched plate is a
well-formed plate that may belong to another vehicle. The candidate is evaluated as if read
exactly, then: ``fuzzy-match`` is recorded; a blacklisted candidate gives ``confirm`` (never
allow); on entry a dangerous candidate that would be allowed needs confirmation, and with
``fuzzy_matching = "confirm"`` (the default) so does any other (``fuzzy-match-needs-
confirmation``); on exit a dangerous candidate, or one that would be refused, needs
confirmation (the vehicle may be an unknown one leaving). Several candidates give
``fuzzy-ambiguous`` → confirm. ``explain`` says it in plain words, naming the credential.

Then, in this order: a colour mismatch acts per ``rules.colour_mismatch``; a confidence below
``rules.min_confidence`` turns allow into confirm; a stale allow-list acts per
``rules.on_stale_allowlist`` (confirm affects allowed entries, deny-entries refuses every
entry; exits decide as usual). A tampered allow-list (one that failed its integrity check,
``view.tampered``) may hold false entries: ``allowlist-tampered`` is recorded and an entry it
would allow needs a guard whatever the settings (a blacklisted vehicle is still refused);
exits decide as usual. A vehicle central saw enter at another gate and not leave
(``inside``, from central's park-wide deltas) is ``already-inside`` on entry: a guard
confirms what would be allowed, the explanation says where and when it entered. A read
whose normalised plate is not well formed is looked up
all the same (the list may hold odd plates) and ``plate-invalid-format`` recorded; an empty
one is ``plate-unreadable``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from edgegate.core.domain import (
    AllowListView,
    Appointment,
    BlacklistEntry,
    CredentialKind,
    Credentials,
    Direction,
    FuzzyMatch,
    GateKind,
    InsideElsewhere,
    MatchKind,
    PlateColour,
    PlateRead,
    Registration,
    TemporaryPermit,
    VehicleCategory,
)
from edgegate.core.events import (
    AccessDecided,
    ClockStepMark,
    DecisionTrace,
    TracedCandidate,
    TracedCredential,
    TracedRules,
)
from edgegate.core.plates import is_valid, normalisation_steps, normalise
from edgegate.core.rules import (
    KIND_ADMITS,
    ColourMismatchAction,
    FuzzyMatching,
    GateRules,
    StaleAction,
)


class Verdict(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    CONFIRM = "confirm"  # a guard must confirm before the barrier opens


class Reason(enum.StrEnum):
    """Stable codes recorded in the event log. Declaration order is the order of
    ``Decision.reasons``; append new codes where they belong, never rename one."""

    # The read itself.
    PLATE_UNREADABLE = "plate-unreadable"  # nothing left after normalisation
    PLATE_INVALID_FORMAT = "plate-invalid-format"  # not a well-formed plate; looked up anyway
    # Identity by fuzzy matching.
    FUZZY_MATCH = "fuzzy-match"
    FUZZY_AMBIGUOUS = "fuzzy-ambiguous"
    FUZZY_BLACKLISTED = "fuzzy-blacklisted"
    FUZZY_DANGEROUS = "fuzzy-dangerous-needs-confirmation"
    FUZZY_NEEDS_CONFIRMATION = "fuzzy-match-needs-confirmation"  # fuzzy_matching = "confirm"
    # Rule 1.
    BLACKLISTED = "blacklisted"
    BLACKLISTED_ON_EXIT = "blacklisted-on-exit"
    # Rule 2.
    CATEGORY_CONFLICT = "category-conflict"  # credentials disagree; the most restrictive used
    CATEGORY_NOT_ADMITTED = "category-not-admitted"
    # Rule 3.
    APPOINTMENT_VALID = "appointment-valid"
    APPOINTMENT_MISSING = "appointment-missing"
    APPOINTMENT_NOT_YET_VALID = "appointment-not-yet-valid"
    APPOINTMENT_EXPIRED = "appointment-expired"
    APPOINTMENT_CONSUMED = "appointment-consumed"
    APPOINTMENT_WRONG_GATE = "appointment-wrong-gate"
    # Rule 4.
    REGISTRATION_VALID = "registration-valid"
    REGISTRATION_NOT_YET_VALID = "registration-not-yet-valid"
    REGISTRATION_EXPIRED = "registration-expired"
    REGISTRATION_WRONG_GATE = "registration-wrong-gate"
    # Rule 5.
    PERMIT_VALID = "permit-valid"
    PERMIT_NOT_YET_VALID = "permit-not-yet-valid"
    PERMIT_EXPIRED = "permit-expired"
    PERMIT_WRONG_GATE = "permit-wrong-gate"
    # Rule 6.
    NO_CREDENTIAL = "no-credential"  # no registration, permit or appointment at all
    EXIT_UNKNOWN_VEHICLE = "exit-unknown-vehicle"
    # Modifiers.
    COLOUR_MISMATCH = "colour-mismatch"
    LOW_CONFIDENCE = "low-confidence"
    ALLOWLIST_STALE = "allowlist-stale"
    ALLOWLIST_TAMPERED = "allowlist-tampered"
    ALREADY_INSIDE = "already-inside"  # central saw it enter elsewhere and not leave


class CredentialRef(NamedTuple):
    """Which credential a decision rests on."""

    kind: CredentialKind
    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The policy's answer for one read at one gate and direction."""

    verdict: Verdict
    reasons: tuple[Reason, ...]  # every finding, in ``Reason`` declaration order
    plate: str  # the read, normalised
    matched_plate: str | None  # the allow-list plate the read was matched to
    match: MatchKind
    category: VehicleCategory | None  # None when the vehicle is unknown or ambiguous
    credential: CredentialRef | None  # what admits (or lets leave); None when denied
    credential_until: datetime | None  # end of that credential's window (None: open-ended)
    consume_appointment: str | None  # appointment the entry consumes once the vehicle passes
    allowlist_version: int
    allowlist_age_s: float | None  # None when the list's update time is unknown
    allowlist_stale: bool
    # Plain words for what the codes cannot say: a fuzzy match, and on which credential.
    explanation: str = ""
    # What the policy looked at (plain data the event carries); not part of the outcome.
    trace: DecisionTrace | None = field(default=None, compare=False)
    # An entry of a vehicle central saw enter at another gate and not leave.
    inside_elsewhere: InsideElsewhere | None = None

    def to_event(
        self,
        *,
        direction: Direction,
        plate_read: str,
        lane: str | None,
        read_seq: int | None,
        clock_step: ClockStepMark | None = None,
    ) -> AccessDecided:
        """The ``access.decided`` event recording this decision; ``clock_step``: the clock
        step it was taken after, not yet followed by a sync (docs/design.md §3)."""
        return AccessDecided(
            lane=lane,
            direction=direction,
            plate_read=plate_read,
            plate=self.plate,
            matched_plate=self.matched_plate,
            match=self.match,
            verdict=str(self.verdict),
            reasons=tuple(str(r) for r in self.reasons),
            category=self.category,
            credential_kind=None if self.credential is None else str(self.credential.kind),
            credential_id=None if self.credential is None else self.credential.id,
            credential_until=self.credential_until,
            consumed_appointment=self.consume_appointment,
            allowlist_version=self.allowlist_version,
            allowlist_age_s=self.allowlist_age_s,
            allowlist_stale=self.allowlist_stale,
            read_seq=read_seq,
            explanation=self.explanation,
            trace=self.trace,
            clock_step=clock_step,
            inside_elsewhere=self.inside_elsewhere,
        )

    def to_record(self) -> dict[str, object]:
        """Plain values for the event log."""
        return {
            "verdict": str(self.verdict),
            "reasons": [str(r) for r in self.reasons],
            "plate": self.plate,
            "matched_plate": self.matched_plate,
            "match": str(self.match),
            "category": None if self.category is None else str(self.category),
            "credential": None
            if self.credential is None
            else [str(self.credential.kind), self.credential.id],
            "credential_until": None
            if self.credential_until is None
            else self.credential_until.isoformat(),
            "consume_appointment": self.consume_appointment,
            "allowlist_version": self.allowlist_version,
            "allowlist_age_s": self.allowlist_age_s,
            "allowlist_stale": self.allowlist_stale,
            "explanation": self.explanation,
        }


_ORDER = {reason: i for i, reason in enumerate(Reason)}

# Most restrictive first. Engineering ranks above ordinary because it has a dwell limit;
# emergency last because every gate kind admits it.
_RANK = {
    c: i
    for i, c in enumerate(
        (
            VehicleCategory.HAZMAT,
            VehicleCategory.HAZWASTE,
            VehicleCategory.ENGINEERING,
            VehicleCategory.ORDINARY,
            VehicleCategory.EMERGENCY,
        )
    )
}

_Admitting = Appointment | Registration | TemporaryPermit


@dataclass(slots=True)
class _Outcome:
    verdict: Verdict
    reasons: set[Reason] = field(default_factory=set)
    category: VehicleCategory | None = None
    # The credential the outcome rests on, kept even when refused so that later checks
    # (colour) can still report on it; the Decision drops it for a deny.
    subject: _Admitting | None = None


class _Codes(NamedTuple):
    valid: Reason
    not_yet: Reason
    expired: Reason
    wrong_gate: Reason


_REGISTRATION = _Codes(
    Reason.REGISTRATION_VALID,
    Reason.REGISTRATION_NOT_YET_VALID,
    Reason.REGISTRATION_EXPIRED,
    Reason.REGISTRATION_WRONG_GATE,
)
_PERMIT = _Codes(
    Reason.PERMIT_VALID,
    Reason.PERMIT_NOT_YET_VALID,
    Reason.PERMIT_EXPIRED,
    Reason.PERMIT_WRONG_GATE,
)
_APPOINTMENT = _Codes(
    Reason.APPOINTMENT_VALID,
    Reason.APPOINTMENT_NOT_YET_VALID,
    Reason.APPOINTMENT_EXPIRED,
    Reason.APPOINTMENT_WRONG_GATE,
)


def _window(c: _Admitting) -> tuple[datetime, datetime | None]:
    if isinstance(c, Appointment):
        return c.window_start, c.window_end
    return c.valid_from, c.valid_until


def _faults(c: _Admitting, now: datetime, gate_id: str, codes: _Codes) -> list[Reason]:
    """Why a credential does not admit here now; empty when it does."""
    faults: list[Reason] = []
    if isinstance(c, Appointment) and c.consumed:
        faults.append(Reason.APPOINTMENT_CONSUMED)
    start, end = _window(c)
    # Half-open like ``domain._within``: valid at the start instant, invalid at the end one.
    if now < start:
        faults.append(codes.not_yet)
    elif end is not None and now >= end:
        faults.append(codes.expired)
    if c.gates and gate_id not in c.gates:
        faults.append(codes.wrong_gate)
    return faults


def _check(
    creds: Sequence[_Admitting], now: datetime, gate_id: str, codes: _Codes
) -> tuple[_Admitting | None, set[Reason]]:
    """The first credential usable here now, or every reason none is."""
    faults: set[Reason] = set()
    for c in creds:
        found = _faults(c, now, gate_id, codes)
        if not found:
            return c, {codes.valid}
        faults.update(found)
    return None, faults


def _usable_appointment(creds: Credentials, now: datetime, gate_id: str) -> Appointment | None:
    usable = [a for a in creds.appointments if not _faults(a, now, gate_id, _APPOINTMENT)]
    # Consume the one that lapses first, so the others remain for later trips.
    return min(usable, key=lambda a: (a.window_end, a.id), default=None)


def _category(
    creds: Credentials, appointment: Appointment | None
) -> tuple[VehicleCategory | None, bool]:
    cats = {r.category for r in creds.registrations} | {p.category for p in creds.permits}
    if appointment is not None:
        cats.add(appointment.category)
    else:
        cats.update(a.category for a in creds.appointments)
    if not cats:
        return None, False
    return min(cats, key=_RANK.__getitem__), len(cats) > 1


def _active_blacklist(creds: Credentials, now: datetime) -> list[BlacklistEntry]:
    return [b for b in creds.blacklist if b.valid_at(now)]


def _evaluate(
    rules: GateRules, direction: Direction, creds: Credentials, now: datetime
) -> _Outcome:
    """Rules 1-6 for a plate whose identity is taken as certain."""
    gate = rules.gate_id
    entry = direction is Direction.ENTRY
    reasons: set[Reason] = set()

    blacklisted = bool(_active_blacklist(creds, now))
    if blacklisted:
        reasons.add(Reason.BLACKLISTED if entry else Reason.BLACKLISTED_ON_EXIT)

    appointment = _usable_appointment(creds, now, gate)
    category, conflict = _category(creds, appointment)
    if conflict:
        reasons.add(Reason.CATEGORY_CONFLICT)
    # The kind's table caps the configuration too: a misconfigured ordinary gate must still
    # never pass hazmat.
    admitted_here = category is None or (
        category in rules.admits.get(direction, frozenset())
        and category in KIND_ADMITS[rules.kind][direction]
    )
    if not admitted_here:
        reasons.add(Reason.CATEGORY_NOT_ADMITTED)
    dangerous = category is not None and category.dangerous

    if creds.appointments:
        _, found = _check(creds.appointments, now, gate, _APPOINTMENT)
        reasons.update(found)
    elif entry and dangerous:
        reasons.add(Reason.APPOINTMENT_MISSING)
    registration, found = _check(creds.registrations, now, gate, _REGISTRATION)
    reasons.update(found)
    permit, found = _check(creds.permits, now, gate, _PERMIT)
    reasons.update(found)

    known = bool(creds.registrations or creds.permits or creds.appointments)
    if entry:
        subject: _Admitting | None = (
            appointment if dangerous else (appointment or registration or permit)
        )
        if not known:
            reasons.add(Reason.NO_CREDENTIAL)
        allowed = not blacklisted and admitted_here and subject is not None
        verdict = Verdict.ALLOW if allowed else Verdict.DENY
        return _Outcome(verdict, reasons, category, subject)

    if not known:
        if blacklisted:
            return _Outcome(Verdict.ALLOW, reasons, category)
        reasons.add(Reason.EXIT_UNKNOWN_VEHICLE)
        return _Outcome(Verdict.CONFIRM, reasons, category)
    subject = appointment or registration or permit or _most_recent(creds)
    return _Outcome(Verdict.ALLOW if admitted_here else Verdict.DENY, reasons, category, subject)


def _most_recent(creds: Credentials) -> _Admitting:
    """The lapsed credential most likely behind the current stay: the latest to start."""
    pool: list[_Admitting] = [*creds.appointments, *creds.registrations, *creds.permits]
    # max() keeps the first of equals, so rule order breaks ties.
    return max(pool, key=lambda c: _window(c)[0])


def _fuzzy_single(
    rules: GateRules, direction: Direction, creds: Credentials, now: datetime
) -> _Outcome:
    outcome = _evaluate(rules, direction, creds, now)
    outcome.reasons.add(Reason.FUZZY_MATCH)
    dangerous = outcome.category is not None and outcome.category.dangerous
    if _active_blacklist(creds, now):
        outcome.reasons.add(Reason.FUZZY_BLACKLISTED)
        outcome.verdict = Verdict.CONFIRM
    elif direction is Direction.ENTRY:
        if dangerous and outcome.verdict is Verdict.ALLOW:
            outcome.reasons.add(Reason.FUZZY_DANGEROUS)
            outcome.verdict = Verdict.CONFIRM
        elif rules.fuzzy_matching is not FuzzyMatching.ALLOW and outcome.verdict is Verdict.ALLOW:
            outcome.reasons.add(Reason.FUZZY_NEEDS_CONFIRMATION)
            outcome.verdict = Verdict.CONFIRM
    else:
        # Leaving, the read may also be an unknown vehicle, which needs a guard anyway.
        if dangerous:
            outcome.reasons.add(Reason.FUZZY_DANGEROUS)
        if dangerous or outcome.verdict is not Verdict.ALLOW:
            outcome.verdict = Verdict.CONFIRM
    return outcome


def _fuzzy_ambiguous(candidates: Iterable[Credentials], now: datetime) -> _Outcome:
    outcome = _Outcome(Verdict.CONFIRM, {Reason.FUZZY_AMBIGUOUS})
    for creds in candidates:
        if _active_blacklist(creds, now):
            outcome.reasons.add(Reason.FUZZY_BLACKLISTED)
        category, _ = _category(creds, None)
        if category is not None and category.dangerous:
            outcome.reasons.add(Reason.FUZZY_DANGEROUS)
    return outcome


def decide(
    rules: GateRules,
    direction: Direction,
    read: PlateRead,
    view: AllowListView,
    now: datetime,
    *,
    trace: bool = True,
    inside: Callable[[str], InsideElsewhere | None] | None = None,
) -> Decision:
    """Decide one read at ``rules.gate_id`` in ``direction`` at ``now`` (aware UTC);
    ``trace``: record what the policy looked at (``Decision.trace``). ``inside``: where and
    when central saw a (matched) plate enter at another gate and not leave, if it did; an
    entry it would allow then needs a guard (``already-inside``)."""
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    entry = direction is Direction.ENTRY
    plate = normalise(read.plate)
    read_reasons: set[Reason] = set()
    if not plate:
        read_reasons.add(Reason.PLATE_UNREADABLE)
    elif not is_valid(plate):
        read_reasons.add(Reason.PLATE_INVALID_FORMAT)

    matched: str | None = None
    match = MatchKind.NONE
    candidates: dict[str, FuzzyMatch] = {}
    exact = view.exact(plate) if plate else Credentials(plate)
    if not exact.empty:
        outcome = _evaluate(rules, direction, exact, now)
        matched, match = plate, MatchKind.EXACT
    else:
        if plate and rules.fuzzy_matching is not FuzzyMatching.OFF:
            for fm in view.fuzzy(plate):
                if not fm.credentials.empty:
                    candidates.setdefault(fm.credentials.plate, fm)
        if len(candidates) == 1:
            ((matched, single),) = candidates.items()
            match = MatchKind.FUZZY
            outcome = _fuzzy_single(rules, direction, single.credentials, now)
        elif candidates:
            match = MatchKind.FUZZY
            outcome = _fuzzy_ambiguous((fm.credentials for fm in candidates.values()), now)
        elif entry:
            outcome = _Outcome(Verdict.DENY, {Reason.NO_CREDENTIAL})
        else:
            outcome = _Outcome(Verdict.CONFIRM, {Reason.EXIT_UNKNOWN_VEHICLE})
    outcome.reasons |= read_reasons

    subject = outcome.subject
    if (
        rules.colour_mismatch is not ColourMismatchAction.IGNORE
        and subject is not None
        and PlateColour.UNKNOWN not in (read.colour, subject.colour)
        and read.colour != subject.colour
    ):
        outcome.reasons.add(Reason.COLOUR_MISMATCH)
        if rules.colour_mismatch is ColourMismatchAction.CONFIRM:
            _downgrade(outcome)

    # Written as "not >=" so that a NaN confidence from a confused reader counts as low.
    if not read.confidence >= rules.min_confidence:
        outcome.reasons.add(Reason.LOW_CONFIDENCE)
        _downgrade(outcome)

    updated = view.updated_at
    age = None if updated is None else (now - updated).total_seconds()
    max_age = rules.allowlist_max_age
    stale = max_age is not None and (updated is None or now - updated > max_age)
    if stale:
        outcome.reasons.add(Reason.ALLOWLIST_STALE)
        if entry and rules.on_stale_allowlist is StaleAction.CONFIRM:
            _downgrade(outcome)
        elif entry and rules.on_stale_allowlist is StaleAction.DENY_ENTRIES:
            outcome.verdict = Verdict.DENY
    if view.tampered:
        outcome.reasons.add(Reason.ALLOWLIST_TAMPERED)
        if entry:
            _downgrade(outcome)
    elsewhere = None
    if entry and inside is not None and (matched or plate):
        elsewhere = inside(matched or plate)
        if elsewhere is not None:
            outcome.reasons.add(Reason.ALREADY_INSIDE)
            _downgrade(outcome)

    passes = outcome.verdict is not Verdict.DENY
    credential = CredentialRef(subject.kind, subject.id) if passes and subject is not None else None
    until = _window(subject)[1] if credential is not None and subject is not None else None
    consume = subject.id if passes and entry and isinstance(subject, Appointment) else None
    explanation = _explain_fuzzy(plate, list(candidates.values()), credential, outcome.verdict)
    if elsewhere is not None:
        already = (
            f"already inside: central saw {matched or plate} enter at {elsewhere.gate} at"
            f" {elsewhere.entered_at.isoformat(timespec='seconds')} and not leave"
        )
        explanation = f"{explanation}; {already}" if explanation else already
    traced = _trace(rules, direction, read, plate, exact, candidates, view, now) if trace else None
    return Decision(
        verdict=outcome.verdict,
        reasons=tuple(sorted(outcome.reasons, key=_ORDER.__getitem__)),
        plate=plate,
        matched_plate=matched,
        match=match,
        category=outcome.category,
        credential=credential,
        credential_until=until,
        consume_appointment=consume,
        allowlist_version=view.version,
        allowlist_age_s=age,
        allowlist_stale=stale,
        explanation=explanation,
        trace=traced,
        inside_elsewhere=elsewhere,
    )


_BLACKLISTED_NOW = ("blacklisted",)
_BLACKLIST_NOT_IN_FORCE = ("blacklist-not-in-force",)
_CODES = {
    CredentialKind.REGISTRATION: _REGISTRATION,
    CredentialKind.PERMIT: _PERMIT,
    CredentialKind.APPOINTMENT: _APPOINTMENT,
}


def _traced(c: _Admitting | BlacklistEntry, now: datetime, gate_id: str) -> TracedCredential:
    vehicle: dict[str, Any]
    checks: tuple[str, ...]
    if isinstance(c, BlacklistEntry):
        start, end = c.valid_from, c.valid_until
        checks = _BLACKLISTED_NOW if c.valid_at(now) else _BLACKLIST_NOT_IN_FORCE
        vehicle = {}
    else:
        codes = _CODES[c.kind]
        start, end = _window(c)
        faults = _faults(c, now, gate_id, codes)
        checks = tuple(str(f) for f in faults) if faults else (codes.valid.value,)
        vehicle = {
            "colour": c.colour,
            "category": c.category,
            "gates": tuple(sorted(c.gates)),
            "consumed": isinstance(c, Appointment) and c.consumed,
        }
    return TracedCredential(
        kind=c.kind.value,
        id=c.id,
        plate=c.plate,
        valid_from=start,
        valid_until=end,
        checks=checks,
        **vehicle,
    )


# A lane decides under the same rules for its whole life: their trace is built once. The
# rules object is kept beside it so that a new object never finds an old one's trace.
_RULES_TRACES: dict[tuple[int, Direction], tuple[GateRules, TracedRules]] = {}


def _traced_rules(rules: GateRules, direction: Direction) -> TracedRules:
    key = (id(rules), direction)
    cached = _RULES_TRACES.get(key)
    if cached is not None and cached[0] is rules:
        return cached[1]
    admits = rules.admits.get(direction, frozenset())
    traced = TracedRules(
        gate_id=rules.gate_id,
        gate_kind=rules.kind,
        admits=tuple(c for c in VehicleCategory if c in admits),
        fuzzy_matching=rules.fuzzy_matching.value,
        min_confidence=rules.min_confidence,
        colour_mismatch=rules.colour_mismatch.value,
        on_stale_allowlist=rules.on_stale_allowlist.value,
        allowlist_max_age=rules.allowlist_max_age,
    )
    if len(_RULES_TRACES) >= 64:  # what-if and tests make many rules: stay bounded
        _RULES_TRACES.clear()
    _RULES_TRACES[key] = (rules, traced)
    return traced


def _trace(
    rules: GateRules,
    direction: Direction,
    read: PlateRead,
    plate: str,
    exact: Credentials,
    candidates: dict[str, FuzzyMatch],
    view: AllowListView,
    now: datetime,
) -> DecisionTrace:
    """The decision's trace: only the credentials of the candidate plates, so it stays small."""
    gate = rules.gate_id
    if not exact.empty:
        found: tuple[TracedCandidate, ...] = (TracedCandidate(plate=plate, match=MatchKind.EXACT),)
        groups: list[Credentials] = [exact]
    else:
        found = tuple(
            TracedCandidate(
                plate=fm.credentials.plate,
                match=MatchKind.FUZZY,
                position=fm.position,
                read_char=fm.read_char,
                list_char=fm.list_char,
            )
            for fm in candidates.values()
        )
        groups = [fm.credentials for fm in candidates.values()]
    return DecisionTrace(
        colour=read.colour,
        confidence=read.confidence,
        normalised=normalisation_steps(read.plate) if read.plate != plate else (),
        candidates=found,
        credentials=tuple(_traced(c, now, gate) for g in groups for c in g.all()),
        rules=_traced_rules(rules, direction),
        decided_at=now,
        allowlist_updated_at=view.updated_at,
        allowlist_tampered=view.tampered,
    )


def _explain_fuzzy(
    plate: str, matches: list[FuzzyMatch], credential: CredentialRef | None, verdict: Verdict
) -> str:
    """The plain words of a decision on a fuzzy match ("" for any other decision)."""
    if not matches:
        return ""
    outcome = {
        Verdict.ALLOW: "allowed on it",
        Verdict.CONFIRM: "a guard must confirm which vehicle this is before it passes",
        Verdict.DENY: "refused",
    }[verdict]
    if len(matches) > 1:
        listed = ", ".join(sorted(m.credentials.plate for m in matches))
        return (
            f"the plate read as {plate} is not on the allow-list and matched several listed "
            f"plates only fuzzily ({listed}), each one OCR-confusable character away; {outcome}"
        )
    (fm,) = matches
    if credential is not None:
        named = f"{credential.kind} {credential.id}"
    else:
        named = ", ".join(f"{c.kind} {c.id}" for c in fm.credentials.all())
    return (
        f"matched only fuzzily: read {plate}, the allow-list has {fm.credentials.plate} "
        f"({fm.read_char} read where it has {fm.list_char}, character {fm.position + 1}), a "
        f"well-formed plate that may belong to another vehicle; credential {named}; {outcome}"
    )


def _downgrade(outcome: _Outcome) -> None:
    if outcome.verdict is Verdict.ALLOW:
        outcome.verdict = Verdict.CONFIRM


def decide_all_kinds(
    read: PlateRead, view: AllowListView, now: datetime, gate_id: str
) -> dict[tuple[GateKind, Direction], Decision]:
    """What the policy would say for ``read`` at an unnarrowed gate of each kind, both ways."""
    return {
        (kind, direction): decide(GateRules.for_kind(gate_id, kind), direction, read, view, now)
        for kind in GateKind
        for direction in Direction
    }
