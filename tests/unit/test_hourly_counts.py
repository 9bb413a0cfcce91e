"""The dashboard's counts per IST hour (infra/hourly_counts.py): hour buckets, what a
batch adds up, and that a replayed micro-batch overwrites its first attempt."""

from __future__ import annotations

import json
from collections import namedtuple
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa

from txmon.infra import hourly_counts as hc


def test_hours_are_ist_hours_and_days_are_ist_days():
    # 18:29:59 UTC is 23:59:59 IST; 18:30 UTC is midnight IST, the next IST day.
    before, after = datetime(2026, 12, 5, 18, 29, 59, tzinfo=UTC), datetime(2026, 12, 5, 18, 30, tzinfo=UTC)
    assert hc.hour_of(before) == datetime(2026, 12, 5, 17, 30, tzinfo=UTC)
    assert hc.hour_of(after) == datetime(2026, 12, 5, 18, 30, tzinfo=UTC)
    assert hc.day_of(hc.hour_of(before)) == date(2026, 12, 5)
    assert hc.day_of(hc.hour_of(after)) == date(2026, 12, 6)
    assert hc.hour_of(before.replace(tzinfo=None)) == hc.hour_of(before)  # naive means UTC


def test_hour_starts_on_an_arrow_column_agree_with_hour_of():
    base = datetime(2026, 12, 6, 0, 0, tzinfo=UTC)
    times = [base + timedelta(minutes=17 * i, seconds=i) for i in range(200)]
    column = pa.array([t.replace(tzinfo=None) for t in times] + [None], pa.timestamp("us", tz="UTC"))
    assert hc.hour_starts(column) == [hc.hour_of(t) for t in times] + [None]


def _batch():
    t1 = datetime(2026, 12, 6, 3, 10, tzinfo=UTC)  # IST hour 08:30-09:30 starts 03:00 UTC
    t2 = datetime(2026, 12, 6, 3, 40, tzinfo=UTC)  # next IST hour, 03:30 UTC
    hours = [hc.hour_of(t) for t in (t1, t1, t1, t2)]
    alerts = [(t1, ["VELOCITY_BURST", "NEW_PAYEE"], t1), (t2, ["NEW_PAYEE"], t2 + timedelta(seconds=1))]
    return hc.batch_counts(hours, ["APPROVE", "BLOCK", None, "REVIEW"], ["v1", "v1", "v2", None], alerts), t1, t2


def test_a_batch_is_counted_per_hour_decision_model_and_rule():
    per, t1, t2 = _batch()
    first, second = per[hc.hour_of(t1)], per[hc.hour_of(t2)]
    assert first["transactions"] == 3 and first["alerts"] == 1
    assert first["decisions"] == {"APPROVE": 1, "BLOCK": 1, "": 1}
    assert first["models"] == {"v1": 2, "v2": 1}
    assert first["rules"] == {"VELOCITY_BURST": 1, "NEW_PAYEE": 1}
    assert second["transactions"] == 1 and second["alerts"] == 1 and second["models"] == {}
    assert second["newest_alert"] == "2026-12-06T03:40:01.000000Z"


def test_arrow_counts_equal_the_row_by_row_counts():
    base = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
    times = [base + timedelta(minutes=7 * i) for i in range(60)] + [None]
    decisions = [("APPROVE", "REVIEW", "BLOCK", None)[i % 4] for i in range(61)]
    models = [("v1", None, "v2")[i % 3] for i in range(61)]
    alerts = [(base, ["NEW_PAYEE"], base + timedelta(seconds=5))]
    column = pa.array([t.replace(tzinfo=None) if t else None for t in times], pa.timestamp("us", tz="UTC"))
    expected = hc.batch_counts([hc.hour_of(t) if t else None for t in times], decisions, models, alerts)
    assert hc.arrow_counts(column, pa.array(decisions), pa.array(models), alerts) == expected
    assert sum(c["transactions"] for c in expected.values()) == 60


def test_merge_adds_maps_key_by_key_and_keeps_the_newest_alert():
    a = {**hc.empty(), "transactions": 2, "decisions": {"APPROVE": 2}, "newest_alert": "2026-12-06T01:00:00.000000Z"}
    b = {**hc.empty(), "transactions": 1, "alerts": 1, "decisions": {"APPROVE": 0, "BLOCK": 1}}
    m = hc.merge(a, b)
    assert m["transactions"] == 3 and m["alerts"] == 1
    assert m["decisions"] == {"APPROVE": 2, "BLOCK": 1}
    assert m["newest_alert"] == "2026-12-06T01:00:00.000000Z"


class _FakeSession:
    """console_hourly as a dict, for write_batch's select and insert per hour."""

    Row = namedtuple("Row", "batch_token counts previous")

    def __init__(self):
        self.rows: dict[tuple, tuple] = {}

    def execute_async(self, stmt, params):
        if stmt.startswith("SELECT"):
            found = self.rows.get(tuple(params))
            return _Done(self.Row(*found) if found else None)
        *key, token, counts, previous = params
        self.rows[tuple(key)] = (token, counts, previous)
        return _Done(None)


class _Done:
    """A finished ResponseFuture: ``result()`` gives the rows."""

    def __init__(self, row):
        self.row = row

    def result(self):
        return self

    def one(self):
        return self.row


def _stored(session, hour):
    return [json.loads(c) for (_d, h, _q, _p), (_t, c, _prev) in session.rows.items() if h == hour]


def test_a_replayed_micro_batch_overwrites_instead_of_adding():
    per, t1, _ = _batch()
    hour = hc.hour_of(t1).replace(tzinfo=None)
    session = _FakeSession()

    def prepare(_session, cql):
        return cql

    hc.write_batch(session, prepare, "q", 0, "q#7", per)
    hc.write_batch(session, prepare, "q", 0, "q#8", per)
    after_two = _stored(session, hour)[0]
    assert after_two["transactions"] == 6 and after_two["alerts"] == 2
    # Spark replays micro-batch 8 (crash before its commit): same token, same rows.
    hc.write_batch(session, prepare, "q", 0, "q#8", per)
    hc.write_batch(session, prepare, "q", 0, "q#8", per)
    assert _stored(session, hour)[0] == after_two
    # The next micro-batch adds again; another partition or query has rows of its own.
    hc.write_batch(session, prepare, "q", 0, "q#9", per)
    hc.write_batch(session, prepare, "q", 1, "q#9", per)
    assert sorted(c["transactions"] for c in _stored(session, hour)) == [3, 9]


def test_fold_starts_a_replay_from_the_counts_before_it():
    batch = {**hc.empty(), "transactions": 5}
    counts, previous = hc.fold(None, "q#1", batch)
    assert json.loads(counts)["transactions"] == 5 and json.loads(previous) == hc.empty()
    again, previous_again = hc.fold(("q#1", counts, previous), "q#1", batch)
    assert (again, previous_again) == (counts, previous)
    later, before_later = hc.fold(("q#1", counts, previous), "q#2", batch)
    assert json.loads(later)["transactions"] == 10 and before_later == counts


def test_backfill_counts_the_hours_before_the_stream_counted_and_rewrites_on_a_rerun():
    Counted = namedtuple("Counted", "hour query")
    Scored = namedtuple("Scored", "event_time decision model_version")
    stream_hour = datetime(2026, 12, 6, 3, 30, tzinfo=UTC)
    old = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)  # IST hour starting 00:30 UTC
    scored = [Scored(old, "BLOCK", "v1"), Scored(old, "APPROVE", "v1"), Scored(stream_hour, "APPROVE", "v1")]
    written: dict[tuple, tuple] = {}

    class Session:
        def execute(self, stmt, params=None, timeout=None):
            if stmt.startswith("SELECT hour, query"):
                return [Counted(stream_hour.replace(tzinfo=None), "ckpt"), Counted(old, hc.BACKFILL_QUERY)]
            if stmt.startswith("SELECT event_time"):
                return scored
            *key, token, counts, _previous = params
            written[tuple(key)] = (token, json.loads(counts))
            return None

    def alerts_by_day(day):
        return (
            [{"event_time": old, "reason_codes": ["NEW_PAYEE"], "created_at": old}] if day == date(2026, 12, 6) else []
        )

    for _ in range(2):  # a re-run writes the same rows again
        assert (
            hc.backfill(Session(), lambda _s, cql: cql, alerts_by_day, old - timedelta(days=1), log=lambda _m: None)
            == 1
        )
    ((key, (token, counts)),) = written.items()
    assert key[1:] == (hc.hour_of(old).replace(tzinfo=None), hc.BACKFILL_QUERY, 0)
    assert token == hc.BACKFILL_QUERY
    assert counts["transactions"] == 2 and counts["alerts"] == 1 and counts["rules"] == {"NEW_PAYEE": 1}
