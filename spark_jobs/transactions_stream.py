"""The transactions stream: Kafka -> validate -> Cassandra, with a dead-letter path.

Streaming queries, each with its own checkpoint:

* ``ingest`` over the ``transactions`` topic: every record is validated against the
  event contract (in the landing step, spark_jobs/validation.contract_verdicts). Valid
  events are upserted into ``transactions`` (keyed by txn_id); invalid ones go to the
  ``dead_letters`` table (keyed by topic/partition/offset) and the dead-letter topic,
  with the reason and the raw payload. Bad data never stops the query. Then detection
  (spark_jobs/detection.py) on the landed events: features, rules, models, alerts,
  and the per-account windows of ``account_aggregates`` (1-minute and 5-minute
  tumbling windows: count, total, max amount, distinct payees; the 1-hour window
  sliding every 5 minutes is summed from the 5-minute rows when read,
  infra/readback.account_windows), computed in the payer feature fold from each
  payer's last 24 h.
* ``labels`` over the labels topic: ground truth for the drift monitor and the
  payee fraud reports feature.

Exactly-once into Cassandra: Spark's checkpoint records which offsets each
micro-batch covers and replays an unfinished batch after a crash; every write is an
idempotent upsert on a natural key, so a replay rewrites the same rows. (The
dead-letter *topic* is at-least-once: its records carry topic/partition/offset so a
consumer can de-duplicate; the dead_letters *table* is exact.)

    spark-submit --jars <connector jars> spark_jobs/transactions_stream.py [--available-now]
    txmon stream
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from infra.settings import Settings, load_settings
from spark_jobs.cassandra_sink import CassandraTarget, arrow_rows, write_rows

TRANSACTION_COLUMNS = (
    "txn_id", "schema_version", "event_time", "channel", "txn_type",
    "payer_account", "payer_ifsc", "payer_vpa", "payee_account", "payee_ifsc", "payee_vpa",
    "amount_paise", "currency", "mcc", "device_id", "ip", "city", "lat", "lon", "status",
    "kafka_partition", "kafka_offset", "kafka_timestamp", "landed_at",
)
DEAD_LETTER_COLUMNS = (
    "topic", "kafka_partition", "kafka_offset", "reason", "detail", "raw_key", "raw_value",
    "kafka_timestamp", "landed_at",
)


@dataclass(frozen=True)
class StreamOptions:
    topic: str
    dlq_topic: str
    checkpoint_dir: str
    keyspace: str
    trigger_seconds: float
    max_offsets_per_trigger: int
    secondary_trigger_seconds: float | None = None  # labels query; None: trigger_seconds
    available_now: bool = False
    starting_offsets: str = "earliest"
    detect: bool = True
    labels_topic: str = "labels"
    alerts_topic: str = "alerts"
    rules_path: str | None = None
    registry_root: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> "StreamOptions":
        values = dict(
            topic=settings.kafka.topics.transactions,
            dlq_topic=settings.kafka.topics.dead_letter,
            checkpoint_dir=str(settings.state_path / "checkpoints" / "transactions"),
            keyspace=settings.cassandra.keyspace,
            trigger_seconds=settings.spark.trigger_seconds,
            secondary_trigger_seconds=settings.spark.secondary_trigger_seconds,
            max_offsets_per_trigger=settings.spark.max_offsets_per_trigger,
            labels_topic=settings.kafka.topics.labels,
            alerts_topic=settings.kafka.topics.alerts,
            registry_root=str(_models_dir()),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _models_dir():
    from models.config import models_dir

    return models_dir()


def read_kafka(spark, settings: Settings, opts: StreamOptions, topic: str | None = None):
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap)
        .option("subscribe", topic or opts.topic)
        # starting_offsets may be per-partition JSON for the transactions topic only.
        .option("startingOffsets", opts.starting_offsets if topic in (None, opts.topic) else "earliest")
        .option("maxOffsetsPerTrigger", opts.max_offsets_per_trigger)
        .option("failOnDataLoss", "false")
        # Each task's Kafka reads end on an empty fetch that the broker holds for up to
        # fetch.max.wait.ms (Kafka's default 500 ms): half a second per task, whatever the
        # batch size (SPARK-44012's sample log shows the same: 1 record in 504 ms).
        .option("kafka.fetch.max.wait.ms", settings.spark.kafka_fetch_max_wait_ms)
        .load()
    )


def _typed_columns():
    """The typed transaction columns from a parsed event ``e`` and its Kafka coordinates
    (all of TRANSACTION_COLUMNS but ``landed_at``)."""
    from pyspark.sql import functions as F

    return [
        F.col("e.txn_id").alias("txn_id"),
        F.col("e.schema_version").cast("int").alias("schema_version"),
        F.to_timestamp("e.event_time").alias("event_time"),
        F.col("e.channel").alias("channel"),
        F.col("e.txn_type").alias("txn_type"),
        F.col("e.payer.account_number").alias("payer_account"),
        F.col("e.payer.ifsc").alias("payer_ifsc"),
        F.col("e.payer.vpa").alias("payer_vpa"),
        F.col("e.payee.account_number").alias("payee_account"),
        F.col("e.payee.ifsc").alias("payee_ifsc"),
        F.col("e.payee.vpa").alias("payee_vpa"),
        F.col("e.amount_paise").alias("amount_paise"),
        F.col("e.currency").alias("currency"),
        F.col("e.mcc").alias("mcc"),
        F.col("e.device_id").alias("device_id"),
        F.col("e.ip").alias("ip"),
        F.col("e.geo.city").alias("city"),
        F.col("e.geo.lat").alias("lat"),
        F.col("e.geo.lon").alias("lon"),
        F.col("e.status").alias("status"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("kafka_ts").alias("kafka_timestamp"),
    ]


def _event_struct():
    from pyspark.sql import functions as F

    from ingestion.events import spark_schema

    return F.from_json("value", spark_schema()).alias("e")


def typed_transactions(validated_df):
    """Valid records -> one flat, typed row per transaction (the Cassandra layout).

    For batch jobs over history: ``landed_at`` is the query's time. (The stream sets it
    in the landing task instead: see :func:`landing_frame`.)"""
    from pyspark.sql import functions as F

    parsed = validated_df.where(F.col("dlq_reason").isNull()).select(
        _event_struct(), "partition", "offset", "kafka_ts")
    return parsed.select(*_typed_columns(), F.current_timestamp().alias("landed_at"))


_RAW_ONLY = ("topic", "raw_key", "raw_value")


def landing_frame(raw_text_df):
    """Every record once, not yet validated: the typed columns as Spark parses them (what
    lands for a valid event; ignored for an invalid one) and the raw record. ``raw_text_df``:
    a DataFrame or a PreparedPlan (:func:`landing_plan`).

    No ``landed_at`` here: :func:`land_partition` stamps it. ``current_timestamp()`` in a
    streaming plan becomes a literal of the micro-batch's time, which whole-stage codegen
    inlines into the generated Java source, so every micro-batch compiled its landing stage
    anew (Janino) and the JIT compiled the new classes again: the driver JVM's C2 compiler
    threads used ~70 % of its CPU in steady state (bench/thread_cpu.py; notes on issue 8)."""
    from pyspark.sql import functions as F

    return (raw_text_df.select(_event_struct(), "partition", "offset", "kafka_ts", "topic",
                               F.col("key").alias("raw_key"), F.col("value").alias("raw_value"))
            .select(*_typed_columns(), *_RAW_ONLY))


def landing_plan(records, target: CassandraTarget, bootstrap: str, dlq_topic: str):
    """A micro-batch's landing (:func:`landing_frame`, then :func:`land_partition`) as a
    PreparedPlan built once per query from the streaming frame ``records``, whose schema
    every micro-batch has: its frame is the valid typed rows, landed."""
    from spark_jobs.prepared_plan import PreparedPlan

    frame = landing_frame(PreparedPlan(records.sparkSession, records.schema))
    landed_schema = typed_schema(frame)
    return frame.mapInArrow(land_partition(target, bootstrap, dlq_topic, landed_schema), landed_schema)


def typed_schema(landing_df):
    """The typed rows :func:`land_partition` yields for a :func:`landing_frame`: its
    transaction columns plus ``landed_at``."""
    from pyspark.sql import types as T

    return T.StructType([*landing_df.drop(*_RAW_ONLY).schema.fields, T.StructField("landed_at", T.TimestampType())])


def land_partition(target: CassandraTarget, bootstrap: str, dlq_topic: str, out_schema):
    """mapInArrow function over :func:`landing_frame`: stamps ``landed_at`` (when the task
    lands the batch), validates every record against the
    event contract (spark_jobs/validation.with_verdicts), writes valid records to
    ``transactions`` and invalid ones, with the reason, to ``dead_letters`` and the
    dead-letter topic, from the task that holds them; yields the valid typed rows for
    detection.

    Landing inside the micro-batch's one Spark job, instead of a write job, a dead-letter
    check job and a Kafka job of its own, is what made small micro-batches cheap
    (bench/batch_step_profile.py); validating here rather than in a Python step of its own
    saves each micro-batch a round trip of every record through Arrow and a Python task per
    Kafka partition (notes on issue 8).
    """
    import json

    from spark_jobs.kafka_sink import publish
    from spark_jobs.validation import with_verdicts

    names = list(out_schema.names)

    def run(batches: Iterator) -> Iterator:
        from datetime import datetime, timezone

        import pyarrow as pa
        import pyarrow.compute as pc

        for batch in batches:
            if batch.num_rows == 0:
                continue
            stamp_type = batch.column("kafka_timestamp").type  # Spark's timestamp as Arrow gives it
            landed = pa.repeat(pa.scalar(datetime.now(timezone.utc), stamp_type), batch.num_rows)
            batch = batch.append_column("landed_at", landed)
            batch = with_verdicts(batch, "raw_value", ("reason", "detail"))
            valid_mask = pc.is_null(batch.column("reason"))
            valid = batch.filter(valid_mask)
            if valid.num_rows:
                write_rows(target, "transactions", TRANSACTION_COLUMNS, arrow_rows(valid, TRANSACTION_COLUMNS))
            bad = batch.filter(pc.invert(valid_mask))
            if bad.num_rows:
                letters = arrow_rows(bad, DEAD_LETTER_COLUMNS)
                write_rows(target, "dead_letters", DEAD_LETTER_COLUMNS, letters)
                messages = []
                for letter in letters:
                    record = dict(zip(DEAD_LETTER_COLUMNS, letter))
                    del record["landed_at"]  # the topic carries where it came from, not when it landed
                    key = record["raw_key"]
                    messages.append((None if key is None else key.encode(),
                                     json.dumps(record, default=_json_default, separators=(",", ":")).encode()))
                publish(bootstrap, dlq_topic, messages)
            if valid.num_rows:
                yield valid.select(names)

    return run


def _json_default(value):
    """Datetimes (Kafka timestamps) as ISO 8601 with their UTC offset (arrow_rows gives
    naive UTC datetimes for the Cassandra driver; a JSON reader must not guess)."""
    from datetime import timezone

    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def start_ingest_query(spark, settings: Settings, opts: StreamOptions, drift=None):
    from spark_jobs.validation import raw_text

    target = CassandraTarget.from_settings(settings, opts.keyspace)
    records = raw_text(read_kafka(spark, settings, opts))
    # The micro-batch's plan is built once, not per micro-batch (spark_jobs/prepared_plan.py):
    # landing here, features to outputs by the Detector (again when the rules or model change).
    landing = landing_plan(records, target, settings.kafka.bootstrap, opts.dlq_topic)
    detector = None
    if opts.detect:
        from spark_jobs.detection import Detector

        # The checkpoint names the query: profile updates carry "<checkpoint>#<batch id>",
        # so a replay of a micro-batch starts from the same profiles (exactly-once features).
        detector = Detector(settings, target, landing, opts.checkpoint_dir, rules_path=opts.rules_path,
                            registry_root=opts.registry_root and Path(opts.registry_root),
                            alerts_topic=opts.alerts_topic)
    timings = deque(maxlen=1000)  # per micro-batch, on the driver: plan / run / drift seconds

    def _write(batch_df, batch_id: int) -> None:
        # The whole micro-batch is ONE query: land (transactions, dead letters), then
        # features, rules, models, outputs, all written from the tasks that hold the rows;
        # the driver only collects the few columns the drift monitor needs. (Adaptive query
        # execution runs its three stages as three Spark jobs.) Every separate query cost
        # ~0.3-0.7 s here whatever its size, and the former write-per-step layout (6-8
        # jobs) was most of a small batch's time (bench/batch_step_profile.py).
        started = time.monotonic()
        plan = landing if detector is None else detector.plan(batch_df.sparkSession)
        frame = plan(batch_df)
        planned = time.monotonic()
        if drift is None:
            frame.write.format("noop").mode("overwrite").save()
            ran = time.monotonic()
        else:
            scores = frame.toPandas()
            ran = time.monotonic()
            drift.observe_scores(scores, batch_id, detector.models.drift_reference())
        timings.append({"batch_id": batch_id, "plan_s": planned - started, "run_s": ran - planned,
                        "drift_s": time.monotonic() - ran})

    query = _start(spark, records.writeStream.foreachBatch(_write), opts, "ingest")
    query.detector = detector  # for operators and tests: current rules, model, last rules error
    query.drift = drift
    query.batch_timings = timings  # where the driver's time goes, per micro-batch (bench/stream_at_rate.py)
    return query


LABEL_COLUMNS = ("txn_id", "is_fraud", "scenario", "label_time", "received_at")


def start_labels_query(spark, settings: Settings, opts: StreamOptions, drift=None):
    """Ground-truth labels as they arrive: into ``labels``, confirmed frauds by payee
    into ``payee_fraud_labels`` (the payee_fraud_reports feature reads it), and the
    outcomes of the stream's decisions to the drift monitor."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    target = CassandraTarget.from_settings(settings, opts.keyspace)
    schema = T.StructType([T.StructField("txn_id", T.StringType()), T.StructField("is_fraud", T.BooleanType()),
                           T.StructField("scenario", T.StringType()), T.StructField("label_time", T.StringType())])
    labels = read_kafka(spark, settings, opts, topic=opts.labels_topic).select(
        F.from_json(F.col("value").cast("string"), schema).alias("l")).select(
        # received_at is stamped in _write: current_timestamp() would make every micro-batch
        # compile its plan anew (see landing_frame).
        "l.txn_id", "l.is_fraud", "l.scenario", F.to_timestamp("l.label_time").alias("label_time"),
    ).where(F.col("txn_id").isNotNull())

    def _write(batch_df, batch_id: int) -> None:
        from datetime import datetime, timezone

        rows = batch_df.collect()  # labels are few (frauds, chargebacks)
        if not rows:
            return
        received_at = datetime.now(timezone.utc).replace(tzinfo=None)  # naive UTC, as the driver binds it
        write_rows(target, "labels", LABEL_COLUMNS,
                   [(r.txn_id, r.is_fraud, r.scenario, r.label_time, received_at) for r in rows])
        frauds = {r.txn_id: r for r in rows if r.is_fraud}
        if frauds:
            _write_payee_fraud_labels(frauds, received_at)
        if drift is not None:
            import pandas as pd

            drift.observe_labels(pd.DataFrame([(r.txn_id, r.is_fraud, r.label_time) for r in rows],
                                              columns=["txn_id", "is_fraud", "label_time"]), batch_id)

    def _write_payee_fraud_labels(frauds: dict, received_at) -> None:
        from spark_jobs.cassandra_sink import prepared, session_for

        session = session_for(target)
        stmt = prepared(session, "SELECT txn_id, payee_account, payee_vpa FROM transactions WHERE txn_id IN ?")
        ids = list(frauds)
        payees = []
        for i in range(0, len(ids), 100):
            for t in session.execute(stmt, (ids[i:i + 100],)):
                lab = frauds[t.txn_id]
                payees.append((t.payee_account or t.payee_vpa, t.txn_id, lab.label_time, lab.scenario, received_at))
        write_rows(target, "payee_fraud_labels", ("payee_key", "txn_id", "label_time", "scenario", "received_at"),
                   payees)

    return _start(spark, labels.writeStream.foreachBatch(_write), opts, "labels", opts.secondary_trigger_seconds)


def _start(spark, writer, opts: StreamOptions, name: str, trigger_seconds: float | None = None):
    from spark_jobs.session import checkpoint_location

    writer = writer.option("checkpointLocation", checkpoint_location(spark, f"{opts.checkpoint_dir}/{name}"))
    if opts.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{trigger_seconds or opts.trigger_seconds} seconds")
    return writer.queryName(f"{name}_{opts.topic}").start()


def start_all(spark, settings: Settings, opts: StreamOptions) -> list:
    """Start every query of the transactions stream; returns them (ingest first)."""
    drift = None
    if opts.detect and settings.drift.enabled:
        from spark_jobs.drift_stream import StreamDrift, default_notifier

        # State keyed by the source topic: one monitor per stream of transactions.
        drift = StreamDrift(settings, CassandraTarget.from_settings(settings, opts.keyspace), opts.topic,
                            notifier=default_notifier(settings), registry_root=opts.registry_root)
    queries = [start_ingest_query(spark, settings, opts, drift)]
    if opts.detect:
        queries.append(start_labels_query(spark, settings, opts, drift))
    return queries


def main(argv: list[str] | None = None) -> int:
    from spark_jobs.heartbeat import register as register_heartbeat
    from spark_jobs.session import build_session

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topic", help="source topic (default: kafka.topics.transactions)")
    parser.add_argument("--dlq-topic", help="dead-letter topic (default: kafka.topics.dead_letter)")
    parser.add_argument("--checkpoint-dir", help="checkpoint root (default: <state_dir>/checkpoints/transactions)")
    parser.add_argument("--trigger-seconds", type=float, help="micro-batch interval (default: spark.trigger_seconds)")
    parser.add_argument("--labels-topic", help="ground-truth labels topic (default: kafka.topics.labels)")
    parser.add_argument("--alerts-topic", help="alerts topic (default: kafka.topics.alerts)")
    parser.add_argument("--rules", help="rules YAML, reloaded when it changes (default: config/rules.yaml)")
    parser.add_argument("--no-detect", action="store_true", help="ingest only: no features, account aggregates, scoring or alerts")
    parser.add_argument("--available-now", action="store_true",
                        help="process what is in the topic now, then stop (batch-style catch-up)")
    args = parser.parse_args(argv)
    settings = load_settings()
    opts = StreamOptions.from_settings(
        settings, topic=args.topic, dlq_topic=args.dlq_topic, checkpoint_dir=args.checkpoint_dir,
        trigger_seconds=args.trigger_seconds, available_now=args.available_now or None,
        labels_topic=args.labels_topic, alerts_topic=args.alerts_topic, rules_path=args.rules,
        detect=False if args.no_detect else None,
    )
    spark = build_session(settings, "txmon-transactions-stream")
    register_heartbeat(spark, settings)  # <state_dir>/stream/heartbeat.json, read by stream_supervisor
    queries = start_all(spark, settings, opts)
    if opts.available_now:
        for q in queries:
            q.awaitTermination()
    else:
        spark.streams.awaitAnyTermination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
