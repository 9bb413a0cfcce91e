"""Saving feature profiles: one request per profile against small UNLOGGED batches, same run.

Each micro-batch saves one payer and one payee profile per distinct key it saw
(spark_jobs/profile_store.py). This times ``CassandraProfileStore.save`` (batched) against
the same rows sent one request each (what it did before), interleaved so both see the
same machine load, on profiles folded from simulated traffic.

    TXMON_CASSANDRA__PORT=... .venv/bin/python bench/profile_save_bench.py [--profiles 5000]

Needs a running Cassandra with the schema (``txmon infra up``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from cassandra.concurrent import execute_concurrent_with_args

from txmon.infra.settings import load_settings
from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.models.features import MemoryProfileStore, add_features, transactions_frame
from txmon.spark_jobs.cassandra_sink import CassandraTarget
from txmon.spark_jobs.profile_store import CassandraProfileStore

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def folded_profiles(n_events: int, seed: int) -> dict[str, str]:
    """Payer profiles (JSON) after folding simulated traffic: realistic sizes."""

    sim = simulator_for(SimulateOptions(seed=seed, count=n_events, rate=None, progress=False))
    store = MemoryProfileStore()
    add_features(transactions_frame([s.event for s in sim.generate(n_events)]), store)
    return {key: state for (kind, key), state in store.profiles.items() if kind == "payer"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40_000, help="simulated events folded into profiles")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    profiles = folded_profiles(args.events, 11)
    sizes = sorted(len(v) for v in profiles.values())
    store = CassandraProfileStore(CassandraTarget.from_settings(load_settings()), "bench#0")
    store.load("bench", list(profiles))

    def per_request():
        params = [("bench", k, v, None, "bench#0") for k, v in profiles.items()]
        execute_concurrent_with_args(
            store.session, store._insert, params, concurrency=store.target.concurrency, raise_on_first_error=True
        )

    def batched():
        store.save("bench", profiles)

    times: dict[str, list[float]] = {"one request per profile": [], "UNLOGGED batches (save)": []}
    for fn in (per_request, batched):
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in zip(times, (per_request, batched)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    n = len(profiles)
    print(
        f"{n:,} payer profiles, JSON median {sizes[len(sizes) // 2]:,} B (max {sizes[-1]:,} B); "
        f"median of {args.repeats}; loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    base = n / statistics.median(times["one request per profile"])
    for name, ts in times.items():
        rate = n / statistics.median(ts)
        print(f"{name:<28}{rate:>10,.0f} profiles/s{rate / base:>8.2f}x")


if __name__ == "__main__":
    main()
