"""Spending insights for one account or one segment of the book.

An account: what the spending_insights batch job stored in ``account_spending`` (monthly
and yearly totals, by channel, merchant category and payee) and the daily trend of the
stream's own 5-minute windows (``account_aggregates``, through infra.readback), beside
the whole book's average. A segment (the whole book, one channel, one merchant
category, one spending band of payers): what the same job stored in
``segment_spending`` (daily, monthly and yearly totals, distinct accounts, by channel,
category, spending band and the period's largest payees).

Every read names its partition and a bounded range of periods (:data:`MONTHS`,
:data:`DAILY_DAYS`), so a page costs the same however long the book's history is. Drawn
with webapp.console.charts.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from txmon.alerting.contract import DAY_TZ
from txmon.infra.cassandra_schema import prepared
from txmon.infra.readback import account_windows
from txmon.infra.statements import ACCOUNT_SPENDING_MONTHS, ACCOUNT_SPENDING_YEARS, SEGMENT_SPENDING
from txmon.spark_jobs import spend_bands
from txmon.webapp.console import charts

DAILY_DAYS = 30
MONTHS = 24  # monthly rows read (an account's, a segment's): the last two years
TOP = 10  # bars in the category and payee charts
ALL_SEGMENT = "all"  # spark_jobs.spending_insights.ALL_SEGMENT (the console does not import the job)
SPEND_BANDS = {"low": "under ₹10,000", "mid": "₹10,000 to ₹1 lakh", "high": "₹1 lakh or more"}
"""spark_jobs.spend_bands.SPEND_BANDS in words: a payer's spend per month it paid in."""
SEGMENT = re.compile(r"all|channel:[A-Z_]{1,16}|mcc:(?:[0-9]{4}|none)|spend:(?:" + "|".join(SPEND_BANDS) + ")")
"""What a segment may be called in a URL: the book, a channel, a merchant category, a
spending band. ASCII digits only: ``\\d`` takes any script's, and a category code is 4 of
0-9."""


@dataclass
class Insights:
    account: str  # the account number, or the segment ("all", "channel:UPI", "mcc:5411")
    txn_count: int
    total_paise: int
    average_paise: int | None
    months: list[dict[str, Any]]
    years: list[dict[str, Any]]
    channels: list[tuple[str, int]]
    mccs: list[tuple[str, int]]
    bands: list[tuple[str, int, int]]  # (band, transactions, spend), SPEND_BANDS' order; a segment's only
    payees: list[tuple[str, int, int]]
    days: list[tuple[str, int, int]]
    computed_until: datetime | None
    charts: dict[str, str] = field(default_factory=dict)
    segment: str | None = None  # set for a segment's insights
    accounts: int | None = None  # a segment's distinct payer accounts in its latest year
    book_average_paise: int | None = None  # an account's page: the whole book's average, to compare
    band: str | None = None  # an account's page: its spending band (a key of SPEND_BANDS)
    band_monthly_paise: int | None = None  # its spend per IST month it paid in, which set the band
    band_months: int = 0  # the IST months it paid in
    band_average_paise: int | None = None  # the band's average spend (its segment page's)


def segment_label(segment: str) -> str:
    """
    >>> segment_label("mcc:5411"), segment_label("channel:UPI"), segment_label("all")
    ('merchant category 5411', 'channel UPI', 'all accounts')
    >>> segment_label("spend:mid")
    'spending ₹10,000 to ₹1 lakh a month'
    """
    kind, _, value = segment.partition(":")
    if kind == "channel":
        return f"channel {value}"
    if kind == "spend":
        return f"spending {SPEND_BANDS.get(value, value)} a month"
    if kind == "mcc":
        return "no merchant category" if value == "none" else f"merchant category {value}"
    return "all accounts"


def _first_month(now: datetime) -> str:
    """The first IST month of the :data:`MONTHS` read (``yyyy-mm`` orders as text).

    >>> _first_month(datetime(2026, 12, 6, tzinfo=UTC))
    '2025-01'
    """
    t = now.astimezone(DAY_TZ)
    n = t.year * 12 + (t.month - 1) - (MONTHS - 1)
    return f"{n // 12:04d}-{n % 12 + 1:02d}"


def _first_day(now: datetime) -> str:
    """
    >>> _first_day(datetime(2026, 12, 6, tzinfo=UTC))
    '2026-11-07'
    """
    return (now.astimezone(DAY_TZ).date() - timedelta(days=DAILY_DAYS - 1)).isoformat()


def account_of_alert(session: Any, alerts: Any, alert_id: Any) -> str | None:
    alert = alerts.load_alert(alert_id)
    return alerts.payer_account(alert.txn_id) if alert is not None else None


def _periods(rows: list[Any], kind: str) -> list[dict[str, Any]]:
    return sorted(
        (
            {
                "period": r.period,
                "count": r.txn_count,
                "total": r.total_paise,
                "avg": r.avg_paise,
                "max": r.max_paise,
                "accounts": getattr(r, "accounts", None),
            }
            for r in rows
            if r.period_kind == kind and r.dimension == "all"
        ),
        key=lambda m: m["period"],
    )


def account_band(months: list[dict[str, Any]], years: list[dict[str, Any]]) -> tuple[str | None, int | None]:
    """(band, spend per month) of an account from its stored months and years (as
    :func:`_periods` gives them; ``months`` all of them): the job's definition
    (spark_jobs.spend_bands), its total before the job's ``--until`` over the IST months it
    paid in. (None, None) for an account the job has not seen."""
    total = sum(y["total"] for y in years)
    band = spend_bands.band_of(total, len(months))
    return band, round(total / len(months)) if band else None


def months_cover_years(months: list[dict[str, Any]], years: list[dict[str, Any]]) -> bool:
    """Whether the months read hold every transaction of the years (no month of the
    account's history before the :data:`MONTHS` read).

    >>> months_cover_years([{"count": 2}], [{"count": 2}]), months_cover_years([{"count": 2}], [{"count": 5}])
    (True, False)
    """
    return sum(m["count"] for m in months) == sum(y["count"] for y in years)


def band_average(book_years: list[Any], band: str | None) -> int | None:
    """The average spend of the payers in ``band`` over the book's years (the rows of
    segment ``all``, by spending band): what the band's own segment page shows as its
    average, as the job counts each transaction in both."""
    mine = [r for r in book_years if r.dimension == "spend" and r.key == band]
    count = sum(r.txn_count for r in mine)
    return round(sum(r.total_paise for r in mine) / count) if count else None


def _by_dimension(years: list[Any]) -> dict[str, dict[str, list[int]]]:
    """Count and total per dimension and key, summed over the years read."""
    per: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in years:
        if r.dimension != "all":
            per[r.dimension][r.key][0] += r.txn_count
            per[r.dimension][r.key][1] += r.total_paise
    return per


def _charts(out: Insights, daily_title: str) -> dict[str, str]:
    return {
        "monthly": charts.stacked(
            "Monthly spend (₹, IST months)",
            [m["period"] for m in out.months],
            {"spend": [m["total"] / 100 for m in out.months]},
        ),
        "daily": charts.series(
            daily_title,
            [datetime.fromisoformat(d) for d, _, _ in out.days],
            {"spend": [t / 100 for _, _, t in out.days]},
            "₹",
            secondary=("transactions", [c for _, c, _ in out.days]),
        ),
        "channels": charts.bars(
            "Spend by channel (₹)", [k for k, _ in out.channels], [v / 100 for _, v in out.channels]
        ),
        "mcc": charts.bars("Spend by merchant category (₹)", [k for k, _ in out.mccs], [v / 100 for _, v in out.mccs]),
        "payees": charts.bars("Top payees (₹)", [p for p, _, _ in out.payees], [t / 100 for _, _, t in out.payees]),
        "spend": charts.bars(
            "Spend by payers' spending band (₹)", [b for b, _, _ in out.bands], [t / 100 for _, _, t in out.bands]
        ),
    }


def build(session: Any, account: str, now: datetime, show_payee) -> Insights:
    """One account's insights. ``show_payee(key)``: a payee as the user may see it
    (masked for viewers)."""

    months_read = session.execute_async(prepared(session, ACCOUNT_SPENDING_MONTHS), (account, _first_month(now)))
    years_read = session.execute_async(prepared(session, ACCOUNT_SPENDING_YEARS), (account,))
    book_read = session.execute_async(prepared(session, SEGMENT_SPENDING), (ALL_SEGMENT, "year", ""))
    month_rows, year_rows, book_rows = list(months_read.result()), list(years_read.result()), list(book_read.result())
    months, years = _periods(month_rows, "month"), _periods(year_rows, "year")
    per = _by_dimension(year_rows)
    channels = sorted(((k, v[1]) for k, v in per["channel"].items()), key=lambda kv: -kv[1])
    mccs = sorted(((k, v[1]) for k, v in per["mcc"].items()), key=lambda kv: -kv[1])[:TOP]
    payees = sorted(((show_payee(k), v[0], v[1]) for k, v in per["payee"].items()), key=lambda p: -p[2])[:TOP]
    count = sum(y["count"] for y in years)
    total = sum(y["total"] for y in years)
    until = max((r.computed_until for r in (*month_rows, *year_rows) if r.computed_until), default=None)
    book = [r for r in book_rows if r.dimension == "all"]
    book_count, book_total = sum(r.txn_count for r in book), sum(r.total_paise for r in book)
    since = (now - timedelta(days=DAILY_DAYS)).astimezone(UTC).replace(tzinfo=None)  # naive UTC, as stored
    daily: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for w in account_windows(session, account, "tumble_5m", since=since):
        day = (w.window_start + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%d")  # naive UTC -> IST day
        daily[day][0] += w.txn_count
        daily[day][1] += w.total_paise
    days = sorted((d, c, t) for d, (c, t) in daily.items())
    every_month = months
    if not months_cover_years(months, years):
        # History older than the months shown: the band counts every month paid in.
        every_month = _periods(
            list(session.execute(prepared(session, ACCOUNT_SPENDING_MONTHS), (account, ""))), "month"
        )
    band, monthly = account_band(every_month, years)
    out = Insights(
        account,
        count,
        total,
        round(total / count) if count else None,
        months,
        years,
        channels,
        mccs,
        [],
        payees,
        days,
        until,
        book_average_paise=round(book_total / book_count) if book_count else None,
        band=band,
        band_monthly_paise=monthly,
        band_months=len(every_month),
        band_average_paise=band_average(book_rows, band),
    )
    out.charts = _charts(out, f"Daily spend, last {DAILY_DAYS} days (₹)")
    return out


def build_segment(session: Any, segment: str, now: datetime, show_payee) -> Insights:
    """One segment's insights (``segment`` matches :data:`SEGMENT`): its days over the
    last :data:`DAILY_DAYS`, its months over the last :data:`MONTHS`, its years, and the
    largest payees of its latest year. Three bounded reads, sent at once."""
    reads = {
        kind: session.execute_async(prepared(session, SEGMENT_SPENDING), (segment, kind, start))
        for kind, start in (("day", _first_day(now)), ("month", _first_month(now)), ("year", ""))
    }
    rows = {kind: list(future.result()) for kind, future in reads.items()}
    months, years = _periods(rows["month"], "month"), _periods(rows["year"], "year")
    per = _by_dimension([r for r in rows["year"] if r.dimension != "payee"])
    channels = sorted(((k, v[1]) for k, v in per["channel"].items()), key=lambda kv: -kv[1])
    mccs = sorted(((k, v[1]) for k, v in per["mcc"].items()), key=lambda kv: -kv[1])[:TOP]
    bands = [(b, per["spend"][b][0], per["spend"][b][1]) for b in SPEND_BANDS if b in per["spend"]]
    latest = years[-1]["period"] if years else None
    payees = sorted(
        (
            (show_payee(r.label or "?"), r.txn_count, r.total_paise)
            for r in rows["year"]
            if r.dimension == "payee" and r.period == latest
        ),
        key=lambda p: -p[2],
    )[:TOP]
    days = sorted((r.period, r.txn_count, r.total_paise) for r in rows["day"] if r.dimension == "all")
    count = sum(y["count"] for y in years)
    total = sum(y["total"] for y in years)
    until = max((r.computed_until for rs in rows.values() for r in rs if r.computed_until), default=None)
    out = Insights(
        segment,
        count,
        total,
        round(total / count) if count else None,
        months,
        years,
        channels,
        mccs,
        bands,
        payees,
        days,
        until,
        segment=segment,
        accounts=years[-1]["accounts"] if years else None,
    )
    out.charts = _charts(out, f"Daily spend, last {DAILY_DAYS} days (₹, IST days)")
    return out


def segments(session: Any) -> list[tuple[str, str]]:
    """The segments the batch job stored, as (segment, label): the book, then each
    channel, merchant category and spending band (low to high) seen in its years (one
    bounded read)."""
    rows = session.execute(prepared(session, SEGMENT_SPENDING), (ALL_SEGMENT, "year", ""))
    bands = list(SPEND_BANDS)
    keys = sorted(
        {(r.dimension, r.key) for r in rows if r.dimension in ("channel", "mcc", "spend")},
        key=lambda k: (k[0], bands.index(k[1]) if k[0] == "spend" and k[1] in bands else -1, k[1]),
    )
    found = [f"{dimension}:{key}" for dimension, key in keys]
    return [(s, segment_label(s)) for s in (ALL_SEGMENT, *found) if SEGMENT.fullmatch(s)]
