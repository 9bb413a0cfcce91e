"""Where a micro-batch's time goes: Spark jobs by call site, and Python steps by name.

Structured Streaming's ``durationMs`` puts all of a foreachBatch sink under ``addBatch``.

* :func:`job_profile`: the Spark UI's REST API (``/api/v1/applications/<id>/jobs``) has
  each job's call site and wall time; jobs a writer labels (``txmon: write <table>``,
  cassandra_sink.write_dataframe) are grouped by label. Since the stream's micro-batch
  became one Spark job this mostly counts jobs per batch.
* :func:`step_timers`: inside that one job, how long each Python step (land, the two
  feature folds, scoring, outputs) runs in the tasks, gathered with an accumulator.
"""

from __future__ import annotations

import json
import time as _time
import urllib.request
from contextlib import contextmanager
from datetime import datetime


def rest_get(url: str):
    """One JSON answer of Spark's REST API."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def rest_seconds(text: str) -> float:
    """A Spark REST time (``2026-11-24T12:00:01.400GMT``) as epoch seconds."""
    return datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def last_job_id(spark) -> int:
    """The highest job id so far (-1 if none or the UI is off): profile jobs after it."""
    jobs = _jobs(spark)
    return max((j["jobId"] for j in jobs), default=-1)


def _jobs(spark) -> list[dict]:
    sc = spark.sparkContext
    if not sc.uiWebUrl:
        return []
    try:
        return rest_get(f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/jobs?status=succeeded")
    except OSError:
        return []


def job_profile(spark, after_job_id: int = -1) -> list[dict]:
    """Per call site: jobs, total seconds, share of the total; largest first."""
    by_site: dict[str, list[float]] = {}
    for job in _jobs(spark):
        if job["jobId"] <= after_job_id or "completionTime" not in job:
            continue
        seconds = rest_seconds(job["completionTime"]) - rest_seconds(job["submissionTime"])
        site = job.get("name", "?").split(" at ")
        name = f"{site[0]} at {site[1].rsplit('/', 1)[-1]}" if len(site) == 2 else job.get("name", "?")
        if job.get("description"):  # set by the pipeline's writers (cassandra_sink.write_dataframe)
            name = job["description"].splitlines()[0]
        by_site.setdefault(name, []).append(seconds)
    total = sum(sum(v) for v in by_site.values()) or 1.0
    rows = [{"job": name, "jobs": len(v), "seconds": sum(v), "share": sum(v) / total} for name, v in by_site.items()]
    return sorted(rows, key=lambda r: -r["seconds"])


def format_profile(rows: list[dict]) -> str:
    lines = [f"{'Spark job (call site)':<60}{'jobs':>6}{'seconds':>10}{'share':>8}"]
    lines += [f"{r['job'][:58]:<60}{r['jobs']:>6}{r['seconds']:>10.1f}{r['share']:>8.1%}" for r in rows]
    return "\n".join(lines)


def _timed_factory(name_of, factory, acc):
    """Wrap a mapInArrow function factory: its functions add their own run time to ``acc``."""

    def make(*args, **kwargs):
        run = factory(*args, **kwargs)
        name = name_of(*args)

        def timed_run(batches):
            # Steps of one stage are chained through the JVM, so waiting for the next input
            # batch is the upstream step's time: count only this function's own time.
            waited = [0.0]

            def source():
                upstream = iter(batches)
                while True:
                    t0 = _time.perf_counter()
                    try:
                        batch = next(upstream)
                    except StopIteration:
                        waited[0] += _time.perf_counter() - t0
                        return
                    waited[0] += _time.perf_counter() - t0
                    yield batch

            spent, it = 0.0, iter(run(source()))
            while True:
                t0 = _time.perf_counter()
                try:
                    out = next(it)
                except StopIteration:
                    acc.add({name: spent + _time.perf_counter() - t0 - waited[0]})
                    return
                spent += _time.perf_counter() - t0
                yield out

        return timed_run

    return make


@contextmanager
def step_timers(spark):
    """Time every Python step of the stream's micro-batch (inside the Spark tasks) while
    the block runs; yields a Spark accumulator whose value is {step: worker seconds}.

    The steps are mapInArrow functions made by factories in spark_jobs; each factory is
    wrapped for the duration of the block (queries started inside it are timed)."""
    # lazy: pandas (4.2 s to import); the bench's producer child imports this module
    from pyspark.accumulators import AccumulatorParam

    import txmon.spark_jobs.transactions_stream as stream
    from txmon.spark_jobs import detection

    class Seconds(AccumulatorParam):
        def zero(self, value):
            return {}

        def addInPlace(self, a, b):
            for k, v in b.items():
                a[k] = a.get(k, 0.0) + v
            return a

    acc = spark.sparkContext.accumulator({}, Seconds())
    originals = [
        (stream, "land_partition", stream.land_partition),
        *[(detection, n, getattr(detection, n)) for n in ("_partition_fold", "_outputs_partition")],
    ]
    stream.land_partition = _timed_factory(
        lambda *a: "land (validate; write transactions, dead letters)", stream.land_partition, acc
    )
    detection._partition_fold = _timed_factory(
        lambda fold, *a: f"features: {fold.__name__} (load, fold, save profiles)", detection._partition_fold, acc
    )
    # Scoring (models, risk, decision) runs in the JVM (spark_jobs/jvm_scoring.py): not a Python step.
    detection._outputs_partition = _timed_factory(
        lambda *a: "outputs (reasons; write scored, alerts, topic)", detection._outputs_partition, acc
    )
    try:
        yield acc
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


def format_steps(totals: dict[str, float], batches: int, add_batch_s: float) -> str:
    """The step timings as a table: worker seconds per micro-batch and share."""
    worker = sum(totals.values()) or 1.0
    lines = [f"{'Python step (inside the tasks)':<56}{'worker s / batch':>17}{'share':>7}"]
    lines += [
        f"{name:<56}{seconds / batches:>17.2f}{seconds / worker:>7.0%}"
        for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])
    ]
    lines.append(f"{'all Python steps (summed over parallel tasks)':<56}{sum(totals.values()) / batches:>17.2f}")
    lines.append(f"{'addBatch wall time (the whole micro-batch job)':<56}{add_batch_s / batches:>17.2f}")
    return "\n".join(lines)


def compile_counters(spark) -> dict[str, int]:
    """The driver JVM's compile work so far: Spark's whole-stage codegen compilations (Janino,
    ``CodegenMetrics``) and the JIT's total compile time in ms (``CompilationMXBean``).

    Taken before and after a steady-state period, they show whether micro-batches reuse
    their generated classes: a plan whose generated source changes every batch (e.g. an
    inlined ``current_timestamp()`` literal) compiles every batch, and the JIT then compiles
    the new classes again (docs/performance.md, "What each change gained")."""
    jvm = spark.sparkContext._jvm
    codegen = jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME().getCount()
    jit = jvm.java.lang.management.ManagementFactory.getCompilationMXBean().getTotalCompilationTime()
    return {"codegen_compilations": int(codegen), "jit_compile_ms": int(jit)}


def compile_delta(before: dict[str, int], after: dict[str, int], micro_batches: int) -> dict[str, float]:
    """
    >>> compile_delta({"codegen_compilations": 10, "jit_compile_ms": 500},
    ...               {"codegen_compilations": 30, "jit_compile_ms": 1500}, 10)
    {'codegen_compilations': 20, 'codegen_per_batch': 2.0, 'jit_compile_ms': 1000, 'jit_ms_per_batch': 100.0}
    """
    compilations = after["codegen_compilations"] - before["codegen_compilations"]
    jit = after["jit_compile_ms"] - before["jit_compile_ms"]
    per = max(micro_batches, 1)
    return {
        "codegen_compilations": compilations,
        "codegen_per_batch": round(compilations / per, 2),
        "jit_compile_ms": jit,
        "jit_ms_per_batch": round(jit / per, 1),
    }
