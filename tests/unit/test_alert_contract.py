"""The alert contract: deterministic ids, validation, exact wire format, Cassandra rows."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from txmon.alerting.contract import (
    ALERT_BY_DAY_COLUMNS,
    ALERT_COLUMNS,
    Alert,
    alert_day,
    alert_from_row,
    alert_id_for,
    alert_row,
    from_json,
    kafka_key,
    to_json,
    upgrade_day_row,
)
from txmon.alerting.errors import AlertContractError
from txmon.alerting.testing import TEST_PII_KEY, make_alert
from txmon.infra.errors import TxmonError
from txmon.infra.masking import account_ref


def _fields(**overrides):
    data = json.loads(to_json(make_alert(1)))
    data.update(overrides)
    return data


def test_alert_id_is_a_uuid5_of_the_txn_id_so_replays_never_duplicate():
    a, b = make_alert(1), make_alert(1, created_at=datetime(2027, 1, 1, tzinfo=UTC))
    assert a.alert_id == b.alert_id == alert_id_for("TXNT000000000001")
    assert a.alert_id.version == 5
    assert make_alert(2).alert_id != a.alert_id


def test_exact_wire_format_and_round_trip():
    alert = make_alert(7)
    raw = to_json(alert)
    assert raw.startswith(b'{"schema_version":2,"alert_id":"')
    ref = account_ref("500000000007", TEST_PII_KEY)
    assert (
        f'"created_at":"2026-01-05T03:30:07.800000Z","event_time":"2026-01-05T03:30:07Z","payer_ref":"{ref}",'
        '"payer_account_masked":"XXXXXXXX0007","payer_vpa_masked":"pa***@okhdfc",'
        '"payee_account_masked":"XXXXXXXX5433","payee_vpa_masked":"me***@ybl","amount_paise":'
    ).encode() in raw
    assert from_json(raw) == alert
    assert to_json(from_json(raw)) == raw  # same alert, same bytes
    assert kafka_key(alert) == ref.encode()


def test_optional_parties_are_omitted_on_the_wire():
    alert = make_alert(3, payer_vpa=None, payee_account=None, payee_vpa=None)
    data = json.loads(to_json(alert))
    assert not {"payer_vpa_masked", "payee_account_masked", "payee_vpa_masked"} & set(data)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"alert_id": str(uuid.uuid4())}, "alert_id must be alert_id_for(txn_id)"),
        ({"risk_score": 101}, "risk_score"),
        ({"decision": "ALLOW"}, "decision"),
        ({"severity": "URGENT"}, "severity"),
        ({"reasons": []}, "reasons"),
        ({"amount_paise": 0}, "amount_paise"),
        ({"amount_paise": 12.5}, "amount_paise"),
        ({"payer_account_masked": "12AB"}, "payer_account_masked"),
        ({"payer_vpa_masked": "no-handle"}, "payer_vpa_masked"),
        ({"payer_ref": "not-hex"}, "payer_ref"),
        ({"event_time": "2026-01-05T03:30:00"}, "no UTC offset"),
        ({"schema_version": 3}, "schema_version"),
        ({"unexpected": 1}, "unexpected"),
        ({"channel": "CHEQUE"}, "channel"),
    ],
)
def test_invalid_alerts_are_rejected_naming_the_field(overrides, field):
    with pytest.raises(AlertContractError) as err:
        from_json(json.dumps(_fields(**overrides)))
    assert field in str(err.value)
    assert isinstance(err.value, TxmonError)


def test_alert_id_may_be_omitted_and_is_filled_in():
    data = _fields()
    del data["alert_id"]
    assert from_json(json.dumps(data)).alert_id == alert_id_for(data["txn_id"])


def test_malformed_json_is_a_contract_error():
    with pytest.raises(AlertContractError, match="not a valid alert"):
        from_json(b"{not json")


def test_times_are_kept_in_utc_and_the_day_is_the_ist_date():
    alert = make_alert(1, event_time="2026-01-06T00:45:00+05:30")
    assert alert.event_time == datetime(2026, 1, 5, 19, 15, tzinfo=UTC)
    assert alert_day(alert).isoformat() == "2026-01-06"


def test_primary_reason_is_the_largest_contribution_first_on_ties():
    reasons = [
        {"code": "A", "description": "a", "contribution": 0.2},
        {"code": "B", "description": "b", "contribution": 0.5},
        {"code": "C", "description": "c", "contribution": 0.5},
    ]
    assert make_alert(1, reasons=reasons).primary_reason.code == "B"


def test_cassandra_row_round_trip_with_naive_driver_times():
    alert = make_alert(4)
    row = alert_row(alert)
    assert row["reason_codes"] == ["AMOUNT_SPIKE", "NEW_PAYEE_VPA"]
    # The driver hands timestamps back naive (UTC) and dates as its own type: mimic it.
    back = {
        **row,
        "created_at": row["created_at"].replace(tzinfo=None),
        "event_time": row["event_time"].replace(tzinfo=None),
    }
    assert alert_from_row(back) == alert


def test_alert_is_frozen():
    with pytest.raises(ValidationError, match="frozen"):
        make_alert(1).risk_score = 5
    assert isinstance(make_alert(1), Alert)


@pytest.mark.parametrize(
    ("field", "clear"),
    [
        ("payer_account_masked", "123456789012"),
        ("payee_account_masked", "123456789012"),
        ("payer_vpa_masked", "rahul.sharma@okaxis"),
        ("payee_vpa_masked", "shop@ybl"),
    ],
)
def test_a_clear_identifier_in_a_masked_field_is_refused(field, clear):
    with pytest.raises(AlertContractError, match=field):
        from_json(json.dumps(_fields(**{field: clear})))


def test_the_clear_fields_of_version_1_are_not_accepted_in_version_2():
    with pytest.raises(AlertContractError, match="payer_account"):
        from_json(json.dumps(_fields(payer_account="123456789012")))


def _v1() -> dict:
    """A version-1 message as earlier releases wrote it: the parties in clear."""
    data = _fields()
    for name in ("payer_ref", "payer_account_masked", "payer_vpa_masked", "payee_account_masked", "payee_vpa_masked"):
        data.pop(name, None)
    data.update(
        schema_version=1,
        payer_account="500000000001",
        payer_vpa="payer1.name@okhdfc",
        payee_account="900000007919",
        payee_vpa="merchant1@ybl",
    )
    data["reasons"][1]["value"] = "merchant1@ybl"
    return data


def test_a_version_1_message_is_read_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("TXMON_PII_TOKEN_KEY", TEST_PII_KEY.decode())
    monkeypatch.setattr("txmon.alerting.contract._process_key", None)
    alert = from_json(json.dumps(_v1()))
    assert alert == make_alert(1)  # what the stream now writes for the same transaction
    raw = to_json(alert)
    assert b"500000000001" not in raw and b"merchant1@ybl" not in raw and b"payer1.name@okhdfc" not in raw


def test_a_version_1_row_is_read_masked_and_its_day_row_counted_by_ref(monkeypatch):
    monkeypatch.setenv("TXMON_PII_TOKEN_KEY", TEST_PII_KEY.decode())
    monkeypatch.setattr("txmon.alerting.contract._process_key", None)
    v1 = _v1()
    row = {
        **alert_row(make_alert(1)),
        "schema_version": 1,
        "payer_account": v1["payer_account"],
        "payer_vpa": v1["payer_vpa"],
        "payee_account": v1["payee_account"],
        "payee_vpa": v1["payee_vpa"],
        "payer_ref": None,
        "payer_account_masked": None,
        "payer_vpa_masked": None,
        "payee_account_masked": None,
        "payee_vpa_masked": None,
        "reasons": json.dumps(v1["reasons"]),
    }
    assert alert_from_row(row) == make_alert(1)
    day = upgrade_day_row({"payer_account": "500000000001", "payer_ref": None, "payer_account_masked": None})
    assert day == {"payer_ref": account_ref("500000000001", TEST_PII_KEY), "payer_account_masked": "XXXXXXXX0001"}


def test_rows_hold_no_clear_column():
    row = alert_row(make_alert(1))
    assert set(ALERT_COLUMNS) <= set(row) and set(ALERT_BY_DAY_COLUMNS) <= set(row)
    assert not {"payer_account", "payer_vpa", "payee_account", "payee_vpa"} & set(row)
