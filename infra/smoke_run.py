"""`txmon smoke`: produce, stream through Spark into Cassandra, read back."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from txmon.infra.cassandra_schema import connect
from txmon.infra.kafka_client import client_config
from txmon.infra.services.kafka import ensure_topics
from txmon.infra.settings import Settings
from txmon.infra.statements import SMOKE_COUNT, SMOKE_SAMPLE
from txmon.spark_jobs.session import build_session
from txmon.spark_jobs.smoke import start_smoke_query


@dataclass(frozen=True)
class SmokeResult:
    run_id: str
    produced: int
    landed: int
    seconds: float


def run_smoke(settings: Settings, count: int, topic: str = "smoke", log=print) -> SmokeResult:
    # kafka-python on first use, as in infra/services/kafka.py.
    from kafka import KafkaProducer

    run_id = uuid.uuid4().hex[:12]
    ensure_topics(settings.kafka.bootstrap, [topic], settings.kafka.partitions)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, acks="all", linger_ms=5, **client_config(settings)
    )
    for i in range(count):
        producer.send(topic, key=str(i).encode(), value=json.dumps({"run_id": run_id, "id": str(i)}).encode())
    producer.flush()
    producer.close()
    log(f"produced {count} records to Kafka topic '{topic}' (run {run_id})")

    t0 = time.monotonic()
    spark = build_session(settings, "txmon-smoke")
    checkpoint = settings.state_path / "checkpoints" / f"smoke-{topic}"
    query = start_smoke_query(spark, settings, topic, str(checkpoint), available_now=True)
    query.awaitTermination()
    seconds = time.monotonic() - t0

    cluster, session = connect(settings, settings.cassandra.keyspace)
    try:
        landed = session.execute(session.prepare(SMOKE_COUNT), (run_id,)).one()[0]
        sample = list(
            session.execute(
                session.prepare(SMOKE_SAMPLE),
                (run_id,),
            )
        )
    finally:
        cluster.shutdown()
    log(
        f"landed in Cassandra {settings.cassandra.keyspace}.smoke_events: {landed} of {count} rows "
        f"(Spark query ran {seconds:.1f}s)"
    )
    for row in sample:
        log(f"  id={row.id} partition={row.kafka_partition} offset={row.kafka_offset} landed_at={row.landed_at}")
    return SmokeResult(run_id, count, landed, seconds)
