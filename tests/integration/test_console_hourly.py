"""The dashboard's counts per IST hour, written by the real stream (console_hourly,
infra/hourly_counts.py), equal a direct count over scored_transactions and the alerts,
and stay equal after Spark replays a micro-batch (no double count)."""

from __future__ import annotations

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

    assert sorted(
        tuple(r) for r in cassandra_session.execute("SELECT hour, query, part, counts FROM console_hourly")
    ) == (stored)
    _assert_equal(_dashboard(services, cassandra_session, names["tx"]), _direct(cassandra_session), EVENTS)
