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
import json
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from cassandra.concurrent import execute_concurrent_with_args

from txmon.infra import fraud_label_days
from txmon.infra.errors import EventValidationError, TxmonError
from txmon.infra.kafka_client import spark_kafka_options
from txmon.infra.settings import Settings, load_settings
from txmon.infra.statements import TRANSACTION_CONTENT_COLUMNS, TRANSACTION_PAYEES_IN, TRANSACTION_VERSIONS_IN
from txmon.ingestion.events import DeadLetterReason, safe_text, validate_label
from txmon.models.config import models_dir
from txmon.spark_jobs import validation
from txmon.spark_jobs.cassandra_sink import CassandraTarget, arrow_rows, prepared, retried, session_for, write_rows
from txmon.spark_jobs.checkpoint_lock import CheckpointLock
from txmon.spark_jobs.detection import Detector
from txmon.spark_jobs.drift_stream import StreamDrift, default_notifier
from txmon.spark_jobs.heartbeat import register as register_heartbeat
from txmon.spark_jobs.kafka_sink import publish
from txmon.spark_jobs.prepared_plan import PreparedPlan
from txmon.spark_jobs.recovery import Backoff, SparkQueries, dependency_probe, keep_running
from txmon.spark_jobs.session import build_session, checkpoint_location

# The transactions table's and dead_letters table's columns as the stream binds them.
TRANSACTION_COLUMNS = validation.TRANSACTION_COLUMNS
DEAD_LETTER_COLUMNS = validation.DEAD_LETTER_COLUMNS
# What "the same event" means for a txn_id seen again: every contract field, not where
# Kafka put it or when it landed.
CONTENT_COLUMNS = TRANSACTION_CONTENT_COLUMNS


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
    def from_settings(cls, settings: Settings, **overrides) -> StreamOptions:
        values: dict[str, Any] = {
            "topic": settings.kafka.topics.transactions,
            "dlq_topic": settings.kafka.topics.dead_letter,
            "checkpoint_dir": str(settings.state_path / "checkpoints" / "transactions"),
            "keyspace": settings.cassandra.keyspace,
            "trigger_seconds": settings.spark.trigger_seconds,
            "secondary_trigger_seconds": settings.spark.secondary_trigger_seconds,
            "max_offsets_per_trigger": settings.spark.max_offsets_per_trigger,
            "labels_topic": settings.kafka.topics.labels,
            "alerts_topic": settings.kafka.topics.alerts,
            "registry_root": str(_models_dir()),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _models_dir():
    return models_dir()


def read_kafka(spark, settings: Settings, opts: StreamOptions, topic: str | None = None):
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap)
        .options(**spark_kafka_options(settings))
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


def landed_transactions(raw_df, judge: validation.Judge = validation.Judge()):
    """Kafka source DataFrame -> typed rows of its valid events, for batch jobs over history
    (``landed_at`` is when the task judged them; nothing is written)."""
    return validation.valid_transactions(raw_df, judge)


def landing_plan(
    records, target: CassandraTarget, bootstrap: str, dlq_topic: str, judge: validation.Judge = validation.Judge()
):
    """A micro-batch's landing (:func:`land_partition`) as a PreparedPlan built once per
    query from the streaming frame ``records`` (:func:`validation.raw_records`), whose
    schema every micro-batch has: its frame is the valid typed rows, landed."""
    plan = PreparedPlan(records.sparkSession, records.schema)
    return plan.mapInArrow(land_partition(target, bootstrap, dlq_topic, judge), validation.typed_schema())


def land_partition(
    target: CassandraTarget, bootstrap: str, dlq_topic: str, judge: validation.Judge = validation.Judge()
):
    """mapInArrow function over raw Kafka records: judges every record in Python
    (spark_jobs/validation.judge_batch: nothing Spark-side interprets the payload, so no
    value can fail the micro-batch), sets aside txn_ids landed before
    (:func:`split_duplicates`), writes the valid records to ``transactions`` and the rest,
    with the reason, to ``dead_letters`` and the dead-letter topic, from the task that
    holds them; yields the typed rows of the events to detect on.

    Landing inside the micro-batch's one Spark job, instead of a write job, a dead-letter
    check job and a Kafka job of its own, is what made small micro-batches cheap
    (bench/batch_step_profile.py).
    """

    def run(batches: Iterator) -> Iterator:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            now = datetime.now(UTC)
            judged = validation.judge_batch(batch, now, judge)
            valid, conflicts = split_duplicates(target, judged.valid)
            letters = judged.dead_letters + validation.dead_letter_rows(
                batch, [(judged.index[i], error) for i, error in conflicts], now
            )
            if valid.num_rows:
                write_rows(target, "transactions", TRANSACTION_COLUMNS, arrow_rows(valid, TRANSACTION_COLUMNS))
            if letters:
                publish_dead_letters(target, bootstrap, dlq_topic, letters)
            if valid.num_rows:
                yield valid

    return run


def publish_dead_letters(target: CassandraTarget, bootstrap: str, dlq_topic: str, letters: list[tuple]) -> None:
    """Dead-letter tuples (:data:`DEAD_LETTER_COLUMNS`) to the table and the topic."""

    # Few rows per batch: a dead letter may carry validation.MAX_RAW_CHARS of payload, and
    # Cassandra refuses batches over batch_size_fail_threshold.
    write_rows(target, "dead_letters", DEAD_LETTER_COLUMNS, letters, batch_rows=2)
    messages = []
    for letter in letters:
        record = dict(zip(DEAD_LETTER_COLUMNS, letter))
        del record["landed_at"]  # the topic carries where it came from, not when it landed
        key = record["raw_key"]
        messages.append(
            (
                None if key is None else key.encode("utf-8", "backslashreplace"),
                json.dumps(record, default=_json_default, separators=(",", ":")).encode(),
            )
        )
    publish(bootstrap, dlq_topic, messages)


def _content(values: tuple) -> tuple:
    """Comparable content of a transaction: event time to the millisecond (what Cassandra
    keeps) as naive UTC, everything else as is."""

    out = list(values)
    t = out[2]
    if t is not None:
        if t.tzinfo is not None:
            t = t.astimezone(UTC).replace(tzinfo=None)
        out[2] = t.replace(microsecond=t.microsecond // 1000 * 1000)
    return tuple(out)


def split_duplicates(target: CassandraTarget, valid):
    """Valid typed rows -> (rows to land and detect on, [(row index, conflicting_duplicate
    error)]).

    A txn_id already landed (in Cassandra, or earlier in this batch) from another Kafka
    record is a duplicate: with the same content it is a no-op (a producer's retry, a file
    replayed twice), dropped before windows or scoring can count it again; with other
    content it is dead-lettered and the first version stands. The same Kafka record seen
    again (partition and offset equal) is Spark replaying an unfinished micro-batch, and
    lands again as before. Two records of one txn_id in one micro-batch but in different
    Kafka partitions (different payers) are judged by different tasks and both land: the
    check is per task, not a lock (docs/architecture.md)."""
    if valid.num_rows == 0:
        return valid, []
    ids = valid.column("txn_id").to_pylist()
    stored = _stored_versions(target, list(dict.fromkeys(ids)))
    contents = list(zip(*(valid.column(c).to_pylist() for c in CONTENT_COLUMNS)))
    partitions = valid.column("kafka_partition").to_pylist()
    offsets = valid.column("kafka_offset").to_pylist()
    keep, letters = [], []
    seen: dict[str, tuple] = {}
    for i, txn_id in enumerate(ids):
        content = _content(contents[i])
        first = seen.get(txn_id) or stored.get(txn_id)
        if first is None or (first[1], first[2]) == (partitions[i], offsets[i]):
            seen[txn_id] = (content, partitions[i], offsets[i])
            keep.append(i)
            continue
        if first[0] == content:
            continue  # identical duplicate: already counted once
        letters.append((i, _conflict(txn_id, first, content)))
    if len(keep) == valid.num_rows:
        return valid, letters
    return valid.take(pa.array(keep, pa.int64())), letters


def _stored_versions(target: CassandraTarget, ids: list[str]) -> dict[str, tuple]:
    """txn_id -> (content, kafka partition, kafka offset) of the ones already landed."""
    return retried(target, f"checking {len(ids)} txn_ids for duplicates", lambda: _read_versions(target, ids))


def _read_versions(target: CassandraTarget, ids: list[str]) -> dict[str, tuple]:
    session = session_for(target)
    stmt = prepared(session, TRANSACTION_VERSIONS_IN)
    chunks = [(ids[i : i + 100],) for i in range(0, len(ids), 100)]
    found = {}
    for _ok, rows in execute_concurrent_with_args(
        session, stmt, chunks, concurrency=target.concurrency, raise_on_first_error=True
    ):
        for row in rows:
            found[row.txn_id] = (_content(tuple(row)[: len(CONTENT_COLUMNS)]), row.kafka_partition, row.kafka_offset)
    return found


def _conflict(txn_id: str, first: tuple, content: tuple):
    differs = [
        f"{c}: {first[0][k]!r} -> {content[k]!r}" for k, c in enumerate(CONTENT_COLUMNS) if first[0][k] != content[k]
    ]
    detail = (
        f"txn_id {txn_id} already landed from partition {first[1]} offset {first[2]} with other "
        f"content ({'; '.join(differs)}); the first version stands in transactions, this one is "
        "kept here; send a new txn_id for a new payment"
    )
    return EventValidationError(
        DeadLetterReason.CONFLICTING_DUPLICATE, safe_text(detail)[: validation.MAX_DETAIL_CHARS]
    )


def _json_default(value):
    """Datetimes (Kafka timestamps) as ISO 8601 with their UTC offset (arrow_rows gives
    naive UTC datetimes for the Cassandra driver; a JSON reader must not guess)."""

    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def start_ingest_query(spark, settings: Settings, opts: StreamOptions, drift=None):
    target = CassandraTarget.from_settings(settings, opts.keyspace)
    records = validation.raw_records(read_kafka(spark, settings, opts))
    # The micro-batch's plan is built once, not per micro-batch (spark_jobs/prepared_plan.py):
    # landing here, features to outputs by the Detector (again when the rules or model change).
    landing = landing_plan(
        records, target, settings.kafka.bootstrap, opts.dlq_topic, validation.Judge.from_settings(settings)
    )
    detector = None
    if opts.detect:
        # The checkpoint names the query: profile updates carry "<checkpoint>#<batch id>",
        # so a replay of a micro-batch starts from the same profiles (exactly-once features).
        detector = Detector(
            settings,
            target,
            landing,
            opts.checkpoint_dir,
            rules_path=Path(opts.rules_path) if opts.rules_path else None,
            registry_root=Path(opts.registry_root) if opts.registry_root else None,
            alerts_topic=opts.alerts_topic,
        )
    timings: deque[dict[str, Any]] = deque(maxlen=1000)  # per micro-batch, on the driver: plan / run / drift seconds

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
            assert detector is not None  # drift is watched only where there are scores
            scores = frame.toPandas()
            ran = time.monotonic()
            drift.observe_scores(scores, batch_id, detector.models.drift_reference())
        timings.append(
            {
                "batch_id": batch_id,
                "plan_s": planned - started,
                "run_s": ran - planned,
                "drift_s": time.monotonic() - ran,
            }
        )

    query = _start(spark, records.writeStream.foreachBatch(_write), opts, "ingest")
    query.detector = detector  # for operators and tests: current rules, model, last rules error
    query.drift = drift
    query.batch_timings = timings  # where the driver's time goes, per micro-batch (bench/stream_at_rate.py)
    return query


LABEL_COLUMNS = ("txn_id", "is_fraud", "scenario", "label_time", "received_at")


def start_labels_query(spark, settings: Settings, opts: StreamOptions, drift=None):
    """Ground-truth labels as they arrive: into ``labels``, frauds by the day they came
    into ``fraud_labels_by_day`` (the console's fraud caught), confirmed frauds by payee
    into ``payee_fraud_labels`` (the payee_fraud_reports feature reads it), and the
    outcomes of the stream's decisions to the drift monitor. Each record is judged by the
    label contract (ingestion.events.validate_label) in Python on the driver (labels are
    few); one it rejects is dead-lettered with its reason, like a bad transaction."""
    target = CassandraTarget.from_settings(settings, opts.keyspace)
    records = validation.raw_records(read_kafka(spark, settings, opts, topic=opts.labels_topic))

    def _write(batch_df, batch_id: int) -> None:
        rows = batch_df.collect()
        if not rows:
            return
        now = datetime.now(UTC)
        received_at = now.replace(tzinfo=None)  # naive UTC, as the driver binds it
        labels, letters = judge_labels(rows, now)
        if letters:
            publish_dead_letters(target, settings.kafka.bootstrap, opts.dlq_topic, letters)
        if not labels:
            return
        # Before ``labels`` is overwritten: the day rows of a relabelled transaction are
        # found through the label it replaces.
        batch = [(lab.txn_id, lab.is_fraud, lab.scenario) for lab in labels]
        retried(
            target,
            "fraud_labels_by_day",
            lambda: fraud_label_days.record(session_for(target), prepared, batch, received_at),
        )
        write_rows(
            target,
            "labels",
            LABEL_COLUMNS,
            [(lab.txn_id, lab.is_fraud, lab.scenario, _naive(lab.label_time), received_at) for lab in labels],
        )
        frauds = {lab.txn_id: lab for lab in labels if lab.is_fraud}
        if frauds:
            _write_payee_fraud_labels(frauds, received_at)
        if drift is not None:
            drift.observe_labels(
                pd.DataFrame(
                    [(lab.txn_id, lab.is_fraud, lab.label_time) for lab in labels],
                    columns=["txn_id", "is_fraud", "label_time"],
                ),
                batch_id,
            )

    def _write_payee_fraud_labels(frauds: dict, received_at) -> None:
        session = session_for(target)
        stmt = prepared(session, TRANSACTION_PAYEES_IN)
        ids = list(frauds)
        payees = []
        for i in range(0, len(ids), 100):
            for t in session.execute(stmt, (ids[i : i + 100],)):
                lab = frauds[t.txn_id]
                payees.append(
                    (
                        t.payee_account or t.payee_vpa,
                        t.txn_id,
                        _naive(lab.label_time),
                        lab.scenario,
                        received_at,
                        t.event_time,
                    )
                )
        write_rows(
            target,
            "payee_fraud_labels",
            ("payee_key", "txn_id", "label_time", "scenario", "received_at", "event_time"),
            payees,
        )

    return _start(spark, records.writeStream.foreachBatch(_write), opts, "labels", opts.secondary_trigger_seconds)


def judge_labels(rows, now) -> tuple[list, list[tuple]]:
    """Collected raw label records -> (valid labels, the last per txn_id; dead-letter tuples)."""

    labels: dict[str, object] = {}
    bad = []
    for i, row in enumerate(rows):
        try:
            label = validate_label(row.value if row.value is not None else b"")
        except EventValidationError as exc:
            bad.append((i, exc))
            continue
        labels[label.txn_id] = label
    if not bad:
        return list(labels.values()), []
    raw = pa.RecordBatch.from_pylist(
        [row.asDict() for row in rows],
        schema=pa.schema(
            [
                ("key", pa.binary()),
                ("value", pa.binary()),
                ("topic", pa.string()),
                ("partition", pa.int32()),
                ("offset", pa.int64()),
                ("kafka_ts", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )
    return list(labels.values()), validation.dead_letter_rows(raw, bad, now)


def _naive(t):
    """A timezone-aware datetime as naive UTC (how the Cassandra driver binds it)."""

    return t.astimezone(UTC).replace(tzinfo=None)


def _start(spark, writer, opts: StreamOptions, name: str, trigger_seconds: float | None = None):
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
        # State keyed by the source topic: one monitor per stream of transactions.
        drift = StreamDrift(
            settings,
            CassandraTarget.from_settings(settings, opts.keyspace),
            opts.topic,
            notifier=default_notifier(settings),
            registry_root=opts.registry_root,
        )
    queries = [start_ingest_query(spark, settings, opts, drift)]
    if opts.detect:
        queries.append(start_labels_query(spark, settings, opts, drift))
    return queries


def main(argv: list[str] | None = None) -> int:
    """Run the stream until it is stopped. Outages of Kafka or Cassandra are waited out
    (spark_jobs/recovery.py); a TxmonError (a second stream on the checkpoint, bad
    configuration, recovery given up) is one line on stderr and exit code 2, whether this
    runs as ``txmon stream`` or under spark-submit."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topic", help="source topic (default: kafka.topics.transactions)")
    parser.add_argument("--dlq-topic", help="dead-letter topic (default: kafka.topics.dead_letter)")
    parser.add_argument("--checkpoint-dir", help="checkpoint root (default: <state_dir>/checkpoints/transactions)")
    parser.add_argument("--trigger-seconds", type=float, help="micro-batch interval (default: spark.trigger_seconds)")
    parser.add_argument("--labels-topic", help="ground-truth labels topic (default: kafka.topics.labels)")
    parser.add_argument("--alerts-topic", help="alerts topic (default: kafka.topics.alerts)")
    parser.add_argument("--rules", help="rules YAML, reloaded when it changes (default: config/rules.yaml)")
    parser.add_argument(
        "--no-detect", action="store_true", help="ingest only: no features, account aggregates, scoring or alerts"
    )
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="process what is in the topic now, then stop (batch-style catch-up)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        opts = StreamOptions.from_settings(
            settings,
            topic=args.topic,
            dlq_topic=args.dlq_topic,
            checkpoint_dir=args.checkpoint_dir,
            trigger_seconds=args.trigger_seconds,
            available_now=args.available_now or None,
            labels_topic=args.labels_topic,
            alerts_topic=args.alerts_topic,
            rules_path=args.rules,
            detect=False if args.no_detect else None,
        )
        # Before Spark starts: a second stream on this checkpoint fails at once.
        with CheckpointLock(opts.checkpoint_dir):
            spark = build_session(settings, "txmon-transactions-stream")
            # <state_dir>/stream/heartbeat.json, read by the supervisor
            heartbeat = register_heartbeat(spark, settings)
            if opts.available_now:
                for q in start_all(spark, settings, opts):
                    q.awaitTermination()
                return 0
            keep_running(
                SparkQueries(spark, lambda: start_all(spark, settings, opts)),
                probe=dependency_probe(settings),
                heartbeat=heartbeat,
                policy=Backoff.query_restarts(settings),
            )
            return 0
    except TxmonError as exc:
        print(f"txmon: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
