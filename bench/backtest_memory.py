"""Peak memory of reading a labelled file and featuring it, path by path.

Each path runs on the file and on its first quarter, so the growth per row shows:

- ``chunked``, the backtest's path: models/sources.read_file (a chunk of the file at a
  time, held compactly), then features_in_chunks keeping the rows from the training
  window on, here the last quarter of the days;
- ``train``, ``txmon train --replay``'s path: the same reader (models/sources.from_file),
  every row featured chunk by chunk (LabelledHistory.features), then the model trained on
  that frame as the command trains it (models/training.train_frame, the stream's rules);
  the peak before training is reported too;
- ``whole``, the whole-file path training used before: ingestion.replay.load_labelled (one
  validated event object per row), then labelled_features;
- ``replay``, ``txmon replay``'s and the ingestion DAG's path, asked for by name only: a dry
  run of ingestion.replay.replay_file (every row validated, held until sorted, rebuilt for
  sending) with its rejects file.

    .venv/bin/python bench/backtest_memory.py --rows 1000000
    .venv/bin/python bench/backtest_memory.py --rows 300000 --paths train,whole
    .venv/bin/python bench/backtest_memory.py --rows 300000 --paths replay

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
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from txmon.infra.settings import DEFAULT_RULES
from txmon.ingestion.replay import load_labelled, replay_file
from txmon.models.dataset import features_in_chunks, labelled_features
from txmon.models.rules import load_rules
from txmon.models.sources import from_file, read_file
from txmon.models.training import TrainingConfig, train_frame
from txmon.spark_jobs.rules import python_rules

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


MODES = ("chunked", "train", "whole", "replay")
TITLES = {
    "chunked": "backtest path",
    "train": "train --replay path",
    "whole": "whole-file path",
    "replay": "replay dry run",
}


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


def _peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure(mode: str, path: Path) -> dict:
    started = time.perf_counter()
    featured_peak = None
    if mode == "chunked":
        source = read_file(path, MAPPING)
        times = source.transactions["event_time"]
        keep_from = times.min() + (times.max() - times.min()) * 0.75
        rows = len(source.transactions)
        kept = len(features_in_chunks(source.transactions, keep_from=keep_from))
    elif mode == "train":
        compiled = python_rules(load_rules(DEFAULT_RULES))
        history = from_file(path, MAPPING)
        frame = history.features()
        rows = kept = len(frame)
        featured_peak = _peak_mib()
        train_frame(frame, TrainingConfig(), data_source=history.source, policy=compiled.ruleset.policy, rules=compiled)
    elif mode == "replay":
        with tempfile.TemporaryDirectory() as out:
            # A fixed now, so the run does not depend on the date it is made.
            now = datetime(2030, 1, 1, tzinfo=UTC)
            summary = replay_file(path, MAPPING, now=now, rejects_path=Path(out) / "rejects.csv")
        rows = kept = summary.events_valid
    else:
        events, labels = load_labelled(path, MAPPING)
        rows = kept = len(labelled_features(events, labels))
    return {
        "mode": mode,
        "rows": rows,
        "kept": kept,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": _peak_mib(),
        "featured_peak_rss_mib": featured_peak,
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
    before = result["featured_peak_rss_mib"]
    print(
        f"{mode:>8} {result['rows']:>10,} rows: peak RSS {result['peak_rss_mib']:,.0f} MiB"
        + (f" ({before:,.0f} MiB before training)" if before is not None else "")
        + f", {result['seconds']} s, {result['kept']:,} featured rows kept"
    )
    return result


def _per_row(small: dict | None, full: dict | None, key: str = "peak_rss_mib") -> float | None:
    """Bytes of peak RSS per row of the file: the growth from its first quarter to all of it."""
    if not small or not full or full["rows"] == small["rows"]:
        return None
    return (full[key] - small[key]) * 2**20 / (full["rows"] - small["rows"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--file",
        type=Path,
        help="the file, generated with --rows when missing (default: /tmp/txmon-backtest-memory-ROWS.csv)",
    )
    parser.add_argument(
        "--paths",
        default="chunked,train,whole",
        help="comma-separated paths to measure: chunked (the backtest's), train (txmon train --replay's), "
        "whole (the whole-file reader), replay (a dry-run replay) (default: the first three)",
    )
    parser.add_argument("--measure", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if unknown := sorted(set(paths) - set(MODES)):
        parser.error(f"--paths: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.measure:
        print(json.dumps(measure(args.measure, args.file)))
        return
    # Named by its rows: an earlier run's file of another size is not measured by mistake.
    args.file = args.file or Path(f"/tmp/txmon-backtest-memory-{args.rows}.csv")
    if not args.file.exists():
        generate(args.file, args.rows)
    quarter = args.file.with_name(args.file.stem + "-quarter.csv")
    lines = args.file.read_text().splitlines(keepends=True)
    quarter.write_text("".join(lines[: 1 + (len(lines) - 1) // 4]))
    print(f"file: {args.file} ({args.file.stat().st_size / 2**20:.0f} MiB, {len(lines) - 1:,} rows)")
    runs = {mode: (_run(mode, quarter), _run(mode, args.file)) for mode in paths}
    for mode, (small, full) in runs.items():
        per_row = _per_row(small, full)
        if per_row is not None:
            print(f"{TITLES[mode]}: {per_row:,.0f} bytes of peak RSS per row of the file")
        if mode == "train" and (before := _per_row(small, full, "featured_peak_rss_mib")) is not None:
            print(f"{TITLES[mode]}, before training: {before:,.0f} bytes of peak RSS per row of the file")
    whole = runs.get("whole", (None, None))[1]
    for mode in ("chunked", "train"):
        full = runs.get(mode, (None, None))[1]
        if full and whole:
            ratio = full["peak_rss_mib"] / whole["peak_rss_mib"]
            print(f"{TITLES[mode]} / whole-file path peak RSS: {ratio:.2f}")


if __name__ == "__main__":
    main()
