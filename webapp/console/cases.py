"""What analysts do to a case: assign, comment, dispose, close in bulk.

Each action updates ``case_state`` and appends to the audit log; a disposition of
confirmed fraud or legitimate also becomes a label on the labels topic, exactly once per
case (:func:`publish_label`), in the labels contract (:class:`ingestion.events.LabelEvent`),
so the stream's labels query feeds the drift monitor, the payee fraud rates and retraining from the analysts' work.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from txmon.infra.errors import TxmonError
from txmon.ingestion.events import LabelEvent, validate_label
from txmon.ingestion.producer import TransactionProducer
from txmon.webapp.console.auth import allowed
from txmon.webapp.console.store import CaseState, ConsoleStore, LabelClaim

if TYPE_CHECKING:
    from txmon.alerting.store import AlertStore
    from txmon.ingestion.producer import TransactionProducer

DISPOSITIONS = {
    # disposition -> (case status after it, label is_fraud or None for no label)
    "confirmed_fraud": ("closed", True),
    "legitimate": ("closed", False),
    "escalate": ("escalated", None),
}
BULK_CLOSE = "closed"  # bulk close: closed without a disposition, so without a label
LABEL_NAMESPACE = uuid.UUID("8b0d6a8e-2f4c-5e61-9a3b-7c1d2e4f6a80")
"""uuid5 namespace of the label ids. Fixed: the label id of a case never changes."""
ANALYST_SCENARIO = "analyst"
"""The scenario a console label carries: the fraud pattern is not known, only the verdict."""
MAX_COMMENT = 2000


class ActionRefused(TxmonError):
    """The user may not do this, or the case is not in a state that allows it."""


class LabelSink(Protocol):
    def send(self, claim: LabelClaim) -> None:
        """Deliver the label and return once the broker acknowledged it; raise if it did not."""


def label_id_for(alert_id: uuid.UUID) -> uuid.UUID:
    """>>> label_id_for(uuid.UUID(int=1)) == label_id_for(uuid.UUID(int=1))
    True
    """
    return uuid.uuid5(LABEL_NAMESPACE, str(alert_id))


def _state(store: ConsoleStore, alert_id: uuid.UUID) -> CaseState:
    return store.case(alert_id) or CaseState(alert_id, "open", None, None, None, None)


def _require(role: str, permission: str) -> None:
    if not allowed(role, permission):  # type: ignore[arg-type]
        raise ActionRefused(f"the {role} role may not do this")


def assign(store: ConsoleStore, alert_id: uuid.UUID, actor: str, role: str, assignee: str, now: datetime) -> CaseState:
    _require(role, "work")
    if assignee != actor:
        _require(role, "assign_others")
        target = store.user(assignee)
        if target is None or target.disabled or not allowed(target.role, "work"):
            raise ActionRefused(f"{assignee!r} is not a console user who can work cases")
    state = _state(store, alert_id)
    if state.status == "closed":
        raise ActionRefused("the case is closed")
    store.put_case(alert_id, "assigned", assignee, state.disposition, now, actor)
    store.record(alert_id, actor, role, "assign", {"assignee": assignee, "from": state.assignee}, now)
    return _state(store, alert_id)


def comment(store: ConsoleStore, alert_id: uuid.UUID, actor: str, role: str, text: str, now: datetime) -> None:
    _require(role, "work")
    text = text.strip()
    if not text:
        raise ActionRefused("an empty comment was not saved")
    store.record(alert_id, actor, role, "comment", {"text": text[:MAX_COMMENT]}, now)


def dispose(
    store: ConsoleStore,
    sink: LabelSink,
    alert_id: uuid.UUID,
    txn_id: str,
    actor: str,
    role: str,
    disposition: str,
    now: datetime,
) -> CaseState:
    """Record a disposition; confirmed fraud and legitimate close the case and publish its
    label (once: a second disposition of a closed case is refused, and a label already
    claimed is never claimed again)."""
    _require(role, "work")
    if disposition not in DISPOSITIONS:
        raise ActionRefused(f"unknown disposition {disposition!r}: one of {', '.join(DISPOSITIONS)}")
    state = _state(store, alert_id)
    if state.status == "closed":
        pending = store.label(alert_id)
        if pending is not None and pending.published_at is None:  # closed, but its label never acknowledged
            publish_label(store, sink, pending, actor, role, now)
            return _state(store, alert_id)
        raise ActionRefused(f"the case is already closed ({state.disposition or 'no disposition'})")
    status, is_fraud = DISPOSITIONS[disposition]
    store.put_case(alert_id, status, state.assignee or actor, disposition, now, actor)
    store.record(alert_id, actor, role, "disposition", {"disposition": disposition}, now)
    if is_fraud is not None:
        publish_label(store, sink, _claim(alert_id, txn_id, is_fraud, now, actor), actor, role, now)
    return _state(store, alert_id)


def _claim(alert_id: uuid.UUID, txn_id: str, is_fraud: bool, at: datetime, actor: str) -> LabelClaim:
    """The one label a case's disposition makes (its id fixed by the alert)."""
    return LabelClaim(
        alert_id, label_id_for(alert_id), txn_id, is_fraud, ANALYST_SCENARIO if is_fraud else None, at, actor, None
    )


def publish_label(
    store: ConsoleStore, sink: LabelSink, claim: LabelClaim, actor: str, role: str, now: datetime
) -> LabelClaim:
    """Claim the case's label, send it, mark it published. A claim someone else made and
    already published is left alone; one claimed but never acknowledged (the process died,
    Kafka was away) is sent again - the Kafka key is the txn_id and every consumer keys
    labels by it, so a resend after an unseen acknowledgement does not count twice."""
    _, current = store.claim_label(claim)
    if current.published_at is not None:
        return current
    sink.send(current)
    store.mark_published(current.alert_id, now)
    store.record(
        current.alert_id,
        actor,
        role,
        "label_published",
        {"label_id": str(current.label_id), "is_fraud": current.is_fraud},
        now,
    )
    return store.label(current.alert_id) or current


def pending_labels(
    store: ConsoleStore, alerts: AlertStore, since: datetime, until: datetime, limit: int
) -> tuple[list[LabelClaim], bool]:
    """The labels of the cases disposed (confirmed fraud or legitimate) from ``since`` to
    ``until`` that Kafka never acknowledged: at most ``limit``, newest disposition first,
    and whether at least one more is waiting. Found through the audit log, a hundred
    dispositions at a time, so the read stops once ``limit`` + 1 are found. A disposition
    with no claim at all (the process stopped between recording it and claiming its
    label) gets the claim :func:`dispose` would have made, from the audit row."""
    found: dict[uuid.UUID, LabelClaim] = {}
    for chunk in store.dispositions(since, until):
        claims = store.labels_of([a.alert_id for a in chunk])
        for action in chunk:
            is_fraud = DISPOSITIONS.get(str(action.detail.get("disposition")), ("", None))[1]
            if is_fraud is None or action.alert_id in found:
                continue
            claim = claims.get(action.alert_id)
            if claim is None:
                alert = alerts.load_alert(action.alert_id)
                if alert is None:
                    continue
                claim = _claim(action.alert_id, alert.txn_id, is_fraud, action.at, action.actor)
            if claim.published_at is None:
                found[action.alert_id] = claim
        if len(found) > limit:
            break
    pending = sorted(found.values(), key=lambda c: c.label_time, reverse=True)
    return pending[:limit], len(pending) > limit


def bulk_close(store: ConsoleStore, alert_ids: list[uuid.UUID], actor: str, role: str, now: datetime) -> int:
    """Close cases without a disposition (no label: nobody judged them one by one)."""
    _require(role, "bulk_close")
    closed = 0
    for alert_id in alert_ids:
        state = _state(store, alert_id)
        if state.status == "closed":
            continue
        store.put_case(alert_id, BULK_CLOSE, state.assignee, state.disposition, now, actor)
        store.record(alert_id, actor, role, "bulk_close", {"count": len(alert_ids)}, now)
        closed += 1
    return closed


class KafkaLabelSink:
    """Labels to the labels topic through the project's producer (acks=all, idempotent),
    one producer per process, created on first use."""

    def __init__(self, settings, labels_topic: str | None = None) -> None:
        self.settings = settings
        self.labels_topic = labels_topic or settings.kafka.topics.labels
        self._producer: TransactionProducer | None = None
        self._lock = threading.Lock()

    def send(self, claim: LabelClaim) -> None:
        label = LabelEvent(
            txn_id=claim.txn_id,
            is_fraud=claim.is_fraud,
            scenario=claim.scenario,
            label_time=claim.label_time.astimezone(UTC),
        )
        value = label.model_dump_json().encode()
        validate_label(value)  # what the stream's labels query will check, checked before sending
        with self._lock:
            producer = self._producer
            if producer is None:
                producer = self._producer = TransactionProducer(
                    self.settings, labels_topic=self.labels_topic, linger_ms=0, compression=None, max_block_ms=30_000
                )
            failed = producer.summary.failed
            producer.send_label(claim.txn_id.encode(), value)
            producer.flush(timeout=30)
            if producer.summary.failed != failed or producer._pending:
                raise TxmonError(
                    "the labels topic did not acknowledge the label; it stays claimed and is "
                    "sent again by the next disposition attempt or `txmon console labels resend`"
                )

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=10)
                self._producer = None
