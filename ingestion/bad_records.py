"""One deliberately broken record per dead-letter reason, made from a valid event.

Used by the demo (to show the dead-letter path working) and by the tests (to prove
every class of bad input is dead-lettered with the right reason).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from txmon.ingestion.events import TransactionEvent, to_json


def bad_records(event: TransactionEvent, now: datetime | None = None) -> dict[str, bytes]:
    """reason code -> raw Kafka value that the contract rejects with exactly that reason
    (every one of ``CONTRACT_REASONS``; ``stale_timestamp`` under the stream's default
    ``contract.max_event_age_days``).

    >>> from txmon.ingestion.simulator import Simulator, SimulatorConfig
    >>> ev = next(Simulator(SimulatorConfig(n_customers=50, n_merchants=20), seed=1).generate(1)).event
    >>> sorted(bad_records(ev))[:3]
    ['absurd_amount', 'control_characters', 'future_timestamp']
    """
    now = now or datetime.now(UTC)
    base = json.loads(to_json(event))

    def variant(txn_suffix: str, **changes) -> bytes:
        return _variant(base, f"{base['txn_id'][:50]}-{txn_suffix}", changes)

    future = (now + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "malformed_json": to_json(event)[:-7] + b"#garbage",
        "unsupported_version": variant("v", schema_version=99),
        "missing_field": variant("m", amount_paise=_DROP),
        "wrong_type": variant("w", amount_paise="12.50"),
        "unknown_channel": variant("c", channel="TELEGRAPH"),
        "non_positive_amount": variant("n", amount_paise=-500),
        "absurd_amount": variant("a", amount_paise=10**15),
        "invalid_field": variant("i", event_time="2025-01-06T10:00:00"),  # naive time
        "future_timestamp": variant("f", event_time=future),
        "stale_timestamp": variant("s", event_time="1970-01-01T00:00:00Z"),  # a producer's zero time
        "control_characters": variant("x", geo={"city": "Pune\u202egnp.exe", "lat": 18.52, "lon": 73.86}),
    }


_DROP = object()


def _variant(base: dict, txn_id: str, changes: dict) -> bytes:
    """``base`` as JSON bytes under ``txn_id``, each change set (or dropped with ``_DROP``)."""
    data = {**base, "txn_id": txn_id}
    for key, value in changes.items():
        if value is _DROP:
            data.pop(key, None)
        else:
            data[key] = value
    return json.dumps(data).encode()


def hostile_records(event: TransactionEvent) -> list[tuple[str, bytes | None, str]]:
    """(name, raw Kafka value, expected dead-letter reason) for records nobody here would
    write: JSON, encoding, type, range, size and timestamp tricks. Each is built from
    ``event`` with a txn_id of its own, so none collides with the valid traffic.

    >>> from txmon.ingestion.simulator import Simulator, SimulatorConfig
    >>> ev = next(Simulator(SimulatorConfig(n_customers=50, n_merchants=20), seed=1).generate(1)).event
    >>> records = hostile_records(ev)
    >>> len(records) >= 40, len({name for name, _, _ in records}) == len(records)
    (True, True)
    """
    base = json.loads(to_json(event))
    out: list[tuple[str, bytes | None, str]] = []

    def add(name: str, reason: str, raw: object = _DROP, **changes) -> None:
        if raw is _DROP:  # a variant of the valid event; non-ASCII text as JSON \u escapes
            raw = _variant(base, f"{base['txn_id'][:40]}-h{len(out):03d}", changes)
        out.append((name, raw, reason))  # type: ignore[arg-type]

    valid = json.dumps({**base, "txn_id": f"{base['txn_id'][:40]}-hv"})
    geo = base.get("geo") or {"city": "Pune", "lat": 18.52, "lon": 73.86}
    # timestamps
    add("event_time_word", "invalid_field", event_time="yesterday")
    add("event_time_epoch_number", "wrong_type", event_time=1736164800)
    add("event_time_year_1_east_of_utc", "invalid_field", event_time="0001-01-01T00:00:00+05:30")
    add("event_time_year_9999_west_of_utc", "invalid_field", event_time="9999-12-31T23:59:59-05:00")
    add("event_time_epoch_zero", "stale_timestamp", event_time="1970-01-01T00:00:00Z")
    add("event_time_impossible_date", "invalid_field", event_time="2025-13-45T99:99:99Z")
    add("event_time_empty", "invalid_field", event_time="")
    add("event_time_null", "wrong_type", event_time=None)
    add("event_time_offset_25h", "invalid_field", event_time="2025-01-06T10:00:00+25:00")
    add("event_time_far_future", "future_timestamp", event_time="9000-01-01T00:00:00Z")
    add("event_time_naive", "invalid_field", event_time="2025-01-06T10:00:00")
    # encodings
    add("invalid_utf8", "malformed_json", raw=b"\xff\xfe\xfd\x00garbage")
    add("invalid_utf8_inside_string", "malformed_json", raw=valid.encode().replace(b'"INR"', b'"\xc3\x28"'))
    add(
        "bidi_override_raw_utf8",
        "control_characters",
        raw=valid.replace(
            '"currency"', '"geo":{"city":"Pune\u202egnp.exe","lat":18.5,"lon":73.8},"currency"', 1
        ).encode()
        if '"geo"' not in valid
        else valid.replace(geo["city"], "Pune\u202egnp.exe", 1).encode(),
    )
    add("utf16_encoded_event", "malformed_json", raw=valid.encode("utf-16"))
    add("bom_prefixed_event", "malformed_json", raw=b"\xef\xbb\xbf" + valid.encode())
    add("lone_surrogate_in_city", "control_characters", geo={**geo, "city": "Pu\ud800ne"})
    add("bidi_override_in_city", "control_characters", geo={**geo, "city": "Pune\u202egnp.exe"})
    add("nul_in_txn_id", "control_characters", txn_id="abcdefgh\x00ijkl")
    add("zero_width_in_device", "control_characters", device_id="dev\u200b1")
    add("bidi_isolate_in_key", "control_characters", **{"note\u2066": "x"})
    # JSON shape
    add("empty_value", "malformed_json", raw=b"")
    add("tombstone_value", "malformed_json", raw=None)
    add("json_null", "malformed_json", raw=b"null")
    add("json_array", "malformed_json", raw=b"[]")
    add("json_string", "malformed_json", raw=b'"transaction"')
    add("json_number", "malformed_json", raw=b"123")
    add("truncated_json", "malformed_json", raw=valid.encode()[:-9])
    add("trailing_garbage", "malformed_json", raw=valid.encode() + b" xyz")
    add("nested_arrays_100k", "malformed_json", raw=b"[" * 100_000 + b"]" * 100_000)
    add("nested_objects_50k", "malformed_json", raw=b'{"a":' * 50_000 + b"1" + b"}" * 50_000)
    add("nan_literal", "malformed_json", raw=valid.replace('"amount_paise":', '"amount_paise":NaN,"x":').encode())
    add(
        "infinity_literal",
        "malformed_json",
        raw=valid.replace('"amount_paise":', '"amount_paise":Infinity,"x":').encode(),
    )
    add(
        "integer_5000_digits",
        "malformed_json",
        raw=valid.replace('"amount_paise":', '"amount_paise":' + "9" * 5000 + ',"x":').encode(),
    )
    add(
        "duplicate_key_last_wins_string",
        "wrong_type",
        raw=valid.replace(
            '"amount_paise":', '"amount_paise":"12.50","amount_paise_":0,"amount_paise":"1","y":'
        ).encode(),
    )
    # types and ranges
    add(
        "amount_float_overflow",
        "wrong_type",
        raw=valid.replace('"amount_paise":', '"amount_paise":1e400,"x":').encode(),
    )
    add("amount_10e30", "absurd_amount", amount_paise=10**30)
    add("amount_negative", "non_positive_amount", amount_paise=-1)
    add("amount_decimal_string", "wrong_type", amount_paise="12.50")
    add("amount_boolean", "wrong_type", amount_paise=True)
    add("schema_version_2_pow_63", "unsupported_version", schema_version=2**63)
    add("schema_version_string", "wrong_type", schema_version="1")
    add("payer_as_list", "wrong_type", payer=[base["payer"]])
    add("payer_account_as_number", "wrong_type", payer={**base["payer"], "account_number": 123456789012})
    add("lat_string_nan", "wrong_type", geo={**geo, "lat": "NaN"})
    add("lat_1e308", "invalid_field", geo={**geo, "lat": 1e308})
    add("channel_lowercase", "unknown_channel", channel="upi")
    add("unknown_field_proto", "invalid_field", __proto__={"admin": True})
    add("missing_everything", "missing_field", raw=b"{}")
    # size
    add("txn_id_10k_chars", "invalid_field", txn_id="a" * 10_000)
    add("city_600kb", "invalid_field", geo={**geo, "city": "x" * 600_000})
    return out
