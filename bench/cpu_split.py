"""CPU per transaction by process: where the detection stream's CPU goes.

Runs the stream's ingest query with detection (available-now, ``--rows-per-batch`` per
micro-batch) over simulated events, after an untimed warm-up run, and reads each process
group's CPU time (``psutil``) before and after: Kafka, Cassandra, the Spark driver JVM,
Spark's Python workers, this process. On two cores, 2 / (total ms per transaction) is
the most transactions per millisecond the machine can carry.

    TXMON_KAFKA__PORT=... TXMON_CASSANDRA__PORT=... \\
        .venv/bin/python bench/cpu_split.py --events 20000 --rows-per-batch 2000

Needs running services (``txmon infra up``) and a champion model (``txmon train``).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_seconds(groups: dict) -> dict[str, float]:
    import psutil

    out = {}
    for group, procs in groups.items():
        total = 0.0
        for p in procs:
            try:
                c = p.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
        out[group] = total
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rows-per-batch", type=int, default=2000, help="maxOffsetsPerTrigger")
    parser.add_argument("--warmup-events", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)

    from bench import baselines
    from bench.memory import stack_processes

    _, settings, run = baselines.backlog_runner("txmon-cpu-split", args.rows_per_batch)
    if args.warmup_events:
        run("cpu_warmup", args.warmup_events, args.seed + 1)
    before = cpu_seconds(stack_processes(settings))
    rate, progress = run("cpu_split", args.events, args.seed)
    after = cpu_seconds(stack_processes(settings))
    print(f"{rate.rows:,} rows in {len(progress)} micro-batches, {rate.rows_per_s:,.0f} rows/s; "
          f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'process group':<36}{'CPU s':>8}{'ms / transaction':>18}")
    total = 0.0
    for group, end in after.items():
        spent = end - before.get(group, 0.0)
        total += spent
        print(f"{group:<36}{spent:>8.1f}{spent * 1000 / max(rate.rows, 1):>18.2f}")
    print(f"{'all':<36}{total:>8.1f}{total * 1000 / max(rate.rows, 1):>18.2f}")


if __name__ == "__main__":
    main()
