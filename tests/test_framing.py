"""Plate-reader profiles and frame decoders: every family fed whole, halved and byte by byte,
every error kind, resynchronisation after garbage, encode/decode round trips."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from edgegate.core.domain import PlateColour
from edgegate.core.plates import PROVINCES
from edgegate.devices import profiles
from edgegate.devices.framing import (
    MAX_REPORTED_BYTES,
    BinaryFrameDecoder,
    Frame,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    TextLineDecoder,
    crc16_modbus,
    decoder_for,
    drain,
    xor_checksum,
)
from edgegate.devices.reader_profile import (
    READER_PROFILE_TYPES,
    BinaryFrameReaderProfile,
    ReaderProfile,
    TextLineReaderProfile,
)

DRIVERS = Path(__file__).resolve().parent.parent / "drivers"
GENERIC = "plate-reader-generic"
KV = "plate-reader-kv-utf8"
BINARY = "plate-reader-binary-gb2312"
PROFILES = (GENERIC, KV, BINARY)
C = PlateColour
K = FrameErrorKind


def profile_data(name: str) -> dict[str, Any]:
    with (DRIVERS / f"{name}.toml").open("rb") as f:
        return tomllib.load(f)


def to_toml(data: dict[str, Any]) -> str:
    """Enough TOML for profile data: JSON strings are TOML basic strings."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            pairs = (f"{json.dumps(str(k), ensure_ascii=False)} = {value(x)}" for k, x in v.items())
            return "{ " + ", ".join(pairs) + " }"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v, ensure_ascii=False)

    return "".join(f"{json.dumps(k)} = {value(v)}\n" for k, v in data.items())


def reader_profile(profile: object) -> ReaderProfile:
    assert isinstance(profile, READER_PROFILE_TYPES)
    return profile


def load_profile(name: str) -> ReaderProfile:
    """A profile under drivers/, through the profile loader."""
    return reader_profile(profiles.load_profile(name))


def changed(name: str, **changes: Any) -> str:
    """A profile file as TOML with top-level keys replaced (None removes a key)."""
    data = profile_data(name)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return to_toml(data)


def variant(name: str, **changes: Any) -> ReaderProfile:
    return reader_profile(profiles.parse_profile(changed(name, **changes), f"{name}.toml"))


Item = Frame | FrameError


def feed(decoder: FrameDecoder, chunks: Iterable[bytes]) -> tuple[list[Item], bytearray]:
    """Decode chunk by chunk as a driver does; returns the results and what is left."""
    buffer = bytearray()
    out: list[Item] = []
    for chunk in chunks:
        buffer += chunk
        out += drain(decoder, buffer)
    return out, buffer


def split(data: bytes, mode: str) -> list[bytes]:
    if mode == "whole":
        return [data]
    if mode == "halved":
        return [data[: len(data) // 2], data[len(data) // 2 :]]
    return [data[i : i + 1] for i in range(len(data))]


def frames(items: list[Item]) -> list[Frame]:
    return [i for i in items if isinstance(i, Frame)]


def errors(items: list[Item]) -> list[FrameError]:
    return [i for i in items if isinstance(i, FrameError)]


# ------------------------------------------------------------------------------ profiles


def test_every_plate_reader_profile_validates() -> None:
    files = sorted(DRIVERS.glob("plate-reader-*.toml"))
    assert {f.stem for f in files} >= set(PROFILES)
    for file in files:
        profile = load_profile(file.stem)
        assert isinstance(profile, READER_PROFILE_TYPES)


def test_profile_families() -> None:
    assert isinstance(load_profile(GENERIC), TextLineReaderProfile)
    assert isinstance(load_profile(KV), TextLineReaderProfile)
    assert isinstance(load_profile(BINARY), BinaryFrameReaderProfile)
    assert isinstance(decoder_for(load_profile(KV)), TextLineDecoder)
    assert isinstance(decoder_for(load_profile(BINARY)), BinaryFrameDecoder)


def documented_examples(name: str) -> list[bytes]:
    """The example frames a profile's comments give as ``#   hex  xx xx ...`` blocks."""
    pair = re.compile(r"[0-9a-f]{2}")
    examples: list[bytes] = []
    current: list[str] | None = None
    for line in (DRIVERS / f"{name}.toml").read_text(encoding="utf-8").splitlines():
        text = line.lstrip("#").strip()
        if text.startswith("hex "):
            current = text[4:].split()
            examples.append(b"")
        elif current is not None and text and all(pair.fullmatch(t) for t in text.split()):
            current += text.split()
        else:
            current = None
        if current is not None:
            examples[-1] = bytes.fromhex("".join(current))
    return examples


EXAMPLE_READS = {
    GENERIC: ("粤B12345", C.BLUE, 0.95, "20240501/083015_01.jpg"),
    KV: ("苏EA1234F", C.GREEN, 0.93, ""),
    BINARY: ("粤B12345", C.BLUE, 0.95, ""),
}


@pytest.mark.parametrize("name", PROFILES)
def test_documented_example_frame_decodes(name: str) -> None:
    examples = documented_examples(name)
    assert len(examples) == 1
    items, rest = feed(decoder_for(load_profile(name)), examples)
    plate, colour, confidence, image = EXAMPLE_READS[name]
    assert items == [Frame(plate, colour, confidence, image, examples[0])]
    assert rest == b""


BAD_PROFILES: list[tuple[str, dict[str, Any], str]] = [
    (GENERIC, {"delimiter": ""}, "delimiter"),
    (GENERIC, {"start": "A"}, "start"),  # a GBK second byte can be 'A'
    (GENERIC, {"start": "\r"}, "start"),  # shares a character with the delimiter
    (GENERIC, {"pattern": "(?P<plate>.+"}, "pattern"),
    (GENERIC, {"pattern": "(?P<plate>[^,]+),(?P<color>.*)"}, "pattern"),
    (GENERIC, {"pattern": "(?P<colour>[^,]+)"}, "pattern"),
    (GENERIC, {"colours": {"蓝": "purple"}}, "colours.蓝"),
    (GENERIC, {"colours": None}, "colours"),
    (GENERIC, {"baud": 9600}, "baud"),
    (GENERIC, {"template": "{plate},{colour},{confidence:.0f}"}, "template"),
    (GENERIC, {"template": "{plate},{colour},{confidence:d},{image}"}, "template"),
    (GENERIC, {"template": "{plate};{colour};{confidence:.0f};{image}"}, "pattern"),
    (GENERIC, {"max_line_length": 8}, "max_line_length"),
    (GENERIC, {"encoding": "latin-1"}, "encoding"),
    (GENERIC, {"confidence_scale": 0}, "confidence_scale"),
    (GENERIC, {"checksum": {"separator": "*", "covers": "all"}}, "checksum.covers"),
    (
        KV,
        {"pattern": "PLATE=(?P<plate>.+)", "template": "PLATE={plate}", "colours": None},
        "confidence_default",
    ),
    (KV, {"delimiter": "\u00e9"}, "delimiter"),  # not ASCII
    (BINARY, {"etx": 2}, "etx"),
    (BINARY, {"stx": 256}, "stx"),
    (BINARY, {"colours": {"0x1G": "blue"}}, "colours"),
    (BINARY, {"colours": {"1": "blue", "0x01": "yellow"}}, "colours"),
    (BINARY, {"payload": ["plate", "plate", "colour"]}, "payload"),
    (BINARY, {"length": {"size": 3}}, "length.size"),
    (BINARY, {"crc": {"covers": "everything"}}, "crc.covers"),
    (BINARY, {"max_frame_length": 8, "plate_size": 16}, "max_frame_length"),
    (BINARY, {"plate_encoding": "big5"}, "plate_encoding"),
    (BINARY, {"type": "text"}, "type"),
]


@pytest.mark.parametrize(("name", "changes", "key"), BAD_PROFILES)
def test_bad_profile_error_names_the_key(name: str, changes: dict[str, Any], key: str) -> None:
    with pytest.raises(profiles.ProfileError) as info:
        variant(name, **changes)
    assert key in [k for _, k, _ in info.value.problems], info.value.problems
    # The models name it on their own too, without the loader's help.
    with pytest.raises(ValidationError) as raw:
        TypeAdapter(ReaderProfile).validate_python(tomllib.loads(changed(name, **changes)))
    assert key in str(raw.value)


def test_colour_codes_may_be_decimal_or_hex() -> None:
    profile = variant(BINARY, colours={"1": "blue", "0x0A": "yellow"})
    assert isinstance(profile, BinaryFrameReaderProfile)
    assert dict(profile.colours) == {1: C.BLUE, 10: C.YELLOW}


# -------------------------------------------------------------------------- checksums


def test_crc16_modbus_check_value() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37


def test_xor_checksum_of_an_nmea_sentence() -> None:
    body = b"GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,"
    assert xor_checksum(body) == 0x76


# ------------------------------------------------------------------------- valid frames

READS = [
    ("粤B12345", C.BLUE, 0.95, "a.jpg"),
    ("沪AD12345", C.GREEN, 0.5, ""),
    ("京A0001挂", C.YELLOW, 1.0, ""),  # yellow is 0x02 == STX in the binary profile
    ("新Q88888", C.YELLOW_GREEN, 0.0, "x/y.jpg"),
]


def encoded_reads(name: str) -> tuple[FrameDecoder, list[bytes], list[Frame]]:
    decoder = decoder_for(load_profile(name))
    wire: list[bytes] = []
    expected: list[Frame] = []
    for plate, colour, confidence, image in READS:
        image = "" if name == BINARY else image
        data = decoder.encode(plate, colour, confidence, image)
        wire.append(data)
        expected.append(Frame(plate, colour, confidence, image, data))
    return decoder, wire, expected


@pytest.mark.parametrize("mode", ["whole", "halved", "byte-by-byte"])
@pytest.mark.parametrize("name", PROFILES)
def test_valid_frames_fed_whole_halved_and_byte_by_byte(name: str, mode: str) -> None:
    decoder, wire, expected = encoded_reads(name)
    items, rest = feed(decoder, split(b"".join(wire), mode))
    assert items == expected
    assert rest == b""


@pytest.mark.parametrize("name", PROFILES)
def test_a_partial_frame_waits_for_more(name: str) -> None:
    decoder, wire, _ = encoded_reads(name)
    for cut in range(len(wire[0])):
        assert decoder.decode(wire[0][:cut]) == (0, None)


def test_lower_case_checksum_digits_are_accepted() -> None:
    decoder = decoder_for(load_profile(GENERIC))
    upper = next(
        data
        for data in (decoder.encode("粤B12345", C.BLUE, 0.5, f"{i}.jpg") for i in range(100))
        if data[-4:-2] != data[-4:-2].lower()
    )
    lower = upper[:-4] + upper[-4:-2].lower() + b"\r\n"
    (frame,), _ = feed(decoder, [lower])
    assert isinstance(frame, Frame) and frame.raw == lower


def test_checksum_over_the_whole_line_and_lower_case_encoding() -> None:
    decoder = decoder_for(
        variant(GENERIC, checksum={"separator": "*", "covers": "line", "hex_case": "lower"})
    )
    data = decoder.encode("粤B12345", C.BLUE, 0.9)
    line = data[:-2]
    assert line[-2:] == f"{xor_checksum(line[:-3]):02x}".encode()
    assert line.startswith(b"$")
    (frame,), _ = feed(decoder, [data])
    assert isinstance(frame, Frame) and frame.plate == "粤B12345"


def test_text_without_checksum_and_with_default_confidence() -> None:
    decoder = decoder_for(
        variant(
            GENERIC,
            checksum=None,
            pattern="(?P<plate>[^,]+),(?P<colour>[^,]*)",
            template="{plate},{colour}",
            confidence_default=0.8,
        )
    )
    (frame,), _ = feed(decoder, ["$粤B12345,黄\r\n".encode("gbk")])
    assert frame == Frame("粤B12345", C.YELLOW, 0.8, "", "$粤B12345,黄\r\n".encode("gbk"))


BINARY_VARIANTS: list[dict[str, Any]] = [
    {},
    {"length": {"size": 2, "byte_order": "little", "counts": "frame"}},
    {"length": {"size": 2, "byte_order": "big", "counts": "payload-and-crc"}},
    {"crc": {"covers": "stx-through-payload", "byte_order": "big"}},
    {"crc": {"covers": "payload"}},
    {"payload": ["colour", "confidence", "plate"], "plate_size": 12},
    {"stx": 0xAA, "etx": 0x55, "plate_encoding": "gbk", "confidence_scale": 200},
]


@st.composite
def plates(draw: st.DrawFn) -> str:
    serial = draw(st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=5, max_size=6))
    suffix = draw(st.sampled_from(["", "挂", "学", "警"])) if len(serial) == 5 else ""
    province, authority = draw(st.sampled_from(PROVINCES)), draw(st.sampled_from("ABCDEFGHJKLM"))
    return province + authority + serial + suffix


@pytest.mark.parametrize("changes", BINARY_VARIANTS, ids=lambda c: ",".join(c) or "file")
@given(
    plate=plates(),
    colour=st.sampled_from([c for c in C]),
    percent=st.integers(0, 100),
    cut=st.integers(0, 40),
)
def test_binary_round_trip(
    changes: dict[str, Any], plate: str, colour: PlateColour, percent: int, cut: int
) -> None:
    decoder = decoder_for(variant(BINARY, **changes))
    data = decoder.encode(plate, colour, percent / 100)
    items, rest = feed(decoder, [data[:cut], data[cut:]])
    assert items == [Frame(plate, colour, percent / 100, "", data)]
    assert rest == b""


@pytest.mark.parametrize("name", [GENERIC, KV])
@given(
    plate=plates(),
    colour=st.sampled_from([c for c in C]),
    percent=st.integers(0, 100),
    image=st.from_regex(r"[a-z0-9/_.]{0,30}", fullmatch=True),
)
def test_text_round_trip(
    name: str, plate: str, colour: PlateColour, percent: int, image: str
) -> None:
    decoder = decoder_for(load_profile(name))
    data = decoder.encode(plate, colour, percent / 100, image)
    items, rest = feed(decoder, split(data, "byte-by-byte"))
    assert items == [Frame(plate, colour, percent / 100, image, data)]
    assert rest == b""


def test_encode_refuses_what_the_profile_cannot_write() -> None:
    text = decoder_for(load_profile(KV))
    binary = decoder_for(load_profile(BINARY))
    with pytest.raises(ValueError, match="start marker or delimiter"):
        text.encode("粤B1\n2345", C.BLUE, 0.5)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        text.encode("粤B12345", C.BLUE, 1.5)
    with pytest.raises(UnicodeEncodeError):
        binary.encode("粤B12345\u00b7", C.BLUE, 0.5)  # '·' is not in GB2312
    with pytest.raises(ValueError, match="image"):
        binary.encode("粤B12345", C.BLUE, 0.5, "a.jpg")
    no_white = decoder_for(variant(BINARY, colours={"1": "blue"}))
    with pytest.raises(ValueError, match="no code for colour white"):
        no_white.encode("粤B12345", C.WHITE, 0.5)


# ------------------------------------------------------------------------- text errors


def generic_line(body: bytes, *, checksum: int | None = None) -> bytes:
    value = xor_checksum(body) if checksum is None else checksum
    return b"$" + body + b"*" + f"{value:02X}".encode() + b"\r\n"


GOOD_GENERIC = generic_line("粤B12345,蓝,95,".encode("gbk"))

TEXT_ERRORS: list[tuple[bytes, FrameErrorKind, str]] = [
    (b"noise", K.GARBAGE, "before the start marker"),
    (b"noise\r\n", K.GARBAGE, "line without start marker"),
    ("$粤B1".encode("gbk"), K.INCOMPLETE, "cut short"),
    (generic_line("粤B12345,蓝,95,".encode("gbk"), checksum=0), K.BAD_CHECKSUM, "says 00"),
    ("$粤B12345,蓝,95,\r\n".encode("gbk"), K.BAD_CHECKSUM, "no checksum"),
    ("$粤B12345,蓝,95,*G1\r\n".encode("gbk"), K.BAD_CHECKSUM, "no checksum"),
    (generic_line(b"\xffB12345,\xc0\xb6,95,"), K.BAD_TEXT, "not gbk text at byte 0"),
    (generic_line(b"hello"), K.NO_MATCH, "'hello'"),
    (generic_line(" ,蓝,95,".encode("gbk")), K.EMPTY_PLATE, "empty plate"),
    (generic_line("粤B12345,紫,95,".encode("gbk")), K.UNKNOWN_COLOUR, "'紫'"),
    (generic_line("粤B12345,蓝,120,".encode("gbk")), K.BAD_CONFIDENCE, "120 out of range 0..100"),
    (generic_line(b"A," * 130), K.TOO_LONG, "256"),
]


@pytest.mark.parametrize(("bad", "kind", "reason"), TEXT_ERRORS)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_text_error_kinds(bad: bytes, kind: FrameErrorKind, reason: str, mode: str) -> None:
    decoder = decoder_for(load_profile(GENERIC))
    items, rest = feed(decoder, split(bad + GOOD_GENERIC, mode))
    assert rest == b""
    assert items[-1] == Frame("粤B12345", C.BLUE, 0.95, "", GOOD_GENERIC)
    first = items[0]
    assert isinstance(first, FrameError)
    assert first.kind is kind
    assert reason in first.reason
    assert str(first).startswith(f"{kind}: ")
    assert first.data == bad[: first.size][:MAX_REPORTED_BYTES]
    assert sum(e.size for e in errors(items)) == len(bad)
    if mode == "whole":
        assert len(items) == 2


def test_checksum_mismatch_names_computed_and_received() -> None:
    decoder = decoder_for(load_profile(GENERIC))
    _, error = decoder.decode(generic_line(b"x", checksum=0x41))
    assert isinstance(error, FrameError)
    assert error.reason == "bad checksum: computed 78, frame says 41"


@pytest.mark.parametrize("name", [GENERIC, KV])
def test_flood_without_delimiter_is_dropped_in_bounded_pieces(name: str) -> None:
    decoder = decoder_for(load_profile(name))
    good = decoder.encode("粤B12345", C.BLUE, 0.5)
    flood = b"x" * 5000
    buffer = bytearray()
    items: list[Item] = []
    for chunk in [*split(flood, "halved"), b"\n" + good]:
        buffer += chunk
        items += drain(decoder, buffer)
        assert len(buffer) < decoder.max_pending
    assert isinstance(items[-1], Frame) and items[-1].raw == good
    bad = errors(items)
    assert bad and all(len(e.data) <= MAX_REPORTED_BYTES for e in bad)
    assert bad[0].truncated and bad[0].kind in (K.GARBAGE, K.TOO_LONG)
    assert sum(e.size for e in bad) == len(flood) + 1


def test_kv_line_with_noise_in_front_is_rejected_and_the_next_line_reads() -> None:
    decoder = decoder_for(load_profile(KV))
    good = decoder.encode("苏EA1234F", C.YELLOW, 0.25)
    items, _ = feed(decoder, [b"\x00#" + good + good])
    assert [type(i) for i in items] == [FrameError, Frame]
    error = items[0]
    assert isinstance(error, FrameError) and error.kind is K.NO_MATCH


def test_kv_line_that_is_not_utf8() -> None:
    decoder = decoder_for(load_profile(KV))
    (error,), _ = feed(decoder, [b"CONF=0.50;COLOR=BLUE;PLATE=\xd4\xc1B12345\n"])
    assert isinstance(error, FrameError) and error.kind is K.BAD_TEXT
    assert "not utf-8 text at byte 27" in error.reason


# ----------------------------------------------------------------------- binary errors


def binary_frame(payload: bytes, *, length: int | None = None, etx: int = 0x03) -> bytes:
    head = bytes([len(payload) if length is None else length])
    crc = crc16_modbus(head + payload).to_bytes(2, "little")
    return b"\x02" + head + payload + crc + bytes([etx])


GOOD_BINARY = binary_frame("粤B12345".encode("gb2312") + b"\x01\x5f")
PLATE = "粤B12345".encode("gb2312")

BINARY_ERRORS: list[tuple[bytes, FrameErrorKind, str]] = [
    (b"noise", K.GARBAGE, "5 bytes before STX"),
    (b"\x02\xff", K.BAD_LENGTH, "length field 255 out of range 3..59"),
    (b"\x02\x01\x00", K.BAD_LENGTH, "length field 1 out of range"),
    (binary_frame(PLATE + b"\x01\x5f", etx=0x04), K.MISSING_ETX, "found 04"),
    (GOOD_BINARY[:3] + b"\x00" + GOOD_BINARY[4:], K.BAD_CRC, "bad CRC: computed"),
    (binary_frame(b"\xff\xfeB12345\x01\x5f"), K.BAD_TEXT, "not GB2312 text at byte 0"),
    (binary_frame(b"  \x01\x5f"), K.EMPTY_PLATE, "empty plate"),
    (binary_frame(PLATE + b"\x09\x5f"), K.UNKNOWN_COLOUR, "unknown colour code 0x09"),
    (binary_frame(PLATE + b"\x01\x65"), K.BAD_CONFIDENCE, "101 out of range 0..100"),
]


@pytest.mark.parametrize(("bad", "kind", "reason"), BINARY_ERRORS)
@pytest.mark.parametrize("mode", ["whole", "byte-by-byte"])
def test_binary_error_kinds(bad: bytes, kind: FrameErrorKind, reason: str, mode: str) -> None:
    decoder = decoder_for(load_profile(BINARY))
    items, rest = feed(decoder, split(bad + GOOD_BINARY, mode))
    assert rest == b""
    assert items[-1] == Frame("粤B12345", C.BLUE, 0.95, "", GOOD_BINARY)
    first = items[0]
    assert isinstance(first, FrameError)
    assert first.kind is kind
    assert reason in first.reason
    assert first.data == bad[: first.size]
    # Whatever is left of a bad candidate is reported too, never silently skipped.
    assert sum(e.size for e in errors(items)) == len(bad)


def test_stray_stx_announcing_a_long_frame_does_not_hold_back_the_next_frame() -> None:
    decoder = decoder_for(load_profile(BINARY))
    stray = b"\x02\x30abc"  # announces 48 payload bytes
    items, rest = feed(decoder, split(stray + GOOD_BINARY, "byte-by-byte"))
    assert rest == b""
    assert items == [
        FrameError.of(K.INCOMPLETE, "frame cut short by the next frame after 5 bytes", stray),
        Frame("粤B12345", C.BLUE, 0.95, "", GOOD_BINARY),
    ]


def test_garbage_without_stx_is_dropped_once_it_could_be_no_frame() -> None:
    decoder = decoder_for(load_profile(BINARY))
    assert decoder.decode(b"\x00" * 63) == (0, None)
    consumed, error = decoder.decode(b"\x00" * 64)
    assert consumed == 64
    assert isinstance(error, FrameError) and error.kind is K.GARBAGE


def test_reported_bytes_are_bounded() -> None:
    error = FrameError.of(K.GARBAGE, "x", b"\x00" * 1000)
    assert len(error.data) == MAX_REPORTED_BYTES and error.size == 1000 and error.truncated
    small = FrameError.of(K.GARBAGE, "x", b"\x00" * 10)
    assert not small.truncated


# ------------------------------------------------------------------ control characters

# A plate field holding a control character (C0, DEL, C1), an invisible format character or
# a line separator is no plate: each profile's frame for "粤B" + control + "12345".
CONTROLS = ["\x00", "\x07", "\t", "\r", "\x1b", "\x1f", "\x7f"]
WIDE_CONTROLS = ["\x85", "\x9f", "\u200b", "\u202e", "\u2028", "\ufeff"]  # not in GBK


def kv_line(plate: str) -> bytes:
    return f"CONF=0.50;COLOR=BLUE;PLATE={plate};IMG=a.jpg\n".encode()


def framed(name: str, plate: str) -> bytes:
    """A frame for ``plate`` written byte for byte as a camera would, checksums right."""
    if name == GENERIC:
        return generic_line(f"{plate},蓝,95,".encode("gbk"))
    if name == KV:
        return kv_line(plate)
    return binary_frame(plate.encode("gbk") + b"\x01\x5f")


CONTROL_CASES = [
    *((name, ch) for name in PROFILES for ch in CONTROLS),
    *((KV, ch) for ch in WIDE_CONTROLS),
]


@pytest.mark.parametrize(("name", "control"), CONTROL_CASES)
@pytest.mark.parametrize("mode", ["whole", "halved", "byte-by-byte"])
def test_a_control_character_in_the_plate_field_rejects_the_frame(
    name: str, control: str, mode: str
) -> None:
    decoder = decoder_for(load_profile(name))
    good = decoder.encode("粤B12345", C.BLUE, 0.5)
    plates = [f"粤B{control}12345"]
    if control not in ("\t", "\r"):  # padding and line ends around a field are trimmed
        plates += [f"{control}粤B12345", f"粤B12345{control}"]
    for plate in plates:
        bad = framed(name, plate)
        items, rest = feed(decoder, split(bad + good, mode))
        assert rest == b""
        assert [type(i) for i in items] == [FrameError, Frame], plate
        error = items[0]
        assert isinstance(error, FrameError)
        assert error.kind is K.CONTROL_CHARACTER
        at = plate.index(control)
        assert error.reason == (
            f"plate field has control character U+{ord(control):04X} at character {at}"
        )
        assert error.data == bad and error.size == len(bad)
        assert str(error).startswith("control-character: ")
        assert isinstance(items[1], Frame) and items[1].plate == "粤B12345"


@pytest.mark.parametrize("mode", ["whole", "halved", "byte-by-byte"])
def test_padding_and_line_ends_around_the_plate_field_are_no_control_characters(
    mode: str,
) -> None:
    kv = decoder_for(load_profile(KV))
    crlf = b"CONF=0.50;COLOR=BLUE;PLATE=\xe7\xb2\xa4B12345\r\n"  # a CRLF camera, LF profile
    items, rest = feed(kv, split(crlf, mode))
    assert rest == b"" and [i.plate for i in frames(items)] == ["粤B12345"]
    generic = decoder_for(load_profile(GENERIC))
    padded = framed(GENERIC, "\t\u3000粤B12345 \t")
    items, rest = feed(generic, split(padded, mode))
    assert rest == b"" and [i.plate for i in frames(items)] == ["粤B12345"]
    fixed = decoder_for(variant(BINARY, payload=["colour", "confidence", "plate"], plate_size=12))
    frame = fixed.encode("粤B12345", C.BLUE, 0.5)  # NUL-padded to 12 bytes
    items, rest = feed(fixed, split(frame, mode))
    assert rest == b"" and [i.plate for i in frames(items)] == ["粤B12345"]


def test_a_nul_inside_a_fixed_size_plate_field_rejects_the_frame() -> None:
    fixed = decoder_for(variant(BINARY, payload=["colour", "confidence", "plate"], plate_size=12))
    frame = fixed.encode("粤B1", C.BLUE, 0.5)
    plate_at = frame.index("粤B1".encode("gb2312"))
    bad = bytearray(frame)
    bad[plate_at + 5 : plate_at + 9] = b"2345"  # "粤B1\x002345": a NUL, then more plate
    bad[-3:-1] = crc16_modbus(bad[1:-3]).to_bytes(2, "little")
    (error,), rest = feed(fixed, [bytes(bad)])
    assert rest == b""
    assert isinstance(error, FrameError) and error.kind is K.CONTROL_CHARACTER
    assert "U+0000 at character 3" in error.reason


# --------------------------------------------------------------------- resynchronisation


def garbage_for(name: str) -> st.SearchStrategy[bytes]:
    if name == KV:
        # Without a start marker only a delimiter ends garbage: noise comes in whole lines.
        line = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
        return st.lists(line.map(lambda b: b + b"\n"), max_size=2).map(b"".join)
    markers = [b"$", b"*", b"\r", b"\n", b"\r\n", b"\x02", b"\x03", b"\x0a", b"\x30"]
    pieces = st.one_of(st.binary(min_size=1, max_size=12), st.sampled_from(markers))
    return st.lists(pieces, max_size=6).map(b"".join)


@pytest.mark.parametrize("name", PROFILES)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_garbage_interleaved_with_valid_frames(name: str, data: st.DataObject) -> None:
    """Every valid frame is decoded exactly once and in order, whatever surrounds it and
    however the bytes are split; every run of garbage is reported."""
    decoder = decoder_for(load_profile(name))
    reads = data.draw(
        st.lists(st.tuples(plates(), st.sampled_from([C.BLUE, C.YELLOW])), min_size=1, max_size=5)
    )
    garbage = data.draw(st.lists(garbage_for(name), min_size=len(reads), max_size=len(reads)))
    wire = [decoder.encode(plate, colour, 0.5) for plate, colour in reads]
    stream = b"".join(g + w for g, w in zip(garbage, wire, strict=True))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    items, rest = feed(decoder, chunks)

    assert rest == b""
    assert [f.raw for f in frames(items)] == wire
    assert [f.plate for f in frames(items)] == [plate for plate, _ in reads]
    bad = errors(items)
    assert len(bad) >= sum(1 for g in garbage if g)
    assert sum(e.size for e in bad) == sum(len(g) for g in garbage)


@pytest.mark.parametrize("name", PROFILES)
@given(data=st.data())
def test_a_full_buffer_always_makes_progress(name: str, data: st.DataObject) -> None:
    decoder = decoder_for(load_profile(name))
    pieces = st.one_of(
        st.binary(min_size=1, max_size=8),
        st.sampled_from([b"$", b"*", b"\r\n", b"\n", b"\x02", b"\x02\x0a", b"\x03"]),
    )
    raw = data.draw(st.lists(pieces, min_size=1, max_size=80).map(b"".join))
    size = decoder.max_pending + data.draw(st.integers(0, 50))
    buffer = (raw * (size // len(raw) + 1))[:size]
    consumed, result = decoder.decode(buffer)
    assert 0 < consumed <= len(buffer)
    assert result is not None
