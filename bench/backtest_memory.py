"""Peak memory of reading and featuring a labelled file for a backtest: the backtest's path
(spark_jobs/backtest.read_file, a chunk of the file at a time, held compactly, then
features_in_chunks keeping the rows from the training window on, here the last quarter of
the days) on the file and on its first quarter, so the growth per row shows; against the
whole-file path training uses (ingestion.replay.load_labelled: one validated event object per
row, then labelled_features) on the whole file.

    .venv/bin/python bench/backtest_memory.py --rows 1000000

Each measure runs in its own process, so each peak RSS (``ru_maxrss``) is its own. The file
is card-shaped (config/replay/card_transactions.yaml reads it): 20k cards, 2k merchants, 60
days.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from txmon.ingestion.replay import load_labelled
from txmon.models.dataset import features_in_chunks, labelled_features
from txmon.spark_jobs.backtest import read_file

ROOT = Path(__file__).resolve().parents[1]
MAPPING = ROOT / "config" / "replay" / "card_transactions.yaml"
CATEGORIES = (
    "grocery_pos",
    "grocery_net",
    "gas_transport",
    "shopping_pos",
    "shopping_net",
    "misc_pos",
    "misc_net",
    "food_dining",
    "entertainment",
    "health_fitness",
    "home",
    "kids_pets",
    "personal_care",
    "travel",
)


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-06-01")
    seconds = np.sort(rng.uniform(0, 60 * 86400, rows))
    cards = rng.integers(0, 20_000, rows)
    frame = pd.DataFrame(
        {
            "trans_date_trans_time": (start + pd.to_timedelta(seconds, unit="s")).strftime("%Y-%m-%d %H:%M:%S"),
            "cc_num": (4_000_000_000_000_000 + cards * 7919).astype(str),
            "merchant": np.char.add("fraud_Merchant ", rng.integers(0, 2_000, rows).astype(str)),
            "category": np.asarray(CATEGORIES)[rng.integers(0, len(CATEGORIES), rows)],
            "amt": np.round(rng.lognormal(3.5, 1.2, rows), 2),
            "city": "Pune",
            "trans_num": [f"{i:032x}" for i in range(rows)],
            "merch_lat": np.round(18.5 + rng.normal(0, 0.2, rows), 6),
            "merch_long": np.round(73.8 + rng.normal(0, 0.2, rows), 6),
            "is_fraud": (rng.random(rows) < 0.005).astype(int),
        }
    )
    frame.to_csv(path, index=False)


def measure(mode: str, path: Path) -> dict:
    started = time.perf_counter()
    if mode == "chunked":
        source = read_file(path, MAPPING)
        times = source.transactions["event_time"]
        keep_from = times.min() + (times.max() - times.min()) * 0.75
        rows = len(source.transactions)
        kept = len(features_in_chunks(source.transactions, keep_from=keep_from))
    else:
        events, labels = load_labelled(path, MAPPING)
        rows = kept = len(labelled_features(events, labels))
    return {
        "mode": mode,
        "rows": rows,
        "kept": kept,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _run(mode: str, path: Path) -> dict | None:
    out = subprocess.run(
        [sys.executable, __file__, "--file", str(path), "--measure", mode],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        print(f"{mode} {path.name}: failed\n{out.stderr[-2000:]}")
        return None
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"{mode:>8} {result['rows']:>10,} rows: peak RSS {result['peak_rss_mib']:,.0f} MiB, "
        f"{result['seconds']} s, {result['kept']:,} featured rows kept"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--file", type=Path, default=Path("/tmp/txmon-backtest-memory.csv"))
    parser.add_argument("--measure", choices=("chunked", "whole"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.file)))
        return
    if not args.file.exists():
        generate(args.file, args.rows)
    quarter = args.file.with_name(args.file.stem + "-quarter.csv")
    lines = args.file.read_text().splitlines(keepends=True)
    quarter.write_text("".join(lines[: 1 + (len(lines) - 1) // 4]))
    print(f"file: {args.file} ({args.file.stat().st_size / 2**20:.0f} MiB, {len(lines) - 1:,} rows)")
    small, chunked, whole = _run("chunked", quarter), _run("chunked", args.file), _run("whole", args.file)
    if small and chunked:
        per_row = (chunked["peak_rss_mib"] - small["peak_rss_mib"]) * 2**20 / (chunked["rows"] - small["rows"])
        print(f"backtest path: {per_row:,.0f} bytes of peak RSS per row of the file")
    if chunked and whole:
        print(f"backtest path / whole-file path peak RSS: {chunked['peak_rss_mib'] / whole['peak_rss_mib']:.2f}")


if __name__ == "__main__":
    main()
