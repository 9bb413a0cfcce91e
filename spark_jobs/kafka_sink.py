"""Publishing to Kafka from inside Spark tasks (alerts, dead letters) with kafka-python.

Spark's own Kafka sink is a separate Spark job per write, and on a small machine every
job of a micro-batch costs ~0.3-0.7 s of scheduling whatever its size
(bench/batch_step_profile.py). Publishing from the task that already holds the rows
keeps a micro-batch to one job. One producer per worker process, reused across tasks
and micro-batches, like the Cassandra session (spark_jobs/cassandra_sink.py).

Delivery is at-least-once, as with Spark's sink: a task flushes and checks every send
before it finishes, so a failure fails the task and Spark replays the micro-batch; a
replay may publish a record twice, and every record carries an id to de-duplicate by
(the alert id; a dead letter's topic/partition/offset).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from txmon.infra.kafka_client import client_config

_producers: dict[str, Any] = {}
_lock = threading.Lock()
SEND_TIMEOUT_S = 60


def producer_for(bootstrap: str):
    """A cached KafkaProducer for this worker process."""
    with _lock:
        if bootstrap not in _producers:
            # kafka-python when the first producer is made, in the worker that needs it.
            from kafka import KafkaProducer

            _producers[bootstrap] = KafkaProducer(
                bootstrap_servers=bootstrap,
                acks="all",
                linger_ms=5,
                compression_type="lz4",
                retries=10,
                max_in_flight_requests_per_connection=1,  # keeps one account's records in order
                client_id="txmon-stream",
                **client_config(),
            )
        return _producers[bootstrap]


def publish(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    """Send (key, value) records and wait until Kafka has every one; raises if any failed."""
    producer = producer_for(bootstrap)
    futures = [producer.send(topic, key=key, value=value) for key, value in records]
    if futures:
        producer.flush(timeout=SEND_TIMEOUT_S)
        for future in futures:
            future.get(timeout=SEND_TIMEOUT_S)  # re-raises the delivery error
    return len(futures)
