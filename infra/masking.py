"""Masking of customer identifiers: the one place that decides what a log or a
message may show of an account number, a VPA or a phone number, and the keyed
pseudonym (:func:`account_ref`) that stands for an account where one must be told
apart from another without being shown (docs/security-pii.md)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from txmon.infra.errors import ConfigError

_DIGITS = re.compile(r"\d")
_LONG_DIGITS = re.compile(r"\d{5,}")


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
    >>> mask_vpa("ab@pay123456789012")
    'a***@payXXXXXXXX9012'
    """
    if not vpa or "@" not in vpa:
        return "***" if vpa else ""
    user, handle = vpa.split("@", 1)
    keep = 2 if len(user) > 2 else 1
    # A handle names the payment app and is kept, but the contract allows digits in it:
    # a long run could be an account or phone number, so it is masked like one.
    handle = _LONG_DIGITS.sub(lambda m: mask_account(m.group()), handle)
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
    rest = phone[len(prefix) :]
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


def mask_identifiers(text: str | None, accounts: tuple[str | None, ...] = (), vpas: tuple[str | None, ...] = ()) -> str:
    """Replace the given account numbers and VPAs wherever they occur in ``text`` by their
    masked forms: for reason texts built from a transaction's own fields, which a rule's
    wording may quote (``{payee_vpa}``) and no pattern could be trusted to catch.

    Longest first, so an account inside a VPA (``123456789@ybl``) goes with the VPA; an
    identifier that survives (one masked form joined to neighbouring digits) is blanked.

    >>> mask_identifiers("to shop@ybl from 123456789012", ("123456789012",), ("shop@ybl",))
    'to sh***@ybl from XXXXXXXX9012'
    """
    if not text:
        return text or ""
    masked = {a: mask_account(a) for a in accounts if a}
    masked.update({v: mask_vpa(v) for v in vpas if v})
    order = sorted(masked, key=len, reverse=True)
    for clear in order:
        text = text.replace(clear, masked[clear])
    for clear in order:
        if clear in text:
            text = text.replace(clear, "X" * len(clear))
    return text


PII_KEY_ENV = "TXMON_PII_TOKEN_KEY"
"""Environment variable holding the key of :func:`account_ref` (at least 32 characters)."""

PII_KEY_FILE = "secrets/pii-token.key"
"""Where, under the state directory, a key is generated when the variable is not set."""


def account_ref(account: str, key: bytes) -> str:
    """Keyed pseudonym of an account number: HMAC-SHA256, first 32 hex characters.

    Stable for one key, so alerts of one account share it (Kafka key, throttle windows,
    the digest's per-account counts), but not computable from the number without the
    key: an unkeyed hash of a 9-18 digit number is reversed by trying them all.

    >>> account_ref("123456789012", b"k" * 32) == account_ref("123456789012", b"k" * 32)
    True
    >>> account_ref("123456789012", b"k" * 32) == account_ref("123456789012", b"j" * 32)
    False
    >>> len(account_ref("123456789012", b"k" * 32))
    32
    """
    return hmac.new(key, account.encode(), hashlib.sha256).hexdigest()[:32]


def pii_token_key(state_dir: Path, environ: Mapping[str, str] | None = None) -> bytes:
    """The key of :func:`account_ref`: ``$TXMON_PII_TOKEN_KEY``, else the key file under
    ``state_dir``, generated (mode 0600) on first use so a local stack works untouched.

    Raises ConfigError for a key too short to be a secret."""
    env = os.environ if environ is None else environ
    value = env.get(PII_KEY_ENV)
    if value is None:
        path = Path(state_dir) / PII_KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process generated it first: use theirs
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(48))
        value = path.read_text().strip()
    if len(value) < 32:
        raise ConfigError(
            f"{PII_KEY_ENV} is {len(value)} characters; give it at least 32 random ones "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
        )
    return value.encode()
