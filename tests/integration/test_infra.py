"""The local stack: real Kafka and Cassandra, started by txmon's own code."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import psutil

from txmon.infra import stack
from txmon.infra.kafka_client import client_config
from txmon.infra.services.kafka import KafkaService


def _txmon(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "txmon.infra.cli", *args], check=False, capture_output=True, text=True, env=env
    )


def test_kafka_produce_consume_round_trip(services, topic):
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=services.kafka.bootstrap, acks="all", **client_config(services))
    sent = {f"k{i}": {"n": i} for i in range(50)}
    for key, value in sent.items():
        producer.send(topic, key=key.encode(), value=json.dumps(value).encode())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=services.kafka.bootstrap,
        auto_offset_reset="earliest",
        group_id=f"g-{topic}",
        consumer_timeout_ms=10_000,
        **client_config(services),
    )
    received = {m.key.decode(): json.loads(m.value) for m in consumer}
    consumer.close()
    assert received == sent


def test_cassandra_write_read(services, cassandra_session):
    insert = cassandra_session.prepare(
        "INSERT INTO smoke_events (run_id, id, payload, kafka_partition, kafka_offset) VALUES (?, ?, ?, ?, ?)"
    )
    for i in range(10):
        cassandra_session.execute(insert, ("cass-rw", str(i), f"p{i}", 0, i))
    rows = cassandra_session.execute(
        cassandra_session.prepare("SELECT id, payload FROM smoke_events WHERE run_id = ?"), ("cass-rw",)
    )
    assert sorted((r.id, r.payload) for r in rows) == sorted((str(i), f"p{i}") for i in range(10))


def test_cassandra_connections_send_without_waiting_for_acks(cassandra_session):
    """Every connection txmon opens sets TCP_NODELAY (infra.cassandra_schema.open_cluster):
    without it, requests under load stalled ~40 ms on Nagle's algorithm (docs/performance.md)."""
    import socket

    connections = [c for pool in cassandra_session.get_pools() for c in pool.get_connections()]
    connections.append(cassandra_session.cluster.control_connection._connection)
    assert len(connections) >= 2
    assert [c._socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in connections] == [1] * len(connections)


def test_schema_has_every_table(services, cassandra_session):
    from txmon.infra.cassandra_schema import schema_statements

    tables = {
        r.table_name
        for r in cassandra_session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
            (services.cassandra.keyspace,),
        )
    }
    declared = {
        s.split(".")[1].split()[0] for s in schema_statements(services.cassandra.keyspace) if "CREATE TABLE" in s
    }
    assert declared and declared <= tables


def test_up_twice_is_harmless(services):
    before = {s.name: s.pid for s in stack.status(services)}
    reports = stack.up(services, log=lambda m: None)
    assert [r.started for r in reports] == [False, False]
    after = {s.name: s.pid for s in stack.status(services)}
    assert before == after and all(after.values())
    result = _txmon("infra", "up")
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stdout


def test_status_command_reports_healthy(services):
    result = _txmon("infra", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("healthy") == 2 and "UNHEALTHY" not in result.stdout


def test_status_notices_killed_process_and_up_recovers(services):
    kafka = KafkaService(services)
    pid = kafka.process.pid()
    assert pid is not None
    psutil.Process(pid).send_signal(signal.SIGKILL)
    psutil.Process(pid).wait(timeout=20)

    result = _txmon("infra", "status")
    assert result.returncode == 1
    kafka_line = next(line for line in result.stdout.splitlines() if line.startswith("kafka"))
    assert "UNHEALTHY: not running" in kafka_line

    stack.up(services, log=lambda m: None)  # restarts only Kafka, data kept
    statuses = {s.name: s for s in stack.status(services)}
    assert statuses["kafka"].healthy and statuses["kafka"].pid != pid
    assert statuses["cassandra"].healthy
