"""Kafka producer for transaction events (simulated or replayed).

Per-account ordering: the key is the payer account, so every event of one account
lands in one partition in order. Durability: ``acks=all`` with the idempotent producer
(the broker drops a retried batch it already has, so a retry neither duplicates nor
reorders). Throughput: batching (``linger_ms``/``batch_size``) and lz4 compression.

Back-pressure: the send buffer is bounded (``buffer_memory``); when the broker is away
and the buffer is full, ``send`` blocks instead of piling events up in memory, so the
loop feeding it slows to what Kafka accepts. Every record is accounted for: ``sent``
counts what the broker acknowledged, ``failed`` what it never did, and on close the
records still undelivered are written, one JSON line each, to ``undelivered_path``
(re-sendable as they are). A record over the size limit never reaches Kafka's transactions
topic: it goes to the dead-letter topic with reason ``oversize`` and a cut payload.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from txmon.infra.kafka_client import client_config
from txmon.infra.settings import Settings
from txmon.ingestion.events import DeadLetterReason, TransactionEvent, kafka_key, to_json

log = logging.getLogger(__name__)

# The broker's default message.max.bytes (1 MiB plus record overhead): a record over it
# would be refused there after a round trip; refusing it here keeps it out of the batch.
MAX_RECORD_BYTES = 1_000_000
# What a dead letter keeps of an oversize payload (the dead-letter topic has the same limit).
OVERSIZE_KEEP_BYTES = 16_384


@dataclass
class ProduceSummary:
    """What a producer run achieved; printed at the end of every run."""

    sent: int = 0
    failed: int = 0
    labels_sent: int = 0
    clamped_to_now: int = 0
    oversize: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    undelivered_path: Path | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        err = f" ({', '.join(f'{k}: {v}' for k, v in self.errors.items())})" if self.errors else ""
        over = f", {self.oversize} oversize to the dead-letter topic" if self.oversize else ""
        kept = f"; undelivered records in {self.undelivered_path}" if self.undelivered_path else ""
        return (
            f"sent {self.sent} events, failed {self.failed}{err}{over}, labels {self.labels_sent}, "
            f"in {self.seconds:.1f}s = {self.rate:,.0f} events/s{kept}"
        )


class TransactionProducer:
    """Thin wrapper over kafka-python's KafkaProducer that accounts for every record."""

    def __init__(
        self,
        settings: Settings,
        topic: str | None = None,
        labels_topic: str | None = None,
        linger_ms: int = 20,
        batch_size: int = 256 * 1024,
        compression: str | None = "lz4",
        dlq_topic: str | None = None,
        buffer_memory: int = 16 * 1024 * 1024,
        max_block_ms: int = 600_000,
        undelivered_dir: Path | None = None,
    ) -> None:
        # kafka-python on first use: building events and dry runs do not need it.
        from kafka import KafkaProducer

        self.topic = topic or settings.kafka.topics.transactions
        self.labels_topic = labels_topic or settings.kafka.topics.labels
        self.dlq_topic = dlq_topic or settings.kafka.topics.dead_letter
        self.summary = ProduceSummary()
        self._undelivered_dir = undelivered_dir or settings.state_path / "producer"
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._buffer_bytes = buffer_memory
        self._max_block_s = max_block_ms / 1000
        self._pending_bytes = 0
        self._pending: dict[int, tuple[str, bytes | None, bytes]] = {}
        self._next = 0
        self._failures: list[dict] = []
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap,
            acks="all",
            enable_idempotence=True,  # retries (unbounded count, bounded by delivery_timeout_ms) stay exactly-once
            linger_ms=linger_ms,
            batch_size=batch_size,
            compression_type=compression,
            delivery_timeout_ms=300_000,
            max_in_flight_requests_per_connection=5,  # idempotence keeps order up to 5
            max_block_ms=max_block_ms,
            max_request_size=MAX_RECORD_BYTES + 64 * 1024,
            client_id="txmon-producer",
            **client_config(settings),
        )

    def _track(self, topic: str, key: bytes | None, value: bytes) -> int | None:
        """Register a record as pending; wait while the pending records fill the buffer
        (kafka-python's own accumulator is unbounded). None: the buffer stayed full for
        max_block_ms, and the record is reported as failed instead of queued."""
        size = len(value) + len(key or b"")
        deadline = time.monotonic() + self._max_block_s
        with self._lock:
            while self._pending and self._pending_bytes + size > self._buffer_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._count_failure(
                        "BufferFull",
                        (topic, key, value),
                        f"send buffer full for {self._max_block_s:.0f} s: is Kafka reachable?",
                    )
                    return None
                self._drained.wait(timeout=min(left, 5.0))
            token = self._next
            self._next += 1
            self._pending[token] = (topic, key, value)
            self._pending_bytes += size
        return token

    def _release(self, token: int):
        record = self._pending.pop(token, None)
        if record is not None:
            self._pending_bytes -= len(record[2]) + len(record[1] or b"")
            self._drained.notify_all()
        return record

    def _ok(self, token: int, counted: bool, _metadata) -> None:
        with self._lock:
            self._release(token)
            if counted:
                self.summary.sent += 1

    def _failed(self, token: int, exc: BaseException) -> None:
        with self._lock:
            record = self._release(token)
            if record is not None:
                self._count_failure(type(exc).__name__, record, f"{type(exc).__name__}: {exc}")

    def _count_failure(self, name: str, record: tuple[str, bytes | None, bytes], error: str) -> None:
        self.summary.failed += 1
        self.summary.errors[name] = self.summary.errors.get(name, 0) + 1
        self._failures.append(_undelivered(*record, error=error))

    def send_event(self, event: TransactionEvent) -> None:
        self.send_raw(kafka_key(event), to_json(event))

    def send_raw(self, key: bytes | None, value: bytes | None, topic: str | None = None) -> None:
        """Send bytes as they are (replay of foreign data, or deliberately bad records).
        Blocks while the send buffer is full (back-pressure)."""
        topic = topic or self.topic
        size = len(value or b"") + len(key or b"")
        if size > MAX_RECORD_BYTES:
            self._dead_letter_oversize(topic, key, value or b"", size)
            return
        self._send(topic, key, value, counted=True)

    def _send(self, topic: str, key: bytes | None, value: bytes | None, counted: bool) -> None:
        token = self._track(topic, key, value or b"")
        if token is None:
            return
        try:
            future = self._producer.send(topic, key=key, value=value)
        except Exception as exc:  # noqa: BLE001 - refused before queueing (size, buffer timeout): reported per record
            self._failed(token, exc)
            return
        future.add_callback(lambda md: self._ok(token, counted, md)).add_errback(lambda exc: self._failed(token, exc))

    def _dead_letter_oversize(self, topic: str, key: bytes | None, value: bytes, size: int) -> None:
        letter = {
            "topic": topic,
            "kafka_partition": None,
            "kafka_offset": None,
            "reason": DeadLetterReason.OVERSIZE.value,
            "detail": (
                f"record of {size:,} bytes is over the {MAX_RECORD_BYTES:,}-byte limit; refused by "
                f"the producer; raw_value keeps its first {OVERSIZE_KEEP_BYTES:,} bytes"
            ),
            "raw_key": None if key is None else key.decode("utf-8", "backslashreplace"),
            "raw_value": value[:OVERSIZE_KEEP_BYTES].decode("utf-8", "backslashreplace"),
            "kafka_timestamp": datetime.now(UTC).isoformat(),
        }
        self.summary.oversize += 1
        log.warning(
            "record of %d bytes for %s sent to the dead-letter topic %s as oversize", size, topic, self.dlq_topic
        )
        self._send(self.dlq_topic, key, json.dumps(letter, separators=(",", ":")).encode(), counted=False)

    def send_label(self, key: bytes, value: bytes) -> None:
        self._send(self.labels_topic, key, value, counted=False)
        self.summary.labels_sent += 1

    def flush(self, timeout: float | None = 120) -> None:
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float = 120) -> ProduceSummary:
        """Deliver what is buffered (up to ``timeout`` seconds), then account for the rest:
        each record not acknowledged is written to ``summary.undelivered_path``."""
        try:
            self._producer.flush(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - what did not make it is reported per record below
            log.warning("flush ended before every record was delivered: %s", exc)
        self._producer.close(timeout=5)
        with self._lock:
            for record in self._pending.values():
                self._count_failure("Unacknowledged", record, "not acknowledged when the producer closed")
            self._pending.clear()
            self._pending_bytes = 0
            if self._failures:
                self._undelivered_dir.mkdir(parents=True, exist_ok=True)
                path = self._undelivered_dir / f"undelivered-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.jsonl"
                with path.open("w", encoding="utf-8") as out:
                    for failure in self._failures:
                        out.write(json.dumps(failure, separators=(",", ":")) + "\n")
                self.summary.undelivered_path = path
                log.error("%d records were not delivered; written to %s", len(self._failures), path)
                self._failures.clear()
        return self.summary


def _undelivered(topic: str, key: bytes | None, value: bytes, error: str) -> dict:
    """One undelivered record as a JSON-able dict, bytes in base64 so nothing is lost."""
    return {
        "topic": topic,
        "key_b64": None if key is None else base64.b64encode(key).decode(),
        "value_b64": base64.b64encode(value).decode(),
        "error": error,
    }


class Pacer:
    """Hold a target average rate: sleep whenever we are ahead of schedule."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.start = clock()

    def wait(self, done: int) -> None:
        if not self.rate:
            return
        ahead = self.start + done / self.rate - self.clock()
        if ahead > 0.002:
            time.sleep(ahead)


def clamp_future(event: TransactionEvent, now: datetime) -> tuple[TransactionEvent, bool]:
    """Never emit an event stamped after the wall clock (the stream would dead-letter it)."""
    if event.event_time > now:
        return event.model_copy(update={"event_time": now}), True
    return event, False


def produce_events(
    producer: TransactionProducer,
    events: Iterable[tuple[TransactionEvent, object]],
    *,
    rate: float | None = None,
    count: int | None = None,
    duration: float | None = None,
    on_label: Callable[[object, TransactionEvent], None] | None = None,
    progress: bool = False,
) -> ProduceSummary:
    """Send (event, extra) pairs until ``count`` events or ``duration`` seconds pass.

    ``on_label`` sees every (extra, event) pair that was handed to Kafka — used to release
    ground-truth labels on their own schedule.
    """
    # lazy: tqdm (79 ms to import); the web app's workers load this module without it
    from tqdm import tqdm

    pacer = Pacer(rate)
    bar = tqdm(total=count, unit="tx", disable=not progress, mininterval=1.0, smoothing=0.1)
    t0 = time.monotonic()
    n = 0
    try:
        for event, extra in events:
            if count is not None and n >= count:
                break
            if duration is not None and time.monotonic() - t0 >= duration:
                break
            if n % 256 == 0:
                pacer.wait(n)
                now = datetime.now(UTC)
            event, clamped = clamp_future(event, now)
            producer.summary.clamped_to_now += clamped
            producer.send_event(event)
            if on_label is not None:
                on_label(extra, event)
            n += 1
            if n % 1024 == 0:
                bar.update(1024)
        producer.flush()
    finally:
        bar.update(n % 1024)
        bar.close()
    producer.summary.seconds = time.monotonic() - t0
    return producer.summary
