"""Hostile records through the real stream: the query never stops, every bad record is
dead-lettered with its reason, every valid event lands and is scored and counted once.

The hostile corpus (ingestion/bad_records.hostile_records) is JSON, encoding, type, range,
size and timestamp tricks nobody's producer here writes; it is mixed into simulated
traffic together with re-sent and conflicting duplicates and broken labels, and the stream
runs continuously (not ``availableNow``) so that a record that failed a micro-batch would
show as a dead query.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from txmon.infra.readback import count_landed, dead_letters_since
from txmon.ingestion.bad_records import hostile_records
from txmon.ingestion.events import kafka_key, to_json
from txmon.ingestion.producer import TransactionProducer, clamp_future
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.spark_jobs.transactions_stream import StreamOptions, start_all

N_VALID = 1200


@pytest.fixture
def topics(services, unique_name):
    from txmon.infra.services.kafka import ensure_topics

    name = unique_name("poison")
    names = {"tx": name, "dlq": f"{name}_dlq", "labels": f"{name}_labels", "alerts": f"{name}_alerts"}
    ensure_topics(services.kafka.bootstrap, list(names.values()), services.kafka.partitions)
    return names


def _wait_for(predicate, timeout_s: float, queries, what: str):
    from txmon.infra.process import wait_until

    def ready():
        for q in queries:
            assert q.exception() is None, f"{q.name} stopped: {q.exception()}"
        return predicate()

    assert wait_until(ready, timeout_s, interval=1.0), f"timed out waiting for {what}"


def test_hostile_records_never_stop_the_stream(services, spark, topics, cassandra_session, tmp_path):
    now = datetime.now(UTC)
    sim = simulator_for(
        SimulateOptions(
            seed=zlib.crc32(topics["tx"].encode()), count=N_VALID, rate=None, n_customers=300, progress=False
        )
    )
    events = [clamp_future(item.event, now)[0] for item in sim.generate(N_VALID)]
    # A valid event whose text fields carry CQL and markup: stored verbatim (prepared statements).
    sneaky = events[7].model_copy(update={"device_id": "x');DROP/**/TABLE/**/transactions;--<script>"})
    events[7] = sneaky

    producer = TransactionProducer(services, topic=topics["tx"], labels_topic=topics["labels"])
    expected_bad: Counter = Counter()
    hostile = hostile_records(events[0])
    assert len(hostile) >= 40
    step = N_VALID // len(hostile)
    for i, event in enumerate(events):
        producer.send_event(event)
        if i % step == 0 and i // step < len(hostile):
            _name, raw, reason = hostile[i // step]
            producer.send_raw(b"\xff\xfe hostile key" if i % 2 or raw is None else None, raw)
            expected_bad[reason] += 1
    # Re-sent identical events (a producer's retry, a file replayed twice): no-ops.
    for event in events[100:130]:
        producer.send_event(event)
    # The same txn_ids with other content: dead-lettered, the first version stands.
    changed = [e.model_copy(update={"amount_paise": e.amount_paise + 1}) for e in events[200:210]]
    for event in changed:
        producer.send_raw(kafka_key(event), to_json(event))
    expected_bad["conflicting_duplicate"] += len(changed)
    # Labels: valid ones for a few events, and broken ones the labels query must dead-letter.
    good_labels: list[dict[str, Any]] = [
        {"txn_id": e.txn_id, "is_fraud": True, "scenario": "test", "label_time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        for e in events[300:305]
    ]
    for label in good_labels:
        producer.send_label(label["txn_id"].encode(), json.dumps(label).encode())
    bad_labels = [
        b"not json",
        b"\xff\xff",
        json.dumps({**good_labels[0], "label_time": "soon"}).encode(),
        json.dumps({**good_labels[0], "label_time": "0001-01-01T00:00:00+05:30"}).encode(),
        json.dumps({**good_labels[0], "txn_id": None}).encode(),
        b"[" * 50_000,
    ]
    for raw in bad_labels:
        producer.send_label(b"bad", raw)
    producer.close()
    assert producer.summary.failed == 0, producer.summary.errors

    opts = StreamOptions.from_settings(
        services,
        topic=topics["tx"],
        dlq_topic=topics["dlq"],
        labels_topic=topics["labels"],
        alerts_topic=topics["alerts"],
        checkpoint_dir=str(tmp_path / "ckpt"),
        trigger_seconds=1.0,
        secondary_trigger_seconds=1.0,
        max_offsets_per_trigger=400,
    )
    queries = start_all(spark, services, opts)
    try:
        ids = [e.txn_id for e in events]
        zero = dict.fromkeys(range(services.kafka.partitions), 0)
        _wait_for(
            lambda: (
                count_landed(cassandra_session, ids, "scored_transactions") == N_VALID
                and sum(dead_letters_since(cassandra_session, topics["tx"], zero).values())
                >= sum(expected_bad.values())
                and sum(dead_letters_since(cassandra_session, topics["labels"], zero).values()) >= len(bad_labels)
            ),
            300,
            queries,
            "every record judged",
        )
        time.sleep(3)  # a few more micro-batches: nothing further may arrive or fail
        assert all(q.isActive and q.exception() is None for q in queries)

        assert count_landed(cassandra_session, ids) == N_VALID
        assert count_landed(cassandra_session, ids, "scored_transactions") == N_VALID
        assert dead_letters_since(cassandra_session, topics["tx"], zero) == expected_bad
        label_reasons = dead_letters_since(cassandra_session, topics["labels"], zero)
        assert sum(label_reasons.values()) == len(bad_labels) and set(label_reasons) <= {
            "malformed_json",
            "invalid_field",
            "wrong_type",
            "missing_field",
        }
        assert count_landed(cassandra_session, [lab["txn_id"] for lab in good_labels], "labels") == len(good_labels)

        # The first version of a conflicting txn_id stands; the sneaky text is stored verbatim.
        stmt = cassandra_session.prepare("SELECT amount_paise, device_id FROM transactions WHERE txn_id = ?")
        for original in events[200:210]:
            assert cassandra_session.execute(stmt, (original.txn_id,)).one().amount_paise == original.amount_paise
        assert cassandra_session.execute(stmt, (sneaky.txn_id,)).one().device_id == sneaky.device_id

        # Windows count each valid event once: duplicates and conflicts are never counted.
        per_account = Counter(e.payer.account_number for e in events)
        windows = cassandra_session.prepare(
            "SELECT txn_count FROM account_aggregates WHERE payer_account = ? AND window_kind = 'tumble_1m'"
        )
        duplicated = {e.payer.account_number for e in events[100:130] + events[200:210]}
        for account in duplicated | {a for a, _ in per_account.most_common(10)}:
            assert sum(r.txn_count for r in cassandra_session.execute(windows, (account,))) == per_account[account]

        # Each dead letter keeps a storable payload and a detail naming what is wrong.
        rows = list(
            cassandra_session.execute(
                "SELECT reason, detail, raw_value FROM dead_letters WHERE topic = %s AND kafka_partition IN (0,1,2,3)",
                (topics["tx"],),
            )
        )
        assert all(r.detail for r in rows)
        conflict = next(r for r in rows if r.reason == "conflicting_duplicate")
        assert "amount_paise" in conflict.detail and "first version stands" in conflict.detail
    finally:
        for q in queries:
            q.stop()
