"""CPU of one process's threads over a period, grouped by thread name: where a JVM's CPU goes.

    .venv/bin/python -m txmon.bench.thread_cpu <pid> 40      # e.g. the Spark driver JVM or Cassandra

Reads ``/proc/<pid>/task/*/stat`` (user + system ticks) at the start and the end. Thread
names lose their numbers (``C2 CompilerThread1`` and ``C1 CompilerThread0`` become ``CN
CompilerThreadN``), so a pool is one line. Linux truncates thread names to 15 characters.
It found that the JIT compiler threads are most of the Spark driver JVM's CPU in its first
minutes, and that G1 and compaction were over a third of Cassandra's (docs/performance.md).
Run it alongside ``bench/stream_at_rate.py`` once that run is past its warm-up.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path


def thread_name_group(name: str) -> str:
    """A thread's pool: its name with the numbers replaced.

    >>> thread_name_group("C2 CompilerThre"), thread_name_group("GC Thread#3"), thread_name_group("MutationStage-12")
    ('CN CompilerThre', 'GC Thread', 'MutationStage')
    """
    return re.sub(r"\d+", "N", re.sub(r"[#\-]?\d+$", "", name).strip())


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """tid -> (thread name, CPU seconds so far) for every live thread of ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended between listdir and read
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)  # utime, stime
    return out


def cpu_by_group(before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two :func:`thread_cpu` snapshots, by thread pool, largest first.

    >>> cpu_by_group({"1": ("GC Thread#0", 1.0)}, {"1": ("GC Thread#0", 1.5), "2": ("GC Thread#1", 0.25)})
    {'GC Thread': 0.75}
    """
    groups: dict[str, float] = defaultdict(float)
    for tid, (name, cpu) in after.items():
        groups[thread_name_group(name)] += cpu - before.get(tid, (name, 0.0))[1]
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pid", type=int, help="process to watch (pgrep -f SparkSubmit, pgrep -f CassandraDaemon)")
    parser.add_argument("seconds", type=float, nargs="?", default=30.0, help="period [30]")
    parser.add_argument("--top", type=int, default=20, help="pools to print [20]")
    args = parser.parse_args(argv)
    if not Path(f"/proc/{args.pid}/task").is_dir():
        parser.error(f"no process {args.pid} (this reads /proc, so Linux only); find one with pgrep -f")
    before = thread_cpu(args.pid)
    time.sleep(args.seconds)
    groups = cpu_by_group(before, thread_cpu(args.pid))
    total = sum(groups.values()) or 1.0
    for group, cpu in list(groups.items())[: args.top]:
        print(f"{group:<30}{cpu:8.2f} s {100 * cpu / total:5.1f} %")
    print(f"{'all threads':<30}{sum(groups.values()):8.2f} s over {args.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
