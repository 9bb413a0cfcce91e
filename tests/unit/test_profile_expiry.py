"""Bounded profile state: a payer idle past PAYER_STATE_TTL_S is new again in every path,
and a store that forgets idle profiles between chunks computes exactly the features of
one that keeps them all."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txmon.models.dataset import features_in_chunks
from txmon.models.features import (
    FEATURES,
    MICROS,
    PAYER_STATE_TTL_S,
    MemoryProfileStore,
    PayerState,
    add_features,
    payer_fold,
)

ROOT = Path(__file__).resolve().parents[2]
DAY_S = 86400
START_S = 1_736_121_600  # 2025-01-06T00:00Z


def _fold(state: PayerState, t_s: int, payee: str, amount: int) -> tuple:
    return payer_fold(state, t_s * MICROS, payee, amount, "dev-1", 12.9, 77.6, False)


@given(
    history=st.lists(
        st.tuples(st.integers(0, 20 * DAY_S), st.sampled_from(["a", "b", "c"]), st.integers(0, 10**8)),
        min_size=1,
        max_size=30,
    ),
    idle_s=st.integers(PAYER_STATE_TTL_S + 1, 3 * PAYER_STATE_TTL_S),
    amount=st.integers(0, 10**8),
)
def test_a_payer_idle_past_the_ttl_gets_the_features_of_a_new_account(history, idle_s, amount):
    state = PayerState()
    for t, payee, a in sorted(history):
        _fold(state, START_S + t, payee, a)
    last = START_S + max(t for t, _, _ in history)
    returning = _fold(state, last + idle_s, "a", amount)
    assert returning == _fold(PayerState(), last + idle_s, "a", amount)
    assert state.n == 1  # what is saved is the new profile, not the old one with one more event


def test_a_payer_idle_just_under_the_ttl_keeps_its_history():
    state = PayerState()
    _fold(state, START_S, "a", 500)
    _fold(state, START_S + PAYER_STATE_TTL_S, "a", 700)  # exactly the TTL: still remembered
    assert state.n == 2 and state.first_us == START_S * MICROS


def _frame(rows: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    """(seconds after START_S, payer, payee, amount) -> a labelled transactions frame."""
    frame = pd.DataFrame(
        {
            "txn_id": [f"t{i:05d}" for i in range(len(rows))],
            "event_time": pd.to_datetime([(START_S + r[0]) * 10**9 for r in rows], utc=True),
            "payer_account": [f"{r[1]:012d}" for r in rows],
            "payee_key": [f"m{r[2]}" for r in rows],
            "amount_paise": [r[3] for r in rows],
            "device_id": [None] * len(rows),
            "lat": [None] * len(rows),
            "lon": [None] * len(rows),
            "status": ["SUCCESS"] * len(rows),
        }
    )
    frame["is_fraud"] = [r[3] % 7 == 0 for r in rows]  # some payees get known frauds
    frame["label_time"] = frame["event_time"] + pd.Timedelta(days=2)
    return frame


# Bursts of activity separated by gaps on both sides of each horizon: a payer's 30 days
# idle, a payee's 30 days (+ 7 days' label delay) of buckets, a 6-hour bucket's width.
_H = 3600
_gaps = st.one_of(
    st.integers(0, 6 * _H),
    st.sampled_from([d * DAY_S + e for d in (20, 25, 29, 30, 31, 36, 37, 38, 45) for e in (-7 * _H, -1, 1, 7 * _H)]),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(_gaps, st.integers(0, 4), st.integers(0, 3), st.integers(0, 5_000_000)), min_size=2, max_size=40
    ),
    chunk_rows=st.integers(100, 200),  # the minimum chunk; the fixed-size split is below
    delay_days=st.sampled_from([0, 7]),
)
def test_forgetting_idle_profiles_between_chunks_changes_no_feature(rows, chunk_rows, delay_days):
    t, timed = 0, []
    for gap, payer, payee, amount in rows:
        t += gap
        timed.append((t, payer, payee, amount))
    frame = _frame(timed)
    delay_s = delay_days * DAY_S
    chunked = features_in_chunks(frame, chunk_rows=max(1, len(frame) // 4), label_delay_s=delay_s)
    whole = features_in_chunks(frame, chunk_rows=chunk_rows * 1000, label_delay_s=delay_s)  # one chunk
    pd.testing.assert_frame_equal(chunked[["txn_id", *FEATURES]], whole[["txn_id", *FEATURES]])


def test_forget_idle_drops_only_what_has_expired():
    store = MemoryProfileStore(label_delay_s=7 * DAY_S)
    early, late = _frame([(0, 1, 1, 500)]), _frame([(29 * DAY_S, 2, 2, 900)])
    late["txn_id"] = ["u00000"]
    for part in (early, late):
        store.batch_end_us = int(part["event_time"].iloc[-1].value // 1000)
        add_features(part, store)
    assert len(store.profiles) == 4
    now_us = (START_S + 31 * DAY_S) * MICROS
    assert store.forget_idle(now_us) == 1  # payer 1 idle > 30 days; its payee within 30 days + delay
    assert ("payer", f"{1:012d}") not in store.profiles and ("payee", "m1") in store.profiles
    assert store.forget_idle((START_S + 38 * DAY_S + 1) * MICROS) == 1  # payee m1's buckets are all past
    assert set(store.profiles) == {("payer", f"{2:012d}"), ("payee", "m2")}


def test_the_stores_ttl_outlasts_the_folds():
    """feature_profiles may only drop what the fold would forget anyway: its TTL (wall
    clock) is longer than PAYER_STATE_TTL_S (event time), with room for a lagging stream."""
    schema = (ROOT / "infra/schema.cql").read_text()
    table = re.search(r"CREATE TABLE IF NOT EXISTS \{keyspace\}\.feature_profiles \(.*?\);", schema, re.S)
    assert table is not None
    ttl_clause = re.search(r"default_time_to_live = (\d+)", table.group(0))
    assert ttl_clause is not None, "feature_profiles has no TTL"
    ttl = int(ttl_clause.group(1))
    assert ttl >= PAYER_STATE_TTL_S + 2 * DAY_S
