"""How many SMS parts a text takes: GSM 03.38 7-bit alphabet or UCS-2, with concatenation headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["GSM7_BASIC", "GSM7_EXTENSION", "SmsParts", "sms_parts"]

# The GSM 03.38 default alphabet in code order 0x00-0x7F; position 0x1B is the escape to the extension
# table, not a character, so it is left out of the set below.
_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(_BASIC_TABLE) == 128
GSM7_BASIC = frozenset(_BASIC_TABLE) - {"\x1b"}
# The extension table: each costs two septets (escape + code). Form feed is there too.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

_GSM7_SINGLE, _GSM7_PART = 160, 153  # a concatenated part loses 7 septets to the UDH
_UCS2_SINGLE, _UCS2_PART = 70, 67  # ... and 3 UTF-16 code units


@dataclass(frozen=True, slots=True)
class SmsParts:
    """The encoding a text needs, its length in that encoding's units, and the parts it is sent as."""

    encoding: Literal["GSM-7", "UCS-2"]
    characters: int
    parts: int


def _split(units: list[int], single: int, per_part: int) -> int:
    """Count parts, never cutting a two-unit character (escape pair, surrogate pair) across two parts."""
    total = sum(units)
    if total <= single:
        return 1
    parts, used = 1, 0
    for width in units:
        if used + width > per_part:
            parts, used = parts + 1, 0
        used += width
    return parts


def sms_parts(text: str) -> SmsParts:
    """Say how `text` is encoded and into how many SMS parts it is cut.

    GSM-7 when every character is in the GSM 03.38 basic or extension table (extension characters count
    two septets), else UCS-2 counted in UTF-16 code units (a character outside the BMP, such as an emoji,
    counts two). A single SMS holds 160 septets or 70 units; concatenated parts hold 153 or 67. Like the
    phone networks, a two-unit character is never split between parts, so a part can end one unit short
    and the count can exceed ceil(n/153) by one in rare cases. An empty text is one (empty) SMS.
    """
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text):
        units = [2 if char in GSM7_EXTENSION else 1 for char in text]
        return SmsParts("GSM-7", sum(units), _split(units, _GSM7_SINGLE, _GSM7_PART))
    units = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return SmsParts("UCS-2", sum(units), _split(units, _UCS2_SINGLE, _UCS2_PART))
