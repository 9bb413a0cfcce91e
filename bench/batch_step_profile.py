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
from pathlib import Path

from txmon.bench import baselines
from txmon.bench.spark_profile import format_steps, step_timers

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=8000)
    parser.add_argument("--rows-per-batch", type=int, default=1000, help="maxOffsetsPerTrigger")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--warmup-events",
        type=int,
        default=4000,
        help="run these through first, untimed: every Python worker imports pandas, "
        "scikit-learn and the model once (seconds each), which is not per-batch cost",
    )
    parser.add_argument("--partitions", type=int, help="Kafka partitions of the topic [default: kafka.partitions]")
    args = parser.parse_args(argv)

    spark, settings, run = baselines.backlog_runner("txmon-batch-steps", args.rows_per_batch, args.partitions)

    with step_timers(spark) as acc:
        if args.warmup_events:
            run("steps_warmup", args.warmup_events, args.seed + 1)
            acc.value = {}
        rate, progress = run("steps", args.events, args.seed)
    batches = len(progress)
    add_batch = sum(p["durationMs"].get("addBatch", 0) for p in progress) / 1000
    print(
        f"{settings.kafka.partitions} Kafka partitions, {settings.spark.shuffle_partitions} shuffle partitions: "
        f"{rate.rows:,} rows in {batches} micro-batches of ~{rate.rows / max(batches, 1):,.0f}; "
        f"{rate.rows_per_s:,.0f} rows/s; loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(format_steps(acc.value, batches, add_batch))


if __name__ == "__main__":
    main()
