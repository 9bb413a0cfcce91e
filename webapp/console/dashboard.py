"""What the dashboard shows, read from Cassandra (and the stream's heartbeat file).

Volume, alert rate, decision mix, model versions and the rules of the alerts come from
the stream's counts per IST hour (``console_hourly``, infra/hourly_counts.py): a few
small rows per hour, whatever the traffic. Dead letters from the newest of each Kafka
partition of the stream's topic, workload from the console's case state, drift events
from ``drift_events``, frauds caught from the labels' days (``fraud_labels_by_day``,
infra/fraud_label_days.py). Every read is bounded; a view that hit its bound says so.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from txmon.alerting.contract import DAY_TZ
from txmon.alerting.store import AlertStore
from txmon.infra import fraud_label_days, hourly_counts
from txmon.infra import statements as cql
from txmon.infra.cassandra_schema import prepared
from txmon.infra.readback import end_offsets_reader
from txmon.webapp.console import charts
from txmon.webapp.console.queries import READS
from txmon.webapp.console.store import ConsoleStore


@dataclass
class Dashboard:
    hours: int
    total: int
    alerts: int
    decisions: dict[str, int]
    models: dict[str, int]
    rules: list[tuple[str, int]]
    dead_letters: dict[str, int]  # in the window, by reason
    workload: list[dict[str, Any]]
    drift: list[dict[str, Any]]
    caught: list[dict[str, Any]]
    stream: dict[str, Any]
    charts: dict[str, str] = field(default_factory=dict)
    workload_partial: bool = False  # the window held more actions than WORKLOAD_ACTIONS
    caught_partial: bool = False  # more unscored fraud labels than UNSCORED_CHECKS: flagged is a lower bound
    caught_days: tuple[Any, Any] | None = None  # the IST days the fraud labels were received on
    dead_partial: bool = False  # a partition held more dead letters in the window than DEAD_LETTERS_READ


def _utc(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def build(alerts: AlertStore, console: ConsoleStore, settings: Any, topic: str, hours: int, now: datetime) -> Dashboard:
    session = alerts.session
    since = now - timedelta(hours=hours)
    # The frauds caught (three dependent round trips: day counts, the unscored rows they
    # name, those rows' decisions) and the workload (audit rows, then their cases) are
    # chains, and the dead letters and the stream's lag (Kafka's end offsets) reads that
    # block: each runs on its own thread while this one reads the hourly counts, so the
    # page waits for the longest of them rather than for every round trip in turn.
    caught_read = READS.submit(fraud_label_days.read, session, prepared, since, now)
    workload_read = READS.submit(_workload, console, since, now)
    dead_read = READS.submit(dead_letters, session, topic, settings.kafka.partitions, since)
    stream_read = READS.submit(_stream, settings, topic, now)
    drift_read = session.execute_async(prepared(session, cql.DRIFT_EVENTS_RECENT), (topic,))
    # Whole IST hours: the one holding ``since`` to the one holding now (a few minutes of
    # clock skew past now included, as the stream may stamp slightly ahead).
    per_hour = hourly_counts.read_hours(session, prepared, since, now + timedelta(minutes=5))
    decisions: Counter[str] = Counter()
    models: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    times, volume, rate = [], [], []
    for hour, c in per_hour.items():
        decisions.update(c["decisions"])
        models.update(c["models"])
        rules.update(c["rules"])
        times.append(hour.astimezone(DAY_TZ).replace(tzinfo=None))
        volume.append(c["transactions"])
        rate.append(100.0 * c["alerts"] / c["transactions"] if c["transactions"] else 0.0)
    total = sum(volume)
    decisions.pop("", None)
    dead, dead_partial = dead_read.result()
    stream = stream_read.result()
    drift = [
        {
            "detected_at": _utc(r.detected_at),
            "part": r.part,
            "signal": r.signal,
            "mean_before": r.mean_before,
            "mean_after": r.mean_after,
            "model_version": r.model_version,
            "notified": r.notified,
        }
        for r in drift_read.result()
    ]
    drift.sort(key=lambda d: d["detected_at"] or now, reverse=True)
    workload, workload_partial = workload_read.result()
    caught = caught_read.result()
    d = Dashboard(
        hours,
        total,
        decisions["REVIEW"] + decisions["BLOCK"],
        dict(decisions),
        dict(models),
        rules.most_common(10),
        dict(dead.most_common()),
        workload,
        drift[:10],
        caught.rows,
        stream,
        workload_partial=workload_partial,
        caught_partial=caught.partial,
        caught_days=caught.days,
        dead_partial=dead_partial,
    )
    d.charts = {
        "volume": charts.series(
            "Transactions and alert rate (IST)",
            times,
            {"transactions": volume},
            "per hour",
            secondary=("alert rate %", rate),
        ),
        "decisions": charts.bars("Decision mix", list(decisions), list(decisions.values()), "transactions"),
        "rules": charts.bars("Top rules in alerts", [k for k, _ in d.rules], [v for _, v in d.rules], "alerts"),
        "dead_letters": charts.bars(
            "Dead letters by reason", list(d.dead_letters), list(d.dead_letters.values()), "records"
        ),
        "workload": charts.stacked(
            "Analyst workload",
            [w["analyst"] for w in workload],
            {"open": [w["open"] for w in workload], "closed": [w["closed"] for w in workload]},
        ),
    }
    return d


WORKLOAD_ACTIONS = 5_000
"""Audit rows a dashboard reads for the workload: the window's newest (its cost follows
this, not the actions ever logged)."""
DEAD_LETTERS_READ = 500
"""Dead letters a dashboard reads per Kafka partition, newest first."""


def _workload(console: ConsoleStore, since: datetime, now: datetime) -> tuple[list[dict[str, Any]], bool]:
    """Per analyst, the cases worked in the window (from the audit log's newest
    :data:`WORKLOAD_ACTIONS` rows of it) as they stand now: open (not closed), closed in
    the window, and the median minutes from first opening to disposition; and whether
    the window held more actions than were read."""
    actions, partial = console.audit_between(since, now, WORKLOAD_ACTIONS)
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"open": 0, "closed": 0, "minutes": []})
    for c in console.cases_of(a.alert_id for a in actions).values():
        who = c.assignee or c.updated_by or "-"
        if c.status == "closed":
            if c.updated_at is not None and c.updated_at < since:
                continue  # closed before the window, touched since (a comment): not this window's
            per[who]["closed"] += 1
            if c.disposition and c.opened_at and c.updated_at:
                per[who]["minutes"].append((c.updated_at - c.opened_at).total_seconds() / 60)
        else:
            per[who]["open"] += 1
    return [
        {
            "analyst": k,
            "open": v["open"],
            "closed": v["closed"],
            "median_minutes": statistics.median(v["minutes"]) if v["minutes"] else None,
        }
        for k, v in sorted(per.items())
    ], partial


def dead_letters(
    session: Any, topic: str, partitions: int, since: datetime, limit: int = DEAD_LETTERS_READ
) -> tuple[Counter[str], bool]:
    """Dead letters of ``topic`` that landed since ``since``, by reason, from the newest
    ``limit`` of each partition (a partition lands them in offset order, so its newest
    offsets are its latest); and whether a partition's window went past what was read,
    so that the counts are a lower bound."""
    stmt = prepared(session, cql.DEAD_LETTERS_NEWEST)
    futures = [session.execute_async(stmt, (topic, p, limit)) for p in range(partitions)]
    lo = since.astimezone(UTC).replace(tzinfo=None)  # the driver gives naive UTC
    dead: Counter[str] = Counter()
    partial = False
    for future in futures:
        rows = list(future.result())
        dead.update(r.reason for r in rows if r.landed_at is not None and r.landed_at >= lo)
        oldest = rows[-1].landed_at if rows else None
        partial |= len(rows) >= limit and oldest is not None and oldest >= lo
    return dead, partial


STREAM_STATES = {
    "live": "running",
    "waiting": "waiting out an outage",
    "stopped": "stopped",
    "stale": "stale",
    "none": "not running here",
}
"""The stream's state on the dashboard (``data-state``) and its words."""


def _stream(settings: Any, topic: str, now: datetime) -> dict[str, Any]:
    """The streaming job's state from its heartbeat file (spark_jobs/heartbeat.py, which
    this module does not import: it loads pyspark) and how far it is behind Kafka."""
    path = settings.state_path / "stream" / "heartbeat.json"
    try:
        beat = json.loads(path.read_text())
    except (OSError, ValueError):
        beat = None
    return stream_status(
        beat,
        topic,
        now,
        settings.airflow.stream_stall_after_s,
        end_offsets_reader(settings.kafka.bootstrap),
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _instant(value: Any) -> datetime | None:
    """An ISO instant from the heartbeat (naive read as UTC); None if absent or unreadable."""
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) and value else None
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def stream_status(
    beat: dict[str, Any] | None,
    topic: str,
    now: datetime,
    stall_s: float,
    end_offsets: Callable[[str], dict[int, int]],
) -> dict[str, Any]:
    """The stream as the dashboard shows it: ``state`` (a key of :data:`STREAM_STATES`),
    ``reason`` in words, the ingest query's ``status``, ``lag`` (records of ``topic`` in
    Kafka past what it processed; None when unknown), ``last_progress_at`` and the
    heartbeat's age in seconds.

    Stale is judged as the stream supervisor judges a stall (spark_jobs/supervisor.py),
    with the same limit (``airflow.stream_stall_after_s``): no heartbeat written for that
    long, or the ingest query made no progress for that long while Kafka holds records
    it has not read. A heartbeat alone says nothing of a job that died without a word,
    so its age is checked before anything it says."""
    if not isinstance(beat, dict):
        return {
            "state": "none",
            "reason": "no heartbeat",
            "status": None,
            "lag": None,
            "last_progress_at": None,
            "age_s": None,
        }
    queries = [q for q in _dict(beat.get("queries")).values() if isinstance(q, dict)]
    # The ingest query is the one reading the topic (the labels query reads another).
    ingest = next((q for q in queries if topic in _dict(q.get("end_offsets"))), queries[0] if queries else {})
    written = _instant(beat.get("written_at"))
    age = (now - written).total_seconds() if written else None
    progress = _instant(ingest.get("last_progress_at"))
    lag = None
    done = _dict(ingest.get("end_offsets")).get(topic)
    if isinstance(done, dict):
        try:
            end = end_offsets(topic)
            # A partition the query has not read yet counts from its start.
            lag = sum(max(0, off - int(done.get(str(p), 0))) for p, off in end.items())
        except Exception:  # noqa: BLE001 - Kafka away (or a foreign offset): the page shows the rest
            lag = None
    status = ingest.get("status") if isinstance(ingest.get("status"), str) else None
    recovery = _dict(beat.get("recovery"))
    if age is None or age > stall_s:
        state = "stale"
        reason = "no heartbeat ever written" if age is None else f"no heartbeat for {age:.0f} s (limit {stall_s:.0f} s)"
    elif status == "terminated":
        # A failed query's exception is a whole JVM stack trace: its first line says what.
        error = str(ingest.get("exception") or "").strip().splitlines()
        state, reason = "stopped", "its queries ended" + (f": {error[0][:200]}" if error else "")
    elif recovery.get("state") == "waiting":
        state, reason = "waiting", f"since {recovery.get('since')}: {recovery.get('last_error')}"
    elif lag and (progress is None or (now - progress).total_seconds() > stall_s):
        idle = "never" if progress is None else f"for {(now - progress).total_seconds():.0f} s"
        state, reason = "stale", f"no progress {idle} while Kafka holds {lag} unread records"
    else:
        state, reason = "live", f"heartbeat {age:.0f} s ago"
    return {
        "state": state,
        "reason": reason,
        "status": status,
        "lag": lag,
        "last_progress_at": progress,
        "age_s": age,
    }
