"""Cassandra behind the console: users, sessions, case state, the audit log and the
label claims. Every statement is prepared once; the tables are at the end of
infra/schema.cql. Alerts themselves are read through :class:`alerting.store.AlertStore`,
the one owner of the alert tables.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, overload

from cassandra import ConsistencyLevel
from cassandra.util import datetime_from_uuid1

from txmon.infra import statements as cql
from txmon.infra.cassandra_schema import rows_in

ROLES = ("viewer", "analyst", "supervisor", "admin")
"""Console roles, least to most allowed (webapp.console.auth decides what each may do)."""

CONSOLE_TABLES = ("console_users", "console_sessions", "case_state", "case_actions", "console_audit", "case_labels")


@overload
def _utc(t: datetime) -> datetime: ...
@overload
def _utc(t: None) -> None: ...
def _utc(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


_UNIX = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)  # a version-1 UUID counts 100-ns intervals: 10 a microsecond
_UUID_EPOCH = 0x01B21DD213814000  # 100-ns intervals from 1582-10-15 (the UUID epoch) to 1970-01-01


def timeuuid(ticks: int) -> uuid.UUID:
    """The version-1 (time) UUID of ``ticks`` 100-ns intervals after the Unix epoch, with a
    random clock sequence and node, built with integers so one tick apart stays apart.

    >>> u = timeuuid(17_000_000_000_000_001)
    >>> u.version, u.variant == uuid.RFC_4122, u.time - 0x01B21DD213814000
    (1, True, 17000000000000001)
    """

    t = ticks + _UUID_EPOCH
    clock_seq = secrets.randbits(14)
    node = secrets.randbits(48) | 0x010000000000  # the multicast bit: no real network card's address
    return uuid.UUID(
        fields=(
            t & 0xFFFFFFFF,
            (t >> 32) & 0xFFFF,
            ((t >> 48) & 0x0FFF) | 0x1000,
            0x80 | (clock_seq >> 8),
            clock_seq & 0xFF,
            node,
        )
    )


def token_hash(token: str) -> str:
    """What the sessions table keys a cookie token by (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    username: str
    role: str
    password_hash: str
    disabled: bool


@dataclass(frozen=True)
class Session:
    username: str
    role: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class CaseState:
    alert_id: uuid.UUID
    status: str
    assignee: str | None
    disposition: str | None
    updated_at: datetime | None
    updated_by: str | None
    opened_at: datetime | None = None


@dataclass(frozen=True)
class Action:
    alert_id: uuid.UUID
    at: datetime
    actor: str
    role: str
    action: str
    detail: dict[str, Any]
    stamp: uuid.UUID | None = None  # the row's timeuuid: where an older page of history starts


@dataclass(frozen=True)
class LabelClaim:
    alert_id: uuid.UUID
    label_id: uuid.UUID
    txn_id: str
    is_fraud: bool
    scenario: str | None
    label_time: datetime
    claimed_by: str
    published_at: datetime | None


class ConsoleStore:
    """All console reads and writes over one driver session bound to the keyspace."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self._stamp_lock = threading.Lock()
        self._last_tick = 0

        def p(statement: str, serial: bool = False) -> Any:
            stmt = session.prepare(statement)
            # A majority both ways: an action is recorded once most replicas have it, and
            # the next page read by another analyst sees it.
            stmt.consistency_level = ConsistencyLevel.LOCAL_QUORUM
            if serial:
                stmt.serial_consistency_level = ConsistencyLevel.LOCAL_SERIAL
            return stmt

        self._user = p(cql.USER_GET)
        self._users = p(cql.USERS)
        self._put_user = p(cql.USER_INSERT)
        self._set_disabled = p(cql.USER_SET_DISABLED)
        self._put_session = p(cql.SESSION_INSERT)
        self._session = p(cql.SESSION_GET)
        self._drop_session = p(cql.SESSION_DELETE)
        self._case = p(cql.CASE_GET)
        self._cases_in = p(cql.CASES_IN)
        self._put_case = p(cql.CASE_UPDATE)
        self._open_case = p(cql.CASE_OPEN)
        self._add_action = p(cql.CASE_ACTION_INSERT)
        self._add_audit = p(cql.AUDIT_INSERT)
        self._actions = p(cql.CASE_ACTIONS)  # one page, newest first
        self._actions_before = p(cql.CASE_ACTIONS_BEFORE)
        self._audit_day = p(cql.AUDIT_OF_DAY)
        self._audit_between = p(cql.AUDIT_BETWEEN)
        self._claim = p(cql.CASE_LABEL_CLAIM, serial=True)
        self._label = p(cql.CASE_LABEL_GET)
        self._published = p(cql.CASE_LABEL_PUBLISHED)
        self._labels_in = p(cql.CASE_LABELS_IN)

    # ------------------------------------------------------------------ users
    def user(self, username: str) -> User | None:
        r = self.session.execute(self._user, (username,)).one()
        return User(r.username, r.role, r.password_hash, bool(r.disabled)) if r is not None else None

    def users(self) -> list[User]:
        return sorted(
            (User(r.username, r.role, r.password_hash, bool(r.disabled)) for r in self.session.execute(self._users)),
            key=lambda u: u.username,
        )

    def put_user(self, username: str, role: str, password_hash: str, at: datetime) -> None:
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        self.session.execute(self._put_user, (username, role, password_hash, False, at, at))

    def set_disabled(self, username: str, disabled: bool, at: datetime) -> None:
        self.session.execute(self._set_disabled, (disabled, at, username))

    # --------------------------------------------------------------- sessions
    def put_session(self, token: str, username: str, role: str, csrf_token: str, now: datetime, ttl: timedelta) -> None:
        self.session.execute(
            self._put_session,
            (token_hash(token), username, role, csrf_token, now, now + ttl, max(1, int(ttl.total_seconds()))),
        )

    def session_for(self, token: str, now: datetime) -> Session | None:
        """The live session of a cookie token, or None (unknown, expired)."""
        r = self.session.execute(self._session, (token_hash(token),)).one()
        if r is None or _utc(r.expires_at) <= now:
            return None
        return Session(r.username, r.role, r.csrf_token, _utc(r.expires_at))

    def drop_session(self, token: str) -> None:
        self.session.execute(self._drop_session, (token_hash(token),))

    # ------------------------------------------------------------------ cases
    @staticmethod
    def _case_from(r: Any) -> CaseState:
        return CaseState(
            r.alert_id,
            r.status or "open",
            r.assignee,
            r.disposition,
            _utc(r.updated_at),
            r.updated_by,
            _utc(r.opened_at),
        )

    def case(self, alert_id: uuid.UUID) -> CaseState | None:
        r = self.session.execute(self._case, (alert_id,)).one()
        return self._case_from(r) if r is not None else None

    def cases_of(self, alert_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, CaseState]:
        """The worked cases among ``alert_ids`` (IN queries of at most 100 ids, sent at
        once: a queue page's few dozen, or the cases an audit window touched), without
        reading every case."""
        ids = list(dict.fromkeys(alert_ids))
        return {r.alert_id: self._case_from(r) for r in rows_in(self.session, self._cases_in, ids)}

    def put_case(
        self, alert_id: uuid.UUID, status: str, assignee: str | None, disposition: str | None, at: datetime, by: str
    ) -> None:
        self.session.execute(self._put_case, (status, assignee, disposition, at, by, alert_id))

    def mark_opened(self, alert_id: uuid.UUID, at: datetime) -> None:
        self.session.execute(self._open_case, (at, alert_id))

    # ------------------------------------------------------------- audit log
    def record(
        self, alert_id: uuid.UUID, actor: str, role: str, action: str, detail: dict[str, Any], at: datetime
    ) -> None:
        """Append one action to the case's history and to the day's audit log."""
        # Strictly increasing stamps from this process, so actions recorded in one
        # millisecond (a disposition and its label) keep the order they happened in.
        # Counted in whole 100-ns ticks: a float of seconds plus 1e-6 could round two
        # stamps onto the same tick, and then Cassandra ordered them by their random bits.
        with self._stamp_lock:
            self._last_tick = max((at - _UNIX) // _US * 10, self._last_tick + 1)
            stamp = timeuuid(self._last_tick)
        text = json.dumps(detail, sort_keys=True, default=str)
        self.session.execute(self._add_action, (alert_id, stamp, actor, role, action, text))
        self.session.execute(self._add_audit, (at.astimezone(UTC).date(), stamp, actor, role, action, alert_id, text))

    @staticmethod
    def _action_from(r: Any) -> Action:
        return Action(
            r.alert_id,
            datetime_from_uuid1(r.at).replace(tzinfo=UTC),
            r.actor,
            r.role,
            r.action,
            json.loads(r.detail or "{}"),
            r.at,
        )

    def actions(self, alert_id: uuid.UUID, limit: int = 100, before: uuid.UUID | None = None) -> list[Action]:
        """The case's ``limit`` newest actions (before the action ``before``, for an older
        page), oldest first."""
        if before is None:
            rows = self.session.execute(self._actions, (alert_id, limit))
        else:
            rows = self.session.execute(self._actions_before, (alert_id, before, limit))
        return [self._action_from(r) for r in rows][::-1]

    def audit_day(self, day: date, limit: int = 1000) -> list[Action]:
        """The day's ``limit`` newest audit rows, newest first."""
        return [self._action_from(r) for r in self.session.execute(self._audit_day, (day, limit))]

    def audit_between(self, since: datetime, until: datetime, limit: int) -> tuple[list[Action], bool]:
        """The audit rows from ``since`` to ``until``, newest first, at most ``limit``, and
        whether older ones were left unread. The UTC days' partitions are read newest day
        first, a few at once, until ``limit`` rows are in: the cost follows ``limit``, not
        the actions logged."""
        first, day = since.astimezone(UTC).date(), until.astimezone(UTC).date()
        days = []
        while day >= first:
            days.append(day)
            day -= timedelta(days=1)
        out: list[Action] = []
        for i in range(0, len(days), 4):
            futures = [
                self.session.execute_async(self._audit_between, (d, since, until, limit + 1 - len(out)))
                for d in days[i : i + 4]
            ]
            for future in futures:  # newest day first, each newest first
                out.extend(self._action_from(r) for r in future.result())
            if len(out) > limit:
                return out[:limit], True
        return out, False

    # ----------------------------------------------------------------- labels
    def claim_label(self, claim: LabelClaim) -> tuple[bool, LabelClaim]:
        """Claim the case's one label: (True, claim) if this call made it, else (False, the
        claim already there). A lightweight transaction, so of two concurrent claims one wins."""
        r = self.session.execute(
            self._claim,
            (
                claim.alert_id,
                claim.label_id,
                claim.txn_id,
                claim.is_fraud,
                claim.scenario,
                claim.label_time,
                claim.claimed_by,
            ),
        ).one()
        if r.applied:
            return True, claim
        existing = self.label(claim.alert_id)
        assert existing is not None
        return False, existing

    def label(self, alert_id: uuid.UUID) -> LabelClaim | None:
        r = self.session.execute(self._label, (alert_id,)).one()
        return self._label_from(r) if r is not None else None

    @staticmethod
    def _label_from(r: Any) -> LabelClaim:
        return LabelClaim(
            r.alert_id,
            r.label_id,
            r.txn_id,
            bool(r.is_fraud),
            r.scenario,
            _utc(r.label_time),
            r.claimed_by,
            _utc(r.published_at),
        )

    def mark_published(self, alert_id: uuid.UUID, at: datetime) -> None:
        self.session.execute(self._published, (at, alert_id))

    def labels_of(self, alert_ids: list[uuid.UUID]) -> dict[uuid.UUID, LabelClaim]:
        """The label claims of ``alert_ids`` (IN reads of at most 100 ids, sent at once)."""
        ids = list(dict.fromkeys(alert_ids))
        return {r.alert_id: self._label_from(r) for r in rows_in(self.session, self._labels_in, ids)}

    def dispositions(self, since: datetime, until: datetime, size: int = 100) -> Iterator[list[Action]]:
        """The audit log's dispositions from ``since`` to ``until``, newest first, ``size``
        at a time: a day's partition at a time, in driver pages, so a caller that stops
        early reads no further (`txmon console labels resend`)."""
        first, day = since.astimezone(UTC).date(), until.astimezone(UTC).date()
        chunk: list[Action] = []
        while day >= first:
            for r in self.session.execute(self._audit_between, (day, since, until, 2**31 - 1)):
                if r.action == "disposition":
                    chunk.append(self._action_from(r))
                    if len(chunk) == size:
                        yield chunk
                        chunk = []
            day -= timedelta(days=1)
        if chunk:
            yield chunk

    def many(self, stmt: Any, args: Iterable[tuple]) -> list[Any]:
        """Rows of one prepared statement run concurrently over many argument tuples."""
        # lazy: cassandra.concurrent (500 ms to import); txmon.webapp.console.auth imports this module without it
        from cassandra.concurrent import execute_concurrent_with_args

        results = execute_concurrent_with_args(
            self.session, stmt, list(args), concurrency=32, raise_on_first_error=True
        )
        return [row for _, rows in results for row in rows]
