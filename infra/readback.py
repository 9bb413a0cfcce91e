"""Reading back what the pipeline wrote: used by the demo, the benchmark and tests."""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence


def kafka_end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Next offset to be written, per partition (what a consumer would reach at the end)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="txmon-readback")
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def count_landed(session, txn_ids: Sequence[str], table: str = "transactions", chunk: int = 100) -> int:
    """How many of these txn_ids have a row (point lookups by partition key, concurrently)."""
    from cassandra.concurrent import execute_concurrent_with_args

    if not txn_ids:
        return 0
    stmt = session.prepare(f"SELECT txn_id FROM {table} WHERE txn_id IN ?")
    args = [(list(txn_ids[i:i + chunk]),) for i in range(0, len(txn_ids), chunk)]
    results = execute_concurrent_with_args(session, stmt, args, concurrency=32, raise_on_first_error=True)
    return sum(len(list(r.result_or_exc)) for r in results)


def dead_letters_since(session, topic: str, start_offsets: dict[int, int]) -> Counter:
    """Dead-letter reasons for records of ``topic`` at or after the given offsets."""
    stmt = session.prepare(
        "SELECT reason FROM dead_letters WHERE topic = ? AND kafka_partition = ? AND kafka_offset >= ?"
    )
    reasons: Counter = Counter()
    for partition, offset in start_offsets.items():
        for row in session.execute(stmt, (topic, partition, offset)):
            reasons[row.reason] += 1
    return reasons


def account_aggregates(session, accounts: Iterable[str], window_kind: str) -> list:
    """Latest window rows of each account for one window kind, newest first."""
    stmt = session.prepare(
        "SELECT payer_account, window_start, window_end, txn_count, total_paise, max_paise, distinct_payees "
        "FROM account_aggregates WHERE payer_account = ? AND window_kind = ? LIMIT 1"
    )
    rows = []
    for account in accounts:
        rows.extend(session.execute(stmt, (account, window_kind)))
    return rows
