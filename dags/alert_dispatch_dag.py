"""
### alert_dispatch: second chances for failed deliveries, and the daily digest

Every 5 minutes `retry_failed` re-sends alert deliveries (email / SMS / webhook) whose
own retries ran out, for the IST day of the run and the day before
(`alerting.retry.retry_failed_deliveries`). Sent ones leave the failures table; if
some still fail, the task fails and Airflow retries it with backoff (the operator is
emailed when the retries are used up).

Once a day, in the run whose interval contains 00:30 IST, `send_digest` emails the
fraud desk the digest of the IST day that just ended (`alerting.digest.send_digest`).
The delivery log keeps each day's digest from being sent twice, so re-runs are safe.

**Trigger by hand**: `txmon airflow trigger alert_dispatch --conf '{"digest_date": "2026-11-22"}'`
sends (or re-sends, if it failed) that day's digest; `retry_date` / `retry_days` choose
the IST days whose failed deliveries are retried.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, date, datetime, timedelta

from airflow.sdk import DAG, Param, task
from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable

from txmon.alerting.config import load_alerting_config
from txmon.alerting.contract import DAY_TZ
from txmon.alerting.digest import send_digest as send
from txmon.alerting.retry import retry_failed_deliveries
from txmon.alerting.runtime import runtime
from txmon.infra.orchestration import daily_due, default_args, interval_end, ist_day, utc
from txmon.infra.settings import load_settings

DIGEST_TIME_IST = (0, 30)  # the digest of day D goes out at 00:30 IST on D+1

with DAG(
    dag_id="alert_dispatch",
    description="Retry failed alert deliveries every 5 minutes; send the daily staff digest",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("*/5 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=30),
    default_args=default_args(retries=3, retry_delay=timedelta(seconds=30), execution_timeout=timedelta(minutes=10)),
    params={
        "retry_date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="last IST day to retry, YYYY-MM-DD (default: the run's day)",
        ),
        "retry_days": Param(2, type="integer", minimum=1, maximum=31, description="days back from retry_date"),
        "digest_date": Param(
            None, type=["null", "string"], format="date", description="send the digest of this IST day now, YYYY-MM-DD"
        ),
    },
    tags=["txmon", "alerting"],
) as dag:

    @task
    def retry_failed(params=None, **context) -> dict:
        """Retry the failed deliveries of the chosen IST days; fail while some still fail."""

        last = date.fromisoformat(params["retry_date"]) if params.get("retry_date") else ist_day(interval_end(context))
        days = [last - timedelta(days=n) for n in range(int(params.get("retry_days") or 2))]
        report = retry_failed_deliveries(days)
        logging.getLogger("txmon.airflow").info("%s (IST days %s..%s)", report.line(), days[-1], days[0])
        if report.still_failed:
            raise RuntimeError(f"{report.line()}; the task retries with backoff")
        return {**dataclasses.asdict(report), "days": [d.isoformat() for d in days]}

    @task.short_circuit
    def digest_due(params=None, **context) -> bool:
        """True for a manual `digest_date`, or when this run's interval contains 00:30 IST."""
        if params.get("digest_date"):
            return True
        return daily_due(utc(context.get("data_interval_start")), interval_end(context), *DIGEST_TIME_IST, DAY_TZ)

    @task
    def send_digest(params=None, **context) -> dict:
        """Email the fraud desk the digest of the IST day (once per day: re-runs are no-ops)."""

        day = (
            date.fromisoformat(params["digest_date"])
            if params.get("digest_date")
            else ist_day(interval_end(context)) - timedelta(days=1)
        )
        with runtime(load_settings(), load_alerting_config(), needed={"email"}) as rt:
            result = send(rt, day)
        statuses = [o.status for o in result.outcomes]
        if "failed" in statuses:
            raise RuntimeError(f"digest {day} not delivered ({statuses}); the task retries")
        return {"day": day.isoformat(), "alerts": result.data.total, "email": statuses}

    retry_failed()
    digest_due() >> send_digest()
