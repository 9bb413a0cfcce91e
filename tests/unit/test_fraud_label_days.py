"""The dashboard's fraud label days (infra/fraud_label_days.py): the IST day a label was
received, the days a window reads, and the outcome a decision makes. The reads and writes
against Cassandra are in tests/integration/test_console_reads.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from txmon.infra import fraud_label_days as fld

KOLKATA = ZoneInfo("Asia/Kolkata")
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))  # naive UTC


@given(instants)
def test_the_day_is_the_ist_date_for_naive_and_aware_instants(t):
    expected = t.replace(tzinfo=UTC).astimezone(KOLKATA).date()
    assert fld.ist_day(t) == expected
    assert fld.ist_day(t.replace(tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))) == expected


@given(instants, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=40)))
def test_a_window_reads_each_ist_day_it_touches_once(since, length):
    days = fld.days_between(since, since + length)
    assert days[0] == fld.ist_day(since) and days[-1] == fld.ist_day(since + length)
    assert all(b - a == timedelta(days=1) for a, b in pairwise(days))


def test_only_review_and_block_count_as_flagged():
    assert [fld.outcome_of(d) for d in ("BLOCK", "REVIEW", "APPROVE", "")] == ["flagged", "flagged", "missed", "missed"]
    assert fld.outcome_of(None) == "unscored"
