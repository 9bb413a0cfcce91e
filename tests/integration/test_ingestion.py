"""Producer, simulator and replay against the real Kafka."""

from __future__ import annotations

import json
from collections import defaultdict

from txmon.infra.kafka_client import client_config
from txmon.infra.settings import PROJECT_ROOT
from txmon.ingestion.events import validate_event
from txmon.ingestion.simulate import SimulateOptions, run_simulation


def _consume(settings, topic, timeout_ms=8000):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=timeout_ms,
        group_id=f"read-{topic}",
        **client_config(settings),
    )
    records = list(consumer)
    consumer.close()
    return records


def test_simulated_traffic_keys_by_payer_and_labels_travel_separately(services, unique_name, tmp_path):
    from txmon.infra.services.kafka import ensure_topics

    topic, labels_topic = unique_name("sim"), unique_name("labels")
    ensure_topics(services.kafka.bootstrap, [topic, labels_topic], services.kafka.partitions)
    labels_file = tmp_path / "labels.jsonl"
    opts = SimulateOptions(
        seed=5,
        count=3000,
        rate=None,
        fraud_rate=0.05,
        n_customers=500,
        label_delay_seconds=5,
        labels_file=labels_file,
        topic=topic,
        labels_topic=labels_topic,
        progress=False,
    )
    summary = run_simulation(services, opts)
    assert summary.sent == 3000 and summary.failed == 0

    records = _consume(services, topic)
    assert len(records) == 3000
    per_partition_accounts = defaultdict(set)
    for r in records:
        raw = json.loads(r.value)
        assert not {"is_fraud", "scenario", "label", "label_time"} & set(raw)  # no ground truth inside
        event = validate_event(r.value)
        assert r.key == event.payer.account_number.encode()
        per_partition_accounts[event.payer.account_number].add(r.partition)
    assert all(len(parts) == 1 for parts in per_partition_accounts.values())  # one account, one partition

    file_labels = [json.loads(line) for line in labels_file.read_text().splitlines()]
    assert len(file_labels) == 3000
    frauds = {lab["txn_id"] for lab in file_labels if lab["is_fraud"]}
    assert frauds  # short runs cut off slow scenarios, so only presence is checked here
    topic_labels = [json.loads(r.value) for r in _consume(services, labels_topic)]
    assert {lab["txn_id"] for lab in topic_labels} == frauds  # only fraud labels, each once
    assert len(topic_labels) == len(frauds)
    assert summary.labels_sent == len(frauds)


def test_replay_sends_mappable_rows_in_event_time_order_and_reports_the_rest(services, topic, tmp_path):
    from txmon.ingestion.producer import TransactionProducer
    from txmon.ingestion.replay import replay_file

    sample = PROJECT_ROOT / "ingestion" / "samples" / "card_transactions_sample.csv"
    producer = TransactionProducer(services, topic=topic)
    rejects = tmp_path / "rejects.csv"
    summary = replay_file(
        sample, PROJECT_ROOT / "config" / "replay" / "card_transactions.yaml", producer=producer, rejects_path=rejects
    )
    producer.close()
    assert summary.events_sent == 196 and sum(summary.rejected_by_reason.values()) == 4
    assert len(rejects.read_text().strip().splitlines()) == 1 + 4

    records = _consume(services, topic)
    assert len(records) == 196
    by_partition = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition[r.partition].append(validate_event(r.value).event_time)
    for times in by_partition.values():
        assert times == sorted(times)  # event-time order within each partition


def test_an_oversize_record_goes_to_the_dead_letter_topic_and_the_rest_is_delivered(services, unique_name, tmp_path):
    """A record over the broker's size limit never stops or poisons a run: the producer
    dead-letters it (reason, cut payload) and delivers everything else, counted exactly."""
    from txmon.infra.services.kafka import ensure_topics
    from txmon.ingestion.producer import MAX_RECORD_BYTES, OVERSIZE_KEEP_BYTES, TransactionProducer

    topic, dlq = unique_name("big"), unique_name("big_dlq")
    ensure_topics(services.kafka.bootstrap, [topic, dlq], services.kafka.partitions)
    producer = TransactionProducer(services, topic=topic, dlq_topic=dlq, undelivered_dir=tmp_path)
    for i in range(50):
        producer.send_raw(b"acct", json.dumps({"n": i}).encode())
    producer.send_raw(b"acct", b'{"city":"' + b"x" * (MAX_RECORD_BYTES + 10) + b'"}')
    summary = producer.close()

    assert (summary.sent, summary.failed, summary.oversize) == (50, 0, 1)
    assert summary.undelivered_path is None and not list(tmp_path.iterdir())
    assert sorted(json.loads(r.value)["n"] for r in _consume(services, topic)) == list(range(50))
    (letter,) = [json.loads(r.value) for r in _consume(services, dlq)]
    assert letter["reason"] == "oversize" and letter["topic"] == topic
    assert letter["raw_value"] == '{"city":"' + "x" * (OVERSIZE_KEEP_BYTES - 9)
    assert f"{MAX_RECORD_BYTES:,}-byte limit" in letter["detail"]
