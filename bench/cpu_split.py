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

import psutil

from txmon.bench.memory import stack_processes

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def process_cpu(groups: dict) -> dict[str, dict[int, float]]:
    """CPU seconds (user + system) of every process, by group and pid."""

    out: dict[str, dict[int, float]] = {}
    for group, procs in groups.items():
        out[group] = {}
        for p in procs:
            try:
                c = p.cpu_times()
                out[group][p.pid] = c.user + c.system
            except psutil.Error:
                pass
    return out


def stack_cpu(settings) -> dict[str, dict[int, float]]:
    """:func:`process_cpu` of every process of the stack right now (bench.memory.stack_processes):
    read before and after a phase, for :func:`cpu_per_transaction`."""

    return process_cpu(stack_processes(settings))


def cpu_per_transaction(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], transactions: int
) -> dict[str, dict]:
    """CPU seconds and ms per transaction by process group, plus ``all``. Processes are
    matched by pid: one started during the phase (a new Python worker) counts whole, one
    that ended during it is lost (psutil cannot read a process that is gone).

    >>> r = cpu_per_transaction({"kafka": {1: 1.0}, "jvm": {2: 2.0}}, {"kafka": {1: 1.5}, "jvm": {2: 4.0}}, 1000)
    >>> r["kafka"], r["all"]
    ({'cpu_s': 0.5, 'ms_per_tx': 0.5}, {'cpu_s': 2.5, 'ms_per_tx': 2.5})
    """
    out, total = {}, 0.0
    for group, procs in after.items():
        spent = sum(max(0.0, cpu - before.get(group, {}).get(pid, 0.0)) for pid, cpu in procs.items())
        total += spent
        out[group] = {"cpu_s": round(spent, 3), "ms_per_tx": round(spent * 1000 / max(transactions, 1), 3)}
    out["all"] = {"cpu_s": round(total, 3), "ms_per_tx": round(total * 1000 / max(transactions, 1), 3)}
    return out


def format_cpu_table(cpu: dict[str, dict], indent: str = "") -> str:
    """The :func:`cpu_per_transaction` result as a table."""
    lines = [f"{indent}{'process group':<40}{'CPU s':>8}{'ms / transaction':>18}"]
    lines += [f"{indent}{group:<40}{v['cpu_s']:>8.1f}{v['ms_per_tx']:>18.2f}" for group, v in cpu.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rows-per-batch", type=int, default=2000, help="maxOffsetsPerTrigger")
    parser.add_argument("--warmup-events", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)

    # lazy: faker + pyspark (2.7 s to import); txmon.bench.account_index_cost imports this module without it
    from txmon.bench import baselines

    _, settings, run = baselines.backlog_runner("txmon-cpu-split", args.rows_per_batch)
    if args.warmup_events:
        run("cpu_warmup", args.warmup_events, args.seed + 1)
    before = stack_cpu(settings)
    rate, progress = run("cpu_split", args.events, args.seed)
    after = stack_cpu(settings)
    print(
        f"{rate.rows:,} rows in {len(progress)} micro-batches, {rate.rows_per_s:,.0f} rows/s; "
        f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(format_cpu_table(cpu_per_transaction(before, after, rate.rows)))


if __name__ == "__main__":
    main()
