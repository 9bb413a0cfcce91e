"""The dashboard's counts per IST hour, written by the real stream (console_hourly,
infra/hourly_counts.py), equal a direct count over scored_transactions and the alerts,
and stay equal after Spark replays a micro-batch (no double count)."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from datetime import UTC, datetime

from tests.integration.streams import stream_options, stream_topics

EVENTS = 1_200
TABLES = (
    "console_hourly",
    "scored_transactions",
    "alerts",
    "alerts_by_day",
    "alerts_by_rank",
    "alerts_by_party",
    "feature_profiles",
)


def _run(spark, settings, opts) -> list:
    from txmon.spark_jobs.transactions_stream import start_all

    queries = start_all(spark, settings, opts)
    for q in queries:
        q.awaitTermination(timeout=900)
        assert q.exception() is None, q.exception()
    return queries


def _direct(session) -> dict:
    """What the dashboard must show, counted from the per-row tables themselves."""
    scored = list(session.execute("SELECT decision, model_version FROM scored_transactions", timeout=120))
    rules: Counter[str] = Counter()
    for r in session.execute("SELECT reason_codes FROM alerts", timeout=120):
        rules.update(r.reason_codes or [])
    return {
        "total": len(scored),
        "decisions": Counter(r.decision for r in scored),
        "models": Counter(r.model_version for r in scored if r.model_version),
        "rules": rules,
    }


def _without_newest(counts: str) -> dict:
    c = json.loads(counts)
    c.pop("newest_alert")
    return c


def _newest_per_hour(rows) -> dict:
    """The newest alert creation per IST hour, over the queries and partitions' rows."""
    out: dict = {}
    for hour, _, _, counts in rows:
        newest = json.loads(counts)["newest_alert"]
        if newest is not None:  # Cassandra keeps the alert's creation to the millisecond
            out[hour] = max(out.get(hour, ""), newest[:23])
    return out


def _newest_alert_per_hour(session) -> dict:
    from txmon.infra.hourly_counts import hour_of

    out: dict = {}
    for r in session.execute("SELECT event_time, created_at FROM alerts", timeout=120):
        hour = hour_of(r.event_time).replace(tzinfo=None)
        out[hour] = max(out.get(hour, ""), r.created_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:23])
    return out


def _dashboard(services, session, topic: str):
    from txmon.alerting.store import AlertStore
    from txmon.webapp.console import dashboard
    from txmon.webapp.console.store import ConsoleStore

    return dashboard.build(AlertStore(session), ConsoleStore(session), services, topic, 24 * 7, datetime.now(UTC))


def _assert_equal(d, direct: dict, events: int) -> None:
    assert d.total == direct["total"] == events
    assert d.decisions == dict(direct["decisions"])
    assert d.alerts == direct["decisions"]["REVIEW"] + direct["decisions"]["BLOCK"] > 0
    assert d.models == dict(direct["models"])
    assert d.rules and len(d.rules) == min(10, len(direct["rules"]))
    assert all(direct["rules"][code] == n for code, n in d.rules)
    assert [n for _, n in d.rules] == [n for _, n in direct["rules"].most_common(len(d.rules))]


def test_dashboard_counts_equal_a_direct_count_also_after_a_replayed_micro_batch(
    services, spark, cassandra_session, tmp_path
):
    from txmon.ingestion.producer import TransactionProducer
    from txmon.ingestion.simulate import SimulateOptions, simulator_for

    names = stream_topics(services, f"hourly_{zlib.crc32(str(tmp_path).encode()):x}")
    for table in TABLES:  # this keyspace's counts and rows are this run's only
        cassandra_session.execute(f"TRUNCATE {table}", timeout=120)
    seed = 7 + zlib.crc32(str(tmp_path).encode())
    sim = simulator_for(
        SimulateOptions(seed=seed, count=EVENTS, rate=None, fraud_rate=0.1, n_customers=200, live=True, progress=False)
    )
    producer = TransactionProducer(services, topic=names["tx"], labels_topic=names["labels"])
    for item in sim.generate(EVENTS):
        producer.send_event(item.event)
    producer.close()
    # Several micro-batches, so the replayed one is not the whole run.
    opts = stream_options(services, names, tmp_path, available_now=True, max_offsets_per_trigger=400)
    _run(spark, services, opts)

    direct = _direct(cassandra_session)
    _assert_equal(_dashboard(services, cassandra_session, names["tx"]), direct, EVENTS)
    stored = sorted(tuple(r) for r in cassandra_session.execute("SELECT hour, query, part, counts FROM console_hourly"))
    assert stored

    # Spark replays a micro-batch whose commit is missing (a crash between its writes and
    # its commit): the same offsets, the same rows, the same partitions.
    commits = tmp_path / "ckpt" / "ingest" / "commits"
    last = max(int(p.name) for p in commits.iterdir() if p.name.isdigit())
    assert last >= 2
    for name in (str(last), f".{last}.crc"):
        (commits / name).unlink(missing_ok=True)
    queries = _run(spark, services, opts)
    ingest = next(q for q in queries if q.name.startswith("ingest"))
    replayed = [p for p in ingest.recentProgress if p["batchId"] == last]
    assert replayed and replayed[0]["numInputRows"] > 0, ingest.recentProgress

    after = sorted(tuple(r) for r in cassandra_session.execute("SELECT hour, query, part, counts FROM console_hourly"))
    # The counts are the first run's exactly. The replayed micro-batch raises its alerts
    # again with a new creation time (the alerts rows are overwritten with it), so its
    # hours' newest alert may move, and must then equal the alerts table's own newest.
    assert [(*r[:3], _without_newest(r[3])) for r in after] == [(*r[:3], _without_newest(r[3])) for r in stored]
    assert _newest_per_hour(after) == _newest_alert_per_hour(cassandra_session)
    _assert_equal(_dashboard(services, cassandra_session, names["tx"]), _direct(cassandra_session), EVENTS)


def test_the_queue_pages_through_alerts_by_rank_in_order_with_filters_and_case_states(services, cassandra_session):
    """The queue's pages, read from the head of each day's alerts_by_rank partition, are
    exactly the matching alerts sorted by risk, severity and time, closed cases left out
    of the active queue; a page that does not reach the end says "at least"."""
    import random
    from datetime import timedelta

    from txmon.alerting.contract import DAY_TZ, alert_day, build_alert
    from txmon.alerting.store import AlertStore
    from txmon.infra.masking import pii_token_key
    from txmon.webapp.console import queries
    from txmon.webapp.console.store import ConsoleStore

    for table in (
        "alerts",
        "alerts_by_day",
        "alerts_by_rank",
        "alerts_by_party",
        "case_state",
        "console_audit",
        "console_hourly",
    ):
        cassandra_session.execute(f"TRUNCATE {table}", timeout=120)
    rng = random.Random(26)
    key = pii_token_key(services.state_path)
    store, console = AlertStore(cassandra_session), ConsoleStore(cassandra_session)
    now = datetime.now(UTC)
    made = []
    for i in range(80):
        t = now - timedelta(hours=rng.uniform(0, 70))
        alert = build_alert(
            key=key,
            txn_id=f"TXNQUEUE{i:06d}",
            created_at=t,
            event_time=t,
            payer_account=f"{rng.randrange(10**11, 10**12)}",
            payee_vpa=f"shop{rng.randrange(5)}@ybl",
            amount_paise=rng.randrange(100, 10**6),
            channel=rng.choice(("UPI", "IMPS")),
            txn_type="P2M",
            risk_score=rng.randrange(60, 70),  # few values: ties broken by severity, then time
            decision=rng.choice(("REVIEW", "BLOCK")),
            severity=rng.choice(("MEDIUM", "HIGH", "CRITICAL")),
            reasons=[{"code": rng.choice(("VELOCITY_BURST", "NEW_PAYEE")), "description": "t", "contribution": 1.0}],
            model_version="t",
            rules_version="t",
        )
        store.save_alert(alert)
        made.append(alert)
    closed = {a.alert_id for a in made[:10]}
    for alert_id in closed:  # as the console closes a case: its state, and the audit row the closed view finds it by
        console.put_case(alert_id, "closed", "alice", "legitimate", now, "alice")
        console.record(alert_id, "alice", "analyst", "disposition", {"disposition": "legitimate"}, now)

    def order(a):
        return (-a.risk_score, -queries.SEVERITY_RANK[a.severity.value], -a.event_time.timestamp())

    today = now.astimezone(DAY_TZ).date()
    in_range = [a for a in made if alert_day(a) >= today - timedelta(days=6)]
    active = sorted((a for a in in_range if a.alert_id not in closed), key=order)

    def ids(page):
        return [r["alert_id"] for r in page.rows]

    first = queries.queue(store, console, queries.QueueFilter.parse({}, today))
    assert ids(first) == [str(a.alert_id) for a in active[:25]]
    assert first.total is None and first.at_least > 25 and first.pages == 2
    last_page = -(-len(active) // 25)
    end = queries.queue(store, console, queries.QueueFilter.parse({"page": str(last_page)}, today))
    assert ids(end) == [str(a.alert_id) for a in active[(last_page - 1) * 25 :]]
    assert end.total == len(active) and end.pages == last_page
    upi = [a for a in active if a.channel.value == "UPI" and "NEW_PAYEE" in a.reason_codes]
    filtered = queries.queue(store, console, queries.QueueFilter.parse({"channel": "UPI", "rule": "NEW_PAYEE"}, today))
    assert ids(filtered) == [str(a.alert_id) for a in upi[:25]]
    shut = queries.queue(store, console, queries.QueueFilter.parse({"status": "closed"}, today))
    assert set(ids(shut)) == {str(a.alert_id) for a in in_range if a.alert_id in closed}
    assert all(r["status"] == "closed" for r in shut.rows)
