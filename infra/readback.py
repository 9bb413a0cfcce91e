"""Reading back what the pipeline wrote: used by the demo, the benchmark and tests."""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from txmon.infra import statements as cql
from txmon.infra.cassandra_schema import prepared, rows_in
from txmon.infra.kafka_client import client_config
from txmon.models.features import AGGREGATE_WINDOWS_S, SLIDING_HOUR, sliding_hours


def kafka_end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Next offset to be written, per partition (what a consumer would reach at the end)."""
    # Kafka and Cassandra drivers on first use: readers of one store do not load the other's driver.
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="txmon-readback", **client_config()
    )
    try:
        return _end_offsets(consumer, topic)
    finally:
        consumer.close()


def _end_offsets(consumer, topic: str, timeout_ms: int | None = None) -> dict[int, int]:
    # Kafka's driver on first use, as above.
    from kafka import TopicPartition

    partitions = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    return {tp.partition: off for tp, off in consumer.end_offsets(tps, timeout_ms).items()}


class EndOffsetsReader:
    """:func:`kafka_end_offsets` for a caller that asks on every request (the console's
    dashboard): one consumer kept open between calls, under a lock (a consumer is not
    thread-safe). A consumer opened per call pays a connection, an API-version probe and
    the cluster's metadata every time: 180-430 ms a call on the shared 2-core machine at
    load ~9, against one ListOffsets request on an open one. A call waits at most
    ``timeout_ms`` (a consumer's default is 30 s, which a page would wait while Kafka is
    down); after a failure the consumer is closed, and calls within ``retry_after_s`` fail
    at once instead of each waiting again."""

    def __init__(self, bootstrap: str, timeout_ms: int = 3_000, retry_after_s: float = 15.0) -> None:
        self.bootstrap = bootstrap
        self.timeout_ms = timeout_ms
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._consumer: Any = None  # a KafkaConsumer once opened
        self._failed_at: float | None = None

    def __call__(self, topic: str) -> dict[int, int]:
        # Kafka's driver on first use, as above.
        from kafka import KafkaConsumer

        with self._lock:
            if self._failed_at is not None and time.monotonic() - self._failed_at < self.retry_after_s:
                raise TimeoutError(
                    f"Kafka at {self.bootstrap} did not answer {time.monotonic() - self._failed_at:.0f} s ago"
                )
            try:
                if self._consumer is None:
                    self._consumer = KafkaConsumer(
                        bootstrap_servers=self.bootstrap,
                        enable_auto_commit=False,
                        client_id="txmon-readback",
                        request_timeout_ms=self.timeout_ms,
                        bootstrap_timeout_ms=self.timeout_ms,
                        **client_config(),
                    )
                offsets = _end_offsets(self._consumer, topic, self.timeout_ms)
            except Exception:
                self._failed_at = time.monotonic()
                self.close_consumer()
                raise
            self._failed_at = None
            return offsets

    def close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):  # closing a consumer of a broker that is gone
                consumer.close(timeout_ms=self.timeout_ms)


_READERS: dict[str, EndOffsetsReader] = {}
_READERS_LOCK = threading.Lock()


def end_offsets_reader(bootstrap: str) -> EndOffsetsReader:
    """This process's :class:`EndOffsetsReader` of ``bootstrap``."""
    with _READERS_LOCK:
        reader = _READERS.get(bootstrap)
        if reader is None:
            reader = _READERS[bootstrap] = EndOffsetsReader(bootstrap)
        return reader


@atexit.register
def close_end_offsets_readers() -> None:
    """Close this process's kept consumers. Also at exit: a consumer left open keeps its
    network thread (a daemon) reconnecting and logging once its broker is gone, and the
    interpreter freezes daemon threads where they stand when it shuts down; one frozen
    inside a logging handler holds that handler's lock, and the next log call of the
    shutdown (py4j's connection finalizers log) then waits for it forever."""
    with _READERS_LOCK:
        readers = list(_READERS.values())
        _READERS.clear()
    for reader in readers:
        with reader._lock:
            reader.close_consumer()


def count_landed(session, txn_ids: Sequence[str], table: str = "transactions", chunk: int = 100) -> int:
    """How many of these txn_ids have a row (point lookups by partition key, concurrently)."""
    if not txn_ids:
        return 0
    stmt = session.prepare(cql.ids_present(table))
    return len(rows_in(session, stmt, txn_ids, per_read=chunk, in_flight=32))


def dead_letters_since(session, topic: str, start_offsets: dict[int, int]) -> Counter:
    """Dead-letter reasons for records of ``topic`` at or after the given offsets."""
    stmt = session.prepare(cql.DEAD_LETTER_REASONS_SINCE)
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
_END_OF_TIME = datetime(9999, 12, 31)  # noqa: DTZ001 - the open upper bound of a window read, naive UTC


def account_windows(
    session, account: str, window_kind: str, since: datetime | None = None, until: datetime | None = None
) -> list[AccountWindow]:
    """Every window of one account and kind, newest first (those starting at or after
    ``since`` and at or before ``until``, naive UTC, if given: a case page reads the two
    hours before its alert, not everything since). Stored kinds (``tumble_1m``,
    ``tumble_5m``) are read as they are; ``slide_1h`` is derived from the ``tumble_5m``
    rows (:func:`models.features.sliding_hours`)."""
    derived, size_s, bucket_kind = SLIDING_HOUR
    if window_kind not in (*AGGREGATE_WINDOWS_S, derived):
        raise ValueError(f"unknown window kind {window_kind!r}: one of {', '.join((*AGGREGATE_WINDOWS_S, derived))}")
    stored = bucket_kind if window_kind == derived else window_kind
    lookback = timedelta(seconds=size_s - AGGREGATE_WINDOWS_S[bucket_kind]) if window_kind == derived else timedelta(0)
    stmt = prepared(session, cql.ACCOUNT_WINDOWS)
    rows = list(
        session.execute(stmt, (account, stored, (since - lookback) if since else _EPOCH, until or _END_OF_TIME))
    )
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
    newest = session.prepare(cql.ACCOUNT_NEWEST_WINDOW)
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


class AccountTxn(NamedTuple):
    """One of an account's scored transactions (``account_transactions``)."""

    txn_id: str
    event_time: datetime  # naive UTC
    amount_paise: int | None
    channel: str | None
    txn_type: str | None
    payee_key: str | None
    risk_score: int | None
    decision: str | None


def txn_month(t: datetime) -> str:
    """The ``account_transactions`` partition of a transaction: its UTC month.

    >>> txn_month(datetime(2026, 12, 6, 23, 59))
    '2026-12'
    """
    return f"{t.year:04d}-{t.month:02d}"


def _month_before(month: str) -> str:
    """
    >>> _month_before("2026-01")
    '2025-12'
    """
    year, m = int(month[:4]), int(month[5:])
    return f"{year - 1:04d}-12" if m == 1 else f"{year:04d}-{m - 1:02d}"


def account_transactions(session, account: str, until: datetime, limit: int = 20) -> list[AccountTxn]:
    """The account's scored transactions at or before ``until`` (naive UTC), newest
    first, at most ``limit``: the head of ``until``'s month partition and of the month
    before, read at once (two reads of at most ``limit`` rows, whatever the account's
    history)."""
    stmt = prepared(session, cql.ACCOUNT_TXNS_UNTIL)
    month = txn_month(until)
    futures = [session.execute_async(stmt, (account, m, until, limit)) for m in (month, _month_before(month))]
    out: list[AccountTxn] = []
    for future in futures:  # this month's rows, then the month before's: already newest first
        out.extend(AccountTxn(*r) for r in future.result())
    return out[:limit]


def backfill_account_transactions(session, since: datetime) -> int:
    """Fill ``account_transactions`` from ``scored_transactions`` for transactions at or
    after ``since`` (naive UTC): for data scored before that table existed. One scan of
    ``scored_transactions`` (a maintenance command, not a page); upserts, so it is safe
    to run again. Returns the rows written."""
    # lazy: cassandra (249 ms to import); the web app's workers load this module without it
    from cassandra.concurrent import execute_concurrent_with_args

    scan = session.prepare(cql.SCORED_BY_ACCOUNT)
    insert = prepared(session, cql.ACCOUNT_TXN_INSERT)
    written, pending = 0, []
    for r in session.execute(scan, timeout=600):
        if r.payer_account is None or r.event_time is None or r.event_time < since:
            continue
        pending.append((r.payer_account, txn_month(r.event_time), *r[1:]))
        if len(pending) >= 5_000:
            execute_concurrent_with_args(session, insert, pending, concurrency=64, raise_on_first_error=True)
            written, pending = written + len(pending), []
    if pending:
        execute_concurrent_with_args(session, insert, pending, concurrency=64, raise_on_first_error=True)
        written += len(pending)
    return written
