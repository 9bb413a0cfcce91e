"""The console's reads that must stay bounded, on the real Cassandra: an account's recent
transactions (account_transactions, the head of two months whatever the history) and a
case's history and a day's audit (a page of the newest actions, older ones by page)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta


def test_recent_transactions_are_the_newest_up_to_the_alert_from_two_months_at_most(cassandra_session):
    from txmon.infra import statements as cql
    from txmon.infra.readback import account_transactions, txn_month

    account = f"7{uuid.uuid4().int % 10**11:011d}"
    insert = cassandra_session.prepare(cql.ACCOUNT_TXN_INSERT)
    times = (
        [datetime(2026, 10, d, 9, 0) for d in range(1, 11)]  # naive UTC, as stored
        + [datetime(2026, 11, d, 9, 0) for d in range(1, 31)]
        + [datetime(2026, 12, d, 9, 0) for d in range(1, 6)]
    )
    ids = {t: f"TXNRECENT{account}{t:%m%d}" for t in times}
    for t in times:
        cassandra_session.execute(
            insert, (account, txn_month(t), t, ids[t], 1_000, "UPI", "P2P", "payee@ybl", 10, "APPROVE")
        )
    until = datetime(2026, 12, 3, 12, 0)
    newest_first = sorted((t for t in times if t <= until), reverse=True)

    got = account_transactions(cassandra_session, account, until, limit=20)
    assert [r.txn_id for r in got] == [ids[t] for t in newest_first[:20]]  # 3 of December, 17 of November
    assert got[0].event_time == datetime(2026, 12, 3, 9, 0) and got[0].payee_key == "payee@ybl"

    # A limit the two months cannot fill: all of December up to the alert and all of
    # November, and nothing of October (two partitions read, however long the history).
    wide = account_transactions(cassandra_session, account, until, limit=100)
    assert [r.txn_id for r in wide] == [ids[t] for t in newest_first if t.month in (11, 12)]
    # Nothing after the alert's instant, even within its own month.
    assert all(r.event_time <= until for r in wide)
    # A January alert reads January and December, across the year.
    january = account_transactions(cassandra_session, account, datetime(2027, 1, 2), limit=100)
    assert [r.txn_id for r in january] == [ids[t] for t in sorted(times, reverse=True) if t.month == 12]


def test_a_case_history_is_read_a_page_at_a_time_newest_page_first(services, cassandra_session):
    from txmon.alerting.contract import build_alert
    from txmon.alerting.store import AlertStore
    from txmon.infra.masking import pii_token_key
    from txmon.webapp.console import queries
    from txmon.webapp.console.store import ConsoleStore

    now = datetime.now(UTC)
    alert = build_alert(
        key=pii_token_key(services.state_path),
        txn_id=f"TXNHISTORY{uuid.uuid4().hex[:12]}",
        created_at=now,
        event_time=now - timedelta(minutes=1),
        payer_account="501234567891",
        payee_vpa="busy.case@ybl",
        amount_paise=123_400,
        channel="UPI",
        txn_type="P2M",
        risk_score=90,
        decision="REVIEW",
        severity="HIGH",
        reasons=[{"code": "HISTORY_TEST", "description": "raised by the history test", "contribution": 1.0}],
        model_version="test",
        rules_version="test",
    )
    alerts, console = AlertStore(cassandra_session), ConsoleStore(cassandra_session)
    alerts.save_alert(alert)
    total = queries.HISTORY_PAGE + 30
    for n in range(total):
        console.record(alert.alert_id, "alice", "analyst", "comment", {"text": f"note {n}"}, now)

    first = queries.case_view(alerts, console, alert.alert_id)
    assert first is not None
    texts = [a.detail["text"] for a in first.actions]
    assert texts == [f"note {n}" for n in range(30, total)]  # the newest page, oldest first
    assert first.older_actions == first.actions[0].stamp

    older = queries.case_view(alerts, console, alert.alert_id, actions_before=first.older_actions)
    assert older is not None
    assert [a.detail["text"] for a in older.actions] == [f"note {n}" for n in range(30)]
    assert older.older_actions is None  # the first action reached: no further page

    # The day's audit holds the same actions; a read takes the newest `limit` of them.
    day = console.audit_day(now.date(), limit=10)
    assert len(day) == 10
    assert next(a.detail["text"] for a in day if a.alert_id == alert.alert_id) == f"note {total - 1}"
