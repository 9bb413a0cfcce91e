"""account_aggregates from the payer fold (features.payer_windows) against pandas."""

from __future__ import annotations

import pandas as pd
import pytest

from txmon.ingestion.simulate import SimulateOptions, simulator_for
from txmon.models.features import (
    MICROS,
    MemoryProfileStore,
    PayerState,
    add_features,
    add_payer_features,
    payer_fold,
    payer_windows,
    sliding_hours,
    transactions_frame,
)


def _events(n: int, seed: int):
    sim = simulator_for(SimulateOptions(seed=seed, count=n, rate=None, n_customers=80, progress=False))
    return transactions_frame([s.event for s in sim.generate(n)])


def _fold_in_batches(frame, batches: int) -> MemoryProfileStore:
    """Fold the events in Kafka order, ``batches`` micro-batches, as the stream does."""
    store = MemoryProfileStore(keep_windows=True)
    size = -(-len(frame) // batches)
    for i in range(0, len(frame), size):
        add_features(frame.iloc[i : i + size].reset_index(drop=True), store)
    return store


def _expected(frame, kind: str, freq: str, size: pd.Timedelta) -> dict:
    """{(payer, kind, start): (count, total, max, distinct payees)}: every event copied
    into each window of ``size`` starting on a multiple of ``freq`` that holds it, then
    grouped (how Spark's sliding ``window`` does it)."""
    step = pd.Timedelta(freq)
    base = frame["event_time"].dt.floor(freq)
    copies = pd.concat([frame.assign(start=base - k * step) for k in range(int(size / step))])
    grouped = copies.groupby(["payer_account", "start"]).agg(
        n=("amount_paise", "size"),
        total=("amount_paise", "sum"),
        mx=("amount_paise", "max"),
        payees=("payee_key", "nunique"),
    )
    return {
        (payer, kind, int(start.value // 1000)): tuple(int(v) for v in row)
        for (payer, start), row in zip(grouped.index, grouped.itertuples(index=False))
    }


def _hours_from_buckets(store: MemoryProfileStore) -> dict:
    """slide_1h windows derived from the stored tumble_5m rows, as infra.readback does."""
    buckets: dict[str, list] = {}
    for (payer, kind, start), row in store.windows.items():
        if kind == "tumble_5m":
            buckets.setdefault(payer, []).append((start, *row[4:7], row[8]))
    return {
        (payer, "slide_1h", start): (n, total, mx, payees)
        for payer, rows in buckets.items()
        for _, start, end, n, total, mx, payees in sliding_hours(rows)
    }


@pytest.mark.parametrize("batches", [1, 7])
def test_windows_equal_an_independent_computation_however_the_events_are_batched(batches):
    frame = _events(1500, seed=11)
    store = _fold_in_batches(frame, batches)
    got = {key: row[4:8] for key, row in store.windows.items()}
    assert {k[1] for k in got} == {"tumble_1m", "tumble_5m"}  # the sliding hour is not stored
    assert {k: v for k, v in got.items() if k[1] == "tumble_1m"} == _expected(
        frame, "tumble_1m", "1min", pd.Timedelta(minutes=1)
    )
    assert {k: v for k, v in got.items() if k[1] == "tumble_5m"} == _expected(
        frame, "tumble_5m", "5min", pd.Timedelta(minutes=5)
    )
    assert all(row[7] == len(row[8]) for row in store.windows.values())  # distinct payees = the set kept
    assert _hours_from_buckets(store) == _expected(frame, "slide_1h", "5min", pd.Timedelta(hours=1))


def test_sliding_hours_span_an_hour_and_slide_by_five_minutes():
    rows = sliding_hours([(7 * 300 * MICROS, 1, 10, 10, frozenset({"x"}))])
    assert [(end - start) for _, start, end, *_ in rows] == [3600 * MICROS] * 12
    assert sorted(start for _, start, *_ in rows) == [(7 - k) * 300 * MICROS for k in range(11, -1, -1)]


def test_a_store_that_keeps_no_windows_is_not_asked_to():
    store = MemoryProfileStore()  # training and batch jobs: no windows computed
    add_features(_events(200, seed=3), store)
    assert store.windows == {}


def test_windows_the_24h_state_no_longer_covers_are_left_out():
    state = PayerState()
    day = 86_400 * MICROS
    now = 10 * day
    payer_fold(state, now, "P1", 500, None, None, None, False)
    late = now - day - 10 * MICROS  # a very late event: its windows start before the 24 h the state holds
    payer_fold(state, late, "P2", 700, None, None, None, False)
    rows = payer_windows(state, [now, late])
    assert rows and all(start > now - day for _, start, _, *_ in rows)
    assert {r[3] for r in rows} == {1}  # each kept window holds the recent event only


def test_each_window_is_saved_once_per_batch_even_when_the_batch_spans_a_day():
    """Rows saved together are written concurrently: two rows for one window could land in
    either order, so a batch saves each window once, with its final value."""
    saved = []

    class Recording(MemoryProfileStore):
        def save_windows(self, rows):
            saved.extend(rows)
            super().save_windows(rows)

    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    frame = pd.DataFrame(
        {
            "txn_id": ["a", "b", "c"],
            "event_time": [t0, t0 + pd.Timedelta(hours=23), t0 + pd.Timedelta(hours=23, minutes=10)],
            "payer_account": "P",
            "payee_key": ["x", "y", "z"],
            "amount_paise": [100, 200, 300],
            "device_id": "d",
            "lat": None,
            "lon": None,
            "status": "SUCCESS",
        }
    )
    store = Recording(keep_windows=True)
    add_payer_features(frame, store)
    keys = [row[:3] for row in saved]
    assert len(keys) == len(set(keys))
    last_hour = _hours_from_buckets(store)[
        ("P", "slide_1h", int((t0 + pd.Timedelta(hours=22, minutes=15)).value // 1000))
    ]
    assert last_hour[:2] == (2, 500)  # the 23:00 and 23:10 events, both counted


def test_reading_an_unknown_window_kind_says_which_exist():
    from txmon.infra.readback import account_windows

    with pytest.raises(ValueError, match="one of tumble_1m, tumble_5m, slide_1h"):
        account_windows(None, "P", "slide_2h")
