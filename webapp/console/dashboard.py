"""What the dashboard shows, read from Cassandra (and the stream's heartbeat file).

Volume, alert rate, decision mix and model versions come from one paged scan of
``scored_transactions`` over the chosen hours: no table counts transactions per hour
yet, so this is the page's cost at scale (docs/console.md). Rules from
``alerts_by_day``, dead letters per Kafka partition of the stream's topic, workload from
the console's case state, drift events from ``drift_events``, frauds caught from
``labels`` joined to the decisions.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from txmon.alerting.store import AlertStore
from txmon.webapp.console import charts
from txmon.webapp.console.store import ConsoleStore

SCAN_FETCH = 5000


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

    session = alerts.session
    since = now - timedelta(hours=hours)
    scan = session.execute(
        session.prepare("SELECT txn_id, event_time, decision, model_version FROM scored_transactions"), timeout=120
    )
    scan.paging_state  # noqa: B018 - pages are fetched as the loop below goes
    rows = []
    decision_of: dict[str, str] = {}
    for r in scan:
        decision_of[r.txn_id] = r.decision
        t = _utc(r.event_time)
        if t is not None and since <= t <= now + timedelta(minutes=5):
            rows.append((t, r.decision, r.model_version))
    decisions = Counter(d for _, d, _ in rows)
    models = Counter(m for _, _, m in rows if m)
    # Buckets: about 24 over the span the data covers within the window.
    times, volume, rate = [], [], []
    if rows:
        first, last = min(t for t, _, _ in rows), max(t for t, _, _ in rows)
        step = max(timedelta(minutes=1), (last - first) / 24)
        counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for t, d, _ in rows:
            b = int((t - first) / step)
            counts[b][0] += 1
            counts[b][1] += d in ("REVIEW", "BLOCK")
        for b in range(max(counts) + 1):
            n, a = counts.get(b, [0, 0])
            times.append((first + b * step).astimezone(DAY_TZ).replace(tzinfo=None))
            volume.append(n)
            rate.append(100.0 * a / n if n else 0.0)
    # Rules of the alerts in the window.
    rules: Counter = Counter()
    day, end = since.astimezone(DAY_TZ).date(), now.astimezone(DAY_TZ).date()
    while day <= end:
        for r in alerts.alerts_for_day(day):
            if r["event_time"] and r["event_time"] >= since:
                rules.update(r["reason_codes"] or [])
        day += timedelta(days=1)
    dead: Counter[str] = Counter()
    dl = session.prepare("SELECT reason FROM dead_letters WHERE topic = ? AND kafka_partition = ?")
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
            session.prepare(
                "SELECT part, signal, detected_at, mean_before, mean_after, model_version, notified "
                "FROM drift_events WHERE stream = ? LIMIT 200"
            ),
            (topic,),
        )
    ]
    drift.sort(key=lambda d: d["detected_at"] or now, reverse=True)
    caught = _caught(session, decision_of)
    d = Dashboard(
        hours,
        len(rows),
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
            "per bucket",
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


def _caught(session, decision_of: dict[str, str]) -> list[dict[str, Any]]:
    """Per fraud scenario of the labels received: how many the stream flagged."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in session.execute("SELECT txn_id, is_fraud, scenario FROM labels", timeout=60):
        if not r.is_fraud or r.txn_id not in decision_of:
            continue
        per[r.scenario or "unknown"][0] += 1
        per[r.scenario or "unknown"][1] += decision_of[r.txn_id] in ("REVIEW", "BLOCK")
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
