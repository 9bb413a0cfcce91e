"""The Spark wiring end to end: Kafka -> Structured Streaming -> Cassandra."""

from __future__ import annotations

import json

from txmon.infra.kafka_client import client_config
from txmon.spark_jobs.smoke import start_smoke_query


def test_smoke_job_lands_every_record_once(services, spark, topic, cassandra_session, tmp_path):
    from kafka import KafkaProducer

    n = 2_000
    run_id = topic
    producer = KafkaProducer(bootstrap_servers=services.kafka.bootstrap, acks="all", linger_ms=5, **client_config())
    for i in range(n):
        producer.send(topic, key=str(i).encode(), value=json.dumps({"run_id": run_id, "id": str(i)}).encode())
    producer.flush()
    producer.close()

    checkpoint = str(tmp_path / "ckpt")
    query = start_smoke_query(spark, services, topic, checkpoint, available_now=True)
    query.awaitTermination(timeout=180)
    assert not query.isActive and query.exception() is None

    count = cassandra_session.execute(
        cassandra_session.prepare("SELECT count(*) FROM smoke_events WHERE run_id = ?"), (run_id,)
    ).one()[0]
    assert count == n

    # Running again from the same checkpoint reads nothing new and changes nothing.
    again = start_smoke_query(spark, services, topic, checkpoint, available_now=True)
    again.awaitTermination(timeout=120)
    assert again.exception() is None
    assert (
        cassandra_session.execute(
            cassandra_session.prepare("SELECT count(*) FROM smoke_events WHERE run_id = ?"), (run_id,)
        ).one()[0]
        == n
    )


def test_spark_submit_runs_smoke_job(services, topic, cassandra_session, tmp_path):
    """The same job through the real spark-submit command line txmon builds."""
    import subprocess

    from kafka import KafkaProducer

    from txmon.spark_jobs.session import spark_submit_argv

    producer = KafkaProducer(bootstrap_servers=services.kafka.bootstrap, acks="all", **client_config())
    for i in range(100):
        producer.send(topic, value=json.dumps({"run_id": topic, "id": str(i)}).encode())
    producer.flush()
    producer.close()

    argv = spark_submit_argv(services, "spark_jobs/smoke.py", ["--topic", topic, "--checkpoint", str(tmp_path / "ck")])
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    count = cassandra_session.execute(
        cassandra_session.prepare("SELECT count(*) FROM smoke_events WHERE run_id = ?"), (topic,)
    ).one()[0]
    assert count == 100
