"""How many SMS segments a text costs (3GPP TS 23.038 / 23.040).

A text made only of GSM-7 characters fits 160 septets in one SMS, or 153 per segment
when split (the rest carries the concatenation header); characters of the extension
table (``€ [ ] { } ^ ~ | \\``) cost two septets. Any other character - the rupee sign
``₹`` included - switches the whole message to UCS-2: 70 UTF-16 units in one SMS,
67 per segment. Customer templates therefore write amounts as ``Rs.``.

>>> sms_segments("Rs.1,234.56 debited")
1
>>> sms_segments("x" * 160), sms_segments("x" * 161), sms_segments("x" * 306), sms_segments("x" * 307)
(1, 2, 2, 3)
>>> sms_segments("₹" + "x" * 69), sms_segments("₹" + "x" * 70)
(1, 2)
>>> sms_segments("[" * 80), sms_segments("[" * 81)
(1, 2)
"""

from __future__ import annotations

__all__ = ["GSM7_BASIC", "GSM7_EXTENSION", "is_gsm7", "sms_segments"]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


def is_gsm7(text: str) -> bool:
    """True when the text can be sent in the GSM-7 alphabet.

    >>> is_gsm7("Rs. 500"), is_gsm7("₹500")
    (True, False)
    """
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _gsm7_segments(text: str) -> int:
    septets = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
    if septets <= 160:
        return 1
    # An escape pair is never split across segments, so pack greedily.
    segments, used = 1, 0
    for ch in text:
        cost = 2 if ch in GSM7_EXTENSION else 1
        if used + cost > 153:
            segments, used = segments + 1, 0
        used += cost
    return segments


def _ucs2_segments(text: str) -> int:
    units = len(text.encode("utf-16-le")) // 2
    if units <= 70:
        return 1
    # A surrogate pair (emoji) is never split either.
    segments, used = 1, 0
    for ch in text:
        cost = 2 if ord(ch) > 0xFFFF else 1
        if used + cost > 67:
            segments, used = segments + 1, 0
        used += cost
    return segments


def sms_segments(text: str) -> int:
    """Segments the text is billed and delivered as (0 for an empty text)."""
    if not text:
        return 0
    return _gsm7_segments(text) if is_gsm7(text) else _ucs2_segments(text)
