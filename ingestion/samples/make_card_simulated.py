"""Write a seeded card-transaction file in the layout of a common open fraud-detection
teaching data set (``config/replay/card_simulated.yaml`` maps it)::

    TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,
    TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO

It imitates that data's generator at a small scale, so tests and demos can run card data
through txmon without the original file (never committed: it is large, and it is kept for
measuring). What makes that layout hard for a bank-data contract is reproduced on
purpose: numeric customer and terminal ids from 0, amounts as float text
(``851.9499999999999``, a multiple of a two-decimal amount), no device, no merchant
category, no location. The fraud scenarios are the data set's three:

1. any amount above 220 is fraud;
2. compromised terminals: every payment at a terminal in the 28 days after it was
   compromised is fraud;
3. compromised cards: for 14 days, a third of a customer's payments are fraud with five
   times the usual amount.

A few zero-amount card verifications are added (``zero_share``), which the original
lacks, because real card feeds carry them. Output: CSV or Parquet by the file suffix.

Two shapes of the same generator:

- the default (small, quick): each card pays at a handful of terminals of its own, and
  terminals and cards are compromised at random daily rates;
- ``--handbook``: the original's shape at its scale: cards and terminals at random points
  of a 100 x 100 square, a card paying uniformly at every terminal within radius 5 (so
  about 80 terminals per card and 40 cards per terminal: first visits to a terminal are
  everyday events), exactly two terminals and three cards compromised a day, 5,000 cards,
  10,000 terminals, 183 days, no zero amounts (about 1.75 million rows).

    python ingestion/samples/make_card_simulated.py OUT.csv [--customers 200] [--days 60] [--seed 7]
    python ingestion/samples/make_card_simulated.py OUT.parquet --handbook [--seed 0]
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_TIME_SECONDS",
    "TX_TIME_DAYS",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)
START = datetime(2018, 4, 1)
HIGH_AMOUNT = 220.0
TERMINAL_DAYS = 28
CARD_DAYS = 14
# The original's own sizes (its generate_dataset defaults and add_frauds counts).
HANDBOOK: dict[str, Any] = {
    "customers": 5_000,
    "terminals": 10_000,
    "days": 183,
    "radius": 5.0,
    "terminals_per_day": 2,
    "cards_per_day": 3,
    "zero_share": 0.0,
}


def generate(
    customers: int = 200,
    terminals: int = 100,
    days: int = 60,
    seed: int = 7,
    *,
    terminal_compromise_rate: float = 0.0005,
    card_compromise_rate: float = 0.002,
    zero_share: float = 0.002,
    radius: float | None = None,
    terminals_per_day: int | None = None,
    cards_per_day: int | None = None,
) -> pd.DataFrame:
    """The file's rows in event-time order, as pandas would read them back.

    Rates are per day: the expected share of terminals (cards) compromised each day.
    ``radius`` places cards and terminals on a 100 x 100 square and lets a card pay at
    every terminal within it (instead of a handful of its own); ``terminals_per_day`` and
    ``cards_per_day`` compromise exactly that many a day instead of the rates.
    """
    rng = np.random.default_rng(seed)
    mean_amount = rng.uniform(5, 100, customers)
    std_amount = mean_amount / 2
    per_day = rng.uniform(0, 4, customers)
    usual: list[np.ndarray]
    if radius is None:
        # Each customer pays at a handful of terminals, a stand-in for the original's geography.
        usual = [rng.choice(terminals, size=int(rng.integers(2, 9)), replace=True) for _ in range(customers)]
    else:
        card_xy = rng.uniform(0, 100, (customers, 2))
        terminal_xy = rng.uniform(0, 100, (terminals, 2))
        usual = [
            np.flatnonzero(np.hypot(*(terminal_xy - card_xy[customer]).T) < radius) for customer in range(customers)
        ]

    parts = []
    for customer in range(customers):
        counts = rng.poisson(per_day[customer], days)
        total = int(counts.sum())
        if total == 0 or len(usual[customer]) == 0:
            continue
        txn_day = np.repeat(np.arange(days), counts)
        second = rng.normal(43_200, 20_000, total)
        inside = (second >= 0) & (second < 86_400)  # the original drops times outside the day
        txn_day, second, total = txn_day[inside], second[inside].astype(np.int64), int(inside.sum())
        amount = rng.normal(mean_amount[customer], std_amount[customer], total)
        negative = amount < 0
        amount[negative] = rng.uniform(0, 2 * mean_amount[customer], int(negative.sum()))
        parts.append(
            pd.DataFrame(
                {
                    "CUSTOMER_ID": customer,
                    "TERMINAL_ID": rng.choice(usual[customer], total),
                    "TX_TIME_SECONDS": txn_day * 86_400 + second,
                    "TX_TIME_DAYS": txn_day,
                    "TX_AMOUNT": np.round(amount, 2),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True).sort_values("TX_TIME_SECONDS", kind="stable", ignore_index=True)
    frame.loc[rng.random(len(frame)) < zero_share, "TX_AMOUNT"] = 0.0
    frame["TX_FRAUD"] = 0
    frame["TX_FRAUD_SCENARIO"] = 0

    high = frame["TX_AMOUNT"] > HIGH_AMOUNT
    frame.loc[high, ["TX_FRAUD", "TX_FRAUD_SCENARIO"]] = (1, 1)
    terminal_ids = frame["TERMINAL_ID"].to_numpy()
    customer_ids = frame["CUSTOMER_ID"].to_numpy()
    txn_days = frame["TX_TIME_DAYS"].to_numpy()
    for day in range(days):
        if terminals_per_day is None:
            hit_terminals = np.flatnonzero(rng.random(terminals) < terminal_compromise_rate)
        else:
            hit_terminals = rng.choice(terminals, size=terminals_per_day, replace=False)
        hit = np.isin(terminal_ids, hit_terminals) & (txn_days >= day) & (txn_days < day + TERMINAL_DAYS)
        frame.loc[hit, ["TX_FRAUD", "TX_FRAUD_SCENARIO"]] = (1, 2)
        if cards_per_day is None:
            hit_cards = np.flatnonzero(rng.random(customers) < card_compromise_rate)
        else:
            hit_cards = rng.choice(customers, size=cards_per_day, replace=False)
        for card in hit_cards:
            window = np.flatnonzero((customer_ids == card) & (txn_days >= day) & (txn_days < day + CARD_DAYS))
            stolen = rng.choice(window, size=len(window) // 3, replace=False) if len(window) else window
            # x5 on a two-decimal float: written back as e.g. 851.9499999999999, as in the original.
            frame.loc[stolen, "TX_AMOUNT"] = frame.loc[stolen, "TX_AMOUNT"] * 5
            frame.loc[stolen, ["TX_FRAUD", "TX_FRAUD_SCENARIO"]] = (1, 3)

    frame["TRANSACTION_ID"] = np.arange(len(frame))
    times = pd.Timestamp(START) + pd.to_timedelta(frame["TX_TIME_SECONDS"], unit="s")
    frame["TX_DATETIME"] = times.dt.strftime("%Y-%m-%d %H:%M:%S")
    return frame[list(COLUMNS)]


def write(path: str | Path, **options: Any) -> Path:
    """Generate (see :func:`generate` for ``options``) and write CSV or Parquet by suffix."""
    path = Path(path)
    frame = generate(**options)
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--terminals", type=int, default=100)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--handbook",
        action="store_true",
        help="the original's shape and scale: 5,000 cards, 10,000 terminals, 183 days, radius 5, "
        "2 terminals and 3 cards compromised a day, no zero amounts (overrides the sizes above)",
    )
    args = parser.parse_args(argv)
    options: dict[str, Any] = {
        "customers": args.customers,
        "terminals": args.terminals,
        "days": args.days,
        "seed": args.seed,
    }
    if args.handbook:
        options.update(HANDBOOK, seed=args.seed)
    path = write(args.output, **options)
    frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    print(
        f"wrote {len(frame):,} rows ({int(frame['TX_FRAUD'].sum()):,} fraud) to {path}; "
        f"first day {START:%Y-%m-%d}, last {START + timedelta(days=options['days'] - 1):%Y-%m-%d}"
    )


if __name__ == "__main__":
    main()
