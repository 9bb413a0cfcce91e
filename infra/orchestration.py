"""What every txmon DAG shares: default task arguments (retries with exponential
backoff, timeouts, the failure email), and data-interval helpers.

DAG files import this at parse time, so it imports only the standard library at
module level; settings, SMTP and Airflow's context are imported when called.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from txmon.alerting.contract import DAY_TZ
from txmon.alerting.notify import email_now
from txmon.infra.settings import load_settings

log = logging.getLogger("txmon.airflow")


def default_args(**overrides: Any) -> dict[str, Any]:
    """Task defaults of every txmon DAG: 2 retries, 30 s then 60 s ... (capped at 10 min),
    a 30-minute execution timeout, and an email to the operator when a task fails for
    good. ``overrides`` replace any of them."""
    args: dict[str, Any] = {
        "owner": "txmon",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=30),
        "on_failure_callback": notify_operator,
    }
    args.update(overrides)
    return args


def failure_text(context: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, body) of the operator email for a failed task instance."""
    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(ti, "run_id", None) or getattr(context.get("dag_run"), "run_id", "?")
    try_number = getattr(ti, "try_number", "?")
    error = context.get("exception")
    subject = f"[txmon] Airflow task failed: {dag_id}.{task_id}"
    body = "\n".join(
        [
            f"DAG:       {dag_id}",
            f"Task:      {task_id}",
            f"Run:       {run_id}",
            f"Try:       {try_number}",
            f"Error:     {type(error).__name__ + ': ' + str(error) if error else 'see the task log'}",
            "",
            "Retries are exhausted. Look at the task log in the Airflow UI (Dags -> "
            f"{dag_id} -> the run -> {task_id} -> Logs), fix the cause and clear the task to re-run it.",
        ]
    )
    return subject, body


def notify_operator(context: Mapping[str, Any]) -> None:
    """on_failure_callback: email the operator (airflow.operator_email) through the
    project's SMTP settings. Never raises: a broken mail server must not hide the
    original failure, so a send error is logged instead."""
    subject, body = failure_text(context)
    try:
        settings = load_settings()
        ti = context.get("task_instance") or context.get("ti")
        key = (
            f"failure:{getattr(ti, 'dag_id', '')}:{getattr(ti, 'task_id', '')}:{getattr(ti, 'run_id', '')}:"
            f"{getattr(ti, 'try_number', '')}"
        )
        sent = email_now(settings.airflow.operator_email, subject, body, key=key)
        log.warning("task failure emailed to %s", ", ".join(sent))
    except Exception as exc:  # noqa: BLE001 - callback boundary: report, never mask the task's own failure
        log.error("could not email the operator about %s: %s: %s", subject, type(exc).__name__, exc)


def utc(value: Any) -> datetime | None:
    """A datetime (or ISO text / date) as a plain, aware UTC ``datetime``; a naive one is
    taken as UTC; None (or "") stays None.

    Airflow hands tasks pendulum ``DateTime`` objects. The result is always the standard
    library's class: pendulum arithmetic drops a ``datetime.timezone.utc`` tzinfo
    (``DateTime(..., tzinfo=timezone.utc) - timedelta(days=1)`` is naive), which made
    windows computed from the data interval compare naive against aware.

    >>> utc("2026-11-01").isoformat()
    '2026-11-01T00:00:00+00:00'
    >>> utc("2026-11-01T10:00:00+05:30").isoformat()
    '2026-11-01T04:30:00+00:00'
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO date or time; give e.g. 2026-11-01 or 2026-11-01T00:00:00Z"
            ) from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, date or ISO text, got {type(value).__name__}: {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    else:
        value = value.astimezone(UTC)
    return datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond, tzinfo=UTC
    )


def interval_end(context: Mapping[str, Any]) -> datetime:
    """End of the run's data interval; a manual run without one uses its run_after
    (when it was triggered), floored to the minute so retries agree."""
    end = utc(context.get("data_interval_end"))
    if end is None:
        run = context.get("dag_run")
        end = utc(getattr(run, "run_after", None)) or datetime.now(UTC)
        end = end.replace(second=0, microsecond=0)
    return end


def retraining_window(
    params: Mapping[str, Any], context: Mapping[str, Any], window_days: float
) -> tuple[str, datetime, datetime]:
    """(run_id, start, end) of one retraining: ``params.start``/``params.end`` when given,
    else the data interval's end and ``window_days`` (param, else the setting) before it. The run id names the
    window only, so any re-run (or second trigger) for the same window reuses the same
    ``<state_dir>/retraining/<run_id>/`` and stays idempotent.

    >>> rid, s, e = retraining_window({"start": "2026-10-01", "end": "2026-11-01"}, {}, 30)
    >>> rid, s.isoformat(), e.isoformat()
    ('20261001T000000Z_20261101T000000Z', '2026-10-01T00:00:00+00:00', '2026-11-01T00:00:00+00:00')
    """
    params = params or {}
    end = utc(params.get("end")) or interval_end(context)
    days = _days(params.get("window_days") or window_days)
    start = utc(params.get("start")) or end - timedelta(days=days)
    if start >= end:
        raise ValueError(f"retraining window is empty: start {start.isoformat()} is not before end {end.isoformat()}")
    return f"{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}", start, end


def _days(value: Any) -> float:
    """``window_days`` as a number; a conf typed by hand may carry it as text ("30")."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"window_days must be a number of days, e.g. 30; got {value!r}") from None


def ist_day(moment: datetime) -> date:
    """The IST calendar day of an instant (alert tables are partitioned by IST day).

    >>> ist_day(datetime(2026, 11, 22, 19, 0, tzinfo=UTC))
    datetime.date(2026, 11, 23)
    """
    return moment.astimezone(DAY_TZ).date()


def daily_due(start: datetime | None, end: datetime, hour: int, minute: int, tz: Any) -> bool:
    """Whether the interval ``(start, end]`` contains the daily moment ``hour:minute`` in
    ``tz``: a job that runs every few minutes does its daily part in exactly one run.

    >>> from datetime import timezone
    >>> t = lambda h, m: datetime(2026, 11, 22, h, m, tzinfo=timezone.utc)
    >>> daily_due(t(18, 55), t(19, 0), 0, 30, timezone(timedelta(hours=5, minutes=30)))  # 00:30 IST
    True
    >>> daily_due(t(19, 0), t(19, 5), 0, 30, timezone(timedelta(hours=5, minutes=30)))
    False
    >>> daily_due(None, t(19, 0), 0, 30, timezone.utc)
    False
    """
    if start is None:
        return False
    local_end = end.astimezone(tz)
    due = local_end.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if due > local_end:
        due -= timedelta(days=1)
    return start < due <= end
