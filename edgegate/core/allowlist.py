"""The allow-list projection: every credential the gate knows, indexed by normalised plate.

Pure and in memory. Sized for a million credentials: a dict keyed by the UTF-8 bytes of the
normalised plate holds one ``bytes`` per plate, the compact msgpack encoding of its credential
or a group of them (``edgegate.core.credential_codec``, itself pure), decoded into the frozen
dataclasses of ``domain`` only when looked up. Holding only bytes keeps the index small and
out of the garbage collector's sight. A second dict maps ``(kind, id)`` to the plate, for
deltas and appointment consumption.

Not thread-safe: the core runs on one thread (the event loop). Every mutation is atomic with
respect to failure: it validates everything first and leaves the list unchanged on error.

Appointment consumption is sticky: an upsert or snapshot that carries an appointment the gate
has already consumed keeps it consumed (an appointment admits one entry; central may not have
heard of the entry yet). ``release_appointment`` is the only way back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from datetime import datetime
from types import UnionType
from typing import ClassVar, Protocol, cast, get_args, get_origin, get_type_hints

from edgegate.core import credential_codec as codec
from edgegate.core.domain import (
    Appointment,
    BlacklistEntry,
    Credential,
    CredentialKind,
    Credentials,
    FuzzyMatch,
    Registration,
    TemporaryPermit,
)
from edgegate.core.plates import confusable_variants, is_valid, normalise

_TAG: dict[str, bytes] = {k.value: k.value[:1].encode() for k in CredentialKind}
assert len(set(_TAG.values())) == len(_TAG), "kind tags must be distinct"

_MAX_LISTED_PROBLEMS = 20


class Digest(Protocol):
    """What ``AllowList.from_encoded`` feeds each row to, and takes the content hash from."""

    def update(self, kind: bytes, id_key: bytes, plate_key: bytes, encoded: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class AllowListError(ValueError):
    """A change the allow-list refuses; ``problems`` lists every reason found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:_MAX_LISTED_PROBLEMS]
        more = len(problems) - len(shown)
        text = "; ".join(shown) + (f"; ... and {more} more" if more else "")
        super().__init__(text)


def id_key(kind: CredentialKind | str, id_: str) -> bytes:
    """Key of a credential in the ``(kind, id)`` index: first letter of the kind + UTF-8 id.

    ``store.load`` builds the same key in SQL as ``substr(kind, 1, 1) || id``.
    """
    # surrogatepass: an id from outside that is not valid text misses instead of raising.
    return _TAG[str(kind)] + id_.encode("utf-8", "surrogatepass")


_TEXT, _TEXTS = "text", "texts"


def _field_checks(cls: type) -> list[tuple[str, tuple[type, ...], str | None]]:
    """(field, accepted types, ``_TEXT`` / ``_TEXTS`` when it holds strings / a frozenset of
    them) for each field of ``cls``."""
    checks: list[tuple[str, tuple[type, ...], str | None]] = []
    for name, hint in get_type_hints(cls).items():
        if get_origin(hint) is ClassVar:
            continue
        options = get_args(hint) if isinstance(hint, UnionType) else (hint,)
        accepted = tuple(get_origin(t) or t for t in options)
        if accepted == (str,):
            checks.append((name, accepted, _TEXT))
        elif get_origin(hint) is frozenset:
            assert get_args(hint) == (str,), "only frozensets of strings are checked"
            checks.append((name, accepted, _TEXTS))
        else:
            checks.append((name, accepted, None))
    return checks


_CHECKS = {
    cls: _field_checks(cls) for cls in (Registration, TemporaryPermit, Appointment, BlacklistEntry)
}


def check_credential(credential: Credential) -> Credential:
    """The credential with its plate normalised; ``AllowListError`` if it cannot be held.

    Checks every field's type (an enum field holds a member, not a string), so that whatever
    the list holds decodes again: a lookup at the lane must never fail on bad data.
    """
    checks = _CHECKS.get(type(credential))
    if checks is None:
        raise AllowListError([f"not a credential: {credential!r}"])
    problems: list[str] = []
    for name, accepted, holds in checks:
        value = getattr(credential, name)
        if not isinstance(value, accepted):
            problem: str | None = f"{value!r} is not valid"
        elif holds is _TEXT:
            text = cast(str, value)
            problem = None if text.isascii() or _is_text(text) else "is not valid text"
        elif holds is _TEXTS and value:
            problem = _members_problem(cast("frozenset[object]", value))
        else:
            continue
        if problem is not None:
            problems.append(f"{credential.kind} {credential.id!r}: {name} {problem}")
    if problems:
        raise AllowListError(problems)
    if not credential.id:
        problems.append(f"{credential.kind} {credential.id!r}: empty id")
    elif is_valid(credential.plate):
        # A well-formed plate is already normalised (no separators, lower case, I or O).
        return credential
    plate = normalise(credential.plate)
    if not is_valid(plate):
        problems.append(f"{credential.kind} {credential.id!r}: invalid plate {credential.plate!r}")
    if problems:
        raise AllowListError(problems)
    if plate != credential.plate:
        credential = dataclasses.replace(credential, plate=plate)
    return credential


def _members_problem(members: frozenset[object]) -> str | None:
    if not all(isinstance(m, str) for m in members):
        return f"{members!r} is not valid"
    if not all(_is_text(m) for m in cast("frozenset[str]", members)):
        return "is not valid text"
    return None


def _is_text(value: str) -> bool:
    """Whether ``value`` can be stored (no lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def keep_consumed(new: Credential, old: Credential | None) -> Credential:
    """``new``, still consumed if it replaces an appointment that was consumed."""
    if (
        isinstance(new, Appointment)
        and not new.consumed
        and isinstance(old, Appointment)
        and old.consumed
    ):
        return dataclasses.replace(new, consumed=True)
    return new


def _ignore(kind: bytes, id_key: bytes, plate_key: bytes, encoded: bytes, /) -> None:
    pass


def _lookup_key(plate: str) -> bytes:
    # A read may carry lone surrogates (undecodable reader bytes): look up, never raise.
    return plate.encode("utf-8", "surrogatepass")


_new_credentials = codec.positional_constructor(Credentials)


def _credentials(plate: str, value: bytes) -> Credentials:
    found = codec.decode_all(value)
    if len(found) == 1:
        c = found[0]
        cls = c.__class__
        if cls is Registration:
            return _new_credentials(plate, (c,), (), (), ())
        if cls is TemporaryPermit:
            return _new_credentials(plate, (), (c,), (), ())
        if cls is Appointment:
            return _new_credentials(plate, (), (), (c,), ())
        return _new_credentials(plate, (), (), (), (c,))
    # A group is kept in (kind, id) order, so each kind comes out sorted by id.
    by_kind: tuple[list[Credential], ...] = ([], [], [], [])
    for c in found:
        by_kind[_KIND_INDEX[c.__class__]].append(c)
    regs, permits, appts, black = by_kind
    return _new_credentials(plate, tuple(regs), tuple(permits), tuple(appts), tuple(black))


_KIND_INDEX: dict[type, int] = {
    Registration: 0,
    TemporaryPermit: 1,
    Appointment: 2,
    BlacklistEntry: 3,
}


def _add(by_plate: dict[bytes, bytes], plate_key: bytes, blob: bytes) -> None:
    old = by_plate.get(plate_key)
    if old is None:
        by_plate[plate_key] = blob
    else:
        by_plate[plate_key] = codec.group(sorted([*codec.split(old), blob], key=codec.kind_and_id))


def _discard(by_plate: dict[bytes, bytes], plate_key: bytes, kind: str, id_: str) -> None:
    value = by_plate[plate_key]
    if not codec.is_group(value):
        del by_plate[plate_key]
        return
    rest = [b for b in codec.split(value) if codec.kind_and_id(b) != (kind, id_)]
    by_plate[plate_key] = rest[0] if len(rest) == 1 else codec.group(rest)


class AllowList:
    """In-memory allow-list; implements ``domain.AllowListView``.

    ``content_hash`` is the SHA-256 of the content as loaded or snapshotted (see
    ``edgegate.allowlist.store``), or None once the list changed in memory since.
    ``tampered`` (see ``mark_tampered``) stays set through deltas; ``replace`` clears it.
    """

    __slots__ = ("_by_id", "_by_plate", "_content_hash", "_tampered", "_updated_at", "_version")

    def __init__(self) -> None:
        # normalised plate (UTF-8) -> encoding, or group of encodings in (kind, id) order
        self._by_plate: dict[bytes, bytes] = {}
        self._by_id: dict[bytes, bytes] = {}
        self._version = 0
        self._updated_at: datetime | None = None
        self._content_hash: bytes | None = None
        self._tampered = False

    @classmethod
    def from_credentials(
        cls,
        entries: Iterable[Credential],
        version: int = 0,
        updated_at: datetime | None = None,
    ) -> AllowList:
        """A list holding ``entries``; ``AllowListError`` if any cannot be held."""
        allowlist = cls()
        allowlist.replace(entries, version, updated_at)
        return allowlist

    @classmethod
    def from_encoded(
        cls,
        rows: Iterable[tuple[bytes, bytes, bytes, bytes]],
        version: int,
        updated_at: datetime | None,
        digest: Digest | None = None,
    ) -> AllowList:
        """Fast path for loading trusted storage: ``(id_key, plate_key, encoded, kind)`` rows
        in (kind value, id) order, with ``id_key`` as ``id_key()`` builds it, ``plate_key``
        the UTF-8 normalised plate, ``encoded`` the codec bytes and ``kind`` the UTF-8 kind
        value. Nothing is decoded or checked; (kind, id) must be unique.
        When ``digest`` is given it is fed every row (``kind, id_key, plate_key, encoded``)
        in order and its final value becomes ``content_hash``.
        """
        allowlist = cls()
        by_plate = allowlist._by_plate
        by_id = allowlist._by_id
        setdefault = by_plate.setdefault
        grouped_with = codec.grouped_with
        update = digest.update if digest is not None else _ignore
        # This loop runs a million times at start-up: one C call per step where possible.
        for key, plate_key, blob, kind in rows:
            update(kind, key, plate_key, blob)
            by_id[key] = plate_key
            old = setdefault(plate_key, blob)
            if old is not blob:
                by_plate[plate_key] = grouped_with(old, blob)
        allowlist._version = version
        allowlist._updated_at = updated_at
        allowlist._content_hash = digest.digest() if digest is not None else None
        return allowlist

    @property
    def version(self) -> int:
        return self._version

    @property
    def updated_at(self) -> datetime | None:
        return self._updated_at

    @property
    def content_hash(self) -> bytes | None:
        return self._content_hash

    @property
    def tampered(self) -> bool:
        return self._tampered

    def mark_tampered(self) -> None:
        """Record that the storage this list came from failed its integrity check: the
        policy then has a guard confirm every entry, until a snapshot replaces the list."""
        self._tampered = True

    def __len__(self) -> int:
        """Number of credentials (not plates)."""
        return len(self._by_id)

    def __iter__(self) -> Iterator[Credential]:
        """Every credential, decoded, in no particular order."""
        for value in self._by_plate.values():
            yield from codec.decode_all(value)

    @property
    def plate_count(self) -> int:
        return len(self._by_plate)

    def __contains__(self, plate: object) -> bool:
        """Whether the plate (normalised here) has any credential."""
        return isinstance(plate, str) and _lookup_key(normalise(plate)) in self._by_plate

    def exact(self, plate: str) -> Credentials:
        """Credentials of the plate (normalised here); empty ``Credentials`` when none."""
        # Keys are normalised plates and normalise() is idempotent, so a hit on the plate as
        # given is the hit normalising would find; normalising (~3 us) only on a miss.
        value = self._by_plate.get(_lookup_key(plate))
        if value is not None:
            return _credentials(plate, value)
        p = normalise(plate)
        value = self._by_plate.get(_lookup_key(p)) if p != plate else None
        if value is None:
            return _new_credentials(p, (), (), (), ())
        return _credentials(p, value)

    def fuzzy(self, plate: str) -> list[FuzzyMatch]:
        """Plates with credentials one OCR-confusable substitution away from the plate
        (normalised here), every candidate when several match. The province is never
        substituted. The plate itself is not included even if it has credentials."""
        get = self._by_plate.get
        matches: list[FuzzyMatch] = []
        for variant, position, read_char, list_char in confusable_variants(normalise(plate)):
            value = get(_lookup_key(variant))
            if value is not None:
                matches.append(
                    FuzzyMatch(_credentials(variant, value), position, read_char, list_char)
                )
        return matches

    def get(self, kind: CredentialKind, id_: str) -> Credential | None:
        """The credential with this kind and id, if held."""
        plate_key = self._by_id.get(id_key(kind, id_))
        if plate_key is None:
            return None
        blob = self._find_blob(plate_key, kind.value, id_)
        return codec.decode(blob)

    def _find_blob(self, plate_key: bytes, kind: str, id_: str) -> bytes:
        value = self._by_plate[plate_key]
        if not codec.is_group(value):
            return value
        for blob in codec.split(value):
            if codec.kind_and_id(blob) == (kind, id_):
                return blob
        raise AssertionError(f"index out of step: {kind} {id_!r} not under its plate")

    def _prepare(
        self, entries: Iterable[Credential]
    ) -> tuple[list[str], list[tuple[bytes, Credential, bytes]]]:
        """``(id key, credential, encoding)`` of each entry, checked, plate-normalised and
        still consumed if it is an appointment this list has consumed; and the problems
        found, duplicates included."""
        problems: list[str] = []
        prepared: list[tuple[bytes, Credential, bytes]] = []
        seen: set[bytes] = set()
        by_id = self._by_id
        for entry in entries:
            try:
                c = check_credential(entry)
            except AllowListError as exc:
                problems.extend(exc.problems)
                continue
            key = id_key(c.kind, c.id)
            if key in seen:
                problems.append(f"{c.kind} {c.id!r}: given twice")
                continue
            seen.add(key)
            if isinstance(c, Appointment) and not c.consumed and key in by_id:
                c = keep_consumed(c, codec.decode(self._find_blob(by_id[key], c.kind, c.id)))
            try:
                prepared.append((key, c, codec.encode(c)))
            except codec.CodecError as exc:
                problems.append(f"{c.kind} {c.id!r}: {exc}")
        return problems, prepared

    def replace(
        self,
        entries: Iterable[Credential],
        version: int,
        updated_at: datetime | None,
        content_hash: bytes | None = None,
    ) -> None:
        """Replace the whole content with a snapshot. Builds the new index aside and swaps it
        in, so on ``AllowListError`` nothing changed. Any version is accepted: a snapshot is
        authoritative (the sync layer decides whether one is stale)."""
        problems, prepared = self._prepare(entries)
        if problems:
            raise AllowListError(problems)
        by_plate: dict[bytes, bytes] = {}
        by_id: dict[bytes, bytes] = {}
        for key, c, blob in prepared:
            plate_key = c.plate.encode()
            _add(by_plate, plate_key, blob)
            by_id[key] = plate_key
        self._by_plate, self._by_id = by_plate, by_id
        self._version = version
        self._updated_at = updated_at
        self._content_hash = content_hash
        self._tampered = False

    def apply_delta(
        self,
        upserts: Iterable[Credential],
        removals: Iterable[tuple[CredentialKind, str]],
        version: int,
        updated_at: datetime | None,
    ) -> None:
        """Insert or replace ``upserts`` (by kind and id) and drop ``removals``, atomically.

        Refused with ``AllowListError``, before any change, when: the version is not newer
        than the list's, an upsert is invalid or given twice, a removal names an unknown
        credential or is given twice, or a credential is both upserted and removed.
        """
        problems, prepared = self._prepare(upserts)
        if version <= self._version:
            problems.append(f"delta version {version} is not newer than {self._version}")
        by_plate, by_id = self._by_plate, self._by_id
        upsert_keys = {key for key, _, _ in prepared}
        removal_keys: list[tuple[bytes, str, str]] = []
        seen: set[bytes] = set()
        for raw_kind, id_ in removals:
            try:
                kind = CredentialKind(raw_kind)
            except ValueError:
                problems.append(f"cannot remove {raw_kind!r} {id_!r}: unknown kind")
                continue
            key = id_key(kind, id_)
            if key not in by_id:
                problems.append(f"cannot remove {kind} {id_!r}: not in the allow-list")
            elif key in seen:
                problems.append(f"{kind} {id_!r}: removed twice")
            elif key in upsert_keys:
                problems.append(f"{kind} {id_!r}: both upserted and removed")
            seen.add(key)
            removal_keys.append((key, kind.value, id_))
        if problems:
            raise AllowListError(problems)

        for key, kind_value, id_ in removal_keys:
            _discard(by_plate, by_id.pop(key), kind_value, id_)
        for key, c, blob in prepared:
            old_plate = by_id.get(key)
            if old_plate is not None:
                _discard(by_plate, old_plate, c.kind.value, c.id)
            plate_key = c.plate.encode()
            _add(by_plate, plate_key, blob)
            by_id[key] = plate_key
        self._version = version
        self._updated_at = updated_at
        self._content_hash = None

    def consume_appointment(self, appointment_id: str) -> Appointment:
        """Mark the appointment consumed (by the entry it admitted) and return it.
        Idempotent. ``AllowListError`` if the appointment is unknown."""
        return self._set_consumed(appointment_id, consumed=True)

    def release_appointment(self, appointment_id: str) -> Appointment:
        """Undo ``consume_appointment`` (the admitted vehicle did not enter after all)."""
        return self._set_consumed(appointment_id, consumed=False)

    def _set_consumed(self, appointment_id: str, *, consumed: bool) -> Appointment:
        kind = CredentialKind.APPOINTMENT
        plate_key = self._by_id.get(id_key(kind, appointment_id))
        if plate_key is None:
            raise AllowListError([f"unknown appointment {appointment_id!r}"])
        old_blob = self._find_blob(plate_key, kind.value, appointment_id)
        old = codec.decode(old_blob)
        assert isinstance(old, Appointment)
        if old.consumed == consumed:
            return old
        new = dataclasses.replace(old, consumed=consumed)
        new_blob = codec.encode(new)
        value = self._by_plate[plate_key]
        if codec.is_group(value):
            value = codec.group([new_blob if b == old_blob else b for b in codec.split(value)])
        else:
            value = new_blob
        self._by_plate[plate_key] = value
        self._content_hash = None
        return new
