"""What-if: every recorded decision taken again with its recorded inputs (plate as read,
colour, confidence, instant, lane direction) under another allow-list, another configuration
or this software version, in one streaming pass over the log.

The events are a ``Source``'s stored rows (a gate's log file or central's copy), in batches
as ``Source.batches()`` gives them; only the rows of the types it needs are decoded.

Where the credentials and rules come from, per decision:

- ``allowlist`` given: that list, for every decision; otherwise the credentials the decision
  recorded (its v4 trace, read back by ``replay.recorded``), or for a decision before v4 the
  list stored in the gate's file (``stored_allowlist``: only a gate's log file has one, see
  ``stored_allowlist_of``), when
  it is the version the decision used, with appointments consumed later in the log handed
  back (the log says when each was consumed);
- ``rules`` given: those, for every decision; otherwise those the decision recorded (v4), or
  for a decision before v4 ``fallback_rules`` (the configuration the gate ran with).

Never writes: the stored list is copied into memory and only the copy changes.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import msgpack

from edgegate.allowlist import seal, store
from edgegate.core.allowlist import AllowList
from edgegate.core.codec import DataclassCodec, ns_to_datetime
from edgegate.core.domain import (
    AllowListView,
    CredentialKind,
    Direction,
    PlateColour,
    PlateRead,
)
from edgegate.core.events import (
    AccessDecided,
    DecisionTrace,
    EventDecodeError,
    TracedCandidate,
    TracedCredential,
    TracedRules,
    decode,
)
from edgegate.core.events import PlateRead as PlateReadEvent
from edgegate.core.policy import Decision, decide
from edgegate.core.rules import (
    GateRules,
)
from edgegate.log.chain import Row
from edgegate.replay.recorded import Aged, RecordedView, TraceError, recorded_rules
from edgegate.replay.source import LogSource, Source

_APPOINTMENT = CredentialKind.APPOINTMENT
_TYPES = frozenset(("plate.read", "access.decided", "vehicle.passed"))
NO_STORED_LIST = (
    "decided before v4, and central's copy holds no allow-list: "
    "give --allowlist or read the gate's file"
)
_KEEP = 4096  # recent reads and decisions kept for the decisions and corrections citing them


@dataclass(frozen=True, slots=True)
class Redecision:
    """One recorded decision and the decision taken again."""

    seq: int
    lane: str | None
    at: datetime
    direction: str
    plate_read: str
    corrected_by: str | None
    old_verdict: str
    old_reasons: tuple[str, ...]
    old_credential: str | None
    new_verdict: str
    new_reasons: tuple[str, ...]
    new_credential: str | None

    @property
    def change(self) -> str:
        """``allow → deny`` style, or ``same``."""
        if self.old_verdict == self.new_verdict:
            return "same"
        return f"{self.old_verdict} → {self.new_verdict}"

    @property
    def reproduced(self) -> bool:
        return (self.old_verdict, self.old_reasons, self.old_credential) == (
            self.new_verdict,
            self.new_reasons,
            self.new_credential,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "lane": self.lane,
            "at": self.at.isoformat(),
            "direction": self.direction,
            "plate_read": self.plate_read,
            "corrected_by": self.corrected_by,
            "change": self.change,
            "old": {
                "verdict": self.old_verdict,
                "reasons": list(self.old_reasons),
                "credential": self.old_credential,
            },
            "new": {
                "verdict": self.new_verdict,
                "reasons": list(self.new_reasons),
                "credential": self.new_credential,
            },
        }


@dataclass(slots=True)
class WhatIfReport:
    """``differing``: decisions whose verdict, reasons or credential differ (all of them,
    verdict changes or not); ``skipped``: (seq, why) of decisions that could not be taken
    again; ``notes``: where the credentials and rules came from."""

    decisions: int = 0
    reproduced: int = 0
    differing: list[Redecision] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[Redecision]:
        """The decisions whose verdict changes."""
        return [r for r in self.differing if r.change != "same"]

    def to_json(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "reproduced": self.reproduced,
            "changed": [r.to_json() for r in self.changed],
            "differing": [r.to_json() for r in self.differing],
            "summary": dict(sorted(self.counts.items())),
            "skipped": [{"seq": s, "why": w} for s, w in self.skipped],
            "notes": self.notes,
        }


# --- the pass over the log ----------------------------------------------------------------


def _credential_text(kind: str | None, id_: str | None) -> str | None:
    return None if kind is None or id_ is None else f"{kind} {id_}"


def _decided_at(event: AccessDecided, stored: _Row, updated_at: datetime | None) -> datetime:
    """The instant the policy decided at: recorded in v4; before, the list's update time plus
    the recorded age (to the microsecond) when both are known, else the event's time."""
    if event.trace is not None:
        return event.trace.decided_at
    if updated_at is not None and event.allowlist_age_s is not None:
        return updated_at + timedelta(seconds=event.allowlist_age_s)
    return ns_to_datetime(stored.wall_ns)


@dataclass(slots=True)
class _StoredList:
    """The list kept in the gate's file, as to consumption as it was at a decision."""

    allowlist: AllowList
    consumed_at: dict[int, str]  # vehicle.passed seq -> appointment it consumed


StoredLoader = Callable[
    [Callable[[sqlite3.Connection], "_StoredList | None"]], "_StoredList | None"
]
"""Runs a reader of the allow-list stored in a gate's log file on that file's read-only
connection (``LogReader.read_with``)."""


def stored_allowlist_of(source: Source) -> StoredLoader | None:
    """The loader of the allow-list stored in ``source``'s file; None for central's copy,
    which holds none."""
    if isinstance(source, LogSource):
        return source.reader.read_with
    return None


class _StoredSource:
    """The stored list, loaded only when a decision before v4 needs it (a v4 log never
    does), as it was then: appointments the log consumed from then on handed back, and
    consumed again as the pass goes by their ``vehicle.passed``."""

    def __init__(self, loader: StoredLoader | None) -> None:
        self._loader = loader
        self._loaded = False
        self.stored: _StoredList | None = None
        self.problem: str | None = None

    @property
    def available(self) -> bool:
        """Whether the events came with a file that may hold a stored list."""
        return self._loader is not None

    def passed(self, seq: int) -> None:
        stored = self.stored
        if stored is not None and seq in stored.consumed_at:
            stored.allowlist.consume_appointment(stored.consumed_at.pop(seq))

    def at(self, seq: int) -> _StoredList | None:
        if not self._loaded and self._loader is not None:
            self._loaded = True
            try:
                self.stored = self._loader(lambda conn: _load_stored(conn, seq))
            except store.StoreError as exc:
                self.problem = f"the allow-list stored in the file is unusable: {exc}"
        return self.stored


def _load_stored(conn: sqlite3.Connection, seq: int) -> _StoredList | None:
    try:
        allowlist = store.load(conn)
    except sqlite3.OperationalError:  # no allow-list tables in this file
        return None
    later: dict[int, str] = {}
    for appointment, passed_seq in seal.consumed_in_log(conn).items():
        if passed_seq > seq and allowlist.get(_APPOINTMENT, appointment) is not None:
            allowlist.release_appointment(appointment)
            later[passed_seq] = appointment
    return _StoredList(allowlist, later)


def what_if(
    batches: Iterable[Sequence[Row]],
    *,
    stored_allowlist: StoredLoader | None = None,
    allowlist: AllowListView | None = None,
    rules: GateRules | None = None,
    fallback_rules: GateRules | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> WhatIfReport:
    """Take every recorded decision (``since`` <= time < ``until``) of ``batches`` (a
    ``Source``'s ``batches()``) again; ``stored_allowlist`` loads the list stored in a
    gate's file for decisions before v4 (``stored_allowlist_of``); see the module."""
    report = WhatIfReport()
    source = _StoredSource(stored_allowlist)
    old_style = 0
    window = since is not None or until is not None
    for stored_event, event, read in _decisions(batches, source):
        if window:
            at = ns_to_datetime(stored_event.wall_ns)
            if (since is not None and at < since) or (until is not None and at >= until):
                continue
        report.decisions += 1
        if event.trace is None:
            old_style += 1
        stored = None
        if allowlist is None and event.trace is None:
            stored = source.at(stored_event.seq)
        redecided = _redecide(
            stored_event, event, read, allowlist, rules, fallback_rules, stored, source.available
        )
        if isinstance(redecided, str):
            report.skipped.append((stored_event.seq, redecided))
            continue
        old_credential = _credential_text(event.credential_kind, event.credential_id)
        new_verdict = str(redecided.verdict)
        new_reasons = tuple(str(x) for x in redecided.reasons)
        new_credential = (
            None
            if redecided.credential is None
            else f"{redecided.credential.kind} {redecided.credential.id}"
        )
        if (event.verdict, tuple(event.reasons), old_credential) == (
            new_verdict,
            new_reasons,
            new_credential,
        ):  # reproduced: nothing to report but the count
            report.counts["same"] += 1
            report.reproduced += 1
            continue
        r = Redecision(
            seq=stored_event.seq,
            lane=stored_event.lane,
            at=ns_to_datetime(stored_event.wall_ns),
            direction=str(event.direction),
            plate_read=event.plate_read,
            corrected_by=event.corrected_by,
            old_verdict=event.verdict,
            old_reasons=tuple(event.reasons),
            old_credential=old_credential,
            new_verdict=new_verdict,
            new_reasons=new_reasons,
            new_credential=new_credential,
        )
        report.counts[r.change] += 1
        report.differing.append(r)
    report.notes.extend(
        _notes(report.decisions, old_style, allowlist, rules, fallback_rules, source.stored)
    )
    if source.problem is not None:
        report.notes.append(source.problem)
    return report


def _notes(
    decisions: int,
    old_style: int,
    allowlist: AllowListView | None,
    rules: GateRules | None,
    fallback: GateRules | None,
    stored: _StoredList | None,
) -> list[str]:
    """Where the credentials and the rules of the decisions taken again came from."""
    notes: list[str] = []
    recorded = decisions - old_style
    if allowlist is not None:
        notes.append(
            f"credentials: the allow-list given (v{allowlist.version}), for every decision"
        )
    else:
        if recorded:
            notes.append(f"credentials: those recorded in each decision ({recorded} decisions, v4)")
        if old_style and stored is not None:
            updated = stored.allowlist.updated_at
            notes.append(
                f"credentials of the {old_style} decisions before v4 (which did not record "
                f"them): the allow-list stored in the gate's file, v{stored.allowlist.version}"
                + ("" if updated is None else f" of {updated.isoformat()}")
                + ", each appointment the log shows consumed taken as not yet consumed until then"
            )
    if rules is not None:
        notes.append(f"rules: the configuration given (gate {rules.gate_id}, {rules.kind})")
    else:
        if recorded:
            notes.append("rules: those recorded in each decision (v4)")
        if old_style and fallback is not None:
            notes.append(
                f"rules of the {old_style} decisions before v4 (which did not record them): "
                f"the configuration given (gate {fallback.gate_id}, {fallback.kind})"
            )
    return notes


def _decisions(
    batches: Iterable[Sequence[Row]], source: _StoredSource
) -> Iterator[tuple[_Row, AccessDecided, tuple[PlateColour, float] | None]]:
    """Each decision with the colour and confidence of the read it was taken on (a
    reader's read, or for a correction the corrected decision's read at full confidence).
    Rows are picked on their stored type before any decoding."""
    reads: OrderedDict[int, tuple[PlateColour, float]] = OrderedDict()
    by_decision: OrderedDict[int, tuple[PlateColour, float]] = OrderedDict()
    traced = _TracedDecoder()
    for rows in batches:
        for r in rows:
            type_ = r[4]
            if type_ not in _TYPES:
                continue
            seq = r[0]
            if type_ == "vehicle.passed":
                source.passed(seq)
                continue
            row = _Row(seq, r[1], type_, r[5], r[6], r[7])
            if type_ == "plate.read" and row.version == PlateReadEvent.VERSION:
                # Only its colour and confidence matter: read them without building the event.
                fields = _fields(row.data)
                colour, confidence = fields.get("colour"), fields.get("confidence")
                if colour in _COLOURS and isinstance(confidence, float | int):
                    _remember(reads, seq, (_COLOURS[colour], float(confidence)))
                continue
            event: Any = None
            if type_ == "access.decided" and row.version == AccessDecided.VERSION:
                event = traced.decided(row.data, row.lane)
            if event is None:
                try:
                    event = decode(row.type, row.version, row.data, row.lane)
                except EventDecodeError:  # a damaged event is the verifier's finding
                    continue
            if isinstance(event, PlateReadEvent):
                _remember(reads, seq, (event.colour, event.confidence))
                continue
            assert isinstance(event, AccessDecided)
            read: tuple[PlateColour, float] | None = None
            if event.read_seq is not None:
                read = reads.pop(event.read_seq, None)
            elif event.corrects_seq is not None:
                shown = by_decision.get(event.corrects_seq)
                read = None if shown is None else (shown[0], 1.0)
            if read is not None:
                _remember(by_decision, seq, read)
            yield row, event, read


_COLOURS = {c.value: c for c in PlateColour}


class _TracedDecoder:
    """Decodes v4 decisions as ``events.decode`` does, but builds each distinct credential,
    rules and candidate of the traces once: a lane's rules are the same for all its decisions
    and a plate's credentials recur all week. Anything it does not take (a trace missing or
    damaged) is left to ``decode`` (None)."""

    _LIMIT = 65_536  # distinct parts kept; past it the caches start again

    def __init__(self) -> None:
        self._decided = DataclassCodec(AccessDecided, exclude=frozenset({"lane", "trace"}))
        self._trace = DataclassCodec(
            DecisionTrace, exclude=frozenset({"credentials", "rules", "candidates"})
        )
        self._credential = DataclassCodec(TracedCredential)
        self._candidate = DataclassCodec(TracedCandidate)
        self._rules = DataclassCodec(TracedRules)
        self._parts: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}

    def decided(self, data: bytes, lane: str | None) -> AccessDecided | None:
        try:
            fields = msgpack.unpackb(data, raw=False, use_list=False)
            trace = fields.pop("trace")
            if not isinstance(trace, dict):
                return None
            event: AccessDecided = self._decided.from_map(
                fields, lane=lane, trace=self._trace_of(trace)
            )
        except Exception:  # anything unusual: ``decode`` says what it is
            return None
        return event

    def _trace_of(self, trace: dict[str, Any]) -> DecisionTrace:
        credentials = tuple(
            self._part("credential", c, self._credential) for c in trace.pop("credentials", ())
        )
        candidates = tuple(
            self._part("candidate", c, self._candidate) for c in trace.pop("candidates", ())
        )
        rules = self._part("rules", trace.pop("rules"), self._rules)
        built: DecisionTrace = self._trace.from_map(
            trace, credentials=credentials, candidates=candidates, rules=rules
        )
        return built

    def _part(self, kind: str, fields: dict[str, Any], codec: DataclassCodec) -> Any:
        """The part built from ``fields`` (lists read as tuples, so hashable), once."""
        key = (kind, tuple(fields.items()))
        found = self._parts.get(key)
        if found is None:
            if len(self._parts) >= self._LIMIT:
                self._parts.clear()
            found = self._parts[key] = codec.from_map(fields)
        return found


def _fields(data: bytes) -> dict[str, Any]:
    try:
        fields = msgpack.unpackb(data, raw=False)
    except Exception:  # a damaged event is the verifier's finding, not what-if's
        return {}
    return fields if isinstance(fields, dict) else {}


def _remember(
    recent: OrderedDict[int, tuple[PlateColour, float]],
    seq: int,
    value: tuple[PlateColour, float],
) -> None:
    recent[seq] = value
    if len(recent) > _KEEP:
        recent.popitem(last=False)  # the oldest (a dict's first key is slow to find)


class _Row(NamedTuple):
    """The columns of a stored event what-if reads."""

    seq: int
    wall_ns: int
    type: str
    lane: str | None
    version: int
    data: bytes


def _redecide(
    stored_event: _Row,
    event: AccessDecided,
    read: tuple[PlateColour, float] | None,
    allowlist: AllowListView | None,
    rules: GateRules | None,
    fallback_rules: GateRules | None,
    stored: _StoredList | None,
    file_given: bool = True,
) -> Decision | str:
    """The decision taken again, or why it cannot be."""
    trace = event.trace
    direction = Direction(event.direction)
    if trace is not None:
        colour, confidence = trace.colour, trace.confidence
    elif read is not None:
        colour, confidence = read
    else:
        return "the read it was taken on is not in the log (colour and confidence unknown)"
    gate_rules = rules
    if gate_rules is None:
        try:
            gate_rules = recorded_rules(trace, direction) if trace is not None else fallback_rules
        except ValueError as exc:  # a setting this version does not know
            return f"its recorded rules cannot be read: {exc}"
    if gate_rules is None:
        return "decided before v4, which did not record the rules: give the configuration (-c)"
    base: AllowListView
    if allowlist is not None:
        base = allowlist
        # The list's age as recorded, so that only its content makes a difference.
        if trace is not None:
            updated_at = trace.allowlist_updated_at
        elif event.allowlist_age_s is not None:
            wall = ns_to_datetime(stored_event.wall_ns)
            updated_at = wall - timedelta(seconds=event.allowlist_age_s)
        else:
            updated_at = None
    elif trace is not None:
        try:
            base = RecordedView(trace, event.allowlist_version)
        except TraceError as exc:
            return f"its trace cannot be read: {exc}"
        updated_at = trace.allowlist_updated_at
    elif stored is None and not file_given:
        return NO_STORED_LIST
    elif stored is None:
        return "decided before v4 and the file holds no allow-list: give one (--allowlist)"
    elif stored.allowlist.version != event.allowlist_version:
        return (
            f"decided on allow-list v{event.allowlist_version}; the file holds only "
            f"v{stored.allowlist.version}: give that version (--allowlist)"
        )
    else:
        base = stored.allowlist
        updated_at = stored.allowlist.updated_at
    now = _decided_at(event, stored_event, updated_at)
    tampered = (
        trace.allowlist_tampered if trace is not None else "allowlist-tampered" in event.reasons
    )
    view = Aged(base, event.allowlist_version, updated_at, tampered)
    subject = PlateRead(plate=event.plate_read, colour=colour, confidence=confidence)
    elsewhere = event.inside_elsewhere  # what central said then: recorded, not looked up
    return decide(
        gate_rules, direction, subject, view, now, trace=False, inside=lambda _: elsewhere
    )
