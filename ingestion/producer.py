"""Kafka producer for transaction events (simulated or replayed).

Per-account ordering: the key is the payer account, so every event of one account
lands in one partition in order. Durability: ``acks=all`` with idempotence-safe
retries. Throughput: batching (``linger_ms``/``batch_size``) and lz4 compression.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

from infra.settings import Settings
from ingestion.events import TransactionEvent, kafka_key, to_json


@dataclass
class ProduceSummary:
    """What a producer run achieved; printed at the end of every run."""

    sent: int = 0
    failed: int = 0
    labels_sent: int = 0
    clamped_to_now: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        err = f" ({', '.join(f'{k}: {v}' for k, v in self.errors.items())})" if self.errors else ""
        return (f"sent {self.sent} events, failed {self.failed}{err}, labels {self.labels_sent}, "
                f"in {self.seconds:.1f}s = {self.rate:,.0f} events/s")


class TransactionProducer:
    """Thin wrapper over kafka-python's KafkaProducer that counts delivery outcomes."""

    def __init__(self, settings: Settings, topic: str | None = None, labels_topic: str | None = None,
                 linger_ms: int = 20, batch_size: int = 256 * 1024, compression: str | None = "lz4") -> None:
        from kafka import KafkaProducer

        self.topic = topic or settings.kafka.topics.transactions
        self.labels_topic = labels_topic or settings.kafka.topics.labels
        self.summary = ProduceSummary()
        self._lock = threading.Lock()
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap,
            acks="all",
            linger_ms=linger_ms,
            batch_size=batch_size,
            compression_type=compression,
            retries=10,
            max_in_flight_requests_per_connection=1,  # retries must not reorder an account's events
            client_id="txmon-producer",
        )

    def _ok(self, _metadata) -> None:
        with self._lock:
            self.summary.sent += 1

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.summary.failed += 1
            name = type(exc).__name__
            self.summary.errors[name] = self.summary.errors.get(name, 0) + 1

    def send_event(self, event: TransactionEvent) -> None:
        self.send_raw(kafka_key(event), to_json(event))

    def send_raw(self, key: bytes | None, value: bytes, topic: str | None = None) -> None:
        """Send bytes as they are (replay of foreign data, or deliberately bad records)."""
        future = self._producer.send(topic or self.topic, key=key, value=value)
        future.add_callback(self._ok).add_errback(self._failed)

    def send_label(self, key: bytes, value: bytes) -> None:
        self._producer.send(self.labels_topic, key=key, value=value)
        self.summary.labels_sent += 1

    def flush(self, timeout: float | None = 120) -> None:
        self._producer.flush(timeout=timeout)

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()


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
                now = datetime.now(timezone.utc)
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

