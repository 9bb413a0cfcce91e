"""One deliberately broken record per dead-letter reason, made from a valid event.

Used by the demo (to show the dead-letter path working) and by the tests (to prove
every class of bad input is dead-lettered with the right reason).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from ingestion.events import TransactionEvent, to_json


def bad_records(event: TransactionEvent, now: datetime | None = None) -> dict[str, bytes]:
    """reason code -> raw Kafka value that the contract rejects with exactly that reason.

    >>> from ingestion.simulator import Simulator, SimulatorConfig
    >>> ev = next(Simulator(SimulatorConfig(n_customers=50, n_merchants=20), seed=1).generate(1)).event
    >>> sorted(bad_records(ev))[:3]
    ['absurd_amount', 'future_timestamp', 'invalid_field']
    """
    now = now or datetime.now(timezone.utc)
    base = json.loads(to_json(event))

    def variant(txn_suffix: str, **changes) -> bytes:
        data = {**base, "txn_id": f"{base['txn_id'][:50]}-{txn_suffix}"}
        for key, value in changes.items():
            if value is _DROP:
                data.pop(key, None)
            else:
                data[key] = value
        return json.dumps(data).encode()

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
    }


_DROP = object()
