"""Same-run baselines for the pipeline benchmark: what each component does on its own.

Every baseline goes through the code the pipeline uses, minus the rest of the pipeline:

* Kafka produce: ``TransactionProducer.send_raw`` (kafka-python, acks=all, lz4, batching)
  of pre-serialised simulated events; Kafka consume: a kafka-python consumer reading them;
* Spark Kafka source -> ``noop`` sink (streaming, available-now), rows/s over the
  micro-batches' trigger time;
* the stream itself on the same records with detection off (ingest only) and on
  (ingest + features + rules + models + outputs), available-now: the catch-up rate with
  large micro-batches;
* Cassandra inserts through ``spark_jobs/cassandra_sink.write_dataframe`` from a cached
  DataFrame (the pipeline's write path, both cores);
* plain ``predict_proba`` (and both models' plain calls) against in-stream scoring (bench/stream_scoring_bench.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from kafka import KafkaConsumer

from txmon.bench.scoring_bench import load_or_train, scoring_frame
from txmon.bench.stream_scoring_bench import measure
from txmon.infra.kafka_client import client_config, spark_kafka_options
from txmon.infra.services.kafka import ensure_topics
from txmon.infra.settings import Settings, load_settings
from txmon.ingestion.events import kafka_key, to_json
from txmon.ingestion.producer import TransactionProducer
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.spark_jobs.cassandra_sink import CassandraTarget, write_dataframe
from txmon.spark_jobs.session import build_session, checkpoint_location
from txmon.spark_jobs.transactions_stream import (
    TRANSACTION_COLUMNS,
    StreamOptions,
    landed_transactions,
    read_kafka,
    start_ingest_query,
)


@dataclass(frozen=True)
class Rate:
    name: str
    rows: int
    seconds: float
    note: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def simulated_payloads(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, value) bytes of n simulated events, serialised as the producer sends them."""

    sim = simulator_for(SimulateOptions(seed=seed, count=n, rate=None, progress=False))
    return [(kafka_key(s.event), to_json(s.event)) for s in sim.generate(n)]


def kafka_produce(settings: Settings, topic: str, payloads: list[tuple[bytes, bytes]]) -> Rate:
    producer = TransactionProducer(settings, topic=topic)
    t0 = time.perf_counter()
    for key, value in payloads:
        producer.send_raw(key, value)
    producer.flush()
    seconds = time.perf_counter() - t0
    producer.close()
    if producer.summary.failed:
        raise RuntimeError(f"baseline produce: {producer.summary.failed} sends failed: {producer.summary.errors}")
    return Rate("Kafka produce (kafka-python, acks=all, lz4)", len(payloads), seconds)


def kafka_consume(settings: Settings, topic: str, expected: int) -> Rate:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=20_000,
        max_poll_records=5000,
        client_id="txmon-bench",
        **client_config(settings),
    )
    n = 0
    t0 = None
    for _ in consumer:
        if t0 is None:
            t0 = time.perf_counter()  # from the first record: group join is not throughput
        n += 1
        if n >= expected:
            break
    seconds = time.perf_counter() - (t0 or time.perf_counter())
    consumer.close()
    return Rate("Kafka consume (kafka-python)", n, seconds)


def _trigger_seconds(query) -> tuple[int, float]:
    rows = sum(p.get("numInputRows", 0) for p in query.recentProgress)
    ms = sum(
        p.get("durationMs", {}).get("triggerExecution", 0) for p in query.recentProgress if p.get("numInputRows", 0) > 0
    )
    return rows, ms / 1000.0


def spark_noop(spark, settings: Settings, topic: str) -> Rate:
    """The Spark Kafka source into the no-op sink: what Spark alone reads per second here."""

    opts = StreamOptions.from_settings(settings, topic=topic)
    for run in ("warm-up", "measured"):  # the first query of a session also pays JVM warm-up
        query = (
            read_kafka(spark, settings, opts)
            .writeStream.format("noop")
            .trigger(availableNow=True)
            .option(
                "checkpointLocation",
                checkpoint_location(spark, str(settings.state_path / "checkpoints" / f"bench-noop-{topic}-{run}")),
            )
            .queryName(f"noop_{topic}_{run.replace('-', '')}")
            .start()
        )
        query.awaitTermination()
    rows, seconds = _trigger_seconds(query)
    return Rate("Spark Kafka source -> noop sink", rows, seconds)


def spark_stream(spark, settings: Settings, topic: str, detect: bool, checkpoint: str, **names) -> tuple[Rate, list]:
    """The ingest query (the stream's main query) over what is in ``topic``, available-now."""

    opts = StreamOptions.from_settings(
        settings, topic=topic, checkpoint_dir=checkpoint, available_now=True, detect=detect, **names
    )
    query = start_ingest_query(spark, settings, opts)
    query.awaitTermination()
    if query.exception() is not None:
        raise RuntimeError(f"stream failed: {query.exception()}")
    rows, seconds = _trigger_seconds(query)
    what = "ingest + detection (features, rules, models, outputs)" if detect else "ingest only (validate, write)"
    return Rate(f"Spark stream, {what}, available-now", rows, seconds), list(query.recentProgress)


def detection_backlog(spark, settings: Settings, name: str, events: int, seed: int) -> tuple[Rate, list]:
    """Simulated events into a fresh topic ``name``, then the detection stream over them
    (available-now): the profiling scripts' run (bench/batch_step_profile.py, cpu_split.py)."""

    ensure_topics(settings.kafka.bootstrap, [name, f"{name}_dlq", f"{name}_alerts"], settings.kafka.partitions)
    kafka_produce(settings, name, simulated_payloads(events, seed))
    return spark_stream(
        spark,
        settings,
        name,
        True,
        str(settings.state_path / "checkpoints" / name),
        dlq_topic=f"{name}_dlq",
        alerts_topic=f"{name}_alerts",
    )


def backlog_runner(app_name: str, rows_per_batch: int, partitions: int | None = None):
    """``(spark, settings, run)`` for the profiling scripts: micro-batches of ``rows_per_batch``
    rows (and topics of ``partitions`` Kafka partitions) set before the settings load;
    ``run(name, events, seed)`` is :func:`detection_backlog` on a topic named for this run."""

    os.environ["TXMON_SPARK__MAX_OFFSETS_PER_TRIGGER"] = str(rows_per_batch)
    if partitions:
        os.environ["TXMON_KAFKA__PARTITIONS"] = str(partitions)
    settings = load_settings()
    spark = build_session(settings, app_name)
    stamp = int(time.time())

    def run(name: str, events: int, seed: int) -> tuple[Rate, list]:
        return detection_backlog(spark, settings, f"{name}_{stamp}", events, seed)

    return spark, settings, run


def cassandra_insert(spark, settings: Settings, topic: str) -> Rate:
    """Typed transactions (read once, cached) upserted through the pipeline's sink code."""

    raw = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap)
        .options(**spark_kafka_options(settings))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    typed = landed_transactions(raw).repartition(settings.spark.shuffle_partitions).cache()
    rows = typed.count()
    target = CassandraTarget.from_settings(settings)
    t0 = time.perf_counter()
    write_dataframe(typed, target, "transactions", TRANSACTION_COLUMNS)
    seconds = time.perf_counter() - t0
    typed.unpersist()
    return Rate(
        "Cassandra upsert via cassandra_sink (UNLOGGED batches)",
        rows,
        seconds,
        f"concurrency {target.concurrency}, {target.batch_rows} rows/batch",
    )


def scoring(spark, rows: int, seed: int) -> dict[str, float]:
    """rows/s of plain predict_proba and of each in-Spark scoring path (same rows, same run)."""

    bundle, _ = load_or_train(None, 50_000, 42)
    return measure(spark, bundle, scoring_frame(rows, seed), repeats=2)
