"""Where one detection micro-batch spends its time, step by step, timed inside the tasks.

A micro-batch of the stream is one Spark job (spark_jobs/transactions_stream.py ``_write``):
land (transactions, dead letters) -> payee fold -> payer fold -> rules -> scoring ->
outputs, each Python step a ``mapInArrow`` function running in the Spark tasks. This
runs the stream's ingest query (available-now, ``--rows-per-batch`` per micro-batch) over
simulated events with a timer around each of those functions; the timings come back to
the driver through a Spark accumulator. Worker seconds are summed over the tasks (two
run at once on local[2]); what addBatch holds beyond them is Spark's own share:
scheduling, the Kafka read, JSON parsing, shuffles, Arrow transfer to and from Python.

    TXMON_KAFKA__PORT=... TXMON_CASSANDRA__PORT=... \\
        .venv/bin/python bench/batch_step_profile.py --events 8000 --rows-per-batch 1000

Needs running services (``txmon infra up``) and a champion model (``txmon train``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _timed_factory(name_of, factory, acc):
    """Wrap a mapInArrow function factory: its functions add their own run time to ``acc``."""

    def make(*args, **kwargs):
        run = factory(*args, **kwargs)
        name = name_of(*args)

        def timed_run(batches):
            import time as _time

            spent, it = 0.0, iter(run(batches))
            while True:
                t0 = _time.perf_counter()
                try:
                    out = next(it)
                except StopIteration:
                    acc.add({name: spent + _time.perf_counter() - t0})
                    return
                spent += _time.perf_counter() - t0
                yield out

        return timed_run

    return make


def instrument(spark) -> object:
    """Time every Python step of the micro-batch; returns the accumulator (step -> seconds)."""
    from pyspark.accumulators import AccumulatorParam

    import spark_jobs.detection as detection
    import spark_jobs.transactions_stream as stream

    class Seconds(AccumulatorParam):
        def zero(self, value):
            return {}

        def addInPlace(self, a, b):
            for k, v in b.items():
                a[k] = a.get(k, 0.0) + v
            return a

    acc = spark.sparkContext.accumulator({}, Seconds())
    stream.land_partition = _timed_factory(lambda *a: "land (write transactions, dead letters)",
                                           stream.land_partition, acc)
    detection._partition_fold = _timed_factory(
        lambda fold, *a: f"features: {fold.__name__} (load, fold, save profiles)", detection._partition_fold, acc)
    detection._score_partition = _timed_factory(lambda *a: "scoring (models, risk, reasons)",
                                                detection._score_partition, acc)
    detection._outputs_partition = _timed_factory(lambda *a: "outputs (write scored, alerts, alerts topic)",
                                                  detection._outputs_partition, acc)
    return acc


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
    spark = build_session(settings, "txmon-batch-steps")
    acc = instrument(spark)
    rate, progress = baselines.spark_stream(
        spark, settings, topic, True, str(settings.state_path / "checkpoints" / f"steps-{stamp}"),
        dlq_topic=f"{topic}_dlq", alerts_topic=f"{topic}_alerts")
    batches = len(progress)
    add_batch = sum(p["durationMs"].get("addBatch", 0) for p in progress) / 1000
    print(f"{settings.kafka.partitions} Kafka partitions, {settings.spark.shuffle_partitions} shuffle partitions: "
          f"{rate.rows:,} rows in {batches} micro-batches of ~{rate.rows / max(batches, 1):,.0f}; "
          f"{rate.rows_per_s:,.0f} rows/s; loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    totals = acc.value
    worker = sum(totals.values())
    print(f"{'Python step (inside the tasks)':<56}{'worker s / batch':>17}{'share':>7}")
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{name:<56}{seconds / batches:>17.2f}{seconds / worker:>7.0%}")
    print(f"{'all Python steps (summed over parallel tasks)':<56}{worker / batches:>17.2f}")
    print(f"{'addBatch wall time (the whole micro-batch job)':<56}{add_batch / batches:>17.2f}")


if __name__ == "__main__":
    main()
