"""Everything the API reads and writes in Cassandra: its statements (from
txmon.infra.statements), all prepared, behind one small class.

The session is opened on first use, not at start-up, so the API starts (and answers
/healthz) while Cassandra is away; while it is away every call raises
:class:`StoreUnavailable` quickly (the routes answer 503 with a clear body), and the
driver reconnects by itself once the node is back: no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool

from txmon.infra import credentials
from txmon.infra.cassandra_schema import open_cluster
from txmon.infra.errors import TxmonError
from txmon.infra.readback import account_windows
from txmon.infra.settings import Settings
from txmon.infra.statements import API as STATEMENTS
from txmon.webapp.api import cql
from txmon.webapp.api.scorer import Profiles
from txmon.webapp.reconnect import NotConnected, Reconnect, cassandra_unavailable

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 - the driver gives naive UTC timestamps
_US = timedelta(microseconds=1)


_TUPLES = "tuples"  # the execution profile whose rows are plain tuples (ApiStore._connect)


class StoreUnavailable(TxmonError):
    """Cassandra cannot be reached (or timed out); the request can be retried."""


def _driver_errors() -> tuple[type[BaseException], ...]:
    # The driver's (webapp/reconnect.py), and the socket errors of the hot reads' own
    # connection (webapp/api/cql.py).
    return (*cassandra_unavailable(), ConnectionError, OSError)


def micros(naive_utc: datetime) -> int:
    return (naive_utc - _EPOCH) // _US


class ApiStore:
    """One per worker process. Thread-safe (the driver's session is)."""

    def __init__(self, settings: Settings, timeout_s: float = 2.0, retry_connect_s: float = 1.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.retry_connect_s = retry_connect_s
        self._cluster = None
        self._session = None
        self._prepared: dict[str, Any] = {}
        # A constant interval (first_s = max_s): a scoring client retries within the second
        # Cassandra is back. A burst of requests at start-up waits for the first connect.
        self._connection = Reconnect(self._connect, first_s=retry_connect_s, max_s=retry_connect_s, wait_first=True)
        self._errors = _driver_errors()
        # The hot reads' own connection (webapp/api/cql.py), on the event loop that made it.
        self._wire: cql.CqlConnection | None = None
        self._wire_loop: asyncio.AbstractEventLoop | None = None
        self._wire_task: asyncio.Task | None = None
        self._wire_attempt = -float("inf")

    # -------------------------------------------------------------- connection

    def _connect(self):
        # lazy: cassandra (248 ms to import); the web app's workers load this module without it
        from cassandra.cluster import EXEC_PROFILE_DEFAULT
        from cassandra.policies import ConstantReconnectionPolicy
        from cassandra.query import tuple_factory

        c = self.settings.cassandra
        cluster = open_cluster(
            c.host,
            c.port,
            timeout=self.timeout_s,
            request_timeout=self.timeout_s,
            consistency=c.consistency,
            datacenter=c.datacenter,
            compression=False,  # a request's messages are small: compressing them cost more CPU than it saved
            # Version 5's checksummed frames cost the driver a CRC computed in Python per
            # message each way (~2 % of a worker's samples, py-spy); nothing here needs 5.
            protocol_version=4,
        )
        # Back within a second of Cassandra's return (the default backs off up to 10 minutes).
        cluster.reconnection_policy = ConstantReconnectionPolicy(1.0, max_attempts=None)
        try:
            session = cluster.connect(c.keyspace)
            # The driver's default rows are namedtuples, and it makes a new namedtuple class
            # for every result: ~12 % of a worker's CPU with three reads per scored request
            # (py-spy). The profile reads take plain tuples.
            cluster.add_execution_profile(
                _TUPLES, session.execution_profile_clone_update(EXEC_PROFILE_DEFAULT, row_factory=tuple_factory)
            )
            prepared = {name: session.prepare(cql) for name, cql in STATEMENTS.items()}
        except Exception:
            cluster.shutdown()
            raise
        return cluster, session, prepared

    def session(self):
        if self._session is not None:
            return self._session
        try:  # any failure to connect is "unavailable"; one caller at a time tries (webapp/reconnect.py)
            cluster, session, prepared = self._connection.get()
        except NotConnected as exc:
            raise StoreUnavailable(f"Cassandra unavailable ({exc.reason}); retry shortly") from None
        self._cluster, self._prepared = cluster, prepared
        self._session = session  # last: a caller seeing it set finds the statements prepared
        return session

    def close(self) -> None:
        wire, loop = self._wire, self._wire_loop
        self._wire = None
        if wire is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # its loop is gone: so is the socket
                loop.call_soon_threadsafe(wire.close)
        self._connection.forget()
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = self._session = None

    def _run(self, name: str, params: tuple = (), **kwargs) -> Any:
        session = self.session()
        try:
            return session.execute(self._prepared[name], params, timeout=self.timeout_s, **kwargs)
        except self._errors as exc:
            raise StoreUnavailable(f"Cassandra unavailable ({type(exc).__name__}); retry shortly") from None

    def _gather(self, calls: list[tuple[str, tuple]]) -> list:
        """The answers of ``calls``, sent at once, rows as plain tuples."""
        session = self.session()
        try:
            futures = [
                session.execute_async(self._prepared[n], p, timeout=self.timeout_s, execution_profile=_TUPLES)
                for n, p in calls
            ]
            return [f.result() for f in futures]
        except self._errors as exc:
            raise StoreUnavailable(f"Cassandra unavailable ({type(exc).__name__}); retry shortly") from None

    def ping(self) -> str:
        return self._run("ping").one().release_version

    # -------------------------------------------------------------- features

    @staticmethod
    def _profile_calls(payer: str, payee: str | None) -> list[tuple[str, tuple]]:
        calls = [("payer_profile", (payer,))]
        if payee is not None:
            calls += [("payee_profile", (payee,)), ("payee_frauds", (payee,))]
        return calls

    def profiles(self, payer: str, payee: str | None) -> Profiles:
        """The payer's and payee's profiles as the stream last saved them (``state``: a
        half-applied micro-batch's profile is the one the stream will restart from or
        finish, and it finishes before it reads again), and the payee's known frauds."""
        return self._profiles_from(self._gather(self._profile_calls(payer, payee)), payee)

    async def profiles_async(self, payer: str, payee: str | None) -> Profiles:
        """:meth:`profiles` for the event loop: the reads are sent at once, with no thread
        of the server's pool held while Cassandra answers (a pool thread per request, each
        needing the GIL, made the loop and the driver's I/O thread queue for it).

        Read on the loop's own connection (webapp/api/cql.py) when it is up; else, and for
        any answer but rows, through the driver, as before that connection existed."""
        if self._session is None:  # connecting blocks for seconds: never on the loop
            await run_in_threadpool(self.session)
        session = self.session()
        wire = self._wire_connection()
        if wire is not None:
            try:
                return await self._profiles_wire(wire, payer, payee)
            except cql.CqlError as exc:
                log.info("profile reads through the driver (%s)", exc)
                wire.close()
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        calls = self._profile_calls(payer, payee)
        pending = [len(calls)]
        lock = threading.Lock()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        def finished(_result=None) -> None:  # on the driver's I/O thread (or this one)
            with lock:
                pending[0] -= 1
                last = pending[0] == 0
            if last:
                with contextlib.suppress(RuntimeError):  # the loop closed (shutdown): no one waits
                    loop.call_soon_threadsafe(wake)

        try:
            futures = [
                session.execute_async(self._prepared[n], p, timeout=self.timeout_s, execution_profile=_TUPLES)
                for n, p in calls
            ]
            for future in futures:
                future.add_callbacks(finished, finished)
            await done
            results = [f.result() for f in futures]  # all answered: no wait, or the error
        except self._errors as exc:
            raise StoreUnavailable(f"Cassandra unavailable ({type(exc).__name__}); retry shortly") from None
        if any(r.has_more_pages for r in results):  # paging fetches synchronously: not on the loop
            return await run_in_threadpool(self._profiles_from, results, payee)
        return self._profiles_from(results, payee)

    # -------------------------------------------------------------- the hot reads' connection

    def _wire_connection(self) -> cql.CqlConnection | None:
        """The loop's connection if it is up; else None, and a connection is started in the
        background (at most once per ``retry_connect_s``) while the driver reads."""
        loop = asyncio.get_running_loop()
        wire = self._wire
        if wire is not None and wire.open and self._wire_loop is loop:
            return wire
        connecting = self._wire_task is not None and not self._wire_task.done() and self._wire_loop is loop
        if not connecting and time.monotonic() - self._wire_attempt >= self.retry_connect_s:
            self._wire_attempt = time.monotonic()
            self._wire, self._wire_loop = None, loop
            self._wire_task = loop.create_task(self._open_wire(loop))
        return None

    async def _open_wire(self, loop: asyncio.AbstractEventLoop) -> None:
        # lazy: cassandra (248 ms to import); the web app's workers load this module without it
        from cassandra import ConsistencyLevel

        c = self.settings.cassandra
        credential = credentials.cassandra()
        try:
            wire = await cql.connect(
                c.host,
                c.port,
                credential.user,
                credential.password,
                c.keyspace,
                {name: STATEMENTS[name] for name in _PROFILE_STATEMENTS},
                getattr(ConsistencyLevel, c.consistency),
                self.timeout_s,
                ssl=getattr(self._cluster, "ssl_context", None),  # TLS exactly when the driver's session has it
            )
        except Exception as exc:  # noqa: BLE001 - any failure: the driver reads, a new try in retry_connect_s
            log.info("profile reads through the driver: no connection of their own (%s: %s)", type(exc).__name__, exc)
            return
        if self._wire_loop is loop:
            self._wire = wire
        else:
            wire.close()

    async def _profiles_wire(self, wire: cql.CqlConnection, payer: str, payee: str | None) -> Profiles:
        calls = self._profile_calls(payer, payee)
        futures = wire.send([(cql.EXECUTE, cql.execute_body(wire.prepared[n], p, wire.consistency)) for n, p in calls])
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.timeout_s, _expire, futures)
        try:
            answers = [await f for f in futures]
        except (TimeoutError, cql.CqlError) as exc:
            for future in futures:  # each one's error read, so that none is logged as never retrieved
                if future.done() and not future.cancelled():
                    future.exception()
            if isinstance(exc, cql.CqlError):
                raise
            wire.close()  # answers may still come: a fresh connection rather than a stream-id ledger
            raise StoreUnavailable("Cassandra unavailable (OperationTimedOut); retry shortly") from None
        finally:
            timer.cancel()
        rows = []
        for (name, _), (opcode, flags, body) in zip(calls, answers):
            if opcode != cql.RESULT:
                raise cql.CqlError(cql.error_text(body) if opcode == cql.ERROR else f"opcode 0x{opcode:02x}")
            rows.append(cql.parse_rows(flags, body, _PROFILE_STATEMENTS[name]))
        frauds = [(cql.timestamp(a), cql.timestamp(b)) for a, b in rows[2]] if payee is not None else []
        return self._profiles_of(
            [(cql.text(r[0]),) for r in rows[0]],
            [(cql.text(r[0]),) for r in rows[1]] if payee is not None else [],
            frauds,
            payee,
        )

    @classmethod
    def _profiles_from(cls, results: list, payee: str | None) -> Profiles:
        """Profiles of the driver's answers to :meth:`_profile_calls`."""
        return cls._profiles_of(
            list(results[0]),
            list(results[1]) if payee is not None else [],
            list(results[2]) if payee is not None else [],
            payee,
        )

    @staticmethod
    def _profiles_of(payer_rows: list, payee_rows: list, fraud_rows: list, payee: str | None) -> Profiles:
        """Profiles of the rows of :meth:`_profile_calls` (as tuples: (state,), (state,) and
        (label_time, event_time), timestamps as the driver gives them)."""
        payer_row = payer_rows[0] if payer_rows else None
        payee_row = payee_rows[0] if payee is not None and payee_rows else None
        frauds = []
        if payee is not None:
            for label_time, event_time in fraud_rows:
                labelled = micros(label_time)
                # A label stored before transaction times were kept counts as made when labelled
                # (spark_jobs/profile_store.CassandraProfileStore.fraud_label_times).
                frauds.append((labelled, labelled if event_time is None else micros(event_time)))
        return Profiles(
            payer=payer_row[0] if payer_row else None,
            payee=payee_row[0] if payee_row else None,
            frauds=tuple(sorted(frauds)),
        )

    # -------------------------------------------------------------- keys

    def key(self, key_id: str):
        return self._run("key_get", (key_id,)).one()

    def add_key(self, key_id: str, name: str, scopes: set[str], secret_hash: str) -> bool:
        return bool(self._run("key_insert", (key_id, name, scopes, secret_hash, _now())).was_applied)

    def keys(self) -> list:
        return list(self._run("key_list"))

    def revoke_key(self, key_id: str) -> bool:
        return bool(self._run("key_revoke", (_now(), key_id)).was_applied)

    # -------------------------------------------------------------- decisions and labels

    def claim_decision(self, txn_id: str, content_hash: str, verdict_json: str, key_id: str):
        """(claimed, existing row): the first verdict for a txn_id is the one kept."""
        result = self._run("decision_claim", (txn_id, content_hash, verdict_json, _now(), key_id))
        return bool(result.was_applied), (None if result.was_applied else result.one())

    def decision_published(self, txn_id: str) -> None:
        self._run("decision_published", (_now(), txn_id))

    def decision(self, txn_id: str):
        return self._run("decision_get", (txn_id,)).one()

    def claim_label(self, label_id: str, content_hash: str, txn_id: str, key_id: str):
        result = self._run("label_claim", (label_id, content_hash, txn_id, _now(), key_id))
        return bool(result.was_applied), (None if result.was_applied else result.one())

    def label_sent(self, label_id: str) -> None:
        self._run("label_sent", (label_id,))

    # -------------------------------------------------------------- read back

    def scored(self, txn_id: str):
        return self._run("scored_get", (txn_id,)).one()

    def transaction(self, txn_id: str):
        return self._run("transaction_get", (txn_id,)).one()

    def alerts_page(self, day, limit: int, paging_state: bytes | None):
        """(rows of one page, next paging state or None) of one IST day's alerts."""
        session = self.session()
        bound = self._prepared["alerts_by_day"].bind((day,))
        bound.fetch_size = limit  # on the bound statement: the prepared one is shared by threads
        try:
            result = session.execute(bound, timeout=self.timeout_s, paging_state=paging_state)
        except self._errors as exc:
            raise StoreUnavailable(f"Cassandra unavailable ({type(exc).__name__}); retry shortly") from None
        return list(result.current_rows), result.paging_state

    def account_windows(self, account: str, kind: str, since: datetime | None):
        session = self.session()
        try:
            return account_windows(session, account, kind, since)
        except self._errors as exc:
            raise StoreUnavailable(f"Cassandra unavailable ({type(exc).__name__}); retry shortly") from None


# The hot reads, by name, and the columns each selects (infra/statements.py).
_PROFILE_STATEMENTS = {"payer_profile": 1, "payee_profile": 1, "payee_frauds": 2}


def _expire(futures: list[asyncio.Future]) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(TimeoutError())


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
