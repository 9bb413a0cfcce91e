"""The transactions stream, unchanged, on a local Spark standalone cluster (master + 2 workers).

The job is submitted with ``spark-submit --master spark://...`` exactly as on a real
cluster and reads a 6-partition topic: every Kafka partition becomes a task, spread over
both workers' executors. Every valid event must land once in Cassandra and be scored by
the champion model (in the executors' JVMs: the scorer jar travels with ``spark.jars``),
every bad record must be dead-lettered with its reason, and both workers must have run
executors.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import zlib

import pytest

from tests.integration.test_detection import _train_champion
from tests.integration.test_stream import _produce
from txmon.infra import spark_cluster
from txmon.infra.readback import count_landed, dead_letters_since

PARTITIONS = 6


@pytest.fixture(scope="module")
def cluster(services):
    spark_cluster.up(services, log=lambda msg: None)
    yield services
    spark_cluster.down(services, purge=True, log=lambda msg: None)
    assert all(s.pid is None for s in spark_cluster.status(services))  # nothing left behind


def _worker_app_ids(settings) -> list[set[str]]:
    """Per alive worker, the application ids it ran executors for."""
    out = []
    for worker in spark_cluster.alive_workers(settings):
        with urllib.request.urlopen(f"{worker['webuiaddress']}/json/", timeout=5) as resp:
            state = json.load(resp)
        out.append({e.get("appid") for e in state.get("executors", []) + state.get("finishedexecutors", [])})
    return out


def test_stream_runs_unchanged_on_a_standalone_cluster(cluster, cassandra_session, unique_name, tmp_path):
    from txmon.infra.services.kafka import ensure_topics
    from txmon.spark_jobs.session import spark_submit_argv, spark_submit_env

    settings = cluster
    assert len(spark_cluster.alive_workers(settings)) == settings.spark.cluster.workers == 2
    topic = unique_name("cluster")
    ensure_topics(settings.kafka.bootstrap, [topic, f"{topic}_dlq"], PARTITIONS)
    events, bad = _produce(settings, topic, 2000, zlib.crc32(topic.encode()), bad_every=100)

    version = _train_champion(tmp_path / "models")
    ensure_topics(settings.kafka.bootstrap, [f"{topic}_alerts", f"{topic}_labels"], PARTITIONS)

    submitted_ms = time.time() * 1000
    argv = spark_submit_argv(
        settings,
        "spark_jobs/transactions_stream.py",
        [
            "--topic",
            topic,
            "--dlq-topic",
            f"{topic}_dlq",
            "--alerts-topic",
            f"{topic}_alerts",
            "--labels-topic",
            f"{topic}_labels",
            "--checkpoint-dir",
            str(tmp_path / "ckpt"),
            "--available-now",
        ],
        master=settings.spark.cluster.master_url,
    )
    log = tmp_path / "spark-submit.log"
    env = spark_submit_env()
    env["TXMON_MODELS_DIR"] = str(tmp_path / "models")
    with open(log, "wb") as out:
        code = subprocess.call(argv, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=900)
    assert code == 0, log.read_text()[-3000:]

    ids = [e.txn_id for e in events]
    assert count_landed(cassandra_session, ids) == len(ids)  # primary key txn_id: once each
    zero = dict.fromkeys(range(PARTITIONS), 0)
    assert dead_letters_since(cassandra_session, topic, zero) == bad
    stmt = cassandra_session.prepare("SELECT kafka_partition FROM transactions WHERE txn_id IN ?")
    seen = {
        r.kafka_partition for i in range(0, len(ids), 100) for r in cassandra_session.execute(stmt, (ids[i : i + 100],))
    }
    assert seen == set(range(PARTITIONS))  # every partition of the topic was read
    stmt = cassandra_session.prepare(
        "SELECT model_version, fraud_probability, anomaly_score FROM scored_transactions WHERE txn_id IN ?"
    )
    scored = [r for i in range(0, len(ids), 100) for r in cassandra_session.execute(stmt, (ids[i : i + 100],))]
    assert len(scored) == len(ids) and {r.model_version for r in scored} == {version}
    assert len({round(r.anomaly_score, 6) for r in scored}) > 100  # real model scores, not a constant

    state = spark_cluster.master_state(settings)
    assert state is not None, "the master does not answer"
    apps = [a for a in state["completedapps"] + state["activeapps"] if a["starttime"] >= submitted_ms]
    assert [a["name"] for a in apps] == ["txmon-transactions-stream"], state["completedapps"]
    ran = _worker_app_ids(settings)
    assert len(ran) == 2 and all(apps[0]["id"] in ids_ for ids_ in ran)  # both workers ran executors
