"""Peak resident memory of every process of the stack, sampled in the background.

Groups: Kafka and Cassandra (their pid files), the Spark driver JVM (a child of this
Python process, started by py4j), Spark's Python workers (descendants of that JVM), and
this process itself (the bench and the Spark driver's Python), and the producer (this
process's Python children: bench.pipeline_bench.BenchTraffic's process and the
multiprocessing helper beside it). A group's figure is the sum of
its processes at one sample; the peak is the largest sample.

Each process counts its proportional set size (PSS: private pages, plus shared pages
divided by the processes sharing them) where the kernel reports it, else its RSS. Spark's
Python workers are forked from one daemon that has imported pandas, scikit-learn and the
drivers (spark_jobs/worker_daemon.py): they share those pages copy-on-write, and summing
their RSS would count the shared libraries once per worker.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field

import psutil

from txmon.infra.settings import Settings


def _rss(procs: list[psutil.Process]) -> float:
    """MiB resident, by PSS where available (see the module doc)."""
    total = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.AccessDenied:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def stack_processes(settings: Settings) -> dict[str, list[psutil.Process]]:
    """The processes of each group right now (missing ones are left out)."""
    # lazy: alerting.config (101 ms to import); txmon.bench.api_bench imports this module without it
    from txmon.infra.stack import services

    groups: dict[str, list[psutil.Process]] = {}
    for svc in services(settings):
        pid = svc.process.pid()
        if pid is not None:
            groups[svc.name] = [psutil.Process(pid)]
    me = psutil.Process(os.getpid())
    groups["bench + Spark driver (Python)"] = [me]
    groups["producer (Python)"] = [c for c in me.children() if "python" in c.name()]
    # Kafka and Cassandra are children of this process too when it started the stack
    # (stack.up): counted here as well, they would inflate the Spark JVM's figure and the
    # whole-stack sum by their own size, so they are left out of it.
    services_pids = {p.pid for procs in groups.values() for p in procs}
    jvms = [c for c in me.children() if "java" in c.name() and c.pid not in services_pids]
    groups["Spark driver JVM"] = jvms
    workers = []
    for jvm in jvms:
        with contextlib.suppress(psutil.Error):
            workers += [p for p in jvm.children(recursive=True) if "python" in p.name()]
    groups["Spark Python workers"] = workers
    return groups


@dataclass
class MemorySampler:
    """``with MemorySampler(settings) as m: ...`` then ``m.peaks_mb`` (and ``m.total_peak_mb``)."""

    settings: Settings
    interval_s: float = 1.0
    peaks_mb: dict[str, float] = field(default_factory=dict)
    total_peak_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        total = 0.0
        for name, procs in stack_processes(self.settings).items():
            mb = _rss(procs)
            total += mb
            self.peaks_mb[name] = max(self.peaks_mb.get(name, 0.0), mb)
        self.total_peak_mb = max(self.total_peak_mb, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()
