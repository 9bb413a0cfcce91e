"""The full stream at one fixed input rate: CPU per transaction by process, micro-batch
size and duration, consumer lag, latency (Kafka -> landed / scored / alert), peak memory (PSS) by
process, compile work of the driver JVM. The A/B harness behind the "what each change
gained" rows of docs/performance.md.

    .venv/bin/python -m txmon.bench.stream_at_rate --rate 300 --seconds 60
    .venv/bin/python -m txmon.bench.stream_at_rate --rate 300 --conf spark.sql.adaptive.enabled=false
    TXMON_SPARK__KAFKA_FETCH_MAX_WAIT_MS=500 .venv/bin/python -m txmon.bench.stream_at_rate --rate 300

``make bench`` finds the highest rate the stream sustains; at a rate both versions
sustain, that number cannot tell two versions apart, but the CPU each one spends per
transaction can: on two cores, 2 / (ms of CPU per transaction) bounds the rate.

Runs on the bench stack (``.txmon-bench``, ports 29092/29093/29042/27000, started and
stopped here unless already running) in a keyspace of its own, with the champion model
(trained on simulated history if the registry has none). It produces ``--warmup-seconds``
of traffic, waits for the stream to catch up, then reads every process group's CPU time
(``psutil``: Kafka, Cassandra, the Spark driver JVM, Spark's Python workers, and this
process, which is both the stream's Python driver, where foreachBatch runs, and the producer), produces
``--seconds`` at ``--rate``, waits until all of it is processed and reads them again.

The warm-up matters for the Spark driver JVM: in its first minutes the JIT compiler
threads are most of its CPU (per-thread CPU from /proc/<pid>/task at 500 tx/s: 62 % of
the JVM's CPU 45-85 s after start, 29 % at 145-185 s, 19 % at 245-285 s), so a short
warm-up charges JIT compilation to whatever is measured; compare runs with equal warm-ups.

To compare two versions of the code, run it once on each (``git stash`` or a worktree) and
alternate the pair at least twice: consecutive runs on this machine differ by ~5-10 %.
``--jsonl FILE`` appends each run's result as one JSON line for that comparison. Do not
edit the working tree during a run: Spark's Python workers import it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from txmon.bench.cpu_split import cpu_per_transaction, format_cpu_table, stack_cpu
from txmon.bench.memory import MemorySampler
from txmon.bench.pipeline_bench import (
    BenchTraffic,
    StreamUnderTest,
    _duration_breakdown,
    _git_commit,
    _progress_in,
    _topics,
    bench_stack,
    ensure_champion,
    latencies,
    percentiles,
    stop_run,
)
from txmon.bench.spark_profile import compile_counters, compile_delta
from txmon.infra.readback import kafka_end_offsets

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_conf(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> dict; a pair without ``=`` is a usage error that says how to write it.

    >>> parse_conf(["spark.sql.adaptive.enabled=false", "a.b=x=y"])
    {'spark.sql.adaptive.enabled': 'false', 'a.b': 'x=y'}
    """
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--conf {pair!r}: expected KEY=VALUE, e.g. --conf spark.sql.adaptive.enabled=false")
        out[key.strip()] = value
    return out


def measure(stream, traffic, settings, names, rate: float, seconds: float, drain_timeout: float) -> dict:
    """Produce ``seconds`` at ``rate`` into a caught-up stream; CPU, batches, lag and latency
    (Kafka timestamp -> landed / scored / alert, p50/p95/p99) of that phase."""

    lags: list[int] = []
    producing = threading.Event()
    producing.set()

    def watch_lag():
        while producing.is_set():
            lags.append(stream.lag())
            time.sleep(1.0)

    alerts_start = kafka_end_offsets(settings.kafka.bootstrap, names["alerts_topic"])
    before = stack_cpu(settings)
    compiled_before = compile_counters(stream.spark)
    start_wall, t0 = time.time(), time.monotonic()
    watcher = threading.Thread(target=watch_lag, daemon=True)
    watcher.start()
    with MemorySampler(settings) as memory:
        try:
            summary, ids = traffic.produce(rate, seconds, collect_ids=True)
        finally:
            producing.clear()
            watcher.join()
        drain = stream.wait_caught_up(drain_timeout)
    elapsed = time.monotonic() - t0
    after = stack_cpu(settings)
    compiled_after = compile_counters(stream.spark)
    progress = _progress_in(stream, start_wall)
    lat = latencies(settings, names, ids, alerts_start)
    rows = sum(p["numInputRows"] for p in progress)
    batch_s = [p["durationMs"].get("triggerExecution", 0) / 1000 for p in progress]
    return {
        "rate": rate,
        "seconds": seconds,
        "produced": summary.sent,
        "produce_rate": round(summary.rate, 1),
        "processed_rows": rows,
        "drain_seconds": None if drain is None else round(drain, 1),
        "elapsed_seconds": round(elapsed, 1),
        "max_lag": max(lags, default=0),
        "micro_batches": len(progress),
        "batch_rows_mean": round(rows / len(progress), 1) if progress else 0.0,
        "batch_seconds_mean": round(sum(batch_s) / len(batch_s), 3) if batch_s else 0.0,
        # The latency tail follows the long micro-batches, not the mean one.
        "batch_seconds": {q: round(v, 3) for q, v in percentiles(batch_s).items() if q != "n"},
        "duration_ms": {k: round(v, 1) for k, v in _duration_breakdown(progress).items()},
        "driver_ms": driver_phases(getattr(stream.ingest, "batch_timings", ()), {p["batchId"] for p in progress}),
        "cpu": cpu_per_transaction(before, after, summary.sent),
        "compiles": compile_delta(compiled_before, compiled_after, len(progress)),
        "latency_s": {
            k: {q: round(v, 3) for q, v in percentiles(lat[k]).items()} for k in ("landed_s", "scored_s", "alert_s")
        },
        "peak_pss_mib": {
            **{k: round(v) for k, v in memory.peaks_mb.items()},
            "whole stack": round(memory.total_peak_mb),
        },
    }


def driver_phases(timings, batch_ids: set[int]) -> dict[str, float]:
    """Mean ms per micro-batch the ingest query's foreachBatch spent, on the driver, building
    the plan, running it (the Spark jobs and collecting the drift columns) and feeding the
    drift monitor (spark_jobs/transactions_stream.py keeps these as ``batch_timings``)."""
    chosen = [t for t in timings if t["batch_id"] in batch_ids]
    return {
        phase: round(1000 * sum(t[f"{phase}_s"] for t in chosen) / len(chosen), 1) if chosen else 0.0
        for phase in ("plan", "run", "drift")
    }


def _quantiles(values: dict[str, float], top: str) -> str:
    """'p50 / p95 / <top>' of a :func:`bench.pipeline_bench.percentiles` dict; nan where
    the phase had no values (e.g. no alerts)."""
    return " / ".join(f"{values.get(q, float('nan')):.2f}" for q in ("p50", "p95", top))


def format_result(r: dict) -> str:
    lines = [
        f"{r['label'] or 'run'} @ {r['commit']}: {r['rate']:,.0f} tx/s x {r['seconds']:.0f} s, "
        f"produced {r['produced']:,} ({r['produce_rate']:,.0f}/s); max lag {r['max_lag']:,}; "
        f"drained {'NOT within timeout' if r['drain_seconds'] is None else str(r['drain_seconds']) + ' s'}",
        f"  {r['micro_batches']} micro-batches of {r['batch_rows_mean']:,.0f} rows, "
        f"{r['batch_seconds_mean']:.2f} s each (p50 / p95 / max {_quantiles(r['batch_seconds'], 'max')} s; "
        f"addBatch {r['duration_ms'].get('addBatch', 0):,.0f} ms); "
        f"loadavg {r['loadavg_after'][0]:.2f}",
        "  in the ingest query's foreachBatch, ms per micro-batch: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in r.get("driver_ms", {}).items()),
        f"  driver JVM compiles: {r['compiles']['codegen_per_batch']:g} whole-stage codegen per micro-batch, "
        f"JIT {r['compiles']['jit_ms_per_batch']:,.0f} ms per micro-batch",
        "  latency, Kafka -> landed / scored / alert, p50 / p95 / p99 (s): "
        + "; ".join(_quantiles(r["latency_s"][k], "p99") for k in ("landed_s", "scored_s", "alert_s")),
        format_cpu_table(r["cpu"], indent="  "),
        "  peak PSS (MiB): " + ", ".join(f"{k} {v:,}" for k, v in r["peak_pss_mib"].items()),
    ]
    return "\n".join(lines)


def run(
    rate: float, seconds: float, warmup_seconds: float, extra_conf: dict[str, str], label: str, seed: int, log=print
) -> dict:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    with bench_stack(stamp, log) as settings:
        stream = traffic = None
        try:
            model = ensure_champion(50_000, log)
            names = _topics(settings, f"rate_{stamp}")
            stream = StreamUnderTest(
                settings, names, str(settings.state_path / "checkpoints" / f"rate-{stamp}"), extra_conf=extra_conf
            )
            traffic = BenchTraffic(settings, names, seed, int(rate * (warmup_seconds + seconds) * 1.5) + 1000)
            if warmup_seconds:
                log(f"warm-up: {rate:,.0f} tx/s for {warmup_seconds:.0f} s (not measured)")
                traffic.produce(rate, warmup_seconds)
                if stream.wait_caught_up(max(120.0, warmup_seconds * 4)) is None:
                    raise RuntimeError(
                        "the stream did not catch up after the warm-up: the rate is far above what "
                        "it sustains; try a lower --rate"
                    )
            log(f"measuring: {rate:,.0f} tx/s for {seconds:.0f} s")
            result = measure(stream, traffic, settings, names, rate, seconds, drain_timeout=max(120.0, seconds * 4))
            result.update(
                label=label,
                commit=_git_commit(),
                model=model,
                extra_conf=extra_conf,
                loadavg_after=os.getloadavg(),
                started=stamp,
                settings={
                    "trigger_seconds": settings.spark.trigger_seconds,
                    "max_offsets_per_trigger": settings.spark.max_offsets_per_trigger,
                    "kafka_partitions": settings.kafka.partitions,
                    "kafka_fetch_max_wait_ms": settings.spark.kafka_fetch_max_wait_ms,
                },
            )
            return result
        finally:
            stop_run(stream, traffic)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300.0, help="transactions per second [300]")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured period [60]")
    parser.add_argument("--warmup-seconds", type=float, default=60.0, help="unmeasured traffic first [60]")
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Spark setting for the stream's session (repeatable)",
    )
    parser.add_argument("--label", default="", help="name of this run in the output (e.g. old / new)")
    parser.add_argument("--seed", type=int, default=11, help="simulator seed [11]")
    parser.add_argument("--jsonl", type=Path, help="append the result as one JSON line to this file")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.warmup_seconds < 0:
        parser.error("--rate and --seconds must be > 0, --warmup-seconds >= 0")
    try:
        extra_conf = parse_conf(args.conf)
    except ValueError as exc:
        parser.error(str(exc))
    result = run(args.rate, args.seconds, args.warmup_seconds, extra_conf, args.label, args.seed)
    print(format_result(result))
    if args.jsonl:
        args.jsonl.parent.mkdir(parents=True, exist_ok=True)
        with args.jsonl.open("a") as f:
            f.write(json.dumps(result) + "\n")
    return 0 if result["drain_seconds"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
