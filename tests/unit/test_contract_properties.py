"""Property-based tests: the contract and the stream's judge give every input a verdict.

Whatever bytes, JSON or Python values arrive, ``validate_event`` / ``validate_label``
raise only ``EventValidationError`` (with a known reason), and the stream's judge never
raises and accounts for every record exactly once (valid or dead-lettered, with text that
Cassandra and Kafka can store).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txmon.infra.errors import EventValidationError
from txmon.ingestion.events import DEAD_LETTER_REASONS, validate_event, validate_label
from txmon.spark_jobs import validation

NOW = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
GOOD = {
    "schema_version": 1,
    "txn_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "event_time": "2025-01-06T10:00:00+05:30",
    "channel": "UPI",
    "txn_type": "P2M",
    "payer": {"account_number": "123456789012", "ifsc": "SBIN0005943", "vpa": "asha@oksbi"},
    "payee": {"vpa": "kirana12@ybl"},
    "amount_paise": 45050,
    "currency": "INR",
    "mcc": "5411",
    "device_id": "dev-7f3a",
    "ip": "10.2.3.4",
    "geo": {"city": "Pune", "lat": 18.52, "lon": 73.86},
    "status": "SUCCESS",
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text()
    | st.text(alphabet=st.characters(codec=None))
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
timestamps = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)), None]),
    ).map(lambda d: d.isoformat()),
    st.text(max_size=40),
    st.integers(),
    st.floats(),
)


def _mutations():
    """A valid event with one or more fields replaced, removed or added."""
    field = st.sampled_from([*GOOD, "payer.account_number", "payee.vpa", "geo.city", "geo.lat", "extra"])
    change = st.one_of(json_values, timestamps, st.just(...))
    return st.dictionaries(field, change, min_size=1, max_size=4)


def _apply(changes: dict) -> dict:
    event = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        target, _, leaf = path.rpartition(".")
        holder = event.get(target) if target else event
        if not isinstance(holder, dict):
            continue
        if value is ...:
            holder.pop(leaf, None)
        else:
            holder[leaf] = value
    return event


def _only_contract_errors(raw) -> None:
    try:
        validate_event(raw, now=NOW, max_age=timedelta(days=1095))
    except EventValidationError as exc:  # refusing is fine; any other error type is the bug
        assert exc.reason in DEAD_LETTER_REASONS  # noqa: PT017
        exc.detail.encode("utf-8")  # storable as is
    try:
        validate_label(raw)
    except EventValidationError as exc:
        assert exc.reason in DEAD_LETTER_REASONS  # noqa: PT017 - as above


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_get_a_verdict(raw: bytes) -> None:
    _only_contract_errors(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_gets_a_verdict(value) -> None:
    _only_contract_errors(json.dumps(value))
    _only_contract_errors(json.dumps(value).encode("utf-8", "surrogatepass"))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_a_valid_event_mutated_anyhow_gets_a_verdict(changes: dict) -> None:
    _only_contract_errors(json.dumps(_apply(changes)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.binary(max_size=120),
            _mutations().map(lambda c: json.dumps(_apply(c)).encode("utf-8", "surrogatepass")),
        ),
        max_size=25,
    )
)
def test_the_stream_judge_accounts_for_every_record_once(values: list) -> None:
    batch = pa.RecordBatch.from_pydict(
        {
            "key": pa.array([b"k"] * len(values), pa.binary()),
            "value": pa.array(values, pa.binary()),
            "topic": pa.array(["transactions"] * len(values), pa.string()),
            "partition": pa.array([0] * len(values), pa.int32()),
            "offset": pa.array(range(len(values)), pa.int64()),
            "kafka_ts": pa.array([NOW] * len(values), pa.timestamp("us", tz="UTC")),
        }
    )
    judged = validation.judge_batch(batch, NOW, validation.Judge(max_age=timedelta(days=1095)))
    letters = {row[2]: row for row in judged.dead_letters}
    assert sorted([*judged.index, *letters]) == list(range(len(values)))
    valid = judged.valid
    assert isinstance(valid, pa.RecordBatch)
    assert valid.num_rows == len(judged.index)
    assert valid.schema.names == list(validation.TRANSACTION_COLUMNS)
    for row in letters.values():
        assert row[3] in DEAD_LETTER_REASONS
        for text in (row[4], row[5], row[6]):
            if text is not None:
                text.encode("utf-8")
                assert len(text) <= validation.MAX_RAW_CHARS + 40
