"""Writing alerts to the Kafka ``alerts`` topic (key = payer account, acks=all).

The detection engine may use :class:`AlertPublisher` or produce the same bytes itself
(:func:`alerting.contract.to_json` / :func:`alerting.contract.kafka_key`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from txmon.alerting.contract import Alert, kafka_key, to_json
from txmon.infra.kafka_client import client_config
from txmon.infra.settings import Settings


class AlertPublisher:
    """A long-lived producer: ordered per account (one request in flight), durable (acks=all)."""

    def __init__(self, settings: Settings, topic: str | None = None, linger_ms: int = 0) -> None:
        # kafka-python on first publish.
        from kafka import KafkaProducer

        self.topic = topic or settings.kafka.topics.alerts
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap,
            acks="all",
            linger_ms=linger_ms,
            retries=10,
            max_in_flight_requests_per_connection=1,
            client_id="txmon-alerts",
            **client_config(settings),
        )

    def send(self, alert: Alert) -> Any:
        return self._producer.send(self.topic, key=kafka_key(alert), value=to_json(alert))

    def send_raw(self, key: bytes | None, value: bytes) -> Any:
        return self._producer.send(self.topic, key=key, value=value)

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()


def publish_alerts(
    settings: Settings,
    alerts: Iterable[Alert],
    topic: str | None = None,
    raw: Iterable[tuple[bytes | None, bytes]] = (),
) -> int:
    """Produce alerts (and optionally raw key/value records) and wait until the broker
    has them all; returns the number of records written."""
    publisher = AlertPublisher(settings, topic, linger_ms=5)
    try:
        futures = [publisher.send(a) for a in alerts] + [publisher.send_raw(k, v) for k, v in raw]
        publisher.flush()
        for f in futures:
            f.get(timeout=30)
        return len(futures)
    finally:
        publisher.close()
