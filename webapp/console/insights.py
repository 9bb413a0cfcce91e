"""Spending insights for one account: what the spending_insights batch job stored in
``account_spending`` (monthly and yearly totals, by channel, merchant category and
payee) and the daily trend of the stream's own 5-minute windows (``account_aggregates``,
through infra.readback), drawn with webapp.console.charts."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from txmon.infra.statements import ACCOUNT_SPENDING
from txmon.webapp.console import charts

DAILY_DAYS = 30


@dataclass
class Insights:
    account: str
    txn_count: int
    total_paise: int
    average_paise: int | None
    months: list[dict[str, Any]]
    years: list[dict[str, Any]]
    channels: list[tuple[str, int]]
    mccs: list[tuple[str, int]]
    payees: list[tuple[str, int, int]]
    days: list[tuple[str, int, int]]
    computed_until: datetime | None
    charts: dict[str, str] = field(default_factory=dict)


def account_of_alert(session: Any, alerts: Any, alert_id: Any) -> str | None:
    alert = alerts.load_alert(alert_id)
    return alerts.payer_account(alert.txn_id) if alert is not None else None


def build(session: Any, account: str, now: datetime, show_payee) -> Insights:
    """``show_payee(key)``: a payee as the user may see it (masked for viewers)."""
    from txmon.infra.readback import account_windows

    rows = list(
        session.execute(
            session.prepare(ACCOUNT_SPENDING),
            (account,),
        )
    )
    months = sorted(
        (
            {"period": r.period, "count": r.txn_count, "total": r.total_paise, "avg": r.avg_paise, "max": r.max_paise}
            for r in rows
            if r.period_kind == "month" and r.dimension == "all"
        ),
        key=lambda m: m["period"],
    )
    years = sorted(
        (
            {"period": r.period, "count": r.txn_count, "total": r.total_paise, "avg": r.avg_paise, "max": r.max_paise}
            for r in rows
            if r.period_kind == "year" and r.dimension == "all"
        ),
        key=lambda y: y["period"],
    )
    per: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in rows:
        if r.period_kind == "year" and r.dimension != "all":
            per[r.dimension][r.key][0] += r.txn_count
            per[r.dimension][r.key][1] += r.total_paise
    channels = sorted(((k, v[1]) for k, v in per["channel"].items()), key=lambda kv: -kv[1])
    mccs = sorted(((k, v[1]) for k, v in per["mcc"].items()), key=lambda kv: -kv[1])[:10]
    payees = sorted(((show_payee(k), v[0], v[1]) for k, v in per["payee"].items()), key=lambda p: -p[2])[:10]
    count = sum(y["count"] for y in years)
    total = sum(y["total"] for y in years)
    until = max((r.computed_until for r in rows if r.computed_until), default=None)
    since = (now - timedelta(days=DAILY_DAYS)).astimezone(UTC).replace(tzinfo=None)  # naive UTC, as stored
    daily: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for w in account_windows(session, account, "tumble_5m", since=since):
        day = (w.window_start + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%d")  # naive UTC -> IST day
        daily[day][0] += w.txn_count
        daily[day][1] += w.total_paise
    days = sorted((d, c, t) for d, (c, t) in daily.items())
    out = Insights(
        account,
        count,
        total,
        round(total / count) if count else None,
        months,
        years,
        channels,
        mccs,
        payees,
        days,
        until,
    )
    out.charts = {
        "monthly": charts.stacked(
            "Monthly spend (₹, IST months)",
            [m["period"] for m in months],
            {"spend": [m["total"] / 100 for m in months]},
        ),
        "daily": charts.series(
            "Daily spend, last 30 days (₹)",
            [datetime.fromisoformat(d) for d, _, _ in days],
            {"spend": [t / 100 for _, _, t in days]},
            "₹",
            secondary=("transactions", [c for _, c, _ in days]),
        ),
        "channels": charts.bars("Spend by channel (₹)", [k for k, _ in channels], [v / 100 for _, v in channels]),
        "mcc": charts.bars("Spend by merchant category (₹)", [k for k, _ in mccs], [v / 100 for _, v in mccs]),
        "payees": charts.bars("Top payees (₹)", [p for p, _, _ in payees], [t / 100 for _, _, t in payees]),
    }
    return out
