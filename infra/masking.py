"""Masking of customer identifiers: the one place that decides what a log or a
message may show of an account number, a VPA or a phone number."""
from __future__ import annotations

import re

_DIGITS = re.compile(r"\d")


def mask_account(account: str | None, visible: int = 4) -> str:
    """Keep the last ``visible`` characters, replace the rest with X.

    >>> mask_account("123456789012")
    'XXXXXXXX9012'
    >>> mask_account("12")
    'XX'
    >>> mask_account(None)
    ''
    """
    if not account:
        return ""
    if len(account) <= visible:
        return "X" * len(account)
    return "X" * (len(account) - visible) + account[-visible:]


def mask_vpa(vpa: str | None) -> str:
    """Keep the first two characters of the handle's user part and the bank handle.

    >>> mask_vpa("rahul.sharma@okaxis")
    'ra***@okaxis'
    >>> mask_vpa("ab@ybl")
    'a***@ybl'
    >>> mask_vpa("not-a-vpa")
    '***'
    """
    if not vpa or "@" not in vpa:
        return "***" if vpa else ""
    user, handle = vpa.split("@", 1)
    keep = 2 if len(user) > 2 else 1
    return f"{user[:keep]}***@{handle}"


def mask_phone(phone: str | None) -> str:
    """Keep the country code and the last four digits.

    >>> mask_phone("+919876543210")
    '+91XXXXXX3210'
    >>> mask_phone("9876543210")
    'XXXXXX3210'
    """
    if not phone:
        return ""
    prefix = phone[:3] if phone.startswith("+") else ""
    rest = phone[len(prefix):]
    digits = [m.start() for m in _DIGITS.finditer(rest)]
    hide = set(digits[:-4])
    return prefix + "".join("X" if i in hide else ch for i, ch in enumerate(rest))


def mask_party(account: str | None, vpa: str | None) -> str:
    """How a payer or payee appears in logs and alerts.

    >>> mask_party("123456789012", "rahul@okaxis")
    'XXXXXXXX9012 / ra***@okaxis'
    """
    return " / ".join(p for p in (mask_account(account), mask_vpa(vpa)) if p)


def mask_email(email: str | None) -> str:
    """Keep the first two characters of the mailbox and the domain.

    >>> mask_email("fraud-desk@bank.example")
    'fr***@bank.example'
    >>> mask_email("a@b.in")
    'a***@b.in'
    """
    if not email or "@" not in email:
        return "***" if email else ""
    user, domain = email.rsplit("@", 1)
    keep = 2 if len(user) > 2 else 1
    return f"{user[:keep]}***@{domain}"


_PHONE_TEXT = re.compile(r"(?<![\w+])\+\d{1,3}[ -]?\d{8,12}\b")
_ACCOUNT_TEXT = re.compile(r"(?<![\w.])\d{9,18}(?![\w])")
_ADDRESS_TEXT = re.compile(r"(?<![\w.+-])[A-Za-z0-9._+-]{2,256}@[A-Za-z][A-Za-z0-9.-]{1,253}")


def redact(text: str | None) -> str:
    """Mask every phone number, account-number-like digit run, VPA and email address in
    free text - a last line of defence for provider responses and log lines that echo
    what they were sent.

    >>> redact("to +919876543210 from 123456789012 via rahul@okaxis cc ops@bank.example")
    'to +91XXXXXX3210 from XXXXXXXX9012 via ra***@okaxis cc op***@bank.example'
    >>> redact("sid SM123 status queued, 2 segments")
    'sid SM123 status queued, 2 segments'
    """
    if not text:
        return ""
    text = _PHONE_TEXT.sub(lambda m: mask_phone(m.group().replace(" ", "").replace("-", "")), text)
    text = _ACCOUNT_TEXT.sub(lambda m: mask_account(m.group()), text)
    return _ADDRESS_TEXT.sub(
        lambda m: mask_email(m.group()) if "." in m.group().split("@", 1)[1] else mask_vpa(m.group()), text
    )
