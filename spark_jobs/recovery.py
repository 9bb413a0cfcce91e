"""Riding out Kafka and Cassandra outages without a person.

The stream's exactly-once design does the hard part: Spark's checkpoint replays a
micro-batch that did not finish, and every write is an upsert keyed by a natural id,
so running a batch again is always safe. What this module adds is *waiting*:

1. :func:`call_with_retry`: a Cassandra call that fails with a connection error (node
   down, timeout) is retried in place, with backoff, for a short while (seconds): a
   node restart or a network blip costs the micro-batch some time, not a failure.
   The healthy path is one ``try``: nothing is built or timed unless a call failed.
2. :func:`keep_running`: when a query fails anyway (a longer outage, or Kafka gone),
   the process stops its queries, waits with backoff until Kafka and Cassandra answer
   again, and restarts every query from its checkpoint; each wait and restart is logged
   and written to the heartbeat file (``recovery``), so an operator and the supervisor
   can see a stream that is waiting rather than dead. Bounded: after
   ``recovery.restart_give_up_s`` of failures with no micro-batch completed it exits
   with :class:`~infra.errors.StreamRecoveryError`.
3. A process that dies is restarted by the supervisor (:mod:`spark_jobs.supervisor`:
   ``txmon stream --supervise``, or Airflow's ``stream_supervisor`` DAG).

Spark workers import this module (through :mod:`spark_jobs.cassandra_sink`): keep its
imports light.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from txmon.infra.errors import StreamRecoveryError

log = logging.getLogger("txmon.recovery")
T = TypeVar("T")

__all__ = [
    "Backoff",
    "Queries",
    "SparkQueries",
    "call_with_retry",
    "cassandra_outage_errors",
    "dependency_probe",
    "keep_running",
]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff, capped, with a time budget. Small and picklable (it travels
    to Spark workers inside :class:`~spark_jobs.cassandra_sink.CassandraTarget`).

    >>> [Backoff(1, 30, 600).delay(n) for n in range(1, 8)]
    [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    """

    initial_s: float
    max_s: float
    give_up_after_s: float
    multiplier: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        return float(min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1)))

    @classmethod
    def cassandra_calls(cls, settings: Any) -> Backoff:
        r = settings.recovery
        return cls(r.cassandra_retry_initial_s, r.cassandra_retry_max_s, r.cassandra_retry_give_up_s)

    @classmethod
    def query_restarts(cls, settings: Any) -> Backoff:
        r = settings.recovery
        return cls(r.restart_initial_s, r.restart_max_s, r.restart_give_up_s)


def cassandra_outage_errors() -> tuple[type[BaseException], ...]:
    """What the Python driver raises while a node is down or not answering in time.
    Anything else (a bad statement, a schema mismatch) is a bug: retrying cannot help."""
    # lazy: cassandra (310 ms to import); the scoring API imports this module without it
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    return (
        NoHostAvailable,
        OperationTimedOut,
        Unavailable,
        ReadTimeout,
        WriteTimeout,
        ConnectionException,
        ConnectionError,
    )


def _brief(error: BaseException, limit: int = 300) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def call_with_retry(
    policy: Backoff | None,
    what: str,
    fn: Callable[[], T],
    *,
    retryable: Callable[[], tuple[type[BaseException], ...]] = cassandra_outage_errors,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()``; if it raises one of ``retryable()``, retry it with ``policy``'s backoff until
    it succeeds or the budget is spent (then the last error is raised). ``fn`` must be
    safe to run again: every txmon write is an idempotent upsert.

    ``retryable`` is a function so that the driver's exception classes are looked up only
    once a call has failed: a healthy call costs one ``try``."""
    try:
        return fn()
    except retryable() as exc:  # evaluated only when something was raised
        if policy is None or policy.give_up_after_s <= 0:
            raise
        first = exc
    return _retry(policy, what, fn, first, retryable(), clock, sleep)


def _retry(
    policy: Backoff,
    what: str,
    fn: Callable[[], T],
    first: BaseException,
    errors: tuple[type[BaseException], ...],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> T:
    # lazy: tenacity (54 ms to import); the stream supervisor imports this module without it
    from tenacity import Retrying, retry_if_exception_type

    started = clock()
    log.warning("%s failed (%s); retrying with backoff for up to %.0fs", what, _brief(first), policy.give_up_after_s)

    def _sleep_then(state) -> None:  # tenacity's before_sleep: say what waits and why
        log.warning(
            "%s: attempt %d failed (%s); next in %.1fs",
            what,
            state.attempt_number + 1,
            _brief(state.outcome.exception()),
            policy.delay(state.attempt_number + 1),
        )

    if policy.delay(1) > policy.give_up_after_s:
        raise first
    # The first attempt was the caller's, so tenacity's attempt n is retry n: it waits
    # delay(n) before it (the first wait here), and gives up rather than wait past the budget.
    retrying = Retrying(
        retry=retry_if_exception_type(errors),
        wait=lambda state: policy.delay(state.attempt_number + 1),
        stop=lambda state: clock() - started + policy.delay(state.attempt_number + 1) > policy.give_up_after_s,
        before_sleep=_sleep_then,
        sleep=sleep,
        reraise=True,
    )
    sleep(policy.delay(1))
    result = retrying(fn)
    log.warning("%s succeeded after %.1fs of retries", what, clock() - started)
    return result


# ------------------------------------------------------------------ restarting the queries


class Queries(Protocol):
    """The stream's queries as :func:`keep_running` drives them."""

    def start(self) -> None: ...

    def wait(self) -> BaseException | None:
        """Block until a query ends: its error, or None if it stopped without one."""

    def made_progress(self) -> bool:
        """Did any query complete a micro-batch since :meth:`start`?"""

    def stop(self) -> None: ...


class Heartbeat(Protocol):
    def recovery(self, **fields: Any) -> None: ...


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def keep_running(
    queries: Queries,
    *,
    probe: Callable[[], dict[str, str | None]],
    heartbeat: Heartbeat | None,
    policy: Backoff,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    wall: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Run ``queries`` until they stop without an error; returns how often they were restarted.

    A failed query stops all of them; then, with ``policy``'s backoff, ``probe()`` is asked
    which dependencies are down (name -> why, None when it answers) until none is, and the
    queries start again from their checkpoints. A start that fails counts as another
    failure. Raises :class:`StreamRecoveryError` once the queries have failed for
    ``policy.give_up_after_s`` without completing a micro-batch in between.
    """
    queries.start()
    restarts = 0
    streak_since: float | None = None  # clock() of the first failure since a micro-batch last completed
    streak_wall: datetime | None = None
    attempt = 0
    _beat(heartbeat, state="running", restarts=restarts)
    while True:
        error = queries.wait()
        if error is None:  # stopped on purpose (or every query finished)
            queries.stop()
            return restarts
        progressed = queries.made_progress()
        queries.stop()
        if progressed or streak_since is None:
            streak_since, streak_wall, attempt = clock(), wall(), 0
        reason = _brief(error)
        log.error("stream query failed: %s", reason)
        while True:
            attempt += 1
            waited = clock() - streak_since
            if waited >= policy.give_up_after_s:
                _beat(
                    heartbeat,
                    state="gave_up",
                    restarts=restarts,
                    attempt=attempt,
                    since=_iso(streak_wall),
                    last_error=reason,
                )
                raise StreamRecoveryError(
                    f"the stream's queries kept failing for {waited:.0f}s (limit recovery.restart_give_up_s="
                    f"{policy.give_up_after_s:.0f}); last error: {reason}. Check `txmon infra status`, then start "
                    "the stream again (under `txmon stream --supervise` that happens by itself)"
                )
            delay = policy.delay(attempt)
            _beat(
                heartbeat,
                state="waiting",
                restarts=restarts,
                attempt=attempt,
                since=_iso(streak_wall),
                last_error=reason,
                next_attempt_at=_iso(wall() + timedelta(seconds=delay)),
            )
            log.warning("stream: restart attempt %d in %.1fs (failing for %.0fs: %s)", attempt, delay, waited, reason)
            sleep(delay)
            down = {name: why for name, why in probe().items() if why}
            if down:
                reason = "; ".join(f"{name} down ({why})" for name, why in sorted(down.items()))
                continue
            try:
                queries.start()
            except Exception as exc:  # noqa: BLE001 - anything a start touches (Kafka, Cassandra, the JVM) may still be coming up
                reason = f"restart failed: {_brief(exc)}"
                queries.stop()
                continue
            restarts += 1
            log.warning(
                "stream: queries restarted from their checkpoints (restart %d, after %.0fs)",
                restarts,
                clock() - streak_since,
            )
            _beat(
                heartbeat,
                state="running",
                restarts=restarts,
                attempt=attempt,
                since=_iso(streak_wall),
                last_error=reason,
                restarted_at=_iso(wall()),
            )
            break


def _beat(heartbeat: Heartbeat | None, **fields: Any) -> None:
    if heartbeat is not None:
        heartbeat.recovery(**fields)


class SparkQueries:
    """:class:`Queries` over a SparkSession's streaming queries, started by ``start_all()``."""

    def __init__(self, spark: Any, start_all: Callable[[], list]) -> None:
        self.spark = spark
        self._start_all = start_all
        self.queries: list = []

    def start(self) -> None:
        self.spark.streams.resetTerminated()
        self.queries = []
        self.queries = self._start_all()

    def wait(self) -> BaseException | None:
        # lazy: pyspark (747 ms to import); the scoring API imports this module without it
        from pyspark.errors import StreamingQueryException

        try:
            self.spark.streams.awaitAnyTermination()
        except StreamingQueryException as exc:
            return exc
        return next((q.exception() for q in self.queries if q.exception() is not None), None)

    def made_progress(self) -> bool:
        # Rows processed, not just progress reports: an idle query reports progress too,
        # and a stream that fails on every batch must not look like one that recovered.
        return any(_input_rows(p) > 0 for q in self.queries for p in q.recentProgress)

    def stop(self) -> None:
        # Every active query of the session, not only those start() returned: a start that
        # failed half-way has left the queries it had started running.
        for q in {q.id: q for q in [*self.queries, *self.spark.streams.active]}.values():
            try:
                q.stop()
            except Exception as exc:  # noqa: BLE001 - a query that failed may refuse a clean stop; it is gone either way
                log.warning("stopping query %s: %s", q.name, _brief(exc))
        self.queries = []
        # Cached driver sessions may hold connections the outage broke; the next start
        # opens fresh ones (the workers' sessions recover by themselves: cassandra_sink).
        # Imported here: cassandra_sink imports this module (its retries) at the top.
        from txmon.spark_jobs.cassandra_sink import close_sessions

        close_sessions()


def _input_rows(progress: Any) -> int:
    rows = progress.get("numInputRows") if isinstance(progress, dict) else getattr(progress, "numInputRows", 0)
    return int(rows or 0)


def dependency_probe(settings: Any) -> Callable[[], dict[str, str | None]]:
    """Asks Kafka and Cassandra whether they answer, as ``txmon infra status`` does."""
    # Here, not at the top: Spark workers import this module, and only the driver probes.
    from txmon.infra.services.cassandra import CassandraService
    from txmon.infra.services.kafka import KafkaService

    services = [KafkaService(settings), CassandraService(settings)]

    def probe() -> dict[str, str | None]:
        out = {}
        for svc in services:
            try:
                out[f"{svc.name} {svc.host}:{svc.ports[0]}"] = svc.probe()
            except Exception as exc:  # noqa: BLE001 - a probe must report, never raise
                out[f"{svc.name} {svc.host}:{svc.ports[0]}"] = _brief(exc, 120)
        return out

    return probe
