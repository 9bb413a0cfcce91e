"""Where one detection micro-batch spends its time, step by step, timed from the driver.

Spark's ``durationMs`` lumps a foreachBatch sink into ``addBatch``. This runs the stream's
ingest query (available-now, ``--rows-per-batch`` per micro-batch) over simulated events
with timers around each step of ``_write`` in spark_jobs/transactions_stream.py: the
features and the scoring are persisted and counted on their own so their time is not
folded into the write that would otherwise compute them. That extra persist is a
profiling artefact (a little slower than the stream); the step shares are what matter.

    TXMON_KAFKA__PORT=... TXMON_CASSANDRA__PORT=... \\
        .venv/bin/python bench/batch_step_profile.py --events 8000 --rows-per-batch 1000

Needs running services (``txmon infra up``) and a champion model (``txmon train``).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def instrument(totals: dict[str, float]) -> None:
    """Wrap the stream's steps with timers (this process only)."""
    import spark_jobs.cassandra_sink as sink
    import spark_jobs.detection as detection
    import spark_jobs.transactions_stream as stream

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - t0
        return wrapper

    write_dataframe = sink.write_dataframe

    def write(df, target, table, *args, **kwargs):
        return timed(f"write {table}", write_dataframe)(df, target, table, *args, **kwargs)

    stream.write_dataframe = write
    detection.write_dataframe = write
    add_features = detection.add_features_to_batch

    def features(*args, **kwargs):
        df = add_features(*args, **kwargs).persist()
        timed("features (payee + payer folds)", df.count)()
        return df

    detection.add_features_to_batch = features
    score = detection.Detector.score

    def scoring(self, *args, **kwargs):
        df = score(self, *args, **kwargs).persist()
        timed("rules + models + reasons", df.count)()
        return df

    detection.Detector.score = scoring
    detector_write = detection.Detector.write
    detection.Detector.write = lambda self, scored: timed("detector outputs (scored + alerts)", detector_write)(
        self, scored)


def main(argv: list[str] | None = None) -> None:
    from bench import baselines
    from infra.services.kafka import ensure_topics
    from infra.settings import load_settings
    from spark_jobs.session import build_session

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=8000)
    parser.add_argument("--rows-per-batch", type=int, default=1000, help="maxOffsetsPerTrigger")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--partitions", type=int, help="Kafka partitions of the topic [default: kafka.partitions]")
    args = parser.parse_args(argv)

    os.environ["TXMON_SPARK__MAX_OFFSETS_PER_TRIGGER"] = str(args.rows_per_batch)
    if args.partitions:
        os.environ["TXMON_KAFKA__PARTITIONS"] = str(args.partitions)
    settings = load_settings()
    stamp = int(time.time())
    topic = f"steps_{stamp}"
    ensure_topics(settings.kafka.bootstrap, [topic, f"{topic}_dlq", f"{topic}_alerts"], settings.kafka.partitions)
    baselines.kafka_produce(settings, topic, baselines.simulated_payloads(args.events, args.seed))
    totals: dict[str, float] = defaultdict(float)
    instrument(totals)
    spark = build_session(settings, "txmon-batch-steps")
    rate, progress = baselines.spark_stream(
        spark, settings, topic, True, str(settings.state_path / "checkpoints" / f"steps-{stamp}"),
        dlq_topic=f"{topic}_dlq", alerts_topic=f"{topic}_alerts")
    batches = len(progress)
    add_batch = sum(p["durationMs"].get("addBatch", 0) for p in progress) / 1000
    print(f"{settings.kafka.partitions} Kafka partitions, {settings.spark.shuffle_partitions} shuffle partitions: "
          f"{rate.rows:,} rows in {batches} micro-batches of ~{rate.rows / max(batches, 1):,.0f}; "
          f"{rate.rows_per_s:,.0f} rows/s; loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'step':<40}{'s per micro-batch':>18}{'share of addBatch':>19}")
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{name:<40}{seconds / batches:>18.2f}{seconds / add_batch:>19.0%}")
    print(f"{'addBatch (whole foreachBatch)':<40}{add_batch / batches:>18.2f}")


if __name__ == "__main__":
    main()
