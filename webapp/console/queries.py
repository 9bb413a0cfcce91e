"""The console's reads: the alert queue and the case view, assembled from the alert
tables (through alerting.store), the transaction tables, the account windows
(infra.readback) and the console's own case state and audit log.

The queue reads ``alerts_by_day`` one IST day partition at a time over the chosen range;
the page's rows are then completed from ``alerts`` by id. Masking for viewers happens in
:func:`present`, one place, with infra.masking.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from txmon.alerting.contract import DAY_TZ
from txmon.alerting.store import AlertStore
from txmon.models.risk import ALERT_DECISIONS, SEVERITIES
from txmon.webapp.console.store import CaseState, ConsoleStore

STATUSES = ("open", "assigned", "escalated", "closed")
ACTIVE = ("open", "assigned", "escalated")
PAGE_SIZE = 25
MAX_DAYS = 31
PAYEE_SCAN = 100  # alerts nearest in time searched for the same payee on a case page
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class QueueFilter:
    """What the analyst asked the queue for; every field comes from the query string."""

    status: str = "active"  # one of STATUSES, "active" (not closed) or "all"
    severity: str = ""
    decision: str = ""
    rule: str = ""
    channel: str = ""
    day_from: date | None = None
    day_to: date | None = None
    page: int = 1

    @classmethod
    def parse(cls, params: dict[str, str], today: date) -> QueueFilter:
        def day(name: str) -> date | None:
            try:
                return date.fromisoformat(params[name]) if params.get(name) else None
            except ValueError:
                return None

        status = params.get("status", "active")
        status = status if status in (*STATUSES, "active", "all") else "active"
        severity = params.get("severity", "")
        decision = params.get("decision", "")
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        to = day("to") or today
        frm = day("from") or to - timedelta(days=6)
        if frm > to:
            frm, to = to, frm
        frm = max(frm, to - timedelta(days=MAX_DAYS - 1))
        return cls(
            status,
            severity if severity in SEVERITIES else "",
            decision if decision in ALERT_DECISIONS else "",
            params.get("rule", "").strip()[:64],
            params.get("channel", "").strip()[:16],
            frm,
            to,
            page,
        )

    def days(self) -> list[date]:
        assert self.day_from is not None and self.day_to is not None
        n = (self.day_to - self.day_from).days + 1
        return [self.day_from + timedelta(days=i) for i in range(n)]

    def query(self, **changes: Any) -> str:
        """The query string of this filter with some fields changed (pager, polling)."""
        from urllib.parse import urlencode

        values = {
            "status": self.status,
            "severity": self.severity,
            "decision": self.decision,
            "rule": self.rule,
            "channel": self.channel,
            "from": self.day_from.isoformat() if self.day_from else "",
            "to": self.day_to.isoformat() if self.day_to else "",
            "page": self.page,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


@dataclass
class QueuePage:
    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    newest_created: datetime | None
    rules: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)


def today_ist(now: datetime) -> date:
    return now.astimezone(DAY_TZ).date()


def _status_ok(state: CaseState | None, wanted: str) -> bool:
    status = state.status if state else "open"
    return wanted == "all" or (status in ACTIVE if wanted == "active" else status == wanted)


def alerts_for_days(alerts: AlertStore, days: list[date]) -> list[dict[str, Any]]:
    """The ``alerts_by_day`` rows of several days, the day partitions read at once (the
    driver is thread-safe; one after another, their round trips added up)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(days)))) as pool:
        return [row for rows in pool.map(alerts.alerts_for_day, days) for row in rows]


def queue(alerts: AlertStore, console: ConsoleStore, f: QueueFilter) -> QueuePage:
    """One page of the queue: matching alerts, highest risk first (then newest)."""
    day_rows = alerts_for_days(alerts, f.days())
    cases = console.cases()
    rules = sorted({code for r in day_rows for code in (r["reason_codes"] or [])})
    matching = [
        r
        for r in day_rows
        if (r["decision"] in ALERT_DECISIONS)
        and (not f.decision or r["decision"] == f.decision)
        and (not f.severity or r["severity"] == f.severity)
        and (not f.rule or f.rule in (r["reason_codes"] or []))
        and _status_ok(cases.get(r["alert_id"]), f.status)
    ]
    full: dict[uuid.UUID, Any] = {}
    if f.channel:  # channel is not in alerts_by_day: read the candidates' alert rows
        full = {a.alert_id: a for a in alerts.load_alerts([r["alert_id"] for r in matching])}
        matching = [r for r in matching if r["alert_id"] in full and full[r["alert_id"]].channel == f.channel]
    matching.sort(
        key=lambda r: (
            -(r["risk_score"] or 0),
            -SEVERITY_RANK.get(r["severity"], 0),
            -(r["event_time"] or datetime.min.replace(tzinfo=UTC)).timestamp(),
        )
    )
    pages = max(1, -(-len(matching) // PAGE_SIZE))
    page = min(f.page, pages)
    chosen = matching[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    missing = [r["alert_id"] for r in chosen if r["alert_id"] not in full]
    full.update({a.alert_id: a for a in alerts.load_alerts(missing)})
    out = []
    for r in chosen:
        a = full.get(r["alert_id"])
        state = cases.get(r["alert_id"])
        out.append(
            {
                "alert_id": str(r["alert_id"]),
                "event_time": _utc(r["event_time"]),
                "risk_score": r["risk_score"],
                "decision": r["decision"],
                "severity": r["severity"],
                "amount_paise": r["amount_paise"],
                "reason_codes": list(r["reason_codes"] or []),
                "payer_masked": r.get("payer_account_masked") or "",
                "channel": a.channel if a else "",
                "txn_type": a.txn_type if a else "",
                "payee_masked": (a.payee_vpa_masked or a.payee_account_masked or "") if a else "",
                "status": state.status if state else "open",
                "assignee": state.assignee if state else None,
            }
        )
    created = [r["created_at"] for r in day_rows if r.get("created_at")]
    from txmon.ingestion.events import Channel

    return QueuePage(
        out, len(matching), page, pages, _utc(max(created)) if created else None, rules, [c.value for c in Channel]
    )


_PREPARED: dict[tuple[int, str], Any] = {}


def _prep(session: Any, cql: str) -> Any:
    """A statement prepared once per driver session (a page view must not re-prepare)."""
    key = (id(session), cql)
    if key not in _PREPARED:
        _PREPARED[key] = session.prepare(cql)
    return _PREPARED[key]


def _utc(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


@dataclass
class CaseView:
    alert: Any
    state: CaseState
    txn: dict[str, Any] | None
    scored: dict[str, Any] | None
    top_features: list[tuple[str, Any]]
    windows: dict[str, list[Any]]
    account_alerts: list[dict[str, Any]]
    payee_alerts: list[dict[str, Any]]
    actions: list[Any]
    contact: Any
    label: Any
    payee_frauds: int = 0


_TXN_COLUMNS = (
    "txn_id",
    "event_time",
    "channel",
    "txn_type",
    "payer_account",
    "payer_ifsc",
    "payer_vpa",
    "payee_account",
    "payee_ifsc",
    "payee_vpa",
    "amount_paise",
    "currency",
    "mcc",
    "device_id",
    "ip",
    "city",
    "status",
)
_SCORED_COLUMNS = (
    "risk_score",
    "decision",
    "rule_score",
    "fraud_probability",
    "anomaly_score",
    "rules_fired",
    "reasons",
    "model_version",
    "rules_version",
    "features_json",
    "payee_key",
)


def case_view(alerts: AlertStore, console: ConsoleStore, alert_id: uuid.UUID, around_days: int = 3) -> CaseView | None:
    """Everything the case page shows. Other alerts of the account and payee are looked for
    in the IST days within ``around_days`` of the alert's."""
    from txmon.alerting.contract import alert_day

    alert = alerts.load_alert(alert_id)
    if alert is None:
        return None
    session = alerts.session
    txn_row = session.execute(
        _prep(session, f"SELECT {', '.join(_TXN_COLUMNS)} FROM transactions WHERE txn_id = ?"), (alert.txn_id,)
    ).one()
    txn = txn_row._asdict() if txn_row is not None else None
    scored_row = session.execute(
        _prep(session, f"SELECT {', '.join(_SCORED_COLUMNS)} FROM scored_transactions WHERE txn_id = ?"),
        (alert.txn_id,),
    ).one()
    scored = scored_row._asdict() if scored_row is not None else None
    top: list[tuple[str, Any]] = []
    if scored and scored.get("features_json"):
        try:
            feats = json.loads(scored["features_json"])
            top = sorted(
                ((k, v) for k, v in feats.items() if isinstance(v, (int, float)) and v), key=lambda kv: -abs(kv[1])
            )[:8]
        except ValueError:
            top = []
    windows: dict[str, list[Any]] = {}
    if txn and txn.get("payer_account"):
        from txmon.infra.readback import account_windows

        since = (alert.event_time - timedelta(hours=2)).replace(tzinfo=None)
        for kind in ("tumble_5m", "slide_1h"):
            try:
                windows[kind] = account_windows(session, txn["payer_account"], kind, since=since)[:6]
            except Exception:  # noqa: BLE001 - a case without windows still shows the rest
                windows[kind] = []
    day = alert_day(alert)
    nearby = alerts_for_days(alerts, [day + timedelta(days=d) for d in range(-around_days, around_days + 1)])
    account_alerts = sorted(
        (r for r in nearby if r.get("payer_ref") == alert.payer_ref and r["alert_id"] != alert_id),
        key=lambda r: r["event_time"] or datetime.min.replace(tzinfo=UTC),
        reverse=True,
    )
    payee_alerts: list[dict[str, Any]] = []
    payee_masked = alert.payee_vpa_masked or alert.payee_account_masked
    if payee_masked and txn:
        # No table is keyed by payee: the alerts nearest in time are read whole and matched.
        when = alert.event_time
        nearest = sorted(
            (r for r in nearby if r["alert_id"] != alert_id and r.get("event_time")),
            key=lambda r: abs((r["event_time"] - when).total_seconds()),
        )[:PAYEE_SCAN]
        others = [
            a
            for a in alerts.load_alerts([r["alert_id"] for r in nearest])
            if (a.payee_vpa_masked or a.payee_account_masked) == payee_masked
        ]
        # Masked forms can collide: keep those whose transaction names the same payee.
        same = _same_payee(session, [a.txn_id for a in others], txn.get("payee_vpa"), txn.get("payee_account"))
        payee_alerts = [
            {
                "alert_id": a.alert_id,
                "event_time": a.event_time,
                "risk_score": a.risk_score,
                "decision": a.decision,
                "severity": a.severity,
                "amount_paise": a.amount_paise,
                "payer_account_masked": a.payer_account_masked,
                "reason_codes": a.reason_codes,
            }
            for a in others
            if a.txn_id in same
        ]
    payee_frauds = 0
    if scored and scored.get("payee_key"):
        payee_frauds = len(
            list(
                session.execute(
                    _prep(session, "SELECT txn_id FROM payee_fraud_labels WHERE payee_key = ?"), (scored["payee_key"],)
                )
            )
        )
    contact = alerts.contact(txn["payer_account"]) if txn and txn.get("payer_account") else None
    state = console.case(alert_id) or CaseState(alert_id, "open", None, None, None, None)
    return CaseView(
        alert,
        state,
        txn,
        scored,
        top,
        windows,
        account_alerts[:20],
        payee_alerts[:20],
        console.actions(alert_id),
        contact,
        console.label(alert_id),
        payee_frauds,
    )


def _same_payee(session, txn_ids: list[str], vpa: str | None, account: str | None) -> set[str]:
    if not txn_ids:
        return set()
    from cassandra.concurrent import execute_concurrent_with_args

    stmt = _prep(session, "SELECT txn_id, payee_vpa, payee_account FROM transactions WHERE txn_id = ?")
    out = set()
    for ok, rows in execute_concurrent_with_args(session, stmt, [(t,) for t in txn_ids], concurrency=32):
        if not ok:
            continue
        for r in rows:
            if (vpa and r.payee_vpa == vpa) or (account and r.payee_account == account):
                out.add(r.txn_id)
    return out


def present(value: str | None, kind: str, clear: bool) -> str:
    """An identifier as this user may see it: clear for roles allowed to, else masked
    with infra.masking (kind: account | vpa | phone | email)."""
    from txmon.infra import masking

    if value is None:
        return ""
    if clear:
        return value
    maskers: dict[str, Callable[[str], str]] = {
        "account": masking.mask_account,
        "vpa": masking.mask_vpa,
        "phone": masking.mask_phone,
        "email": masking.mask_email,
    }
    return maskers[kind](value)
