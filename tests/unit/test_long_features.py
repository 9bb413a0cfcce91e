"""The 1/7/30-day customer and payee features against a brute-force computation."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from txmon.models.features import (
    BUCKET_S,
    MICROS,
    NO_FRAUD_DAYS,
    UNUSUAL_TO_MEAN,
    MemoryProfileStore,
    PayeeState,
    PayerState,
    add_features,
    bucket_of,
)

DAY = 86400 * MICROS


def _history(seed: int, n: int = 150) -> pd.DataFrame:
    rng = random.Random(seed)
    start = 1_736_121_600 * MICROS  # 2025-01-06T00:00Z
    rows = []
    for i in range(n):
        t = start + int(rng.uniform(0, 45) * DAY)
        rows.append(
            {
                "txn_id": f"t{i:05d}",
                "event_time": pd.Timestamp(t // 1000, unit="us", tz="UTC"),
                "payer_account": f"{rng.randrange(8):012d}",
                "payee_key": f"m{rng.randrange(5)}",
                "amount_paise": rng.choice([0, 500, 12_000, 99_000, 2_500_000]),
                "device_id": None,
                "lat": None,
                "lon": None,
                "status": "SUCCESS",
            }
        )
    frame = pd.DataFrame(rows)
    frame["event_time"] = pd.to_datetime([r["event_time"] for r in rows], utc=True)
    return frame


def _in_window(times: list[int], t: int, days: int) -> list[int]:
    low = bucket_of(t - days * DAY)
    return [x for x in times if bucket_of(x) > low and x <= t]


def _in_delayed_window(times: list[int], t: int, days: int, delay: int) -> list[int]:
    low, high = bucket_of(t - delay - days * DAY), bucket_of(t - delay)
    return [x for x in times if low < bucket_of(x) <= high and x <= t]


@pytest.mark.parametrize(("seed", "delay_days"), [(1, 0), (2, 0), (3, 3)])
def test_long_windows_match_brute_force(seed: int, delay_days: int) -> None:
    frame = _history(seed)
    # Frauds at payee m0, labelled 3 days after they happened.
    fraud_rows = frame[frame["payee_key"] == "m0"].head(10)
    labels = {"m0": [(int(t.value // 1000) + 3 * DAY, int(t.value // 1000)) for t in fraud_rows["event_time"]]}
    delay = delay_days * DAY
    out = add_features(frame, MemoryProfileStore(fraud_labels=labels, label_delay_s=delay_days * 86400))
    times = (out["event_time"].astype("int64") // 1000).tolist()
    first_seen: dict[str, int] = {}
    for i, row in out.iterrows():
        t = times[i]
        mine = [
            (times[j], out.at[j, "amount_paise"])
            for j in range(i + 1)
            if out.at[j, "payer_account"] == row.payer_account
        ]
        for days in (7, 30):
            inside = _in_window([m[0] for m in mine], t, days)
            assert row[f"payer_count_{days}d"] == len(inside)
            assert row[f"payer_sum_{days}d"] == sum(a for x, a in mine if x in inside)
        # earlier payments above UNUSUAL_TO_MEAN times the mean of the payments before each
        unusual = [
            x for k, (x, a) in enumerate(mine[:-1]) if k >= 1 and a > UNUSUAL_TO_MEAN * sum(b for _, b in mine[:k]) / k
        ]
        for days in (1, 7, 30):
            assert row[f"payer_unusual_{days}d"] == len(_in_window(unusual, t, days))
        first_seen.setdefault(row.payer_account, t)
        assert row["days_since_first_seen"] == pytest.approx((t - first_seen[row.payer_account]) / DAY, abs=1e-4)
        payee_times = [times[j] for j in range(i + 1) if out.at[j, "payee_key"] == row.payee_key]
        for days in (1, 7, 30):
            assert row[f"payee_count_{days}d"] == len(_in_window(payee_times, t, days))
        known = [(lab, made) for lab, made in labels.get(row.payee_key, []) if lab <= t]
        assert row["payee_fraud_reports"] == len(known)
        assert row["payee_reports_7d"] == sum(1 for lab, _ in known if lab > t - 7 * DAY)
        for days in (1, 7, 30):
            # known frauds over transactions made in the same window, ending label-delay ago
            frauds = len(_in_delayed_window([made for _, made in known], t, days, delay))
            count = len(_in_delayed_window(payee_times, t, days, delay))
            assert row[f"payee_fraud_rate_{days}d"] == pytest.approx(min(1.0, frauds / count) if count else 0.0)
        assert row["payee_known_frauds_30d"] == len(_in_delayed_window([made for _, made in known], t, 30, delay))
        recent = [made for _, made in known if made > t - 30 * DAY - delay]
        assert row["payee_fraud_days_since_first"] == (
            pytest.approx((t - min(recent)) / DAY, abs=1e-4) if recent else NO_FRAUD_DAYS
        )
        assert row["payee_fraud_days_since_last"] == (
            pytest.approx((t - max(recent)) / DAY, abs=1e-4) if recent else NO_FRAUD_DAYS
        )


def test_a_run_of_unusual_payments_marks_the_modest_ones_between() -> None:
    t0 = pd.Timestamp("2025-01-06T10:00Z")
    hours = [0, 24, 48, 72, 73, 74, 75, 24 * 9 + 75]
    amounts = [1_000, 1_000, 1_000, 5_000, 800, 4_000, 900, 1_000]
    frame = pd.DataFrame(
        {
            "txn_id": [f"u{i}" for i in range(len(hours))],
            "event_time": pd.to_datetime([t0 + pd.Timedelta(hours=h) for h in hours], utc=True),
            "payer_account": "000000000001",
            "payee_key": "m1",
            "amount_paise": amounts,
            "device_id": None,
            "lat": None,
            "lon": None,
            "status": "SUCCESS",
        }
    )
    out = add_features(frame, MemoryProfileStore())
    # 5,000 is 5x the mean 1,000 (unusual); 4,000 is 2.3x the mean 1,760 then
    # (not); the payment 9 days later sees the first one only in its 30-day window.
    assert out["payer_unusual_1d"].tolist() == [0, 0, 0, 0, 1, 1, 1, 0]
    assert out["payer_unusual_7d"].tolist() == [0, 0, 0, 0, 1, 1, 1, 0]
    assert out["payer_unusual_30d"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_zero_amounts_are_not_small_payment_probes() -> None:
    t0 = pd.Timestamp("2025-01-06T10:00Z")
    frame = pd.DataFrame(
        {
            "txn_id": [f"z{i}" for i in range(4)],
            "event_time": pd.to_datetime([t0 + pd.Timedelta(minutes=i) for i in range(4)], utc=True),
            "payer_account": "000000000001",
            "payee_key": "m1",
            "amount_paise": [0, 0, 0, 100],
            "device_id": None,
            "lat": None,
            "lon": None,
            "status": "SUCCESS",
        }
    )
    out = add_features(frame, MemoryProfileStore())
    assert out["payer_small_1h"].tolist() == [0, 0, 0, 1]
    assert out["payer_count_1h"].tolist() == [1, 2, 3, 4]


def test_a_fraud_is_invisible_until_its_label_arrives() -> None:
    frame = _history(5, 120)
    made = int(frame["event_time"].min().value // 1000)
    out = add_features(frame, MemoryProfileStore(fraud_labels={"m1": [(made + 40 * DAY, made)]}))
    times = out["event_time"].astype("int64") // 1000
    early = out[(out["payee_key"] == "m1") & (times < made + 40 * DAY)]
    assert len(early) and (early["payee_fraud_reports"] == 0).all() and (early["payee_fraud_rate_30d"] == 0).all()


def test_a_profile_saved_before_the_unusual_counts_loads_with_none() -> None:
    day = 86400 * MICROS
    old = json.dumps(
        [3, 1000.0, 0.0, 5 * day, None, None, [], {}, {}, 0, {str(bucket_of(5 * day)): [3, 3000, 3_000_000]}]
    )
    state = PayerState.from_json(old)
    assert state.buckets == {bucket_of(5 * day): [3, 3000, 3_000_000, 0]}
    assert PayerState.from_json(state.to_json()).buckets == state.buckets


def test_state_stays_bounded_and_old_profiles_still_load() -> None:
    frame = _history(7, 300)
    store = MemoryProfileStore(label_delay_s=7 * 86400)
    add_features(frame, store)
    for (kind, _), text in store.profiles.items():
        state = (PayerState if kind == "payer" else PayeeState).from_json(text)
        # payers: 30 days; payees: 30 days + the label delay (their rates look that far back)
        horizon_days = 30 if kind == "payer" else 37
        assert len(state.buckets) <= horizon_days * 86400 // BUCKET_S + 1
    old_payer = json.dumps([3, 100.0, 0.0, 5 * DAY, None, None, [[5 * DAY, 100, "m1", False]], {}, {}])
    assert PayerState.from_json(old_payer).first_us == 5 * DAY
    assert PayeeState.from_json(json.dumps([[5 * DAY, "acct"]])).recent[0][0] == 5 * DAY


def test_every_feature_has_an_analysts_description_and_model_reasons_use_it():
    from txmon.models.features import FEATURE_WORDS, FEATURES, feature_words
    from txmon.spark_jobs.detection import alert_reasons

    assert set(FEATURE_WORDS) == set(FEATURES)  # a new feature must say what it means
    assert len(set(FEATURE_WORDS.values())) == len(FEATURE_WORDS)  # two features never read the same
    reasons = alert_reasons({"is_new_payee": 1}, [], {}, [("is_new_payee", 0.2)], "REVIEW", 0.7)
    assert [(r["code"], r["description"], r["value"]) for r in reasons] == [
        ("MODEL_IS_NEW_PAYEE", "model: " + feature_words("is_new_payee"), "1")
    ]
