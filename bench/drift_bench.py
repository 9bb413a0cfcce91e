"""How fast and how quietly the default drift monitor (models/drift.py) works.

Seeded synthetic streams shaped like the scored stream's signals:

- detection delay (observations after the change) for a recall collapse among frauds
  (0.9 -> 0.2 on the labels stream) and for a mean shift in the model's scores
  (fraud_probability Beta(0.3, 12) -> Beta(0.6, 12), the mean doubles);
- false alarms per million observations on stationary streams of every signal.

    .venv/bin/python bench/drift_bench.py                # default config, 1M values per signal
    .venv/bin/python bench/drift_bench.py --million 0.2 --repeats 5

Importable: :func:`detection_delay`, :func:`false_alarms_per_million`, :func:`run`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.drift import DriftConfig, DriftMonitor, Signal  # noqa: E402

__all__ = ["STATIONARY", "detection_delay", "false_alarms_per_million", "run"]

AT = datetime(2025, 1, 6, tzinfo=timezone.utc)  # detection time is an input, never now()
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


def detection_delay(signal: Signal, before: Draw, after: Draw, *, change_at: int, horizon: int,
                    seed: int, config: DriftConfig | None = None) -> int | None:
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


def false_alarms_per_million(config: DriftConfig | None = None, *, n: int = 1_000_000, seed: int = 0,
                             signals: tuple[Signal, ...] = tuple(Signal)) -> dict[Signal, float]:
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


def run(config: DriftConfig | None = None, *, million: float = 1.0, repeats: int = 20) -> dict[str, object]:
    config = config or DriftConfig()
    recall = [detection_delay(Signal.RECALL_AMONG_FRAUDS, STATIONARY[Signal.RECALL_AMONG_FRAUDS],
                              lambda rng, n: (rng.random(n) < 0.2).astype(float),
                              change_at=5_000, horizon=2_000, seed=s, config=config) for s in range(repeats)]
    scores = [detection_delay(Signal.FRAUD_PROBABILITY, STATIONARY[Signal.FRAUD_PROBABILITY],
                              lambda rng, n: rng.beta(0.6, 12.0, n),
                              change_at=50_000, horizon=20_000, seed=s, config=config) for s in range(repeats)]
    started = time.perf_counter()
    alarms = false_alarms_per_million(config, n=int(million * 1_000_000))
    return {"recall": recall, "scores": scores, "alarms": alarms, "million": million,
            "seconds": time.perf_counter() - started}


def _describe(delays: list[int | None]) -> str:
    found = [d for d in delays if d is not None and d >= 0]
    missed = sum(d is None for d in delays)
    early = sum(d == -1 for d in delays)
    if not found:
        return f"never detected ({missed} missed, {early} early)"
    return (f"median {statistics.median(found):.0f}, min {min(found)}, max {max(found)} observations "
            f"({len(found)}/{len(delays)} runs; missed {missed}, alarmed before the change {early})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--million", type=float, default=1.0, help="stationary values per signal, millions")
    parser.add_argument("--repeats", type=int, default=20, help="seeds per detection-delay measurement")
    parser.add_argument("--river-default", action="store_true",
                        help="also count false alarms with River's default delta (0.002) everywhere")
    args = parser.parse_args(argv)
    config = DriftConfig()
    result = run(config, million=args.million, repeats=args.repeats)
    print(f"default config: {config.model_dump()}")
    print(f"recall collapse 0.9 -> 0.2 (after 5,000 fraud labels): {_describe(result['recall'])}")
    print(f"score mean shift Beta(0.3,12) -> Beta(0.6,12) (after 50,000 scores): {_describe(result['scores'])}")
    alarms = result["alarms"]
    total = sum(alarms.values()) / len(alarms)
    print(f"false alarms per million observations, stationary ({args.million:g}M values per signal, "
          f"{result['seconds']:.1f}s):")
    for signal, rate in alarms.items():
        print(f"  {signal.value:<22} {rate:.2f}")
    print(f"  {'mean over signals':<22} {total:.2f}")
    if args.river_default:
        river = DriftConfig(deltas={s.value: 0.002 for s in Signal})
        reference = false_alarms_per_million(river, n=int(args.million * 1_000_000))
        print("for reference, River's default delta 0.002 on every signal: "
              + ", ".join(f"{s.value} {r:.2f}" for s, r in reference.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
