"""Plate-reader profiles: how one camera model frames its reads on the serial line.

A profile is data (``drivers/<name>.toml``) for one of two protocol families, told apart by
``type``; a new camera model of a known family needs a new profile, never new code:

- ``text-line`` (:class:`TextLineReaderProfile`): a text line per read, optionally after a
  start marker, ended by a delimiter; fields found by a regular expression with named groups;
  optionally an XOR checksum written as hex digits after a separator (NMEA style).
- ``binary-frame`` (:class:`BinaryFrameReaderProfile`): STX, a length field, the plate in
  GB2312 with a colour byte and a confidence byte, CRC-16/MODBUS, ETX.

The loader (``edgegate.devices.profiles``) includes these families in its discriminated
union; :data:`ReaderProfile` is the union of the plate-reader families alone. Field errors
carry their key in pydantic's ``loc``; cross-field problems are raised as one error of type
``profile_problems`` listing ``(key_path, message)`` pairs, which the loader expands.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from edgegate.core.domain import PlateColour
from edgegate.validation import StrictModel

__all__ = [
    "READER_PROFILE_TYPES",
    "TEXT_FIELDS",
    "BinaryFrameReaderProfile",
    "CrcField",
    "LengthField",
    "ReaderProfile",
    "TextLineReaderProfile",
    "XorChecksum",
]

#: Named groups a text-line pattern may use (and fields its template may write).
TEXT_FIELDS: Final = frozenset({"plate", "colour", "confidence", "image"})

# A plate the validators encode and decode to prove a profile's template and pattern agree.
_SAMPLE_PLATE = "粤B12345"
_SAMPLE_CONFIDENCE = 0.87
_SAMPLE_IMAGE = "img/0001.jpg"
_NUMBER = re.compile(r"\d{1,6}(?:\.\d{1,6})?")


Problem = tuple[str, str]  # (key path, message)


def _raise(problems: list[Problem]) -> None:
    """Report cross-field problems the way the profile loader expands them: one error of
    type ``profile_problems`` with every ``(key, message)``."""
    if problems:
        raise PydanticCustomError(
            "profile_problems",
            "{summary}",
            {"summary": "; ".join(f"{k}: {m}" for k, m in problems), "problems": problems},
        )


def _marker_problem(value: str, key: str, encoding: str, *, allow_empty: bool) -> Problem | None:
    """Markers are found in raw bytes before text decoding, so no byte of a marker may ever
    occur inside an encoded character: ASCII for UTF-8, and below 0x40 for GBK (whose
    second bytes range over 0x40-0xFE, covering letters and most punctuation)."""
    if not value:
        return None if allow_empty else (key, "must not be empty")
    if len(value) > 8:
        return key, f"at most 8 characters, got {len(value)}"
    bad = [c for c in value if ord(c) >= (0x40 if encoding == "gbk" else 0x80)]
    if bad:
        rule = "ASCII below 0x40 ('@')" if encoding == "gbk" else "ASCII"
        return key, (
            f"{value!r} has {bad[0]!r}; with {encoding} text every character must be "
            f"{rule}, or it could occur inside an encoded character"
        )
    return None


class XorChecksum(StrictModel):
    """``[checksum]``: XOR of bytes, written after ``separator`` as two hex digits."""

    separator: StrictStr = "*"
    # "body": the bytes after the start marker up to the separator (NMEA 0183);
    # "line": from the first byte of the line, start marker included, up to the separator.
    covers: Literal["body", "line"] = "body"
    # How encode() writes the digits; decoding accepts either case.
    hex_case: Literal["upper", "lower"] = "upper"


class TextLineReaderProfile(StrictModel):
    """A reader sending one text line per read: ``[start] body [sep HH] delimiter``."""

    type: Literal["text-line"]
    description: StrictStr = ""
    encoding: Literal["gbk", "utf-8"]
    start: StrictStr = ""  # start marker; "" = none (garbage then runs into the next line)
    delimiter: StrictStr
    # Regular expression the whole body must match; named groups: plate (required), colour,
    # confidence, image.
    pattern: StrictStr
    # str.format template writing a body from plate, colour (the camera's word), confidence
    # (already multiplied by confidence_scale) and image: the inverse of pattern.
    template: StrictStr
    colours: Mapping[StrictStr, PlateColour] = Field(default_factory=dict)  # word -> colour
    confidence_scale: Annotated[StrictFloat | StrictInt, Field(gt=0, le=10_000)] = 100
    # Confidence of reads from a camera whose pattern has no confidence group.
    confidence_default: Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)] | None = None
    checksum: XorChecksum | None = None
    max_line_length: Annotated[StrictInt, Field(ge=16, le=4096)] = 256

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        groups = set(compiled.groupindex)
        if "plate" not in groups:
            raise ValueError("must have a named group 'plate', e.g. (?P<plate>[^,]+)")
        unknown = sorted(groups - TEXT_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown named group {unknown[0]!r}: use {', '.join(sorted(TEXT_FIELDS))}"
            )
        return value

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"not a valid format template: {exc}") from None
        unknown = sorted(names - TEXT_FIELDS)
        if unknown or "" in names:
            what = unknown[0] if unknown else "{}"
            raise ValueError(
                f"unknown field {what!r}: use {{plate}}, {{colour}}, {{confidence}}, {{image}}"
            )
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        groups = set(re.compile(self.pattern).groupindex)
        fields = {name for _, name, _, _ in string.Formatter().parse(self.template) if name}
        problems: list[Problem] = []
        if fields != groups:
            problems.append(
                (
                    "template",
                    f"writes {sorted(fields)} but pattern reads {sorted(groups)}; "
                    "they must name the same fields",
                )
            )
        if "colour" in groups and not self.colours:
            problems.append(("colours", "required, the pattern has a 'colour' group"))
        if "colour" not in groups and self.colours:
            problems.append(("colours", "given, but the pattern has no 'colour' group"))
        if "confidence" not in groups and self.confidence_default is None:
            problems.append(
                ("confidence_default", "required, the pattern has no 'confidence' group")
            )
        markers = [("start", self.start, True), ("delimiter", self.delimiter, False)]
        if self.checksum is not None:
            markers.append(("checksum.separator", self.checksum.separator, False))
        for key, value, allow_empty in markers:
            problem = _marker_problem(value, key, self.encoding, allow_empty=allow_empty)
            if problem is not None:
                problems.append(problem)
        if self.start and set(self.start) & set(self.delimiter):
            problems.append(("start", "must share no character with the delimiter"))
        if not problems:
            sample = self._sample_problem(groups)
            problems += [sample] if sample is not None else []
        _raise(problems)
        return self

    def _sample_problem(self, groups: set[str]) -> Problem | None:
        """Write a sample read with the template and read it back with the pattern."""
        word = next(iter(self.colours), "")
        sample: dict[str, Any] = {
            "plate": _SAMPLE_PLATE,
            "colour": word,
            "confidence": _SAMPLE_CONFIDENCE * self.confidence_scale,
            "image": _SAMPLE_IMAGE,
        }
        try:
            text = self.template.format(**sample)
        except (ValueError, TypeError) as exc:
            return "template", f"cannot write a sample read: {exc}"
        match = re.fullmatch(self.pattern, text)
        if match is None:
            return "pattern", f"does not match the template's sample {text!r}; they must agree"
        expected = {"plate": _SAMPLE_PLATE, "colour": word, "image": _SAMPLE_IMAGE}
        for name in sorted(groups & set(expected)):
            if match[name] != expected[name]:
                return "pattern", (
                    f"group {name!r} reads {match[name]!r} from the template's sample "
                    f"{text!r}, expected {expected[name]!r}"
                )
        if "confidence" in groups and not _NUMBER.fullmatch(match["confidence"] or ""):
            return "template", f"writes confidence as {match['confidence']!r}, not a number"
        if any(m and m in text for m in (self.start, self.delimiter)):
            return "template", "a sample read contains the start marker or delimiter"
        size = len(self.start) + len(text.encode(self.encoding))
        if self.checksum is not None:
            size += len(self.checksum.separator) + 2
        if size > self.max_line_length:
            return "max_line_length", (
                f"{self.max_line_length} is shorter than a sample line ({size} bytes)"
            )
        return None

    def word_for(self, colour: PlateColour) -> str | None:
        """The camera's first word for ``colour`` (what the simulator writes)."""
        return next((word for word, c in self.colours.items() if c is colour), None)


def _parse_code(key: object) -> int:
    if isinstance(key, int) and not isinstance(key, bool):
        code = key
    elif isinstance(key, str) and re.fullmatch(r"0[xX][0-9a-fA-F]{1,2}|\d{1,3}", key):
        code = int(key, 16) if key[:2].lower() == "0x" else int(key)
    else:
        raise ValueError(f"colour code {key!r} is not a byte: write 0-255 or 0x00-0xFF")
    if not 0 <= code <= 255:
        raise ValueError(f"colour code {key!r} is not a byte: write 0-255 or 0x00-0xFF")
    return code


def _parse_codes(value: object) -> object:
    """TOML keys are strings: ``"1"`` and ``"0x01"`` both name the colour byte 1."""
    if not isinstance(value, Mapping):
        return value
    codes: dict[int, object] = {}
    for key, colour in value.items():
        code = _parse_code(key)
        if code in codes:
            raise ValueError(f"colour code {key!r}: byte {code} is listed twice")
        codes[code] = colour
    return codes


Byte = Annotated[StrictInt, Field(ge=0, le=255)]


class LengthField(StrictModel):
    """``[length]``: the length field after STX."""

    size: Literal[1, 2] = 1
    byte_order: Literal["big", "little"] = "big"
    # "payload": plate text, colour and confidence bytes; "payload-and-crc": those and the
    # two CRC bytes; "frame": everything from STX to ETX inclusive.
    counts: Literal["payload", "payload-and-crc", "frame"] = "payload"


class CrcField(StrictModel):
    """``[crc]``: CRC-16/MODBUS (poly 0x8005 reflected, init 0xFFFF) before ETX."""

    algorithm: Literal["crc-16/modbus"] = "crc-16/modbus"
    # "length-through-payload": from the length field to the last payload byte;
    # "stx-through-payload": the same with STX; "payload": the payload alone.
    covers: Literal["length-through-payload", "stx-through-payload", "payload"] = (
        "length-through-payload"
    )
    byte_order: Literal["little", "big"] = "little"  # Modbus sends the low byte first


BinaryField = Literal["plate", "colour", "confidence"]


class BinaryFrameReaderProfile(StrictModel):
    """A reader sending ``STX, length, payload, CRC-16, ETX``; the payload holds the plate
    text, a colour byte and a confidence byte in ``payload`` order."""

    type: Literal["binary-frame"]
    description: StrictStr = ""
    stx: Byte = 0x02
    etx: Byte = 0x03
    length: LengthField = LengthField()
    payload: tuple[BinaryField, ...] = ("plate", "colour", "confidence")
    plate_encoding: Literal["gb2312", "gbk"] = "gb2312"
    # Width of a fixed plate field, padded with NUL bytes; None: the plate takes whatever
    # payload bytes the colour and confidence bytes leave.
    plate_size: Annotated[StrictInt, Field(ge=2, le=64)] | None = None
    colours: Annotated[Mapping[Byte, PlateColour], BeforeValidator(_parse_codes)]
    confidence_scale: Annotated[StrictInt, Field(ge=1, le=255)] = 100  # byte meaning 100 %
    crc: CrcField = CrcField()
    max_frame_length: Annotated[StrictInt, Field(ge=8, le=1024)] = 64

    @field_validator("payload")
    @classmethod
    def _check_payload(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if sorted(value) != ["colour", "confidence", "plate"]:
            raise ValueError(
                f"must list plate, colour and confidence once each, in wire order; got {value}"
            )
        return value

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        problems: list[Problem] = []
        if self.stx == self.etx:
            problems.append(("etx", "must differ from stx"))
        if not self.colours:
            problems.append(("colours", "map at least one colour byte"))
        smallest = self.overhead + self.min_payload
        if smallest > self.max_frame_length:
            problems.append(
                (
                    "max_frame_length",
                    f"{self.max_frame_length} is shorter than the smallest frame "
                    f"({smallest} bytes)",
                )
            )
        _raise(problems)
        return self

    @property
    def overhead(self) -> int:
        """Bytes of a frame that are not payload: STX, length field, CRC, ETX."""
        return 1 + self.length.size + 2 + 1

    @property
    def min_payload(self) -> int:
        return 2 + (self.plate_size if self.plate_size is not None else 1)

    @property
    def max_payload(self) -> int:
        if self.plate_size is not None:
            return self.min_payload
        limit = self.max_frame_length - self.overhead
        counted = {"payload": 0, "payload-and-crc": 2, "frame": self.overhead}
        field_max = (1 << (8 * self.length.size)) - 1 - counted[self.length.counts]
        return min(limit, field_max)

    def code_for(self, colour: PlateColour) -> int | None:
        """The camera's first byte for ``colour`` (what the simulator writes)."""
        return next((code for code, c in self.colours.items() if c is colour), None)


#: The plate-reader families, for the profile loader's discriminated union.
READER_PROFILE_TYPES: Final = (TextLineReaderProfile, BinaryFrameReaderProfile)

ReaderProfile = Annotated[
    TextLineReaderProfile | BinaryFrameReaderProfile, Field(discriminator="type")
]
