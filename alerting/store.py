"""Cassandra behind the alerting package: alerts, the delivery log, failures awaiting
retry, throttle windows, customer contacts. Every statement is prepared once.

The tables are defined in infra/schema.cql ("Alerting"). Writes are
synchronous on purpose: the dispatcher commits a Kafka offset only after they return.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, overload

from txmon.alerting.contract import (
    Alert,
    alert_from_row,
    alert_party_rows,
    alert_rank_row,
    alert_row,
    upgrade_day_row,
)
from txmon.alerting.errors import AlertStoreUnavailableError
from txmon.alerting.routing import Contact
from txmon.infra import statements as cql
from txmon.infra.cassandra_schema import connect
from txmon.infra.statements import ALERT_BY_DAY_COLUMNS, ALERT_COLUMNS


@dataclass(frozen=True)
class Attempt:
    """One row of alert_deliveries."""

    delivery_id: uuid.UUID
    channel: str
    recipient_key: str
    attempt: int
    kind: str
    route: str
    recipient_masked: str
    status: str
    provider_response: str
    at: datetime


@dataclass(frozen=True)
class Failure:
    """One row of alert_delivery_failures."""

    day: date
    delivery_id: uuid.UUID
    channel: str
    recipient_key: str
    kind: str
    recipient_masked: str
    last_response: str
    failed_at: datetime


@dataclass
class WindowRow:
    throttle_key: str
    window_start: datetime
    window_end: datetime
    lead_alert_id: uuid.UUID
    channel: str
    recipient_key: str
    rule_code: str


@overload
def _utc(t: datetime) -> datetime: ...
@overload
def _utc(t: None) -> None: ...
def _utc(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def _date(value: Any) -> date:
    """The driver returns cassandra.util.Date for `date` columns."""
    return value.date() if hasattr(value, "date") and not isinstance(value, date) else value


class AlertStore:
    """All alerting reads and writes, over one driver session bound to the keyspace."""

    def __init__(self, session: Any) -> None:
        # The Cassandra driver on first use: the statements are built without it.
        from cassandra import ConsistencyLevel

        self.session = session

        def p(statement: str) -> Any:
            # LOCAL_QUORUM both ways: an outcome counts as recorded (and the offset may be
            # committed) only once a majority of replicas has it, and reads see it.
            stmt = session.prepare(statement)
            stmt.consistency_level = ConsistencyLevel.LOCAL_QUORUM
            return stmt

        self._insert_alert = p(cql.ALERT_INSERT)
        self._insert_by_day = p(cql.ALERT_BY_DAY_INSERT)
        self._insert_by_rank = p(cql.ALERT_BY_RANK_INSERT)
        self._insert_by_party = p(cql.ALERT_BY_PARTY_INSERT)
        # Every column is read back, the written ones and the clear ones of version-1 rows
        # (upgraded by alert_from_row; per day, the account those rows were counted by).
        self._select_alert = p(cql.ALERT_GET)
        self._select_day = p(cql.ALERTS_OF_DAY)
        self._latest = p(cql.DELIVERY_LATEST)
        self._attempts = p(cql.DELIVERY_ATTEMPTS)
        self._insert_attempt = p(cql.DELIVERY_INSERT)
        self._insert_failure = p(cql.FAILURE_INSERT)
        self._delete_failure = p(cql.FAILURE_DELETE)
        self._select_failures = p(cql.FAILURES_OF_DAY)
        self._select_contact = p(cql.CONTACT_GET)
        # The one read of a clear account number on the alert path (docs/security-pii.md).
        self._select_payer = p(cql.TRANSACTION_PAYER)
        self._insert_contact = p(cql.CONTACT_INSERT)
        self._select_windows = p(cql.THROTTLE_WINDOWS)
        self._insert_window = p(cql.THROTTLE_INSERT)
        self._delete_window = p(cql.THROTTLE_DELETE)
        self._select_folds = p(cql.FOLDS)
        self._insert_fold = p(cql.FOLD_INSERT)
        self._delete_fold = p(cql.FOLD_DELETE)
        self._insert_dead = p(cql.DEAD_LETTER_INSERT)

    # ------------------------------------------------------------------ alerts
    def save_alert(self, alert: Alert) -> None:
        """Upsert into alerts, alerts_by_day and the console's alerts_by_rank and
        alerts_by_party (idempotent: keyed by alert id)."""
        row = alert_row(alert)
        self.session.execute(self._insert_alert, [row[c] for c in ALERT_COLUMNS])
        self.session.execute(self._insert_by_day, [row[c] for c in ALERT_BY_DAY_COLUMNS])
        self.index_alert(alert)

    def index_alert(self, alert: Alert) -> None:
        """Upsert the console's rows of an alert (alerts_by_rank, alerts_by_party): also
        how alerts raised before those tables existed are added (`txmon console reindex`)."""
        self.session.execute(self._insert_by_rank, alert_rank_row(alert))
        for party_row in alert_party_rows(alert):
            self.session.execute(self._insert_by_party, party_row)

    def load_alert(self, alert_id: uuid.UUID) -> Alert | None:
        row = self.session.execute(self._select_alert, (alert_id,)).one()
        return alert_from_row(row) if row is not None else None

    def load_alerts(self, alert_ids: Iterable[uuid.UUID]) -> list[Alert]:
        # lazy: cassandra (521 ms to import); the DAG processor parses this file every 30 s
        from cassandra.concurrent import execute_concurrent_with_args

        results = execute_concurrent_with_args(
            self.session, self._select_alert, [(i,) for i in alert_ids], concurrency=32, raise_on_first_error=True
        )
        return [alert_from_row(row) for ok, rows in results for row in rows]

    def alerts_for_day(self, day: date) -> list[dict[str, Any]]:
        rows = self.session.execute(self._select_day, (day,))
        return [
            upgrade_day_row(
                {
                    **r._asdict(),
                    "event_time": _utc(r.event_time),
                    "created_at": _utc(r.created_at),
                    "reason_codes": list(r.reason_codes or []),
                }
            )
            for r in rows
        ]

    # -------------------------------------------------------------- deliveries
    def latest_attempt(self, delivery_id: uuid.UUID, channel: str, recipient_key: str) -> tuple[int, str] | None:
        row = self.session.execute(self._latest, (delivery_id, channel, recipient_key)).one()
        return (row.attempt, row.status) if row is not None else None

    def record_attempt(self, a: Attempt) -> None:
        self.session.execute(
            self._insert_attempt,
            (
                a.delivery_id,
                a.channel,
                a.recipient_key,
                a.attempt,
                a.kind,
                a.route,
                a.recipient_masked,
                a.status,
                a.provider_response,
                a.at,
            ),
        )

    def attempts(self, delivery_id: uuid.UUID) -> list[Attempt]:
        return [
            Attempt(
                r.alert_id,
                r.channel,
                r.recipient_key,
                r.attempt,
                r.kind,
                r.route,
                r.recipient_masked,
                r.status,
                r.provider_response,
                _utc(r.at),
            )
            for r in self.session.execute(self._attempts, (delivery_id,))
        ]

    def add_failure(self, f: Failure) -> None:
        self.session.execute(
            self._insert_failure,
            (
                f.day,
                f.delivery_id,
                f.channel,
                f.recipient_key,
                f.kind,
                f.recipient_masked,
                f.last_response,
                f.failed_at,
            ),
        )

    def remove_failure(self, day: date, delivery_id: uuid.UUID, channel: str, recipient_key: str) -> None:
        self.session.execute(self._delete_failure, (day, delivery_id, channel, recipient_key))

    def failures(self, day: date) -> list[Failure]:
        return [
            Failure(
                _date(r.day),
                r.alert_id,
                r.channel,
                r.recipient_key,
                r.kind,
                r.recipient_masked,
                r.last_response,
                _utc(r.failed_at),
            )
            for r in self.session.execute(self._select_failures, (day,))
        ]

    # ----------------------------------------------------------------- contacts
    def contact(self, account: str) -> Contact | None:
        row = self.session.execute(self._select_contact, (account,)).one()
        return Contact(row.account, row.phone, row.email) if row is not None else None

    def payer_account(self, txn_id: str) -> str | None:
        """The clear payer account of a transaction, from ``transactions``: alerts carry it
        masked only. None when the transaction is not there (e.g. an alert made by hand)."""
        row = self.session.execute(self._select_payer, (txn_id,)).one()
        return row.payer_account if row is not None else None

    def contact_for(self, alert: Alert) -> Contact | None:
        """The contact details of the alert's payer: the account from ``transactions`` by
        txn id, then its ``customer_contacts`` row. The number stays in this call."""
        account = self.payer_account(alert.txn_id)
        return self.contact(account) if account else None

    def save_contacts(self, contacts: Sequence[tuple[str, str | None, str | None, str | None]], at: datetime) -> int:
        """Upsert (account, phone, email, name) rows; returns how many were written."""
        # lazy: cassandra (521 ms to import); the DAG processor parses this file every 30 s
        from cassandra.concurrent import execute_concurrent_with_args

        execute_concurrent_with_args(
            self.session, self._insert_contact, [(*c, at) for c in contacts], concurrency=32, raise_on_first_error=True
        )
        return len(contacts)

    # ----------------------------------------------------------------- throttle
    def load_windows(self, scope: str) -> list[WindowRow]:
        return [
            WindowRow(
                r.throttle_key,
                _utc(r.window_start),
                _utc(r.window_end),
                r.lead_alert_id,
                r.channel,
                r.recipient_key,
                r.rule_code,
            )
            for r in self.session.execute(self._select_windows, (scope,))
        ]

    def save_window(self, scope: str, w: WindowRow) -> None:
        self.session.execute(
            self._insert_window,
            (
                scope,
                w.throttle_key,
                w.window_start,
                w.window_end,
                w.lead_alert_id,
                w.channel,
                w.recipient_key,
                w.rule_code,
            ),
        )

    def delete_window(self, scope: str, throttle_key: str) -> None:
        self.session.execute(self._delete_window, (scope, throttle_key))

    def load_folds(self, scope: str) -> list[tuple[str, uuid.UUID, datetime]]:
        return [
            (r.throttle_key, r.alert_id, _utc(r.window_start))
            for r in self.session.execute(self._select_folds, (scope,))
        ]

    def add_fold(
        self, scope: str, throttle_key: str, alert_id: uuid.UUID, window_start: datetime, at: datetime
    ) -> None:
        self.session.execute(self._insert_fold, (scope, throttle_key, alert_id, window_start, at))

    def delete_folds(self, scope: str, throttle_key: str, alert_ids: Iterable[uuid.UUID]) -> None:
        for alert_id in alert_ids:
            self.session.execute(self._delete_fold, (scope, throttle_key, alert_id))

    # ------------------------------------------------------------- dead letters
    def dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        reason: str,
        detail: str,
        raw_key: str | None,
        raw_value: str,
        kafka_timestamp: datetime | None,
        at: datetime,
    ) -> None:
        self.session.execute(
            self._insert_dead, (topic, partition, offset, reason, detail, raw_key, raw_value, kafka_timestamp, at)
        )


ALERTING_TABLES = (
    "transactions",
    "alerts",
    "alerts_by_day",
    "alert_deliveries",
    "alert_delivery_failures",
    "customer_contacts",
    "alert_throttle",
    "alert_folds",
    "dead_letters",
)


def open_store(settings: Any) -> tuple[Any, AlertStore]:
    """(cluster, store) for the configured keyspace; shut the cluster down when done.

    Raises AlertStoreUnavailableError, naming the fix, when Cassandra is down or the
    alerting tables have not been created yet."""
    # lazy: cassandra (519 ms to import); the DAG processor parses this file every 30 s
    from cassandra.cluster import NoHostAvailable

    c = settings.cassandra
    try:
        cluster, session = connect(settings)
    except NoHostAvailable:
        raise AlertStoreUnavailableError(
            f"Cassandra at {c.host}:{c.port} is not reachable; start it with `txmon infra up`"
        ) from None
    keyspace = cluster.metadata.keyspaces.get(c.keyspace)
    missing = [t for t in ALERTING_TABLES if keyspace is None or t not in keyspace.tables]
    if missing:
        cluster.shutdown()
        raise AlertStoreUnavailableError(
            f"keyspace {c.keyspace} lacks table(s) {', '.join(missing)}; run `txmon infra up` to create them"
        )
    session.set_keyspace(c.keyspace)
    return cluster, AlertStore(session)
