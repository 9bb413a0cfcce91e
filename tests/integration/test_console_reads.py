"""The console's reads that must stay bounded, on the real Cassandra: an account's recent
transactions (account_transactions, the head of two months whatever the history), a
case's history and a day's audit (a page of the newest actions, older ones by page), the
dashboard's frauds caught (per IST day, exact through relabels and replays) and dead
letters (the window's newest), the labels to resend (the window's unpublished claims);
and a console session's end at its expiry."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.integration.console_alerts import hand_made_alert
from txmon.infra.process import wait_until
from txmon.ingestion.events import IST


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
    from txmon.alerting.store import AlertStore
    from txmon.webapp.console import queries
    from txmon.webapp.console.store import ConsoleStore

    now = datetime.now(UTC)
    alert = hand_made_alert(
        services,
        "history",
        now,
        event_time=now - timedelta(minutes=1),
        payer_account="501234567891",
        payee_vpa="busy.case@ybl",
        amount_paise=123_400,
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


# ------------------------------------------------------------ frauds caught per day
_EXAMPLE = iter(range(10**6))
_RUN_DAY = date(1990, 1, 1) + timedelta(days=uuid.uuid4().int % 20_000 * 40)  # this run's own days


def _labels_batches():
    """Label batches over six transactions: each its labels (txn index, is_fraud,
    scenario), the IST day offset it is received on, and whether it is replayed."""
    label = st.tuples(st.integers(0, 5), st.booleans(), st.sampled_from(["mule", "takeover", None]))
    batch = st.tuples(st.lists(label, min_size=1, max_size=6), st.integers(0, 2), st.sampled_from(["once", "replay"]))
    return st.lists(batch, min_size=1, max_size=5)


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=_labels_batches(),
    decisions=st.lists(st.sampled_from(["BLOCK", "REVIEW", "APPROVE", None]), min_size=6, max_size=6),
    scored_later=st.sets(st.integers(0, 5)),
)
def test_frauds_caught_equal_a_direct_count_through_relabels_and_replays(
    cassandra_session, batches, decisions, scored_later
):
    """The stream's path (fraud_label_days.record, then the labels write; a replayed
    micro-batch records again before or after its first write landed) and the
    dashboard's read agree with the latest label of each transaction and its decision,
    also for transactions scored only after their label came."""
    base = _RUN_DAY + timedelta(days=4 * next(_EXAMPLE))
    decisions = list(decisions)
    ids = [f"TXNCAUGHT{uuid.uuid4().hex[:12]}" for _ in range(6)]
    try:
        _caught_example(cassandra_session, base, ids, batches, decisions, scored_later)
    finally:  # other tests read labels and scored rows: leave none of these behind
        for table in ("labels", "scored_transactions"):
            cassandra_session.execute(cassandra_session.prepare(f"DELETE FROM {table} WHERE txn_id IN ?"), (ids,))


def _caught_example(cassandra_session, base, ids, batches, decisions, scored_later) -> None:
    from txmon.infra import fraud_label_days as fld
    from txmon.spark_jobs.cassandra_sink import prepared

    write_label = cassandra_session.prepare(
        "INSERT INTO labels (txn_id, is_fraud, scenario, label_time, received_at) VALUES (?, ?, ?, ?, ?)"
    )
    score = cassandra_session.prepare("INSERT INTO scored_transactions (txn_id, decision) VALUES (?, ?)")
    for txn_id, decision in zip(ids, decisions):
        if decision is not None:
            cassandra_session.execute(score, (txn_id, decision))
    latest: dict[str, tuple[bool, str | None, datetime]] = {}
    tick = 0
    for labels, day, mode in batches:
        rows = {ids[i]: (fraud, scenario) for i, fraud, scenario in labels}  # the last per txn, as judged
        attempts = 2 if mode == "replay" else 1
        for attempt in range(attempts):
            tick += 1
            # Received in the IST day base + day (an hour in, then a minute a write).
            at = datetime.combine(base + timedelta(days=day), datetime.min.time(), IST).astimezone(UTC)
            at = (at + timedelta(hours=1, minutes=tick)).replace(tzinfo=None)
            fld.record(cassandra_session, prepared, [(t, f, s) for t, (f, s) in rows.items()], at)
            if attempt == 0 and attempts == 2 and tick % 2:
                continue  # the first attempt failed before its labels were written
            for t, (f, s) in rows.items():
                cassandra_session.execute(write_label, (t, f, s, at, at))
                latest[t] = (f, s, at)
    for i in scored_later:
        if decisions[i] is None:
            cassandra_session.execute(score, (ids[i], "REVIEW"))
            decisions[i] = "REVIEW"

    expected: dict[str, dict[str, int]] = {}
    for t, (fraud, scenario, _at) in latest.items():
        if not fraud:
            continue
        c = expected.setdefault(scenario or "unknown", {"frauds": 0, "flagged": 0, "unscored": 0})
        decision = decisions[ids.index(t)]
        if decision is None:
            c["unscored"] += 1
        else:
            c["frauds"] += 1
            c["flagged"] += decision in ("REVIEW", "BLOCK")
    since = datetime.combine(base, datetime.min.time(), IST)
    got, partial, days = fld.read(cassandra_session, prepared, since, since + timedelta(days=2, hours=23))
    assert not partial and days == (base, base + timedelta(days=2))
    assert {r["scenario"]: {k: r[k] for k in ("frauds", "flagged", "unscored")} for r in got} == expected
    # One row per fraud, however often it was labelled or replayed.
    stored = [
        r.txn_id
        for d in range(3)
        for r in cassandra_session.execute(
            "SELECT txn_id FROM fraud_labels_by_day WHERE day = %s", (base + timedelta(days=d),)
        )
    ]
    assert sorted(stored) == sorted(t for t, (fraud, _, _) in latest.items() if fraud)


def test_frauds_caught_say_when_the_unscored_checks_ran_out(cassandra_session):
    from txmon.infra import fraud_label_days as fld
    from txmon.spark_jobs.cassandra_sink import prepared

    day = _RUN_DAY - timedelta(days=1)
    at = datetime.combine(day, datetime.min.time(), IST) + timedelta(hours=2)
    ids = [f"TXNUNSCORED{uuid.uuid4().hex[:12]}" for _ in range(5)]
    fld.record(cassandra_session, prepared, [(t, True, "mule") for t in ids], at)
    score = cassandra_session.prepare("INSERT INTO scored_transactions (txn_id, decision) VALUES (?, ?)")
    for t in ids:  # every one scored after its label came
        cassandra_session.execute(score, (t, "BLOCK"))
    full, partial, days = fld.read(cassandra_session, prepared, at, at)
    assert days == (day, day)
    assert not partial and [(r["frauds"], r["flagged"], r["unscored"]) for r in full] == [(5, 5, 0)]
    short, partial, _ = fld.read(cassandra_session, prepared, at, at, checks=2)
    assert partial and [(r["frauds"], r["flagged"], r["unscored"]) for r in short] == [(2, 2, 3)]


def test_the_dashboards_dead_letters_are_the_windows_newest_and_say_when_there_are_more(cassandra_session):
    from txmon.webapp.console.dashboard import dead_letters

    topic = f"dlq_reads_{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC).replace(microsecond=0)
    insert = cassandra_session.prepare(
        "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, reason, landed_at) VALUES (?, ?, ?, ?, ?)"
    )
    landed = {  # partition -> reasons in offset order, landed a minute apart ending now
        0: ["old"] * 5 + ["invalid_json"] * 3 + ["missing_field"],
        1: ["invalid_json"] * 2,
    }
    for p, reasons in landed.items():
        for offset, reason in enumerate(reasons):
            at = now - timedelta(minutes=len(reasons) - 1 - offset)
            if reason == "old":
                at -= timedelta(days=3)
            cassandra_session.execute(insert, (topic, p, offset, reason, at.replace(tzinfo=None)))
    since = now - timedelta(hours=1)
    counts, partial = dead_letters(cassandra_session, topic, 3, since, limit=10)
    assert counts == {"invalid_json": 5, "missing_field": 1} and not partial
    # A page that ends inside the window: at least these, and it says so.
    counts, partial = dead_letters(cassandra_session, topic, 3, since, limit=2)
    assert counts == {"invalid_json": 3, "missing_field": 1} and partial
    # A page that reaches past the window's start: exact.
    counts, partial = dead_letters(cassandra_session, topic, 3, since, limit=6)
    assert counts == {"invalid_json": 5, "missing_field": 1} and not partial


def test_labels_to_resend_are_the_windows_unsent_dispositions_newest_first(services, cassandra_session):
    from txmon.alerting.store import AlertStore
    from txmon.webapp.console.cases import label_id_for, pending_labels
    from txmon.webapp.console.store import ConsoleStore, LabelClaim

    store, alerts = ConsoleStore(cassandra_session), AlertStore(cassandra_session)
    start = datetime.combine(_RUN_DAY - timedelta(days=5), datetime.min.time(), UTC)
    made: dict[str, uuid.UUID] = {}
    plan = [  # (name, hours after start, disposition, claimed, published)
        ("before-window", 1, "confirmed_fraud", True, False),
        ("published", 30, "confirmed_fraud", True, True),
        ("escalated", 31, "escalate", False, False),
        ("pending-old", 32, "legitimate", True, False),
        ("never-claimed", 40, "confirmed_fraud", False, False),  # stopped between audit and claim
        ("pending-new", 50, "confirmed_fraud", True, False),
    ]
    for name, hours, disposition, claimed, published in plan:
        at = start + timedelta(hours=hours)
        alert = hand_made_alert(services, "resend", at, payer_account="501234567892")
        alerts.save_alert(alert)
        made[name] = alert.alert_id
        store.record(alert.alert_id, "alice", "analyst", "disposition", {"disposition": disposition}, at)
        if claimed:
            fraud = disposition == "confirmed_fraud"
            store.claim_label(
                LabelClaim(
                    alert.alert_id, label_id_for(alert.alert_id), alert.txn_id, fraud,
                    "analyst" if fraud else None, at, "alice", None,
                )
            )  # fmt: skip
        if published:
            store.mark_published(alert.alert_id, at)
    since, until = start + timedelta(hours=24), start + timedelta(hours=60)
    claims, more = pending_labels(store, alerts, since, until, 10)
    assert [c.alert_id for c in claims] == [made["pending-new"], made["never-claimed"], made["pending-old"]]
    assert not more
    # The never-claimed disposition gets the claim its disposition would have made.
    late = claims[1]
    stored = alerts.load_alert(made["never-claimed"])
    assert stored is not None and (late.txn_id, late.is_fraud, late.scenario) == (stored.txn_id, True, "analyst")
    assert late.label_id == label_id_for(made["never-claimed"]) and late.published_at is None
    claims, more = pending_labels(store, alerts, since, until, 1)
    assert [c.alert_id for c in claims] == [made["pending-new"]] and more


def test_a_session_ends_at_its_expiry_and_its_row_with_it(cassandra_session):
    from txmon.webapp.console.store import ConsoleStore

    store = ConsoleStore(cassandra_session)
    token, now = uuid.uuid4().hex, datetime.now(UTC)
    store.put_session(token, "alice", "analyst", "csrf-token", now, timedelta(seconds=3))
    live = store.session_for(token, now + timedelta(seconds=2))
    assert live is not None and (live.username, live.role, live.csrf_token) == ("alice", "analyst", "csrf-token")
    assert store.session_for(token, now + timedelta(seconds=3)) is None  # expired, though the row is still there
    assert store.session_for(uuid.uuid4().hex, now) is None
    # The row's TTL removes it too: no session outlives its expiry in the table.
    assert wait_until(lambda: store.session_for(token, now) is None, 30, interval=0.5)
