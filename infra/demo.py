"""`txmon demo` / `make demo`: the whole pipeline on the local default, end to end.

Starts the services, runs the transactions stream, produces simulated UPI/banking
traffic (with one bad record of each kind mixed in now and then), waits until the
stream has caught up, and prints what landed, read back from Cassandra.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import cycle

from txmon.infra import stack
from txmon.infra.cassandra_schema import connect
from txmon.infra.masking import mask_account
from txmon.infra.process import wait_until
from txmon.infra.readback import account_aggregates, count_landed, dead_letters_since, kafka_end_offsets
from txmon.infra.settings import Settings
from txmon.ingestion.bad_records import bad_records
from txmon.ingestion.simulate import SimulateOptions, run_simulation
from txmon.spark_jobs.session import build_session
from txmon.spark_jobs.transactions_stream import StreamOptions, start_all


@dataclass
class DemoResult:
    produced: int = 0
    bad_sent: Counter = field(default_factory=Counter)
    landed: int = 0
    dead_lettered: Counter = field(default_factory=Counter)
    produce_seconds: float = 0.0
    end_to_end_seconds: float = 0.0
    spark_rows_per_second: float = 0.0
    scored: int = 0

    @property
    def ok(self) -> bool:
        return (self.landed == self.produced == self.scored) and self.dead_lettered == self.bad_sent


def _caught_up(query, targets: dict[int, int], topic: str) -> bool:
    progress = query.lastProgress
    if not progress:
        return False
    end = progress["sources"][0].get("endOffset")
    if isinstance(end, str):
        end = json.loads(end)
    done = (end or {}).get(topic, {})
    return all(int(done.get(str(p), 0)) >= off for p, off in targets.items())


def run_demo(settings: Settings, seconds: float = 60, rate: float = 1000, seed: int | None = None,
             bad_every: int = 400, log=print) -> DemoResult:
    if seed is None:
        # A new population each run: a second run with the same seed would replay the same
        # accounts into profiles that already hold the first run's history.
        seed = int(time.time()) % 1_000_000
    stack.up(settings, log=log)
    log(f"simulator seed {seed} (pass --seed {seed} to draw the same population again)")
    topic = settings.kafka.topics.transactions
    start_offsets = kafka_end_offsets(settings.kafka.bootstrap, topic)

    log("starting the transactions stream (Spark Structured Streaming)...")
    spark = build_session(settings, "txmon-demo")
    # Each demo run streams its own events from the offsets where it starts, with its own
    # checkpoint: simulated history runs days in a minute, so a second run's event times
    # lie behind the first run's watermark and a shared checkpoint would drop them.
    opts = StreamOptions.from_settings(
        settings, checkpoint_dir=str(settings.state_path / "checkpoints" / f"demo-{seed}-{int(time.time())}"),
        starting_offsets=json.dumps({topic: {str(p): off for p, off in start_offsets.items()}}),
    )
    queries = start_all(spark, settings, opts)

    result = DemoResult()
    ids: list[str] = []
    payers: Counter = Counter()
    frauds: dict[str, str] = {}
    reason_cycle = None

    def on_event(event, label, producer) -> None:
        nonlocal reason_cycle
        ids.append(event.txn_id)
        if label.is_fraud:
            frauds[event.txn_id] = label.scenario
        payers[event.payer.account_number] += 1
        if len(ids) % bad_every == 0:
            corpus = bad_records(event)
            if reason_cycle is None:
                reason_cycle = cycle(sorted(corpus))
            reason = next(reason_cycle)
            producer.send_raw(b"bad-" + event.payer.account_number.encode(), corpus[reason])
            result.bad_sent[reason] += 1

    log(f"producing simulated traffic for {seconds:.0f}s at {rate:,.0f} tx/s "
        f"(one bad record every {bad_every} events)...")
    t0 = time.monotonic()
    summary = run_simulation(
        settings,
        SimulateOptions(seed=seed, rate=rate, duration=seconds, progress=False),
        on_event=on_event,
    )
    result.produced = len(ids)
    result.produce_seconds = summary.seconds
    log(summary.line())

    targets = kafka_end_offsets(settings.kafka.bootstrap, topic)
    wait_until(lambda: _caught_up(queries[0], targets, topic), max(300.0, seconds * 5), interval=1,
               abort=lambda: queries[0].exception() is not None)
    if queries[0].exception() is not None:
        raise RuntimeError(f"stream failed: {queries[0].exception()}")
    result.end_to_end_seconds = time.monotonic() - t0
    rates = [p["processedRowsPerSecond"] for p in queries[0].recentProgress
             if p.get("numInputRows", 0) > 0 and p.get("processedRowsPerSecond")]
    result.spark_rows_per_second = sum(rates) / len(rates) if rates else 0.0
    for query in queries:
        query.stop()

    cluster, session = connect(settings, settings.cassandra.keyspace)
    try:
        result.landed = count_landed(session, ids)
        result.dead_lettered = dead_letters_since(session, topic, start_offsets)
        scored = scored_decisions(session, ids)
        top = [acct for acct, _ in payers.most_common(5)]
        aggregates = account_aggregates(session, top, "slide_1h")
    finally:
        cluster.shutdown()

    _print_summary(result, summary, aggregates, log)
    result.scored = len(scored)
    _print_detection(scored, frauds, log)
    log("RESULT: " + ("OK - every valid event landed once and was scored, every bad record "
                      "dead-lettered with its reason" if result.ok else "MISMATCH - see the counts above"))
    log("Kafka and Cassandra are still running (`txmon infra status`); stop them with `txmon infra down`.")
    return result


def scored_decisions(session, ids: list[str]) -> dict[str, tuple]:
    """txn_id -> (decision, risk_score, rules_fired, reasons JSON, payer) for scored transactions."""
    # Driver on first use: the demo's other steps do not need it.
    from cassandra.concurrent import execute_concurrent_with_args

    stmt = session.prepare("SELECT txn_id, decision, risk_score, rules_fired, reasons, payer_account "
                           "FROM scored_transactions WHERE txn_id IN ?")
    args = [(ids[i:i + 100],) for i in range(0, len(ids), 100)]
    out = {}
    for r in execute_concurrent_with_args(session, stmt, args, concurrency=32, raise_on_first_error=True):
        for row in r.result_or_exc:
            out[row.txn_id] = (row.decision, row.risk_score, row.rules_fired or [], row.reasons, row.payer_account)
    return out


def _print_detection(scored: dict, frauds: dict, log) -> None:
    decisions = Counter(d for d, *_ in scored.values())
    flagged = {t for t, (d, *_) in scored.items() if d != "APPROVE"}
    legit = [t for t in scored if t not in frauds]
    log(f"scored transactions             {len(scored):>10,}  "
        + "  ".join(f"{k}={decisions.get(k, 0):,}" for k in ("APPROVE", "REVIEW", "BLOCK")))
    if legit:
        log(f"alert rate on legitimate traffic {sum(t in flagged for t in legit) / len(legit):>9.2%}")
    by_scenario: dict[str, list[bool]] = {}
    for txn, scenario in frauds.items():
        if txn in scored:
            by_scenario.setdefault(scenario, []).append(txn in flagged)
    if by_scenario:
        log("fraud caught, by simulated scenario (rules + champion model, if any):")
        for scenario, hits in sorted(by_scenario.items()):
            log(f"    {scenario:<32}{sum(hits):>5} of {len(hits):<5} ({sum(hits) / len(hits):.0%})")
    examples = [t for t in flagged if t in frauds][:3]
    if examples:
        log("example alerts:")
    for txn in examples:
        decision, risk, _fired, reasons, payer = scored[txn]
        words = "; ".join(r["description"] for r in json.loads(reasons or "[]"))[:110]
        log(f"    {decision:<6} risk={risk:<3} {mask_account(payer):<16} {words}")
    log("-" * 72)


def _print_summary(result: DemoResult, summary, aggregates, log) -> None:
    rule = "-" * 72
    log(rule)
    log(f"events produced (valid)         {result.produced:>10,}")
    log(f"bad records produced            {sum(result.bad_sent.values()):>10,}")
    log(f"landed in Cassandra             {result.landed:>10,}  "
        f"({'all of them' if result.landed == result.produced else 'MISSING ' + str(result.produced - result.landed)})")
    log(f"dead-lettered                   {sum(result.dead_lettered.values()):>10,}")
    for reason, n in sorted(result.dead_lettered.items()):
        log(f"    {reason:<28}{n:>10,}")
    log(f"fraud labels sent (delayed)     {summary.labels_sent:>10,}")
    log(f"produce rate                    {summary.rate:>10,.0f} events/s")
    log(f"end to end (produce->landed)    {result.produced / result.end_to_end_seconds:>10,.0f} events/s "
        f"over {result.end_to_end_seconds:.1f}s")
    log(f"Spark ingest query, mean        {result.spark_rows_per_second:>10,.0f} rows/s per micro-batch")
    log("busiest accounts, last hour (1-hour window to their newest 5-minute bucket):")
    for row in aggregates:
        log(f"    {mask_account(row.payer_account):<16} {row.window_start:%d %b %H:%M}-{row.window_end:%H:%M}  "
            f"txns={row.txn_count:<4} total=₹{row.total_paise / 100:>12,.2f}  max=₹{row.max_paise / 100:>11,.2f}  "
            f"payees={row.distinct_payees}")
