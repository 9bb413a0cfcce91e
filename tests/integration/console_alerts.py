"""Test helper: an alert made by hand for a console test, as the stream would raise it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from txmon.alerting.contract import Alert, build_alert
from txmon.infra.masking import pii_token_key


def hand_made_alert(settings: Any, test: str, at: datetime, **fields: Any) -> Alert:
    """A REVIEW (HIGH, risk 90) UPI P2M payment made and alerted at ``at``, with a txn id
    of its own and a reason naming ``test`` (one word); ``fields`` replace any of
    :func:`build_alert`'s arguments."""
    name = test.upper()
    values: dict[str, Any] = {
        "key": pii_token_key(settings.state_path),
        "txn_id": f"TXN{name}{uuid.uuid4().hex[:12]}",
        "created_at": at,
        "event_time": at,
        "payer_account": "501234567890",
        "payee_vpa": f"{test}.case@ybl",
        "amount_paise": 10_000,
        "channel": "UPI",
        "txn_type": "P2M",
        "risk_score": 90,
        "decision": "REVIEW",
        "severity": "HIGH",
        "reasons": [{"code": f"{name}_TEST", "description": f"raised by the {test} test", "contribution": 1.0}],
        "model_version": "test",
        "rules_version": "test",
    }
    return build_alert(**(values | fields))
