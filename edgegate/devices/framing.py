"""Plate-reader frame decoders and encoders: pure functions of bytes, no I/O, no clock.

``decode(buffer)`` looks at the bytes received so far and returns ``(consumed, result)``:

- ``(0, None)``: nothing complete yet; call again with more bytes;
- ``(n, Frame)``: the first ``n`` bytes were a valid read;
- ``(n, FrameError)``: the first ``n`` bytes were garbage or a bad frame.

Every consumed byte belongs to exactly one frame or error, so garbage is always reported. A
decoder resynchronises on the next start marker (text) or STX (binary) and never consumes
bytes from which a valid frame could start. Once ``len(buffer) >= max_pending`` it always
consumes something, so a caller's buffer stays bounded whatever the line sends.
"""

from __future__ import annotations

import abc
import enum
import re
import unicodedata
from dataclasses import dataclass
from typing import Final

from edgegate.core.domain import PlateColour
from edgegate.core.events import PlateRead
from edgegate.devices.reader_profile import (
    BinaryFrameReaderProfile,
    ReaderProfile,
    TextLineReaderProfile,
)

__all__ = [
    "MAX_REPORTED_BYTES",
    "BinaryFrameDecoder",
    "DecodeResult",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameErrorKind",
    "TextLineDecoder",
    "crc16_modbus",
    "decoder_for",
    "drain",
    "xor_checksum",
]

#: How many bytes of a bad frame an error keeps (the rest is counted, not kept).
MAX_REPORTED_BYTES: Final = 256


class FrameErrorKind(enum.StrEnum):
    GARBAGE = "garbage"  # bytes outside any frame
    INCOMPLETE = "incomplete"  # a frame cut short by the start of another
    TOO_LONG = "too-long"
    BAD_LENGTH = "bad-length"  # binary length field out of range
    MISSING_ETX = "missing-etx"
    BAD_CHECKSUM = "bad-checksum"  # text XOR checksum missing, malformed or wrong
    BAD_CRC = "bad-crc"
    BAD_TEXT = "bad-text"  # not decodable in the profile's encoding
    NO_MATCH = "no-match"  # text does not match the profile's field pattern
    EMPTY_PLATE = "empty-plate"
    UNKNOWN_COLOUR = "unknown-colour"
    BAD_CONFIDENCE = "bad-confidence"
    CONTROL_CHARACTER = "control-character"  # in the plate field: no camera reads one


@dataclass(frozen=True, slots=True)
class Frame:
    """One read as the camera sent it; the plate is not normalised (the policy does that)."""

    plate: str
    colour: PlateColour
    confidence: float  # 0..1
    image_ref: str
    raw: bytes

    def read_by(self, reader: str) -> PlateRead:
        """The ``plate.read`` event of this frame from the reader named ``reader``."""
        # Field by field, not ``asdict``: it deep-copies each value, ~8 µs on every plate read.
        return PlateRead(
            plate=self.plate,
            colour=self.colour,
            confidence=self.confidence,
            reader=reader,
            image_ref=self.image_ref,
            raw=self.raw,
        )


@dataclass(frozen=True, slots=True)
class FrameError:
    """Consumed bytes that were no valid frame; ``data`` keeps at most
    :data:`MAX_REPORTED_BYTES` of the ``size`` bytes."""

    kind: FrameErrorKind
    reason: str
    data: bytes
    size: int

    @classmethod
    def of(cls, kind: FrameErrorKind, reason: str, span: bytes | bytearray) -> FrameError:
        return cls(kind, reason, bytes(span[:MAX_REPORTED_BYTES]), len(span))

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)

    def __str__(self) -> str:
        return f"{self.kind}: {self.reason}"


DecodeResult = tuple[int, Frame | FrameError | None]


class FrameDecoder(abc.ABC):
    """What the serial driver and the simulator need from a protocol family."""

    @property
    @abc.abstractmethod
    def max_pending(self) -> int:
        """A buffer this long always makes ``decode`` consume something."""

    @abc.abstractmethod
    def decode(self, buffer: bytes | bytearray) -> DecodeResult: ...

    def encode(
        self,
        plate: str,
        colour: PlateColour = PlateColour.UNKNOWN,
        confidence: float = 1.0,
        image_ref: str = "",
    ) -> bytes:
        """The frame a camera sends for this read; ``ValueError`` if it cannot be written."""
        return self._frame(plate, colour, confidence, image_ref)

    @abc.abstractmethod
    def _frame(self, plate: str, colour: PlateColour, confidence: float, image_ref: str) -> bytes:
        """``encode`` with every argument given."""


def decoder_for(profile: ReaderProfile) -> FrameDecoder:
    """The decoder of a profile's family."""
    if isinstance(profile, TextLineReaderProfile):
        return TextLineDecoder(profile)
    return BinaryFrameDecoder(profile)


def drain(decoder: FrameDecoder, buffer: bytearray) -> list[Frame | FrameError]:
    """Decode everything complete at the front of ``buffer``, removing what was consumed."""
    out: list[Frame | FrameError] = []
    while True:
        consumed, result = decoder.decode(buffer)
        if consumed == 0:
            return out
        del buffer[:consumed]
        if result is not None:
            out.append(result)


def xor_checksum(data: bytes | bytearray) -> int:
    """XOR of all bytes (the NMEA 0183 checksum)."""
    value = 0
    for byte in data:
        value ^= byte
    return value


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16_TABLE: Final = _crc16_table()


def crc16_modbus(data: bytes | bytearray) -> int:
    """CRC-16/MODBUS: poly 0x8005 reflected (0xA001), init 0xFFFF, no final XOR."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC16_TABLE[(crc ^ byte) & 0xFF]
    return crc


def _show(data: bytes | bytearray, limit: int = 40) -> str:
    text = bytes(data[:limit]).hex(" ")
    return text + (" …" if len(data) > limit else "")


def _plate_problem(field: str) -> tuple[FrameErrorKind, str] | None:
    """Why a plate field is no plate: it holds a control character (C0, DEL, C1), an
    invisible format character (zero-width, bidi override, BOM...) or a line separator, or
    only spaces; None if it is one. Padding and line ends around the field are trimmed
    before this."""
    for at, ch in enumerate(field):
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            return (
                FrameErrorKind.CONTROL_CHARACTER,
                f"plate field has control character U+{ord(ch):04X} at character {at}",
            )
    if not field.strip():
        return FrameErrorKind.EMPTY_PLATE, "empty plate field"
    return None


#: Padding and line ends a camera may leave around a field (a CRLF camera on an LF profile).
_PADDING: Final = " \t\r\n"

_HEX2: Final = re.compile(rb"[0-9A-Fa-f]{2}")
_NUMBER: Final = re.compile(r"\d{1,6}(?:\.\d{1,6})?")


# ----------------------------------------------------------------------------- text lines


class TextLineDecoder(FrameDecoder):
    """``[start] body [separator HH] delimiter``, body matched by the profile's pattern."""

    def __init__(self, profile: TextLineReaderProfile) -> None:
        self.profile = profile
        self._start = profile.start.encode("ascii")
        self._delim = profile.delimiter.encode("ascii")
        self._pattern = re.compile(profile.pattern)
        self._groups = frozenset(self._pattern.groupindex)
        checksum = profile.checksum
        self._sep = checksum.separator.encode("ascii") if checksum else b""
        # A partial start marker or delimiter may sit at the end of a buffer: never consume it.
        self._keep = max(len(self._start), len(self._delim)) - 1

    @property
    def max_pending(self) -> int:
        # A line of max_line_length bytes has its delimiter complete within this many bytes.
        return self.profile.max_line_length + len(self._delim)

    def decode(self, buffer: bytes | bytearray) -> DecodeResult:
        end = buffer.find(self._delim)
        if self._start:
            first = buffer.find(self._start)
            if first != 0:
                return self._garbage(buffer, first, end)
            # A second start marker before the delimiter: the first line was cut short.
            again = buffer.find(self._start, 1)
            if again != -1 and (end == -1 or again < end):
                return again, FrameError.of(
                    FrameErrorKind.INCOMPLETE,
                    f"line cut short by the next start marker after {again} bytes",
                    buffer[:again],
                )
        if end == -1:
            if len(buffer) < self.max_pending:
                return 0, None
            size = len(buffer) - self._keep
            return size, FrameError.of(
                FrameErrorKind.TOO_LONG,
                f"no delimiter within {self.profile.max_line_length} bytes ({size} bytes dropped)",
                buffer[:size],
            )
        size = end + len(self._delim)
        return size, self._parse(bytes(buffer[:end]), bytes(buffer[:size]))

    def _garbage(self, buffer: bytes | bytearray, first: int, end: int) -> DecodeResult:
        """Bytes before the first start marker; reported once their extent is known."""
        if end != -1 and (first == -1 or end < first):
            size = end + len(self._delim)
            why = "line without start marker"
        elif first > 0:
            size, why = first, "bytes before the start marker"
        elif len(buffer) >= self.max_pending:
            size, why = len(buffer) - self._keep, "no start marker"
        else:
            return 0, None
        return size, FrameError.of(FrameErrorKind.GARBAGE, f"{why} ({size} bytes)", buffer[:size])

    def _parse(self, line: bytes, raw: bytes) -> Frame | FrameError:
        profile = self.profile

        def error(kind: FrameErrorKind, reason: str) -> FrameError:
            return FrameError.of(kind, reason, raw)

        if len(line) > profile.max_line_length:
            return error(
                FrameErrorKind.TOO_LONG,
                f"line of {len(line)} bytes, longer than {profile.max_line_length}",
            )
        body = line[len(self._start) :]
        if profile.checksum is not None:
            tail = len(self._sep) + 2
            digits = body[-2:]
            if len(body) < tail or body[-tail:-2] != self._sep or not _HEX2.fullmatch(digits):
                sep = profile.checksum.separator
                return error(
                    FrameErrorKind.BAD_CHECKSUM,
                    f"no checksum: expected {sep!r} and two hex digits before the delimiter",
                )
            covered = body[:-tail] if profile.checksum.covers == "body" else line[:-tail]
            expected, actual = xor_checksum(covered), int(digits, 16)
            if expected != actual:
                return error(
                    FrameErrorKind.BAD_CHECKSUM,
                    f"bad checksum: computed {expected:02X}, frame says {actual:02X}",
                )
            body = body[:-tail]
        try:
            text = body.decode(profile.encoding)
        except UnicodeDecodeError as exc:
            return error(
                FrameErrorKind.BAD_TEXT,
                f"not {profile.encoding} text at byte {exc.start} of the body: "
                f"{_show(body[exc.start : exc.start + 4])}",
            )
        match = self._pattern.fullmatch(text)
        if match is None:
            return error(
                FrameErrorKind.NO_MATCH, f"does not match the field pattern: {text[:80]!r}"
            )
        field = (match["plate"] or "").strip(_PADDING)
        problem = _plate_problem(field)
        if problem is not None:
            return error(*problem)
        plate = field.strip()
        colour = PlateColour.UNKNOWN
        word = match["colour"] if "colour" in self._groups else None
        if word is not None:
            found = profile.colours.get(word.strip())
            if found is None:
                known = ", ".join(repr(w) for w in profile.colours)
                return error(
                    FrameErrorKind.UNKNOWN_COLOUR,
                    f"unknown colour {word!r} (the profile knows {known})",
                )
            colour = found
        number = match["confidence"] if "confidence" in self._groups else None
        if number is None:
            # The validator requires a default when the pattern has no confidence group.
            if profile.confidence_default is None:
                return error(FrameErrorKind.BAD_CONFIDENCE, "confidence field missing")
            confidence = float(profile.confidence_default)
        else:
            scale = profile.confidence_scale
            if not _NUMBER.fullmatch(number.strip()):
                return error(
                    FrameErrorKind.BAD_CONFIDENCE, f"confidence {number!r} is not a number"
                )
            confidence = float(number) / scale
            if not 0.0 <= confidence <= 1.0:
                return error(
                    FrameErrorKind.BAD_CONFIDENCE,
                    f"confidence {number.strip()} out of range 0..{scale:g}",
                )
        image = (match["image"] or "").strip() if "image" in self._groups else ""
        return Frame(plate, colour, confidence, image, raw)

    def _frame(self, plate: str, colour: PlateColour, confidence: float, image_ref: str) -> bytes:
        profile = self.profile
        word = profile.word_for(colour) if "colour" in self._groups else ""
        if word is None:
            raise ValueError(f"profile has no word for colour {colour!s}")
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence {confidence} is not within 0..1")
        text = profile.template.format(
            plate=plate,
            colour=word,
            confidence=confidence * profile.confidence_scale,
            image=image_ref,
        )
        body = text.encode(profile.encoding)
        if self._delim in body or (self._start and self._start in body):
            raise ValueError(f"{text!r} contains the start marker or delimiter")
        line = self._start + body
        if profile.checksum is not None:
            covered = body if profile.checksum.covers == "body" else line
            digits = f"{xor_checksum(covered):02X}"
            if profile.checksum.hex_case == "lower":
                digits = digits.lower()
            line += self._sep + digits.encode("ascii")
        if len(line) > profile.max_line_length:
            raise ValueError(f"line of {len(line)} bytes exceeds {profile.max_line_length}")
        return line + self._delim


# ---------------------------------------------------------------------------- binary frames


class BinaryFrameDecoder(FrameDecoder):
    """``STX, length, payload, CRC-16/MODBUS, ETX`` as the profile lays them out."""

    def __init__(self, profile: BinaryFrameReaderProfile) -> None:
        self.profile = profile
        self._stx = bytes([profile.stx])
        self._header = 1 + profile.length.size
        self._counted = {
            "payload": 0,
            "payload-and-crc": 2,
            "frame": profile.overhead,
        }[profile.length.counts]

    @property
    def max_pending(self) -> int:
        return self.profile.max_frame_length

    def decode(self, buffer: bytes | bytearray) -> DecodeResult:
        first = buffer.find(self._stx)
        if first == -1:
            if len(buffer) < self.max_pending:
                return 0, None
            return len(buffer), FrameError.of(
                FrameErrorKind.GARBAGE, f"no STX in {len(buffer)} bytes", buffer
            )
        if first > 0:
            return first, FrameError.of(
                FrameErrorKind.GARBAGE, f"{first} bytes before STX", buffer[:first]
            )
        total = self._frame_size(buffer)
        if total is None:
            return 0, None
        if isinstance(total, str):
            return self._resync(buffer, len(buffer), FrameErrorKind.BAD_LENGTH, total)
        if len(buffer) < total:
            later = self._complete_frame_after(buffer)
            if later is None:
                return 0, None
            return later, FrameError.of(
                FrameErrorKind.INCOMPLETE,
                f"frame cut short by the next frame after {later} bytes",
                buffer[:later],
            )
        frame = bytes(buffer[:total])
        structural = self._check_structure(frame)
        if structural is not None:
            return self._resync(buffer, total, *structural)
        return total, self._parse(frame)

    def _frame_size(self, buffer: bytes | bytearray) -> int | str | None:
        """Whole frame size from the length field at ``buffer[0]`` (an STX); a reason if
        the field is out of range; None if it has not arrived yet."""
        if len(buffer) < self._header:
            return None
        profile = self.profile
        value = int.from_bytes(buffer[1 : self._header], profile.length.byte_order)
        payload = value - self._counted
        if not profile.min_payload <= payload <= profile.max_payload:
            low = profile.min_payload + self._counted
            high = profile.max_payload + self._counted
            return f"length field {value} out of range {low}..{high}"
        return profile.overhead + payload

    def _check_structure(self, frame: bytes) -> tuple[FrameErrorKind, str] | None:
        """ETX and CRC of a frame of the size its length field gives."""
        if frame[-1] != self.profile.etx:
            return (
                FrameErrorKind.MISSING_ETX,
                f"expected ETX {self.profile.etx:02x} at byte {len(frame) - 1}, "
                f"found {frame[-1]:02x}",
            )
        crc = self.profile.crc
        stored = int.from_bytes(frame[-3:-1], crc.byte_order)
        start = {"stx-through-payload": 0, "length-through-payload": 1, "payload": self._header}
        computed = crc16_modbus(frame[start[crc.covers] : -3])
        if stored != computed:
            return (
                FrameErrorKind.BAD_CRC,
                f"bad CRC: computed {computed:04X}, frame says {stored:04X}",
            )
        return None

    def _complete_frame_after(self, buffer: bytes | bytearray) -> int | None:
        """Where a later, structurally valid frame starts inside an incomplete one.

        Without this, a stray STX whose garbage length field announces a long frame would
        hold back the valid frame behind it until enough further bytes arrive.
        """
        at = buffer.find(self._stx, 1)
        while at != -1:
            rest = buffer[at:]
            total = self._frame_size(rest)
            if (
                isinstance(total, int)
                and total <= len(rest)
                and self._check_structure(bytes(rest[:total])) is None
            ):
                return at
            at = buffer.find(self._stx, at + 1)
        return None

    def _resync(
        self, buffer: bytes | bytearray, limit: int, kind: FrameErrorKind, reason: str
    ) -> DecodeResult:
        """Drop a bad candidate up to the next STX within ``limit`` (a valid frame can start
        only there) or up to ``limit``."""
        nxt = buffer.find(self._stx, 1, limit)
        size = limit if nxt == -1 else nxt
        return size, FrameError.of(kind, reason, buffer[:size])

    def _parse(self, frame: bytes) -> Frame | FrameError:
        profile = self.profile

        def error(kind: FrameErrorKind, reason: str) -> FrameError:
            return FrameError.of(kind, reason, frame)

        payload = frame[self._header : -3]
        plate_size = len(payload) - 2
        fields: dict[str, bytes] = {}
        at = 0
        for name in profile.payload:
            size = plate_size if name == "plate" else 1
            fields[name] = payload[at : at + size]
            at += size
        raw_plate = fields["plate"]
        if profile.plate_size is not None:
            raw_plate = raw_plate.rstrip(b"\x00")
        try:
            field = raw_plate.decode(profile.plate_encoding).strip(_PADDING)
        except UnicodeDecodeError as exc:
            return error(
                FrameErrorKind.BAD_TEXT,
                f"plate {_show(raw_plate)} is not {profile.plate_encoding.upper()} text "
                f"at byte {exc.start}",
            )
        problem = _plate_problem(field)
        if problem is not None:
            return error(*problem)
        plate = field.strip()
        code = fields["colour"][0]
        colour = profile.colours.get(code)
        if colour is None:
            return error(FrameErrorKind.UNKNOWN_COLOUR, f"unknown colour code 0x{code:02x}")
        level = fields["confidence"][0]
        if level > profile.confidence_scale:
            return error(
                FrameErrorKind.BAD_CONFIDENCE,
                f"confidence byte {level} out of range 0..{profile.confidence_scale}",
            )
        return Frame(plate, colour, level / profile.confidence_scale, "", frame)

    def _frame(self, plate: str, colour: PlateColour, confidence: float, image_ref: str) -> bytes:
        profile = self.profile
        if image_ref:
            raise ValueError("binary frames carry no image reference")
        code = profile.code_for(colour)
        if code is None:
            raise ValueError(f"profile has no code for colour {colour!s}")
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence {confidence} is not within 0..1")
        text = plate.encode(profile.plate_encoding)
        if profile.plate_size is not None:
            if len(text) > profile.plate_size:
                raise ValueError(f"plate {plate!r} is longer than {profile.plate_size} bytes")
            text = text.ljust(profile.plate_size, b"\x00")
        fields = {
            "plate": text,
            "colour": bytes([code]),
            "confidence": bytes([round(confidence * profile.confidence_scale)]),
        }
        payload = b"".join(fields[name] for name in profile.payload)
        if not profile.min_payload <= len(payload) <= profile.max_payload:
            raise ValueError(f"payload of {len(payload)} bytes does not fit the profile")
        length = (len(payload) + self._counted).to_bytes(
            profile.length.size, profile.length.byte_order
        )
        head = self._stx + length
        covered = {
            "stx-through-payload": head + payload,
            "length-through-payload": length + payload,
            "payload": payload,
        }[profile.crc.covers]
        crc = crc16_modbus(covered).to_bytes(2, profile.crc.byte_order)
        return head + payload + crc + bytes([profile.etx])
