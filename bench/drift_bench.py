"""How fast and how quietly the default drift monitor (models/drift.py) works.

Seeded synthetic streams shaped like the scored stream's signals:

- detection delay (observations after the change) for a recall collapse among frauds
  (0.9 -> 0.2 on the labels stream) and for a mean shift in the model's scores
  (fraud_probability Beta(0.3, 12) -> Beta(0.6, 12), the mean doubles);
- false alarms per million observations on stationary streams of every signal.

    .venv/bin/python bench/drift_bench.py                # default config, 1M values per signal
    .venv/bin/python bench/drift_bench.py --million 0.2 --repeats 5
    .venv/bin/python bench/drift_bench.py --simulated 1000000   # + the simulator's own traffic
    .venv/bin/python bench/drift_bench.py --demo 60000          # + a fresh population, as make demo

``--demo N`` feeds the monitor (as the stream does) with N transactions of a population
new to the stream, scored by a champion trained as ``make demo`` trains it: every
payer's history starts at the first transaction, as in ``make demo``. It counts alarms
with the default config (score signals fed from payers known ``min_history_days``) and
with ``min_history_days=0`` (every transaction fed, as before that setting existed).

``--simulated N`` also feeds the monitor exactly as the stream does (spark_jobs/drift_stream.py:
micro-batches of scored transactions, late labels in label-time order joined with the
decisions) with the simulator's traffic scored by a champion trained on separate
history: false alarms per million transactions on N stationary transactions, and the
delay (transactions, simulated hours) until a new fraud pattern (qr_code_swap, 70 % of
attacks from the middle of the run on) is detected.

Importable: :func:`detection_delay`, :func:`false_alarms_per_million`, :func:`run`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.models import sources
from txmon.models.dataset import labelled_features
from txmon.models.rules import stream_policy
from txmon.models.scoring import score_frame
from txmon.models.training import TrainingConfig, train

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from txmon.models.drift import DriftConfig, DriftMonitor, Signal

__all__ = ["STATIONARY", "detection_delay", "false_alarms_per_million", "run"]

AT = datetime(2025, 1, 6, tzinfo=UTC)  # detection time is an input, never now()
Draw = Callable[[np.random.Generator, int], np.ndarray]

STATIONARY: dict[Signal, Draw] = {
    Signal.FRAUD_PROBABILITY: lambda rng, n: rng.beta(0.3, 12.0, n),
    Signal.ANOMALY_SCORE: lambda rng, n: rng.beta(4.0, 10.0, n),
    Signal.LOG_AMOUNT: lambda rng, n: np.log1p(np.round(rng.lognormal(np.log(80_000), 1.2, n))),
    Signal.PAYER_COUNT_1H: lambda rng, n: rng.negative_binomial(2, 0.5, n).astype(float),
    Signal.RECALL_AMONG_FRAUDS: lambda rng, n: (rng.random(n) < 0.9).astype(float),
    Signal.PRECISION_OF_ALERTS: lambda rng, n: (rng.random(n) < 0.3).astype(float),
}
"""One seeded stationary draw per signal, roughly the shape the stream produces."""


def detection_delay(
    signal: Signal,
    before: Draw,
    after: Draw,
    *,
    change_at: int,
    horizon: int,
    seed: int,
    config: DriftConfig | None = None,
) -> int | None:
    """Observations after ``change_at`` until the first alarm (None: none within
    ``horizon``); an alarm before the change counts as a false alarm and returns -1."""
    rng = np.random.default_rng(seed)
    monitor = DriftMonitor(config)
    values = np.concatenate([before(rng, change_at), after(rng, horizon)]).tolist()
    events = monitor.observe(signal, values, AT)
    if not events:
        return None
    first = events[0].n_seen - 1  # index of the value that raised it
    return -1 if first < change_at else first - change_at


def false_alarms_per_million(
    config: DriftConfig | None = None, *, n: int = 1_000_000, seed: int = 0, signals: tuple[Signal, ...] = tuple(Signal)
) -> dict[Signal, float]:
    """Alarms per million values on each signal's stationary stream (:data:`STATIONARY`)."""
    out = {}
    for k, signal in enumerate(signals):
        rng = np.random.default_rng([seed, k])
        monitor = DriftMonitor(config)
        alarms = 0
        for _ in range(0, n, 100_000):
            alarms += len(monitor.observe(signal, STATIONARY[signal](rng, 100_000).tolist(), AT))
        out[signal] = alarms * 1e6 / n
    return out


def simulated_stream(
    n: int,
    *,
    change: bool,
    seed: int = 5,
    batch: int = 5_000,
    label_batch: int = 500,
    config: DriftConfig | None = None,
    per_hour: bool = True,
    n_customers: int = 1_000,
    warmup_days: float = 31.0,
    champion=None,
) -> dict[str, Any]:
    """Alarms of a monitor fed like the stream's, over n simulated transactions
    (a regime change half-way when ``change``). The first ``warmup_days`` of simulated
    time only warm the per-account profiles up (a running bank's are warm, and the score
    signals take payers known 30 days); a small population (``n_customers``) gets there
    in fewer transactions. ``per_hour=False`` feeds raw values instead of the per-hour
    PIT. ``champion``: a bundle to score with (default: trained on separate history of
    the same population kind)."""

    def options(seed_, count, **kw):
        return SimulateOptions(
            seed=seed_, count=count, rate=None, n_customers=n_customers, live=False, progress=False, **kw
        )

    warmup = int(n_customers * options(seed, 1).txns_per_customer_per_day * warmup_days)
    champion = champion if champion is not None else simulated_champion(seed=seed, n_customers=n_customers)
    reference = champion.drift_reference if per_hour else None
    drift: dict[str, Any] = (
        {"drift_after_events": n // 2, "drift_scenario": "qr_code_swap", "drift_scenario_share": 0.7} if change else {}
    )
    if change:
        drift["drift_after_events"] += warmup
    simulator = simulator_for(options(seed, n + warmup, **drift))
    items = list(simulator.generate(n + warmup))
    frame = labelled_features([i.event for i in items], [i.label for i in items]).iloc[warmup:]
    frame = frame.reset_index(drop=True)
    scored = score_frame(frame, champion, stream_policy()[0]).rename(columns={"anomaly": "anomaly_score"})
    scored["model_version"] = "bench"
    position = pd.Series(range(len(scored)), index=scored["txn_id"])
    # The regime changes at a simulated time (the first event at or after it is the change).
    change_time = change_index = None
    if change:
        assert simulator.config.drift is not None  # asked for above
        change_time = pd.Timestamp(simulator.config.drift.at)
        change_index = int(scored["event_time"].searchsorted(change_time))
    monitor = DriftMonitor(config, model_version="bench")
    # (part, signal, transaction index of the trigger, simulated time of the alarm)
    alarms: list[tuple[str, str, int | None, Any]] = []
    for start in range(0, len(scored), batch):
        chunk = scored.iloc[start : start + batch]
        at = chunk["event_time"].max().to_pydatetime()
        for event in monitor.update_scores(chunk, at, reference=reference):
            alarms.append(("scores", event.signal.value, start + len(chunk) - 1, chunk["event_time"].max()))
    outcomes = scored[["txn_id", "is_fraud", "decision", "label_time"]].sort_values(["label_time", "txn_id"])
    frauds_seen = 0
    for start in range(0, len(outcomes), label_batch):
        chunk = outcomes.iloc[start : start + label_batch]
        events = monitor.update_labels(chunk, chunk["label_time"].max().to_pydatetime())
        fraud_ids = chunk.loc[chunk["is_fraud"], "txn_id"].tolist()
        for event in events:
            if event.signal is Signal.RECALL_AMONG_FRAUDS:
                trigger = fraud_ids[event.n_seen - frauds_seen - 1]
                alarms.append(
                    (
                        "labels",
                        event.signal.value,
                        int(position[trigger]),
                        chunk.set_index("txn_id").loc[trigger, "label_time"],
                    )
                )
            else:
                alarms.append(("labels", event.signal.value, None, chunk["label_time"].max()))
        frauds_seen += len(fraud_ids)
    result: dict[str, Any] = {
        "n": n,
        "alarms": alarms,
        "frauds": int(scored["is_fraud"].sum()),
        "change_index": change_index,
    }
    if change_index is not None:
        after = [(signal, i, t) for _, signal, i, t in alarms if i is not None and i >= change_index]
        result["false_before_change"] = sum(1 for a in alarms if a[2] is not None and a[2] < change_index)
        result["first"] = (
            None
            if not after
            else min(
                ((signal, i - change_index, (t - change_time).total_seconds() / 3600) for signal, i, t in after),
                key=lambda x: x[1],
            )
        )
        qr = scored["scenario"] == "qr_code_swap"
        result["qr_recall"] = float((scored.loc[qr, "decision"] != "APPROVE").mean()) if qr.any() else None
    return result


def run(config: DriftConfig | None = None, *, million: float = 1.0, repeats: int = 20) -> dict[str, Any]:
    config = config or DriftConfig()
    recall = [
        detection_delay(
            Signal.RECALL_AMONG_FRAUDS,
            STATIONARY[Signal.RECALL_AMONG_FRAUDS],
            lambda rng, n: (rng.random(n) < 0.2).astype(float),
            change_at=5_000,
            horizon=2_000,
            seed=s,
            config=config,
        )
        for s in range(repeats)
    ]
    scores = [
        detection_delay(
            Signal.FRAUD_PROBABILITY,
            STATIONARY[Signal.FRAUD_PROBABILITY],
            lambda rng, n: rng.beta(0.6, 12.0, n),
            change_at=50_000,
            horizon=20_000,
            seed=s,
            config=config,
        )
        for s in range(repeats)
    ]
    started = time.perf_counter()
    alarms = false_alarms_per_million(config, n=int(million * 1_000_000))
    return {
        "recall": recall,
        "scores": scores,
        "alarms": alarms,
        "million": million,
        "seconds": time.perf_counter() - started,
    }


def simulated_champion(*, seed: int = 5, n_customers: int = 1_000):
    """A champion trained on 100,000 transactions of separate history (another seed) of
    the population :func:`simulated_stream` simulates."""

    opts = SimulateOptions(
        seed=seed + 1000, count=100_000, rate=None, n_customers=n_customers, live=False, progress=False
    )
    history = list(simulator_for(opts).generate(100_000))
    return train(
        [i.event for i in history], [i.label for i in history], TrainingConfig(seed=1), data_source="bench"
    ).bundle


def demo_champion():
    """The champion ``make demo`` trains when the registry is empty (``txmon train
    --simulate 100000``: the default simulator mix, seed 42)."""

    history = sources.simulated(100_000, 42)
    return train(history.events, history.labels, TrainingConfig(seed=42), data_source=history.source).bundle


def demo_population(
    n: int,
    *,
    seed: int = 7,
    champion=None,
    configs: dict[str, DriftConfig] | None = None,
    batch: int = 2_000,
    label_batch: int = 500,
) -> dict[str, list[tuple[str, str, int]]]:
    """Alarms, per config, of a monitor fed as the stream feeds it with the first ``n``
    transactions of a population new to the stream (``make demo``: a new seed each run,
    every profile empty at its first transaction), scored by ``champion`` (default:
    :func:`demo_champion`). Each alarm: (part, signal, transaction index)."""

    champion = champion if champion is not None else demo_champion()
    configs = configs or {"default": DriftConfig(), "min_history_days=0": DriftConfig(min_history_days=0)}
    items = list(simulator_for(SimulateOptions(seed=seed, count=n, rate=1000, live=False, progress=False)).generate(n))
    frame = labelled_features([i.event for i in items], [i.label for i in items])
    scored = score_frame(frame, champion, stream_policy()[0]).rename(columns={"anomaly": "anomaly_score"})
    scored["model_version"] = "demo"
    return feed_as_stream(scored, champion.drift_reference, configs, batch=batch, label_batch=label_batch)


def feed_as_stream(
    scored, reference, configs: dict[str, DriftConfig], *, batch: int = 2_000, label_batch: int = 500
) -> dict[str, list[tuple[str, str, int]]]:
    """Alarms, per config, of a fresh monitor fed with a scored frame as the stream feeds
    it: micro-batches of ``batch`` rows in event-time order (score signals), then the
    frauds' labels in label-time order (label signals)."""
    position = dict(zip(scored["txn_id"], range(len(scored)), strict=True))
    outcomes = scored[["txn_id", "is_fraud", "decision", "label_time"]].sort_values(["label_time", "txn_id"])
    outcomes = outcomes[outcomes["is_fraud"]]  # the simulator labels frauds only
    out: dict[str, list[tuple[str, str, int]]] = {}
    for name, config in configs.items():
        monitor = DriftMonitor(config, model_version="demo")
        alarms = []
        for start in range(0, len(scored), batch):
            chunk = scored.iloc[start : start + batch]
            alarms += [
                ("scores", e.signal.value, start)
                for e in monitor.update_scores(chunk, chunk["event_time"].max().to_pydatetime(), reference=reference)
            ]
        for start in range(0, len(outcomes), label_batch):
            chunk = outcomes.iloc[start : start + label_batch]
            alarms += [
                ("labels", e.signal.value, position[chunk["txn_id"].iloc[-1]])
                for e in monitor.update_labels(chunk, chunk["label_time"].max().to_pydatetime())
            ]
        out[name] = alarms
    return out


def _describe(delays: list[int | None]) -> str:
    found = [d for d in delays if d is not None and d >= 0]
    missed = sum(d is None for d in delays)
    early = sum(d == -1 for d in delays)
    if not found:
        return f"never detected ({missed} missed, {early} early)"
    return (
        f"median {statistics.median(found):.0f}, min {min(found)}, max {max(found)} observations "
        f"({len(found)}/{len(delays)} runs; missed {missed}, alarmed before the change {early})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--million", type=float, default=1.0, help="stationary values per signal, millions")
    parser.add_argument("--repeats", type=int, default=20, help="seeds per detection-delay measurement")
    parser.add_argument(
        "--river-default",
        action="store_true",
        help="also count false alarms with River's default delta (0.002) everywhere",
    )
    parser.add_argument(
        "--demo",
        type=int,
        metavar="N",
        default=0,
        help="also feed N transactions of a fresh population (as make demo), with and without "
        "the min_history_days filter (trains the demo's champion first: slow)",
    )
    parser.add_argument(
        "--simulated",
        type=int,
        metavar="N",
        default=0,
        help="also run the monitor over N simulated transactions, stationary and with a new "
        "fraud pattern half-way (slow: ~N/5000 s)",
    )
    args = parser.parse_args(argv)
    config = DriftConfig()
    result = run(config, million=args.million, repeats=args.repeats)
    print(f"default config: {config.model_dump()}")
    print(f"recall collapse 0.9 -> 0.2 (after 5,000 fraud labels): {_describe(result['recall'])}")
    print(f"score mean shift Beta(0.3,12) -> Beta(0.6,12) (after 50,000 scores): {_describe(result['scores'])}")
    alarms = result["alarms"]
    total = sum(alarms.values()) / len(alarms)
    print(
        f"false alarms per million observations, stationary ({args.million:g}M values per signal, "
        f"{result['seconds']:.1f}s):"
    )
    for signal, rate in alarms.items():
        print(f"  {signal.value:<22} {rate:.2f}")
    print(f"  {'mean over signals':<22} {total:.2f}")
    if args.simulated:
        champion = simulated_champion()
        raw = simulated_stream(args.simulated, change=False, config=config, per_hour=False, champion=champion)
        print(
            f"simulated stationary traffic, raw values (no per-hour reference): {len(raw['alarms'])} alarms = "
            f"{len(raw['alarms']) * 1e6 / args.simulated:.2f} per million transactions"
        )
        stationary = simulated_stream(args.simulated, change=False, config=config, champion=champion)
        print(
            f"simulated stationary traffic, {args.simulated:,} transactions ({stationary['frauds']:,} frauds), "
            f"fed as the stream feeds it: {len(stationary['alarms'])} alarms = "
            f"{len(stationary['alarms']) * 1e6 / args.simulated:.2f} per million transactions "
            f"{[a[:2] for a in stationary['alarms']]}"
        )
        changed = simulated_stream(args.simulated, change=True, config=config, champion=champion)
        first = changed["first"]
        print(
            f"new pattern qr_code_swap from transaction {changed['change_index']:,} (champion's recall on it "
            f"{changed['qr_recall']:.3f}): alarms before the change {changed['false_before_change']}; "
            + (
                "never detected"
                if first is None
                else f"first alarm {first[0]} after {first[1]:,} transactions, {first[2]:.1f} simulated hours "
                "(the label delay included)"
            )
        )
    if args.demo:
        for name, alarms in demo_population(args.demo).items():
            print(
                f"fresh population as make demo, {args.demo:,} transactions, {name}: {len(alarms)} alarms = "
                f"{len(alarms) * 1e6 / args.demo:.0f} per million transactions {[a[:2] for a in alarms]}"
            )
    if args.river_default:
        river = DriftConfig(deltas={s.value: 0.002 for s in Signal})
        reference = false_alarms_per_million(river, n=int(args.million * 1_000_000))
        print(
            "for reference, River's default delta 0.002 on every signal: "
            + ", ".join(f"{s.value} {r:.2f}" for s, r in reference.items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
