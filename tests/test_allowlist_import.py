"""Allow-list import files: good CSV and JSON, and every kind of bad input, by line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgegate.allowlist.importer import (
    AllowListInputError,
    DecodedText,
    Delta,
    LineError,
    decode_text,
    parse_csv,
    parse_csv_delta,
    parse_json,
    parse_json_delta,
    read_text,
)
from edgegate.core.allowlist import AllowList
from edgegate.core.domain import (
    Appointment,
    BlacklistEntry,
    BlacklistReason,
    Credential,
    CredentialKind,
    HolderType,
    PlateColour,
    Registration,
    TemporaryPermit,
    VehicleCategory,
)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


HEADER = (
    "type,id,plate,colour,category,holder,organisation,visitor,host,purpose,valid_from,"
    "valid_until,gates,window_start,window_end,destination,un_number,hazard_class,waybill,"
    "reason,detail,source"
)
GOOD_ROWS = [
    "registration,R1,苏E12345,blue,hazmat,company,扬子石化有限公司,,,,2026-01-01,2026-12-31,"
    "G1;G2,,,,,,,,,",
    "permit,P1,苏e 5432I,,engineering,,,张伟,园区管委会,设备检修,2026-06-01 08:00,"
    "2026-06-01T18:00:00+08:00,G3,,,,,,,,,",
    "appointment,A1,苏E1234挂,yellow,hazmat,,,,,,,,G1|G3,2026-06-02,2026-06-02,扬子石化有限公司,"
    "UN1203,3,WB20260602001,,,",
    "blacklist,B1,沪AD12345,,,,,,,,2026-03-01T00:00:00Z,,,,,,,,,speeding,多次超速,park-security",
]
# 2026-01-01 local (UTC+8) midnight is 2025-12-31 16:00 UTC.
EXPECTED: list[Credential] = [
    Registration(
        id="R1",
        plate="苏E12345",
        colour=PlateColour.BLUE,
        category=VehicleCategory.HAZMAT,
        holder=HolderType.COMPANY,
        organisation="扬子石化有限公司",
        valid_from=utc(2025, 12, 31, 16),
        valid_until=utc(2026, 12, 31, 16),  # the whole of 31 December, local
        gates=frozenset({"G1", "G2"}),
    ),
    TemporaryPermit(
        id="P1",
        plate="苏E54321",
        category=VehicleCategory.ENGINEERING,
        visitor="张伟",
        host="园区管委会",
        purpose="设备检修",
        valid_from=utc(2026, 6, 1, 0),
        valid_until=utc(2026, 6, 1, 10),
        gates=frozenset({"G3"}),
    ),
    Appointment(
        id="A1",
        plate="苏E1234挂",
        colour=PlateColour.YELLOW,
        category=VehicleCategory.HAZMAT,
        window_start=utc(2026, 6, 1, 16),
        window_end=utc(2026, 6, 2, 16),
        destination="扬子石化有限公司",
        un_number="1203",
        hazard_class="3",
        waybill="WB20260602001",
        gates=frozenset({"G1", "G3"}),
    ),
    BlacklistEntry(
        id="B1",
        plate="沪AD12345",
        reason=BlacklistReason.SPEEDING,
        detail="多次超速",
        source="park-security",
        valid_from=utc(2026, 3, 1),
    ),
]


def good_csv() -> str:
    return "\n".join([HEADER, *GOOD_ROWS]) + "\n"


def json_entries() -> list[dict[str, Any]]:
    names = HEADER.split(",")
    return [{k: v for k, v in zip(names, row.split(","), strict=True) if v} for row in GOOD_ROWS]


def errors_of(call: Any, *args: Any, **kw: Any) -> list[LineError]:
    with pytest.raises(AllowListInputError) as caught:
        call(*args, **kw)
    return caught.value.errors


def where(errors: list[LineError]) -> list[tuple[int, str | None]]:
    return [(e.line, e.field) for e in errors]


# --- good files ----------------------------------------------------------------------------


def test_csv_utf8() -> None:
    assert parse_csv(good_csv().encode()) == EXPECTED
    assert parse_csv(good_csv()) == EXPECTED


def test_csv_utf8_with_bom_and_crlf() -> None:
    data = "\ufeff" + good_csv().replace("\n", "\r\n")
    assert parse_csv(data.encode()) == EXPECTED
    assert parse_csv(data) == EXPECTED


def test_csv_gbk() -> None:
    data = good_csv().encode("gbk")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert parse_csv(data) == EXPECTED


# GBK files whose only Chinese characters are 鲁 or 豫 are also valid UTF-8 (鲁 is C2 B3 in
# GBK, "³" in UTF-8): the reading whose plates are valid wins.
LU_YU_ROWS = [
    "registration,R1,鲁A12345,blue,ordinary,company,Qilu Chemicals,2026-01-01,,",
    "registration,R2,豫B2345G,blue,ordinary,company,Zhongyuan Gas,2026-01-01,,",
    "registration,R3,鲁Q 08I5D,yellow,ordinary,company,Qilu Chemicals,2026-01-01,,",
]


def lu_yu_csv(*rows: str) -> str:
    return "\n".join([REG_HEADER, *(rows or LU_YU_ROWS)]) + "\n"


def plates_of(credentials: list[Credential]) -> list[str]:
    return [c.plate for c in credentials]


def test_gbk_file_with_only_lu_and_yu_plates_is_read_as_gbk() -> None:
    data = lu_yu_csv().encode("gbk")
    assert data.decode("utf-8") != lu_yu_csv()  # valid UTF-8, but other text
    assert plates_of(parse_csv(data)) == ["鲁A12345", "豫B2345G", "鲁Q0815D"]
    decoded = read_text(data)
    assert (decoded.encoding, decoded.notable) == ("gbk", True)
    assert decoded.why == "3 of its 3 plates are valid so, 0 if read as UTF-8"
    names = REG_HEADER.split(",")
    entries = [dict(zip(names, row.split(","), strict=True)) for row in LU_YU_ROWS]
    as_json = json.dumps(entries, ensure_ascii=False).encode("gbk")
    as_json.decode("utf-8")
    assert plates_of(parse_json(as_json)) == ["鲁A12345", "豫B2345G", "鲁Q0815D"]
    delta = json.dumps({"upsert": entries[:1]}, ensure_ascii=False).encode("gbk")
    assert plates_of(parse_json_delta(delta).upserts) == ["鲁A12345"]


def test_utf8_file_with_lu_and_yu_plates_stays_utf8() -> None:
    text = lu_yu_csv()
    assert plates_of(parse_csv(text.encode())) == ["鲁A12345", "豫B2345G", "鲁Q0815D"]
    assert read_text(text.encode()).encoding == "utf-8"
    assert not read_text(text.encode()).notable
    # A byte-order mark says UTF-8 whatever the rest might also be.
    assert read_text(b"\xef\xbb\xbf" + text.encode()) == DecodedText(text, "utf-8")


def test_gbk_file_with_mixed_provinces_and_a_bom() -> None:
    rows = [*LU_YU_ROWS, "registration,R4,苏E12345,blue,ordinary,company,扬子石化,2026-01-01,,"]
    data = lu_yu_csv(*rows).encode("gbk")
    assert plates_of(parse_csv(data))[-1] == "苏E12345"
    assert read_text(data) == DecodedText(lu_yu_csv(*rows), "gbk")  # only GBK: nothing to say
    gb18030_bom = "\ufeff".encode("gb18030")
    assert read_text(gb18030_bom + lu_yu_csv().encode("gbk")).text == lu_yu_csv()


def test_gbk_file_with_a_bad_plate_names_it_as_written() -> None:
    rows = [*LU_YU_ROWS, "registration,R4,鲁A1234,blue,ordinary,company,Qilu,2026-01-01,,"]
    errors = errors_of(parse_csv, lu_yu_csv(*rows).encode("gbk"))
    # Most plates are valid read as GBK: the error is about 鲁A1234, not about "³A1234".
    assert [(e.line, e.field) for e in errors] == [(5, "plate")]
    assert "'鲁A1234': must have 7 or 8 characters" in errors[0].message


def test_encoding_can_be_forced() -> None:
    data = lu_yu_csv().encode("gbk")
    assert plates_of(parse_csv(data, encoding="gbk"))[0] == "鲁A12345"
    assert read_text(data, "gbk") == DecodedText(lu_yu_csv(), "gbk")
    errors = errors_of(parse_csv, data, encoding="utf-8")
    assert "first character must be a province abbreviation" in errors[0].message
    su = lu_yu_csv("registration,R1,苏E12345,blue,ordinary,company,Acme,2026-01-01,,")
    assert [(e.line, e.message) for e in errors_of(read_text, su.encode("gbk"), "utf-8")] == [
        (2, "not UTF-8 text (byte 0xcb)")
    ]
    bom = b"\xef\xbb\xbf" + lu_yu_csv().encode()
    [error] = errors_of(read_text, bom, "gbk")
    assert error.message == "starts with a UTF-8 byte-order mark: it is not GBK"
    with pytest.raises(ValueError, match="unknown encoding 'latin-1'"):
        read_text(data, "latin-1")


def test_utf16_is_named() -> None:
    [error] = errors_of(parse_csv, lu_yu_csv().encode("utf-16"))
    assert error.message == "UTF-16 text: save the file as UTF-8 or GBK"


def test_without_plates_unlikely_characters_decide_then_utf8() -> None:
    removal = "op,type,id\nremove,blacklist,BL-鲁7\n"
    decoded = read_text(removal.encode("gbk"))
    assert (decoded.text, decoded.encoding, decoded.notable) == (removal, "gbk", True)
    assert decoded.why == "as many valid plates either way; fewer unlikely characters so"
    assert parse_csv_delta(removal.encode("gbk")).removals == [(CredentialKind.BLACKLIST, "BL-鲁7")]
    # "的的" in UTF-8 is "鐨勭殑" in GBK: both plausible, UTF-8 by default, said so.
    decoded = read_text("的的".encode())
    assert "鐨勭殑".encode("gbk") == "的的".encode()
    assert (decoded.text, decoded.encoding, decoded.notable) == ("的的", "utf-8", True)
    assert decoded.why == "neither reading is more plausible: UTF-8 by default"


def test_json_list_and_object() -> None:
    entries = json_entries()
    assert parse_json(json.dumps(entries, ensure_ascii=False).encode()) == EXPECTED
    assert parse_json(json.dumps({"entries": entries})) == EXPECTED


def test_json_accepts_lists_numbers_and_nulls() -> None:
    entry = json_entries()[2] | {"gates": ["G1", "G3"], "un_number": 1203, "hazard_class": 3}
    entry["colour"] = "Yellow"
    entry["detail"] = None
    assert parse_json(json.dumps([entry])) == [EXPECTED[2]]
    entry |= {"hazard_class": 2.1, "un_number": 5}
    [appointment] = parse_json(json.dumps([entry]))
    assert isinstance(appointment, Appointment)
    assert (appointment.hazard_class, appointment.un_number) == ("2.1", "0005")


def test_csv_delta() -> None:
    data = "\n".join(
        [
            "op,type,id,plate,category,holder,organisation,valid_from,reason,source",
            ",registration,R1,苏E12345,hazmat,company,扬子石化有限公司,2026-01-01,,",
            "upsert,blacklist,B2,苏E99999,,,,2026-01-01,overstay,central",
            "remove,registration,R7,,,,,,,",
            "REMOVE,permit,P1,,,,,,,",
        ]
    )
    delta = parse_csv_delta(data)
    assert [c.id for c in delta.upserts] == ["R1", "B2"]
    assert delta.removals == [
        (CredentialKind.REGISTRATION, "R7"),
        (CredentialKind.PERMIT, "P1"),
    ]


def test_json_delta() -> None:
    doc = {"upsert": json_entries()[:2], "remove": [{"type": "appointment", "id": "A9"}]}
    assert parse_json_delta(json.dumps(doc)) == Delta(
        EXPECTED[:2], [(CredentialKind.APPOINTMENT, "A9")]
    )
    assert parse_json_delta('{"remove": [{"type": "blacklist", "id": "B1"}]}') == Delta(
        [], [(CredentialKind.BLACKLIST, "B1")]
    )


def test_imported_list_answers_lookups() -> None:
    allowlist = AllowList.from_credentials(parse_csv(good_csv()), version=1)
    assert allowlist.exact("苏E54321").permits == (EXPECTED[1],)
    assert allowlist.exact("苏E1234挂").appointments == (EXPECTED[2],)


@pytest.mark.parametrize(
    ("tz", "value", "end", "expected"),
    [
        ("Asia/Shanghai", "2026-12-31", False, utc(2026, 12, 30, 16)),
        ("Asia/Shanghai", "2026-12-31", True, utc(2026, 12, 31, 16)),
        ("Asia/Shanghai", "2026-12-31T08:30", False, utc(2026, 12, 31, 0, 30)),
        ("Asia/Shanghai", "2026-12-31 08:30:00", True, utc(2026, 12, 31, 0, 30)),
        ("Asia/Shanghai", "2026-12-31T08:30:00Z", False, utc(2026, 12, 31, 8, 30)),
        ("Asia/Shanghai", "2026-12-31T08:30:00+09:00", False, utc(2026, 12, 30, 23, 30)),
        ("Asia/Shanghai", "20261231T083000", False, utc(2026, 12, 31, 0, 30)),
        ("Asia/Shanghai", "2026-12-31T08:30:00.250", False, utc(2026, 12, 31, 0, 30)),
        ("Asia/Shanghai", "2026-12-31T08:30:00.250", True, utc(2026, 12, 31, 0, 30, 1)),
        ("Europe/Berlin", "2026-07-01", False, utc(2026, 6, 30, 22)),  # summer time
        ("Europe/Berlin", "2026-03-28", True, utc(2026, 3, 28, 23)),  # 23 h day follows
        ("UTC", "2026-12-31", True, utc(2027, 1, 1)),
    ],
)
def test_times(tz: str, value: str, end: bool, expected: datetime) -> None:
    start, until = ("2020-01-01", value) if end else (value, "")
    row = f"blacklist,B1,苏E12345,other,central,{start},{until}"
    [entry] = parse_csv(f"type,id,plate,reason,source,valid_from,valid_until\n{row}\n", tz)
    assert isinstance(entry, BlacklistEntry)
    assert (entry.valid_until if end else entry.valid_from) == expected


def test_lenient_where_it_is_harmless() -> None:
    data = (
        "TYPE , Id,Plate,Reason,Source,Valid_From,valid_until,detail\n"
        "\n"
        "Blacklist, B1 ,苏E12345,Illegal_Parking, central ,2026-01-01\n"
        "   ,,,,,\n"
        "blacklist,B2,苏E12346,OTHER,central,2026-01-01,,\n"
    )
    entries = parse_csv(data)
    assert [(e.id, e.reason) for e in entries if isinstance(e, BlacklistEntry)] == [
        ("B1", BlacklistReason.ILLEGAL_PARKING),
        ("B2", BlacklistReason.OTHER),
    ]


def test_unknown_time_zone_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        parse_csv(good_csv(), "Mars/Olympus")


# --- bad files: each kind of problem, with its line and column ------------------------------

REG_HEADER = "type,id,plate,colour,category,holder,organisation,valid_from,valid_until,gates"
REG_ROW = "registration,R{n},苏E1234{n},blue,ordinary,company,扬子石化,2026-01-01,,"


def reg_file(*bad: str, good_before: int = 1) -> str:
    rows = [REG_ROW.format(n=n) for n in range(good_before)]
    return "\n".join([REG_HEADER, *rows, *bad]) + "\n"


BAD_CSV = [
    pytest.param(
        "type,id,plate,category,holder,valid_from\n"
        "registration,R1,苏E12345,ordinary,company,2026-01-01\n",
        [(1, "organisation", "missing required column (registration rows need it)")],
        id="missing-required-column",
    ),
    pytest.param(
        REG_HEADER + ",colour_code\n" + REG_ROW.format(n=1) + ",7\n",
        [(1, "colour_code", "unknown column")],
        id="unknown-column",
    ),
    pytest.param(
        reg_file("registration,R9,苏E1234,blue,ordinary,company,x,2026-01-01,,"),
        [(3, "plate", "plate '苏E1234': must have 7 or 8 characters, has 6")],
        id="bad-plate-length",
    ),
    pytest.param(
        reg_file("registration,R9,XE12345,blue,ordinary,company,x,2026-01-01,,"),
        [(3, "plate", "first character must be a province abbreviation")],
        id="bad-plate-province",
    ),
    pytest.param(
        reg_file("registration,R9,苏E12345,blue,ordinary,company,x,2026-02-30,,"),
        [(3, "valid_from", "'2026-02-30' is not a date or time (expected ISO 8601")],
        id="bad-date",
    ),
    pytest.param(
        reg_file("registration,R9,苏E12345,blue,ordinary,company,x,31/12/2026,,"),
        [(3, "valid_from", "'31/12/2026' is not a date or time")],
        id="bad-date-format",
    ),
    pytest.param(
        reg_file("registration,R9,苏E12345,blue,ordinary,company,x,2026-06-01,2026-05-31,"),
        [(3, "valid_until", "2026-05-31 is not after valid_from 2026-06-01")],
        id="end-before-start",
    ),
    pytest.param(
        reg_file("truck,R9,苏E12345,blue,ordinary,company,x,2026-06-01,,"),
        [(3, "type", "unknown type 'truck' (expected registration, permit, appointment,")],
        id="unknown-type",
    ),
    pytest.param(
        reg_file("registration,R9,苏E12345,blue,tanker,company,x,2026-06-01,,"),
        [(3, "category", "unknown category 'tanker' (expected hazmat, hazwaste,")],
        id="unknown-category",
    ),
    pytest.param(
        reg_file("registration,R9,苏E12345,purple,ordinary,company,x,2026-06-01,,"),
        [(3, "colour", "unknown colour 'purple'")],
        id="unknown-colour",
    ),
    pytest.param(
        reg_file("registration,R9,苏E12345,blue,ordinary,landlord,x,2026-06-01,,"),
        [(3, "holder", "unknown holder 'landlord' (expected company, department, commuter)")],
        id="unknown-holder",
    ),
    pytest.param(
        reg_file(REG_ROW.format(n=0), good_before=2),
        [(4, "id", "duplicate registration id 'R0' (first at line 2)")],
        id="duplicate-type-and-id",
    ),
    pytest.param(
        reg_file("registration,R9,苏E12345,blue,ordinary,company,,2026-06-01,,"),
        [(3, "organisation", "required, but empty")],
        id="required-cell-empty",
    ),
    pytest.param(
        reg_file("registration,R9,苏E12345,blue,ordinary,company,x,2026-06-01,,G1,extra"),
        [(3, None, "11 cells but the header has 10")],
        id="too-many-cells",
    ),
    pytest.param(
        "type,id,plate,reason,source,valid_from,colour\n"
        "blacklist,B1,苏E12345,speeding,central,2026-01-01,blue\n",
        [(2, "colour", "does not apply to blacklist entries (leave it empty)")],
        id="column-not-for-this-type",
    ),
    pytest.param(
        "type,id,plate,reason,source,valid_from\nblacklist,B1,苏E12345,speeding,,2026-01-01\n",
        [(2, "source", "required, but empty")],
        id="blacklist-without-source",
    ),
    pytest.param(
        "type,id,plate,reason,source,valid_from\nblacklist,B1,苏E12345,rude,x,2026-01-01\n",
        [(2, "reason", "unknown reason 'rude' (expected speeding, illegal-parking,")],
        id="unknown-reason",
    ),
    pytest.param("", [(0, None, "empty file")], id="empty-file"),
    pytest.param(" \n\n", [(0, None, "empty file")], id="blank-file"),
    pytest.param(REG_HEADER + "\n\n", [(0, None, "no entries")], id="header-only"),
    pytest.param(
        "id,plate\nR1,苏E12345\n",
        [(1, "type", "missing required column")],
        id="no-type-column",
    ),
    pytest.param(
        REG_HEADER + ",plate\n",
        [(1, "plate", "column given twice")],
        id="column-twice",
    ),
]

APPT_HEADER = (
    "type,id,plate,category,window_start,window_end,destination,un_number,hazard_class,waybill"
)
BAD_CSV += [
    pytest.param(
        f"{APPT_HEADER}\nappointment,A1,苏E12345,hazmat,2026-06-01,2026-06-01,x,120,3,W\n",
        [(2, "un_number", "'120' is not a UN number (4 digits, e.g. 1203)")],
        id="bad-un-number",
    ),
    pytest.param(
        f"{APPT_HEADER}\nappointment,A1,苏E12345,hazmat,2026-06-01,2026-06-01,x,1203,2.4,W\n",
        [(2, "hazard_class", "'2.4' is not a UN hazard class (1-9 with division")],
        id="bad-hazard-class",
    ),
    pytest.param(
        f"{APPT_HEADER}\nappointment,A1,苏E12345,hazmat,2026-06-01,2026-06-01,x,1203,10,W\n",
        [(2, "hazard_class", "'10' is not a UN hazard class")],
        id="hazard-class-ten",
    ),
    pytest.param(
        f"{APPT_HEADER}\nappointment,A1,苏E12345,ordinary,2026-06-01,2026-06-01,x,1203,3,W\n",
        [(2, "category", "appointments are for hazmat or hazwaste vehicles, not ordinary")],
        id="appointment-not-dangerous",
    ),
    pytest.param(
        f"{APPT_HEADER}\nappointment,A1,苏E12345,hazmat,2026-06-02T10:00,2026-06-02T09:00,x,"
        "1203,3,W\n",
        [(2, "window_end", "2026-06-02T09:00 is not after window_start 2026-06-02T10:00")],
        id="window-end-before-start",
    ),
]


@pytest.mark.parametrize(("data", "expected"), BAD_CSV)
def test_bad_csv(data: str, expected: list[tuple[int, str | None, str]]) -> None:
    errors = errors_of(parse_csv, data)
    assert where(errors) == [(line, column) for line, column, _ in expected]
    for error, (_, _, message) in zip(errors, expected, strict=True):
        assert message in error.message


def test_every_bad_line_is_reported_and_nothing_imported() -> None:
    data = "\n".join(
        [
            REG_HEADER,  # 1
            REG_ROW.format(n=1),  # 2
            "registration,R2,苏E1,blue,ordinary,company,x,2026-01-01,,",  # 3
            REG_ROW.format(n=3),  # 4
            "",  # 5
            'registration,R4,苏E12344,blue,ordinary,company,"扬子\n石化",2026-01-01,bad,',  # 6-7
            "registration,R5,苏E12345,teal,ordinary,boss,x,2026-01-01,,",  # 8
            "registration,R1,苏E12346,blue,ordinary,company,x,2026-01-01,,",  # 9
        ]
    )
    with pytest.raises(AllowListInputError) as caught:
        parse_csv(data)
    errors = caught.value.errors
    assert where(errors) == [
        (3, "plate"),
        (6, "valid_until"),
        (8, "colour"),
        (8, "holder"),
        (9, "id"),
    ]
    text = str(caught.value)
    assert text.startswith("5 errors in allow-list file, nothing imported:")
    assert "line 3: plate: plate '苏E1': must have 7 or 8 characters" in text
    assert "line 9: id: duplicate registration id 'R1' (first at line 2)" in text


def test_undecodable_bytes_name_their_line() -> None:
    data = (REG_HEADER + "\n" + REG_ROW.format(n=1) + "\n").encode() + b"registration,\xff\xfe\n"
    errors = errors_of(parse_csv, data)
    assert [(e.line, e.message) for e in errors] == [(3, "not UTF-8 or GBK text (byte 0xff)")]
    assert errors_of(decode_text, b"\x80abc")[0].line == 1


def test_unterminated_quote_is_reported() -> None:
    data = REG_HEADER + '\nregistration,R1,"苏E12345\n'
    [error] = errors_of(parse_csv, data)
    assert error.message.startswith("bad CSV")


BAD_JSON = [
    pytest.param(
        '[{"type": "blacklist",\n "id": "B1",,}]',
        [(2, None, "malformed JSON: Expecting property name enclosed in double quotes")],
        id="malformed-json",
    ),
    pytest.param(
        '{"type": "blacklist"}',
        [(0, None, 'expected a list of entries or an object {"entries": [...]}')],
        id="not-a-list",
    ),
    pytest.param(
        '{"entries": [], "version": 3}',
        [(0, None, "expected a list of entries")],
        id="object-with-other-keys",
    ),
    pytest.param("  ", [(0, None, "empty file")], id="empty-json"),
    pytest.param("[]", [(0, None, "no entries")], id="no-entries"),
    pytest.param(
        '[{"type": "blacklist", "id": "B1", "plate": "苏E12345", "reason": "speeding",'
        ' "valid_from": "2026-01-01"}, "B2"]',
        [(1, "source", "missing"), (2, None, "must be an object")],
        id="blacklist-without-source-and-non-object",
    ),
    pytest.param(
        '[{"type": "blacklist", "id": 7, "plate": "苏E12345", "reason": "speeding",'
        ' "source": "x", "valid_from": "2026-01-01", "note": "?"}]',
        [(1, "id", "must be a string, not a number"), (1, "note", "unknown key")],
        id="wrong-value-type-and-unknown-key",
    ),
    pytest.param(
        '[{"type": "permit", "id": "P1", "plate": "苏E12345", "category": "ordinary",'
        ' "visitor": "v", "host": "h", "valid_from": "2026-01-01", "valid_until": "2025-01-01"},'
        ' {"type": "permit", "id": "P1", "plate": "苏E12345", "category": "ordinary",'
        ' "visitor": "v", "host": "h", "valid_from": "2026-01-01", "valid_until": "2026-01-02",'
        ' "gates": [1, 2]}]',
        [
            (1, "valid_until", "2025-01-01 is not after valid_from 2026-01-01"),
            (2, "id", "duplicate permit id 'P1' (first at entry 1)"),
            (2, "gates", "must be gate ids separated by ';' or '|', or a list of strings"),
        ],
        id="end-before-start-duplicate-bad-gates",
    ),
]


@pytest.mark.parametrize(("data", "expected"), BAD_JSON)
def test_bad_json(data: str, expected: list[tuple[int, str | None, str]]) -> None:
    errors = errors_of(parse_json, data)
    assert where(errors) == [(line, column) for line, column, _ in expected]
    for error, (_, _, message) in zip(errors, expected, strict=True):
        assert message in error.message


def test_json_errors_name_the_entry() -> None:
    entries = json_entries()
    entries[3] = entries[3] | {"plate": "苏E"}
    with pytest.raises(AllowListInputError) as caught:
        parse_json(json.dumps(entries))
    assert str(caught.value).splitlines()[1] == (
        "  entry 4: plate: plate '苏E': must have 7 or 8 characters, has 2"
    )


BAD_DELTAS = [
    pytest.param(
        "op,type,id,plate,reason,source,valid_from\nreplace,blacklist,B1,,,,\n",
        [(2, "op", "unknown op 'replace' (expected upsert or remove)")],
        id="unknown-op",
    ),
    pytest.param(
        "op,type,id,plate,reason,source,valid_from\nremove,blacklist,B1,苏E12345,,,\n",
        [(2, "plate", "remove entries take only type and id")],
        id="remove-with-fields",
    ),
    pytest.param(
        "op,type,id,plate,reason,source,valid_from\n"
        ",blacklist,B1,苏E12345,speeding,central,2026-01-01\n"
        "remove,blacklist,B1,,,,\n",
        [(3, "id", "duplicate blacklist id 'B1' (first at line 2)")],
        id="upsert-and-remove",
    ),
    pytest.param(
        "op,type,id\nremove,,B1\nremove,blacklist,\n",
        [(2, "type", "required, but empty"), (3, "id", "required, but empty")],
        id="remove-without-type-or-id",
    ),
]


@pytest.mark.parametrize(("data", "expected"), BAD_DELTAS)
def test_bad_csv_delta(data: str, expected: list[tuple[int, str | None, str]]) -> None:
    errors = errors_of(parse_csv_delta, data)
    assert where(errors) == [(line, column) for line, column, _ in expected]
    for error, (_, _, message) in zip(errors, expected, strict=True):
        assert message in error.message


def test_op_column_is_only_for_deltas() -> None:
    errors = errors_of(parse_csv, "op,type,id\nremove,blacklist,B1\n")
    assert [(e.line, e.field, e.message) for e in errors] == [(1, "op", "unknown column")]


def test_bad_json_delta() -> None:
    doc = {
        "upsert": [json_entries()[3] | {"reason": "loitering"}],
        "remove": [{"type": "blacklist", "id": "B1"}, {"type": "permit"}, ["x"]],
    }
    errors = errors_of(parse_json_delta, json.dumps(doc))
    assert [str(e) for e in errors] == [
        "upsert entry 1: reason: unknown reason 'loitering' (expected speeding, "
        "illegal-parking, overstay, forged-permit, safety-violation, other)",
        "remove entry 1: id: duplicate blacklist id 'B1' (first at upsert entry 1)",
        "remove entry 2: id: missing",
        "remove entry 3: must be an object",
    ]
    assert where(errors_of(parse_json_delta, '{"upsert": {}}')) == [(0, "upsert")]
    assert where(errors_of(parse_json_delta, '{"add": []}')) == [(0, None)]
    assert where(errors_of(parse_json_delta, '{"upsert": [], "remove": []}')) == [(0, None)]
    assert where(errors_of(parse_json_delta, "[]")) == [(0, None)]


def test_line_error_text() -> None:
    assert str(LineError(3, "plate", "bad")) == "line 3: plate: bad"
    assert str(LineError(2, None, "must be an object", "entry")) == "entry 2: must be an object"
    assert str(LineError(0, None, "empty file")) == "file: empty file"
    error = AllowListInputError([LineError(0, None, "empty file")])
    assert str(error) == "1 error in allow-list file, nothing imported:\n  file: empty file"


def test_far_dates_are_errors_not_crashes() -> None:
    data = reg_file("registration,R9,苏E12345,blue,ordinary,company,x,2026-01-01,9999-12-31,")
    [error] = errors_of(parse_csv, data)
    assert (error.line, error.field, error.message) == (
        3,
        "valid_until",
        "'9999-12-31' is out of range",
    )


def test_whole_day_until_covers_the_last_local_second() -> None:
    [entry] = parse_csv(reg_file(good_before=1))
    assert isinstance(entry, Registration)
    data = reg_file("registration,R9,苏E12345,blue,ordinary,company,x,2026-01-01,2026-12-31,")
    until = parse_csv(data)[1]
    assert isinstance(until, Registration)
    assert until.valid_at(utc(2026, 12, 31, 15, 59, 59))  # 23:59:59 local
    assert not until.valid_at(utc(2026, 12, 31, 16))
    assert until.valid_until == utc(2026, 12, 31, 16) == utc(2026, 12, 30, 16) + timedelta(days=1)
