"""Reading back what the pipeline wrote: used by the demo, the benchmark and tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from txmon.infra.kafka_client import client_config
from txmon.models.features import AGGREGATE_WINDOWS_S, SLIDING_HOUR, sliding_hours


def kafka_end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Next offset to be written, per partition (what a consumer would reach at the end)."""
    # Kafka and Cassandra drivers on first use: readers of one store do not load the other's driver.
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="txmon-readback", **client_config()
    )
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
    args = [(list(txn_ids[i : i + chunk]),) for i in range(0, len(txn_ids), chunk)]
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


class AccountWindow(NamedTuple):
    """One per-account window, stored (tumbling) or derived (sliding hour)."""

    payer_account: str
    window_kind: str
    window_start: datetime  # naive UTC, as the Cassandra driver returns timestamps
    window_end: datetime
    txn_count: int
    total_paise: int
    max_paise: int
    distinct_payees: int


_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 - naive UTC, as the Cassandra driver returns timestamps
_US = timedelta(microseconds=1)


def account_windows(session, account: str, window_kind: str, since: datetime | None = None) -> list[AccountWindow]:
    """Every window of one account and kind, newest first (those starting at or after
    ``since``, naive UTC, if given). Stored kinds (``tumble_1m``, ``tumble_5m``) are read
    as they are; ``slide_1h`` is derived from the ``tumble_5m`` rows
    (:func:`models.features.sliding_hours`)."""
    derived, size_s, bucket_kind = SLIDING_HOUR
    if window_kind not in (*AGGREGATE_WINDOWS_S, derived):
        raise ValueError(f"unknown window kind {window_kind!r}: one of {', '.join((*AGGREGATE_WINDOWS_S, derived))}")
    stored = bucket_kind if window_kind == derived else window_kind
    lookback = timedelta(seconds=size_s - AGGREGATE_WINDOWS_S[bucket_kind]) if window_kind == derived else timedelta(0)
    stmt = session.prepare(
        "SELECT window_start, window_end, txn_count, total_paise, max_paise, distinct_payees, payees "
        "FROM account_aggregates WHERE payer_account = ? AND window_kind = ? AND window_start >= ?"
    )
    rows = list(session.execute(stmt, (account, stored, (since - lookback) if since else _EPOCH)))
    if window_kind != derived:
        return [
            AccountWindow(
                account,
                window_kind,
                r.window_start,
                r.window_end,
                r.txn_count,
                r.total_paise,
                r.max_paise,
                r.distinct_payees,
            )
            for r in rows
        ]
    hours = sliding_hours(
        [((r.window_start - _EPOCH) // _US, r.txn_count, r.total_paise, r.max_paise, r.payees) for r in rows]
    )
    out = [
        AccountWindow(account, derived, _EPOCH + start * _US, _EPOCH + end * _US, *values)
        for _, start, end, *values in hours
    ]
    return [w for w in out if since is None or w.window_start >= since]


def account_aggregates(session, accounts: Iterable[str], window_kind: str) -> list[AccountWindow]:
    """Each account's latest window of one kind: the newest stored row, or for
    ``slide_1h`` the hour that ends with the account's newest 5-minute bucket."""
    derived, size_s, bucket_kind = SLIDING_HOUR
    newest = session.prepare(
        "SELECT window_start FROM account_aggregates WHERE payer_account = ? AND window_kind = ? LIMIT 1"
    )
    out: list[AccountWindow] = []
    for account in accounts:
        row = session.execute(newest, (account, bucket_kind if window_kind == derived else window_kind)).one()
        if row is None:
            continue
        if window_kind == derived:
            end = row.window_start + timedelta(seconds=AGGREGATE_WINDOWS_S[bucket_kind])
            out.extend(
                w
                for w in account_windows(session, account, derived, since=end - timedelta(seconds=size_s))
                if w.window_end == end
            )
        else:
            out.extend(account_windows(session, account, window_kind, since=row.window_start))
    return out
