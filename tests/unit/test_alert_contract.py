"""The alert contract: deterministic ids, validation, exact wire format, Cassandra rows."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest

from alerting.contract import (
    Alert, alert_day, alert_from_row, alert_id_for, alert_row, from_json, kafka_key, to_json,
)
from alerting.errors import AlertContractError
from alerting.testing import make_alert
from infra.errors import TxmonError


def _fields(**overrides):
    data = json.loads(to_json(make_alert(1)))
    data.update(overrides)
    return data


def test_alert_id_is_a_uuid5_of_the_txn_id_so_replays_never_duplicate():
    a, b = make_alert(1), make_alert(1, created_at=datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert a.alert_id == b.alert_id == alert_id_for("TXNT000000000001")
    assert a.alert_id.version == 5
    assert make_alert(2).alert_id != a.alert_id


def test_exact_wire_format_and_round_trip():
    alert = make_alert(7)
    raw = to_json(alert)
    assert raw.startswith(b'{"schema_version":1,"alert_id":"')
    assert b'"created_at":"2026-01-05T03:30:07.800000Z","event_time":"2026-01-05T03:30:07Z"' in raw
    assert from_json(raw) == alert
    assert to_json(from_json(raw)) == raw  # same alert, same bytes
    assert kafka_key(alert) == b"500000000007"


def test_optional_parties_are_omitted_on_the_wire():
    alert = make_alert(3, payer_vpa=None, payee_account=None, payee_vpa=None)
    data = json.loads(to_json(alert))
    assert "payer_vpa" not in data and "payee_account" not in data and "payee_vpa" not in data


@pytest.mark.parametrize("overrides, field", [
    ({"alert_id": str(uuid.uuid4())}, "alert_id must be alert_id_for(txn_id)"),
    ({"risk_score": 101}, "risk_score"),
    ({"decision": "ALLOW"}, "decision"),
    ({"severity": "URGENT"}, "severity"),
    ({"reasons": []}, "reasons"),
    ({"amount_paise": 0}, "amount_paise"),
    ({"amount_paise": 12.5}, "amount_paise"),
    ({"payer_account": "12AB"}, "payer_account"),
    ({"payer_vpa": "no-handle"}, "payer_vpa"),
    ({"event_time": "2026-01-05T03:30:00"}, "no UTC offset"),
    ({"schema_version": 2}, "schema_version"),
    ({"unexpected": 1}, "unexpected"),
    ({"channel": "CHEQUE"}, "channel"),
])
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
    assert alert.event_time == datetime(2026, 1, 5, 19, 15, tzinfo=timezone.utc)
    assert alert_day(alert).isoformat() == "2026-01-06"


def test_primary_reason_is_the_largest_contribution_first_on_ties():
    reasons = [{"code": "A", "description": "a", "contribution": 0.2},
               {"code": "B", "description": "b", "contribution": 0.5},
               {"code": "C", "description": "c", "contribution": 0.5}]
    assert make_alert(1, reasons=reasons).primary_reason.code == "B"


def test_cassandra_row_round_trip_with_naive_driver_times():
    alert = make_alert(4)
    row = alert_row(alert)
    assert row["reason_codes"] == ["AMOUNT_SPIKE", "NEW_PAYEE_VPA"]
    # The driver hands timestamps back naive (UTC) and dates as its own type: mimic it.
    back = {**row, "created_at": row["created_at"].replace(tzinfo=None),
            "event_time": row["event_time"].replace(tzinfo=None)}
    assert alert_from_row(back) == alert


def test_alert_is_frozen():
    with pytest.raises(Exception):
        make_alert(1).risk_score = 5  # type: ignore[misc]
    assert isinstance(make_alert(1), Alert)
