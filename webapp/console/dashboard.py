"""What the dashboard shows, read from Cassandra (and the stream's heartbeat file).

Volume, alert rate, decision mix, model versions and the rules of the alerts come from
the stream's counts per IST hour (``console_hourly``, infra/hourly_counts.py): a few
small rows per hour, whatever the traffic. Dead letters per Kafka partition of the
stream's topic, workload from the console's case state, drift events from
``drift_events``, frauds caught from ``labels`` joined to their decisions.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from txmon.alerting.store import AlertStore
from txmon.infra import statements as cql
from txmon.webapp.console import charts
from txmon.webapp.console.store import ConsoleStore


@dataclass
class Dashboard:
    hours: int
    total: int
    alerts: int
    decisions: dict[str, int]
    models: dict[str, int]
    rules: list[tuple[str, int]]
    dead_letters: dict[str, int]
    workload: list[dict[str, Any]]
    drift: list[dict[str, Any]]
    caught: list[dict[str, Any]]
    stream: dict[str, Any]
    charts: dict[str, str] = field(default_factory=dict)


def _utc(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def build(alerts: AlertStore, console: ConsoleStore, settings: Any, topic: str, hours: int, now: datetime) -> Dashboard:
    from txmon.alerting.contract import DAY_TZ
    from txmon.infra import hourly_counts
    from txmon.webapp.console.queries import _prep

    session = alerts.session
    since = now - timedelta(hours=hours)
    # Whole IST hours: the one holding ``since`` to the one holding now (a few minutes of
    # clock skew past now included, as the stream may stamp slightly ahead).
    per_hour = hourly_counts.read_hours(session, _prep, since, now + timedelta(minutes=5))
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
    dead: Counter[str] = Counter()
    dl = _prep(session, cql.DEAD_LETTER_REASONS)
    for p in range(settings.kafka.partitions):
        dead.update(r.reason for r in session.execute(dl, (topic, p)))
    workload = _workload(console)
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
        for r in session.execute(
            _prep(session, cql.DRIFT_EVENTS_RECENT),
            (topic,),
        )
    ]
    drift.sort(key=lambda d: d["detected_at"] or now, reverse=True)
    caught = _caught(session)
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
        caught,
        _stream(settings, topic),
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


def _workload(console: ConsoleStore) -> list[dict[str, Any]]:
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"open": 0, "closed": 0, "minutes": []})
    for c in console.cases().values():
        who = c.assignee or c.updated_by or "-"
        if c.status == "closed":
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
    ]


def _caught(session) -> list[dict[str, Any]]:
    """Per fraud scenario of the labels received: how many the stream flagged (each
    fraud's decision read by txn id: the cost follows the labelled frauds)."""
    from cassandra.concurrent import execute_concurrent_with_args

    from txmon.webapp.console.queries import _prep

    frauds = [(r.txn_id, r.scenario or "unknown") for r in session.execute(cql.LABELS, timeout=60) if r.is_fraud]
    stmt = _prep(session, cql.SCORED_DECISION)
    results = execute_concurrent_with_args(session, stmt, [(t,) for t, _ in frauds], concurrency=64)
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (_txn, scenario), (ok, rows) in zip(frauds, results):
        row = rows.one() if ok else None
        if row is None:
            continue  # a label for a transaction this keyspace never scored
        per[scenario][0] += 1
        per[scenario][1] += row.decision in ("REVIEW", "BLOCK")
    return [
        {"scenario": k, "frauds": n, "flagged": c, "share": c / n if n else 0.0}
        for k, (n, c) in sorted(per.items(), key=lambda kv: -kv[1][0])
    ]


def _stream(settings: Any, topic: str) -> dict[str, Any]:
    """The streaming job's heartbeat (status, last progress) and how far it is behind
    Kafka, if it wrote one."""
    path = settings.state_path / "stream" / "heartbeat.json"
    try:
        beat = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {"status": "no heartbeat (stream not running here)", "lag": None, "last_progress_at": None}
    ingest: dict[str, Any] = next(iter(beat.get("queries", {}).values()), {})
    lag = None
    done = (ingest.get("end_offsets") or {}).get(topic)
    if done:
        try:
            from txmon.infra.readback import kafka_end_offsets

            end = kafka_end_offsets(settings.kafka.bootstrap, topic)
            lag = sum(max(0, end.get(int(p), 0) - int(o)) for p, o in done.items())
        except Exception:  # noqa: BLE001 - Kafka away: the page shows the rest
            lag = None
    return {"status": ingest.get("status", "unknown"), "lag": lag, "last_progress_at": ingest.get("last_progress_at")}
