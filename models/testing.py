"""Small synthetic data for tests and benchmarks of the models package (no simulator).

:func:`planted_frame` builds a labelled feature frame in which one feature alone
decides fraud, so a trained bundle's behaviour (scores, explanations) is predictable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from txmon.models.features import FEATURES, INTEGER_FEATURES

__all__ = ["planted_frame"]


def planted_frame(
    n: int = 4000,
    *,
    seed: int = 7,
    dominant: str = "payer_count_5m",
    fraud_rate: float = 0.05,
    days: float = 4.0,
    accounts: int = 300,
) -> pd.DataFrame:
    """A labelled feature frame: every FEATURES column is noise except ``dominant``,
    which is large exactly on the fraud rows (scenario ``planted``)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2025-01-06T00:00:00Z")
    offsets = np.sort(rng.uniform(0, days * 86400, n))
    frame = pd.DataFrame(
        {
            "txn_id": [f"t{i:06d}" for i in range(n)],
            "event_time": start + pd.to_timedelta(offsets, unit="s"),
            "payer_account": [f"acct{a:04d}" for a in rng.integers(0, accounts, n)],
            "payee_key": [f"payee{a:03d}" for a in rng.integers(0, 50, n)],
        }
    )
    for name in FEATURES:
        if name in INTEGER_FEATURES:
            frame[name] = rng.poisson(3, n).astype(np.int64)
        else:
            frame[name] = rng.lognormal(0.0, 1.0, n)
    fraud = rng.random(n) < fraud_rate
    base = frame[dominant].to_numpy()
    frame[dominant] = np.where(fraud, base + 40 + rng.integers(0, 10, n), base).astype(frame[dominant].dtype)
    frame["is_fraud"] = fraud
    frame["scenario"] = pd.Series(["planted" if f else None for f in fraud], index=frame.index, dtype=object)
    frame["label_time"] = frame["event_time"] + pd.Timedelta(days=1)
    return frame
