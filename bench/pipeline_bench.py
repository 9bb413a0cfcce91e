"""End-to-end pipeline benchmark: same-run baselines, sustained rate, latency, memory.

    txmon bench [--quick] [--out DIR]          # or: make bench / make bench-quick

1. Brings up its own Kafka + Cassandra through infra.stack (state dir ``.txmon-bench``,
   ports 29092/29093/29042/27000 unless TXMON_* say otherwise) and makes sure a champion
   model exists (trains one on simulated history if the registry is empty).
2. Baselines, measured now on this machine (bench/baselines.py): Kafka produce and
   consume, Spark Kafka source -> noop sink, the stream ingest-only and with detection on
   a backlog, Cassandra upserts through the sink, plain predict_proba (and both models) vs in-stream scoring.
3. Ramp: the full stream (ingest + features and account windows + rules + models ->
   Cassandra + alerts, plus the labels query) runs while the simulator produces at rising rates
   for a fixed period each. A rate is *sustained* if the producer achieved it and the
   consumer lag (Kafka end offsets - offsets of the last finished micro-batch) stayed
   below ``lag_bound_s`` seconds of input through the second half of the period.
4. Latency at ``latency_fraction`` of the best sustained rate: per transaction, Kafka
   record timestamp -> WRITETIME of its row in ``transactions`` (landed) and in
   ``scored_transactions`` (scored), and -> the Kafka timestamp of its alert on the
   alerts topic: p50 / p95 / p99.
5. Peak resident memory of every process (bench/memory.py), sampled throughout.

Writes ``bench/results/<UTC timestamp>/{bench.json, bench.md, latency.png}`` and prints
the table. Every figure is measured in this run; ratios are against this run's baselines.
The machine's load average is recorded: on a shared machine absolute numbers sink, the
ratios much less.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from txmon.bench.cpu_split import cpu_per_transaction, stack_cpu
from txmon.bench.memory import MemorySampler
from txmon.bench.report import format_table, write_report
from txmon.bench.spark_profile import (
    format_profile,
    format_steps,
    job_profile,
    last_job_id,
    step_timers,
)
from txmon.bench.stream_scoring_bench import ratios as scoring_ratios
from txmon.infra.cassandra_schema import connect
from txmon.infra.kafka_client import client_config
from txmon.infra.process import wait_until
from txmon.infra.settings import load_settings
from txmon.models.config import models_dir

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
BENCH_ENV = {  # its own stack: never a developer's (.txmon) or the tests' (.txmon-test)
    "TXMON_STATE_DIR": str(ROOT / ".txmon-bench"),
    "TXMON_KAFKA__PORT": "29092",
    "TXMON_KAFKA__CONTROLLER_PORT": "29093",
    "TXMON_CASSANDRA__PORT": "29042",
    "TXMON_CASSANDRA__STORAGE_PORT": "27000",
    # No Airflow in the bench: drift alarms are recorded in Cassandra, not sent anywhere
    # (with notify: airflow every alarm would log a failed REST call).
    "TXMON_DRIFT__NOTIFY": "none",
}


@dataclass(frozen=True)
class BenchConfig:
    rates: tuple[int, ...]
    step_seconds: float
    baseline_events: int
    scoring_rows: int
    latency_seconds: float
    latency_fraction: float = 0.5
    lag_bound_s: float = 10.0
    warmup_seconds: float = 60.0  # at the first ramp rate, before the ramp; not judged
    min_rate: float = 30.0  # when the first rate fails, halve down to this
    train_events: int = 50_000
    seed: int = 7

    def fallback_rates(self) -> list[float]:
        """The rates tried when even the first is not sustained: halving down to ``min_rate``."""
        out, lower = [], self.rates[0] / 2
        while lower >= self.min_rate:
            out.append(lower)
            lower /= 2
        return out

    def planned_events(self) -> int:
        """Events of the longest possible bench: warm-up, every ramp step, the latency phase
        at the top rate (what :class:`BenchTraffic` must fit before the wall clock)."""
        steps = (sum(self.rates) + sum(self.fallback_rates())) * self.step_seconds
        top = max(self.rates) * self.latency_fraction * self.latency_seconds
        return int(self.rates[0] * self.warmup_seconds + steps + top)

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(
            rates=(100, 250, 500, 1000, 2000),
            step_seconds=20,
            baseline_events=20_000,
            scoring_rows=20_000,
            latency_seconds=15,
            warmup_seconds=15,
        )

    @classmethod
    def full(cls) -> BenchConfig:
        return cls(
            rates=(250, 500, 1000, 1250, 1500, 2000, 2500, 3000, 4000, 6000, 8000, 10_000, 12_000),
            step_seconds=45,
            baseline_events=60_000,
            scoring_rows=50_000,
            latency_seconds=40,
        )


@dataclass
class Step:
    target_rate: float
    produced: int
    produce_rate: float
    processed_rate: float
    max_lag_late: int
    lag_bound: int
    drain_seconds: float | None
    sustained: bool
    batch_seconds_mean: float
    batch_rows_mean: float
    duration_ms: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- stream


class StreamUnderTest:
    """The full stream (all queries) over the bench topics, as ``txmon demo`` runs it."""

    def __init__(
        self, settings, names: dict[str, str], checkpoint: str, extra_conf: dict[str, str] | None = None
    ) -> None:
        # lazy: pandas (4.3 s to import); the bench's producer child imports this module
        from kafka import KafkaConsumer

        from txmon.spark_jobs.session import build_session
        from txmon.spark_jobs.transactions_stream import StreamOptions, start_all

        self.settings = settings
        self.topic = names["topic"]
        self.spark = build_session(settings, "txmon-bench", extra_conf=extra_conf)
        self.opts = StreamOptions.from_settings(settings, checkpoint_dir=checkpoint, **names)
        self.queries = start_all(self.spark, settings, self.opts)
        self.ingest = self.queries[0]

        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap,
            enable_auto_commit=False,
            client_id="txmon-bench-lag",
            **client_config(settings),
        )
        # lazy: kafka (561 ms to import); the bench's producer child imports this module
        from kafka import TopicPartition

        parts = self._consumer.partitions_for_topic(self.topic) or set()
        self._tps = [TopicPartition(self.topic, p) for p in sorted(parts)]

    def end_offset(self) -> int:
        return sum(self._consumer.end_offsets(self._tps).values())

    def processed_offset(self) -> int:
        progress = self.ingest.lastProgress
        if not progress:
            return 0
        end = progress["sources"][0].get("endOffset")
        if isinstance(end, str):
            end = json.loads(end)
        return sum(int(v) for v in (end or {}).get(self.topic, {}).values())

    def lag(self) -> int:
        return max(0, self.end_offset() - self.processed_offset())

    def check(self) -> None:
        for q in self.queries:
            if q.exception() is not None:
                raise RuntimeError(f"stream query {q.name} failed: {q.exception()}")

    def wait_caught_up(self, timeout: float) -> float | None:
        """Seconds until every produced record is processed (None: not within timeout)."""
        target = self.end_offset()
        t0 = time.monotonic()

        def caught_up() -> bool:
            self.check()  # a failed query raises at once instead of waiting out the timeout
            return self.processed_offset() >= target

        return time.monotonic() - t0 if wait_until(caught_up, timeout) else None

    def stop(self) -> None:
        for q in self.queries:
            q.stop()
        self._consumer.close()


class BenchTraffic:
    """The bench's transactions: ONE simulated population on ONE timeline, produced at
    whatever rate each phase asks (warm-up, every ramp step, the latency phase).

    A bank's stream sees the same customers day after day; a new population per phase
    would make every phase start with cold profiles and, on a shared keyspace, put each
    phase's clock back behind the profiles the previous one left. The clock starts far
    enough back for the whole planned bench (:func:`ingestion.simulator.live_start_time`),
    so events never pass the wall clock however far the ramp goes; a ramp that stops
    early simply ends in the past, which nothing in the stream compares with wall time.

    The simulator and the Kafka producer run in a process of their own, as ``txmon
    produce`` does beside a deployed stream. In the bench's own process they competed for
    the GIL with the Spark driver's Python, which builds every micro-batch's plan through
    py4j and feeds the drift monitor.
    """

    def __init__(self, settings, names: dict[str, str], seed: int, planned_events: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs a JVM gateway
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(
            target=_traffic_process,
            name="txmon-bench-producer",
            daemon=True,
            args=(child, settings, names, seed, planned_events),
        )
        self._process.start()
        child.close()
        self._reply()  # the simulator and the producer are ready (or their error is raised here)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def produce(self, rate: float, seconds: float, collect_ids: bool = False):
        """Produce at ``rate`` for ``seconds``; the :class:`ProduceSummary` of this phase only,
        and with ``collect_ids`` also ``(summary, txn_ids)`` of the events it produced."""
        self._conn.send(("produce", rate, seconds, collect_ids))
        summary, ids = self._reply()
        return (summary, ids) if collect_ids else summary

    def _reply(self):
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"the bench's producer process died (exit code {self._process.exitcode})") from None
        if status == "error":
            raise RuntimeError(f"the bench's producer process failed: {value}")
        return value

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("close",))
                self._reply()
            except (OSError, EOFError, RuntimeError):
                pass
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()


def _traffic_process(conn, settings, names: dict[str, str], seed: int, planned_events: int) -> None:
    """BenchTraffic's process: one simulator and one producer, driven over ``conn``."""

    try:
        # imported in the try: a failure to import reaches the parent as this process's traceback
        from txmon.ingestion.labels import LabelReleaser
        from txmon.ingestion.producer import ProduceSummary, TransactionProducer, produce_events
        from txmon.ingestion.simulate import SimulateOptions, simulator_for

        simulator = simulator_for(
            SimulateOptions(seed=seed, count=planned_events, rate=1000.0, progress=False, label_delay_seconds=300)
        )
        events = ((s.event, s.label) for s in simulator.stream())
        producer = TransactionProducer(settings, topic=names["topic"], labels_topic=names["labels_topic"])
        labels = LabelReleaser(producer)
    except Exception:  # noqa: BLE001 - the child reports any failure to the bench, which raises it
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ok", None))
    try:
        while True:
            try:
                command = conn.recv()
            except EOFError:  # the bench is gone
                return
            if command[0] == "close":
                return
            _, rate, seconds, collect_ids = command
            ids: list[str] = []

            def on_label(label, event, ids: list[str] = ids, collect_ids: bool = collect_ids) -> None:
                labels(label, event)  # fraud labels follow once the simulated clock passes their time
                if collect_ids:
                    ids.append(event.txn_id)

            try:
                producer.summary = ProduceSummary()
                summary = produce_events(producer, events, rate=rate, duration=seconds, on_label=on_label)
                conn.send(("ok", (summary, ids)))
            except Exception:  # noqa: BLE001 - as above: reported to the bench
                conn.send(("error", traceback.format_exc()))
    finally:
        producer.close()
        if not conn.closed:
            with contextlib.suppress(OSError):
                conn.send(("ok", None))  # closed: BenchTraffic.close waits for this


def _progress_in(stream: StreamUnderTest, since: float) -> list[dict]:
    out = []
    for p in stream.ingest.recentProgress:
        ts = datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp()
        if ts >= since and p.get("numInputRows", 0) > 0:
            out.append(p)
    return out


def _duration_breakdown(progress: list[dict]) -> dict[str, float]:
    """Mean durationMs per micro-batch, by phase (Spark's own breakdown)."""
    keys: dict[str, list[float]] = {}
    for p in progress:
        for k, v in p.get("durationMs", {}).items():
            keys.setdefault(k, []).append(v)
    return {k: sum(v) / len(v) for k, v in keys.items()}


def run_step(stream: StreamUnderTest, traffic: BenchTraffic, rate: float, cfg: BenchConfig, log) -> Step:
    start_wall = time.time()
    lags: list[tuple[float, int]] = []
    result: dict = {}
    t0 = time.monotonic()
    producer = threading.Thread(
        target=lambda: result.setdefault("summary", traffic.produce(rate, cfg.step_seconds)), daemon=True
    )
    producer.start()
    while producer.is_alive():
        stream.check()
        lags.append((time.monotonic() - t0, stream.lag()))
        time.sleep(1.0)
    producer.join()
    summary = result["summary"]
    elapsed = time.monotonic() - t0
    lags.append((elapsed, stream.lag()))
    late = [lag for t, lag in lags if t >= elapsed / 2]
    bound = int(rate * cfg.lag_bound_s)
    drain = stream.wait_caught_up(timeout=max(60.0, cfg.step_seconds * 2))
    progress = _progress_in(stream, start_wall)
    rows = sum(p["numInputRows"] for p in progress)
    span = (time.time() - start_wall) if progress else 0
    batch_s = [p["durationMs"].get("triggerExecution", 0) / 1000 for p in progress]
    step = Step(
        target_rate=rate,
        produced=summary.sent,
        produce_rate=summary.rate,
        processed_rate=rows / span if span else 0.0,
        max_lag_late=max(late) if late else 0,
        lag_bound=bound,
        drain_seconds=drain,
        sustained=summary.rate >= 0.9 * rate and (max(late) if late else 0) <= bound and drain is not None,
        batch_seconds_mean=sum(batch_s) / len(batch_s) if batch_s else 0.0,
        batch_rows_mean=rows / len(progress) if progress else 0.0,
        duration_ms=_duration_breakdown(progress),
    )
    log(
        f"  {rate:>7,.0f} tx/s target: produced {step.produce_rate:>7,.0f}/s, max lag (2nd half) "
        f"{step.max_lag_late:>7,} (bound {bound:,}), drained in "
        f"{'-' if drain is None else f'{drain:.1f}s'}, {len(progress)} batches of ~{step.batch_rows_mean:,.0f} rows "
        f"in {step.batch_seconds_mean:.1f}s -> {'SUSTAINED' if step.sustained else 'not sustained'}"
    )
    return step


# ----------------------------------------------------------------------------- latency


def percentiles(values: list[float]) -> dict[str, float]:
    """
    >>> percentiles([1.0, 2.0, 3.0, 4.0])["p50"]
    2.5
    """
    # lazy: numpy (275 ms to import); txmon.bench.stream_at_rate imports this module without it
    import numpy as np

    if not values:
        return {}
    arr = np.asarray(values, dtype=float)
    return {
        "n": int(arr.size),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


def measure_latency(stream: StreamUnderTest, traffic: BenchTraffic, names, rate: float, cfg: BenchConfig, log) -> dict:
    """Latency per transaction at ``rate``: Kafka timestamp -> landed / scored / alerted; and
    the CPU each process group spent per transaction meanwhile (``cpu``, as
    bench/stream_at_rate.py measures it), which says where the time goes at that rate."""
    # lazy: infra.statements + infra.cassandra_schema (22 ms to import); the bench's producer child imports this module
    from txmon.infra.readback import kafka_end_offsets

    alerts_start = kafka_end_offsets(stream.settings.kafka.bootstrap, names["alerts_topic"])
    cpu_before = stack_cpu(stream.settings)
    _, ids = traffic.produce(rate, cfg.latency_seconds, collect_ids=True)
    stream.wait_caught_up(timeout=max(120.0, cfg.latency_seconds * 4))
    cpu = cpu_per_transaction(cpu_before, stack_cpu(stream.settings), len(ids))
    out = {"rate": rate, "transactions": len(ids), "cpu": cpu, **latencies(stream.settings, names, ids, alerts_start)}
    log(
        f"  latency at {rate:,.0f} tx/s over {len(ids):,} transactions ({len(out['alert_s']):,} alerts, "
        f"{len(out['alert_s']) / max(1, len(ids)):.1%}; reasons: "
        f"{', '.join(f'{code} {n:,}' for code, n in list(out['alert_reasons'].items())[:6]) or 'none'})"
    )
    return out


def latencies(settings, names, ids: list[str], alerts_start: dict[int, int]) -> dict:
    """Seconds from each transaction's Kafka record timestamp to its row in ``transactions``
    (landed_s) and ``scored_transactions`` (scored_s) and to its alert on the alerts topic
    (alert_s, records after ``alerts_start``), plus the alerts' reason codes, once the
    stream has processed ``ids``."""

    cluster, session = connect(settings, settings.cassandra.keyspace)
    try:
        landed = _writetimes(session, "transactions", "landed_at", ids)
        scored = _writetimes(session, "scored_transactions", "decision", ids)
    finally:
        cluster.shutdown()
    kafka_ts = {t: k for t, (k, _) in scored.items()} or {t: k for t, (k, _) in landed.items()}
    alerts, reasons = _alert_latencies(settings, names["alerts_topic"], alerts_start, kafka_ts)
    return {
        "landed_s": [w - k for k, w in landed.values()],
        "scored_s": [w - k for k, w in scored.values()],
        "alert_s": alerts,
        "alert_reasons": reasons,
    }


def _writetimes(session, table: str, column: str, ids: list[str]) -> dict[str, tuple[float, float]]:
    """txn_id -> (Kafka record timestamp, write time of ``column``) in epoch seconds."""
    # lazy: cassandra (253 ms to import); the bench's producer child imports this module
    from cassandra.concurrent import execute_concurrent_with_args

    stmt = session.prepare(f"SELECT txn_id, kafka_timestamp, WRITETIME({column}) AS wt FROM {table} WHERE txn_id IN ?")
    args = [(ids[i : i + 100],) for i in range(0, len(ids), 100)]
    out = {}
    for r in execute_concurrent_with_args(session, stmt, args, concurrency=32, raise_on_first_error=True):
        for row in r.result_or_exc:
            if row.kafka_timestamp is not None and row.wt is not None:
                ts = row.kafka_timestamp.replace(tzinfo=UTC).timestamp()
                out[row.txn_id] = (ts, row.wt / 1e6)
    return out


def _alert_latencies(
    settings, topic: str, start: dict[int, int], kafka_ts: dict[str, float]
) -> tuple[list[float], dict[str, int]]:
    """For this phase's transactions: alert record timestamp - transaction record timestamp,
    and how many alerts named each reason code (a sanity check of the traffic: a bank
    alerts on a few percent of transactions, and the codes say why)."""

    # lazy: kafka (561 ms to import); the bench's producer child imports this module
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        client_id="txmon-bench-alerts",
        **client_config(settings),
    )
    tps = [TopicPartition(topic, p) for p in start]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, start[tp.partition])
    out: list = []
    reasons: Counter[str] = Counter()
    for msg in consumer:
        try:
            alert = json.loads(msg.value)
            txn = alert["txn_id"]
        except (ValueError, KeyError):
            continue
        if txn in kafka_ts:
            out.append(msg.timestamp / 1000 - kafka_ts[txn])
            reasons.update({r.get("code", "?") for r in alert.get("reasons", [])})
    consumer.close()
    return out, dict(reasons.most_common())


# ----------------------------------------------------------------------------- orchestration


def ensure_champion(train_events: int, log) -> str:
    # lazy: pandas (3.0 s to import); the bench's producer child imports this module
    from txmon.models.registry import Registry

    registry = Registry(models_dir())
    if registry.champion() is None:
        # lazy: pandas (3.0 s to import); the bench's producer child imports this module
        from txmon.models.sources import simulated
        from txmon.models.training import TrainingConfig, train

        log(f"no champion model in {registry.root}: training one on {train_events:,} simulated events...")
        history = simulated(train_events, 42)
        result = train(history.events, history.labels, TrainingConfig(seed=42), data_source=history.source)
        registry.promote(registry.register(result.bundle, result.metadata))
    champion = registry.champion()
    assert champion is not None  # promoted just above
    return champion


def _topics(settings, stamp: str) -> dict[str, str]:
    # lazy: infra.jars + infra.services.kafka (23 ms to import); the bench's producer child imports this module
    from txmon.infra.services.kafka import ensure_topics

    names = {
        "topic": f"bench_tx_{stamp}",
        "dlq_topic": f"bench_dlq_{stamp}",
        "labels_topic": f"bench_labels_{stamp}",
        "alerts_topic": f"bench_alerts_{stamp}",
    }
    ensure_topics(settings.kafka.bootstrap, list(names.values()), settings.kafka.partitions)
    return names


def run(cfg: BenchConfig, out_dir: Path, log=print) -> dict:
    # lazy: pandas (4.8 s to import); the bench's producer child imports this module
    from txmon.bench import baselines
    from txmon.infra.services.kafka import ensure_topics

    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%S")
    load = {"start": os.getloadavg()}
    t_start = time.monotonic()
    with bench_stack(stamp, log) as settings:
        model = ensure_champion(cfg.train_events, log)
        result: dict = {
            "started": started.isoformat(),
            "mode": asdict(cfg),
            "model": model,
            "machine": machine_facts(),
            "settings": {
                "spark_master": settings.spark.master,
                "shuffle_partitions": settings.spark.shuffle_partitions,
                "trigger_seconds": settings.spark.trigger_seconds,
                "max_offsets_per_trigger": settings.spark.max_offsets_per_trigger,
                "kafka_partitions": settings.kafka.partitions,
                "cassandra_write_concurrency": settings.spark.cassandra_write_concurrency,
                "cassandra_batch_rows": settings.spark.cassandra_batch_rows,
            },
        }
        sampler = MemorySampler(settings)
        stream = traffic = None
        try:
            with sampler:
                log("baselines (same run):")
                base_topic = f"bench_base_{stamp}"
                ensure_topics(settings.kafka.bootstrap, [base_topic, f"{base_topic}_dlq"], settings.kafka.partitions)
                payloads = baselines.simulated_payloads(cfg.baseline_events, cfg.seed)
                rates = [baselines.kafka_produce(settings, base_topic, payloads)]
                _log_rate(rates[-1], log)
                rates.append(baselines.kafka_consume(settings, base_topic, len(payloads)))
                _log_rate(rates[-1], log)
                del payloads
                # lazy: infra.jars (14 ms to import); the bench's producer child imports this module
                from txmon.spark_jobs.session import build_session

                spark = build_session(settings, "txmon-bench")
                for fn in (
                    lambda: baselines.spark_noop(spark, settings, base_topic),
                    lambda: baselines.cassandra_insert(spark, settings, base_topic),
                ):
                    rates.append(fn())
                    _log_rate(rates[-1], log)
                ckpt = settings.state_path / "checkpoints" / f"bench-{stamp}"
                ingest_only, _ = baselines.spark_stream(
                    spark, settings, base_topic, False, str(ckpt / "ingest-only"), dlq_topic=f"{base_topic}_dlq"
                )
                rates.append(ingest_only)
                _log_rate(ingest_only, log)
                alerts_base = f"bench_base_alerts_{stamp}"
                ensure_topics(settings.kafka.bootstrap, [alerts_base], settings.kafka.partitions)

                before = last_job_id(spark)
                with step_timers(spark) as steps:
                    detect, detect_progress = baselines.spark_stream(
                        spark,
                        settings,
                        base_topic,
                        True,
                        str(ckpt / "detect"),
                        dlq_topic=f"{base_topic}_dlq",
                        alerts_topic=alerts_base,
                    )
                rates.append(detect)
                _log_rate(detect, log)
                result["baselines"] = [{**asdict(r), "rows_per_s": r.rows_per_s} for r in rates]
                result["detect_backlog_duration_ms"] = _duration_breakdown(detect_progress)
                result["detect_backlog_jobs"] = job_profile(spark, before)
                result["detect_backlog_steps"] = {
                    "batches": len(detect_progress),
                    "add_batch_s": sum(p["durationMs"].get("addBatch", 0) for p in detect_progress) / 1000,
                    "worker_seconds": dict(steps.value),
                }
                log("where the detection stream's time goes (backlog run, Python steps inside the tasks):")
                log(
                    "  "
                    + format_steps(
                        steps.value, len(detect_progress) or 1, result["detect_backlog_steps"]["add_batch_s"]
                    ).replace("\n", "\n  ")
                )
                log("where the detection stream's time goes (backlog run, Spark jobs by call site):")
                log("  " + format_profile(result["detect_backlog_jobs"][:12]).replace("\n", "\n  "))
                scoring = baselines.scoring(spark, cfg.scoring_rows, cfg.seed + 1)
                result["scoring"] = scoring
                for name, v in scoring.items():
                    log(f"  {name:<62}{v:>10,.0f} rows/s")
                load["after_baselines"] = os.getloadavg()

                log(
                    f"ramp: {cfg.step_seconds:.0f}s per rate, sustained = producer kept up and lag "
                    f"<= {cfg.lag_bound_s:.0f}s of input in the second half"
                )
                names = _topics(settings, stamp)
                stream = StreamUnderTest(settings, names, str(ckpt / "pipeline"))
                # A population of its own (the backlog baselines used cfg.seed's): its profiles start empty.
                traffic = BenchTraffic(settings, names, cfg.seed + 2, cfg.planned_events())
                # Warm-up, not judged: the first micro-batches start the Python workers, broadcast the
                # model and run while HotSpot still compiles; judging them made the first step's
                # verdict swing between runs.
                warm = traffic.produce(cfg.rates[0], cfg.warmup_seconds)
                warm_drain = stream.wait_caught_up(timeout=300)
                log(
                    f"  warm-up: {warm.sent:,} events at {cfg.rates[0]:,} tx/s, caught up "
                    f"{'-' if warm_drain is None else f'{warm_drain:.1f}s'} after"
                )
                steps = []
                for rate in cfg.rates:
                    step = run_step(stream, traffic, rate, cfg, log)
                    steps.append(step)
                    if not step.sustained:
                        break
                for lower in cfg.fallback_rates():  # not even the first: go down
                    if any(s.sustained for s in steps):
                        break
                    steps.append(run_step(stream, traffic, lower, cfg, log))
                result["steps"] = [asdict(s) for s in steps]
                sustained = [s.target_rate for s in steps if s.sustained]
                best = max(sustained) if sustained else 0.0
                result["sustained_tx_s"] = best
                load["after_ramp"] = os.getloadavg()
                lat_rate = max(10.0, cfg.latency_fraction * (best or cfg.min_rate))
                log(f"latency at {cfg.latency_fraction:.0%} of the sustained rate:")
                lat = measure_latency(stream, traffic, names, lat_rate, cfg, log)
                result["latency"] = {
                    "rate": lat["rate"],
                    "transactions": lat["transactions"],
                    "alerts": len(lat["alert_s"]),
                    "alert_reasons": lat["alert_reasons"],
                    "cpu": lat["cpu"],
                    **{k: percentiles(lat[k]) for k in ("landed_s", "scored_s", "alert_s")},
                }
                result["_latency_samples"] = {k: lat[k] for k in ("landed_s", "scored_s", "alert_s")}
                stream.stop()
                stream = None
            load["end"] = os.getloadavg()
            result["loadavg"] = load
            result["memory_peak_mb"] = dict(sampler.peaks_mb)
            result["memory_total_peak_mb"] = sampler.total_peak_mb
            result["ratios"] = _ratios(result)
            result["seconds"] = time.monotonic() - t_start
            paths = write_report(result, out_dir)
            log(f"report: {', '.join(str(p) for p in paths)}")
            return result
        finally:
            stop_run(stream, traffic)


def stop_run(stream: StreamUnderTest | None, traffic: BenchTraffic | None) -> None:
    """Stop a run's stream and close its producer, whichever of them was started."""
    if stream is not None:
        stream.stop()
    if traffic is not None:
        traffic.close()


def use_bench_environment(stamp: str) -> bool:
    """Point this process's settings at the bench stack (:data:`BENCH_ENV`, unless TXMON_*
    say otherwise) and, unless a keyspace is given, at a keyspace of this run's own
    (``bench_<stamp>``); True when the keyspace is the run's own (drop it at the end).

    Why a keyspace per run: the bench replays the same seeded accounts every run, and on a
    kept keyspace they were folded on top of the profiles an earlier run left (same
    accounts, later states); the second of two runs on one keyspace ran its detection
    backlog at 1,249 rows/s (the first 2,245) and alerted on 67 % of its latency phase
    (VELOCITY_BURST: the same accounts again).
    """
    for key, value in BENCH_ENV.items():
        os.environ.setdefault(key, value)
    own_keyspace = "TXMON_CASSANDRA__KEYSPACE" not in os.environ
    if own_keyspace:
        os.environ["TXMON_CASSANDRA__KEYSPACE"] = f"bench_{stamp.lower()}"
    return own_keyspace


@contextmanager
def bench_stack(stamp: str, log=print):
    """``with bench_stack(stamp) as settings:`` the bench's Kafka and Cassandra, up, with
    this run's settings (:func:`use_bench_environment`). On the way out the run's own
    keyspace is dropped and a stack this started is stopped, unless ``TXMON_BENCH_KEEP=1``.
    Stop what uses them (streams, producers) inside the block."""
    # lazy: yaml (195 ms to import); the bench's producer child imports this module
    from txmon.infra import stack

    own_keyspace = use_bench_environment(stamp)
    settings = load_settings()
    was_running = all(s.healthy for s in stack.status(settings))
    stack.up(settings, log=lambda m: log(f"  {m}"))  # also creates the keyspace and tables
    try:
        yield settings
    finally:
        keep = os.environ.get("TXMON_BENCH_KEEP") == "1"
        if own_keyspace and not keep:
            drop_keyspace(settings)
        if not was_running and not keep:
            stack.down(settings, log=lambda m: None)


def drop_keyspace(settings) -> None:
    cluster, session = connect(settings, admin=True)  # the application role may not drop schema
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {settings.cassandra.keyspace}", timeout=120)
    finally:
        cluster.shutdown()


def _log_rate(r, log) -> None:
    log(f"  {r.name:<62}{r.rows_per_s:>10,.0f} rows/s  ({r.rows:,} in {r.seconds:.1f}s)")


def _ratios(result: dict) -> dict[str, float]:
    by_name = {b["name"]: b["rows_per_s"] for b in result["baselines"]}
    noop = next(v for k, v in by_name.items() if k.startswith("Spark Kafka source"))
    out = {"pipeline_sustained / spark_noop": result["sustained_tx_s"] / noop if noop else 0.0}
    for k, v in by_name.items():
        if k.startswith("Spark stream"):
            out[f"{k.split(', available-now')[0]} / spark_noop"] = v / noop if noop else 0.0
    out.update(scoring_ratios(result["scoring"]))  # vs the classifier alone and vs both models
    return out


def machine_facts() -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short steps and smaller baselines (a few minutes)")
    parser.add_argument("--out", type=Path, help="results directory [default: bench/results/<UTC timestamp>]")
    args = parser.parse_args(argv)
    cfg = BenchConfig.quick() if args.quick else BenchConfig.full()
    out = args.out or ROOT / "bench" / "results" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    result = run(cfg, out)
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
