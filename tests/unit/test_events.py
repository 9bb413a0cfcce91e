"""The event contract: each dead-letter reason, the wire format, the Spark view."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from txmon.infra.errors import EventValidationError
from txmon.ingestion import events
from txmon.ingestion.events import (
    DeadLetterReason,
    TransactionEvent,
    format_inr,
    kafka_key,
    rupees_to_paise,
    to_json,
    validate_event,
)

NOW = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)

GOOD: dict[str, Any] = {
    "schema_version": 1,
    "txn_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "event_time": "2025-01-06T15:30:00.250+05:30",
    "channel": "UPI",
    "txn_type": "P2M",
    "payer": {"account_number": "123456789012", "ifsc": "HDFC0001234", "vpa": "asha.rao@okhdfcbank"},
    "payee": {"account_number": "9876543210", "ifsc": "SBIN0005943", "vpa": "kirana12@ybl"},
    "amount_paise": 45_050,
    "currency": "INR",
    "mcc": "5411",
    "device_id": "a1b2c3d4e5f60718",
    "ip": "49.36.10.20",
    "geo": {"city": "Pune", "lat": 18.5204, "lon": 73.8567},
    "status": "SUCCESS",
}


def good(**changes: Any) -> dict[str, Any]:
    """GOOD with top-level changes; the value ``...`` removes the key."""
    event = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is ...:
            event.pop(key)
        else:
            event[key] = value
    return event


def reason_for(raw: Any, **kwargs: Any) -> str:
    with pytest.raises(EventValidationError) as caught:
        validate_event(raw, now=kwargs.pop("now", NOW), **kwargs)
    return caught.value.reason


def test_reason_codes_are_the_stable_wire_strings() -> None:
    assert (
        events.DEAD_LETTER_REASONS
        == tuple(DeadLetterReason)
        == (
            "malformed_json",
            "control_characters",
            "unsupported_version",
            "missing_field",
            "wrong_type",
            "unknown_channel",
            "non_positive_amount",
            "absurd_amount",
            "invalid_field",
            "future_timestamp",
            "stale_timestamp",
            "conflicting_duplicate",
            "oversize",
            "unprocessable",
        )
    )
    assert events.DEAD_LETTER_REASONS[:-3] == events.CONTRACT_REASONS


BAD_INPUTS: list[tuple[Any, str]] = [
    (b'{"schema_version": 1,', "malformed_json"),
    (b"\xff\xfe", "malformed_json"),
    (b"[1, 2]", "malformed_json"),
    (b'{"amount_paise": NaN}', "malformed_json"),
    (good(schema_version=2), "unsupported_version"),
    (good(txn_id=...), "missing_field"),
    (good(schema_version=...), "missing_field"),
    (good(payer={"vpa": "asha@oksbi"}), "missing_field"),  # payer account is the key
    (good(payee={"ifsc": "SBIN0005943"}), "missing_field"),  # neither account nor vpa
    (good(geo={"city": "Pune", "lat": 18.5}), "missing_field"),
    (good(amount_paise=450.5), "wrong_type"),  # never floats
    (good(amount_paise="45050"), "wrong_type"),
    (good(amount_paise=True), "wrong_type"),
    (good(event_time=1736164800), "wrong_type"),
    (good(payee="kirana12@ybl"), "wrong_type"),
    (good(geo={"city": "Pune", "lat": "18.5", "lon": 73.8}), "wrong_type"),
    (good(channel="SWIFT"), "unknown_channel"),
    (good(channel="upi"), "unknown_channel"),
    (good(amount_paise=-1), "non_positive_amount"),
    (good(amount_paise=-100), "non_positive_amount"),
    (good(amount_paise=10**11 + 1), "absurd_amount"),
    (good(txn_type="REFUND"), "invalid_field"),
    (good(status="DONE"), "invalid_field"),
    (good(currency="USD"), "invalid_field"),
    (good(event_time="2025-01-06T10:00:00"), "invalid_field"),  # naive
    (good(event_time="yesterday"), "invalid_field"),
    (good(payer={"account_number": "12345"}), "invalid_field"),
    (good(payer={"account_number": "123456789012", "ifsc": "HDFC1234567"}), "invalid_field"),
    (good(payee={"vpa": "no-handle"}), "invalid_field"),
    (good(mcc="541"), "invalid_field"),
    (good(ip="300.1.2.3"), "invalid_field"),
    (good(geo={"city": "Pune", "lat": 91.0, "lon": 73.8}), "invalid_field"),
    (good(fraud=True), "invalid_field"),  # unknown keys are rejected
    (good(channel="RTGS", txn_type="TRANSFER", mcc=..., amount_paise=100_000), "invalid_field"),
    (good(event_time="2025-01-06T12:06:00Z"), "future_timestamp"),
    (good(event_time="1970-01-01T00:00:00Z"), "stale_timestamp"),
    (good(geo={"city": "Pune\u202egnp.exe", "lat": 18.5, "lon": 73.8}), "control_characters"),
    (good(device_id="dev\u200b1"), "control_characters"),
    (good(status="SUCCESS\x00"), "control_characters"),
    (good(**{"note\u2066": "x"}), "control_characters"),  # in a key too
    (good(event_time="0001-01-01T00:00:00+05:30"), "invalid_field"),  # before year 1 in UTC
    (good(event_time="9999-12-31T23:59:59-05:00"), "invalid_field"),  # after year 9999 in UTC
    (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),  # nested past the parser's recursion limit
    (b'{"a": 1}\xff', "malformed_json"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_INPUTS)
def test_each_bad_input_gets_its_reason(raw: Any, reason: str) -> None:
    assert reason_for(raw, max_age=timedelta(days=1095)) == reason


def test_every_reason_code_is_reachable() -> None:
    """Guard against a reason that nothing can produce (a dead code on the Spark side)."""
    reachable = {reason for _, reason in BAD_INPUTS}
    assert reachable == set(events.CONTRACT_REASONS)


def test_precedence_first_reason_in_declaration_order_wins() -> None:
    assert reason_for(good(schema_version=7, amount_paise=-1, channel="X")) == "unsupported_version"
    assert reason_for(good(txn_id=..., amount_paise=1.5)) == "missing_field"
    assert reason_for(good(amount_paise=1.5, channel="X", mcc="1")) == "wrong_type"
    assert reason_for(good(channel="X", amount_paise=-1)) == "unknown_channel"
    assert reason_for(good(amount_paise=-1, ip="bad")) == "non_positive_amount"
    assert reason_for(good(ip="bad", event_time="2030-01-01T00:00:00Z")) == "invalid_field"


def test_error_message_names_field_and_fix() -> None:
    with pytest.raises(EventValidationError) as caught:
        validate_event(good(amount_paise=450.5), now=NOW)
    assert caught.value.detail.startswith("amount_paise:")
    assert "ingestion/events.py" in caught.value.detail
    assert str(caught.value).startswith("wrong_type: ")


def test_good_event_round_trips_byte_for_byte() -> None:
    event = validate_event(json.dumps(GOOD), now=NOW)
    wire = to_json(event)
    assert validate_event(wire, now=NOW) == event
    assert to_json(validate_event(wire, now=NOW)) == wire
    assert validate_event(GOOD, now=NOW) == event  # dict input, same result


def test_json_is_compact_ordered_and_utc() -> None:
    event = validate_event(good(ip=..., geo=...), now=NOW)
    wire = to_json(event)
    assert b" " not in wire
    decoded = json.loads(wire)
    assert list(decoded) == [f for f in TransactionEvent.model_fields if f not in ("ip", "geo")]
    assert decoded["event_time"] == "2025-01-06T10:00:00.250000Z"  # +05:30 normalised to UTC
    assert decoded["amount_paise"] == 45_050 and isinstance(decoded["amount_paise"], int)


def test_optional_fields_may_be_absent() -> None:
    transfer = good(channel="NEFT", txn_type="TRANSFER", mcc=..., device_id=..., ip=..., geo=...)
    assert validate_event(transfer, now=NOW).device_id is None
    p2p = good(txn_type="P2P", mcc=..., payee={"vpa": "ravi@ybl"})
    assert validate_event(p2p, now=NOW).payee.account_number is None


@pytest.mark.parametrize("channel", events.CHANNELS)
@pytest.mark.parametrize("txn_type", events.TXN_TYPES)
def test_mcc_and_device_are_optional_for_every_channel_and_type(channel: str, txn_type: str) -> None:
    """A source without device or merchant category (card acquirer files) is scored, not rejected."""
    bare = good(channel=channel, txn_type=txn_type, mcc=..., device_id=..., amount_paise=events.RTGS_MIN_AMOUNT_PAISE)
    event = validate_event(bare, now=NOW)
    assert (event.mcc, event.device_id) == (None, None)
    assert to_json(event).count(b'"mcc"') == 0  # absent on the wire, not null


def test_mcc_and_device_keep_their_formats_when_present() -> None:
    assert reason_for(good(txn_type="P2P", mcc="54a1")) == "invalid_field"
    assert reason_for(good(channel="NEFT", txn_type="TRANSFER", device_id="has space")) == "invalid_field"
    assert reason_for(good(device_id="")) == "invalid_field"


def test_zero_amount_is_valid_and_negative_is_not() -> None:
    """Card verifications and authorisation checks carry no money but are real (and scored)."""
    assert validate_event(good(amount_paise=0), now=NOW).amount_paise == 0
    with pytest.raises(EventValidationError) as caught:
        validate_event(good(amount_paise=-5), now=NOW)
    assert caught.value.reason == "non_positive_amount"  # stable wire string, though zero passes
    assert "amount_paise: must be >= 0, got -5" in caught.value.detail


def test_detail_lists_every_problem_with_the_expected_format() -> None:
    bad = good(amount_paise=-5, mcc="541", payer={"account_number": "000000012.0"}, ip="300.1.2.3")
    with pytest.raises(EventValidationError) as caught:
        validate_event(bad, now=NOW)
    error = caught.value
    assert error.reason == "non_positive_amount"  # the first by precedence
    assert error.detail.startswith("amount_paise: must be >= 0, got -5; send a refund")
    assert " | 3 more: [invalid_field] " in error.detail
    assert "[invalid_field] mcc: '541' is not 4 digits, e.g. 5411" in error.detail
    assert "[invalid_field] payer.account_number: '000000012.0' is not 9-18 digits, e.g. 123456789012" in error.detail
    assert "[invalid_field] ip: '300.1.2.3' is not an IPv4 or IPv6 address" in error.detail
    assert error.detail.endswith("see event contract v1 in ingestion/events.py")


def test_check_event_returns_every_problem_in_precedence_order() -> None:
    event, problems = events.check_event(good(amount_paise=1.5, txn_id=..., mcc="1"), now=NOW)
    assert event is None
    assert [(p.reason, p.where) for p in problems] == [
        ("missing_field", "txn_id"),
        ("wrong_type", "amount_paise"),
        ("invalid_field", "mcc"),
    ]
    assert "got 1.5; send whole paise as an integer" in problems[1].message
    assert "send 8-64 letters" in problems[0].message
    assert events.check_event(GOOD, now=NOW) == (validate_event(GOOD, now=NOW), ())
    assert events.check_event(b"{", now=NOW)[1][0].reason == "malformed_json"


def test_every_pattern_has_a_plain_format_whose_example_fits() -> None:
    """Messages quote FIELD_FORMATS instead of the regex; its example must itself be valid."""
    assert set(events.FIELD_PATTERNS) <= set(events.FIELD_FORMATS)
    for path, pattern in events.FIELD_PATTERNS.items():
        example = re.search(r"e\.g\. (\S+)", events.FIELD_FORMATS[path])
        assert example is not None, path
        assert re.match(pattern, example.group(1)), (path, example.group(1))


def test_future_timestamp_respects_skew_and_clock() -> None:
    slightly_ahead = good(event_time="2025-01-06T12:04:59Z")
    assert validate_event(slightly_ahead, now=NOW).event_time.minute == 4
    assert reason_for(slightly_ahead, max_future_skew=timedelta(0)) == "future_timestamp"
    old_replay = good(event_time="2019-03-01T00:00:00Z")
    assert validate_event(old_replay, now=NOW).event_time.year == 2019
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_event(GOOD, now=datetime(2025, 1, 6))


def test_naive_timestamp_rejected_even_as_datetime() -> None:
    with pytest.raises(EventValidationError) as caught:
        validate_event(good(event_time=datetime(2025, 1, 6, 10)), now=NOW)
    assert caught.value.reason == "invalid_field"
    assert "offset" in caught.value.detail


def test_amount_cap_is_configurable() -> None:
    assert reason_for(good(amount_paise=50_000), max_amount_paise=49_999) == "absurd_amount"
    assert validate_event(good(amount_paise=events.MAX_AMOUNT_PAISE), now=NOW)


def test_kafka_key_is_payer_account() -> None:
    assert kafka_key(validate_event(GOOD, now=NOW)) == b"123456789012"


def test_models_are_frozen() -> None:
    event = validate_event(GOOD, now=NOW)
    with pytest.raises(ValidationError, match="frozen"):
        event.amount_paise = 1  # type: ignore[misc]


def test_required_fields_derived_from_the_model() -> None:
    assert events.REQUIRED_FIELDS == (
        "schema_version",
        "txn_id",
        "event_time",
        "channel",
        "txn_type",
        "payer",
        "payer.account_number",
        "payee",
        "amount_paise",
        "currency",
        "geo.city",
        "geo.lat",
        "geo.lon",
        "status",
    )
    assert events.FIELD_ENUMS["channel"] == events.CHANNELS
    assert events.FIELD_RANGES == {"geo.lat": (-90.0, 90.0), "geo.lon": (-180.0, 180.0)}


@pytest.mark.parametrize(
    ("path", "ok", "bad"),
    [
        ("payer.ifsc", ["SBIN0005943", "HDFC0ABC123"], ["sbin0005943", "SBIN1005943", "SBIN000594"]),
        ("payee.vpa", ["ab@ybl", "rahul.k-1_2@okhdfcbank"], ["@ybl", "a@ybl", "x@1bank", "a b@ybl"]),
        ("payer.account_number", ["123456789", "1" * 18], ["12345678", "1" * 19, "12345678a"]),
        ("mcc", ["5411"], ["541", "54111", "54a1"]),
    ],
)
def test_field_patterns_work_as_plain_regex(path: str, ok: list[str], bad: list[str]) -> None:
    """Spark applies these with rlike; they must mean the same outside pydantic."""
    pattern = re.compile(events.FIELD_PATTERNS[path])
    assert all(pattern.match(v) for v in ok)
    assert not any(pattern.match(v) for v in bad)


@pytest.mark.parametrize(
    "address",
    [
        "49.36.10.20",
        "0.0.0.0",
        "255.255.255.255",
        "01.2.3.4",
        "1.2.3",
        "256.1.1.1",
        "::1",
        "::",
        "2001:db8::1",
        "fe80::1:2:3:4",
        "2001:0db8:0000:0000:0000:ff00:0042:8329",
        "::ffff:192.0.2.1",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:1.2.3.4",
        "1::2::3",
        "12345::1",
        "gggg::1",
        "1:2:3:4:5:6:7:8:9",
        "not-an-ip",
        "",
    ],
)
def test_ip_pattern_agrees_with_ipaddress(address: str) -> None:
    try:
        ipaddress.ip_address(address)
        valid = True
    except ValueError:
        valid = False
    assert bool(re.match(events.IP_PATTERN, address)) is valid


def test_spark_schema_mirrors_the_model() -> None:
    types = pytest.importorskip("pyspark.sql.types")
    schema = events.spark_schema()
    assert schema.fieldNames() == list(TransactionEvent.model_fields)
    by_name = {f.name: f for f in schema.fields}
    assert isinstance(by_name["amount_paise"].dataType, types.LongType)
    assert isinstance(by_name["event_time"].dataType, types.StringType)
    assert by_name["payer"].dataType.fieldNames() == ["account_number", "ifsc", "vpa"]
    assert isinstance(by_name["geo"].dataType["lat"].dataType, types.DoubleType)
    assert not by_name["txn_id"].nullable and by_name["mcc"].nullable


def test_money_helpers() -> None:
    assert rupees_to_paise(Decimal("2.5")) == 250
    assert format_inr(rupees_to_paise("10,00,000")) == "₹10,00,000.00"
    with pytest.raises(TypeError, match="never float"):
        rupees_to_paise(12.34)  # type: ignore[arg-type]


def _half_even_oracle(units: int, decimals: int) -> int:
    """Paise of ``units / 10**decimals`` rupees, half-even, in integer arithmetic only."""
    if units < 0:
        return -_half_even_oracle(-units, decimals)
    if decimals <= 2:
        return units * 10 ** (2 - decimals)
    step = 10 ** (decimals - 2)
    paise, rest = divmod(units, step)
    if 2 * rest > step or (2 * rest == step and paise % 2):
        paise += 1
    return paise


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=-(10**13), max_value=10**13), st.integers(min_value=0, max_value=16))
def test_half_even_rounding_of_any_decimal_text(units: int, decimals: int) -> None:
    """Any amount written with up to 16 decimals rounds half-even exactly (no float on the way)."""
    text = str(Decimal(units).scaleb(-decimals))
    assert rupees_to_paise(text, rounding="half_even") == _half_even_oracle(units, decimals)


@settings(max_examples=500, deadline=None)
@given(
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.sampled_from(sorted(events.AMOUNT_ROUNDINGS)),
)
def test_float_text_rounds_as_decimal_does(amount: float, rounding: str) -> None:
    """A float's shortest text (how CSV writers print it) rounds as Decimal rounds that text."""
    text = repr(amount)
    mode = {"half_even": ROUND_HALF_EVEN, "half_up": ROUND_HALF_UP, "down": ROUND_DOWN}[rounding]
    expected = int((Decimal(text) * 100).quantize(Decimal(1), rounding=mode))
    assert rupees_to_paise(text, rounding=rounding) == expected  # type: ignore[arg-type]


def test_rounding_names_and_exactness_without_rounding() -> None:
    assert rupees_to_paise("851.9499999999999", rounding="half_even") == 85195
    assert [rupees_to_paise(a, rounding="half_up") for a in ("0.125", "-0.125")] == [13, -13]
    assert [rupees_to_paise(a, rounding="down") for a in ("0.129", "-0.129")] == [12, -12]
    with pytest.raises(ValueError, match="not a whole number of paise"):
        rupees_to_paise("851.9499999999999")
    with pytest.raises(ValueError, match="unknown rounding 'bankers'"):
        rupees_to_paise("1.005", rounding="bankers")  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(digits=st.integers(4301, 20_000), field=st.sampled_from(["amount_paise", "schema_version", "extra"]))
def test_an_integer_too_long_to_convert_is_malformed_json_saying_so(digits: int, field: str):
    # json's own int() refuses such a literal with a message telling the sender to call
    # sys.set_int_max_str_digits(); the dead letter names the real problem instead.
    raw = json.dumps({**GOOD, field: 0}).replace(f'"{field}": 0', f'"{field}": {"9" * digits}')
    with pytest.raises(EventValidationError) as caught:
        validate_event(raw.encode(), now=NOW)
    assert caught.value.reason == DeadLetterReason.MALFORMED_JSON
    assert caught.value.detail == "a number is out of range: integers have at most 4,300 digits"
