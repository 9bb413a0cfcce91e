"""Write ``card_transactions_sample.csv``: 200 seeded rows in the card-transactions layout.

The layout is that of the widely used synthetic credit-card data set
(``config/replay/card_transactions.yaml`` maps it), filled with Indian cities so the
demo looks local. Rows come grouped by card, like a statement export, so a replay has
to sort them into event-time order. About 3% are fraud (late-night, large, mostly
online), and four rows are broken on purpose, each with the reject reason it must get::

    row  17: negative amount       -> non_positive_amount
    row  58: impossible date       -> unparsable_value
    row 101: empty cc_num          -> missing_field
    row 150: amount with 3 decimals -> fractional_paise

Regenerate (byte-identical for the same seed)::

    python ingestion/samples/make_sample.py [OUTPUT.csv]
"""

from __future__ import annotations

import csv
import io
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20240601
ROWS = 200
CARDS = 25
FRAUDS = 6
START = datetime(2024, 6, 1)  # local (IST) wall-clock time, as in the source data
SPAN_HOURS = 48
IST = timezone(timedelta(hours=5, minutes=30))
OUTPUT = Path(__file__).with_name("card_transactions_sample.csv")

COLUMNS = (
    "trans_date_trans_time",
    "cc_num",
    "merchant",
    "category",
    "amt",
    "first",
    "last",
    "gender",
    "street",
    "city",
    "state",
    "zip",
    "lat",
    "long",
    "city_pop",
    "job",
    "dob",
    "trans_num",
    "unix_time",
    "merch_lat",
    "merch_long",
    "is_fraud",
)
BROKEN = {
    17: ("amt", "-250.00"),
    58: ("trans_date_trans_time", "2024-06-31 25:10:00"),
    101: ("cc_num", ""),
    150: ("amt", "12.345"),
}
"""1-based data row -> (column, broken value)."""

# name, state, PIN code, lat, lon, population
CITIES = (
    ("Mumbai", "MH", "400001", 19.0760, 72.8777, 12442373),
    ("Delhi", "DL", "110001", 28.7041, 77.1025, 11034555),
    ("Bengaluru", "KA", "560001", 12.9716, 77.5946, 8443675),
    ("Pune", "MH", "411001", 18.5204, 73.8567, 3124458),
    ("Jaipur", "RJ", "302001", 26.9124, 75.7873, 3046163),
    ("Kochi", "KL", "682001", 9.9312, 76.2673, 602046),
    ("Lucknow", "UP", "226001", 26.8467, 80.9462, 2817105),
    ("Guwahati", "AS", "781001", 26.1445, 91.7362, 957352),
)
CATEGORIES = (
    "grocery_pos",
    "gas_transport",
    "shopping_net",
    "misc_net",
    "food_dining",
    "entertainment",
    "health_fitness",
    "home",
    "kids_pets",
    "personal_care",
    "travel",
    "misc_pos",
    "shopping_pos",
    "grocery_net",
)
CATEGORY_WEIGHTS = (14, 10, 8, 5, 9, 7, 6, 9, 8, 7, 3, 6, 6, 2)
FRAUD_CATEGORIES = ("shopping_net", "misc_net", "grocery_pos")
MERCHANTS = (
    "Rippin, Kub and Mann",
    "Heller, Gutmann and Zieme",
    "Lind-Buckridge",
    "Kirlin and Sons",
    "Sporer-Keebler",
    "Haley Group",
    "Johnston-Casper",
    "Daugherty LLC",
    "Romaguera Ltd",
    "Reichel Inc",
    "Kutch, Hermiston and Farrell",
    "Stroman, Hudson and Erdman",
    "Bahringer Group",
    "Lesch Ltd",
    "Kuhn LLC",
    "Boyer PLC",
)
FIRST = ("Aarav", "Diya", "Kabir", "Meera", "Rohan", "Ananya", "Vikram", "Isha", "Arjun", "Sneha")
LAST = ("Sharma", "Iyer", "Reddy", "Das", "Patel", "Menon", "Singh", "Khan", "Joshi", "Bose")
JOBS = ("Teacher", "Software engineer", "Pharmacist", "Accountant", "Civil engineer", "Nurse", "Shop owner")
STREETS = ("MG Road", "Station Road", "Nehru Nagar", "Gandhi Marg", "Park Street", "Lake View Road")


def _card_number(rng: np.random.Generator, length: int) -> str:
    return str(int(rng.integers(1, 10))) + "".join(str(d) for d in rng.integers(0, 10, length - 1))


def _cards(rng: np.random.Generator) -> list[dict[str, Any]]:
    lengths = [16] * (CARDS - 4) + [13, 15, 12, 19]  # real files mix card lengths
    cards = []
    for length in lengths:
        city = CITIES[int(rng.integers(len(CITIES)))]
        cards.append(
            {
                "cc_num": _card_number(rng, length),
                "first": FIRST[int(rng.integers(len(FIRST)))],
                "last": LAST[int(rng.integers(len(LAST)))],
                "gender": "F" if rng.random() < 0.5 else "M",
                "street": f"{int(rng.integers(1, 400))} {STREETS[int(rng.integers(len(STREETS)))]}",
                "city": city,
                "job": JOBS[int(rng.integers(len(JOBS)))],
                "dob": (datetime(1960, 1, 1) + timedelta(days=int(rng.integers(0, 40 * 365)))).strftime("%Y-%m-%d"),
            }
        )
    return cards


def rows(seed: int = SEED) -> list[dict[str, str]]:
    """The sample's rows (column -> text), broken rows included, in file order."""
    rng = np.random.default_rng(seed)
    cards = _cards(rng)
    broken = {n - 1 for n in BROKEN}
    weights = np.array(CATEGORY_WEIGHTS, dtype=float) / sum(CATEGORY_WEIGHTS)
    drafts: list[dict[str, Any]] = []
    for _ in range(ROWS):
        card = cards[int(rng.integers(len(cards)))]
        at = START + timedelta(seconds=int(rng.integers(0, SPAN_HOURS * 3600)))
        category = CATEGORIES[int(rng.choice(len(CATEGORIES), p=weights))]
        amount = float(np.clip(rng.lognormal(np.log(400), 1.0), 5, 50_000))
        drafts.append({"card": card, "at": at, "category": category, "amount": amount, "fraud": False})
    drafts.sort(key=lambda d: (d["card"]["cc_num"], d["at"]))  # statement order: by card, then time
    candidates = [i for i in range(ROWS) if i not in broken]
    for i in rng.choice(candidates, size=FRAUDS, replace=False):
        draft = drafts[int(i)]
        draft["fraud"] = True
        draft["category"] = FRAUD_CATEGORIES[int(rng.integers(len(FRAUD_CATEGORIES)))]
        draft["amount"] = float(rng.uniform(5_000, 20_000))
        draft["at"] = draft["at"].replace(hour=int(rng.integers(0, 4)))  # late night
    out = []
    for n, draft in enumerate(drafts, start=1):
        card, (city, state, pin, lat, lon, population) = draft["card"], draft["card"]["city"]
        at = draft["at"]
        row = {
            "trans_date_trans_time": at.strftime("%Y-%m-%d %H:%M:%S"),
            "cc_num": card["cc_num"],
            "merchant": "fraud_" + MERCHANTS[int(rng.integers(len(MERCHANTS)))],
            "category": draft["category"],
            "amt": f"{draft['amount']:.2f}",
            "first": card["first"],
            "last": card["last"],
            "gender": card["gender"],
            "street": card["street"],
            "city": city,
            "state": state,
            "zip": pin,
            "lat": f"{lat:.4f}",
            "long": f"{lon:.4f}",
            "city_pop": str(population),
            "job": card["job"],
            "dob": card["dob"],
            "trans_num": bytes(rng.integers(0, 256, 16, dtype=np.uint8)).hex(),
            "unix_time": str(int(at.replace(tzinfo=IST).timestamp())),
            "merch_lat": f"{lat + rng.uniform(-0.9, 0.9):.6f}",
            "merch_long": f"{lon + rng.uniform(-0.9, 0.9):.6f}",
            "is_fraud": "1" if draft["fraud"] else "0",
        }
        if n in BROKEN:
            column, value = BROKEN[n]
            row[column] = value
        out.append(row)
    return out


def render(seed: int = SEED) -> str:
    """The sample file's exact text."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows(seed))
    return buffer.getvalue()


def main(argv: list[str]) -> None:
    target = Path(argv[0]) if argv else OUTPUT
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {ROWS} rows to {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
