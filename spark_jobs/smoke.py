"""Smoke pipeline: Kafka topic -> Structured Streaming -> Cassandra ``smoke_events``.

Proves the wiring (connector jars, interpreter, driver writes) end to end. Records are
JSON ``{"run_id": ..., "id": ...}``; each lands as one row keyed by (run_id, id).

    spark-submit --jars <spark-kafka jars> spark_jobs/smoke.py --topic smoke
    txmon smoke --count 1000            # produces, runs this job, prints what landed
"""

from __future__ import annotations

import argparse
import sys

from txmon.infra.kafka_client import spark_kafka_options
from txmon.infra.settings import Settings, load_settings
from txmon.spark_jobs.cassandra_sink import CassandraTarget, write_dataframe
from txmon.spark_jobs.session import build_session, checkpoint_location

SMOKE_COLUMNS = ("run_id", "id", "payload", "kafka_partition", "kafka_offset", "landed_at")


def start_smoke_query(
    spark, settings: Settings, topic: str, checkpoint: str, available_now: bool = True, keyspace: str | None = None
):
    """Start the streaming query; with ``available_now`` it stops once the topic is drained."""
    # pyspark on first use: txmon smoke imports this module before it starts Spark.
    from pyspark.sql import functions as F

    target = CassandraTarget.from_settings(settings, keyspace)
    source = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka.bootstrap)
        .options(**spark_kafka_options(settings))
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    value = F.col("value").cast("string")
    rows = source.select(
        F.coalesce(F.get_json_object(value, "$.run_id"), F.lit("none")).alias("run_id"),
        F.coalesce(
            F.get_json_object(value, "$.id"),
            F.concat_ws("-", F.col("topic"), F.col("partition"), F.col("offset")),
        ).alias("id"),
        value.alias("payload"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.current_timestamp().alias("landed_at"),
    )

    def _write(batch_df, _batch_id: int) -> None:
        write_dataframe(batch_df, target, "smoke_events", SMOKE_COLUMNS)

    writer = rows.writeStream.foreachBatch(_write).option("checkpointLocation", checkpoint_location(spark, checkpoint))
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime="1 second")
    return writer.queryName(f"smoke_{topic}").start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topic", default="smoke", help="Kafka topic to read (default: smoke)")
    parser.add_argument("--checkpoint", help="checkpoint dir (default: <state_dir>/checkpoints/smoke-<topic>)")
    parser.add_argument("--continuous", action="store_true", help="keep running instead of draining and stopping")
    args = parser.parse_args(argv)
    settings = load_settings()
    checkpoint = args.checkpoint or str(settings.state_path / "checkpoints" / f"smoke-{args.topic}")
    spark = build_session(settings, "txmon-smoke")
    query = start_smoke_query(spark, settings, args.topic, checkpoint, available_now=not args.continuous)
    query.awaitTermination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
