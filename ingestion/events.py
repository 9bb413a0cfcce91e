"""The transaction event contract: the one module that defines what an event is.

Every producer (simulator, replay) writes events through :func:`to_json`, and every
consumer checks them against the same rules. Python code calls :func:`validate_event`;
the Spark stream cannot call Python on its hot path, so it reads the same rules as
plain data from this module (``CHANNELS``, ``REQUIRED_FIELDS``, ``FIELD_PATTERNS``,
``FIELD_RANGES``, ``spark_schema()``...). All of those are derived from the pydantic
models below, so a field is declared exactly once.

Wire format, schema version 1: one compact JSON object per event, keys in the order
the fields are declared in :class:`TransactionEvent`, optional fields omitted when
absent, ``event_time`` in UTC with a ``Z`` suffix, money as integer paise.

When an event breaks several rules, the reported dead-letter reason is the first
one in :class:`DeadLetterReason` declaration order, so Python and Spark agree on a
single reason per bad record.
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, DecimalException
from enum import Enum, StrEnum
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from txmon.infra.errors import EventValidationError

__all__ = [
    "ACCOUNT_NUMBER_PATTERN",
    "AMOUNT_ROUNDINGS",
    "CHANNELS",
    "CITY_PATTERN",
    "CONTRACT_REASONS",
    "CRORE",
    "DEAD_LETTER_REASONS",
    "DEVICE_ID_PATTERN",
    "FIELD_ENUMS",
    "FIELD_FORMATS",
    "FIELD_PATTERNS",
    "FIELD_RANGES",
    "IFSC_PATTERN",
    "IP_PATTERN",
    "IST",
    "LAKH",
    "LAT_RANGE",
    "LON_RANGE",
    "MAX_AMOUNT_PAISE",
    "MCC_PATTERN",
    "PAISE_PER_RUPEE",
    "PARTY_ID_FIELDS",
    "REQUIRED_FIELDS",
    "RTGS_MIN_AMOUNT_PAISE",
    "SCHEMA_VERSION",
    "STATUSES",
    "SUPPORTED_VERSIONS",
    "TXN_ID_PATTERN",
    "TXN_TYPES",
    "VPA_PATTERN",
    "AmountRounding",
    "Channel",
    "DeadLetterReason",
    "Geo",
    "LabelEvent",
    "NumberOutOfRange",
    "Party",
    "Payer",
    "Problem",
    "Status",
    "TransactionEvent",
    "TxnType",
    "check_event",
    "describe_problems",
    "format_inr",
    "is_unsafe_text",
    "json_loads",
    "kafka_key",
    "paise_to_rupees",
    "rupees_to_paise",
    "safe_text",
    "spark_schema",
    "to_json",
    "validate_event",
    "validate_label",
    "whole_paise",
]

SCHEMA_VERSION = 1
"""Version written by this code. Bump it (and add to SUPPORTED_VERSIONS) on any
change a version-1 consumer could not read."""
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)

PAISE_PER_RUPEE = 100
LAKH = 100_000
CRORE = 100 * LAKH

MAX_AMOUNT_PAISE = 100 * CRORE * PAISE_PER_RUPEE
"""Default absurd-amount cap: 100 crore INR (10^11 paise). Far above any retail or
UPI payment (UPI caps at a few lakh; RTGS has no upper limit, but a single 100 crore
transfer through a retail monitoring feed is a unit bug, e.g. rupees sent as paise
twice). Pass ``max_amount_paise`` to :func:`validate_event` to change it."""

RTGS_MIN_AMOUNT_PAISE = 2 * LAKH * PAISE_PER_RUPEE
"""RBI: RTGS is for transfers of 2 lakh INR and above."""

IST = timezone(timedelta(hours=5, minutes=30), "IST")
"""Indian Standard Time: events travel in UTC, but customers live (and sleep) in IST."""


class Channel(StrEnum):
    """Payment rail the transaction travelled on."""

    UPI = "UPI"
    IMPS = "IMPS"
    NEFT = "NEFT"
    RTGS = "RTGS"
    CARD_POS = "CARD_POS"
    CARD_ECOM = "CARD_ECOM"
    ATM = "ATM"


class TxnType(StrEnum):
    """What the payer meant to do; one rail carries several types."""

    P2P = "P2P"
    P2M = "P2M"
    COLLECT = "COLLECT"
    BILL_PAY = "BILL_PAY"
    CASH_WITHDRAWAL = "CASH_WITHDRAWAL"
    CARD_PAYMENT = "CARD_PAYMENT"
    TRANSFER = "TRANSFER"


class Status(StrEnum):
    """Outcome reported by the switch; failed attempts matter for fraud (card testing)."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    PENDING = "PENDING"


CHANNELS: tuple[str, ...] = tuple(c.value for c in Channel)
TXN_TYPES: tuple[str, ...] = tuple(t.value for t in TxnType)
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)

# mcc and device_id are optional on every channel and txn_type: many sources (card
# acquirer files, core-banking exports) have no device or merchant category at all, and
# the features treat a missing one as "unknown". Rejecting such rows would drop whole
# data sets, frauds included, instead of scoring them with less information.
PARTY_ID_FIELDS: tuple[str, ...] = ("account_number", "vpa")
"""A party (payer or payee) must carry at least one of these."""

# Regexes are shared with Spark (`rlike`, Java regex) and pydantic (Rust regex), so
# they stick to the common subset: no look-arounds, no possessive quantifiers.
TXN_ID_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z_-]{7,63}$"
ACCOUNT_NUMBER_PATTERN = r"^[0-9]{9,18}$"
IFSC_PATTERN = r"^[A-Z]{4}0[A-Z0-9]{6}$"
VPA_PATTERN = r"^[A-Za-z0-9._-]{2,256}@[A-Za-z][A-Za-z0-9]{1,63}$"
MCC_PATTERN = r"^[0-9]{4}$"
DEVICE_ID_PATTERN = r"^[!-~]{1,128}$"
CITY_PATTERN = r"^[^\x00-\x1F\x7F]{1,100}$"

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"({_OCTET}\.){{3}}{_OCTET}"
_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    [
        rf"({_H}:){{7}}{_H}",
        rf"({_H}:){{1,7}}:",
        rf"({_H}:){{1,6}}:{_H}",
        rf"({_H}:){{1,5}}(:{_H}){{1,2}}",
        rf"({_H}:){{1,4}}(:{_H}){{1,3}}",
        rf"({_H}:){{1,3}}(:{_H}){{1,4}}",
        rf"({_H}:){{1,2}}(:{_H}){{1,5}}",
        rf"{_H}:(:{_H}){{1,6}}",
        rf":((:{_H}){{1,7}}|:)",
        rf"({_H}:){{6}}{_IPV4}",
        rf"::([Ff]{{4}}(:0{{1,4}})?:)?{_IPV4}",
        rf"({_H}:){{1,4}}:{_IPV4}",
    ]
)
IP_PATTERN = rf"^({_IPV4}|{_IPV6})$"
"""IPv4 dotted quad or IPv6 (no zone index). A regex rather than :mod:`ipaddress`
so that Spark can apply the very same rule with ``rlike``."""

LAT_RANGE = (-90.0, 90.0)
LON_RANGE = (-180.0, 180.0)


class DeadLetterReason(StrEnum):
    """Why an event went to the dead-letter store. Values are stable wire strings
    shared with the Spark stream; declaration order is precedence (first wins)."""

    MALFORMED_JSON = "malformed_json"
    # Control, format and bidirectional-override characters make a stored value render as
    # something other than what was sent (U+202E reverses the text after it): hostile
    # whatever else the record holds, so judged before the fields are.
    CONTROL_CHARACTERS = "control_characters"
    UNSUPPORTED_VERSION = "unsupported_version"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_CHANNEL = "unknown_channel"
    # A negative amount. Zero is valid (card verifications and authorisation checks are
    # real, scored transactions); the wire string keeps its old name because stored dead
    # letters and dashboards already carry it.
    NON_POSITIVE_AMOUNT = "non_positive_amount"
    ABSURD_AMOUNT = "absurd_amount"
    INVALID_FIELD = "invalid_field"
    FUTURE_TIMESTAMP = "future_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    # Decided outside validate_event: by the stream's landing step (a txn_id already landed
    # with other content), by the producer (a record over the broker's size limit), and by
    # whoever judges a record when judging itself failed (the exception's text is kept).
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    OVERSIZE = "oversize"
    UNPROCESSABLE = "unprocessable"


DEAD_LETTER_REASONS: tuple[str, ...] = tuple(r.value for r in DeadLetterReason)
CONTRACT_REASONS: tuple[str, ...] = tuple(
    r.value
    for r in DeadLetterReason
    if r not in (DeadLetterReason.CONFLICTING_DUPLICATE, DeadLetterReason.OVERSIZE, DeadLetterReason.UNPROCESSABLE)
)
"""The reasons :func:`validate_event` itself gives (each reachable from some input)."""
_PRECEDENCE = {reason: rank for rank, reason in enumerate(DeadLetterReason)}


def _pattern(regex: str) -> StringConstraints:
    return StringConstraints(pattern=regex)


@dataclass(frozen=True)
class _Format:
    """A field's format in plain words with an example: error messages quote it, since a
    regex is unreadable there. Pydantic ignores this marker; :data:`FIELD_FORMATS` reads it."""

    text: str


TxnId = Annotated[
    str,
    _pattern(TXN_ID_PATTERN),
    _Format("8-64 letters, digits, '_' or '-', starting with a letter or digit, e.g. 0f8fad5b-d9cb-469f"),
]
AccountNumber = Annotated[
    str,
    _pattern(ACCOUNT_NUMBER_PATTERN),
    _Format("9-18 digits, e.g. 123456789012 (left-pad shorter numbers with zeros)"),
]
Ifsc = Annotated[
    str, _pattern(IFSC_PATTERN), _Format("4 capital letters, a 0, then 6 capital letters or digits, e.g. HDFC0001234")
]
Vpa = Annotated[str, _pattern(VPA_PATTERN), _Format("name@handle, e.g. asha.rao@okhdfcbank")]
Mcc = Annotated[str, _pattern(MCC_PATTERN), _Format("4 digits, e.g. 5411")]
DeviceId = Annotated[
    str, _pattern(DEVICE_ID_PATTERN), _Format("1-128 printable ASCII characters without spaces, e.g. a1b2c3d4e5f60718")
]
IpAddress = Annotated[str, _pattern(IP_PATTERN), _Format("an IPv4 or IPv6 address, e.g. 49.36.10.20")]
City = Annotated[str, _pattern(CITY_PATTERN), _Format("1-100 characters of plain text, e.g. Pune")]
EventTime = Annotated[datetime, _Format("ISO-8601 with a UTC offset, e.g. 2025-01-06T09:30:00Z")]
AmountPaise = Annotated[StrictInt, _Format("whole paise as an integer >= 0, e.g. 45050 for Rs 450.50")]


class _Contract(BaseModel):
    """Shared config: immutable, unknown keys rejected (a typo must not pass silently)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Geo(_Contract):
    """Where the payer was, as reported by the app or terminal."""

    city: City
    lat: StrictFloat = Field(ge=LAT_RANGE[0], le=LAT_RANGE[1])
    lon: StrictFloat = Field(ge=LON_RANGE[0], le=LON_RANGE[1])


class Party(_Contract):
    """One side of a payment. UPI payees are often known only by their VPA, so
    either identifier may be missing, but not both."""

    account_number: AccountNumber | None = None
    ifsc: Ifsc | None = None
    vpa: Vpa | None = None

    @model_validator(mode="before")
    @classmethod
    def _has_an_identifier(cls, data: Any) -> Any:
        if isinstance(data, dict) and all(data.get(f) is None for f in PARTY_ID_FIELDS):
            raise PydanticCustomError(
                DeadLetterReason.MISSING_FIELD,
                "a party needs account_number or vpa; send at least one",
            )
        return data


class Payer(Party):
    """The paying side. Its account number is required: it is the Kafka key and the
    key of every per-account aggregate downstream."""

    account_number: AccountNumber


class TransactionEvent(_Contract):
    """One bank or UPI transaction as it crosses the wire (schema version 1)."""

    schema_version: StrictInt
    txn_id: TxnId
    event_time: EventTime
    channel: Channel
    txn_type: TxnType
    payer: Payer
    payee: Party
    amount_paise: AmountPaise
    currency: Literal["INR"]
    mcc: Mcc | None = None
    device_id: DeviceId | None = None
    ip: IpAddress | None = None
    geo: Geo | None = None
    status: Status

    @model_validator(mode="before")
    @classmethod
    def _safe_text_and_version(cls, data: Any) -> Any:
        # Checked on the raw input, before field errors, so the outcome follows the
        # DeadLetterReason precedence whatever else is wrong with the record.
        if not isinstance(data, dict):
            return data
        where = _unsafe_text(data)
        if where is not None:
            raise PydanticCustomError(
                DeadLetterReason.CONTROL_CHARACTERS,
                "{where} holds control, format or bidirectional-override characters; send plain printable text",
                {"where": where},
            )
        version = data.get("schema_version")
        if type(version) is int and version not in SUPPORTED_VERSIONS:
            raise PydanticCustomError(
                DeadLetterReason.UNSUPPORTED_VERSION,
                "schema_version {version} is not supported (supported: {supported}); "
                "upgrade txmon or make the producer write version {current}",
                {"version": version, "supported": SUPPORTED_VERSIONS, "current": SCHEMA_VERSION},
            )
        return data

    @field_validator("event_time", mode="before")
    @classmethod
    def _aware_utc(cls, value: Any) -> datetime:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise PydanticCustomError(
                    DeadLetterReason.INVALID_FIELD,
                    "event_time {value} is not ISO-8601; send e.g. 2025-01-06T09:30:00Z",
                    {"value": value},
                ) from None
        if not isinstance(value, datetime):
            raise PydanticCustomError(DeadLetterReason.WRONG_TYPE, "event_time must be an ISO-8601 string")
        if value.tzinfo is None or value.utcoffset() is None:
            raise PydanticCustomError(
                DeadLetterReason.INVALID_FIELD,
                "event_time has no UTC offset; append 'Z' or '+05:30' - naive times are ambiguous",
            )
        try:
            return value if value.tzinfo is UTC else value.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+05:30 is before year 1 in UTC
            raise PydanticCustomError(
                DeadLetterReason.INVALID_FIELD,
                "event_time is outside the representable range in UTC (years 1-9999)",
            ) from None

    @field_validator("amount_paise")
    @classmethod
    def _amount_in_range(cls, value: int, info: ValidationInfo) -> int:
        if value < 0:
            raise PydanticCustomError(
                DeadLetterReason.NON_POSITIVE_AMOUNT,
                "must be >= 0, got {amount}; send a refund or reversal as its own transaction with a positive amount",
                {"amount": value},
            )
        cap = (info.context or {}).get("max_amount_paise", MAX_AMOUNT_PAISE)
        if value > cap:
            raise PydanticCustomError(
                DeadLetterReason.ABSURD_AMOUNT,
                "{amount} exceeds the cap {cap}; check the producer's unit "
                "(paise, not rupees) or raise max_amount_paise",
                {"amount": value, "cap": cap},
            )
        return value

    @model_validator(mode="after")
    def _rtgs_minimum(self) -> TransactionEvent:
        if self.channel is Channel.RTGS and self.amount_paise < RTGS_MIN_AMOUNT_PAISE:
            raise PydanticCustomError(
                DeadLetterReason.INVALID_FIELD,
                "RTGS requires amount_paise >= {minimum}; route smaller amounts via NEFT/IMPS",
                {"minimum": RTGS_MIN_AMOUNT_PAISE},
            )
        return self


# --------------------------------------------------------------------------- wire


def to_json(event: TransactionEvent) -> bytes:
    """Serialise compactly, keys in declaration order, absent optionals omitted.

    Same event in, same bytes out: the simulator's determinism tests and idempotent
    replays rely on it.
    """
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


def kafka_key(event: TransactionEvent) -> bytes:
    """Kafka message key: the payer account, so one account's events stay ordered
    in one partition and per-account state lives on one Spark task."""
    return event.payer.account_number.encode("ascii")


def _decode(raw: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, (bytes, bytearray, str)):
        raise EventValidationError(
            DeadLetterReason.MALFORMED_JSON,
            f"expected JSON bytes/str or a dict, got {type(raw).__name__}",
        )
    try:
        data = json_loads(raw, parse_constant=_reject_constant)
    except NumberOutOfRange as exc:
        raise EventValidationError(DeadLetterReason.MALFORMED_JSON, str(exc)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventValidationError(DeadLetterReason.MALFORMED_JSON, f"not valid UTF-8 JSON ({exc})") from None
    except RecursionError:
        raise EventValidationError(
            DeadLetterReason.MALFORMED_JSON, "JSON nested too deeply; an event is a flat object of depth 2"
        ) from None
    if not isinstance(data, dict):
        raise EventValidationError(
            DeadLetterReason.MALFORMED_JSON,
            f"expected a JSON object, got {type(data).__name__}",
        )
    return data


class NumberOutOfRange(ValueError):
    """JSON holding an integer longer than Python converts (4,300 digits by default:
    ``sys.get_int_max_str_digits()``)."""


def json_loads(raw: str | bytes | bytearray, **kwargs: Any) -> Any:
    """``json.loads``, with an integer literal too long to convert raised as
    :class:`NumberOutOfRange` instead of json's plain ValueError, whose message reads like a
    body that is not JSON and tells a client to call ``sys.set_int_max_str_digits()``.

    Recognised after the fact, not by a ``parse_int`` hook: a hook would be a Python call
    for every integer of every event the stream decodes.

    >>> json_loads("[1, -20]")
    [1, -20]
    >>> try:
    ...     json_loads("9" * 5000)
    ... except NumberOutOfRange as exc:
    ...     print(exc)
    a number is out of range: integers have at most 4,300 digits
    """
    try:
        return json.loads(raw, **kwargs)
    except ValueError as exc:
        if type(exc) is ValueError and "integer string conversion" in str(exc):
            raise NumberOutOfRange(
                f"a number is out of range: integers have at most {sys.get_int_max_str_digits():,} digits"
            ) from None
        raise


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


# C0/C1 controls, soft hyphen, Arabic letter mark, zero-width and bidi marks/overrides/
# isolates, line/paragraph separators, invisible operators, BOM, interlinear annotation,
# lone surrogates (JSON escapes can make them; UTF-8 cannot carry them to Cassandra) and
# tag characters. Unicode categories catch the other format/private-use characters.
_UNSAFE_TEXT = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ud800-\udfff\U000e0000-\U000e007f]"
)
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def is_unsafe_text(text: str) -> bool:
    r"""Whether ``text`` holds a character that renders as something other than itself.

    >>> is_unsafe_text("Pune"), is_unsafe_text("Bengaluru \u0cac\u0cc6\u0c82\u0c97\u0cb3\u0cc2\u0cb0\u0cc1")
    (False, False)
    >>> is_unsafe_text("abc\u202egnp.exe"), is_unsafe_text("tab\there"), is_unsafe_text("\ud800")
    (True, True, True)
    """
    if _UNSAFE_TEXT.search(text):
        return True
    return not text.isascii() and any(unicodedata.category(c) in _UNSAFE_CATEGORIES for c in text)


def _unsafe_text(data: dict[str, Any], prefix: str = "", depth: int = 0) -> str | None:
    """The dotted path of the first key or string value holding unsafe text, or None.

    Only the event's own depth is walked: deeper values are wrong-typed anyway."""
    for key, value in data.items():
        path = f"{prefix}{key}" if isinstance(key, str) else prefix + "?"
        if isinstance(key, str) and is_unsafe_text(key):
            return f"key {path!r}".encode("ascii", "backslashreplace").decode()
        if isinstance(value, str) and is_unsafe_text(value):
            return path.encode("ascii", "backslashreplace").decode()
        if isinstance(value, dict) and depth < 1:
            found = _unsafe_text(value, path + ".", depth + 1)
            if found is not None:
                return found
    return None


def _reason(error: ErrorDetails) -> DeadLetterReason:
    kind = error["type"]
    if kind in DEAD_LETTER_REASONS:
        return DeadLetterReason(kind)
    if kind == "missing":
        return DeadLetterReason.MISSING_FIELD
    if kind == "enum" and tuple(error["loc"]) == ("channel",):
        return DeadLetterReason.UNKNOWN_CHANNEL
    if kind.endswith("_type") or kind == "is_instance_of":
        return DeadLetterReason.WRONG_TYPE
    return DeadLetterReason.INVALID_FIELD


@dataclass(frozen=True)
class Problem:
    """One broken rule: its reason code, where (a dotted path; ``event`` for the record as a
    whole; None when the record could not be read field by field) and what is wrong, in
    words that name the expected format."""

    reason: str
    where: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


def _shown(value: Any, limit: int = 40) -> str:
    """A short, printable rendering of an offending value for a message."""
    text = safe_text(repr(value))
    text = text.encode("ascii", "backslashreplace").decode() if is_unsafe_text(text) else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _problem(error: ErrorDetails) -> Problem:
    where = ".".join(str(part) for part in error["loc"]) or "event"
    kind, message = error["type"], error["msg"]
    expected = FIELD_FORMATS.get(where)
    if kind == "string_pattern_mismatch":  # the raw regex is unreadable here
        message = (
            f"{_shown(error.get('input'))} is not {expected or 'in the format of FIELD_PATTERNS[' + repr(where) + ']'}"
        )
    elif kind == "missing":
        message = "required but missing" + (f"; send {expected}" if expected else "")
    elif expected and _reason(error) is DeadLetterReason.WRONG_TYPE:
        message = f"{message}, got {_shown(error.get('input'))}; send {expected}"
    return Problem(_reason(error), where, message)


def _problems(exc: ValidationError) -> list[Problem]:
    """Every problem pydantic found, first by DeadLetterReason precedence (stable within one)."""
    found = [_problem(e) for e in exc.errors(include_url=False)]
    return sorted(found, key=lambda p: _PRECEDENCE[DeadLetterReason(p.reason)])


def describe_problems(problems: list[Problem] | tuple[Problem, ...]) -> str:
    """One line naming every problem, the first (the reported reason) first.

    >>> describe_problems([Problem("non_positive_amount", "amount_paise", "must be >= 0, got -5"),
    ...                    Problem("invalid_field", "mcc", "'541' is not 4 digits, e.g. 5411")])
    "amount_paise: must be >= 0, got -5 | 1 more: [invalid_field] mcc: '541' is not 4 digits, e.g. 5411;
    see event contract v1 in ingestion/events.py"
    """
    first, *rest = problems
    text = str(first)
    if rest:  # " | " between problems: a message may hold a ";" of its own
        text += f" | {len(rest)} more: " + " | ".join(f"[{p.reason}] {p}" for p in rest)
    if any(p.where for p in problems):
        text += f"; see event contract v{SCHEMA_VERSION} in ingestion/events.py"
    return text


def _to_event_error(exc: ValidationError) -> EventValidationError:
    problems = _problems(exc)
    return EventValidationError(problems[0].reason, describe_problems(problems))


def validate_event(
    raw: bytes | str | dict[str, Any],
    *,
    now: datetime | None = None,
    max_future_skew: timedelta = timedelta(minutes=5),
    max_amount_paise: int = MAX_AMOUNT_PAISE,
    max_age: timedelta | None = None,
) -> TransactionEvent:
    """Parse and check one event; raise EventValidationError with a reason code, and
    nothing else, whatever ``raw`` holds (an unexpected failure while judging it is
    reported as ``unprocessable`` with the exception's text).

    The reason is the first problem by :class:`DeadLetterReason` precedence; the detail
    names every problem the record has (see :func:`check_event` for them one by one).

    ``now`` is the reference for the future-timestamp check (wall clock if omitted);
    replays pass their own clock so that old files validate the same way every time.
    ``max_age``: events older than this before ``now`` are ``stale_timestamp`` (the live
    stream sets it; a replay of history does not).

    >>> e = validate_event(b'{"schema_version":1,"txn_id":"0f8fad5b-d9cb-469f-a165-70867728950e",'
    ...     b'"event_time":"2025-01-06T10:00:00+05:30","channel":"UPI","txn_type":"P2P",'
    ...     b'"payer":{"account_number":"123456789012"},"payee":{"vpa":"asha@oksbi"},'
    ...     b'"amount_paise":150000,"currency":"INR","device_id":"dev-1","status":"SUCCESS"}')
    >>> e.event_time.isoformat(), format_inr(e.amount_paise)
    ('2025-01-06T04:30:00+00:00', '₹1,500.00')
    >>> validate_event('{"schema_version": 2}')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    txmon.infra.errors.EventValidationError: unsupported_version: ...
    """
    event, problems = check_event(
        raw, now=now, max_future_skew=max_future_skew, max_amount_paise=max_amount_paise, max_age=max_age
    )
    if problems:
        raise EventValidationError(problems[0].reason, describe_problems(problems))
    assert event is not None
    return event


def check_event(
    raw: bytes | str | dict[str, Any],
    *,
    now: datetime | None = None,
    max_future_skew: timedelta = timedelta(minutes=5),
    max_amount_paise: int = MAX_AMOUNT_PAISE,
    max_age: timedelta | None = None,
) -> tuple[TransactionEvent | None, tuple[Problem, ...]]:
    """:func:`validate_event` without raising: ``(event, ())`` or ``(None, problems)``,
    problems in precedence order. For callers that merge the contract's problems with
    their own (a replay row whose cells could not all be mapped)."""
    reference = now if now is not None else datetime.now(UTC)
    if reference.tzinfo is None:
        raise ValueError("validate_event(now=...) must be timezone-aware, e.g. datetime.now(timezone.utc)")
    try:
        return _judge(raw, reference, max_future_skew, max_amount_paise, max_age)
    except EventValidationError as exc:
        return None, (Problem(exc.reason, None, exc.detail),)
    except Exception as exc:  # noqa: BLE001 - the contract's promise: one error type, whatever the input
        return None, (Problem(DeadLetterReason.UNPROCESSABLE, None, safe_text(f"{type(exc).__name__}: {exc}")[:1000]),)


def _judge(
    raw: bytes | str | dict[str, Any],
    reference: datetime,
    max_future_skew: timedelta,
    max_amount_paise: int,
    max_age: timedelta | None,
) -> tuple[TransactionEvent | None, tuple[Problem, ...]]:
    data = _decode(raw)
    try:
        event = TransactionEvent.model_validate(data, context={"max_amount_paise": max_amount_paise})
    except ValidationError as exc:
        return None, tuple(_problems(exc))
    if event.event_time > reference + max_future_skew:
        return None, (
            Problem(
                DeadLetterReason.FUTURE_TIMESTAMP,
                None,
                f"event_time {event.event_time.isoformat()} is more than {max_future_skew} "
                f"ahead of {reference.isoformat()}; check the producer's clock",
            ),
        )
    if max_age is not None and event.event_time < reference - max_age:
        return None, (
            Problem(
                DeadLetterReason.STALE_TIMESTAMP,
                None,
                f"event_time {event.event_time.isoformat()} is more than {max_age.days} days "
                f"before {reference.isoformat()}; replay history with a shifted clock or raise "
                "contract.max_event_age_days",
            ),
        )
    return event, ()


def safe_text(text: str) -> str:
    r"""``text`` with lone surrogates escaped, so it encodes as UTF-8 (Cassandra, Kafka, logs).

    >>> safe_text("ok \ud800")
    'ok \\ud800'
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ------------------------------------------------------------------------ labels


class LabelEvent(_Contract):
    """Ground truth for one transaction, as the labels topic carries it: a chargeback, a
    complaint, an analyst's disposition. ``label_time`` is when the truth became known."""

    txn_id: TxnId
    is_fraud: bool
    scenario: Annotated[str, StringConstraints(max_length=64)] | None = None
    label_time: datetime

    _aware_label_time = field_validator("label_time", mode="before")(
        TransactionEvent._aware_utc.__func__  # type: ignore[attr-defined]
    )


def validate_label(raw: bytes | str | dict[str, Any]) -> LabelEvent:
    """Parse and check one label; raise EventValidationError and nothing else.

    >>> validate_label(b'{"txn_id":"0f8fad5b-d9cb","is_fraud":true,"label_time":"2025-01-13T10:00:00Z"}').is_fraud
    True
    >>> validate_label(b'{"txn_id":"0f8fad5b-d9cb","is_fraud":true,"label_time":"soon"}')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    txmon.infra.errors.EventValidationError: invalid_field: label_time: ...
    """
    try:
        data = _decode(raw)
        where = _unsafe_text(data)
        if where is not None:
            raise EventValidationError(
                DeadLetterReason.CONTROL_CHARACTERS,
                f"{where} holds control, format or bidirectional-override characters",
            )
        try:
            return LabelEvent.model_validate(data)
        except ValidationError as exc:
            raise _to_event_error(exc) from None
    except EventValidationError:
        raise
    except Exception as exc:  # noqa: BLE001 - one error type, whatever the input
        raise EventValidationError(
            DeadLetterReason.UNPROCESSABLE, safe_text(f"{type(exc).__name__}: {exc}")[:1000]
        ) from None


# ------------------------------------------------------------ contract as plain data


@dataclass(frozen=True)
class _Leaf:
    path: str
    base: Any
    required: bool  # required whenever its enclosing object is present
    metadata: tuple[Any, ...]


def _unwrap(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """Strip ``X | None`` and ``Annotated[...]``: return the base type and metadata."""
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = typing.get_args(annotation)
            metadata.extend(extra)
        elif origin in (typing.Union, types.UnionType):
            (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        else:
            return annotation, tuple(metadata)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _walk(model: type[BaseModel], prefix: str = "") -> Iterator[_Leaf]:
    for name, info in model.model_fields.items():
        base, metadata = _unwrap(info.annotation)
        path = prefix + name
        yield _Leaf(path, base, info.is_required(), metadata + tuple(info.metadata))
        if _is_model(base):
            yield from _walk(base, path + ".")


def _leaves() -> tuple[_Leaf, ...]:
    return tuple(_walk(TransactionEvent))


def _required_paths() -> tuple[str, ...]:
    return tuple(leaf.path for leaf in _leaves() if leaf.required)


def _patterns() -> dict[str, str]:
    found: dict[str, str] = {}
    for leaf in _leaves():
        for meta in leaf.metadata:
            if isinstance(meta, StringConstraints) and meta.pattern:
                found[leaf.path] = meta.pattern if isinstance(meta.pattern, str) else meta.pattern.pattern
    return found


def _ranges() -> dict[str, tuple[float, float]]:
    found = {}
    for leaf in _leaves():
        # annotated_types declares its bounds as comparison protocols; the contract's are numbers.
        low: Any = next((m.ge for m in leaf.metadata if isinstance(m, Ge)), None)
        high: Any = next((m.le for m in leaf.metadata if isinstance(m, Le)), None)
        if low is not None and high is not None:
            found[leaf.path] = (float(low), float(high))
    return found


def _formats() -> dict[str, str]:
    return {leaf.path: meta.text for leaf in _leaves() for meta in leaf.metadata if isinstance(meta, _Format)}


def _enums() -> dict[str, tuple[str, ...]]:
    found = {}
    for leaf in _leaves():
        if isinstance(leaf.base, type) and issubclass(leaf.base, Enum):
            found[leaf.path] = tuple(m.value for m in leaf.base)
        elif typing.get_origin(leaf.base) is Literal:
            found[leaf.path] = typing.get_args(leaf.base)
    return found


REQUIRED_FIELDS: tuple[str, ...] = _required_paths()
"""Dotted paths that must be present and non-null. A nested path (``geo.lat``) is
required whenever its enclosing object is present."""
FIELD_PATTERNS: dict[str, str] = _patterns()
"""Dotted path -> regex every non-null value must match (Java- and Rust-compatible)."""
FIELD_RANGES: dict[str, tuple[float, float]] = _ranges()
"""Dotted path -> inclusive (low, high) bounds."""
FIELD_ENUMS: dict[str, tuple[str, ...]] = _enums()
"""Dotted path -> allowed string values."""
FIELD_FORMATS: dict[str, str] = _formats()
"""Dotted path -> the expected format in plain words with an example (for messages)."""


def spark_schema() -> Any:
    """The JSON layout as a ``pyspark.sql.types.StructType`` for ``from_json``.

    pyspark is imported here, not at module top, so producers and tests need no
    Spark. ``event_time`` stays a string: the stream parses it (and dead-letters
    naive or unparsable values) with built-ins. Enums are strings, amounts LongType.
    """
    # pyspark only for the Spark schema: producers and the scoring API use this module without Spark.
    from pyspark.sql import types as T

    def spark_type(base: Any) -> Any:
        if _is_model(base):
            return struct(base)
        if base is int:
            return T.LongType()
        if base is float:
            return T.DoubleType()
        if typing.get_origin(base) is Literal:
            return spark_type(type(typing.get_args(base)[0]))
        return T.StringType()  # str, StrEnum, datetime (parsed downstream)

    def struct(model: type[BaseModel]) -> Any:
        fields = []
        for name, info in model.model_fields.items():
            base, _ = _unwrap(info.annotation)
            fields.append(T.StructField(name, spark_type(base), nullable=not info.is_required()))
        return T.StructType(fields)

    return struct(TransactionEvent)


# ------------------------------------------------------------------------- money


AmountRounding = Literal["half_even", "half_up", "down"]
AMOUNT_ROUNDINGS: dict[str, str] = {"half_even": ROUND_HALF_EVEN, "half_up": ROUND_HALF_UP, "down": ROUND_DOWN}
"""How a source amount finer than a paisa may be rounded, by name: ``half_even`` (banker's
rounding, no bias over many amounts), ``half_up`` (ties away from zero), ``down`` (toward
zero, truncation)."""


def rupees_to_paise(rupees: Decimal | int | str, *, rounding: AmountRounding | None = None) -> int:
    """Exact rupees -> paise. Floats are refused: 0.1 + 0.2 is not money.

    ``rounding`` (a name in :data:`AMOUNT_ROUNDINGS`) allows amounts finer than a paisa,
    e.g. a float written as ``851.9499999999999``: rounded once, in Decimal, from the
    exact written value. Without it such amounts are refused.

    >>> rupees_to_paise(Decimal("12.34"))
    1234
    >>> rupees_to_paise("2,00,000")
    20000000
    >>> rupees_to_paise("851.9499999999999", rounding="half_even"), rupees_to_paise("0.125", rounding="half_even")
    (85195, 12)
    >>> rupees_to_paise(Decimal("0.005"))
    Traceback (most recent call last):
    ValueError: 0.005 INR is not a whole number of paise; round it explicitly first
    """
    if isinstance(rupees, float):
        raise TypeError("pass rupees as Decimal, int or str, never float")
    value = Decimal(rupees.replace(",", "")) if isinstance(rupees, str) else Decimal(rupees)
    try:
        paise = value * PAISE_PER_RUPEE
    except DecimalException:  # past the decimal context's exponent range (1e999999)
        raise ValueError(f"{rupees} INR is out of range for an amount") from None
    return whole_paise(paise, rounding, shown=f"{rupees} INR")


def whole_paise(paise: Decimal, rounding: AmountRounding | None = None, *, shown: str | None = None) -> int:
    """An exact amount in paise as an int, rounded by name (see :data:`AMOUNT_ROUNDINGS`)
    when ``rounding`` is given, refused (ValueError) when fractional without it.

    >>> whole_paise(Decimal("1050")), whole_paise(Decimal("10.5"), "half_even"), whole_paise(Decimal("10.5"), "half_up")
    (1050, 10, 11)
    """
    if rounding is not None:
        if rounding not in AMOUNT_ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}; choose one of {', '.join(AMOUNT_ROUNDINGS)}")
        try:
            paise = paise.quantize(Decimal(1), rounding=AMOUNT_ROUNDINGS[rounding])
        except DecimalException:  # more digits than the context's 28, or not a number
            raise ValueError(f"{shown or f'{paise} paise'} is out of range for an amount") from None
    if not paise.is_finite():
        raise ValueError(f"{shown or f'{paise} paise'} is not a number of paise")
    if paise != paise.to_integral_value():
        raise ValueError(f"{shown or f'{paise} paise'} is not a whole number of paise; round it explicitly first")
    return int(paise)


def paise_to_rupees(paise: int) -> Decimal:
    """Exact paise -> rupees.

    >>> paise_to_rupees(123456)
    Decimal('1234.56')
    """
    return Decimal(paise).scaleb(-2)


def format_inr(paise: int) -> str:
    """Human rupee string with Indian digit grouping (lakh, crore), for alerts and logs.

    >>> format_inr(123456)
    '₹1,234.56'
    >>> format_inr(123456700)
    '₹12,34,567.00'
    >>> format_inr(-5)
    '-₹0.05'
    >>> format_inr(10**11)
    '₹1,00,00,00,000.00'
    """
    sign = "-" if paise < 0 else ""
    rupees, fraction = divmod(abs(paise), PAISE_PER_RUPEE)
    digits = str(rupees)
    head, tail = digits[:-3], digits[-3:]
    groups: list[str] = []
    while len(head) > 2:
        head, group = head[:-2], head[-2:]
        groups.insert(0, group)
    if head:
        groups.insert(0, head)
    grouped = ",".join([*groups, tail])
    return f"{sign}₹{grouped}.{fraction:02d}"
