"""Behavioural features, computed "as of" each transaction: the one definition.

The logic is plain Python over per-key state (:class:`PayerState`, :class:`PayeeState`),
folded over one key's transactions in event-time order by :func:`add_features`, which
works on one pandas frame with a :class:`ProfileStore`. The stream calls it for each
Spark partition of a micro-batch with the Cassandra-backed store (profiles survive
restarts and are versioned by micro-batch, so a replayed batch starts from the same
profiles: exactly once); batch jobs and training call it with an in-memory store that
starts empty. Same code, same order, same features (tests/integration/test_detection.py, batch vs stream parity).

Why not Spark's own keyed state: with ~10k active accounts per micro-batch, PySpark's
per-key stateful APIs (applyInPandasWithState, transformWithStateInPandas) pay a
per-key Python call; measured here they were far slower than the stream's input rate.
Per-partition folding with batched state reads/writes is not.

Windows include the current transaction: ``payer_count_5m`` is the number of the
payer's transactions in (t - 5 min, t], this one included. History-relative features
(mean, z-score, new payee, new device, time and distance from the previous) look only
at transactions *before* this one.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

MICROS = 1_000_000
WINDOWS_S = {"5m": 300, "1h": 3600, "24h": 86400}
NIGHT_HOURS_IST = range(5)  # 00:00-04:59 IST
IST_OFFSET_S = 5 * 3600 + 1800
SMALL_AMOUNT_PAISE = 200_00  # <= Rs 200: card-testing sized
THRESHOLDS_PAISE = (50_000_00, 10_00_000_00)  # Rs 50k (PAN) and Rs 10 lakh (CTR) reporting lines
NEAR_THRESHOLD_BAND = 0.10  # within 10% below a threshold
NO_PREVIOUS_S = 10_000_000.0  # "no previous transaction": ~116 days
NO_FRAUD_DAYS = 999.0  # "no known fraud": longer ago than any profile remembers
MAX_KNOWN_PAYEES = 500
MAX_KNOWN_DEVICES = 20
NEW_DEVICE_S = 3600  # a device counts as new for its first hour
PAYER_STATE_TTL_S = 30 * 86400
"""A payer idle longer than this (event time) starts from an empty profile. The fold decides,
not the store's clock, so the stream, training, backtest and the API forget alike, and a
store may drop such profiles (feature_profiles' TTL, MemoryProfileStore.forget_idle)
without changing a feature."""
# Longer views (1, 7 and 30 days) come from fixed 6-hour buckets rather than the events
# themselves: a 30-day profile stays at most 121 small entries whatever the traffic, and a
# window (t - w, t] is summed from the buckets wholly after t - w (between w - 6 h and w).
BUCKET_S = 6 * 3600
LONG_WINDOWS_DAYS = (1, 7, 30)
LONG_HORIZON_S = max(LONG_WINDOWS_DAYS) * 86400
UNUSUAL_TO_MEAN = 2.5
"""A payment is out of its payer's pattern above this multiple of the payer's mean before it
(:data:`PAYER_FEATURES` ``payer_unusual_*``). Chosen on public card data over five weekly
train/test windows (2.0, 2.5 and 3.0 tried; docs/detection.md)."""
# account_aggregates rows the payer fold writes: window_kind -> size of a tumbling window.
# The 1-hour window sliding by 5 minutes is not stored: it is the sum of 12 tumble_5m rows
# (each keeps its payee set for the distinct count), derived when read (sliding_hours).
# Storing it cost 12 rows per event, ~80 % of the window rows the stream wrote.
AGGREGATE_WINDOWS_S = {"tumble_1m": 60, "tumble_5m": 300}
SLIDING_HOUR = ("slide_1h", 3600, "tumble_5m")  # derived kind, size (s), the stored kind it sums

# Inputs every fold needs, in this order (typed columns of the transactions table).
INPUT_COLUMNS = (
    "txn_id",
    "event_time",
    "payer_account",
    "payee_key",
    "amount_paise",
    "device_id",
    "lat",
    "lon",
    "status",
)

PAYER_FEATURES = (
    "payer_count_5m",
    "payer_count_1h",
    "payer_count_24h",
    "payer_sum_5m",
    "payer_sum_1h",
    "payer_sum_24h",
    "payer_payees_5m",
    "payer_payees_1h",
    "payer_payees_24h",
    "payer_history_count",
    "amount_to_mean",
    "amount_zscore",
    "is_new_payee",
    "is_new_device",
    "hour_ist",
    "is_night",
    "secs_since_prev",
    "km_from_prev",
    "kmh_from_prev",
    "payer_failed_1h",
    "payer_small_1h",
    "payer_near_threshold_24h",
    # 7- and 30-day spending (this transaction included) and this amount against the
    # mean and spread of the days before it; how long the customer has been known.
    "payer_count_7d",
    "payer_sum_7d",
    "payer_mean_7d",
    "payer_count_30d",
    "payer_sum_30d",
    "payer_mean_30d",
    "amount_to_mean_7d",
    "amount_to_mean_30d",
    "amount_zscore_30d",
    "days_since_first_seen",
    "is_weekend_ist",
    # The payer's earlier payments over 1, 7 and 30 days that were out of its pattern (more
    # than UNUSUAL_TO_MEAN times its usual amount then): a compromised card or account makes
    # a run of them, and the run marks the modest payments in between as well.
    "payer_unusual_1d",
    "payer_unusual_7d",
    "payer_unusual_30d",
)
PAYEE_FEATURES = (
    "payee_payers_1h",
    "payee_count_1h",
    # The payee's (merchant's, terminal's) volume over 1, 7 and 30 days, this one included.
    "payee_count_1d",
    "payee_count_7d",
    "payee_count_30d",
)
LABEL_FEATURES = (
    "payee_fraud_reports",
    # Known frauds / transactions at this payee over 1, 7 and 30 days: a fraud counts once
    # its label has arrived (label time <= this transaction's time), never before.
    "payee_fraud_rate_1d",
    "payee_fraud_rate_7d",
    "payee_fraud_rate_30d",
    # Frauds at this payee whose labels arrived in the last 7 days: a compromised
    # terminal keeps producing fresh reports long after its first fraud.
    "payee_reports_7d",
    # How long this payee has been producing known fraud: days from the transaction time of
    # its oldest and of its newest known fraud (within the profile's horizon) to now, and
    # how many: a compromised terminal keeps producing fraud for a while, then stops.
    "payee_fraud_days_since_first",
    "payee_fraud_days_since_last",
    "payee_known_frauds_30d",
)
FEATURES = ("amount_paise", *PAYER_FEATURES, *PAYEE_FEATURES, *LABEL_FEATURES)
"""Every feature column, in the order models see them."""

FEATURE_WORDS = {
    "amount_paise": "the amount",
    "payer_count_5m": "the payer's payments in the last 5 minutes",
    "payer_count_1h": "the payer's payments in the last hour",
    "payer_count_24h": "the payer's payments in the last 24 hours",
    "payer_sum_5m": "the payer's spending in the last 5 minutes",
    "payer_sum_1h": "the payer's spending in the last hour",
    "payer_sum_24h": "the payer's spending in the last 24 hours",
    "payer_payees_5m": "distinct payees paid in the last 5 minutes",
    "payer_payees_1h": "distinct payees paid in the last hour",
    "payer_payees_24h": "distinct payees paid in the last 24 hours",
    "payer_history_count": "the payer's payments seen so far",
    "amount_to_mean": "the amount against the payer's usual amount",
    "amount_zscore": "how far the amount is from the payer's usual spread",
    "is_new_payee": "a payee this payer never paid before",
    "is_new_device": "a device this payer never used before",
    "hour_ist": "the hour of day (IST)",
    "is_night": "a night-time payment (IST)",
    "secs_since_prev": "the time since the payer's previous payment",
    "km_from_prev": "the distance from the payer's previous payment",
    "kmh_from_prev": "the speed implied since the payer's previous payment",
    "payer_failed_1h": "the payer's failed payments in the last hour",
    "payer_small_1h": "the payer's payments of Rs 200 or less in the last hour",
    "payer_near_threshold_24h": "the payer's payments just under a reporting threshold in 24 hours",
    "payer_count_7d": "the payer's payments in the last 7 days",
    "payer_sum_7d": "the payer's spending in the last 7 days",
    "payer_mean_7d": "the payer's mean payment over 7 days",
    "payer_count_30d": "the payer's payments in the last 30 days",
    "payer_sum_30d": "the payer's spending in the last 30 days",
    "payer_mean_30d": "the payer's mean payment over 30 days",
    "amount_to_mean_7d": "the amount against the payer's 7-day mean",
    "amount_to_mean_30d": "the amount against the payer's 30-day mean",
    "amount_zscore_30d": "how far the amount is from the payer's 30-day spread",
    "days_since_first_seen": "how long the payer has been known",
    "is_weekend_ist": "a weekend payment (IST)",
    "payer_unusual_1d": "the payer's unusually large payments earlier in the last day",
    "payer_unusual_7d": "the payer's unusually large payments earlier in the last 7 days",
    "payer_unusual_30d": "the payer's unusually large payments earlier in the last 30 days",
    "payee_payers_1h": "distinct payers paying this payee in the last hour",
    "payee_count_1h": "payments to this payee in the last hour",
    "payee_count_1d": "payments to this payee in the last day",
    "payee_count_7d": "payments to this payee in the last 7 days",
    "payee_count_30d": "payments to this payee in the last 30 days",
    "payee_fraud_reports": "fraud reports on this payee so far",
    "payee_fraud_rate_1d": "this payee's confirmed-fraud rate over 1 day",
    "payee_fraud_rate_7d": "this payee's confirmed-fraud rate over 7 days",
    "payee_fraud_rate_30d": "this payee's confirmed-fraud rate over 30 days",
    "payee_reports_7d": "fraud reports on this payee in the last 7 days",
    "payee_fraud_days_since_first": "days since this payee's first known fraud",
    "payee_fraud_days_since_last": "days since this payee's latest known fraud",
    "payee_known_frauds_30d": "this payee's known frauds in the last 30 days",
}
"""Each feature in an analyst's words: the description of a model reason naming it."""


def feature_words(feature: str) -> str:
    """An analyst's words for ``feature`` (its name spelled out when it has none).

    >>> feature_words("is_new_payee"), feature_words("some_new_thing")
    ('a payee this payer never paid before', 'some new thing')
    """
    return FEATURE_WORDS.get(feature) or feature.replace("_", " ")


MODEL_SCORE_REASON = "MODEL_SCORE"
"""The reason of a flagged transaction that no rule and no single feature explains."""


def model_reason_code(feature: str) -> str:
    """The reason code of the model's explanation naming ``feature``.

    >>> model_reason_code("amount_to_mean")
    'MODEL_AMOUNT_TO_MEAN'
    """
    return f"MODEL_{feature.upper()}"


FEATURE_OF_REASON = {model_reason_code(f): f for f in FEATURES}
"""A model reason's code -> the feature it names (readers of stored reasons, e.g. the console)."""

INTEGER_FEATURES = frozenset(
    f
    for f in FEATURES
    if f.startswith(("payer_count", "payer_sum", "payer_payees", "payer_unusual", "payee_payers", "payee_count", "is_"))
    or f
    in (
        "payee_known_frauds_30d",
        "amount_paise",
        "payer_history_count",
        "hour_ist",
        "payer_failed_1h",
        "payer_small_1h",
        "payer_near_threshold_24h",
        "payee_fraud_reports",
        "payee_reports_7d",
    )
)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance.

    >>> round(haversine_km(19.0760, 72.8777, 28.7041, 77.1025))  # Mumbai -> Delhi
    1153
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(a)))


def near_threshold(amount_paise: int) -> bool:
    """Just below a reporting threshold (structuring).

    >>> near_threshold(49_000_00), near_threshold(50_000_00), near_threshold(30_000_00)
    (True, False, False)
    """
    return any(t * (1 - NEAR_THRESHOLD_BAND) <= amount_paise < t for t in THRESHOLDS_PAISE)


@dataclass
class PayerState:
    """Everything we remember about one payer. Bounded: 24 h of events, capped sets."""

    n: int = 0  # transactions seen
    mean: float = 0.0  # running mean of amount (Welford)
    m2: float = 0.0  # running sum of squared deviations
    last_us: int | None = None
    last_lat: float | None = None
    last_lon: float | None = None
    recent: deque = field(default_factory=deque)  # (t_us, amount, payee, failed) within 24 h
    payees: dict = field(default_factory=dict)  # payee -> last t_us (capped)
    devices: dict = field(default_factory=dict)  # device -> [first t_us, history count then] (capped)
    first_us: int | None = None
    buckets: dict = field(default_factory=dict)  # 6-hour bucket -> [count, sum, sum of squares, unusual], 30 days

    def forget(self) -> None:
        """Back to an account never seen (idle past :data:`PAYER_STATE_TTL_S`)."""
        self.__dict__.update(PayerState().__dict__)

    def to_json(self) -> str:
        return json.dumps(
            [
                self.n,
                self.mean,
                self.m2,
                self.last_us,
                self.last_lat,
                self.last_lon,
                list(self.recent),
                self.payees,
                self.devices,
                self.first_us,
                self.buckets,
            ],
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> PayerState:
        n, mean, m2, last_us, lat, lon, recent, payees, devices, *longer = json.loads(text)
        recent = deque(tuple(r) for r in recent)
        if longer:
            first_us, buckets = longer
            buckets = {int(k): v for k, v in buckets.items()}
            if buckets and len(next(iter(buckets.values()))) == 3:  # saved before the unusual counts
                buckets = {k: [*v, 0] for k, v in buckets.items()}
        else:  # a profile saved before the long views: known since its oldest remembered event
            first_us, buckets = (recent[0][0] if recent else last_us), {}
        return cls(n, mean, m2, last_us, lat, lon, recent, payees, devices, first_us, buckets)


def bucket_of(t_us: int) -> int:
    """The 6-hour bucket holding ``t_us``.

    >>> bucket_of(0), bucket_of(6 * 3600 * MICROS - 1), bucket_of(6 * 3600 * MICROS)
    (0, 0, 1)
    """
    return t_us // (BUCKET_S * MICROS)


def long_window_totals(buckets: dict, t_us: int) -> list[list[float]]:
    """[count, sum, sum of squares, unusual] over each window of :data:`LONG_WINDOWS_DAYS`
    ending at ``t_us``, from the buckets wholly after ``t_us - window``.

    >>> day = 86400 * MICROS
    >>> b = {bucket_of(10 * day): [2, 30, 500, 1], bucket_of(4 * day): [1, 7, 49, 0], bucket_of(0): [5, 5, 5, 2]}
    >>> long_window_totals(b, 10 * day + 1)
    [[2, 30, 500, 1], [3, 37, 549, 1], [8, 42, 554, 3]]
    """
    # One pass: the windows are nested (1 day inside 7 inside 30), so a bucket outside
    # the widest is skipped at once and one inside the narrowest counts for all three.
    low_1, low_7, low_30 = (bucket_of(t_us - d * 86400 * MICROS) for d in LONG_WINDOWS_DAYS)
    c1 = s1 = q1 = u1 = c7 = s7 = q7 = u7 = c30 = s30 = q30 = u30 = 0
    for key, (count, total, squares, unusual) in buckets.items():
        if key > low_30:
            c30 += count
            s30 += total
            q30 += squares
            u30 += unusual
            if key > low_7:
                c7 += count
                s7 += total
                q7 += squares
                u7 += unusual
                if key > low_1:
                    c1 += count
                    s1 += total
                    q1 += squares
                    u1 += unusual
    return [[c1, s1, q1, u1], [c7, s7, q7, u7], [c30, s30, q30, u30]]


def _prune_buckets(buckets: dict, t_us: int, delay_us: int = 0) -> None:
    oldest = bucket_of(t_us - LONG_HORIZON_S * MICROS - delay_us)
    for key in [k for k in buckets if k <= oldest]:
        del buckets[key]


def _cap(d: dict, limit: int) -> None:
    if len(d) > limit:
        for key, _ in sorted(d.items(), key=lambda kv: kv[1])[: len(d) - limit]:
            del d[key]


def payer_fold(
    state: PayerState,
    t_us: int,
    payee: str | None,
    amount: int,
    device: str | None,
    lat: float | None,
    lon: float | None,
    failed: bool,
) -> tuple:
    """Features of one transaction given the payer's state; updates the state. Returns
    values in PAYER_FEATURES order."""
    if state.last_us is not None and t_us - state.last_us > PAYER_STATE_TTL_S * MICROS:
        state.forget()
    # windows over (t - w, t], this transaction included
    state.recent.append((t_us, amount, payee, failed))
    while state.recent and state.recent[0][0] <= t_us - WINDOWS_S["24h"] * MICROS:
        state.recent.popleft()
    counts, sums, payees = [], [], []
    for w in WINDOWS_S.values():
        lo = t_us - w * MICROS
        inside = [r for r in state.recent if r[0] > lo]
        counts.append(len(inside))
        sums.append(sum(r[1] for r in inside))
        payees.append(len({r[2] for r in inside if r[2] is not None}))
    hour_lo = t_us - 3600 * MICROS
    failed_1h = sum(1 for r in state.recent if r[0] > hour_lo and r[3])
    small_1h = sum(1 for r in state.recent if r[0] > hour_lo and 0 < r[1] <= SMALL_AMOUNT_PAISE)
    near_24h = sum(1 for r in state.recent if near_threshold(r[1]))

    # relative to history before this transaction
    history = state.n
    if history >= 1 and state.mean > 0:
        to_mean = amount / state.mean
    else:
        to_mean = 1.0
    unusual = history >= 1 and amount > UNUSUAL_TO_MEAN * state.mean
    std = math.sqrt(state.m2 / (history - 1)) if history >= 2 else 0.0
    zscore = (amount - state.mean) / std if std > 0 else 0.0
    new_payee = int(payee is not None and payee not in state.payees)
    # A device is "new" for its first hour on an account that had history before it: an
    # account takeover sends several transfers from the new phone, not just one.
    seen = state.devices.get(device) if device is not None else None
    if device is None:
        new_device = 0
    elif seen is None:
        new_device = int(history > 0)
    else:
        new_device = int(seen[1] > 0 and t_us - seen[0] <= NEW_DEVICE_S * MICROS)
    local_s = t_us // MICROS + IST_OFFSET_S
    hour = (local_s // 3600) % 24
    weekend = int((local_s // 86400 + 3) % 7 >= 5)  # the epoch's day 0 was a Thursday
    prior_1d, prior_7d, prior_30d = long_window_totals(state.buckets, t_us)
    count_7d, sum_7d = prior_7d[0] + 1, prior_7d[1] + amount
    count_30d, sum_30d = prior_30d[0] + 1, prior_30d[1] + amount
    to_mean_7d = amount * prior_7d[0] / prior_7d[1] if prior_7d[1] > 0 else 1.0
    to_mean_30d = amount * prior_30d[0] / prior_30d[1] if prior_30d[1] > 0 else 1.0
    zscore_30d = 0.0
    if prior_30d[0] >= 2:
        mean_30d = prior_30d[1] / prior_30d[0]
        var_30d = max(0.0, (prior_30d[2] - prior_30d[0] * mean_30d**2) / (prior_30d[0] - 1))
        zscore_30d = (amount - mean_30d) / math.sqrt(var_30d) if var_30d > 0 else 0.0
    first_us = state.first_us if state.first_us is not None else t_us
    days_known = max(0.0, (t_us - first_us) / (86400 * MICROS))
    if state.last_us is None:
        since, km, kmh = NO_PREVIOUS_S, 0.0, 0.0
    else:
        since = max(0.0, (t_us - state.last_us) / MICROS)
        if lat is not None and lon is not None and state.last_lat is not None and state.last_lon is not None:
            km = haversine_km(state.last_lat, state.last_lon, lat, lon)
            kmh = km / max(since, 60.0) * 3600.0  # at least a minute: GPS jitter is not travel
        else:
            km, kmh = 0.0, 0.0

    # update the profile
    state.n = history + 1
    delta = amount - state.mean
    state.mean += delta / state.n
    state.m2 += delta * (amount - state.mean)
    if payee is not None:
        state.payees[payee] = t_us
        _cap(state.payees, MAX_KNOWN_PAYEES)
    if device is not None and device not in state.devices:
        state.devices[device] = [t_us, history]
        if len(state.devices) > MAX_KNOWN_DEVICES:  # forget the oldest devices
            for key, _ in sorted(state.devices.items(), key=lambda kv: kv[1][0])[:-MAX_KNOWN_DEVICES]:
                del state.devices[key]
    state.last_us = t_us
    if lat is not None and lon is not None:
        state.last_lat, state.last_lon = lat, lon
    state.first_us = first_us
    bucket = state.buckets.setdefault(bucket_of(t_us), [0, 0, 0, 0])
    bucket[0] += 1
    bucket[1] += amount
    bucket[2] += amount * amount
    bucket[3] += unusual
    _prune_buckets(state.buckets, t_us)

    return (
        *counts,
        *sums,
        *payees,
        history,
        round(to_mean, 6),
        round(zscore, 6),
        new_payee,
        new_device,
        hour,
        int(hour in NIGHT_HOURS_IST),
        round(since, 3),
        round(km, 3),
        round(kmh, 3),
        failed_1h,
        small_1h,
        near_24h,
        count_7d,
        sum_7d,
        round(sum_7d / count_7d, 3),
        count_30d,
        sum_30d,
        round(sum_30d / count_30d, 3),
        round(to_mean_7d, 6),
        round(to_mean_30d, 6),
        round(zscore_30d, 6),
        round(days_known, 4),
        weekend,
        prior_1d[3],
        prior_7d[3],
        prior_30d[3],
    )


def event_windows(t_us: int) -> list[tuple[str, int, int]]:
    """(window_kind, start µs, end µs) of every stored account_aggregates window holding
    an event at ``t_us``: one per kind of :data:`AGGREGATE_WINDOWS_S`. Windows are
    [start, end), aligned on the epoch like Spark's ``window``.

    >>> [(k, s // MICROS, e // MICROS) for k, s, e in event_windows(3_930 * MICROS)]
    [('tumble_1m', 3900, 3960), ('tumble_5m', 3900, 4200)]
    """
    out = []
    for kind, size_s in AGGREGATE_WINDOWS_S.items():
        step = size_s * MICROS
        start = t_us // step * step
        out.append((kind, start, start + step))
    return out


def payer_windows(state: PayerState, times_us) -> list[tuple]:
    """account_aggregates rows of one payer for every window holding one of ``times_us``
    (events already folded into ``state``): (window_kind, start µs, end µs, count,
    total paise, max paise, distinct payees, payee set), computed from the payer's last
    24 h, so a replayed or restarted batch recomputes the same values.

    Windows starting 24 h or more before the payer's newest event are left out: the
    state no longer holds all of their events (only very late events have such windows;
    :func:`add_payer_features` computes a batch's windows before its own later events
    push them out).
    """
    wanted = {}
    for t in times_us:
        for kind, start, end in event_windows(t):
            wanted[(kind, start)] = end
    if not wanted or not state.recent:
        return []
    events = sorted(state.recent, key=lambda r: r[0])  # (t_us, amount, payee, failed), by time
    times = [r[0] for r in events]
    horizon = times[-1] - WINDOWS_S["24h"] * MICROS
    rows = []
    for (kind, start), end in sorted(wanted.items()):
        if start <= horizon:
            continue
        inside = events[bisect.bisect_left(times, start) : bisect.bisect_left(times, end)]
        if inside:
            amounts = [r[1] for r in inside]
            payees = frozenset(r[2] for r in inside if r[2] is not None)
            rows.append((kind, start, end, len(inside), sum(amounts), max(amounts), len(payees), payees))
    return rows


def sliding_hours(buckets) -> list[tuple]:
    """The 1-hour windows sliding by 5 minutes of one payer, from its tumble_5m rows
    ``(start µs, count, total, max, payee set)``: (``slide_1h``, start µs, end µs, count,
    total paise, max paise, distinct payees) for every window that holds at least one
    bucket with events, newest first. A window is the sum of the 12 buckets it covers
    (distinct payees: the size of their payee sets' union).

    >>> m = 60 * MICROS
    >>> rows = sliding_hours([(0, 2, 300, 200, {"a", "b"}), (55 * m, 1, 50, 50, {"b"})])
    >>> [(r[1] // m, r[2] // m, *r[3:]) for r in rows][:2]
    [(55, 115, 1, 50, 50, 1), (50, 110, 1, 50, 50, 1)]
    >>> [(r[1] // m, *r[3:]) for r in rows if r[1] == 0]
    [(0, 3, 350, 200, 2)]
    >>> len(rows)  # windows starting -55 ... +55 min
    23
    """
    kind, size_s, bucket_kind = SLIDING_HOUR
    step = AGGREGATE_WINDOWS_S[bucket_kind] * MICROS
    per_window = size_s * MICROS // step
    by_start = {b[0]: b for b in buckets if b[1] > 0}
    starts = {s - k * step for s in by_start for k in range(per_window)}
    rows = []
    for start in sorted(starts, reverse=True):
        inside = [by_start[t] for t in range(start, start + per_window * step, step) if t in by_start]
        payees = set().union(*(b[4] or () for b in inside))
        rows.append(
            (
                kind,
                start,
                start + size_s * MICROS,
                sum(b[1] for b in inside),
                sum(b[2] for b in inside),
                max(b[3] for b in inside),
                len(payees),
            )
        )
    return rows


@dataclass
class PayeeState:
    """Who paid this payee in the last hour, and how many paid it per 6-hour bucket over
    the last 30 days."""

    recent: deque = field(default_factory=deque)  # (t_us, payer)
    buckets: dict = field(default_factory=dict)  # 6-hour bucket -> transactions

    def to_json(self) -> str:
        return json.dumps([list(self.recent), self.buckets], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PayeeState:
        data = json.loads(text)
        if data and isinstance(data[0], list) and len(data) == 2 and isinstance(data[1], dict):
            return cls(deque(tuple(r) for r in data[0]), {int(k): v for k, v in data[1].items()})
        return cls(deque(tuple(r) for r in data))  # saved before the long views: the last hour only


def payee_fold(state: PayeeState, t_us: int, payer: str, delay_us: int = 0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(distinct payers, transactions) to this payee in (t - 1 h, t], then its transactions
    over each of :data:`LONG_WINDOWS_DAYS`; this one included. Second: its transactions over
    the same windows ending ``delay_us`` ago (labels of those are known by now)."""
    state.recent.append((t_us, payer))
    lo = t_us - 3600 * MICROS
    while state.recent and state.recent[0][0] <= lo:
        state.recent.popleft()
    key = bucket_of(t_us)
    state.buckets[key] = state.buckets.get(key, 0) + 1
    _prune_buckets(state.buckets, t_us, delay_us)
    low_1, low_7, low_30 = (bucket_of(t_us - d * 86400 * MICROS) for d in LONG_WINDOWS_DAYS)
    c1 = c7 = c30 = 0
    for k, n in state.buckets.items():  # nested windows, one pass (long_window_totals)
        if k > low_30:
            c30 += n
            if k > low_7:
                c7 += n
                if k > low_1:
                    c1 += n
    if delay_us:
        high = bucket_of(t_us - delay_us)
        m_1, m_7, m_30 = (bucket_of(t_us - delay_us - d * 86400 * MICROS) for d in LONG_WINDOWS_DAYS)
        m1 = m7 = m30 = 0
        for k, n in state.buckets.items():
            if m_30 < k <= high:
                m30 += n
                if k > m_7:
                    m7 += n
                    if k > m_1:
                        m1 += n
        matured = (m1, m7, m30)
    else:
        matured = (c1, c7, c30)
    return (len({p for _, p in state.recent}), len(state.recent), c1, c7, c30), matured


def fraud_reports_before(label_times_us: list[int], t_us: int) -> int:
    """Confirmed-fraud labels on this payee received at or before t (labels arrive late,
    so only those already known may be used).

    >>> fraud_reports_before([10, 20, 30], 20)
    2
    """
    return bisect.bisect_right(label_times_us, t_us)


def payee_label_features(
    frauds: list[tuple[int, int]], label_times: list[int], t_us: int, window_counts: tuple[int, ...], delay_us: int = 0
) -> tuple:
    """LABEL_FEATURES of one transaction at ``t_us``: ``frauds`` are this payee's
    confirmed frauds as (label time, transaction time) sorted by label time (and
    ``label_times`` their label times alone); ``window_counts`` the payee's transactions
    over each of :data:`LONG_WINDOWS_DAYS` ending ``delay_us`` before ``t_us`` (this one
    included when ``delay_us`` is 0). A fraud counts once its label has arrived; the rates
    are known frauds over transactions made in the same window, the window ending
    ``delay_us`` ago, when the labels of what was made then have arrived.

    >>> day = 86400 * MICROS
    >>> frauds = [(8 * day, 1 * day), (9 * day, 9 * day - 5), (20 * day, 10 * day)]
    >>> payee_label_features(frauds, [f[0] for f in frauds], 9 * day + 1, (4, 10, 40))
    (2, 0.25, 0.1, 0.05, 2, 8.0, 0.0, 2)
    >>> payee_label_features(frauds, [f[0] for f in frauds], 9 * day + 1, (2, 5, 20), delay_us=7 * day)
    (2, 0.0, 0.2, 0.05, 2, 8.0, 0.0, 1)
    """
    known = bisect.bisect_right(label_times, t_us)
    high = bucket_of(t_us - delay_us)
    lows = [bucket_of(t_us - delay_us - d * 86400 * MICROS) for d in LONG_WINDOWS_DAYS]
    in_window = [0] * len(lows)
    recent_reports = 0
    report_low = t_us - 7 * 86400 * MICROS
    horizon = t_us - LONG_HORIZON_S * MICROS - delay_us
    first = last = None
    for label_us, txn_us in frauds[:known]:
        key = bucket_of(txn_us)
        if key <= high:
            for i, low in enumerate(lows):
                if key > low:
                    in_window[i] += 1
        if label_us > report_low:
            recent_reports += 1
        if txn_us > horizon:
            first = txn_us if first is None or txn_us < first else first
            last = txn_us if last is None or txn_us > last else last
    rates = [round(min(1.0, n / c), 6) if c > 0 else 0.0 for n, c in zip(in_window, window_counts)]
    since_first = NO_FRAUD_DAYS if first is None else round(max(0, t_us - first) / (86400 * MICROS), 4)
    since_last = NO_FRAUD_DAYS if last is None else round(max(0, t_us - last) / (86400 * MICROS), 4)
    return (known, *rates, recent_reports, since_first, since_last, in_window[-1])


# -------------------------------------------------------------- profiles and frames


class ProfileStore:
    """Where per-key profiles live between micro-batches. ``load`` returns JSON texts.

    A store that ``keeps_windows`` is also given each batch's account_aggregates rows
    (:func:`payer_windows`), derived from the payer profiles it saves.
    """

    keeps_windows = False
    label_delay_us = 0
    """How long after a transaction its label is known: the payee fraud rates look at the
    transactions made that long ago and earlier (0: every label is known at once)."""

    def load(self, kind: str, keys: list[str]) -> dict[str, str]:
        raise NotImplementedError

    def save(self, kind: str, profiles: dict[str, str]) -> None:
        raise NotImplementedError

    def fraud_label_times(self, payees: list[str]) -> dict[str, list[tuple[int, int]]]:
        """payee -> its confirmed frauds known so far as (label time µs, transaction time
        µs), sorted."""
        raise NotImplementedError

    def save_windows(self, rows: list[tuple]) -> None:
        """(payer_account, *payer_windows row) tuples, when ``keeps_windows``."""
        raise NotImplementedError


class MemoryProfileStore(ProfileStore):
    """Profiles in a dict: batch backfills, training, tests. Starts empty. With
    ``keep_windows``, the latest account_aggregates row per (payer, kind, start) too."""

    def __init__(
        self, fraud_labels: dict[str, list] | None = None, keep_windows: bool = False, label_delay_s: float = 0.0
    ) -> None:
        """``fraud_labels``: payee -> (label time, transaction time) pairs in µs, or bare
        label times (the transaction then counts as made when it was labelled)."""
        self.profiles: dict[tuple[str, str], str] = {}
        self.labels = {k: sorted(label_pair(x) for x in v) for k, v in (fraud_labels or {}).items()}
        self.keeps_windows = keep_windows
        self.windows: dict[tuple[str, str, int], tuple] = {}
        self.label_delay_us = round(label_delay_s * MICROS)
        self.batch_end_us: int | None = None
        """The latest event time of the rows being folded, when the caller says
        (:func:`models.dataset.features_in_chunks`): saved profiles are stamped with it,
        and only stamped profiles can be forgotten."""
        self._stamps: dict[tuple[str, str], int] = {}

    def load(self, kind, keys):
        return {k: self.profiles[(kind, k)] for k in keys if (kind, k) in self.profiles}

    def save(self, kind, profiles):
        for k, v in profiles.items():
            self.profiles[(kind, k)] = v
            if self.batch_end_us is not None:
                self._stamps[(kind, k)] = self.batch_end_us

    def forget_idle(self, now_us: int) -> int:
        """Drop the profiles that every event at or after ``now_us`` would find expired
        anyway, so memory follows the active accounts and payees, not the whole history:
        a payer idle past :data:`PAYER_STATE_TTL_S` (payer_fold starts it afresh); a payee
        whose every bucket the next fold would prune (30 days + the label delay). A stamp is
        at or after the profile's last event, so nothing is dropped early. Returns how many."""
        payer_before = now_us - PAYER_STATE_TTL_S * MICROS
        payee_bucket = bucket_of(now_us - LONG_HORIZON_S * MICROS - self.label_delay_us)
        idle = [
            key
            for key, stamp in self._stamps.items()
            if (stamp < payer_before if key[0] == "payer" else bucket_of(stamp) <= payee_bucket)
        ]
        for key in idle:
            del self._stamps[key], self.profiles[key]
        return len(idle)

    def fraud_label_times(self, payees):
        return {p: self.labels[p] for p in payees if p in self.labels}

    def save_windows(self, rows):
        for row in rows:
            self.windows[row[:3]] = row


def label_pair(value) -> tuple[int, int]:
    """(label time, transaction time) from a pair or a bare label time.

    >>> label_pair(5), label_pair((7, 3))
    ((5, 5), (7, 3))
    """
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def epoch_micros(series) -> list[int]:
    """Epoch microseconds, whatever the column's unit (Arrow gives µs, pandas often ns).

    >>> import pandas as pd
    >>> ts = pd.Series(pd.to_datetime(["1970-01-01T00:00:01Z"]))
    >>> epoch_micros(ts), epoch_micros(ts.astype("datetime64[us, UTC]"))
    ([1000000], [1000000])
    """
    # pandas only for the frame helpers: the per-key folds run in Spark workers without it.
    import pandas as pd

    return pd.to_datetime(series, utc=True).dt.as_unit("us").astype("int64").tolist()


def _clean(value):
    """pandas missing values (None/NaN/NA) -> None."""
    if value is None:
        return None
    try:
        return None if value != value else value  # NaN != NaN
    except (TypeError, ValueError):
        return value


def _ordered(pdf):
    return pdf.sort_values(["event_time", "txn_id"], kind="mergesort").reset_index(drop=True)


def add_payee_features(pdf, store: ProfileStore):
    """PAYEE_FEATURES and LABEL_FEATURES for rows that hold ALL of their payees' rows
    in this batch (the stream repartitions by payee_key first)."""
    # lazy: pandas (2.2 s to import); the web app's workers load this module without it
    import pandas as pd

    pdf = _ordered(pdf)
    times = epoch_micros(pdf["event_time"]) if len(pdf) else []
    payers, payees = pdf["payer_account"].tolist(), pdf["payee_key"].tolist()
    keys = sorted(set(payees))
    states = {k: PayeeState.from_json(v) for k, v in store.load("payee", keys).items()}
    frauds = store.fraud_label_times(keys) if keys else {}
    label_times = {k: [f[0] for f in v] for k, v in frauds.items()}
    delay = int(store.label_delay_us)
    rows, label_rows = [], []
    no_frauds: list = []
    for t, payer, payee in zip(times, payers, payees):
        state = states.get(payee)
        if state is None:
            state = states[payee] = PayeeState()
        folded, matured = payee_fold(state, t, payer, delay)
        rows.append(folded)
        label_rows.append(
            payee_label_features(frauds.get(payee, no_frauds), label_times.get(payee, no_frauds), t, matured, delay)
        )
    store.save("payee", {k: v.to_json() for k, v in states.items()})
    out = pd.concat([pdf, pd.DataFrame(rows, columns=list(PAYEE_FEATURES), dtype="int64")], axis=1)
    labels = pd.DataFrame(label_rows, columns=list(LABEL_FEATURES))
    for name in LABEL_FEATURES:
        out[name] = labels[name].astype("int64" if name in INTEGER_FEATURES else "float64")
    return out


def add_payer_features(pdf, store: ProfileStore):
    """PAYER_FEATURES for rows that hold ALL of their payers' rows in this batch."""
    # lazy: pandas (2.2 s to import); the web app's workers load this module without it
    import pandas as pd

    pdf = _ordered(pdf)
    times = epoch_micros(pdf["event_time"]) if len(pdf) else []
    payers = pdf["payer_account"].tolist()
    states = {k: PayerState.from_json(v) for k, v in store.load("payer", sorted(set(payers))).items()}
    rows = []
    # account_aggregates (stores that keep them): payer -> this batch's event times not yet
    # turned into windows. A batch can span more than the 24 h a profile holds (catch-up
    # after downtime), so a payer's windows are computed before a later event of the batch
    # could push their events out of the state: once its first pending event is 23 h 55 min
    # older (its windows start at most 5 min before it). A window computed again later in
    # the batch replaces the earlier row (keyed below), so only final values are saved.
    pending: dict[str, list[int]] = {}
    windows: dict[tuple, tuple] = {}
    flush_after = (WINDOWS_S["24h"] - max(AGGREGATE_WINDOWS_S.values())) * MICROS
    for t, payer, payee, amount, device, lat, lon, status in zip(
        times,
        payers,
        pdf["payee_key"].tolist(),
        pdf["amount_paise"].tolist(),
        pdf["device_id"].tolist(),
        pdf["lat"].tolist(),
        pdf["lon"].tolist(),
        pdf["status"].tolist(),
    ):
        state = states.get(payer)
        if state is None:
            state = states[payer] = PayerState()
        if store.keeps_windows:
            if payer in pending and pending[payer][0] <= t - flush_after:
                windows.update(((payer, w[0], w[1]), (payer, *w)) for w in payer_windows(state, pending.pop(payer)))
            pending.setdefault(payer, []).append(t)
        lat, lon = _clean(lat), _clean(lon)
        rows.append(
            payer_fold(
                state,
                t,
                _clean(payee),
                int(amount),
                _clean(device),
                None if lat is None else float(lat),
                None if lon is None else float(lon),
                status == "FAILED",
            )
        )
    store.save("payer", {k: v.to_json() for k, v in states.items()})
    if store.keeps_windows:
        windows.update(
            ((payer, w[0], w[1]), (payer, *w))
            for payer, times in pending.items()
            for w in payer_windows(states[payer], times)
        )
        store.save_windows(list(windows.values()))
    feats = pd.DataFrame(rows, columns=list(PAYER_FEATURES))
    for name in PAYER_FEATURES:
        feats[name] = feats[name].astype("int64" if name in INTEGER_FEATURES else "float64")
    return pd.concat([pdf, feats], axis=1)


def add_features(pdf, store: ProfileStore):
    """Transactions (typed columns incl. payee_key) -> same rows + every feature column,
    in (event_time, txn_id) order. Each key's rows are folded in that order, starting
    from the profile in ``store``; updated profiles are saved back."""
    return add_payer_features(add_payee_features(pdf, store), store)


def transactions_frame(events) -> pd.DataFrame:
    """Contract events -> the typed transactions frame the features expect (no Spark)."""
    # lazy: pandas (2.2 s to import); the web app's workers load this module without it
    import pandas as pd

    rows = [
        {
            "txn_id": e.txn_id,
            "event_time": e.event_time,
            "channel": str(e.channel),
            "txn_type": str(e.txn_type),
            "payer_account": e.payer.account_number,
            "payee_account": e.payee.account_number,
            "payee_vpa": e.payee.vpa,
            "payee_key": e.payee.account_number or e.payee.vpa,
            "amount_paise": e.amount_paise,
            "mcc": e.mcc,
            "device_id": e.device_id,
            "lat": e.geo.lat if e.geo else None,
            "lon": e.geo.lon if e.geo else None,
            "city": e.geo.city if e.geo else None,
            "status": str(e.status),
        }
        for e in events
    ]
    frame = pd.DataFrame(rows)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame
