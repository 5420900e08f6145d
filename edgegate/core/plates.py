"""Chinese licence plates: normalisation, validation and OCR-confusable variants.

A plate is a province character (粤, 苏, 沪...), an issuing-authority letter, then a serial of
five characters (six on new-energy green plates), optionally followed by a special-use
character (挂 trailer, 学 learner, 警 police, 港/澳 cross-border...). Letters I and O never occur
in serials, so a reader's I and O are read as 1 and 0.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
SPECIAL_SUFFIXES = "挂学警港澳领使试超"

_PLATE_RE = re.compile(
    rf"^[{PROVINCES}][A-Z][A-HJ-NP-Z0-9]{{4,5}}(?:[A-HJ-NP-Z0-9]|[{SPECIAL_SUFFIXES}])$"
)


def _separators() -> dict[int, None]:
    """What ``normalise`` drops, after NFKC has folded full- and half-width forms (``．``
    ``－`` ``･`` ``｡`` become ``.`` ``-`` ``・`` ``。``): every space, dash (Pd: ``-`` ``—``
    ``–`` ``‐``...) and connector (Pc: ``_``), the dots and bullets typists and cameras put
    between the parts of a plate, and invisible format characters (Cf: zero-width space, soft
    hyphen, byte-order mark...). Control characters are not separators: they stay (a reader's
    frame holding one is rejected before it gets here)."""
    dots = ".·•‧∙⋅・。⸱⸳−"  # −: the minus sign (Sm), typed for a hyphen
    drop = {ord(ch): None for ch in "\t" + dots}
    # Where such characters are, outside the CJK and other scripts' blocks (tags: Cf).
    for code in (*range(0x3100), *range(0xFE00, 0x10000), *range(0xE0000, 0xE0080)):
        if unicodedata.category(chr(code)) in ("Zs", "Pd", "Pc", "Cf"):
            drop[code] = None
    return drop


_SEPARATORS = _separators()
_SERIAL_FIX = str.maketrans("IO", "10")

# Characters a plate OCR confuses with each other (docs/design.md §1).
CONFUSABLE_GROUPS: tuple[str, ...] = ("0DQ", "8B", "2Z", "5S", "6G", "1I")
_CONFUSABLE: dict[str, str] = {}
for _group in CONFUSABLE_GROUPS:
    for _ch in _group:
        _CONFUSABLE[_ch] = _group.replace(_ch, "")


class PlateError(ValueError):
    """A plate that is not a well-formed Chinese licence plate."""


def normalise(raw: str) -> str:
    """Canonical form of a plate as read: full-width folded, upper case, separators (spaces,
    dashes, dots, bullets, zero-width characters) removed, and I/O in the serial read as 1/0.
    Never raises; garbage stays garbage."""
    text = unicodedata.normalize("NFKC", raw).translate(_SEPARATORS).upper()
    if len(text) <= 2:
        return text
    return text[:2] + text[2:].translate(_SERIAL_FIX)


def normalisation_steps(raw: str) -> tuple[str, ...]:
    """What ``normalise`` changed in ``raw``, in order, in plain words (empty: nothing)."""
    steps: list[str] = []
    folded = unicodedata.normalize("NFKC", raw)
    if folded != raw:
        steps.append("full-width and compatibility forms folded")
    bare = folded.translate(_SEPARATORS)
    if bare != folded:
        steps.append("separators removed")
    upper = bare.upper()
    if upper != bare:
        steps.append("upper-cased")
    if len(upper) > 2 and upper[2:].translate(_SERIAL_FIX) != upper[2:]:
        steps.append("I/O in the serial read as 1/0")
    return tuple(steps)


def is_valid(plate: str) -> bool:
    """Whether a *normalised* plate is well formed."""
    return _PLATE_RE.fullmatch(plate) is not None


def parse(raw: str) -> str:
    """Normalise and validate; raise ``PlateError`` naming what is wrong."""
    plate = normalise(raw)
    if not plate:
        raise PlateError("empty plate")
    if plate[0] not in PROVINCES:
        raise PlateError(f"plate {raw!r}: first character must be a province abbreviation")
    if len(plate) < 2 or not ("A" <= plate[1] <= "Z"):
        raise PlateError(f"plate {raw!r}: second character must be a letter A-Z")
    if not 7 <= len(plate) <= 8:
        raise PlateError(f"plate {raw!r}: must have 7 or 8 characters, has {len(plate)}")
    if not is_valid(plate):
        raise PlateError(f"plate {raw!r}: serial has characters not allowed on a plate")
    return plate


def confusable_variants(plate: str) -> Iterator[tuple[str, int, str, str]]:
    """Every plate one confusable substitution away from a normalised plate.

    Yields ``(variant, position, read_char, variant_char)``. The province character is never
    substituted; the authority letter only by letters; serial characters never become I or O
    (they cannot occur there).
    """
    for i in range(1, len(plate)):
        ch = plate[i]
        for alt in _CONFUSABLE.get(ch, ""):
            if i == 1 and not alt.isalpha():
                continue
            if i >= 2 and alt in "IO":
                continue
            yield plate[:i] + alt + plate[i + 1 :], i, ch, alt
