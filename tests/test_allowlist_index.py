"""The in-memory allow-list: exact and fuzzy lookup, snapshots, deltas, appointments."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgegate.core.allowlist import AllowList, AllowListError
from edgegate.core.domain import (
    AllowListView,
    Appointment,
    BlacklistEntry,
    BlacklistReason,
    Credential,
    CredentialKind,
    Credentials,
    HolderType,
    PlateColour,
    Registration,
    TemporaryPermit,
    VehicleCategory,
)
from edgegate.core.plates import normalise

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def reg(id_: str = "R1", plate: str = "苏E12345", **kw: Any) -> Registration:
    fields: dict[str, Any] = {
        "category": VehicleCategory.ORDINARY,
        "holder": HolderType.COMPANY,
        "organisation": "扬子石化有限公司",
        "valid_from": T0,
    }
    fields.update(kw)
    return Registration(id=id_, plate=plate, **fields)


def permit(id_: str = "P1", plate: str = "苏E12345", **kw: Any) -> TemporaryPermit:
    fields: dict[str, Any] = {
        "category": VehicleCategory.ENGINEERING,
        "visitor": "张伟",
        "host": "园区管委会",
        "valid_from": T0,
        "valid_until": T0 + timedelta(days=2),
    }
    fields.update(kw)
    return TemporaryPermit(id=id_, plate=plate, **fields)


def appt(id_: str = "A1", plate: str = "苏E12345", **kw: Any) -> Appointment:
    fields: dict[str, Any] = {
        "category": VehicleCategory.HAZMAT,
        "colour": PlateColour.YELLOW,
        "window_start": T0,
        "window_end": T0 + timedelta(hours=12),
        "destination": "扬子石化有限公司",
        "un_number": "1203",
        "hazard_class": "3",
        "waybill": "WB0001",
        "gates": frozenset({"G1"}),
    }
    fields.update(kw)
    return Appointment(id=id_, plate=plate, **fields)


def black(id_: str = "B1", plate: str = "苏E12345", **kw: Any) -> BlacklistEntry:
    fields: dict[str, Any] = {
        "reason": BlacklistReason.SPEEDING,
        "source": "park-security",
        "valid_from": T0,
    }
    fields.update(kw)
    return BlacklistEntry(id=id_, plate=plate, **fields)


def plates_of(matches: list[Any]) -> set[str]:
    return {m.credentials.plate for m in matches}


def test_is_an_allowlist_view() -> None:
    view: AllowListView = AllowList()
    assert view.version == 0
    assert view.updated_at is None


def test_exact_hit_and_miss() -> None:
    r = reg()
    al = AllowList.from_credentials([r, reg("R2", "苏E54321")], version=3, updated_at=T0)
    assert al.exact("苏E12345") == Credentials("苏E12345", registrations=(r,))
    assert al.exact("苏E99999") == Credentials("苏E99999")
    assert al.exact("苏E99999").empty
    assert al.version == 3
    assert al.updated_at == T0
    assert len(al) == 2
    assert al.plate_count == 2


@pytest.mark.parametrize("read", ["苏e12345", "苏E 12345", "苏E·123-45", "苏Ｅ１２３４５"])
def test_exact_normalises_the_read(read: str) -> None:
    al = AllowList.from_credentials([reg()])
    result = al.exact(read)
    assert result.plate == "苏E12345"
    assert result.registrations == (reg(),)
    assert read in al


# Separators cameras and typists put in a plate, as typed (full- and half-width forms too).
SEPARATORS = [
    " ", "\t", "\u3000", "\u00a0", "·", "•", ".", "．", "-", "－", "_", "＿", "。", "｡",
    "・", "･", "—", "–", "‐", "‑", "‒", "―", "−", "﹣", "‧", "∙", "⋅", "⸱", "…",
    "\u200b", "\u200d", "\u00ad", "\ufeff",
]  # fmt: skip


@pytest.mark.parametrize("sep", SEPARATORS)
def test_normalise_drops_separators(sep: str) -> None:
    for read in (f"苏E{sep}12345", f"苏{sep}E{sep}123{sep}45", f"{sep}苏e12345{sep}"):
        assert normalise(read) == "苏E12345", repr(read)
        assert normalise(normalise(read)) == normalise(read)
    assert normalise(f"苏E{sep}IO345") == "苏E10345"
    al = AllowList.from_credentials([reg(plate=f"苏E{sep}12345")])
    assert al.exact(f"苏E12{sep}345").registrations == (reg(),)


@pytest.mark.parametrize("control", ["\x00", "\x07", "\x1f", "\x7f", "\x85", "\n"])
def test_normalise_keeps_control_characters(control: str) -> None:
    """A control character is garbage, not a separator: the plate stays invalid."""
    from edgegate.core.plates import PlateError, is_valid, parse

    plate = normalise(f"苏E12{control}345")
    assert plate == f"苏E12{control}345" and not is_valid(plate)
    with pytest.raises(PlateError):
        parse(f"苏E12{control}345")


def test_exact_reads_i_and_o_in_the_serial_as_one_and_zero() -> None:
    al = AllowList.from_credentials([reg(plate="苏E10345")])
    assert al.exact("苏EIO345").registrations == (reg(plate="苏E10345"),)


@pytest.mark.parametrize("garbage", ["", "x", "\udcff\udcfe", "苏E\udc801234", "🚚🚚🚚🚚🚚🚚🚚"])
def test_lookups_never_raise_on_garbage(garbage: str) -> None:
    al = AllowList.from_credentials([reg()])
    assert al.exact(garbage).empty
    assert al.fuzzy(garbage) == []
    assert garbage not in al


def test_plate_with_every_kind_of_credential() -> None:
    entries: list[Credential] = [
        reg("R2"),
        reg("R1"),
        permit("P1"),
        appt("A2"),
        appt("A1"),
        black("B1"),
        reg("R9", "苏E99999"),
    ]
    al = AllowList.from_credentials(entries)
    got = al.exact("苏E12345")
    assert got.registrations == (reg("R1"), reg("R2"))
    assert got.permits == (permit("P1"),)
    assert got.appointments == (appt("A1"), appt("A2"))
    assert got.blacklist == (black("B1"),)
    assert len(al) == 7
    assert al.plate_count == 2
    assert sorted(c.id for c in al) == sorted(c.id for c in entries)


def test_credentials_are_stored_under_the_normalised_plate() -> None:
    al = AllowList.from_credentials([reg(plate="苏e 1234o")])
    got = al.exact("苏E12340")
    assert got.registrations == (reg(plate="苏E12340"),)
    assert al.get(CredentialKind.REGISTRATION, "R1") == reg(plate="苏E12340")


# One case per confusable group: (listed plate, read, position, read char, listed char).
FUZZY_CASES = [
    ("苏E12D45", "苏E12045", 4, "0", "D"),  # 0/D/Q
    ("苏E12045", "苏E12Q45", 4, "Q", "0"),
    ("苏Q12345", "苏D12345", 1, "D", "Q"),  # authority letter: letters only
    ("苏E12B45", "苏E12845", 4, "8", "B"),  # 8/B
    ("苏B12345", "苏812345", 1, "8", "B"),
    ("苏E1Z345", "苏E12345", 3, "2", "Z"),  # 2/Z
    ("苏E12S45", "苏E12545", 4, "5", "S"),  # 5/S
    ("苏E12345", "苏E1234S", 6, "S", "5"),
    ("苏E1G345", "苏E16345", 3, "6", "G"),  # 6/G
    ("苏E12346", "苏E1234G", 6, "G", "6"),
]


@pytest.mark.parametrize(("listed", "read", "position", "read_char", "list_char"), FUZZY_CASES)
def test_fuzzy_each_confusable_group(
    listed: str, read: str, position: int, read_char: str, list_char: str
) -> None:
    al = AllowList.from_credentials([reg(plate=listed)])
    assert al.exact(read).empty
    [match] = al.fuzzy(read)
    assert match.credentials.plate == listed
    assert match.credentials.registrations == (reg(plate=listed),)
    assert (match.position, match.read_char, match.list_char) == (position, read_char, list_char)


def test_one_and_i_are_settled_by_normalisation_not_fuzzy_matching() -> None:
    al = AllowList.from_credentials([reg(plate="苏E12345")])
    assert al.exact("苏EI2345").registrations  # I in the serial is read as 1
    assert al.fuzzy("苏E12345") == []  # and 1 never becomes I


def test_fuzzy_at_most_one_substitution() -> None:
    al = AllowList.from_credentials([reg(plate="苏E1ZS45")])
    assert al.fuzzy("苏E12545") == []  # two substitutions away
    assert plates_of(al.fuzzy("苏E1Z545")) == {"苏E1ZS45"}
    assert plates_of(al.fuzzy("苏E12S45")) == {"苏E1ZS45"}


def test_fuzzy_ambiguity_returns_every_candidate() -> None:
    listed = ["苏E12D45", "苏E12Q45", "苏E1Z045", "苏E99999"]
    al = AllowList.from_credentials([reg(f"R{i}", p) for i, p in enumerate(listed)])
    matches = al.fuzzy("苏E12045")
    assert plates_of(matches) == {"苏E12D45", "苏E12Q45", "苏E1Z045"}
    assert {(m.position, m.list_char) for m in matches} == {(4, "D"), (4, "Q"), (3, "Z")}


def test_fuzzy_never_substitutes_the_province() -> None:
    al = AllowList.from_credentials([reg(f"R{i}", p + "E12345") for i, p in enumerate("沪京津")])
    assert al.fuzzy("苏E12345") == []
    matches = al.fuzzy("沪E1234S")
    assert plates_of(matches) == {"沪E12345"}
    assert [m.position for m in matches] == [6]


def test_fuzzy_only_plates_with_credentials_and_not_the_read_itself() -> None:
    al = AllowList.from_credentials([reg(plate="苏E12045"), reg("R2", "苏E12D45")])
    assert plates_of(al.fuzzy("苏E12045")) == {"苏E12D45"}
    al.apply_delta([], [(CredentialKind.REGISTRATION, "R2")], 1, T0)
    assert al.fuzzy("苏E12045") == []


def test_fuzzy_normalises_the_read() -> None:
    al = AllowList.from_credentials([reg(plate="苏E12D45")])
    assert plates_of(al.fuzzy("苏e 12o45")) == {"苏E12D45"}


def test_replace_swaps_the_whole_content() -> None:
    al = AllowList.from_credentials([reg(), reg("R2", "苏E54321")], version=1)
    al.replace([permit(plate="苏E99999")], 2, T0, content_hash=b"h")
    assert len(al) == 1
    assert al.exact("苏E12345").empty
    assert al.exact("苏E99999").permits == (permit(plate="苏E99999"),)
    assert (al.version, al.updated_at, al.content_hash) == (2, T0, b"h")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (reg("R3", "苏E123"), "invalid plate"),
        (reg("R3", "E12345苏"), "invalid plate"),
        (reg("", "苏E54321"), "empty id"),
        (reg("R\udc80", "苏E54321"), "id is not valid text"),
        (reg("R3", "苏E54321", colour="blue"), "colour 'blue' is not valid"),
        (reg("R3", "苏E54321", gates=frozenset({1})), "gates frozenset"),
        (reg("R3", "苏E54321", valid_until="2026-01-01"), "valid_until '2026-01-01' is not valid"),
        (appt("A3", "苏E54321", consumed=None), "consumed None is not valid"),
        (reg("R3", "苏E54321", organisation="\udc80"), "'R3': organisation is not valid text$"),
        (reg("R1", "苏E54321"), "given twice"),
        (reg("R3", "苏E54321", valid_from=datetime(2026, 1, 1)), "naive"),
        (reg("R3", "苏E54321", valid_from=T0 + timedelta(microseconds=5)), "fractional"),
    ],
)
def test_failed_snapshot_leaves_the_old_list(bad: Credential, message: str) -> None:
    old: list[Credential] = [reg(), appt()]
    al = AllowList.from_credentials(old, version=4, updated_at=T0)
    with pytest.raises(AllowListError, match=message):
        al.replace([reg(plate="苏E88888"), bad], 5, T0 + timedelta(days=1))
    assert (al.version, al.updated_at, len(al)) == (4, T0, 2)
    assert al.exact("苏E12345").registrations == (reg(),)
    assert al.exact("苏E88888").empty


def test_error_lists_every_problem() -> None:
    al = AllowList()
    with pytest.raises(AllowListError) as caught:
        al.replace([reg("R1", "bad"), reg("R2", "worse"), reg("R3")], 1, None)
    assert len(caught.value.problems) == 2
    assert "'R1'" in str(caught.value)
    assert "'R2'" in str(caught.value)


def test_delta_upserts_replaces_and_removes() -> None:
    al = AllowList.from_credentials([reg(), reg("R2", "苏E54321"), black()], version=7)
    moved = reg("R2", "苏E11111", organisation="新公司")
    al.apply_delta([permit(), moved], [(CredentialKind.BLACKLIST, "B1")], 8, T0)
    assert al.version == 8
    assert al.updated_at == T0
    assert al.content_hash is None
    assert al.exact("苏E12345") == Credentials(
        "苏E12345", registrations=(reg(),), permits=(permit(),)
    )
    assert al.exact("苏E54321").empty  # moved to another plate
    assert al.exact("苏E11111").registrations == (moved,)
    assert al.get(CredentialKind.BLACKLIST, "B1") is None
    assert len(al) == 3


def test_delta_replacing_one_of_several_credentials_of_a_plate() -> None:
    al = AllowList.from_credentials([reg(), permit(), appt()])
    changed = permit(purpose="送货")
    al.apply_delta([changed], [(CredentialKind.APPOINTMENT, "A1")], 1, None)
    assert al.exact("苏E12345") == Credentials(
        "苏E12345", registrations=(reg(),), permits=(changed,)
    )
    al.apply_delta([], [(CredentialKind.PERMIT, "P1")], 2, None)
    assert al.exact("苏E12345") == Credentials("苏E12345", registrations=(reg(),))


@pytest.mark.parametrize(
    ("upserts", "removals", "version", "message"),
    [
        ([permit()], [(CredentialKind.REGISTRATION, "nope")], 2, "not in the allow-list"),
        ([permit()], [(CredentialKind.PERMIT, "R1")], 2, "not in the allow-list"),
        ([permit()], [], 1, "not newer"),
        ([permit(), permit()], [], 2, "given twice"),
        ([reg()], [(CredentialKind.REGISTRATION, "R1")], 2, "both upserted and removed"),
        (
            [],
            [(CredentialKind.REGISTRATION, "R1"), (CredentialKind.REGISTRATION, "R1")],
            2,
            "removed twice",
        ),
        ([permit(plate="nonsense")], [], 2, "invalid plate"),
        ([], [("truck", "R1")], 2, "unknown kind"),
    ],
)
def test_bad_delta_changes_nothing(
    upserts: list[Credential],
    removals: list[tuple[CredentialKind, str]],
    version: int,
    message: str,
) -> None:
    al = AllowList.from_credentials([reg(), appt()], version=1, updated_at=T0)
    before = sorted(map(repr, al))
    with pytest.raises(AllowListError, match=message):
        al.apply_delta(upserts, removals, version, T0 + timedelta(hours=1))
    assert sorted(map(repr, al)) == before
    assert (al.version, al.updated_at) == (1, T0)
    assert al.exact("苏E12345").permits == ()


def test_consume_and_release_appointment() -> None:
    al = AllowList.from_credentials([reg(), appt(), appt("A2")], version=1)
    consumed = al.consume_appointment("A1")
    assert consumed == appt(consumed=True)
    assert al.exact("苏E12345").appointments == (appt(consumed=True), appt("A2"))
    assert not consumed.valid_at(T0 + timedelta(hours=1))
    assert al.consume_appointment("A1") == consumed  # idempotent
    assert al.version == 1  # a local fact, not a new list version
    released = al.release_appointment("A1")
    assert released == appt()
    assert al.exact("苏E12345").appointments == (appt(), appt("A2"))


def test_consume_unknown_appointment_is_an_error() -> None:
    al = AllowList.from_credentials([reg()])
    with pytest.raises(AllowListError, match="unknown appointment 'R1'"):
        al.consume_appointment("R1")
    with pytest.raises(AllowListError, match="unknown appointment"):
        al.release_appointment("A9")


def test_consumption_survives_upserts_and_snapshots() -> None:
    al = AllowList.from_credentials([appt()], version=1)
    al.consume_appointment("A1")
    al.apply_delta([appt(waybill="WB0002")], [], 2, None)
    assert al.exact("苏E12345").appointments == (appt(waybill="WB0002", consumed=True),)
    al.replace([appt(), reg()], 3, None)
    assert al.exact("苏E12345").appointments == (appt(consumed=True),)
    al.release_appointment("A1")
    al.replace([appt()], 4, None)
    assert al.exact("苏E12345").appointments == (appt(),)


def test_changes_clear_the_content_hash() -> None:
    al = AllowList()
    al.replace([appt()], 1, None, content_hash=b"x" * 32)
    assert al.content_hash == b"x" * 32
    al.consume_appointment("A1")
    assert al.content_hash is None


_serial = st.text(alphabet="0DQ8B2Z5S6G1AE", min_size=5, max_size=5)
_plates = st.builds(lambda p, s: p + "E" + s, st.sampled_from("苏沪京"), _serial)
_entries = st.lists(
    st.tuples(st.sampled_from(["r", "p", "a", "b"]), st.integers(0, 30), _plates), max_size=40
)


_FACTORIES: dict[str, Callable[[str, str], Credential]] = {
    "r": reg,
    "p": permit,
    "a": appt,
    "b": black,
}


def _make(kind: str, n: int, plate: str) -> Credential:
    return _FACTORIES[kind](f"{kind.upper()}{n}", plate)


@settings(max_examples=150, deadline=None)
@given(_entries, st.lists(st.tuples(st.sampled_from("rpab"), st.integers(0, 30), _plates)))
def test_lookups_agree_with_a_plain_model(
    initial: list[tuple[str, int, str]], upserts: list[tuple[str, int, str]]
) -> None:
    """Whatever the sequence of snapshot and delta, exact and fuzzy see what a naive
    list-scanning model sees."""
    model: dict[tuple[str, str], Credential] = {}
    for kind, n, plate in initial:
        c = _make(kind, n, plate)
        model[(c.kind, c.id)] = c
    al = AllowList.from_credentials(model.values(), version=1)
    delta: dict[tuple[str, str], Credential] = {}
    for kind, n, plate in upserts:
        c = _make(kind, n, plate)
        delta[(c.kind, c.id)] = c
    removals = [key for key in model if key not in delta][::2]
    al.apply_delta(
        delta.values(), [(CredentialKind(k), i) for k, i in removals], version=2, updated_at=None
    )
    for key in removals:
        del model[key]
    model.update(delta)

    assert len(al) == len(model)
    for plate in {c.plate for c in model.values()} | {"苏E00000", "苏E0000D"}:
        expected = sorted((c for c in model.values() if c.plate == plate), key=repr)
        assert sorted(al.exact(plate).all(), key=repr) == expected
        fuzzy = {m.credentials.plate for m in al.fuzzy(plate)}
        near = {
            c.plate
            for c in model.values()
            if c.plate != plate
            and sum(a != b for a, b in zip(c.plate, plate, strict=True)) == 1
            and _confusable(c.plate, plate)
        }
        assert fuzzy == near


def _confusable(listed: str, read: str) -> bool:
    groups = ("0DQ", "8B", "2Z", "5S", "6G")
    for i, (a, b) in enumerate(zip(listed, read, strict=True)):
        if a != b:
            same_group = any(a in g and b in g for g in groups)
            return same_group and i > 0 and (i > 1 or a.isalpha())
    return False


def test_normalise_is_identity_on_valid_plates() -> None:
    """check_credential's fast path relies on it."""
    from edgegate.core.plates import PROVINCES, SPECIAL_SUFFIXES, is_valid

    for p in PROVINCES:
        for plate in (f"{p}A12345", f"{p}AD12345", *(f"{p}A1234{s}" for s in SPECIAL_SUFFIXES)):
            assert is_valid(plate)
            assert normalise(plate) == plate


def test_a_plate_with_many_credentials() -> None:
    """More than 15 credentials on one plate (a msgpack array16 group)."""
    appointments = [appt(f"A{i:02d}") for i in range(20)]
    al = AllowList.from_credentials([*appointments, reg()], version=1)
    assert al.exact("苏E12345") == Credentials(
        "苏E12345", registrations=(reg(),), appointments=tuple(appointments)
    )
    al.consume_appointment("A07")
    al.apply_delta([permit()], [(CredentialKind.APPOINTMENT, "A03")], 2, None)
    got = al.exact("苏E12345")
    assert len(got.appointments) == 19
    assert [a.id for a in got.appointments if a.consumed] == ["A07"]
    assert got.permits == (permit(),)
    assert len(al) == 21
    assert [m.credentials.plate for m in al.fuzzy("苏E1234S")] == ["苏E12345"]
